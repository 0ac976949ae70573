// Image decoding and the CLIP transform: the native bicubic kernel against a TypeScript version of
// PIL's algorithm, the uint8 steps against torchvision's rules, and the whole transform against the
// PIL/torchvision reference fixtures (../shared/fixtures/preprocess).
import { existsSync, readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '../lib/io/safetensors.js';
import type { RawTensor } from '../lib/io/raw.js';
import { decodeImage, decodeImageAsStored, toRGB, type RawImage } from '../lib/image/decode.js';
import {
  CLIP_MEAN,
  CLIP_STD,
  centerCrop,
  clipCrop,
  preprocess,
  resampleBicubic,
  resampleNearest,
  resizePIL,
  resizeShorterSide,
  resizedSize,
} from '../lib/image/preprocess.js';
import { Tensor, bf16ToF32, f32ToBf16, runRaw } from '../lib/tensor.js';
import { SHARED, rng } from './helpers.js';

// --- PIL's resampling in TypeScript (doubles for the weights, exact integers for the sums) ------
const PREC = 22;

function bicubicW(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs { first: number[]; k: number[][]; kf: number[][] }

function coeffs(inSize: number, in0: number, in1: number, outSize: number): Coeffs {
  const f0 = Math.fround(in0), f1 = Math.fround(in1);
  const scale = Math.fround(f1 - f0) / outSize;
  const fs = Math.max(scale, 1);
  const support = 2 * fs;
  const first: number[] = [], k: number[][] = [], kf: number[][] = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = f0 + (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5));
    const w: number[] = [];
    let ww = 0;
    for (let x = xmin; x < xmax; x++) {
      const v = bicubicW((x - center + 0.5) * (1 / fs));
      w.push(v);
      ww += v;
    }
    const norm = w.map((v) => (ww !== 0 ? v / ww : v));
    first.push(xmin);
    kf.push(norm);
    k.push(norm.map((v) => (v < 0 ? Math.trunc(-0.5 + v * (1 << PREC)) : Math.trunc(0.5 + v * (1 << PREC)))));
  }
  return { first, k, kf };
}

const clip8 = (v: number) => Math.min(255, Math.max(0, v >> PREC));

/** PIL's ImagingResample (BICUBIC) on [h, w, c] uint8, pass structure included. */
function pilResample(img: RawImage, W2: number, H2: number, box = [0, 0, img.width, img.height]): Uint8Array {
  const { width: W, height: H, channels: C, data } = img;
  const needH = W2 !== W || box[0] !== 0 || box[2] !== W2;
  const needV = H2 !== H || box[1] !== 0 || box[3] !== H2;
  if (!needH && !needV) return data.slice();
  const cv = coeffs(H, box[1], box[3], H2);
  let src = data, sw = W, rowOff = 0;
  if (needH) {
    const ch = coeffs(W, box[0], box[2], W2);
    const y0 = cv.first[0];
    const y1 = cv.first[H2 - 1] + cv.k[H2 - 1].length;
    const tmp = new Uint8Array((y1 - y0) * W2 * C);
    for (let y = y0; y < y1; y++)
      for (let xx = 0; xx < W2; xx++)
        for (let c = 0; c < C; c++) {
          let s = 1 << (PREC - 1);
          ch.k[xx].forEach((kx, t) => (s += data[(y * W + ch.first[xx] + t) * C + c] * kx));
          tmp[((y - y0) * W2 + xx) * C + c] = clip8(s);
        }
    if (!needV) return tmp;
    src = tmp;
    sw = W2;
    rowOff = y0;
  }
  const out = new Uint8Array(H2 * W2 * C);
  for (let yy = 0; yy < H2; yy++)
    for (let x = 0; x < sw; x++)
      for (let c = 0; c < C; c++) {
        let s = 1 << (PREC - 1);
        cv.k[yy].forEach((ky, t) => (s += src[((cv.first[yy] + t - rowOff) * sw + x) * C + c] * ky));
        out[(yy * W2 + x) * C + c] = clip8(s);
      }
  return out;
}

