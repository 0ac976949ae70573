// A folder of images with same-named .txt captions (cat.jpg + cat.txt), searched recursively.
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import type { Dataset, Example } from './types.js';
import type { ImageTransform } from './image.js';
import { fileExample, type ExampleJob } from './jobs.js';

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

  /** The caption comes from the same-named .txt (read where the image is decoded). */
  get(i: number): Promise<Example | null> {
    return fileExample(this.job(i));
  }

  job(i: number): Extract<ExampleJob, { op: 'file' }> {
    const file = this.files[i];
    return { op: 'file', file, captionFile: file.replace(IMAGE_EXT, '.txt'), transform: this.transform };
  }
}
