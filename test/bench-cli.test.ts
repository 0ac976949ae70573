// `tsclip bench train|infer` on the CPU with tiny models: the JSON it prints is complete and
// consistent with the FLOP count and its own timings, and bad flags are usage errors.
import { describe, expect, it } from 'vitest';
import { benchCommand, cudaPeak, syntheticTokens, type BenchResult } from '../lib/cli/bench.js';
import { UsageError } from '../lib/cli/args.js';
import { resolveConfig } from '../lib/models/config.js';
import { imageFlops, trainStepFlops } from '../lib/train/flops.js';
import { Random } from '../lib/nn/random.js';

async function capture(argv: string[]): Promise<string> {
  const out: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  try {
    await benchCommand(argv);
  } finally {
    console.log = log;
  }
  return out.join('\n');
}

async function json(argv: string[]): Promise<BenchResult> {
  const text = await capture([...argv, '--json']);
  expect(text.split('\n')).toHaveLength(1);
  return JSON.parse(text) as BenchResult;
}

function expectSane(r: BenchResult): void {
  for (const k of ['stepMs', 'stepMsMin', 'stepMsMax', 'samplesPerSec', 'flopsPerStep', 'flopsPerSample', 'achievedTflops', 'peakTflops', 'peakMemoryBytes'] as const) {
    expect(Number.isFinite(r[k]) && (r[k] as number) > 0, `${k} = ${r[k]}`).toBe(true);
  }
  expect(r.stepMsMin).toBeLessThanOrEqual(r.stepMs);
  expect(r.stepMs).toBeLessThanOrEqual(r.stepMsMax);
  expect(r.samplesPerSec).toBeCloseTo(r.batchSize / (r.stepMs / 1000), 6);
  expect(r.flopsPerSample).toBeCloseTo(r.flopsPerStep / r.batchSize, 3);
  expect(r.achievedTflops * 1e12).toBeCloseTo(r.flopsPerStep / (r.stepMs / 1000), -3);
  expect(r.mfu).not.toBeNull();
  expect(r.mfu!).toBeGreaterThan(0);
  expect(r.mfu!).toBeLessThanOrEqual(1);
  expect(r.mfu!).toBeCloseTo(r.achievedTflops / r.peakTflops!, 9);
  expect(r.device).toBe('cpu');
  // the whole process: at least the Node runtime, far less than this machine has
  expect(r.peakMemoryBytes).toBeGreaterThan(20 * 2 ** 20);
  expect(r.peakMemoryBytes).toBeLessThan(64 * 2 ** 30);
}

describe('tsclip bench train', () => {
  it('runs trainer steps on a tiny model and prints one sane JSON line', async () => {
    const r = await json(['train', '--model', 'tiny-vit', '--batch-size', '8', '--steps', '2', '--warmup', '1', '--device', 'cpu', '--caption-tokens', '12']);
    expect(r).toMatchObject({ command: 'train', model: 'tiny-vit', precision: 'fp32', batchSize: 8, steps: 2, warmup: 1, captionTokens: 12 });
    expectSane(r);
    expect(r.flopsPerStep).toBe(trainStepFlops(resolveConfig('tiny-vit'), 8, { textLength: 12 }).total);
    expect(r.peakSource).toMatch(/^measured: best tsclip GEMM 1024x1024x1024/);
    // random pairs: the contrastive loss starts near chance, ln 8
    expect(r.loss).not.toBeNull();
    expect(Math.abs(r.loss! - Math.log(8))).toBeLessThan(1);
  });

  it('a given peak replaces the measured one; the text report names the parts', async () => {
    const r = await json(['train', '--model', 'tiny-rn', '--batch-size', '4', '--steps', '1', '--warmup', '0', '--device', 'cpu', '--peak-tflops', '0.5']);
    expect(r.peakTflops).toBe(0.5);
    expect(r.peakSource).toBe('given: 0.5 TFLOP/s');
    expect(r.captionTokens).toBe(20);
    expectSane(r);
    const text = await capture(['train', '--model', 'tiny-vit', '--batch-size', '4', '--steps', '1', '--warmup', '0', '--device', 'cpu']);
    for (const want of [/step time +[\d.]+ ms median/, /throughput +[\d.]+ pairs\/s/, /MFU +[\d.]+% of measured/, /memory +[\d.]+ GiB/, /text tower runs 20 of 32 positions/]) {
      expect(text).toMatch(want);
    }
  });
});

