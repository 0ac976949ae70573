// `tsclip eval`: zero-shot accuracy, a linear probe and retrieval recall where the task has
// captions, in one report.
import { existsSync } from 'node:fs';
import { ZeroShotClassifier } from '../zeroshot/classifier.js';
import { DEFAULT_TEMPLATES } from '../zeroshot/templates.js';
import { embedTexts } from '../zeroshot/encode.js';
import { findTokenizer, loadForInference } from '../zeroshot/load.js';
import { FASHION_CLASSES, FASHION_TEMPLATES } from '../data/fashion-mnist.js';
import { ShapesDataset, shapesTokenizer } from '../data/shapes.js';
import { shapesZeroShot } from '../train/shapes-eval.js';
import { labelledFeatures, readableClassName, splitValidation } from '../probe/data.js';
import { linearProbe } from '../probe/sweep.js';
import { retrievalRecall, type RetrievalRecall } from '../retrieval/metrics.js';
import { ProgressBar } from '../retrieval/progress.js';
import { checkDevice, positiveInt, requireModel } from './classify.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  model: { type: 'string', help: 'checkpoint: .pt, .safetensors, an HF folder or a tsclip run folder' },
  task: { type: 'string', help: 'fashion-mnist[:DIR], shapes, or a folder with one sub-folder of images per class' },
  n: { type: 'number', default: 1000, help: 'test images (the probe trains on up to 2n)' },
  tokenizer: { type: 'string', help: 'tokenizer file (default: found beside the checkpoint)' },
  'no-probe': { type: 'boolean', help: 'skip the linear probe' },
  seed: { type: 'number', default: 0, help: 'seed for sampling' },
  device: { type: 'string', default: 'auto', help: 'cpu, cuda or auto' },
  json: { type: 'boolean', help: 'print the report as JSON' },
  quiet: { type: 'boolean', help: 'no progress bar' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip eval --model M --task fashion-mnist|shapes|DIR [options]

Reports zero-shot accuracy (class names through prompt templates), linear-probe accuracy on frozen
image features, and image<->text retrieval recall@1/5/10 where the task has captions (shapes; a
folder whose images have .txt captions beside them).

examples:
  tsclip eval --model runs/shapes --task shapes
  tsclip eval --model runs/fashion --task fashion-mnist --n 2000
  tsclip eval --model ViT-B-32.pt --task photos/ --json

${flagHelp(FLAGS)}`;

export interface EvalReport {
  task: string;
  classes: number;
  zeroShot?: { accuracy: number; chance: number; n: number; note?: string };
  probe?: { accuracy: number; lambda: number; train: number; test: number };
  retrieval?: RetrievalRecall;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

export async function evalCommand(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) return void console.log(HELP);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"\n\n${HELP}`);
  const modelPath = requireModel(flags, HELP);
  const task = flags.task as string | undefined;
  if (!task) throw new UsageError(`--task is required\n\n${HELP}`);
  const isShapes = task === 'shapes', isFashion = /^fashion-mnist(:|$)/.test(task);
  if (!isShapes && !isFashion && !existsSync(task)) throw new UsageError(`--task ${task}: not fashion-mnist or shapes, and no such folder`);
  if (flags.tokenizer && !existsSync(flags.tokenizer as string)) throw new UsageError(`--tokenizer ${flags.tokenizer}: no such file`);
  const n = positiveInt(flags, 'n'), seed = flags.seed as number;
  const device = checkDevice(flags.device);
  // A shapes run folder has no tokenizer file: its vocabulary is learned from the generator's captions.
  const tokenizer = (flags.tokenizer as string | undefined) ?? (isShapes && !findTokenizer(modelPath) ? shapesTokenizer() : undefined);
  const { model, tokenizer: tok } = await loadForInference(modelPath, { device, tokenizer });
  const quiet = Boolean(flags.quiet);
  try {
    let bar: ProgressBar | undefined;
    const feats = await labelledFeatures(model, isShapes ? `shapes:${4 * n}` : task, {
      maxTrain: 2 * n, maxTest: n, seed,
      onProgress: (done, total) => (bar ??= new ProgressBar(total, 'images embedded', { quiet })).update(done),
    }).catch((e: Error) => {
      throw /expected|no such|not found|sub-folder/.test(e.message) ? new UsageError(`--task ${task}: ${e.message}`) : e;
    });
    bar?.finish();
    const report: EvalReport = { task, classes: feats.classes.length };

    if (isShapes) {
      // Compositional zero-shot: the colour and shape of the first object in scenes of unseen pairs.
      const R = model.config.vision.imageSize;
      const heldOut = new ShapesDataset({ size: n, imageSize: R, seed: seed + 2, heldOut: true, ...(model.config.mean ? { mean: model.config.mean, std: model.config.std } : {}) });
      const z = await shapesZeroShot(model, tok, heldOut, n);
      report.zeroShot = { ...z, note: 'first object of scenes built from held-out colour-shape pairs, 12 candidate captions' };
    } else {
      const classes = isFashion ? FASHION_CLASSES : feats.classes.map(readableClassName);
      const templates = isFashion ? FASHION_TEMPLATES : DEFAULT_TEMPLATES;
      const zs = ZeroShotClassifier.create(model, tok, classes, templates);
      const pred = zs.predict(feats.test.x, feats.test.n);
      let hits = 0;
      for (let i = 0; i < feats.test.n; i++) if (pred[i] === feats.test.y[i]) hits++;
      report.zeroShot = { accuracy: hits / feats.test.n, chance: 1 / classes.length, n: feats.test.n };
    }
    if (feats.testCaptions) {
      // Each test image against every test caption (its own is the match), both ways.
      const temb = embedTexts(model, tok, feats.testCaptions);
      report.retrieval = retrievalRecall(feats.test.x, temb, feats.testCaptions.map((_, i) => i), model.config.embedDim);
    }
    if (!flags['no-probe']) {
      const split = splitValidation(feats.train, 0.2, seed);
      const r = linearProbe(split.train, split.val, feats.classes.length, feats.test);
      report.probe = { accuracy: r.testAccuracy!, lambda: r.lambda, train: split.train.n + split.val.n, test: feats.test.n };
    }
    if (flags.json) return void console.log(JSON.stringify(report, null, 2));
    const lines = [`eval ${task} with ${modelPath}`];
    if (report.zeroShot) lines.push(`  zero-shot accuracy     ${pct(report.zeroShot.accuracy).padStart(6)}   (chance ${pct(report.zeroShot.chance)}, ${report.zeroShot.n} images${report.zeroShot.note ? `; ${report.zeroShot.note}` : ''})`);
    if (report.probe) lines.push(`  linear probe accuracy  ${pct(report.probe.accuracy).padStart(6)}   (L2 ${report.probe.lambda.toExponential(1)}, trained on ${report.probe.train}, tested on ${report.probe.test})`);
    if (report.retrieval) {
      const r = report.retrieval;
      lines.push(`  image -> text recall   R@1 ${pct(r.imageToText[1])}  R@5 ${pct(r.imageToText[5])}  R@10 ${pct(r.imageToText[10])}   (${r.images} images)`);
      lines.push(`  text -> image recall   R@1 ${pct(r.textToImage[1])}  R@5 ${pct(r.textToImage[5])}  R@10 ${pct(r.textToImage[10])}   (${r.texts} captions)`);
    }
    console.log(lines.join('\n'));
  } finally {
    model.dispose();
  }
}
