// The full-size ViT-B/32 peer in ../shared/peers: its patterned weights rebuilt from the formula
// in its fixture.json, and the archive unpacked once into a cache directory.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fromFloat32, type RawTensor } from '../lib/io/raw.js';

declare const __benchdir: string | undefined;
const benchDir = typeof __benchdir === 'string' ? __benchdir : __dirname;
export const SHARED_DIR = join(benchDir, '..', '..', 'shared');
export const PEER_ARCHIVE = join(SHARED_DIR, 'peers', 'clip-vit-b32-patterned.onnx.tar.xz');

/** Unpacks the named members (default: the small ones) and returns the directory. */
export function unpackPeer(members: string[] = ['fixture.json', 'io.safetensors']): string {
  const dir = join(process.env.TSCLIP_CACHE ?? join(tmpdir(), 'tsclip-cache'), 'peer-vit-b32');
  mkdirSync(dir, { recursive: true });
  const missing = members.filter((m) => !existsSync(join(dir, m)));
  if (missing.length) execFileSync('tar', ['xJf', PEER_ARCHIVE, '-C', dir, ...missing]);
  return dir;
}

/** The state dict the peer's fixture.json describes: tensor j holds k*c over its flat index. */
export function patternedWeights(dir: string): Map<string, RawTensor> {
  const fx = JSON.parse(readFileSync(join(dir, 'fixture.json'), 'utf8')) as { state_dict_order: [string, number[]][] };
  const out = new Map<string, RawTensor>();
  fx.state_dict_order.forEach(([name, shape], j) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    const c = Math.fround(0.07 / (7 + j));
    const off = 3 + Math.floor(j / 2);
    for (let i = 0; i < n; i++) v[i] = Math.fround(((i % (7 + j)) - off) * c);
    if (/(^|\.)ln_(pre|post|1|2|final)\.weight$/.test(name)) v.fill(1);
    if (name === 'logit_scale') v.fill(4.6052);
    out.set(name, fromFloat32(v, shape));
  });
  return out;
}
