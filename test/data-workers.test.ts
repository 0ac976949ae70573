// Worker threads decoding and preprocessing ahead of the step: the same seed gives bit-identical
// batches with 0, 1 or 2 threads for every source (folder, CSV, WebDataset shards, Fashion-MNIST
// IDX, shapes); bad images are skipped and counted the same way; a dead thread is an Error naming
// the file; threads end on their own and never keep a process alive.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import sharp from 'sharp';
import { FolderDataset } from '../lib/data/folder.js';
import { CsvDataset } from '../lib/data/csv.js';
import { FashionMnistDataset } from '../lib/data/fashion-mnist.js';
import { ShapesDataset } from '../lib/data/shapes.js';
import { WebDatasetSource } from '../lib/data/webdataset.js';
import { DataLoader, epochOrder } from '../lib/data/loader.js';
import { DataWorkerError, DecodePool } from '../lib/data/pool.js';
import type { ExampleJob } from '../lib/data/jobs.js';
import type { BatchSource, Dataset, DataPosition, DataStats } from '../lib/data/types.js';
import { preprocess } from '../lib/image/preprocess.js';
import { addonPath } from '../lib/native/addon.js';
import { Random } from '../lib/nn/random.js';
import { makeTar, wordTokenize } from './train-helpers.js';

const R = 24;
const MEAN = [0.48, 0.46, 0.41], STD = [0.27, 0.26, 0.28];
const T = { size: R, mean: MEAN, std: STD };
const L = 8;
const WORDS = ['red', 'blue', 'green', 'dog', 'cat', 'tree', 'car', 'house'];

let dir: string;
/** Image files that decode, with their captions; the three bad files. */
const good: { file: string; caption: string }[] = [];
const BAD = ['corrupt.jpg', 'nocaption.png', 'emptycaption.png'];

