// `tsclip probe` and `tsclip eval` end to end on tiny models, plus one real process for the
// no-stack-trace rule of the command line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { probeCommand } from '../lib/cli/probe.js';
import { evalCommand } from '../lib/cli/eval.js';
import { classifyCommand } from '../lib/cli/classify.js';
import { UsageError } from '../lib/cli/args.js';
import { createCLIP } from '../lib/models/clip.js';
import { resolveConfig } from '../lib/models/config.js';
import { saveModelWeights } from '../lib/train/checkpoint.js';
import { shapesTokenizer } from '../lib/data/shapes.js';
import { FASHION_MNIST_DIR } from '../lib/data/fashion-mnist.js';
import { capture, tinyRun, type TinyRun } from './use-helpers.js';
import { rng } from './helpers.js';

let run: TinyRun;
let classes: string;
beforeAll(async () => {
  run = await tinyRun(4);
  // Two classes of clearly different images: reddish and bluish noise, with captions beside them.
  classes = join(run.dir, 'classes');
  const r = rng(7);
  for (const [name, base] of [['red_things', [220, 40, 40]], ['blue_things', [40, 40, 220]]] as const) {
    mkdirSync(join(classes, name), { recursive: true });
    for (let i = 0; i < 12; i++) {
      const data = new Uint8Array(32 * 32 * 3);
      for (let p = 0; p < data.length; p++) data[p] = Math.max(0, Math.min(255, base[p % 3] + Math.floor((r() - 0.5) * 120)));
      writeFileSync(join(classes, name, `${i}.png`), await sharp(Buffer.from(data), { raw: { width: 32, height: 32, channels: 3 } }).png().toBuffer());
      writeFileSync(join(classes, name, `${i}.txt`), `a ${name.replace('_', ' ')} number ${i}`);
    }
  }
});
afterAll(() => {
  run.model.dispose();
  rmSync(run.dir, { recursive: true, force: true });
});

describe('tsclip probe', () => {
  it('fits a probe on a class folder (75/25 split) and separates the classes', async () => {
    const r = JSON.parse(await capture(() => probeCommand(['--model', run.dir, '--data', classes, '--json', '--device', 'cpu'])));
    expect(r.classes).toBe(2);
    expect(r.train + r.val).toBe(18);
    expect(r.test).toBe(6);
    expect(r.testAccuracy).toBe(1);
    expect(r.lambda).toBeGreaterThanOrEqual(1e-6);
    expect(r.lambda).toBeLessThanOrEqual(1e6);
    expect(r.sweep.length).toBeGreaterThanOrEqual(7);
    const text = await capture(() => probeCommand(['--model', run.dir, '--data', classes]));
    expect(text).toMatch(/test accuracy +100\.0%/);
  });
  it('user errors', async () => {
    await expect(probeCommand(['--model', run.dir])).rejects.toThrow(/--data is required/);
    await expect(probeCommand(['--model', run.dir, '--data', join(run.dir, 'nope')])).rejects.toThrow(UsageError);
    await expect(probeCommand(['--model', run.dir, '--data', classes, '--val', '2'])).rejects.toThrow(/--val must be between 0 and 1/);
    expect(await capture(() => probeCommand(['--help']))).toMatch(/examples:/);
  });
});

