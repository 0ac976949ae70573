// Data sources on small generated data: CSV/TSV, a folder with .txt captions, WebDataset shards,
// Fashion-MNIST IDX files, the shapes generator; bad examples skipped and counted; mostly-bad
// data stopped with a clear error.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { CsvDataset, splitCsvLine } from '../lib/data/csv.js';
import { shortReason } from '../lib/data/counters.js';
import { FolderDataset } from '../lib/data/folder.js';
import { WebDatasetSource, expandShards } from '../lib/data/webdataset.js';
import { FashionMnistDataset, FASHION_CLASSES, parseIdx } from '../lib/data/fashion-mnist.js';
import { ShapesDataset, HELD_OUT, PAIRS, shapesTokenizer, allCaptions } from '../lib/data/shapes.js';
import { DataLoader, epochOrder } from '../lib/data/loader.js';
import { dataKind } from '../lib/data/spec.js';
import { Random } from '../lib/nn/random.js';
import { encodePng, makeTar, randomDataset, solid, wordTokenize } from './train-helpers.js';

const T = { size: 8, mean: [0, 0, 0], std: [1, 1, 1] };
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsclip-data-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const RED: [number, number, number] = [255, 0, 0];
const BLUE: [number, number, number] = [0, 0, 255];

describe('CSV / TSV', () => {
  it('reads quoted CSV fields and TSV rows; images decode and normalise; relative paths', async () => {
    expect(splitCsvLine('a,"b, ""c""",d', ',')).toEqual(['a', 'b, "c"', 'd']);
    writeFileSync(join(dir, 'red.png'), encodePng(solid(16, 12, RED), 16, 12));
    writeFileSync(join(dir, 'blue.png'), encodePng(solid(12, 12, BLUE), 12, 12));
    writeFileSync(join(dir, 'pairs.csv'), 'filepath,title\nred.png,"a red, square image"\nblue.png,a blue image\n');
    const ds = new CsvDataset(join(dir, 'pairs.csv'), T);
    expect(ds.length).toBe(2);
    const ex = (await ds.get(0))!;
    expect(ex.caption).toBe('a red, square image');
    expect(ex.image.length).toBe(3 * 64);
    expect(ex.image[0]).toBeCloseTo(1, 5);      // red plane
    expect(ex.image[64]).toBeCloseTo(0, 5);     // green plane
    writeFileSync(join(dir, 'pairs.tsv'), 'image\tcaption\nblue.png\ta blue image\n');
    const tsv = new CsvDataset(join(dir, 'pairs.tsv'), T);
    expect((await tsv.get(0))!.image[128]).toBeCloseTo(1, 5); // blue plane
    writeFileSync(join(dir, 'bad.csv'), 'path,text\nx.png,y\n');
    expect(() => new CsvDataset(join(dir, 'bad.csv'), T)).toThrow(/bad\.csv.*no "image" column.*path, text/);
  });
});

describe('bad data', () => {
  it('missing images and empty captions are skipped and counted; training data stays whole batches', async () => {
    writeFileSync(join(dir, 'mixed.csv'), ['filepath,title', 'red.png,red', 'missing.png,ghost', 'blue.png,', 'blue.png,blue', 'red.png,red again'].join('\n'));
    const loader = new DataLoader(new CsvDataset(join(dir, 'mixed.csv'), T), { batchSize: 3, contextLength: 8, tokenize: wordTokenize(8, 64), shuffle: false });
    const it = loader.batches({ epoch: 0, cursor: 0 })[Symbol.asyncIterator]();
    const first = (await it.next()).value!;
    expect(first.batch.captions).toEqual(['red', 'blue', 'red again']);
    expect(first.next).toEqual({ epoch: 0, cursor: 5 });
    await it.return!(undefined);
    const st = loader.stats();
    expect(st.skipped).toBe(2);
    expect(Object.keys(st.skippedReasons).some((k) => /empty caption/.test(k))).toBe(true);
  });

  it('skip reasons group by kind: without the file named or the detail libvips appends', () => {
    const corrupt = 'cannot decode the image: Input buffer has corrupt header';
    for (const msg of [
      `/data/a.jpg: ${corrupt}: VipsJpeg: premature end of JPEG image`,
      `'/data/b c.jpg': ${corrupt}:`,
      `preprocess: /data/x.jpg: ${corrupt}: another image's detail`,
    ])
      expect(shortReason(msg)).toBe(corrupt);
    // Bytes from memory (a WebDataset shard) keep their size, and lose the detail the same way.
    for (const tail of [': V...', ':', ': VipsJpeg: premature end of JPEG image'])
      expect(shortReason(`input (12 bytes): ${corrupt}${tail}`)).toBe(`input (12 bytes): ${corrupt}`);
    expect(shortReason('x'.repeat(100))).toBe(`${'x'.repeat(77)}...`);
  });

  it('mostly bad data stops with an error naming the data and the reasons', async () => {
    const loader = new DataLoader(randomDataset(100, 16, (i) => (i % 4 === 0 ? null : 'throw')), { batchSize: 4, contextLength: 8, tokenize: wordTokenize(8, 64) });
    const it = loader.batches({ epoch: 0, cursor: 0 })[Symbol.asyncIterator]();
    const drain = async () => {
      for (let k = 0; k < 10; k++) await it.next();
    };
    await expect(drain()).rejects.toThrow(/data random: \d+ of \d+ examples are unusable .*corrupt image/);
  });
});

