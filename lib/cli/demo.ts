// `tsclip demo`: trains a small CLIP from scratch on the embedded shapes dataset (a few minutes on
// two CPU cores), then reports zero-shot accuracy on colour-shape combinations never seen in training.
import { createCLIP } from '../models/clip.js';
import { resolveConfig } from '../models/config.js';
import { ShapesDataset, shapesTokenizer } from '../data/shapes.js';
import { DataLoader } from '../data/loader.js';
import { Trainer } from '../train/trainer.js';
import { shapesZeroShot } from '../train/shapes-eval.js';
import { saveModelWeights } from '../train/checkpoint.js';
import { formatSeconds } from '../train/progress.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  steps: { type: 'number', default: 600, help: 'optimizer steps (fewer when they would not fit in --max-seconds)' },
  'batch-size': { type: 'number', default: 128, help: 'scenes per step' },
  lr: { type: 'number', default: 2e-3, help: 'peak learning rate' },
  warmup: { type: 'number', default: 40, help: 'warm-up steps' },
  model: { type: 'string', default: 'tiny-vit', help: 'small configuration (tiny-vit, small-vit, tiny-rn, small-rn)' },
  'max-seconds': { type: 'number', default: 165, help: 'stop training after this long (the schedule is kept)' },
  'eval-size': { type: 'number', default: 400, help: 'held-out scenes to evaluate' },
  seed: { type: 'number', default: 0, help: 'seed for weights and data' },
  out: { type: 'string', help: 'run directory for metrics.jsonl, the loss plot and the final model' },
  device: { type: 'string', default: 'cpu', help: 'cpu or cuda' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip demo [options]

Trains a small CLIP on generated scenes of coloured shapes ("a small red circle above a blue square")
and prints zero-shot accuracy on colour-shape pairs that never appear in training, next to chance.

${flagHelp(FLAGS)}`;

export interface DemoResult {
  heldOut: number;
  seen: number;
  chance: number;
  steps: number;
  trainSeconds: number;
  parameters: number;
}

export async function runDemo(argv: string[], log: (s: string) => void = console.log): Promise<DemoResult | null> {
  const { flags } = parseArgs(argv, FLAGS);
  if (flags.help) {
    log(HELP);
    return null;
  }
  const num = (k: string) => flags[k] as number;
  let steps = num('steps');
  const batch = num('batch-size');
  if (!Number.isInteger(steps) || steps < 1) throw new UsageError(`--steps must be a positive integer, got ${steps}`);
  if (!Number.isInteger(batch) || batch < 2) throw new UsageError(`--batch-size must be an integer >= 2, got ${batch}`);
  const seed = num('seed');
  const tok = shapesTokenizer();
  const cfg = resolveConfig(flags.model as string);
  cfg.text.vocabSize = tok.vocabSize;
  cfg.text.contextLength = 16;
  const R = cfg.vision.imageSize;
  const model = createCLIP(cfg, { seed, device: flags.device as 'cpu' | 'cuda' });
  const nParams = model.parameters().reduce((a, p) => a + p.size, 0);
  const train = new ShapesDataset({ size: 50_000, imageSize: R, seed: seed + 1 });
  const heldOut = new ShapesDataset({ size: num('eval-size'), imageSize: R, seed: seed + 2, heldOut: true });
  const seen = new ShapesDataset({ size: num('eval-size'), imageSize: R, seed: seed + 3 });
  const data = new DataLoader(train, {
    batchSize: batch, contextLength: 16, seed, tokenize: (c) => tok.tokenizeToArray(c, { contextLength: 16 }),
  });
  // Fit the schedule to the time limit: time a few steps of a throw-away copy on this machine.
  const maxSec = num('max-seconds');
  const probe = createCLIP(cfg, { seed, device: flags.device as 'cpu' | 'cuda' });
  const probeTrainer = new Trainer(probe, { lr: 0, handleSigint: false });
  const at: number[] = [];
  probeTrainer.on('step', () => at.push(performance.now()));
  await probeTrainer.fit(data, { steps: 6 });
  const perStep = (at[5] - at[1]) / 4000; // the first steps pay for allocations
  probeTrainer.optimizer.dispose();
  probe.dispose();
  const fitted = Math.max(10, Math.min(steps, Math.floor((maxSec * 0.9) / perStep)));
  if (fitted < steps) log(`${perStep.toFixed(2)} s per step here: ${fitted} steps fit in ${maxSec} s`);
  steps = fitted;
  log(`training ${flags.model} (${(nParams / 1e6).toFixed(2)}M parameters, ${R}px) on generated shapes: ${steps} steps of ${batch}`);
  const trainer = new Trainer(model, {
    lr: num('lr'), warmup: num('warmup'), weightDecay: 0.1, seed, outDir: (flags.out as string | undefined) ?? null, gradClipNorm: 1,
  });
  const maxMs = maxSec * 1000;
  const t0 = performance.now();
  trainer.on('step', (m) => {
    if (performance.now() - t0 > maxMs) trainer.stop();
    if (!process.stderr.isTTY && (m.step % 100 === 0 || m.step === 1)) log(`step ${m.step}  loss ${m.loss.toFixed(3)}  ${m.samplesPerSec.toFixed(0)} samples/s`);
  });
  const r = await trainer.fit(data, { steps });
  const trainSeconds = (performance.now() - t0) / 1000;
  if (r.stoppedBy !== 'done') log(`stopped after ${r.steps} steps (time limit ${num('max-seconds')} s)`);
  const ho = await shapesZeroShot(model, tok, heldOut, heldOut.length);
  const sn = await shapesZeroShot(model, tok, seen, seen.length);
  log(`trained ${r.steps} steps in ${formatSeconds(trainSeconds)} (final loss ${r.losses.at(-1)?.toFixed(3)}, waiting for data ${(r.dataWaitFraction * 100).toFixed(1)}% of the time)`);
  log(`zero-shot: which colour and shape is the first object? (12 candidates, chance ${(ho.chance * 100).toFixed(1)}%)`);
  log(`  held-out colour-shape pairs (never trained on): ${(ho.accuracy * 100).toFixed(1)}%  [${ho.n} scenes]`);
  log(`  pairs seen in training:                         ${(sn.accuracy * 100).toFixed(1)}%  [${sn.n} scenes]`);
  if (flags.out) await saveModelWeights(model, `${flags.out}/model.safetensors`);
  trainer.optimizer.dispose();
  model.dispose();
  return { heldOut: ho.accuracy, seen: sn.accuracy, chance: ho.chance, steps: r.steps, trainSeconds, parameters: nParams };
}

export async function demoCommand(argv: string[]): Promise<void> {
  await runDemo(argv);
}
