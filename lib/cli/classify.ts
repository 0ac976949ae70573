// `tsclip classify`: zero-shot labels for image files, as a table or JSON.
import { existsSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { ZeroShotClassifier } from '../zeroshot/classifier.js';
import { DEFAULT_TEMPLATES, loadPromptFile, type ClassName } from '../zeroshot/templates.js';
import { loadForInference } from '../zeroshot/load.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  model: { type: 'string', help: 'checkpoint: .pt, .safetensors, an HF folder or a tsclip run folder' },
  labels: { type: 'string', help: 'comma-separated class names; "dog|puppy" gives one class two names' },
  prompts: { type: 'string', help: 'JSON file of {classes, templates} (FILE#task picks a task of a multi-task file)' },
  template: { type: 'string', help: 'one template with {} for the label, instead of the default ensemble' },
  top: { type: 'number', default: 5, help: 'classes shown per image' },
  json: { type: 'boolean', help: 'print JSON: [{image, predictions: [{label, score}]}]' },
  tokenizer: { type: 'string', help: 'tokenizer file (default: found beside the checkpoint)' },
  device: { type: 'string', default: 'auto', help: 'cpu, cuda or auto' },
  'batch-size': { type: 'number', default: 32, help: 'images per batch' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip classify --model M (--labels "a,b,c" | --prompts FILE) [options] IMAGE...

Zero-shot classification: each label is embedded through an ensemble of prompt templates
("a photo of a {}." and others) and every image is scored against the labels.

examples:
  tsclip classify --model ViT-B-32.pt --labels "cat,dog,bird" cat.jpg dog.png
  tsclip classify --model hf/clip-vit-base-patch32 --labels "dog|puppy,cat|kitten" --top 1 photos/
  tsclip classify --model runs/shapes --labels "red circle,blue square" --template "a {}" scene.png --json
  tsclip classify --model ViT-B-32.pt --prompts zeroshot_prompts.json#cifar10 plane.jpg

${flagHelp(FLAGS)}`;

const IMAGE_EXT = /\.(jpe?g|png|webp|gif)$/i;

/** Image paths from the positionals: files as given, folders expanded to the images inside (sorted). */
export function expandImages(args: string[]): string[] {
  const out: string[] = [];
  for (const a of args) {
    if (!existsSync(a)) throw new UsageError(`image ${a}: no such file or directory`);
    if (statSync(a).isDirectory()) {
      const found = (readdirSync(a, { recursive: true }) as string[]).filter((f) => IMAGE_EXT.test(f)).sort().map((f) => path.join(a, f));
      if (!found.length) throw new UsageError(`${a}: no images (.jpg, .png, .webp, .gif) in this folder`);
      out.push(...found);
    } else {
      out.push(a);
    }
  }
  return out;
}

/** "cat,dog|puppy" -> ['cat', ['dog', 'puppy']]. */
export function parseLabels(s: string): ClassName[] {
  const classes = s.split(',').map((c) => c.trim()).filter(Boolean).map((c) => {
    const names = c.split('|').map((n) => n.trim()).filter(Boolean);
    return names.length === 1 ? names[0] : names;
  });
  if (!classes.length) throw new UsageError(`--labels "${s}" names no class`);
  return classes;
}

export function checkDevice(d: unknown): 'cpu' | 'cuda' | 'auto' {
  if (d !== 'cpu' && d !== 'cuda' && d !== 'auto') throw new UsageError(`--device must be cpu, cuda or auto, got "${String(d)}"`);
  return d;
}

export function positiveInt(flags: Record<string, unknown>, k: string): number {
  const v = flags[k] as number;
  if (!Number.isInteger(v) || v < 1) throw new UsageError(`--${k} must be a positive integer, got ${v}`);
  return v;
}

export function requireModel(flags: Record<string, unknown>, help: string): string {
  const m = flags.model as string | undefined;
  if (!m) throw new UsageError(`--model is required\n\n${help}`);
  if (!existsSync(m)) throw new UsageError(`--model ${m}: no such file or directory`);
  return m;
}

function bar(score: number, width = 20): string {
  return '█'.repeat(Math.round(score * width));
}

export async function classifyCommand(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) return void console.log(HELP);
  const modelPath = requireModel(flags, HELP);
  if (!flags.labels && !flags.prompts) throw new UsageError(`give --labels "cat,dog,..." or --prompts FILE\n\n${HELP}`);
  if (!positionals.length) throw new UsageError(`no images given\n\n${HELP}`);
  const top = positiveInt(flags, 'top'), batchSize = positiveInt(flags, 'batch-size');
  const device = checkDevice(flags.device);
  const images = expandImages(positionals);
  if (flags.tokenizer && !existsSync(flags.tokenizer as string)) throw new UsageError(`--tokenizer ${flags.tokenizer}: no such file or directory`);

  let classes: ClassName[];
  let templates: readonly string[] = DEFAULT_TEMPLATES;
  if (flags.prompts) {
    const set = await loadPromptFile(flags.prompts as string);
    templates = set.templates;
    classes = flags.labels ? parseLabels(flags.labels as string) : set.classes;
  } else {
    classes = parseLabels(flags.labels as string);
  }
  if (flags.template) {
    const t = flags.template as string;
    if (!t.includes('{}')) throw new UsageError(`--template "${t}" has no {} for the label`);
    templates = [t];
  }

  const { model, tokenizer } = await loadForInference(modelPath, { device, tokenizer: flags.tokenizer as string | undefined });
  try {
    const zs = ZeroShotClassifier.create(model, tokenizer, classes, templates);
    const results = await zs.classify(images, { topK: Math.min(top, zs.numClasses), batchSize });
    if (flags.json) {
      console.log(JSON.stringify(images.map((image, i) => ({ image, predictions: results[i] })), null, 2));
      return;
    }
    const w = Math.max(...zs.labels.map((l) => l.length));
    const lines: string[] = [];
    images.forEach((image, i) => {
      lines.push(image);
      results[i].forEach((p, r) => lines.push(`  ${String(r + 1).padStart(2)}. ${p.label.padEnd(w)}  ${(p.score * 100).toFixed(1).padStart(5)}%  ${bar(p.score)}`));
    });
    console.log(lines.join('\n'));
  } finally {
    model.dispose();
  }
}
