// The trainer against the reference: two AdamW steps on the tiny fixture (open_clip's weight-decay
// rule, temperature clamp), then exact resumption, non-finite stops and the schedule.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { readSafetensors } from '../lib/io/safetensors.js';
import { toFloat32, toInt32 } from '../lib/io/raw.js';
import { loadCLIP } from '../lib/models/load.js';
import { createCLIP } from '../lib/models/clip.js';
import { Trainer, NonFiniteError } from '../lib/train/trainer.js';
import { lrAt } from '../lib/train/schedule.js';
import { listCheckpoints, loadTrainedCLIP, readTrainState } from '../lib/train/checkpoint.js';
import { DataLoader } from '../lib/data/loader.js';
import type { Batch } from '../lib/data/types.js';
import { DEVICE, SHARED, relErr } from './helpers.js';
import { MICRO_CONFIG, randomDataset, repeatSource, wordTokenize } from './train-helpers.js';

const FIX = join(SHARED, 'fixtures', 'openai-vit-tiny');


describe.skipIf(!existsSync(FIX))('Trainer reproduces the reference AdamW steps (skipped when ../shared/fixtures is missing)', () => {
  it('two steps of lr 1e-3, betas (0.9, 0.98), eps 1e-6, wd 0.2 match params_after_2_adamw_steps within 1e-4', async () => {
    const model = await loadCLIP(join(FIX, 'weights.safetensors'), { device: DEVICE });
    const io = await readSafetensors(join(FIX, 'io.safetensors'));
    const images = io.tensors.get('images')!, tokens = io.tensors.get('tokens')!;
    const batch: Batch = {
      size: images.shape[0], imageSize: images.shape[2], contextLength: tokens.shape[1],
      pixels: toFloat32(images), tokens: toInt32(tokens), captions: [],
    };
    const trainer = new Trainer(model, { lr: 1e-3, betas: [0.9, 0.98], eps: 1e-6, weightDecay: 0.2, schedule: 'constant', warmup: 0, mode: 'eval' });
    const r = await trainer.fit(repeatSource(batch), { steps: 2 });
    expect(relErr(r.losses, toFloat32(io.tensors.get('adamw_losses')!))).toBeLessThan(1e-4);
    // Adam divides by the root of the squared gradient, so an element whose gradient is float
    // rounding noise moves by up to lr in either direction in any implementation. Those elements
    // (the key third of each in_proj_bias, whose exact gradient is 0 because softmax ignores it,
    // and those whose reference gradient is below 1e-4 of the tensor's largest) are held to the
    // bound two Adam steps allow; every other element to 1e-4 of its tensor's scale.
    const after = await readSafetensors(join(FIX, 'params_after_2_adamw_steps.safetensors'));
    const grads = await readSafetensors(join(FIX, 'grads.safetensors'));
    const params = new Map(model.namedParameters());
    expect(new Set(after.tensors.keys())).toEqual(new Set(params.keys()));
    let noisy = 0, total = 0;
    for (const [name, raw] of after.tensors) {
      const ours = params.get(name)!.toArraySync() as Float32Array, ref = toFloat32(raw);
      const g = toFloat32(grads.tensors.get(name)!);
      const gmax = g.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      // A tensor that starts at zero (biases) is ~2 lr after two steps; its scale is taken as >= 10 lr.
      const scale = ref.reduce((m, x) => Math.max(m, Math.abs(x)), 10 * 1e-3);
      let worst = 0;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(ours[i] - ref[i]);
        total++;
        const keyBias = name.endsWith('attn.in_proj_bias') && i >= ref.length / 3 && i < (2 * ref.length) / 3;
        if (!keyBias && (g[i] === 0 || Math.abs(g[i]) >= 1e-4 * gmax)) worst = Math.max(worst, d / scale);
        else {
          noisy++;
          expect(d, `${name}[${i}]`).toBeLessThanOrEqual(2 * 1e-3 * 1.05);
        }
      }
      expect(worst, name).toBeLessThan(1e-4);
    }
    expect(noisy / total).toBeLessThan(0.02);
    trainer.optimizer.dispose();
    model.dispose();
  });
});

function microRun(dir: string | null, opts: { checkpointEvery?: number; bad?: Parameters<typeof randomDataset>[2] } = {}) {
  const model = createCLIP(MICRO_CONFIG, { seed: 7, device: DEVICE });
  const data = new DataLoader(randomDataset(40, 16, opts.bad), {
    batchSize: 8, contextLength: 8, tokenize: wordTokenize(8, 64), seed: 3,
  });
  const trainer = new Trainer(model, { lr: 2e-3, warmup: 2, outDir: dir, checkpointEvery: opts.checkpointEvery ?? 3, keepCheckpoints: 2, seed: 3, gradClipNorm: 1 });
  return { model, data, trainer };
}

