// CSV / TSV of image path and caption (open_clip's --csv-img-key / --csv-caption-key, defaults
// "filepath" and "title"). Paths are relative to the table's directory.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Dataset, Example } from './types.js';
import type { ImageTransform } from './image.js';
import { fileExample, type ExampleJob } from './jobs.js';

/** Splits one CSV line with RFC 4180 quoting ("" inside quotes is a quote). */
export function splitCsvLine(line: string, sep: string): string[] {
  if (sep === '\t') return line.split('\t');
  const out: string[] = [];
  let cur = '', q = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (q) {
      if (ch === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (ch === '"') q = false; else cur += ch;
    } else if (ch === '"') q = true;
    else if (ch === sep) { out.push(cur); cur = ''; } else cur += ch;
  }
  out.push(cur);
  return out;
}

export interface CsvOptions {
  imageKey?: string;
  captionKey?: string;
  separator?: string;
}

export class CsvDataset implements Dataset {
  readonly name: string;
  readonly length: number;
  readonly imageSize: number;
  private readonly rows: { image: string; caption: string }[] = [];

  constructor(readonly file: string, private readonly transform: ImageTransform, opts: CsvOptions = {}) {
    this.name = file;
    this.imageSize = transform.size;
    const sep = opts.separator ?? (file.endsWith('.tsv') ? '\t' : ',');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
    if (!lines.length) throw new Error(`${file}: empty table`);
    const header = splitCsvLine(lines[0], sep).map((h) => h.trim());
    const ik = opts.imageKey ?? (header.includes('filepath') ? 'filepath' : 'image');
    const ck = opts.captionKey ?? (header.includes('title') ? 'title' : 'caption');
    const ii = header.indexOf(ik), ci = header.indexOf(ck);
    if (ii < 0 || ci < 0) {
      throw new Error(`${file}: the header has no "${ii < 0 ? ik : ck}" column (found: ${header.join(', ')}); set the image and caption keys`);
    }
    const dir = path.dirname(file);
    for (const line of lines.slice(1)) {
      const f = splitCsvLine(line, sep);
      this.rows.push({ image: path.resolve(dir, f[ii] ?? ''), caption: (f[ci] ?? '').trim() });
    }
    this.length = this.rows.length;
  }

  get(i: number): Promise<Example | null> {
    return fileExample(this.job(i));
  }

  job(i: number): Extract<ExampleJob, { op: 'file' }> {
    const r = this.rows[i];
    return { op: 'file', file: r.image, caption: r.caption, transform: this.transform };
  }
}