/** The same separable filter in plain float64: no fixed point, no rounding between the passes. */
function floatResample(img: RawImage, W2: number, H2: number, box = [0, 0, img.width, img.height]): Float64Array {
  const { width: W, height: H, channels: C, data } = img;
  const ch = coeffs(W, box[0], box[2], W2), cv = coeffs(H, box[1], box[3], H2);
  const tmp = new Float64Array(H * W2 * C);
  for (let y = 0; y < H; y++)
    for (let xx = 0; xx < W2; xx++)
      for (let c = 0; c < C; c++) {
        let s = 0;
        ch.kf[xx].forEach((kx, t) => (s += data[(y * W + ch.first[xx] + t) * C + c] * kx));
        tmp[(y * W2 + xx) * C + c] = Math.min(255, Math.max(0, s)); // PIL clips between passes
      }
  const out = new Float64Array(H2 * W2 * C);
  for (let yy = 0; yy < H2; yy++)
    for (let x = 0; x < W2 * C; x++) {
      let s = 0;
      cv.kf[yy].forEach((ky, t) => (s += tmp[(cv.first[yy] + t) * W2 * C + x] * ky));
      out[yy * W2 * C + x] = Math.min(255, Math.max(0, s));
    }
  return out;
}

function randomImage(w: number, h: number, c: number, seed: number, smooth = false): RawImage {
  const r = rng(seed);
  const data = new Uint8Array(w * h * c);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  if (smooth) {
    // A gradient plus noise: realistic content with the occasional sharp edge.
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let q = 0; q < c; q++) {
          const i = (y * w + x) * c + q;
          data[i] = Math.min(255, Math.floor((255 * (x + y)) / (w + h)) + (data[i] & 15));
        }
  }
  return { data, width: w, height: h, channels: c };
}

function firstDiff(a: Uint8Array, b: Uint8Array): string {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `at ${i}: ${a[i]} vs ${b[i]}`;
  return a.length === b.length ? 'none' : `lengths ${a.length} vs ${b.length}`;
}

