// `tsclip probe`: a linear probe on frozen image features (the CLIP paper's protocol).
import { loadModel } from '../zeroshot/load.js';
import { labelledFeatures, splitValidation } from '../probe/data.js';
import { linearProbe } from '../probe/sweep.js';
import { ProgressBar } from '../retrieval/progress.js';
import { checkDevice, positiveInt, requireModel } from './classify.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  model: { type: 'string', help: 'checkpoint: .pt, .safetensors, an HF folder or a tsclip run folder' },
  data: { type: 'string', help: 'fashion-mnist[:DIR], shapes[:N], or a folder with one sub-folder per class (train/ + test/ inside, or split 75/25)' },
  'max-train': { type: 'number', default: 5000, help: 'training images used at most' },
  'max-test': { type: 'number', default: 2000, help: 'test images used at most' },
  val: { type: 'number', default: 0.2, help: 'fraction of the training images held out to choose the L2 strength' },
  seed: { type: 'number', default: 0, help: 'seed for sampling and splitting' },
  'batch-size': { type: 'number', default: 64, help: 'images per batch' },
  device: { type: 'string', default: 'auto', help: 'cpu, cuda or auto' },
  json: { type: 'boolean', help: 'print the result (and the sweep) as JSON' },
  quiet: { type: 'boolean', help: 'no progress bar' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip probe --model M --data SPEC [options]

Fits multinomial logistic regression (L-BFGS) on the model's frozen image embeddings. The L2
strength is chosen on a validation split by the CLIP paper's search over 1e-6..1e6 (refined to
8 steps per decade); the classifier is then refitted on train + validation and scored on test.

examples:
  tsclip probe --model runs/fashion --data fashion-mnist --max-train 10000
  tsclip probe --model ViT-B-32.pt --data photos/            (photos/cat/*.jpg, photos/dog/*.jpg, ...)
  tsclip probe --model runs/shapes --data shapes:4000 --json

${flagHelp(FLAGS)}`;

export async function probeCommand(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) return void console.log(HELP);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"\n\n${HELP}`);
  const modelPath = requireModel(flags, HELP);
  const data = flags.data as string | undefined;
  if (!data) throw new UsageError(`--data is required\n\n${HELP}`);
  const val = flags.val as number;
  if (!(val > 0 && val < 1)) throw new UsageError(`--val must be between 0 and 1, got ${val}`);
  const maxTrain = positiveInt(flags, 'max-train'), maxTest = positiveInt(flags, 'max-test'), batchSize = positiveInt(flags, 'batch-size');
  const seed = flags.seed as number;
  const device = checkDevice(flags.device);
  // A probe needs only the image tower: no tokenizer is loaded.
  const model = await loadModel(modelPath, device);
  try {
    let bar: ProgressBar | undefined;
    const feats = await labelledFeatures(model, data, {
      maxTrain, maxTest, seed, batchSize,
      onProgress: (done, total) => (bar ??= new ProgressBar(total, 'images embedded', { quiet: Boolean(flags.quiet) })).update(done),
    }).catch((e: Error) => {
      throw /expected fashion-mnist|no such|not found/.test(e.message) ? new UsageError(`--data ${data}: ${e.message}`) : e;
    });
    bar?.finish();
    const split = splitValidation(feats.train, val, seed);
    const r = linearProbe(split.train, split.val, feats.classes.length, feats.test);
    const result = {
      data, classes: feats.classes.length, train: split.train.n, val: split.val.n, test: feats.test.n,
      lambda: r.lambda, trainAccuracy: r.trainAccuracy, testAccuracy: r.testAccuracy, sweep: r.sweep,
    };
    if (flags.json) return void console.log(JSON.stringify(result, null, 2));
    const bestVal = r.sweep.find((p) => p.lambda === r.lambda)!.valAccuracy;
    console.log([
      `linear probe on ${data}: ${feats.classes.length} classes; ${split.train.n} train / ${split.val.n} validation / ${feats.test.n} test images`,
      `  L2 strength      ${r.lambda.toExponential(2)}  (validation accuracy ${(bestVal * 100).toFixed(1)}%, ${r.sweep.length} values tried)`,
      `  train accuracy   ${(r.trainAccuracy * 100).toFixed(1)}%`,
      `  test accuracy    ${((r.testAccuracy ?? 0) * 100).toFixed(1)}%   (chance ${(100 / feats.classes.length).toFixed(1)}%)`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}
