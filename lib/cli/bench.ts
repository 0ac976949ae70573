// `tsclip bench train|infer`: throughput of a named CLIP configuration on random data. `train` runs
// the Trainer's own step (contrastive loss, backward, AdamW) on a batch of random images and
// random captions; `infer` runs the image encoder without a graph. Both print samples/s, the median
// step time, model FLOP utilisation (the FLOPs the model needs, lib/train/flops.ts, over a stated
// peak) and peak memory.
import { Tensor, tidy, type Device } from '../tensor.js';
import { noGrad } from '../autograd.js';
import * as ops from '../ops/index.js';
import { info, memoryStats, synchronize } from '../runtime.js';
import { Random } from '../nn/random.js';
import { createCLIP, resolveDevice, type CLIP } from '../models/clip.js';
import { CONFIGS, resolveConfig, type CLIPConfig } from '../models/config.js';
import { Trainer, type TrainerOptions } from '../train/trainer.js';
import { imageFlops, trainStepFlops } from '../train/flops.js';
import type { Batch, BatchSource, DataPosition, DataStats } from '../data/types.js';
import { checkDevice, positiveInt } from './classify.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';
import { autocast, type Precision } from '../amp.js';


const FLAGS: FlagSpec = {
  model: { type: 'string', default: 'ViT-B/32', help: `named configuration (${Object.keys(CONFIGS).join(', ')}; ViT-B-32 works too)` },
  'batch-size': { type: 'number', default: 256, help: 'samples per step' },
  steps: { type: 'number', default: 10, help: 'timed steps' },
  warmup: { type: 'number', default: 3, help: 'untimed steps first' },
  device: { type: 'string', default: 'auto', help: 'cpu, cuda or auto' },
  'caption-tokens': { type: 'number', default: 20, help: 'tokens in the longest caption, start and end-of-text included (train)' },
  precision: { type: 'string', default: 'fp32', help: 'fp32 or bf16 (bf16: matmuls in bfloat16 under an autocast)' },
  'peak-tflops': { type: 'number', help: 'the peak MFU is measured against, in TFLOP/s (default: the card\'s datasheet on CUDA, a measured GEMM on the CPU)' },
  seed: { type: 'number', default: 0, help: 'seed for the weights and the random data' },
  json: { type: 'boolean', help: 'print one JSON line' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip bench train|infer [options]

train: the training step of \`tsclip train\` (forward, contrastive loss, backward, AdamW) on random
       images and random captions whose longest has --caption-tokens tokens (the text tower runs
       only that far, as in real training). The batch is copied from host memory every step.
infer: the image encoder's forward pass, no graph, on images already on the device.
Prints samples/s and step time (median of --steps after --warmup), MFU (model FLOPs per second
over the peak it names) and peak memory (CUDA: bytes in use on the device; CPU: the process's
peak resident memory).

examples:
  tsclip bench train --model ViT-B-32 --batch-size 256 --device cuda
  tsclip bench infer --model ViT-B-32 --batch-size 1024 --device cuda --json
  tsclip bench train --model tiny-vit --batch-size 32 --device cpu

${flagHelp(FLAGS)}`;

/** The one place precision is wired: bf16 runs the step (or the encoder) under autocast. */
function precisionHook(p: Precision): { run<T>(fn: () => T): T; trainer: Partial<TrainerOptions> } {
  if (p === 'fp32') return { run: (fn) => fn(), trainer: {} };
  return { run: (fn) => autocast('bf16', fn), trainer: { precision: 'bf16' } };
}

// Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets, TFLOP/s. fp32 runs on tensor cores
// as TF32 (3xTF32 for float32 accuracy), so its peak is the TF32 one.
const CUDA_PEAKS: { match: RegExp; card: string; bf16: number; tf32: number }[] = [
  { match: /H200.*NVL/i, card: 'H200 NVL', bf16: 835, tf32: 418 },
  { match: /H200/i, card: 'H200 SXM', bf16: 989, tf32: 495 },
  { match: /H100.*PCIe/i, card: 'H100 PCIe', bf16: 756, tf32: 378 },
  { match: /H100.*NVL/i, card: 'H100 NVL', bf16: 835, tf32: 418 },
  { match: /H100/i, card: 'H100 SXM', bf16: 989, tf32: 495 },
  { match: /A100/i, card: 'A100', bf16: 312, tf32: 156 },
];

export interface Peak {
  /** FLOP/s, or null when unknown. */
  flops: number | null;
  source: string;
}

function cardPeaks(deviceName: string): (typeof CUDA_PEAKS)[number] | undefined {
  return CUDA_PEAKS.find((r) => r.match.test(deviceName));
}

/** The card's datasheet peak for the precision, by device name. */
export function cudaPeak(deviceName: string, precision: Precision): Peak {
  const row = cardPeaks(deviceName);
  if (!row) return { flops: null, source: `no datasheet peak known for "${deviceName}" (give --peak-tflops)` };
  const tf = precision === 'bf16' ? row.bf16 : row.tf32;
  return { flops: tf * 1e12, source: `${row.card} datasheet, dense ${precision === 'bf16' ? 'bf16' : 'tf32'} ${tf} TFLOP/s` };
}

/** The CPU's peak as the library reaches it: the best of a few 1024^3 float32 GEMMs. */
export function measureCpuPeak(run: <T>(fn: () => T) => T): Peak {
  const n = 1024;
  const r = new Random(1);
  const a = Tensor.from(r.uniformArray(n * n, -1, 1), [n, n]);
  const b = Tensor.from(r.uniformArray(n * n, -1, 1), [n, n]);
  let best = Infinity;
  try {
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      run(() => tidy(() => ops.matmul(a, b).dispose()));
      const dt = performance.now() - t0;
      if (i > 0) best = Math.min(best, dt); // the first warms caches and the thread pool
    }
  } finally {
    a.dispose();
    b.dispose();
  }
  const flops = (2 * n ** 3) / (best / 1000);
  return { flops, source: `measured: best tsclip GEMM ${n}x${n}x${n} on ${info().threads} threads, ${(flops / 1e9).toFixed(1)} GFLOP/s` };
}

/**
 * Token ids of `batch` captions: start, random word ids, end-of-text (the largest id), zeros after.
 * The first caption has exactly `longest` tokens, the others between half of that and all of it.
 */
export function syntheticTokens(batch: number, contextLength: number, vocabSize: number, longest: number, rng: Random): Int32Array {
  const out = new Int32Array(batch * contextLength);
  const sot = vocabSize - 2, eot = vocabSize - 1;
  for (let b = 0; b < batch; b++) {
    const lo = Math.max(2, Math.ceil(longest / 2));
    const len = b === 0 ? longest : lo + Math.floor(rng.next() * (longest - lo + 1));
    const row = b * contextLength;
    out[row] = sot;
    for (let i = 1; i < len - 1; i++) out[row + i] = 1 + Math.floor(rng.next() * (vocabSize - 3));
    out[row + len - 1] = eot;
  }
  return out;
}

/** The same host batch forever: the trainer copies it to the device each step, as it does real data. */
class RepeatedBatch implements BatchSource {
  constructor(private readonly batch: Batch) {}
  get batchSize(): number {
    return this.batch.size;
  }
  batchesPerEpoch(): undefined {
    return undefined;
  }
  async *batches(from: DataPosition): AsyncGenerator<{ batch: Batch; next: DataPosition }> {
    let cursor = from.cursor;
    for (;;) {
      cursor += this.batch.size;
      yield { batch: this.batch, next: { epoch: from.epoch, cursor } };
    }
  }
  stats(): DataStats {
    return { examples: 0, skipped: 0, skippedReasons: {}, waitMs: 0 };
  }
}

export interface BenchResult {
  command: 'train' | 'infer';
  model: string;
  device: Device;
  deviceName: string;
  precision: Precision;
  batchSize: number;
  steps: number;
  warmup: number;
  /** Positions the text tower ran (train only). */
  captionTokens: number | null;
  stepMs: number;
  stepMsMin: number;
  stepMsMax: number;
  /** Samples (pairs or images) per second at the median step time. */
  samplesPerSec: number;
  flopsPerStep: number;
  flopsPerSample: number;
  achievedTflops: number;
  peakTflops: number | null;
  peakSource: string;
  /** Model FLOP utilisation: achieved over peak; null without a peak. */
  mfu: number | null;
  /** The card's datasheet peaks by precision (CUDA, known card), for comparing runs in other precisions. */
  cardPeakTflops: { bf16: number; tf32: number } | null;
  peakMemoryBytes: number;
  memorySource: string;
  /** The last step's loss (train only). */
  loss: number | null;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function memory(device: Device): { bytes: number; source: string } {
  if (device === 'cuda') {
    const m = memoryStats();
    return { bytes: m.peakUsed, source: `CUDA bytes in use at the peak (${(m.reserved / 2 ** 30).toFixed(2)} GiB reserved by the caching allocator)` };
  }
  // maxRSS is in KiB; it covers the whole process (Node itself is about 50 MiB of it).
  return { bytes: process.resourceUsage().maxRSS * 1024, source: 'peak resident memory of the process' };
}

interface Setup {
  cfg: CLIPConfig;
  name: string;
  device: Device;
  deviceName: string;
  precision: Precision;
  hook: ReturnType<typeof precisionHook>;
  batch: number;
  steps: number;
  warmup: number;
  seed: number;
  peakOverride: number | undefined;
}

/** The configuration's name as CONFIGS spells it ('ViT-B-32' -> 'ViT-B/32'). */
function canonicalName(cfg: CLIPConfig, asGiven: string): string {
  return Object.keys(CONFIGS).find((k) => JSON.stringify(CONFIGS[k]) === JSON.stringify(cfg)) ?? asGiven;
}

function setupFrom(flags: Record<string, string | number | boolean | undefined>): Setup {
  const name = flags.model as string;
  let cfg: CLIPConfig;
  try {
    cfg = resolveConfig(name);
  } catch (e) {
    throw new UsageError(`--model: ${(e as Error).message}`);
  }
  const precision = flags.precision as string;
  if (precision !== 'fp32' && precision !== 'bf16') throw new UsageError(`--precision must be fp32 or bf16, got "${precision}"`);
  const hook = precisionHook(precision);
  const batch = positiveInt(flags, 'batch-size'), steps = positiveInt(flags, 'steps');
  const warmup = flags.warmup as number;
  if (!Number.isInteger(warmup) || warmup < 0) throw new UsageError(`--warmup must be an integer >= 0, got ${warmup}`);
  const seed = flags.seed as number;
  if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be an integer >= 0, got ${seed}`);
  const peak = flags['peak-tflops'] as number | undefined;
  if (peak !== undefined && !(peak > 0)) throw new UsageError(`--peak-tflops must be > 0, got ${peak}`);
  let device: Device;
  try {
    device = resolveDevice(checkDevice(flags.device));
    Tensor.empty([0], { device }).dispose();
  } catch (e) {
    throw e instanceof UsageError ? e : new UsageError(`--device ${flags.device}: ${(e as Error).message}`);
  }
  const deviceName = device === 'cuda' ? (info().cudaDevices[0]?.name ?? 'cuda') : `CPU, ${info().threads} threads`;
  return { cfg, name: canonicalName(cfg, name), device, deviceName, precision, hook, batch, steps, warmup, seed, peakOverride: peak };
}

function peakFor(s: Setup): Peak {
  if (s.peakOverride !== undefined) return { flops: s.peakOverride * 1e12, source: `given: ${s.peakOverride} TFLOP/s` };
  return s.device === 'cuda' ? cudaPeak(s.deviceName, s.precision) : measureCpuPeak(s.hook.run);
}

function result(s: Setup, command: BenchResult['command'], times: number[], flopsPerStep: number, captionTokens: number | null, loss: number | null): BenchResult {
  const stepMs = median(times);
  const achieved = flopsPerStep / (stepMs / 1000);
  const peak = peakFor(s);
  const mem = memory(s.device);
  const card = s.device === 'cuda' ? cardPeaks(s.deviceName) : undefined;
  return {
    command, model: s.name, device: s.device, deviceName: s.deviceName, precision: s.precision,
    batchSize: s.batch, steps: s.steps, warmup: s.warmup, captionTokens,
    stepMs, stepMsMin: Math.min(...times), stepMsMax: Math.max(...times),
    samplesPerSec: s.batch / (stepMs / 1000),
    flopsPerStep, flopsPerSample: flopsPerStep / s.batch, achievedTflops: achieved / 1e12,
    peakTflops: peak.flops === null ? null : peak.flops / 1e12, peakSource: peak.source,
    mfu: peak.flops === null ? null : achieved / peak.flops,
    cardPeakTflops: card ? { bf16: card.bf16, tf32: card.tf32 } : null,
    peakMemoryBytes: mem.bytes, memorySource: mem.source, loss,
  };
}

/** Times `steps` Trainer steps after `warmup` on one repeated random batch. */
async function benchTrain(s: Setup, captionTokens: number): Promise<BenchResult> {
  const { cfg, batch } = s;
  const L = cfg.text.contextLength, R = cfg.vision.imageSize;
  if (!Number.isInteger(captionTokens) || captionTokens < 2 || captionTokens > L) {
    throw new UsageError(`--caption-tokens must be an integer from 2 (start and end-of-text) to the context length ${L}, got ${captionTokens}`);
  }
  if (cfg.vision.kind === 'vit' && cfg.vision.imageWidth && cfg.vision.imageWidth !== R) {
    throw new UsageError(`--model ${s.name}: non-square images are not benchmarked`);
  }
  const rng = new Random(s.seed + 1);
  const host: Batch = {
    size: batch, imageSize: R, contextLength: L,
    pixels: rng.uniformArray(batch * 3 * R * R, -1.8, 2.1), // about the range of normalised pixels
    tokens: syntheticTokens(batch, L, cfg.text.vocabSize, captionTokens, rng),
    captions: new Array<string>(batch).fill(''),
  };
  const model = createCLIP(cfg, { seed: s.seed, device: s.device });
  // A small constant learning rate keeps the random-data loss finite over any number of steps.
  const trainer = new Trainer(model, { lr: 1e-5, warmup: 0, schedule: 'constant', progressBar: false, handleSigint: false, outDir: null, ...s.hook.trainer });
  const ends: number[] = [];
  trainer.on('step', (m) => ends.push(m.elapsedSec * 1000));
  try {
    const r = await trainer.fit(new RepeatedBatch(host), { steps: s.warmup + s.steps });
    // Each step ends synchronised (the trainer reads the loss scale back), so the gaps are step times.
    const times = ends.map((t, i) => t - (i > 0 ? ends[i - 1] : 0)).slice(s.warmup);
    const flops = trainStepFlops(cfg, batch, { textLength: captionTokens }).total;
    return result(s, 'train', times, flops, captionTokens, r.losses[r.losses.length - 1]);
  } finally {
    trainer.optimizer.dispose();
    model.dispose();
  }
}

/** Times the image encoder's forward pass (no graph) on one batch already on the device. */
async function benchInfer(s: Setup): Promise<BenchResult> {
  const { cfg, batch } = s;
  const R = cfg.vision.imageSize, W = cfg.vision.kind === 'vit' ? (cfg.vision.imageWidth ?? R) : R;
  const model: CLIP = createCLIP(cfg, { seed: s.seed, device: s.device });
  model.eval();
  const pixels = Tensor.from(new Random(s.seed + 1).uniformArray(batch * 3 * R * W, -1.8, 2.1), [batch, 3, R, W], { device: s.device });
  const times: number[] = [];
  try {
    for (let i = 0; i < s.warmup + s.steps; i++) {
      const t0 = performance.now();
      noGrad(() => s.hook.run(() => tidy(() => {
        const e = model.encodeImage(pixels);
        if (s.device === 'cuda') synchronize('cuda');
        e.dispose();
      })));
      if (i >= s.warmup) times.push(performance.now() - t0);
    }
    return result(s, 'infer', times, batch * imageFlops(cfg), null, null);
  } finally {
    pixels.dispose();
    model.dispose();
  }
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
const fmtFlops = (f: number) => (f >= 1e12 ? `${(f / 1e12).toFixed(2)} TFLOP` : `${(f / 1e9).toFixed(2)} GFLOP`);

function describe(r: BenchResult, cfg: CLIPConfig): string {
  const what = r.command === 'train' ? 'training step (forward, loss, backward, AdamW)' : 'image encoder forward';
  const unit = r.command === 'train' ? 'pairs' : 'images';
  const lines = [
    `tsclip bench ${r.command}: ${r.model}, ${what}, batch ${r.batchSize}, ${r.precision}, ${r.device} (${r.deviceName})`,
  ];
  if (r.captionTokens !== null) lines.push(`  captions    longest ${r.captionTokens} tokens: the text tower runs ${r.captionTokens} of ${cfg.text.contextLength} positions`);
  const f = r.command === 'train' ? trainStepFlops(cfg, r.batchSize, { textLength: r.captionTokens ?? undefined }) : null;
  lines.push(
    `  step time   ${r.stepMs.toFixed(1)} ms median (min ${r.stepMsMin.toFixed(1)}, max ${r.stepMsMax.toFixed(1)}; ${r.steps} step${r.steps === 1 ? '' : 's'} after ${r.warmup} warm-up)`,
    `  throughput  ${r.samplesPerSec.toFixed(1)} ${unit}/s`,
    `  model FLOPs ${fmtFlops(r.flopsPerStep)} per step, ${fmtFlops(r.flopsPerSample)} per sample` +
      (f ? ` (images ${fmtFlops(f.image)}, texts ${fmtFlops(f.text)}, logits ${fmtFlops(f.logits)}; backward = 2x forward)` : ''),
    `  achieved    ${fmtFlops(r.achievedTflops * 1e12)}/s`,
    `  MFU         ${r.mfu === null ? '-' : `${(r.mfu * 100).toFixed(1)}%`} of ${r.peakSource}`,
    `  memory      ${gib(r.peakMemoryBytes)}: ${r.memorySource}`,
  );
  if (r.loss !== null) lines.push(`  loss        ${r.loss.toFixed(4)} (last step; random pairs start near ln ${r.batchSize} = ${Math.log(r.batchSize).toFixed(2)})`);
  return lines.join('\n');
}

export async function benchCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') return void console.log(HELP);
  if (sub !== 'train' && sub !== 'infer') throw new UsageError(`unknown bench "${sub}" (expected train or infer)\n\n${HELP}`);
  const { flags, positionals } = parseArgs(rest, FLAGS);
  if (flags.help) return void console.log(HELP);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"\n\n${HELP}`);
  const s = setupFrom(flags);
  const r = sub === 'train' ? await benchTrain(s, flags['caption-tokens'] as number) : await benchInfer(s);
  console.log(flags.json ? JSON.stringify(r) : describe(r, s.cfg));
}
