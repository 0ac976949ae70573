// Small models and synthetic data for the training tests.
import type { CLIPConfig } from '../lib/models/config.js';
import type { Batch, BatchSource, DataPosition, Dataset, Example } from '../lib/data/types.js';
import { Random } from '../lib/nn/random.js';

export const MICRO_CONFIG: CLIPConfig = {
  embedDim: 16,
  vision: { kind: 'vit', imageSize: 16, patchSize: 8, width: 32, layers: 1, heads: 2, mlpDim: 64 },
  text: { contextLength: 8, vocabSize: 64, width: 32, heads: 2, layers: 1, mlpDim: 64 },
  activation: 'quick_gelu',
};

/** Random images and captions of random words; `bad(i)` marks examples that fail to load. */
export function randomDataset(n: number, imageSize = 16, bad: (i: number) => 'throw' | 'null' | 'empty' | 'nan' | null = () => null): Dataset {
  const words = ['red', 'blue', 'green', 'circle', 'square', 'big', 'small', 'left', 'right'];
  return {
    name: 'random',
    length: n,
    imageSize,
    get(i: number): Example | null {
      const kind = bad(i);
      if (kind === 'throw') throw new Error(`/tmp/x/${i}.png: corrupt image`);
      if (kind === 'null') return null;
      const r = new Random(i + 1);
      const image = r.normalArray(3 * imageSize * imageSize, 1);
      if (kind === 'nan') image[0] = NaN;
      const caption = kind === 'empty' ? '  ' : Array.from({ length: 3 }, () => words[Math.floor(r.next() * words.length)]).join(' ');
      return { image, caption };
    },
  };
}

/** A word-level tokenizer into [SOT, ids..., EOT, 0...] rows, with EOT the largest id. */
export function wordTokenize(contextLength: number, vocabSize: number) {
  const ids = new Map<string, number>();
  return (captions: string[]) => {
    const out = new Int32Array(captions.length * contextLength);
    captions.forEach((c, row) => {
      const w = c.trim().split(/\s+/).slice(0, contextLength - 2);
      out[row * contextLength] = vocabSize - 2;
      w.forEach((x, k) => {
        if (!ids.has(x)) ids.set(x, 1 + ((x.split('').reduce((a, ch) => a * 31 + ch.charCodeAt(0), 7) >>> 0) % (vocabSize - 3)));
        out[row * contextLength + 1 + k] = ids.get(x)!;
      });
      out[row * contextLength + 1 + w.length] = vocabSize - 1;
    });
    return out;
  };
}

import { deflateSync } from 'node:zlib';

function crc32(buf: Uint8Array): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A minimal RGB PNG encoder (filter 0 rows, one IDAT) for writing test images. */
export function encodePng(rgb: Uint8Array, w: number, h: number): Uint8Array {
  const raw = new Uint8Array(h * (1 + 3 * w));
  for (let y = 0; y < h; y++) raw.set(rgb.subarray(y * 3 * w, (y + 1) * 3 * w), y * (1 + 3 * w) + 1);
  const chunk = (type: string, data: Uint8Array) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'latin1');
    Buffer.from(data).copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))]);
}

/** A tar archive of the given files (ustar headers), for WebDataset tests. */
export function makeTar(files: [string, Uint8Array][]): Uint8Array {
  const parts: Buffer[] = [];
  for (const [name, data] of files) {
    const h = Buffer.alloc(512);
    h.write(name, 0, 'utf8');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.fill(32, 148, 156);
    h.write('0', 156);
    h.write('ustar\0' + '00', 257);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    parts.push(h, Buffer.from(data), Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** A w x h image of one colour. */
export function solid(w: number, h: number, rgb: [number, number, number]): Uint8Array {
  const a = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) a.set(rgb, i * 3);
  return a;
}

/** The same batch forever (a loss on it must fall; the fixture's optimizer steps reuse one batch). */
export function repeatSource(batch: Batch): BatchSource {
  return {
    batchSize: batch.size,
    batchesPerEpoch: () => 1,
    stats: () => ({ examples: 0, skipped: 0, skippedReasons: {}, waitMs: 0 }),
    async *batches(from: DataPosition) {
      let epoch = from.epoch;
      for (;;) yield { batch, next: { epoch: ++epoch, cursor: 0 } };
    },
  };
}