/** Smooth random pixels (JPEG and resizing see structure, not noise). */
function pixels(r: Random, w: number, h: number, c: number): Buffer {
  const a = Buffer.alloc(w * h * c);
  const f = Array.from({ length: c }, () => [r.next() * 0.5, r.next() * 0.5, r.next() * 6]);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) {
    a[(y * w + x) * c + k] = Math.round(127.5 + 120 * Math.sin(f[k][0] * x + f[k][1] * y + f[k][2]));
  }
  return a;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tsclip-workers-'));
  const img = join(dir, 'images');
  mkdirSync(img);
  const r = new Random(11);
  // RGB, RGBA and grey; PNG and JPEG; sizes that need resizing and cropping both ways.
  for (let i = 0; i < 14; i++) {
    const w = 17 + ((i * 7) % 23), h = 15 + ((i * 11) % 29), c = [3, 4, 1, 3][i % 4];
    const s = sharp(pixels(r, w, h, c), { raw: { width: w, height: h, channels: c as 1 | 3 | 4 } });
    const file = join(img, `im${String(i).padStart(2, '0')}.${i % 3 === 0 && c !== 4 ? 'jpg' : 'png'}`);
    await (file.endsWith('.jpg') ? s.jpeg({ quality: 80 }) : s.png()).toFile(file);
    const caption = `a ${WORDS[i % 8]} ${WORDS[(i * 3 + 1) % 8]} ${i}`;
    writeFileSync(file.replace(/\.\w+$/, '.txt'), `${caption}\n`);
    good.push({ file, caption });
  }
  writeFileSync(join(img, 'corrupt.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 5, 6, 7, 8]));
  writeFileSync(join(img, 'corrupt.txt'), 'a corrupt file');
  await sharp(pixels(r, 20, 20, 3), { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(join(img, 'nocaption.png'));
  await sharp(pixels(r, 20, 20, 3), { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(join(img, 'emptycaption.png'));
  writeFileSync(join(img, 'emptycaption.txt'), '  \n');
  writeFileSync(join(dir, 'pairs.csv'), ['filepath,title', ...good.map((g) => `images/${g.file.split('/').pop()},${g.caption}`), 'images/corrupt.jpg,broken', 'images/missing.png,gone'].join('\n'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  captions: string[][];
  tokens: number[][];
  pixels: Buffer[];
  positions: DataPosition[];
  stats: DataStats;
}

/** The first n batches of a source, from the start, then the iterator closed. */
async function run(src: BatchSource, n: number): Promise<Run> {
  const out: Run = { captions: [], tokens: [], pixels: [], positions: [], stats: src.stats() };
  for await (const { batch, next } of src.batches({ epoch: 0, cursor: 0 })) {
    out.captions.push(batch.captions);
    out.tokens.push(Array.from(batch.tokens));
    out.pixels.push(Buffer.from(batch.pixels.buffer, batch.pixels.byteOffset, batch.pixels.byteLength));
    out.positions.push(next);
    if (out.captions.length === n) break;
  }
  out.stats = src.stats();
  return out;
}

function expectSame(a: Run, b: Run): void {
  expect(b.captions).toEqual(a.captions);
  expect(b.positions).toEqual(a.positions);
  expect(b.tokens).toEqual(a.tokens);
  // Bit-identical pixels, not merely close.
  b.pixels.forEach((p, k) => expect(p.equals(a.pixels[k]), `batch ${k} pixels`).toBe(true));
  expect({ ...b.stats, waitMs: 0 }).toEqual({ ...a.stats, waitMs: 0 });
}

/** How often each name was tried: every slot of the epochs' orders up to a position. */
function tried(names: string[], seed: number, last: DataPosition): (name: string) => number {
  const all: string[] = [];
  for (let e = 0; e <= last.epoch; e++) all.push(...epochOrder(names.length, seed, e, true).slice(0, e === last.epoch ? last.cursor : names.length).map((i) => names[i]));
  return (name) => all.filter((t) => t === name).length;
}

const loader = (ds: Dataset, workerThreads: number, batchSize = 4) =>
  new DataLoader(ds, { batchSize, contextLength: L, tokenize: wordTokenize(L, 64), seed: 5, workerThreads });

describe('worker threads give the batches of the main thread', () => {
  it('a folder of PNG/JPEG images (RGB, RGBA, grey) with a corrupt file, a missing and an empty caption: 0, 1, 2 threads', async () => {
    const ds = new FolderDataset(join(dir, 'images'), T);
    expect(ds.length).toBe(17);
    // 14 usable of 17 per epoch: 3 batches of 4, the tail dropped; 7 batches run into the third epoch.
    const [r0, r1, r2] = [await run(loader(ds, 0), 7), await run(loader(ds, 1), 7), await run(loader(ds, 2), 7)];
    expectSame(r0, r1);
    expectSame(r0, r2);
    const last = r0.positions[6];
    expect(last.epoch).toBe(2);
    // Every slot of the epochs' orders up to the last position was tried: the bad files among them
    // are exactly the skipped ones, by reason.
    const names = Array.from({ length: ds.length }, (_, i) => ds.job(i).file.split('/').pop()!);
    const count = tried(names, 5, last);
    expect(r1.stats.skipped).toBe(count('corrupt.jpg') + count('nocaption.png') + count('emptycaption.png'));
    expect(r1.stats.examples).toBe(2 * 17 + last.cursor - r1.stats.skipped);
    expect(r1.stats.skippedReasons['no caption file']).toBe(count('nocaption.png'));
    expect(r1.stats.skippedReasons['empty caption']).toBe(count('emptycaption.png'));
    const corrupt = Object.entries(r1.stats.skippedReasons).filter(([k]) => k !== 'no caption file' && k !== 'empty caption');
    expect(corrupt.length).toBe(1);
    // Grouped by the decoder's message, without libvips' detail (which threads decoding at once can garble).
    expect(corrupt[0][0]).toMatch(/^cannot decode the image: [^:]+$/);
    expect(corrupt[0][1]).toBe(count('corrupt.jpg'));
    // The threads' pixels are the CLIP transform of the file (PIL bicubic resize, centre crop, normalise).
    const first = good.find((g) => g.caption === r2.captions[0][0])!;
    const ref = await preprocess(first.file, { size: R, mean: MEAN, std: STD });
    const px = new Float32Array(r2.pixels[0].buffer, r2.pixels[0].byteOffset, 3 * R * R);
    const want = ref.toArraySync() as Float32Array;
    ref.dispose();
    for (let k = 0; k < want.length; k += 7) expect(px[k]).toBeCloseTo(want[k], 5);
  });

  it('a CSV table (a missing file, a corrupt one) and its relative paths', async () => {
    const ds = new CsvDataset(join(dir, 'pairs.csv'), T);
    const [r0, r2] = [await run(loader(ds, 0, 5), 4), await run(loader(ds, 2, 5), 4)];
    expectSame(r0, r2);
    const count = tried(Array.from({ length: ds.length }, (_, i) => ds.job(i).file.split('/').pop()!), 5, r2.positions.at(-1)!);
    expect(r2.stats.skipped).toBe(count('corrupt.jpg') + count('missing.png'));
    expect(Object.keys(r2.stats.skippedReasons).length).toBe(2);
  });

  it('WebDataset shards: bytes moved to the threads, samples taken back in the order drawn', async () => {
    const files = good.slice(0, 12);
    const bytes = (f: string) => new Uint8Array(readFileSync(f));
    for (let s = 0; s < 2; s++) {
      const entries: [string, Uint8Array][] = [];
      files.slice(s * 6, s * 6 + 6).forEach((g, k) => {
        const key = `s${s}/${String(s * 6 + k).padStart(4, '0')}`;
        entries.push([`${key}.${g.file.endsWith('.jpg') ? 'jpg' : 'png'}`, bytes(g.file)], [`${key}.txt`, Buffer.from(g.caption)]);
      });
      entries.push([`s${s}/bad${s}.jpg`, bytes(join(dir, 'images', 'corrupt.jpg'))], [`s${s}/bad${s}.txt`, Buffer.from('broken')]);
      writeFileSync(join(dir, `shard-${s}.tar`), makeTar(entries));
    }
    const src = (workerThreads: number) => new WebDatasetSource(join(dir, 'shard-{0..1}.tar'), {
      transform: T, tokenize: wordTokenize(L, 64), contextLength: L, batchSize: 3, seed: 2, shuffleBuffer: 5, workerThreads,
    });
    const [r0, r2] = [await run(src(0), 6), await run(src(2), 6)];
    expectSame(r0, r2);
    // 12 usable samples an epoch: 4 batches, so the sixth is the second of epoch 1.
    expect(r2.positions.at(-1)!.epoch).toBe(1);
    expect(r2.stats.examples).toBe(18);
    expect(r2.stats.skipped).toBeGreaterThanOrEqual(2); // both corrupt samples of epoch 0, and those drawn in epoch 1
  });

  it('Fashion-MNIST IDX (scaled 28 -> 32) and the shapes generator', async () => {
    const n = 40, S = 28;
    const imgs = Buffer.alloc(16 + n * S * S);
    imgs.writeUInt32BE(0x803, 0); imgs.writeUInt32BE(n, 4); imgs.writeUInt32BE(S, 8); imgs.writeUInt32BE(S, 12);
    const r = new Random(3);
    for (let i = 0; i < n * S * S; i++) imgs[16 + i] = Math.floor(r.next() * 256);
    const labs = Buffer.alloc(8 + n);
    labs.writeUInt32BE(0x801, 0); labs.writeUInt32BE(n, 4);
    for (let i = 0; i < n; i++) labs[8 + i] = i % 10;
    const f = join(dir, 'fmnist');
    mkdirSync(f, { recursive: true });
    writeFileSync(join(f, 'train-images-idx3-ubyte.gz'), gzipSync(imgs));
    writeFileSync(join(f, 'train-labels-idx1-ubyte'), labs);
    const fm = new FashionMnistDataset({ dir: f, split: 'train', imageSize: 32, seed: 1 });
    expectSame(await run(loader(fm, 0, 8), 6), await run(loader(fm, 2, 8), 6));
    const shapes = new ShapesDataset({ size: 60, imageSize: 32, seed: 4 });
    const s0 = await run(loader(shapes, 0, 8), 8);
    expectSame(s0, await run(loader(shapes, 1, 8), 8));
    // 7 batches an epoch; the eighth takes the 4 left (counted, then dropped) and 8 of epoch 1.
    expect(s0.positions.at(-1)).toEqual({ epoch: 1, cursor: 8 });
    expect(s0.stats.examples).toBe(68);
  });
});

describe('failures and shutdown', () => {
  it('the native addon loads in worker threads that come and go (no state kept across environments)', () => {
    const path = addonPath();
    // In a child process: a heap corrupted by a stale per-environment reference would abort it.
    const code = `
const { Worker } = require('node:worker_threads');
const addon = require(${JSON.stringify(path)});
const body = 'const a = require(' + JSON.stringify(${JSON.stringify(path)}) + '); const s = new a.Storage(64, 0);' +
  's.write(0, new Uint8Array(64).fill(7)); require("node:worker_threads").parentPort.postMessage(new Uint8Array(s.read(0, 64))[9]);';
(async () => {
  let sum = 0;
  for (let k = 0; k < 25; k++) {
    const ws = [0, 1].map(() => new Worker(body, { eval: true }));
    const got = await Promise.all(ws.map((w) => new Promise((res, rej) => { w.once('message', res); w.once('error', rej); })));
    sum += got[0] + got[1];
    await Promise.all(ws.map((w) => w.terminate()));
  }
  const s = new addon.Storage(8, 0);
  s.dispose();
  console.log(sum);
})();`;
    const p = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
    expect(p.status, p.stderr).toBe(0);
    expect(p.stdout.trim()).toBe(String(7 * 50));
  });

  it('a thread that dies fails its jobs and every later one with an Error naming the file; close() still ends the others', async () => {
    const pool = new DecodePool(2);
    const shapes = new ShapesDataset({ size: 10, imageSize: 16, seed: 1 });
    const ok = await pool.run(shapes.job(3));
    expect(Buffer.from(ok!.image.buffer).equals(Buffer.from(shapes.get(3).image.buffer))).toBe(true);
    // A job this worker code does not know (a stale worker script) kills the thread that gets it.
    const alien = { op: 'from-another-version', label: '/data/photos/broken-0007.png' } as unknown as ExampleJob;
    const err = await pool.run(alien).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataWorkerError);
    expect((err as Error).message).toMatch(/data worker thread \d of 2 stopped while preparing \/data\/photos\/broken-0007\.png: .*not a job this worker knows/);
    await expect(pool.run(shapes.job(4))).rejects.toThrow(/broken-0007\.png/);
    const codes = await pool.close();
    expect(codes.sort()).toEqual([0, 1]);
  });

  it('the loader throws a dead thread\'s error instead of counting a bad example', async () => {
    const folder = new FolderDataset(join(dir, 'images'), T);
    const victim = folder.job(2).file;
    const ds: Dataset = {
      name: 'folder', length: folder.length, imageSize: R, get: (i) => folder.get(i),
      job: (i) => (i === 2 ? ({ op: 'from-another-version', label: victim } as unknown as ExampleJob) : folder.job(i)),
    };
    await expect(run(loader(ds, 2), 20)).rejects.toThrow(new RegExp(`stopped while preparing ${victim.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    // On the main thread the same dataset is read with get(): no job, no thread, no failure.
    expect((await run(loader(ds, 0), 2)).captions.length).toBe(2);
  });

  it('threads end on their own at close(); a process that returns or abandons the iterator exits', async () => {
    const pool = new DecodePool(2);
    const shapes = new ShapesDataset({ size: 10, imageSize: 16, seed: 1 });
    await Promise.all([0, 1, 2, 3, 4].map((i) => pool.run(shapes.job(i))));
    expect(await pool.close()).toEqual([0, 0]);

    // The package layout: the worker's JavaScript next to the bundle that starts it (what tsup emits).
    const out = join(__dirname, '..', 'node_modules', '.cache', 'tsclip-data-workers-test');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'package.json'), '{ "type": "module" }\n');
    const { build } = await import('esbuild');
    const common = { bundle: true, platform: 'node' as const, format: 'esm' as const, target: 'node20', external: ['sharp'], logLevel: 'silent' as const,
      banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } };
    await build({ ...common, entryPoints: [join(__dirname, '..', 'lib', 'data', 'worker.ts')], outfile: join(out, 'data-worker.js') });
    writeFileSync(join(out, 'main.ts'), `
import { DataLoader, ShapesDataset } from '../../../lib/data/index.js';
import { workerScript } from '../../../lib/data/worker-script.js';
const loader = new DataLoader(new ShapesDataset({ size: 64, imageSize: 16, seed: 2 }), {
  batchSize: 8, contextLength: 4, seed: 3, workerThreads: 2, tokenize: (c) => new Int32Array(c.length * 4),
});
const it = loader.batches({ epoch: 0, cursor: 0 })[Symbol.asyncIterator]();
let sum = 0;
for (let k = 0; k < 3; k++) for (const v of (await it.next()).value.batch.pixels) sum += v;
if (process.argv[2] === 'return') await it.return(undefined);
console.log(JSON.stringify({ sum, script: workerScript() }));
`);
    await build({ ...common, entryPoints: [join(out, 'main.ts')], outfile: join(out, 'main.js') });
    const shapes2 = new ShapesDataset({ size: 64, imageSize: 16, seed: 2 });
    const ref = new DataLoader(shapes2, { batchSize: 8, contextLength: 4, seed: 3, tokenize: (c) => new Int32Array(c.length * 4) });
    let want = 0, k = 0;
    for await (const { batch } of ref.batches({ epoch: 0, cursor: 0 })) {
      for (const v of batch.pixels) want += v;
      if (++k === 3) break;
    }
    for (const mode of ['return', 'abandon']) {
      const t0 = performance.now();
      const p = spawnSync(process.execPath, [join(out, 'main.js'), mode], { encoding: 'utf8', timeout: 30_000 });
      expect(p.status, `${mode}: ${p.stderr}`).toBe(0);
      const r = JSON.parse(p.stdout);
      expect(r.script).toBe(join(out, 'data-worker.js'));
      expect(r.sum).toBe(want);
      expect(performance.now() - t0).toBeLessThan(15_000);
    }
  });
});