describe('folder with .txt captions', () => {
  it('pairs images with same-named captions, recursively; a missing caption is a bad example', async () => {
    const f = join(dir, 'folder');
    mkdirSync(join(f, 'sub'), { recursive: true });
    writeFileSync(join(f, 'a.png'), encodePng(solid(8, 8, RED), 8, 8));
    writeFileSync(join(f, 'a.txt'), 'a red thing\n');
    writeFileSync(join(f, 'sub', 'b.png'), encodePng(solid(8, 8, BLUE), 8, 8));
    writeFileSync(join(f, 'sub', 'b.txt'), 'a blue thing');
    writeFileSync(join(f, 'c.png'), encodePng(solid(8, 8, BLUE), 8, 8));
    const ds = new FolderDataset(f, T);
    expect(ds.length).toBe(3);
    expect((await ds.get(0))!.caption).toBe('a red thing');
    await expect(Promise.resolve().then(() => ds.get(1))).rejects.toThrow(/c\.png: no caption file/);
    expect((await ds.get(2))!.caption).toBe('a blue thing');
    expect(() => new FolderDataset(join(dir, 'nope'), T)).toThrow(/nope: no such directory/);
  });
});

describe('WebDataset shards', () => {
  it('groups entries by key, shuffles through a buffer, splits shards across workers, resumes by position', async () => {
    const colors: [number, number, number][] = [RED, BLUE, [0, 255, 0], [255, 255, 0]];
    for (let s = 0; s < 3; s++) {
      const files: [string, Uint8Array][] = [];
      for (let k = 0; k < 4; k++) {
        const key = `s${s}/${String(s * 4 + k).padStart(5, '0')}`;
        files.push([`${key}.png`, encodePng(solid(8, 8, colors[k]), 8, 8)]);
        files.push([`${key}.txt`, Buffer.from(k === 3 && s === 1 ? '' : `sample ${s * 4 + k}`)]);
      }
      writeFileSync(join(dir, `shard-${String(s).padStart(3, '0')}.tar`), makeTar(files));
    }
    const spec = join(dir, 'shard-{000..002}.tar');
    expect(expandShards(spec).length).toBe(3);
    const opts = { transform: T, tokenize: wordTokenize(8, 64), contextLength: 8, batchSize: 2, seed: 1, shuffleBuffer: 4 };
    const src = new WebDatasetSource(spec, opts);
    const seen: string[] = [];
    const positions: { epoch: number; cursor: number }[] = [];
    let n = 0;
    for await (const { batch, next } of src.batches({ epoch: 0, cursor: 0 })) {
      seen.push(...batch.captions);
      positions.push(next);
      if (++n === 5) break;
    }
    // 11 usable samples in the first epoch: 5 batches of 2; the empty caption was counted
    expect(positions[4].epoch).toBe(0);
    expect(src.stats().skipped).toBe(1);
    expect(new Set(seen).size).toBe(10);
    expect(seen.every((c) => /^sample \d+$/.test(c))).toBe(true);
    // resuming at the third batch's position gives the same fourth batch
    const tokensAt = async (from: { epoch: number; cursor: number }, skip: number) => {
      const s = new WebDatasetSource(spec, opts);
      let k = 0;
      for await (const { batch } of s.batches(from)) if (k++ === skip) return Array.from(batch.pixels.slice(0, 200)).concat(Array.from(batch.tokens));
      return [];
    };
    expect(await tokensAt(positions[2], 0)).toEqual(await tokensAt({ epoch: 0, cursor: 0 }, 3));
    // shard split: worker 1 of 2 reads only shard 1
    expect(new WebDatasetSource(spec, { ...opts, worker: 1, workers: 2 }).shards.map((s) => s.slice(-7))).toEqual(['001.tar']);
    expect(() => new WebDatasetSource(spec, { ...opts, worker: 3, workers: 2 })).toThrow(/worker 3 of 2/);
    expect(dataKind(spec).kind).toBe('wds');
  });
});