describe('tsclip eval', () => {
  it('a class folder with captions: zero-shot, probe and retrieval', async () => {
    const r = JSON.parse(await capture(() => evalCommand(['--model', run.dir, '--task', classes, '--json'])));
    expect(r.classes).toBe(2);
    expect(r.zeroShot.n).toBe(6);
    expect(r.zeroShot.chance).toBe(0.5);
    expect(r.zeroShot.accuracy * 6).toBeCloseTo(Math.round(r.zeroShot.accuracy * 6), 9);
    expect(r.probe.accuracy).toBe(1);
    expect(r.retrieval.images).toBe(6);
    for (const k of [1, 5, 10]) {
      expect(r.retrieval.imageToText[k]).toBeGreaterThanOrEqual(0);
      expect(r.retrieval.textToImage[k]).toBeLessThanOrEqual(1);
    }
    expect(r.retrieval.textToImage[10]).toBe(1); // 6 images: everything is in the top 10
    const text = await capture(() => evalCommand(['--model', run.dir, '--task', classes, '--no-probe']));
    expect(text).toMatch(/zero-shot accuracy/);
    expect(text).toMatch(/text -> image recall +R@1/);
    expect(text).not.toMatch(/linear probe/);
  });

  it('shapes: a run folder without a tokenizer file uses the shapes vocabulary', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsclip-shapes-'));
    try {
      const cfg = resolveConfig('tiny-vit');
      cfg.text.vocabSize = shapesTokenizer().vocabSize;
      const m = createCLIP(cfg, { seed: 2 });
      await saveModelWeights(m, join(dir, 'model.safetensors'));
      m.dispose();
      const r = JSON.parse(await capture(() => evalCommand(['--model', dir, '--task', 'shapes', '--n', '16', '--json', '--no-probe'])));
      expect(r.zeroShot.n).toBe(16);
      expect(r.zeroShot.chance).toBeCloseTo(1 / 12, 12);
      expect(r.retrieval.images).toBe(16);
      expect(r.retrieval.texts).toBe(16);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!existsSync(FASHION_MNIST_DIR))('fashion-mnist (skipped where dataset-fashion-mnist is not installed)', async () => {
    const r = JSON.parse(await capture(() => evalCommand(['--model', run.dir, '--task', 'fashion-mnist', '--n', '40', '--json'])));
    expect(r.classes).toBe(10);
    expect(r.zeroShot.n).toBe(40);
    expect(r.probe.test).toBe(40);
    expect(r.probe.train).toBe(80);
    expect(r.retrieval).toBeUndefined();
  });

  it('user errors', async () => {
    await expect(evalCommand(['--model', run.dir])).rejects.toThrow(/--task is required/);
    await expect(evalCommand(['--model', run.dir, '--task', 'imagenet'])).rejects.toThrow(/not fashion-mnist or shapes, and no such folder/);
    await expect(evalCommand(['--task', 'shapes'])).rejects.toThrow(/--model is required/);
    expect(await capture(() => evalCommand(['--help']))).toMatch(/examples:/);
  });
});

describe('the tsclip process', () => {
  it('prints one "tsclip: ..." line and no stack trace for a user error', async () => {
    // Bundle the current sources (dist/ may be stale) next to node_modules so sharp resolves.
    const outDir = join(__dirname, '..', 'node_modules', '.cache', 'tsclip-cli-test');
    const { build } = await import('esbuild');
    await build({ entryPoints: [join(__dirname, '..', 'lib', 'cli', 'main.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20',
      outfile: join(outDir, 'cli.mjs'), external: ['sharp'], logLevel: 'silent',
      banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } });
    const p = spawnSync(process.execPath, [join(outDir, 'cli.mjs'), 'classify', '--model', join(run.dir, 'missing'), '--labels', 'a,b', 'x.png'], { encoding: 'utf8' });
    expect(p.status).toBe(2);
    expect(p.stdout).toBe('');
    const lines = p.stderr.trim().split('\n');
    expect(lines).toEqual([`tsclip: --model ${join(run.dir, 'missing')}: no such file or directory`]);
  });
});

const HF = join(__dirname, '..', '..', 'shared', 'fixtures', 'hf-vit-tiny');
describe.skipIf(!existsSync(HF))('the HF fixture folder (../shared/fixtures missing: skipped)', () => {
  it('probes with its image tower (no tokenizer needed); text commands ask for a tokenizer', async () => {
    const r = JSON.parse(await capture(() => probeCommand(['--model', HF, '--data', classes, '--json'])));
    expect(r.testAccuracy).toBe(1);
    await expect(classifyCommand(['--model', HF, '--labels', 'a,b', join(classes, 'red_things', '0.png')])).rejects.toThrow(/no tokenizer found beside .*--tokenizer FILE/);
  });
});
