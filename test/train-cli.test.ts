// `tsclip train` end to end on the shapes data: a run, its resumption, fine-tuning with a locked
// image tower and WiSE-FT, and usage errors.
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { trainCommand } from '../lib/cli/train.js';
import { UsageError } from '../lib/cli/args.js';
import { loadTrainedCLIP, listCheckpoints } from '../lib/train/checkpoint.js';
import { relErr } from './helpers.js';

const quiet = async (fn: () => Promise<void>) => {
  const err = console.error;
  console.error = () => {};
  try {
    await fn();
  } finally {
    console.error = err;
  }
};

describe('tsclip train', () => {
  it('trains, resumes from a checkpoint, fine-tunes with --lock-image and --wise-ft', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tsclip-cli-'));
    try {
      const out = join(root, 'run');
      const base = ['--data', 'shapes:256', '--model', 'tiny-vit', '--out', out, '--batch-size', '8', '--lr', '1e-3', '--warmup', '1', '--save-every', '2'];
      await quiet(() => trainCommand([...base, '--steps', '5']));
      const steps = () => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'step');
      const full = steps().map((r) => r.loss);
      expect(full.length).toBe(5);
      expect(existsSync(join(out, 'model.safetensors'))).toBe(true);
      expect(existsSync(join(out, 'metrics-loss.svg'))).toBe(true);
      expect((await listCheckpoints(join(out, 'checkpoints'))).map((c) => c.step)).toEqual([2, 4, 5]);

      // resume from the step-4 checkpoint of a second, identical run: step 5 repeats exactly
      const out2 = join(root, 'run2');
      await quiet(() => trainCommand([...base.map((a) => (a === out ? out2 : a)), '--steps', '5', '--resume', join(out, 'checkpoints', 'step-00000004')]));
      const resumed = readFileSync(join(out2, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'step');
      expect(resumed.map((r) => r.step)).toEqual([5]);
      expect(resumed[0].loss).toBe(full[4]);

      // fine-tune the trained model with the image tower locked, then WiSE-FT 0.5
      const ft = join(root, 'ft');
      await quiet(() => trainCommand(['--data', 'shapes:256', '--model', join(out, 'model.safetensors'), '--out', ft, '--batch-size', '8',
        '--steps', '2', '--lr', '1e-2', '--lock-image', '--wise-ft', '0.5']));
      const m0 = await loadTrainedCLIP(join(out, 'model.safetensors'));
      const m1 = await loadTrainedCLIP(join(ft, 'model.safetensors'));
      const mw = await loadTrainedCLIP(join(ft, 'model-wise-ft-0.5.safetensors'));
      const p0 = new Map(m0.namedParameters()), p1 = new Map(m1.namedParameters());
      for (const [n, p] of mw.namedParameters()) {
        const a = p0.get(n)!.toArraySync() as Float32Array, b = p1.get(n)!.toArraySync() as Float32Array;
        if (n.startsWith('visual.')) expect(b, n).toEqual(a);
        expect(relErr(p.toArraySync() as Float32Array, a.map((x, i) => 0.5 * x + 0.5 * b[i])), n).toBeLessThan(1e-6);
      }
      expect(relErr(p1.get('text_projection')!.toArraySync() as Float32Array, p0.get('text_projection')!.toArraySync() as Float32Array)).toBeGreaterThan(1e-4);
      for (const m of [m0, m1, mw]) m.dispose();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('usage errors name the flag', async () => {
    await expect(trainCommand(['--model', 'tiny-vit', '--out', '/tmp/x'])).rejects.toThrow(UsageError);
    await expect(trainCommand(['--data', 'shapes', '--out', '/tmp/x', '--steps', '1', '--precision', 'fp16'])).rejects.toThrow(/--precision fp16/);
    await expect(trainCommand(['--data', 'nowhere.xyz', '--out', '/tmp/x', '--steps', '1'])).rejects.toThrow(/--data nowhere\.xyz: not a known data spec/);
    await expect(trainCommand(['--data', 'shapes', '--out', '/tmp/x', '--steps', '1', '--model', 'tiny-vit', '--wise-ft', '0.5'])).rejects.toThrow(/--wise-ft needs --model to be a checkpoint/);
    await expect(trainCommand(['--bogus'])).rejects.toThrow(/unknown flag --bogus/);
  });
});