describe('tsclip bench infer', () => {
  it('times the image encoder', async () => {
    const r = await json(['infer', '--model', 'tiny-rn', '--batch-size', '4', '--steps', '2', '--warmup', '1', '--device', 'cpu']);
    expect(r).toMatchObject({ command: 'infer', model: 'tiny-rn', batchSize: 4, captionTokens: null, loss: null });
    expectSane(r);
    expect(r.flopsPerStep).toBe(4 * imageFlops(resolveConfig('tiny-rn')));
  });
});

describe('tsclip bench: flags', () => {
  it('--help, and usage errors that name the flag', async () => {
    expect(await capture(['--help'])).toMatch(/usage: tsclip bench train\|infer/);
    expect(await capture(['train', '--help'])).toMatch(/--caption-tokens/);
    await expect(benchCommand(['fly'])).rejects.toThrow(/unknown bench "fly" \(expected train or infer\)/);
    await expect(benchCommand(['train', '--model', 'ViT-X/99'])).rejects.toThrow(/--model: unknown model configuration "ViT-X\/99"/);
    await expect(benchCommand(['train', '--model', 'tiny-vit', '--precision', 'fp16'])).rejects.toThrow(/--precision must be fp32 or bf16, got "fp16"/);
    await expect(benchCommand(['train', '--model', 'tiny-vit', '--batch-size', '0'])).rejects.toThrow(/--batch-size must be a positive integer, got 0/);
    await expect(benchCommand(['train', '--model', 'tiny-vit', '--warmup', '-1'])).rejects.toThrow(/--warmup must be an integer >= 0/);
    await expect(benchCommand(['train', '--model', 'tiny-vit', '--device', 'tpu'])).rejects.toThrow(/--device must be cpu, cuda or auto/);
    await expect(benchCommand(['train', '--model', 'tiny-vit', '--peak-tflops', '0'])).rejects.toThrow(/--peak-tflops must be > 0/);
    await expect(benchCommand(['train', '--model', 'tiny-vit', '--oops'])).rejects.toThrow(UsageError);
    // the open_clip spelling resolves to ViT-B/32 (77 positions); checked before any weights are made
    await expect(benchCommand(['train', '--model', 'ViT-B-32', '--caption-tokens', '78', '--device', 'cpu'])).rejects.toThrow(/--caption-tokens must be an integer from 2 .* context length 77, got 78/);
    await expect(benchCommand(['train', '--model', 'tiny-vit', '--caption-tokens', '1', '--device', 'cpu'])).rejects.toThrow(/--caption-tokens/);
  });

  it('bf16 runs the step and the encoder under the autocast', async () => {
    for (const mode of ['infer', 'train']) {
      const r = await json([mode, '--model', 'tiny-vit', '--batch-size', '2', '--steps', '1', '--warmup', '0', '--device', 'cpu', '--precision', 'bf16']);
      expect(r.precision).toBe('bf16');
      expectSane(r);
    }
  });
});

describe('bench helpers', () => {
  it('synthetic captions: start token, end-of-text (the largest id) at each length, the longest exactly as asked', () => {
    const B = 64, C = 32, V = 1000, longest = 20;
    const t = syntheticTokens(B, C, V, longest, new Random(3));
    const lengths: number[] = [];
    for (let b = 0; b < B; b++) {
      const row = Array.from(t.subarray(b * C, (b + 1) * C));
      expect(row[0]).toBe(V - 2);
      const end = row.indexOf(V - 1);
      expect(row.lastIndexOf(V - 1)).toBe(end); // one end token, and it is the row's argmax
      for (let i = 1; i < end; i++) expect(row[i] >= 1 && row[i] < V - 2).toBe(true);
      for (let i = end + 1; i < C; i++) expect(row[i]).toBe(0);
      lengths.push(end + 1);
    }
    expect(lengths[0]).toBe(longest);
    expect(Math.max(...lengths)).toBe(longest);
    expect(Math.min(...lengths)).toBeGreaterThanOrEqual(longest / 2);
    expect(new Set(lengths).size).toBeGreaterThan(3); // realistic: lengths vary
  });

  it('CUDA peaks by card name and precision', () => {
    expect(cudaPeak('NVIDIA H100 80GB HBM3', 'bf16')).toEqual({ flops: 989e12, source: 'H100 SXM datasheet, dense bf16 989 TFLOP/s' });
    expect(cudaPeak('NVIDIA H100 80GB HBM3', 'fp32').flops).toBe(495e12);
    expect(cudaPeak('NVIDIA H200', 'bf16').flops).toBe(989e12);
    expect(cudaPeak('NVIDIA H100 PCIe', 'bf16').flops).toBe(756e12);
    expect(cudaPeak('Some GPU', 'bf16')).toEqual({ flops: null, source: 'no datasheet peak known for "Some GPU" (give --peak-tflops)' });
  });
});