describe('Fashion-MNIST IDX', () => {
  it('reads gzipped IDX images and labels and captions from class names', () => {
    const n = 5, S = 28;
    const imgs = Buffer.alloc(16 + n * S * S);
    imgs.writeUInt32BE(0x803, 0); imgs.writeUInt32BE(n, 4); imgs.writeUInt32BE(S, 8); imgs.writeUInt32BE(S, 12);
    for (let i = 0; i < n * S * S; i++) imgs[16 + i] = (i * 7) % 256;
    const labs = Buffer.alloc(8 + n);
    labs.writeUInt32BE(0x801, 0); labs.writeUInt32BE(n, 4);
    [0, 9, 3, 3, 7].forEach((l, i) => (labs[8 + i] = l));
    const f = join(dir, 'fmnist');
    mkdirSync(f, { recursive: true });
    writeFileSync(join(f, 't10k-images-idx3-ubyte.gz'), gzipSync(imgs));
    writeFileSync(join(f, 't10k-labels-idx1-ubyte'), labs);
    const ds = new FashionMnistDataset({ dir: f, split: 'test', imageSize: 28, mean: [0, 0, 0], std: [1, 1, 1] });
    expect(ds.length).toBe(5);
    expect(Array.from(ds.labels)).toEqual([0, 9, 3, 3, 7]);
    const ex = ds.get(1);
    expect(ex.caption).toContain(FASHION_CLASSES[9]);
    expect(ex.image[5]).toBeCloseTo(((S * S + 5) * 7 % 256) / 255, 6);
    expect(ex.image[S * S + 5]).toBe(ex.image[5]);
    expect(() => parseIdx(new Uint8Array([1, 2, 3, 4]), 'x.idx')).toThrow(/x\.idx: not an unsigned-byte IDX/);
    expect(() => new FashionMnistDataset({ dir: join(dir, 'none'), split: 'train' })).toThrow(/train-images-idx3-ubyte.*not found/);
  });
});

describe('shapes', () => {
  it('never shows a held-out colour-shape pair in training; the held-out set uses only those', () => {
    const train = new ShapesDataset({ size: 500, seed: 1 });
    const test = new ShapesDataset({ size: 200, seed: 2, heldOut: true });
    for (let i = 0; i < train.length; i++) {
      const { scene } = train.scene(i);
      expect(HELD_OUT.has(`${scene.color1} ${scene.shape1}`)).toBe(false);
      expect(HELD_OUT.has(`${scene.color2} ${scene.shape2}`)).toBe(false);
    }
    for (let i = 0; i < test.length; i++) expect(HELD_OUT.has(`${test.scene(i).scene.color1} ${test.scene(i).scene.shape1}`)).toBe(true);
    expect(PAIRS.length).toBe(12);
  });

  it('renders the named colours where the relation puts them, deterministically', () => {
    const ds = new ShapesDataset({ size: 50, seed: 4, imageSize: 32, mean: [0, 0, 0], std: [1, 1, 1], variants: false });
    for (let i = 0; i < 20; i++) {
      const { scene } = ds.scene(i);
      const { image, caption } = ds.get(i);
      expect(caption).toMatch(new RegExp(`^a (small|large) ${scene.color1} ${scene.shape1} (above|below|left of|right of) a ${scene.color2} ${scene.shape2}$`));
      expect(ds.get(i).image).toEqual(image);
      // the mean position of pixels close to colour 1 lies on the named side of those of colour 2
      const centre = (rgb: number[]) => {
        let sx = 0, sy = 0, n = 0;
        for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) {
          const d = [0, 1, 2].reduce((a, c) => a + Math.abs(image[c * 1024 + y * 32 + x] - rgb[c]), 0);
          if (d < 0.05) { sx += x; sy += y; n++; }
        }
        return [sx / n, sy / n];
      };
      const COL: Record<string, number[]> = { red: [0.9, 0.15, 0.1], green: [0.15, 0.8, 0.2], blue: [0.15, 0.3, 0.95], yellow: [0.95, 0.9, 0.1] };
      if (scene.color1 === scene.color2) continue;
      const [x1, y1] = centre(COL[scene.color1]), [x2, y2] = centre(COL[scene.color2]);
      if (scene.relation === 'above') expect(y1).toBeLessThan(y2);
      if (scene.relation === 'below') expect(y1).toBeGreaterThan(y2);
      if (scene.relation === 'left of') expect(x1).toBeLessThan(x2);
      if (scene.relation === 'right of') expect(x1).toBeGreaterThan(x2);
    }
  });

  it('a BPE learned from the captions encodes each word as one token, end token the largest id', () => {
    const tok = shapesTokenizer();
    const ids = tok.tokenizeToArray('a small red circle above a blue square', { contextLength: 16 });
    expect(ids[0]).toBe(tok.sot);
    expect(ids[9]).toBe(tok.eot);
    expect(tok.eot).toBe(tok.vocabSize - 1);
    expect(tok.decode(ids.slice(1, 9)).trim()).toBe('a small red circle above a blue square');
    expect(allCaptions().length).toBe(2 * 12 * 4 * 12 + 2 * 4 * (16 + 9));
    const train = new ShapesDataset({ size: 400, seed: 1 });
    const caps = Array.from({ length: 400 }, (_, i) => train.get(i).caption);
    expect(caps.filter((c) => / shape /.test(c)).length).toBeGreaterThan(50);
    expect(caps.filter((c) => /^a (small|large) (red|green|blue|yellow) (circle|square|triangle) /.test(c)).length).toBeGreaterThan(150);
  });
});

describe('loader order', () => {
  it('epoch orders are permutations that depend on seed and epoch only', () => {
    const a = epochOrder(50, 3, 1, true);
    expect([...a].sort((x, y) => x - y)).toEqual([...Array(50).keys()]);
    expect(epochOrder(50, 3, 1, true)).toEqual(a);
    expect(epochOrder(50, 3, 2, true)).not.toEqual(a);
    expect(new Random(1).next()).toBe(new Random(1).next());
  });
});