describe('resample_bicubic (native) vs PIL algorithm in TypeScript', () => {
  const cases: [number, number, number, number, number, number[]?][] = [
    // [w, h, c, W2, H2, box]
    [17, 13, 3, 40, 29],
    [40, 29, 3, 17, 13],
    [64, 48, 3, 21, 16],
    [31, 7, 1, 5, 23],
    [9, 11, 4, 9, 31],
    [33, 21, 2, 33, 21, [0.5, 1.25, 30.75, 20]],
    [50, 40, 3, 24, 24, [3.3, 2.1, 41.7, 38.9]],
    [25, 30, 3, 60, 45, [1, 2, 20, 27]],
    [23, 19, 3, 23, 7],
    [23, 19, 3, 8, 19],
    [1, 1, 3, 5, 4],
    [123, 77, 3, 224, 140],
    [300, 451, 3, 224, 336],
  ];
  for (const [w, h, c, W2, H2, box] of cases) {
    it(`${w}x${h}x${c} -> ${W2}x${H2}${box ? ` box [${box.join(', ')}]` : ''}`, () => {
      for (const smooth of [false, true]) {
        const img = randomImage(w, h, c, w * 1000 + h * 10 + c + (smooth ? 7 : 0), smooth);
        const got = resampleBicubic(img, W2, H2, box as [number, number, number, number] | undefined);
        const want = pilResample(img, W2, H2, box);
        expect(firstDiff(got.data, want)).toBe('none');
        // And the fixed-point algorithm stays close to the exact float64 filter.
        const f = floatResample(img, W2, H2, box);
        let worst = 0;
        for (let i = 0; i < f.length; i++) worst = Math.max(worst, Math.abs(got.data[i] - f[i]));
        expect(worst).toBeLessThan(2.01);
      }
    });
  }

  it('handles any channel count natively (5 channels through the generic loop)', () => {
    const img = randomImage(13, 11, 5, 77);
    for (const [W2, H2] of [[6, 17], [29, 4]]) {
      const src = Tensor.from(img.data, [11, 13, 5]);
      const dst = Tensor.empty([H2, W2, 5], { dtype: 'uint8' });
      runRaw('resample_bicubic', [src], [dst], [], [0, 0, 13, 11]);
      expect(firstDiff(dst.toArraySync() as Uint8Array, pilResample(img, W2, H2))).toBe('none');
      src.dispose();
      dst.dispose();
    }
  });

  it('keeps a constant image constant and copies when nothing changes', () => {
    const img: RawImage = { data: new Uint8Array(20 * 10 * 3).fill(77), width: 20, height: 10, channels: 3 };
    expect(resampleBicubic(img, 7, 33).data.every((v) => v === 77)).toBe(true);
    const r = randomImage(12, 9, 3, 5);
    expect(firstDiff(resampleBicubic(r, 12, 9).data, r.data)).toBe('none');
  });

  it('matches for many random sizes', () => {
    const r = rng(99);
    for (let t = 0; t < 40; t++) {
      const w = 1 + Math.floor(r() * 40), h = 1 + Math.floor(r() * 40), c = 1 + Math.floor(r() * 4);
      const W2 = 1 + Math.floor(r() * 50), H2 = 1 + Math.floor(r() * 50);
      const img = randomImage(w, h, c, t + 1);
      const x0 = r() * w * 0.3, y0 = r() * h * 0.3;
      const box = t % 2 ? [x0, y0, x0 + (w - x0) * (0.5 + 0.5 * r()), y0 + (h - y0) * (0.5 + 0.5 * r())] : undefined;
      const got = resampleBicubic(img, W2, H2, box as [number, number, number, number] | undefined);
      expect(firstDiff(got.data, pilResample(img, W2, H2, box)), `${w}x${h}x${c} -> ${W2}x${H2} ${box}`).toBe('none');
    }
  });

  it('rejects bad arguments with the op name', () => {
    const img = randomImage(8, 6, 3, 1);
    expect(() => resampleBicubic(img, 0, 4)).toThrow(/resampleBicubic.*output size/);
    expect(() => resampleBicubic(img, 4, 4, [-1, 0, 8, 6])).toThrow(/resample_bicubic: box offset can't be negative/);
    expect(() => resampleBicubic(img, 4, 4, [0, 0, 9, 6])).toThrow(/resample_bicubic: box can't exceed original image size/);
    expect(() => resampleBicubic(img, 4, 4, [5, 0, 4, 6])).toThrow(/resample_bicubic: box can't be empty/);
    expect(() => resampleBicubic({ ...img, data: img.data.subarray(1) }, 4, 4)).toThrow(/need 144 bytes, got 143/);
    const src = Tensor.from(img.data, [6, 8, 3]);
    const bad = Tensor.empty([4, 4, 1], { dtype: 'uint8' });
    expect(() => runRaw('resample_bicubic', [src], [bad], [], [0, 0, 8, 6])).toThrow(/resample_bicubic: dst must be .*channels/);
    const f = Tensor.empty([6, 8, 3]);
    expect(() => runRaw('resample_bicubic', [f], [bad], [], [0, 0, 8, 6])).toThrow(/resample_bicubic: src must be a uint8/);
    for (const t of [src, bad, f]) t.dispose();
  });
});

describe('image_normalize (native)', () => {
  it('computes (u/255 - mean)/std in float32, strided sources included', () => {
    const img = randomImage(13, 7, 3, 3);
    const mean = [0.1, 0.5, 0.9], std = [0.2, 0.3, 0.7];
    const src = Tensor.from(img.data, [7, 13, 3]);
    const out = Tensor.empty([3, 7, 13]);
    runRaw('image_normalize', [src], [out], [], [...mean, ...std]);
    const got = out.toArraySync() as Float32Array;
    const f = Math.fround;
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < 7 * 13; p++) {
        const want = f(f(f(img.data[p * 3 + c] / 255) - f(mean[c])) / f(std[c]));
        if (got[c * 91 + p] !== want) throw new Error(`c${c} p${p}: ${got[c * 91 + p]} vs ${want}`);
      }
    // A [7, 5, 3] window of the same image (row stride 39) gives the matching window.
    const win = src.view([7, 5, 3], [39, 3, 1], 4 * 3);
    const out2 = Tensor.empty([3, 7, 5]);
    runRaw('image_normalize', [win], [out2], [], [...mean, ...std]);
    const g2 = out2.toArraySync() as Float32Array;
    for (let c = 0; c < 3; c++) for (let y = 0; y < 7; y++) for (let x = 0; x < 5; x++) expect(g2[c * 35 + y * 5 + x]).toBe(got[c * 91 + y * 13 + x + 4]);
    expect(() => runRaw('image_normalize', [src], [out2], [], [...mean, ...std])).toThrow(/image_normalize: dst must be contiguous \[3,7,13\]/);
    expect(() => runRaw('image_normalize', [src], [out], [], [...mean, 1, 0, 1])).toThrow(/image_normalize: std must not be zero/);
    for (const t of [src, out, win, out2]) t.dispose();
  });
});

describe('uint8 steps follow torchvision', () => {
  it('resizedSize: short side becomes N, long side int(N * long / short)', () => {
    expect(resizedSize(451, 300, 224)).toEqual({ width: 336, height: 224 });
    expect(resizedSize(300, 451, 224)).toEqual({ width: 224, height: 336 });
    expect(resizedSize(400, 100, 224)).toEqual({ width: 896, height: 224 });
    expect(resizedSize(500, 500, 224)).toEqual({ width: 224, height: 224 });
    // 224 * 333 / 199 = 374.83 -> 374 (truncation, not rounding)
    expect(resizedSize(333, 199, 224)).toEqual({ width: 374, height: 224 });
    expect(resizedSize(7, 3, 224)).toEqual({ width: 522, height: 224 });
  });

  it('centerCrop uses round-half-even offsets and zero padding', () => {
    const row = (w: number, h: number) => {
      const data = new Uint8Array(w * h);
      for (let i = 0; i < data.length; i++) data[i] = (i % w) + 1 + 100 * Math.floor(i / w);
      return { data, width: w, height: h, channels: 1 };
    };
    // Excess 1, 3, 5 -> offsets round(0.5)=0, round(1.5)=2, round(2.5)=2.
    expect(centerCrop(row(5, 4), 4).data[0]).toBe(1);
    expect(centerCrop(row(7, 4), 4).data[0]).toBe(3);
    expect(centerCrop(row(9, 4), 4).data[0]).toBe(3);
    expect(centerCrop(row(10, 4), 4).data[0]).toBe(4);
    // Vertical offset for a 4x7 image: round(1.5) = 2 -> first row value 201.
    expect(centerCrop(row(4, 7), 4).data[0]).toBe(201);
    // Smaller than the crop: pad (size - w) // 2 on the left/top with zeros.
    const p = centerCrop(row(2, 1), 5);
    expect(Array.from(p.data)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('resizePIL: premultiplied alpha for RGBA, NEAREST for palette images', () => {
    const img = randomImage(9, 7, 4, 11);
    const got = resizePIL(img, 5, 4);
    // Reference: PIL's RGBA -> RGBa, resample, RGBa -> RGBA, written out here.
    const pre = new Uint8Array(img.data.length);
    for (let p = 0; p < pre.length; p += 4) {
      const a = img.data[p + 3];
      for (let q = 0; q < 3; q++) pre[p + q] = Math.round((img.data[p + q] * a) / 255);
      pre[p + 3] = a;
    }
    const rs = pilResample({ ...img, data: pre }, 5, 4);
    for (let p = 0; p < rs.length; p += 4) {
      const a = rs[p + 3];
      for (let q = 0; q < 3; q++) {
        const want = a === 0 || a === 255 ? rs[p + q] : Math.min(255, Math.floor((255 * rs[p + q]) / a));
        expect(got.data[p + q]).toBe(want);
      }
      expect(got.data[p + 3]).toBe(a);
    }
    // Palette: every output pixel is the source pixel at int((x + 0.5) * W / w).
    const pal = { ...randomImage(10, 6, 3, 4), mode: 'P' as const };
    const n = resampleNearest(pal, 4, 3);
    expect(resizePIL(pal, 4, 3).data).toEqual(n.data);
    for (let y = 0; y < 3; y++)
      for (let x = 0; x < 4; x++) {
        const sx = Math.trunc((x + 0.5) * 2.5), sy = Math.trunc((y + 0.5) * 2);
        for (let q = 0; q < 3; q++) expect(n.data[(y * 4 + x) * 3 + q]).toBe(pal.data[(sy * 10 + sx) * 3 + q]);
      }
  });

  it('resizeShorterSide rejects extreme aspect ratios and bad sizes', () => {
    const thin = { data: new Uint8Array(60000 * 3), width: 60000, height: 1, channels: 3 };
    expect(() => resizeShorterSide(thin, 224)).toThrow(/aspect ratio is too extreme/);
    expect(() => resizeShorterSide(randomImage(4, 4, 3, 1), 0)).toThrow(/size must be an integer/);
    expect(() => centerCrop(randomImage(4, 4, 3, 1), 2.5)).toThrow(/size must be an integer/);
  });
});

// --- the reference fixtures -----------------------------------------------------------------
const FIX = join(SHARED, 'fixtures', 'preprocess');
const HAVE_FIX = existsSync(join(FIX, 'preprocess.safetensors'));

function f32(t: RawTensor): Float32Array {
  const copy = new Uint8Array(t.data); // a copy (Buffer#slice would be a view), so aligned at 0
  return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
}

/** The uint8 image behind a normalised reference [3, N, N] (as [N, N, 3]). */
function recoverU8(ref: Float32Array, n: number): Uint8Array {
  const out = new Uint8Array(n * n * 3);
  for (let c = 0; c < 3; c++)
    for (let p = 0; p < n * n; p++) out[p * 3 + c] = Math.round((ref[c * n * n + p] * CLIP_STD[c] + CLIP_MEAN[c]) * 255);
  return out;
}

function agreement(got: Uint8Array, want: Uint8Array): { equal: number; maxDiff: number; meanAbs: number } {
  let eq = 0, mx = 0, sum = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (d === 0) eq++;
    mx = Math.max(mx, d);
    sum += d;
  }
  return { equal: eq / got.length, maxDiff: mx, meanAbs: sum / got.length };
}

describe.skipIf(!HAVE_FIX)(`CLIP transform vs PIL + torchvision fixtures${HAVE_FIX ? '' : ' (skipped: ../shared missing)'}`, () => {
  let tensors: Map<string, RawTensor>;
  let meta: { images: Record<string, { mode: string; size_wh: [number, number] }> };
  beforeAll(async () => {
    tensors = (await readSafetensors(join(FIX, 'preprocess.safetensors'))).tensors;
    meta = JSON.parse(readFileSync(join(FIX, 'fixture.json'), 'utf8'));
  });

  it('PNG -> resized, cropped uint8 agrees with PIL; normalised within 1/255/std', async () => {
    const keys = [...tensors.keys()].filter((k) => /\.png\.\d+$/.test(k)).sort();
    expect(keys.length).toBeGreaterThanOrEqual(7);
    for (const key of keys) {
      const [name, , n] = key.split('.');
      const size = Number(n);
      const ref = f32(tensors.get(key)!);
      const want = recoverU8(ref, size);
      const img = await decodeImageAsStored(join(FIX, `${name}.png`));
      expect([img.width, img.height]).toEqual(meta.images[name].size_wh);
      const got = clipCrop(img, size);
      const a = agreement(got.data, want);
      console.log(`${key} (${meta.images[name].mode}): uint8 equal ${(a.equal * 100).toFixed(3)}%, max |diff| ${a.maxDiff}`);
      expect(a.equal).toBeGreaterThanOrEqual(0.999);
      expect(a.maxDiff).toBeLessThanOrEqual(1);

      if (meta.images[name].mode === 'RGBA') {
        // The fixture really exercises PIL's premultiplied resize: discarding alpha first differs.
        const naive = agreement(clipCrop(toRGB(img), size).data, want);
        console.log(`${key}: resizing with alpha discarded first would give equal ${(naive.equal * 100).toFixed(2)}%, max |diff| ${naive.maxDiff}`);
        expect(naive.maxDiff).toBeGreaterThan(1);
      }

      const t = await preprocess(join(FIX, `${name}.png`), { size });
      expect(t.shape).toEqual([1, 3, size, size]);
      const out = t.toArraySync() as Float32Array;
      t.dispose();
      let worst = 0, exact = 0;
      for (let i = 0; i < out.length; i++) {
        const c = Math.floor(i / (size * size));
        worst = Math.max(worst, Math.abs(out[i] - ref[i]) * CLIP_STD[c]);
        if (out[i] === ref[i]) exact++;
      }
      console.log(`${key}: normalised max |diff| * std = ${worst.toExponential(2)}, bit-identical ${((100 * exact) / out.length).toFixed(3)}%`);
      expect(worst).toBeLessThanOrEqual(1 / 255 + 1e-6);
    }
  });

  it('JPEG: decoder error alone (sharp vs PIL decode) and through the transform', async () => {
    const names = [...tensors.keys()].filter((k) => k.endsWith('.jpg.decoded')).map((k) => k.split('.')[0]).sort();
    expect(names.length).toBeGreaterThanOrEqual(5);
    for (const name of names) {
      const dec = tensors.get(`${name}.jpg.decoded`)!;
      const got = await decodeImage(join(FIX, `${name}.jpg`));
      expect([got.height, got.width, 3]).toEqual(dec.shape);
      const a = agreement(got.data, dec.data);
      // The transform applied to PIL's own decode must match the reference like the PNGs do.
      const viaPil = clipCrop({ data: dec.data, width: got.width, height: got.height, channels: 3 }, 224);
      const ref = f32(tensors.get(`${name}.jpg.224`)!);
      const want = recoverU8(ref, 224);
      const b = agreement(viaPil.data, want);
      const t = await preprocess(join(FIX, `${name}.jpg`));
      const out = t.toArraySync() as Float32Array;
      t.dispose();
      let sum = 0;
      for (let i = 0; i < out.length; i++) sum += Math.abs(out[i] - ref[i]) * CLIP_STD[Math.floor(i / (224 * 224))];
      console.log(
        `${name}.jpg: decoder mean |diff| ${(a.meanAbs * 255).toFixed(4)}/255 (max ${a.maxDiff}, equal ${(a.equal * 100).toFixed(2)}%); ` +
          `transform of PIL's decode: equal ${(b.equal * 100).toFixed(3)}%, max ${b.maxDiff}; end to end mean |diff| ${((sum / out.length) * 255).toFixed(4)}/255`,
      );
      expect(a.meanAbs / 255).toBeLessThanOrEqual(1 / 255); // mean absolute error in [0, 1] units
      expect(b.equal).toBeGreaterThanOrEqual(0.999);
      expect(b.maxDiff).toBeLessThanOrEqual(1);
    }
  });

  it('bfloat16 output is the float32 result rounded to nearest even', async () => {
    const file = join(FIX, 'chelsea.png');
    const a = await preprocess(file);
    const b = await preprocess(file, { dtype: 'bfloat16' });
    expect(b.dtype).toBe('bfloat16');
    const fa = a.toArraySync() as Float32Array, fb = b.toArraySync() as Float32Array;
    expect(Array.from(fb)).toEqual(Array.from(bf16ToF32(f32ToBf16(fa))));
    a.dispose();
    b.dispose();
  });

  it('a batch equals the single-image results, in input order', async () => {
    const files = ['chelsea.png', 'camera.jpg', 'tiny_rgba.png', 'panorama.jpg'].map((f) => join(FIX, f));
    const batch = await preprocess(files, { concurrency: 2 });
    expect(batch.shape).toEqual([4, 3, 224, 224]);
    const all = batch.toArraySync() as Float32Array;
    batch.dispose();
    for (let i = 0; i < files.length; i++) {
      const one = await preprocess(readFileSync(files[i]));
      expect(Buffer.from((one.toArraySync() as Float32Array).buffer).equals(Buffer.from(all.slice(i * 3 * 224 * 224, (i + 1) * 3 * 224 * 224).buffer))).toBe(true);
      one.dispose();
    }
  });
});

describe('decoding', () => {
  let dir: string;
  let png: Buffer;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tsclip-image-'));
    png = await sharp({ create: { width: 7, height: 5, channels: 3, background: { r: 10, g: 200, b: 30 } } }).png().toBuffer();
  });

  it('accepts paths, Buffers, Uint8Arrays and raw pixels; every format decodes to RGB', async () => {
    const base = randomImage(12, 9, 3, 21, true);
    const raw = { raw: { width: 12, height: 9, channels: 3 as const } };
    const lossless = await sharp(base.data, raw).png().toBuffer();
    const webp = await sharp(base.data, raw).webp({ lossless: true }).toBuffer();
    for (const [what, bytes] of [['png', lossless], ['webp', webp]] as const) {
      const d = await decodeImage(new Uint8Array(bytes));
      expect(d.channels, what).toBe(3);
      expect(firstDiff(d.data, base.data), what).toBe('none');
    }
    const file = join(dir, 'x.png');
    writeFileSync(file, lossless);
    expect(firstDiff((await decodeImage(file)).data, base.data)).toBe('none');
    expect(firstDiff((await decodeImage(base)).data, base.data)).toBe('none');

    // Grey stays one channel until RGB; grey + alpha and RGBA drop alpha without compositing.
    const grey = { data: new Uint8Array(12 * 9).map((_, i) => (i * 7) % 256), width: 12, height: 9, channels: 1 };
    const gpng = await sharp(grey.data, { raw: { width: 12, height: 9, channels: 1 } }).toColourspace('b-w').png().toBuffer();
    const g = await decodeImageAsStored(gpng);
    expect(g.channels).toBe(1);
    expect(firstDiff(g.data, grey.data)).toBe('none');
    const rgb = await decodeImage(gpng);
    for (let i = 0; i < 12 * 9; i++) expect([rgb.data[3 * i], rgb.data[3 * i + 1], rgb.data[3 * i + 2]]).toEqual([grey.data[i], grey.data[i], grey.data[i]]);
    const rgba = randomImage(6, 4, 4, 8);
    const rgbaPng = await sharp(rgba.data, { raw: { width: 6, height: 4, channels: 4 } }).png().toBuffer();
    const noAlpha = await decodeImage(rgbaPng);
    expect(firstDiff(noAlpha.data, toRGB(rgba).data)).toBe('none');

    // GIF (palette): first frame only, mode P, alpha gone.
    const gif = await sharp(base.data, raw).gif().toBuffer();
    const gd = await decodeImageAsStored(gif);
    expect(gd.mode).toBe('P');
    expect(gd.channels).toBe(3);
    expect([gd.width, gd.height]).toEqual([12, 9]);
  });

  it('keeps PIL modes: 1-bit PNG is mode 1 and CMYK JPEG stays CMYK until RGB', async () => {
    // A 1-bit greyscale PNG, 10x3, written by hand (sharp writes 8-bit grey).
    const rows = [0b10110010, 0b01000000, 0b11111111, 0b11000000, 0b00000000, 0b01000000];
    const raw = Buffer.from([0, rows[0], rows[1], 0, rows[2], rows[3], 0, rows[4], rows[5]]);
    const bilevel = pngFile(10, 3, 1, 0, deflateSync(raw));
    const b = await decodeImageAsStored(bilevel);
    expect(b.mode).toBe('1');
    expect(Array.from(b.data.subarray(0, 10))).toEqual([255, 0, 255, 255, 0, 0, 255, 0, 0, 255]);
    // Mode 1 resizes with NEAREST, so values stay 0/255.
    expect(resizePIL(b, 7, 5).data.every((v) => v === 0 || v === 255)).toBe(true);

    const photo = randomImage(40, 30, 3, 5, true);
    const cmykJpg = await sharp(photo.data, { raw: { width: 40, height: 30, channels: 3 } }).toColourspace('cmyk').jpeg().toBuffer();
    const c = await decodeImageAsStored(cmykJpg);
    expect([c.mode, c.channels]).toEqual(['CMYK', 4]);
    const rgb = toRGB(c);
    for (let i = 0; i < 40 * 30; i++) {
      const nk = 255 - c.data[4 * i + 3];
      for (let q = 0; q < 3; q++) expect(rgb.data[3 * i + q]).toBe(nk - Math.round((c.data[4 * i + q] * nk) / 255));
    }
  });

  it('leaves EXIF orientation alone unless asked', async () => {
    const base = randomImage(6, 3, 3, 2);
    const rotated = await sharp(base.data, { raw: { width: 6, height: 3, channels: 3 } }).png().withMetadata({ orientation: 6 }).toBuffer();
    const asStored = await decodeImage(rotated);
    expect([asStored.width, asStored.height]).toEqual([6, 3]);
    expect(firstDiff(asStored.data, base.data)).toBe('none');
    const turned = await decodeImage(rotated, { applyExifOrientation: true });
    expect([turned.width, turned.height]).toEqual([3, 6]);
  });

  it('gives clear errors naming the input', async () => {
    const jpg = await sharp(png).jpeg().toBuffer();
    const file = join(dir, 'cut.jpg');
    writeFileSync(file, jpg.subarray(0, Math.floor(jpg.length / 2)));
    await expect(decodeImage(file)).rejects.toThrow(new RegExp(`'${file}': cannot decode the image`));
    await expect(decodeImage(new Uint8Array(0))).rejects.toThrow(/input \(0 bytes\): the image data is empty/);
    await expect(decodeImage(Buffer.from('definitely not an image'))).rejects.toThrow(/input \(23 bytes\): cannot decode the image: .*unsupported image format/);
    await expect(decodeImage(join(dir, 'missing.png'))).rejects.toThrow(/missing\.png'.*cannot decode/);
    const tiff = await sharp(png).tiff().toBuffer();
    await expect(decodeImage(tiff)).rejects.toThrow(/unsupported image format 'tiff' \(supported: JPEG, PNG, WebP, GIF\)/);
    const wide = await sharp({ create: { width: 100000, height: 2, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
    await expect(decodeImage(wide)).rejects.toThrow(/image is 100000x2 pixels; the longest side allowed is 65535/);
    await expect(decodeImage(zeroSizePng())).rejects.toThrow(/input \(\d+ bytes\)/);
    await expect(decodeImage({ data: new Uint8Array(0), width: 0, height: 0, channels: 3 })).rejects.toThrow(/image is 0x0 pixels; it must be at least 1x1/);
    await expect(decodeImage({ data: new Uint8Array(5), width: 2, height: 1, channels: 3 })).rejects.toThrow(/need 6 bytes, got 5/);
    await expect(decodeImage(42 as unknown as Uint8Array)).rejects.toThrow(/expected a file path/);
  });

  it('a failing batch item is named, and nothing leaks', async () => {
    const good = png;
    await expect(preprocess([good, good, good, Buffer.from('nope'), good])).rejects.toThrow(/preprocess \(item 3 of 5\): input #3 \(4 bytes\): cannot decode/);
    await expect(preprocess([good, join(dir, 'nothing.jpg')])).rejects.toThrow(/item 1 of 2\).*nothing\.jpg'/);
    await expect(preprocess(good, { mean: [0.5, 0.5] })).rejects.toThrow(/mean must be 3 finite numbers/);
    await expect(preprocess(good, { std: [1, 0, 1] })).rejects.toThrow(/std must not contain 0/);
    await expect(preprocess(good, { size: 0 })).rejects.toThrow(/size must be an integer/);
    const t = await preprocess([good, good], { size: 32, mean: [0, 0, 0], std: [1, 1, 1] });
    expect(t.shape).toEqual([2, 3, 32, 32]);
    const v = t.toArraySync() as Float32Array;
    // A flat colour stays flat: R = 10/255, G = 200/255, B = 30/255 everywhere.
    expect(v[0]).toBeCloseTo(10 / 255, 6);
    expect(v[32 * 32 * 2 - 1]).toBeCloseTo(200 / 255, 6);
    expect(v[v.length - 1]).toBeCloseTo(30 / 255, 6);
    t.dispose();
  });
});

// A PNG whose IHDR says 0x0, with valid CRCs, so that the decoder itself must refuse it.
function zeroSizePng(): Buffer {
  return pngFile(0, 0, 8, 2, Buffer.from([120, 156, 3, 0, 0, 0, 0, 1]));
}

// A PNG file from its IHDR fields and compressed image data.
function pngFile(width: number, height: number, bitDepth: number, colourType: number, idat: Buffer): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, body: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const tb = Buffer.concat([Buffer.from(type, 'ascii'), body]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(tb));
    return Buffer.concat([len, tb, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colourType;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]);
}
