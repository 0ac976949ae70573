// `npm run bench -- cpu`: the CPU backend against its limits and its peer.
//  1. sgemm GFLOP/s at CLIP's shapes against this machine's measured FMA peak (native bench_gemm);
//  2. ViT-B/32 image and text encoders, tsclip against onnxruntime-node on the same box with the
//     same threads, on ../shared/peers (patterned weights), batch 1 and 8;
//  3. load time of a ViT-B/32-sized safetensors checkpoint.
// onnxruntime-node is a benchmark-only peer: `ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --no-save onnxruntime-node`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createCLIP } from '../lib/models/clip.js';
import { loadCLIP, loadStateDict } from '../lib/models/load.js';
import { Tensor, tidy } from '../lib/tensor.js';
import { info, setNumThreads } from '../lib/runtime.js';
import { noGrad } from '../lib/autograd.js';
import { patternedWeights, unpackPeer, PEER_ARCHIVE } from './peer.js';

declare const __benchdir: string;
const root = join(__benchdir, '..');
const threads = Number(process.env.TSCLIP_NUM_THREADS ?? info().threads);
const only = process.argv[2];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
// onnxruntime's pool threads keep spinning for a while after a run, and ours briefly too: each
// timing starts after a pause so that neither side's idle spinning takes the other's cores.
const settle = () => new Promise((r) => setTimeout(r, 300));

async function time(fn: () => unknown | Promise<unknown>, reps: number, warm = 1): Promise<number> {
  await settle();
  for (let i = 0; i < warm; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

function gemm(): void {
  console.log('== sgemm at CLIP shapes (native bench_gemm) ==');
  const b = spawnSync('cmake', ['--build', join(root, 'build'), '--target', 'bench_gemm'], { encoding: 'utf8' });
  if (b.status !== 0) {
    console.log(`could not build bench_gemm: ${b.stderr || b.stdout}`);
    return;
  }
  spawnSync(join(root, 'build', 'bench_gemm'), [], { stdio: 'inherit' });
}

async function encoders(): Promise<void> {
  console.log(`\n== ViT-B/32 encoders: tsclip vs onnxruntime-node, ${threads} threads ==`);
  if (!existsSync(PEER_ARCHIVE)) return void console.log('skipped: ../shared/peers is missing');
  let ort: typeof import('onnxruntime-node') | undefined;
  try {
    ort = await import('onnxruntime-node');
  } catch {
    console.log('onnxruntime-node is not installed (ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --no-save onnxruntime-node); timing tsclip alone');
  }
  const dir = unpackPeer(ort ? ['fixture.json', 'io.safetensors', 'clip-vit-b32-image.onnx', 'clip-vit-b32-text.onnx'] : ['fixture.json', 'io.safetensors']);
  setNumThreads(threads);
  const model = createCLIP('ViT-B/32');
  loadStateDict(model, patternedWeights(dir));
  model.eval();
  const opts = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' as const };
  const imgSess = ort ? await ort.InferenceSession.create(join(dir, 'clip-vit-b32-image.onnx'), opts) : undefined;
  const txtSess = ort ? await ort.InferenceSession.create(join(dir, 'clip-vit-b32-text.onnx'), opts) : undefined;
  const rows: string[][] = [['what', 'batch', 'tsclip', 'onnxruntime', 'ratio (ort time / tsclip time)']];
  for (const B of [1, 8]) {
    const px = new Float32Array(B * 3 * 224 * 224).map((_, i) => Math.sin(i * 0.001));
    const pixels = Tensor.from(px, [B, 3, 224, 224]);
    const ours = await time(() => noGrad(() => tidy(() => model.encodeImage(pixels).toArraySync())), B === 1 ? 7 : 3);
    let peer = NaN;
    if (imgSess) {
      const feeds = { [imgSess.inputNames[0]]: new ort!.Tensor('float32', px, [B, 3, 224, 224]) };
      peer = await time(() => imgSess.run(feeds), B === 1 ? 7 : 3);
    }
    rows.push(['image encoder', String(B), `${(ours / B).toFixed(1)} ms/img, ${((1000 * B) / ours).toFixed(1)} img/s`, imgSess ? `${(peer / B).toFixed(1)} ms/img, ${((1000 * B) / peer).toFixed(1)} img/s` : '-', imgSess ? `${(peer / ours).toFixed(2)}x` : '-']);
    pixels.dispose();
  }
  for (const [len, label] of [[15, '~15-token captions'], [77, '77-token captions']] as const) {
    for (const B of [1, 8]) {
      const ids = new Int32Array(B * 77);
      for (let b = 0; b < B; b++) {
        ids[b * 77] = 49406;
        for (let i = 1; i < len - 1; i++) ids[b * 77 + i] = 1000 + ((b * 31 + i * 7) % 40000);
        ids[b * 77 + len - 1] = 49407;
      }
      const tokens = Tensor.from(ids, [B, 77]);
      const ours = await time(() => noGrad(() => tidy(() => model.encodeText(tokens).toArraySync())), 3);
      let peer = NaN;
      if (txtSess) {
        const meta = txtSess.inputNames[0];
        const feeds = { [meta]: new ort!.Tensor('int32', ids, [B, 77]) };
        try {
          peer = await time(() => txtSess.run(feeds), 3);
        } catch {
          const feeds64 = { [meta]: new ort!.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), [B, 77]) };
          peer = await time(() => txtSess.run(feeds64), 3);
        }
      }
      rows.push([`text encoder, ${label}`, String(B), `${(ours / B).toFixed(1)} ms/text, ${((1000 * B) / ours).toFixed(1)} texts/s`, txtSess ? `${(peer / B).toFixed(1)} ms/text, ${((1000 * B) / peer).toFixed(1)} texts/s` : '-', txtSess ? `${(peer / ours).toFixed(2)}x` : '-']);
      tokens.dispose();
    }
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows) console.log(r.map((x, c) => x.padEnd(w[c])).join('  '));

  console.log('\n== load time of a ViT-B/32-sized checkpoint ==');
  const tmp = mkdtempSync(join(tmpdir(), 'tsclip-bench-'));
  try {
    const file = join(tmp, 'vit-b32.safetensors');
    await model.save(file);
    const ms = await time(async () => (await loadCLIP(file)).dispose(), 3, 0);
    console.log(`loadCLIP(safetensors, 151M parameters): ${ms.toFixed(0)} ms`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    model.dispose();
  }
}

async function main(): Promise<void> {
  if (!only || only === 'gemm') gemm();
  if (!only || only === 'encoders') await encoders();
}
void main();
