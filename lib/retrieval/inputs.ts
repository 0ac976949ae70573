// What `tsclip embed` reads: images from a folder (recursively) or a list file, texts one per line.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

const IMAGE_EXT = /\.(jpe?g|png|webp|gif)$/i;

export interface ImageItem {
  id: string;
  path: string;
}

export interface TextItem {
  id: string;
  text: string;
}

/** A folder (ids: paths relative to it) or a list file of paths (relative to the list's folder). */
export function listImages(spec: string): ImageItem[] {
  if (!existsSync(spec)) throw new Error(`--images ${spec}: no such file or directory`);
  if (statSync(spec).isDirectory()) {
    const files = (readdirSync(spec, { recursive: true }) as string[]).filter((f) => IMAGE_EXT.test(f)).sort();
    if (!files.length) throw new Error(`--images ${spec}: no images (.jpg, .png, .webp, .gif) in this folder`);
    return files.map((f) => ({ id: f.split(path.sep).join('/'), path: path.join(spec, f) }));
  }
  const base = path.dirname(spec);
  const items = readFileSync(spec, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
    .map((l) => ({ id: l, path: path.isAbsolute(l) ? l : path.join(base, l) }));
  if (!items.length) throw new Error(`--images ${spec}: the list names no images`);
  const missing = items.filter((it) => !existsSync(it.path));
  if (missing.length) throw new Error(`--images ${spec}: ${missing.length} listed image(s) not found, first ${missing[0].path}`);
  return items;
}

/** One text per non-empty line; ids "text:LINE" (1-based line numbers). */
export function listTexts(file: string): TextItem[] {
  if (!existsSync(file)) throw new Error(`--texts ${file}: no such file`);
  const items: TextItem[] = [];
  readFileSync(file, 'utf8').split('\n').forEach((l, i) => {
    const text = l.trim();
    if (text) items.push({ id: `text:${i + 1}`, text });
  });
  if (!items.length) throw new Error(`--texts ${file}: no texts (one per line)`);
  return items;
}
