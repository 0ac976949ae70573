// Small models and synthetic data for the training tests.
import type { CLIPConfig } from '../lib/models/config.js';
import type { Dataset, Example } from '../lib/data/types.js';
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
