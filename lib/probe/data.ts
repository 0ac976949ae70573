// Labelled image sets for linear probes and zero-shot evaluation, turned into unit image
// embeddings of a model: Fashion-MNIST, the generated shapes scenes, or a folder with one
// sub-folder per class (DIR/train and DIR/test when present, else a seeded split).
import { existsSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import type { CLIP } from '../models/clip.js';
import { CLIP_MEAN, CLIP_STD } from '../models/config.js';
import { FashionMnistDataset, FASHION_CLASSES } from '../data/fashion-mnist.js';
import { ShapesDataset, PAIRS, caption } from '../data/shapes.js';
import { readFileSync } from 'node:fs';
import type { Dataset } from '../data/types.js';
import { Random } from '../nn/random.js';
import { embedImages, embedPixelArray } from '../zeroshot/encode.js';
import type { Features } from './logreg.js';

const IMAGE_EXT = /\.(jpe?g|png|webp|gif)$/i;
const RELEASED_CLIP_VOCAB = 49408;

export interface LabelledFeatures {
  classes: string[];
  train: Features;
  test: Features;
  /** Image files per split, for folder data. */
  files?: { train: string[]; test: string[] };
  /** A caption per test image where the data has them (shapes scenes; .txt files beside folder images). */
  testCaptions?: string[];
}

export interface FeatureOptions {
  /** Training examples used at most (default: all, 5000 for the generated sets). */
  maxTrain?: number;
  maxTest?: number;
  seed?: number;
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Normalisation for the built-in datasets: the model's own when it states one; CLIP's for the
 * released models; otherwise the dataset's default, which is what `tsclip train` used.
 */
function datasetStats(model: CLIP): { mean?: number[]; std?: number[] } {
  if (model.config.mean && model.config.std) return { mean: [...model.config.mean], std: [...model.config.std] };
  if (model.config.text.vocabSize === RELEASED_CLIP_VOCAB) return { mean: [...CLIP_MEAN], std: [...CLIP_STD] };
  return {};
}

async function embedDataset(model: CLIP, ds: Dataset, idx: number[], batchSize: number, progress?: (n: number) => void): Promise<Float32Array> {
  const R = ds.imageSize, plane = 3 * R * R, D = model.config.embedDim;
  const out = new Float32Array(idx.length * D);
  for (let s = 0; s < idx.length; s += batchSize) {
    const m = Math.min(batchSize, idx.length - s);
    const px = new Float32Array(m * plane);
    for (let j = 0; j < m; j++) {
      const ex = await ds.get(idx[s + j]);
      if (!ex) throw new Error(`${ds.name}: example ${idx[s + j]} is unreadable`);
      px.set(ex.image, j * plane);
    }
    out.set(embedPixelArray(model, px, m), s * D);
    progress?.(s + m);
  }
  return out;
}

/** The first n indices of a seeded permutation of [0, length). */
function sample(length: number, n: number, seed: number): number[] {
  const idx = Array.from({ length }, (_, i) => i);
  const r = new Random(seed);
  for (let i = length - 1; i > 0; i--) {
    const j = Math.floor(r.next() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, Math.min(n, length));
}

function listClassFolder(dir: string): { classes: string[]; files: string[]; labels: number[] } {
  const classes = readdirSync(dir).filter((d) => statSync(path.join(dir, d)).isDirectory()).sort();
  if (classes.length < 2) throw new Error(`${dir}: expected one sub-folder per class (at least 2), found ${classes.length}`);
  const files: string[] = [], labels: number[] = [];
  classes.forEach((c, k) => {
    const found = (readdirSync(path.join(dir, c), { recursive: true }) as string[]).filter((f) => IMAGE_EXT.test(f)).sort();
    for (const f of found) {
      files.push(path.join(dir, c, f));
      labels.push(k);
    }
  });
  if (!files.length) throw new Error(`${dir}: no images in the class folders`);
  return { classes, files, labels };
}

/** Class names as a prompt wants them: folder names with _ and - read as spaces. */
export function readableClassName(folder: string): string {
  return folder.replace(/[_-]+/g, ' ').trim();
}

export async function labelledFeatures(model: CLIP, spec: string, opts: FeatureOptions = {}): Promise<LabelledFeatures> {
  const seed = opts.seed ?? 0, batchSize = opts.batchSize ?? 64, D = model.config.embedDim, R = model.config.vision.imageSize;
  const stats = datasetStats(model);
  const fm = /^fashion-mnist(?::(.*))?$/.exec(spec);
  const sh = /^shapes(?::(\d+))?$/.exec(spec);
  if (fm || sh) {
    let trainDs: Dataset, testDs: Dataset, labelOf: (ds: Dataset, i: number) => number, classes: string[];
    let captionOf: ((i: number) => string) | undefined;
    if (fm) {
      const dir = fm[1] || undefined;
      const tr = new FashionMnistDataset({ dir, split: 'train', imageSize: R, seed, ...stats });
      const te = new FashionMnistDataset({ dir, split: 'test', imageSize: R, seed, ...stats });
      trainDs = tr;
      testDs = te;
      labelOf = (ds, i) => (ds as FashionMnistDataset).labels[i];
      classes = [...FASHION_CLASSES];
    } else {
      const n = sh![1] ? Number(sh![1]) : 5000;
      trainDs = new ShapesDataset({ size: n, imageSize: R, seed: seed + 11, variants: false, ...stats });
      testDs = new ShapesDataset({ size: Math.max(1, Math.floor(n / 4)), imageSize: R, seed: seed + 12, variants: false, ...stats });
      labelOf = (ds, i) => {
        const { scene } = (ds as ShapesDataset).scene(i);
        return PAIRS.indexOf(`${scene.color1} ${scene.shape1}`);
      };
      classes = [...PAIRS];
      captionOf = (i) => caption((testDs as ShapesDataset).scene(i).scene);
    }
    const trIdx = sample(trainDs.length, opts.maxTrain ?? 5000, seed + 1);
    const teIdx = sample(testDs.length, opts.maxTest ?? 2000, seed + 2);
    const total = trIdx.length + teIdx.length;
    opts.onProgress?.(0, total);
    const trX = await embedDataset(model, trainDs, trIdx, batchSize, (k) => opts.onProgress?.(k, total));
    const teX = await embedDataset(model, testDs, teIdx, batchSize, (k) => opts.onProgress?.(trIdx.length + k, total));
    return {
      classes,
      train: { x: trX, y: trIdx.map((i) => labelOf(trainDs, i)), n: trIdx.length, dim: D },
      test: { x: teX, y: teIdx.map((i) => labelOf(testDs, i)), n: teIdx.length, dim: D },
      testCaptions: captionOf ? teIdx.map(captionOf) : undefined,
    };
  }
  if (!existsSync(spec) || !statSync(spec).isDirectory()) {
    throw new Error(`data ${spec}: expected fashion-mnist[:DIR], shapes[:N] or a folder with one sub-folder of images per class`);
  }
  let train: ReturnType<typeof listClassFolder>, test: ReturnType<typeof listClassFolder>;
  if (existsSync(path.join(spec, 'train')) && existsSync(path.join(spec, 'test'))) {
    train = listClassFolder(path.join(spec, 'train'));
    test = listClassFolder(path.join(spec, 'test'));
    if (train.classes.join('\n') !== test.classes.join('\n')) throw new Error(`${spec}: train/ and test/ have different class folders`);
  } else {
    const all = listClassFolder(spec);
    // A seeded 75 / 25 split of every class.
    const trI: number[] = [], teI: number[] = [];
    all.classes.forEach((_, k) => {
      const members = all.labels.map((l, i) => (l === k ? i : -1)).filter((i) => i >= 0);
      const order = sample(members.length, members.length, seed + 3 + k).map((j) => members[j]);
      const cut = Math.max(1, Math.round(order.length * 0.75));
      trI.push(...order.slice(0, cut));
      teI.push(...order.slice(cut));
    });
    const pick = (ids: number[]) => ({ classes: all.classes, files: ids.map((i) => all.files[i]), labels: ids.map((i) => all.labels[i]) });
    train = pick(trI.sort((a, b) => a - b));
    test = pick(teI.sort((a, b) => a - b));
  }
  // A seeded subset (in folder order) when capped, so every class keeps its share.
  const subset = (n: number, max: number | undefined, s: number) => (max === undefined || max >= n ? Array.from({ length: n }, (_, i) => i) : sample(n, max, s).sort((a, b) => a - b));
  const trSel = subset(train.files.length, opts.maxTrain, seed + 5), teSel = subset(test.files.length, opts.maxTest, seed + 6);
  const trFiles = trSel.map((i) => train.files[i]), teFiles = teSel.map((i) => test.files[i]);
  const total = trFiles.length + teFiles.length;
  opts.onProgress?.(0, total);
  const trX = await embedImages(model, trFiles, batchSize);
  opts.onProgress?.(trFiles.length, total);
  const teX = await embedImages(model, teFiles, batchSize);
  opts.onProgress?.(total, total);
  return {
    classes: train.classes,
    train: { x: trX, y: trSel.map((i) => train.labels[i]), n: trFiles.length, dim: D },
    test: { x: teX, y: teSel.map((i) => test.labels[i]), n: teFiles.length, dim: D },
    files: { train: trFiles, test: teFiles },
    testCaptions: captionsBeside(teFiles),
  };
}

/** The .txt caption beside every image, or undefined when some image has none. */
function captionsBeside(files: string[]): string[] | undefined {
  const txt = files.map((f) => f.replace(/\.[^.]+$/, '.txt'));
  if (!files.length || !txt.every((t) => existsSync(t))) return undefined;
  return txt.map((t) => readFileSync(t, 'utf8').trim());
}

/** Splits off the last `fraction` of a (shuffled) training set as the validation split. */
export function splitValidation(train: Features, fraction = 0.2, seed = 0): { train: Features; val: Features } {
  const order = sample(train.n, train.n, seed + 7);
  const nVal = Math.max(1, Math.round(train.n * fraction));
  if (train.n - nVal < 1) throw new Error(`linear probe: ${train.n} training examples are too few to hold out a validation split`);
  const take = (ids: number[]): Features => {
    const x = new Float32Array(ids.length * train.dim);
    ids.forEach((i, j) => x.set(train.x.subarray(i * train.dim, (i + 1) * train.dim), j * train.dim));
    return { x, y: ids.map((i) => train.y[i]), n: ids.length, dim: train.dim };
  };
  return { train: take(order.slice(nVal)), val: take(order.slice(0, nVal)) };
}