describe('checkpoints and resumption', () => {
  it('a run stopped mid-way and resumed gives exactly the uninterrupted loss sequence', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tsclip-train-'));
    try {
      const full = microRun(join(root, 'full'));
      const ref = await full.trainer.fit(full.data, { steps: 8 });
      expect(ref.losses.length).toBe(8);
      // keep-last-2 pruning: steps 6 and 8 remain
      expect((await listCheckpoints(join(root, 'full', 'checkpoints'))).map((c) => c.step)).toEqual([6, 8]);

      const a = microRun(join(root, 'cut'));
      a.trainer.on('step', (m) => { if (m.step === 5) a.trainer.stop(); });
      const first = await a.trainer.fit(a.data, { steps: 8 });
      expect(first.stoppedBy).toBe('stop');
      expect(first.losses).toEqual(ref.losses.slice(0, 5));
      const st = await readTrainState(first.lastCheckpoint!);
      expect(st.step).toBe(5);
      expect(st.position).toEqual({ epoch: 0, cursor: 40 });

      const b = microRun(join(root, 'cut'));
      const second = await b.trainer.fit(b.data, { steps: 8, resume: true });
      expect(second.losses).toEqual(ref.losses.slice(5));
      const log = readFileSync(join(root, 'cut', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(log.filter((r) => r.kind === 'step').map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(existsSync(join(root, 'cut', 'metrics-loss.svg'))).toBe(true);
      for (const r of [full, a, b]) r.model.dispose();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('SIGINT during a run saves a checkpoint at the current step and returns', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tsclip-train-'));
    try {
      const run = microRun(root, { checkpointEvery: 100 });
      const before = process.listenerCount('SIGINT');
      run.trainer.on('step', (m) => {
        // the trainer's own handler (the last one registered), called as the signal would
        if (m.step === 2) (process.listeners('SIGINT').at(-1) as (s: string) => void)('SIGINT');
      });
      const r = await run.trainer.fit(run.data, { steps: 6 });
      expect(r.stoppedBy).toBe('signal');
      expect(r.steps).toBe(2);
      expect((await listCheckpoints(join(root, 'checkpoints'))).map((c) => c.step)).toEqual([2]);
      expect(process.listenerCount('SIGINT')).toBe(before);
      run.model.dispose();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('a non-finite loss stops with the step named and the last good checkpoint intact', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tsclip-train-'));
    try {
      // Every example is bad-free except that all images are NaN from the third batch on.
      const run = microRun(root, { checkpointEvery: 1 });
      let calls = 0;
      const orig = run.data.dataset.get.bind(run.data.dataset);
      (run.data.dataset as { get: typeof orig }).get = (i: number) => {
        const ex = orig(i) as { image: Float32Array; caption: string };
        if (++calls > 16) ex.image[5] = NaN;
        return ex;
      };
      const err = await run.trainer.fit(run.data, { steps: 5 }).catch((e) => e);
      expect(err).toBeInstanceOf(NonFiniteError);
      expect(err.message).toMatch(/step 3: loss is NaN.*step-00000002/);
      const cks = await listCheckpoints(join(root, 'checkpoints'));
      expect(cks.map((c) => c.step)).toEqual([1, 2]);
      const reloaded = await loadTrainedCLIP(cks[1].path);
      expect(reloaded.namedParameters().every(([, p]) => (p.toArraySync() as Float32Array).every(Number.isFinite))).toBe(true);
      reloaded.dispose();
      run.model.dispose();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('schedule and options', () => {
  it('linear warm-up then cosine to zero', () => {
    const s = { kind: 'cosine' as const, baseLr: 1, warmup: 4, totalSteps: 14 };
    expect([0, 1, 2, 3].map((k) => lrAt(s, k))).toEqual([0.25, 0.5, 0.75, 1]);
    expect(lrAt(s, 4)).toBe(1);
    expect(lrAt(s, 9)).toBeCloseTo(0.5, 12);
    expect(lrAt(s, 14)).toBeCloseTo(0, 12);
    expect(lrAt({ ...s, kind: 'constant' }, 10)).toBe(1);
  });

  it('puts biases, gains, norms and the temperature in the group without weight decay', () => {
    const model = createCLIP(MICRO_CONFIG, { seed: 1 });
    const t = new Trainer(model, { weightDecay: 0.1 });
    const [decay, noDecay] = t.optimizer.groups;
    const names = new Map(model.namedParameters().map(([n, p]) => [p, n]));
    expect(decay.weightDecay).toBe(0.1);
    expect(noDecay.weightDecay).toBe(0);
    const nd = noDecay.params.map((p) => names.get(p)!);
    expect(nd).toContain('logit_scale');
    expect(nd).toContain('ln_final.weight');
    expect(nd).toContain('visual.class_embedding');
    expect(decay.params.map((p) => names.get(p)!)).toContain('text_projection');
    expect(nd.every((n) => /bias|ln|logit_scale|class_embedding/.test(n))).toBe(true);
    model.dispose();
  });

  it('refuses bad options with the option named', () => {
    const model = createCLIP(MICRO_CONFIG, { seed: 1 });
    expect(() => new Trainer(model, { accumFreq: 0 })).toThrow(/accumFreq/);
    expect(() => new Trainer(model, { lockImage: true, lockText: true, lr: 1 })).not.toThrow(); // logit_scale still trains
    model.dispose();
  });
});
