// A folder of images with same-named .txt captions (cat.jpg + cat.txt), searched recursively.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Dataset, Example } from './types.js';
import { loadImage, type ImageTransform } from './image.js';

const IMAGE_EXT = /\.(jpe?g|png|webp|gif)$/i;

export class FolderDataset implements Dataset {
  readonly name: string;
  readonly length: number;
  readonly imageSize: number;
  private readonly files: string[];

  constructor(readonly dir: string, private readonly transform: ImageTransform) {
    this.name = dir;
    this.imageSize = transform.size;
    let entries;
    try {
      entries = readdirSync(dir, { recursive: true, withFileTypes: false }) as string[];
    } catch (e) {
      throw new Error(`${dir}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (e as Error).message}`);
    }
    this.files = entries.filter((f) => IMAGE_EXT.test(f)).sort().map((f) => path.join(dir, f));
    if (!this.files.length) throw new Error(`${dir}: no images (.jpg, .png, .webp, .gif) found`);
    this.length = this.files.length;
  }

  async get(i: number): Promise<Example | null> {
    const file = this.files[i];
    let caption: string;
    try {
      caption = readFileSync(file.replace(IMAGE_EXT, '.txt'), 'utf8').trim();
    } catch {
      throw new Error(`${file}: no caption file`);
    }
    if (!caption) return { image: new Float32Array(0), caption: '' };
    return { image: await loadImage(file, this.transform), caption };
  }
}
