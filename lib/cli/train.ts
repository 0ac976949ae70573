// `tsclip train`: train from scratch (a named configuration) or fine-tune (a checkpoint) with
// open_clip-like flags; checkpoints, metrics.jsonl and the loss plot go to --out.
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { createCLIP, type CLIP } from '../models/clip.js';
import { CONFIGS, CLIP_MEAN, CLIP_STD, resolveConfig } from '../models/config.js';
import { loadTokenizer } from '../tokenizer/index.js';
import type { ClipTokenizer } from '../tokenizer/tokenizer.js';
import { dataKind, openData, openDataset } from '../data/spec.js';
import { defaultWorkerThreads } from '../data/pool.js';
import { ShapesDataset, shapesTokenizer } from '../data/shapes.js';
import { Trainer, NonFiniteError } from '../train/trainer.js';
import { latestCheckpoint, loadTrainedCLIP, readTrainState, saveModelWeights } from '../train/checkpoint.js';
import { snapshotWeights, wiseFt } from '../train/lock.js';
import { shapesZeroShot } from '../train/shapes-eval.js';
import { retrieval } from '../train/evaluate.js';
import { formatSeconds } from '../train/progress.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';
import { PRECISIONS, type Precision } from '../amp.js';

const FLAGS: FlagSpec = {
  data: { type: 'string', help: 'shapes[:N] | fashion-mnist[:DIR] | FILE.csv/.tsv | SHARDS.tar ({000..009}) | DIR of images + .txt' },
  model: { type: 'string', default: 'tiny-vit', help: `configuration (${Object.keys(CONFIGS).filter((k) => /tiny|small/.test(k)).join(', ')}, or any named CLIP) or a checkpoint to fine-tune` },
  out: { type: 'string', help: 'run directory (checkpoints/, metrics.jsonl, model.safetensors)' },
  tokenizer: { type: 'string', help: 'merges / tokenizer.json (default: learned from the captions for shapes, else the CLIP vocabulary)' },
  'batch-size': { type: 'number', default: 64, help: 'examples per micro-batch' },
  lr: { type: 'number', default: 5e-4, help: 'peak learning rate' },
  wd: { type: 'number', default: 0.2, help: 'weight decay (not on biases, gains, norms, temperature)' },
  beta1: { type: 'number', default: 0.9, help: 'AdamW beta1' },
  beta2: { type: 'number', default: 0.98, help: 'AdamW beta2' },
  eps: { type: 'number', default: 1e-6, help: 'AdamW epsilon' },
  warmup: { type: 'number', default: 100, help: 'linear warm-up steps' },
  schedule: { type: 'string', default: 'cosine', help: 'cosine or constant' },
  epochs: { type: 'number', help: 'epochs (indexed data)' },
  steps: { type: 'number', help: 'optimizer steps (instead of epochs)' },
  precision: { type: 'string', default: 'fp32', help: 'fp32, or bf16 mixed precision (bf16 matmul inputs, fp32 weights and accumulation; faster on CUDA only)' },
  'accum-freq': { type: 'number', default: 1, help: 'micro-batches per step (same gradient as one batch accum-freq times larger)' },
  'grad-clip-norm': { type: 'number', help: 'clip the global gradient norm' },
  resume: { type: 'string', help: 'checkpoint directory, or "latest" for the newest under --out' },
  seed: { type: 'number', default: 0, help: 'seed for weights and data order' },
  workers: { type: 'number', default: defaultWorkerThreads(), help: 'threads decoding and preprocessing images ahead of the step (0: all on the main thread)' },
  'lock-image': { type: 'boolean', help: 'freeze the image tower (BatchNorm statistics too)' },
  'lock-text': { type: 'boolean', help: 'freeze the text tower' },
  'grad-checkpointing': { type: 'boolean', help: 'recompute each transformer block\'s activations in the backward pass: less memory for big models, about one more forward per step' },
  'wise-ft': { type: 'number', help: 'after fine-tuning, also save (1-ALPHA)*original + ALPHA*fine-tuned' },
  'eval-every': { type: 'number', default: 0, help: 'evaluate every N steps and at the end (zero-shot on shapes; retrieval on --val-data)' },
  'val-data': { type: 'string', help: 'indexed data spec for retrieval evaluation (recall@1/@5 both ways)' },
  'val-size': { type: 'number', default: 500, help: 'examples of --val-data evaluated' },
  'save-every': { type: 'number', default: 500, help: 'checkpoint every N steps (and at the end)' },
  keep: { type: 'number', default: 3, help: 'checkpoints kept' },
  'image-size': { type: 'number', help: 'image side (default: the model\'s)' },
  device: { type: 'string', default: 'cpu', help: 'cpu or cuda' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip train --data SPEC --model CONFIG_OR_CHECKPOINT --out runs/NAME [options]

examples:
  tsclip train --data shapes --model tiny-vit --out runs/shapes --steps 300 --batch-size 128 --lr 2e-3
  tsclip train --data pairs.csv --model ViT-B-32.pt --out runs/ft --lock-image --wise-ft 0.5 --epochs 2
  tsclip train --data shapes --out runs/shapes --steps 300 --resume latest

${flagHelp(FLAGS)}`;

async function pickTokenizer(flags: Record<string, unknown>, kind: string): Promise<ClipTokenizer> {
  if (flags.tokenizer) return loadTokenizer(flags.tokenizer as string);
  if (kind === 'shapes') return shapesTokenizer();
  return loadTokenizer();
}

export async function trainCommand(argv: string[]): Promise<void> {
  const { flags } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(HELP);
    return;
  }
  const need = (k: string) => {
    if (flags[k] === undefined) throw new UsageError(`--${k} is required\n\n${HELP}`);
    return flags[k] as string;
  };
  const dataSpec = need('data');
  const out = need('out');
  if (!PRECISIONS.includes(flags.precision as Precision)) {
    throw new UsageError(`--precision ${flags.precision}: expected ${PRECISIONS.join(' or ')}`);
  }
  if (flags.epochs === undefined && flags.steps === undefined) throw new UsageError('give --epochs or --steps');
  const int = (k: string, min: number) => {
    const v = flags[k] as number;
    if (!Number.isInteger(v) || v < min) throw new UsageError(`--${k} must be an integer >= ${min}, got ${v}`);
    return v;
  };
  const batchSize = int('batch-size', 1), accumFreq = int('accum-freq', 1), seed = int('seed', 0);
  const { kind } = (() => {
    try {
      return dataKind(dataSpec);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  })();
  const tok = await pickTokenizer(flags, kind);
  // The run folder carries its tokenizer, so classify/eval/embed find it beside the checkpoints.
  if (flags.tokenizer) {
    const src = flags.tokenizer as string;
    const name = src.endsWith('.json') ? 'tokenizer.json' : src.endsWith('.gz') ? 'merges.txt.gz' : null;
    if (name && statSync(src).isFile()) {
      mkdirSync(out, { recursive: true });
      copyFileSync(src, path.join(out, name));
    }
  }
  const device = flags.device as 'cpu' | 'cuda';

  // The model: a named configuration from scratch, a checkpoint to fine-tune, or (resume) the run's own.
  let resumeFrom: string | undefined;
  if (flags.resume) {
    resumeFrom = flags.resume === 'latest' ? (await latestCheckpoint(path.join(out, 'checkpoints'))) ?? undefined : (flags.resume as string);
    if (!resumeFrom) throw new UsageError(`--resume latest: no checkpoint under ${path.join(out, 'checkpoints')}`);
  }
  let model: CLIP;
  let original: Map<string, Float32Array> | null = null;
  const modelArg = flags.model as string;
  if (resumeFrom) {
    const st = await readTrainState(resumeFrom);
    model = createCLIP(st.config, { seed, device });
  } else if (existsSync(modelArg)) {
    model = await loadTrainedCLIP(modelArg, { device });
    if (flags['wise-ft'] !== undefined) original = snapshotWeights(model);
  } else {
    let cfg;
    try {
      cfg = resolveConfig(modelArg);
    } catch (e) {
      throw new UsageError(`--model ${modelArg}: not a file, and ${(e as Error).message}`);
    }
    // From scratch the text tower is sized to the tokenizer (the end token must be its largest id).
    cfg.text.vocabSize = tok.vocabSize;
    if (flags['image-size']) cfg.vision.imageSize = flags['image-size'] as number;
    model = createCLIP(cfg, { seed, device });
  }
  if (flags['wise-ft'] !== undefined && !original && !resumeFrom) throw new UsageError('--wise-ft needs --model to be a checkpoint to fine-tune');
  if (tok.vocabSize > model.config.text.vocabSize) {
    throw new UsageError(`the tokenizer has ${tok.vocabSize} ids, the model's text tower ${model.config.text.vocabSize}`);
  }
  const R = model.config.vision.imageSize, L = model.config.text.contextLength;
  const mean = model.config.mean ?? (kind === 'shapes' ? [0.5, 0.5, 0.5] : CLIP_MEAN);
  const std = model.config.std ?? (kind === 'shapes' ? [0.25, 0.25, 0.25] : CLIP_STD);
  const data = openData(dataSpec, {
    imageSize: R, mean, std, contextLength: L, batchSize, seed, workerThreads: flags.workers as number,
    tokenize: (c) => tok.tokenizeToArray(c, { contextLength: L, truncate: true }),
  });
  const val = flags['val-data'] ? openDataset(flags['val-data'] as string, { imageSize: R, mean, std, seed: seed + 100 }) : null;
  const heldOut = kind === 'shapes' ? new ShapesDataset({ size: 300, imageSize: R, seed: seed + 2, heldOut: true }) : null;
  const trainer = new Trainer(model, {
    lr: flags.lr as number, weightDecay: flags.wd as number, betas: [flags.beta1 as number, flags.beta2 as number], eps: flags.eps as number,
    warmup: flags.warmup as number, schedule: flags.schedule as 'cosine' | 'constant', accumFreq, seed,
    gradClipNorm: (flags['grad-clip-norm'] as number | undefined) ?? null, outDir: out,
    checkpointEvery: flags['save-every'] as number, keepCheckpoints: flags.keep as number,
    lockImage: Boolean(flags['lock-image']), lockText: Boolean(flags['lock-text']), gradCheckpointing: Boolean(flags['grad-checkpointing']),
    evalEvery: flags['eval-every'] as number, precision: flags.precision as Precision,
    evaluate: heldOut || val ? async (m) => {
      const metrics: Record<string, number> = {};
      if (heldOut) {
        const r = await shapesZeroShot(m, tok, heldOut, heldOut.length);
        Object.assign(metrics, { heldOutZeroShot: r.accuracy, chance: r.chance });
      }
      if (val) {
        const r = await retrieval(m, val, flags['val-size'] as number, (c) => tok.tokenizeToArray(c, { contextLength: L, truncate: true }), L);
        Object.assign(metrics, { imageToTextR1: r.imageToTextR1, imageToTextR5: r.imageToTextR5, textToImageR1: r.textToImageR1, textToImageR5: r.textToImageR5 });
      }
      return metrics;
    } : undefined,
  });
  trainer.on('eval', ({ step, metrics }) => console.error(`\nstep ${step}: ${Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join('  ')}`));
  const nParams = model.parameters().reduce((a, p) => a + p.size, 0);
  const gc = trainer.gradCheckpointing;
  if (gc) console.error(`gradient checkpointing: ${gc.blocks} transformer blocks${gc.notCovered.length ? ` (not covered: ${gc.notCovered.join(', ')})` : ''}`);
  console.error(`training ${(nParams / 1e6).toFixed(2)}M parameters (${trainer.paramNames.length} tensors trainable) on ${dataSpec}, batch ${batchSize} x ${accumFreq}`);
  let r;
  try {
    r = await trainer.fit(data, {
      steps: flags.steps as number | undefined, epochs: flags.epochs as number | undefined, resume: resumeFrom,
    });
  } catch (e) {
    if (e instanceof NonFiniteError) throw new Error(e.message);
    throw e;
  }
  await saveModelWeights(model, path.join(out, 'model.safetensors'));
  if (original) {
    const alpha = flags['wise-ft'] as number;
    wiseFt(model, original, alpha);
    await saveModelWeights(model, path.join(out, `model-wise-ft-${alpha}.safetensors`));
    console.error(`wrote ${path.join(out, `model-wise-ft-${alpha}.safetensors`)}`);
  }
  const st = data.stats();
  console.error(`${r.stoppedBy === 'signal' ? 'interrupted' : 'done'}: ${r.steps} steps in ${formatSeconds(r.seconds)}, last loss ${r.losses.at(-1)?.toFixed(4) ?? '-'}; ` +
    `waiting for data ${(r.dataWaitFraction * 100).toFixed(1)}% of the time; ${st.skipped} bad examples skipped` +
    `${st.skipped ? ` (${Object.entries(st.skippedReasons).map(([k, v]) => `${v} x ${k}`).join('; ')})` : ''}; checkpoint ${r.lastCheckpoint}`);
  trainer.optimizer.dispose();
  model.dispose();
  if (r.stoppedBy === 'signal') process.exitCode = 130;
}
