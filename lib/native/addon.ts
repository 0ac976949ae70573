// Loads the native addon once and checks that it was built from the same op list as this code.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OP_NAMES, type OpName } from './ops.gen.js';

export interface NativeStorage {
  readonly nbytes: number;
  readonly disposed: boolean;
  dispose(): void;
  write(byteOffset: number, data: ArrayBufferView): void;
  read(byteOffset: number, nbytes: number): ArrayBuffer;
}

/** [storage, dtypeCode, offsetElements, shape, strides] */
export type NativeTensorDesc = [NativeStorage, number, number, number[], number[]];

export interface NativeInfo {
  version: string;
  cudaCompiled: boolean;
  cpu: { avx2: boolean; fma: boolean; avx512f: boolean; avx512bf16: boolean };
  threads: number;
  cudaDevices: { name: string; totalMemory: number; computeCapability: string; multiprocessors: number }[];
  cudaUnavailableReason: string;
}

export interface NativeAddon {
  Storage: new (nbytes: number, device: number) => NativeStorage;
  run(op: number, inputs: (NativeTensorDesc | null)[], outputs: (NativeTensorDesc | null)[], ints: number[], floats: number[]): void;
  copy(dst: NativeStorage, dstOffset: number, src: NativeStorage, srcOffset: number, nbytes: number): void;
  opNames(): string[];
  info(): NativeInfo;
  setNumThreads(n: number): void;
  cudaMemoryStats(): { reserved: number; used: number; peakUsed: number };
  liveStorages(): number;
  synchronize(device: number): void;
  emptyCache(): void;
}

function here(): string {
  // Works from lib/ (tests) and from dist/ (the bundle, CJS or ESM).
  if (typeof __dirname === 'string') return __dirname;
  return dirname(fileURLToPath(import.meta.url));
}

export function packageRoot(): string {
  let dir = here();
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'tsclip') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('tsclip: cannot find the package root to load the native addon');
    dir = up;
  }
}

let cached: NativeAddon | undefined;

/** The addon file this process loads: TSCLIP_ADDON, or the package's build. */
export function addonPath(): string {
  return process.env.TSCLIP_ADDON ? resolve(process.env.TSCLIP_ADDON) : join(packageRoot(), 'build', 'Release', 'tsclip.node');
}

export function addon(): NativeAddon {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new Error(`tsclip: the native addon is not built (${path} is missing); run \`npm install\` or \`npm run build:native\``);
  }
  const req = createRequire(path);
  const a = req(path) as NativeAddon;
  const names = a.opNames();
  if (names.join() !== OP_NAMES.join()) {
    throw new Error(`tsclip: the native addon was built from another op list (${names.length} ops vs ${OP_NAMES.length}); rebuild it with \`npm run build:native\``);
  }
  cached = a;
  return a;
}

const OP_ID = new Map<string, number>(OP_NAMES.map((n, i) => [n, i]));
export function opId(name: OpName): number {
  return OP_ID.get(name)!;
}
