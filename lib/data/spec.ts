// Data specs as the command line gives them: "shapes[:N]", "fashion-mnist[:DIR]", "csv:FILE" or a
// .csv/.tsv path, "wds:SHARDS" or .tar shard patterns, "folder:DIR" or a directory.
import { statSync } from 'node:fs';
import { CsvDataset } from './csv.js';
import { FolderDataset } from './folder.js';
import { FashionMnistDataset } from './fashion-mnist.js';
import { ShapesDataset } from './shapes.js';
import { WebDatasetSource } from './webdataset.js';
import { DataLoader } from './loader.js';
import type { BatchSource, Dataset } from './types.js';

export interface OpenDataOptions {
  imageSize: number;
  mean: readonly number[];
  std: readonly number[];
  tokenize: (captions: string[]) => Int32Array;
  contextLength: number;
  batchSize: number;
  seed?: number;
  prefetch?: number;
  shuffleBuffer?: number;
  /** Data-parallel split of WebDataset shards: this process reads shards worker, worker + workers, ... */
  worker?: number;
  workers?: number;
  /** Threads decoding and preprocessing examples ahead of the step (0: the main thread). */
  workerThreads?: number;
}

export type DataKind = 'shapes' | 'fashion-mnist' | 'csv' | 'wds' | 'folder';

export function dataKind(spec: string): { kind: DataKind; arg: string } {
  const m = /^(shapes|fashion-mnist|csv|wds|folder)(?::(.*))?$/.exec(spec);
  if (m) return { kind: m[1] as DataKind, arg: m[2] ?? '' };
  if (/\.(csv|tsv)$/i.test(spec)) return { kind: 'csv', arg: spec };
  if (/\.tar$/i.test(spec) || /\{\d+\.\.\d+\}/.test(spec)) return { kind: 'wds', arg: spec };
  let isDir = false;
  try {
    isDir = statSync(spec).isDirectory();
  } catch {
    // fall through to the error
  }
  if (isDir) return { kind: 'folder', arg: spec };
  throw new Error(`--data ${spec}: not a known data spec (shapes[:N], fashion-mnist[:DIR], a .csv/.tsv file, .tar shards, or a folder of images with .txt captions)`);
}

/** An indexed dataset for a spec (every kind but WebDataset shards, which only stream). */
export function openDataset(spec: string, o: Pick<OpenDataOptions, 'imageSize' | 'mean' | 'std' | 'seed'>): Dataset {
  const { kind, arg } = dataKind(spec);
  const transform = { size: o.imageSize, mean: o.mean, std: o.std };
  switch (kind) {
    case 'shapes': return new ShapesDataset({ size: arg ? Number(arg) : 50_000, imageSize: o.imageSize, seed: (o.seed ?? 0) + 1, mean: o.mean, std: o.std });
    case 'fashion-mnist': return new FashionMnistDataset({ dir: arg || undefined, split: 'train', imageSize: o.imageSize, seed: o.seed });
    case 'csv': return new CsvDataset(arg, transform);
    case 'folder': return new FolderDataset(arg, transform);
    default: throw new Error(`--data ${spec}: WebDataset shards are streamed, not indexed`);
  }
}

export function openData(spec: string, o: OpenDataOptions): BatchSource {
  const { kind, arg } = dataKind(spec);
  if (kind === 'wds') {
    return new WebDatasetSource(arg, {
      transform: { size: o.imageSize, mean: o.mean, std: o.std }, tokenize: o.tokenize, contextLength: o.contextLength,
      batchSize: o.batchSize, seed: o.seed, shuffleBuffer: o.shuffleBuffer, worker: o.worker, workers: o.workers,
      prefetch: o.prefetch, workerThreads: o.workerThreads,
    });
  }
  return new DataLoader(openDataset(spec, o), {
    batchSize: o.batchSize, tokenize: o.tokenize, contextLength: o.contextLength, seed: o.seed, prefetch: o.prefetch,
    workerThreads: o.workerThreads,
  });
}
