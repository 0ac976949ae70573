// `tsclip embed`: image and text embeddings into an index (safetensors + JSONL ids), batched and
// resumable (rows computed so far live in OUT.partial.jsonl until the index is complete).
import { existsSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { preprocess } from '../image/preprocess.js';
import { embedPixels, embedTexts, imageTransformOf } from '../zeroshot/encode.js';
import { loadForInference } from '../zeroshot/load.js';
import { EmbeddingIndex, idsPathFor, type IndexEntry } from '../retrieval/store.js';
import { listImages, listTexts, type ImageItem, type TextItem } from '../retrieval/inputs.js';
import { PartialFile, partialPathFor } from '../retrieval/partial.js';
import { ProgressBar } from '../retrieval/progress.js';
import { checkDevice, positiveInt, requireModel } from './classify.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  model: { type: 'string', help: 'checkpoint: .pt, .safetensors, an HF folder or a tsclip run folder' },
  images: { type: 'string', help: 'folder of images (searched recursively) or a list file of paths' },
  texts: { type: 'string', help: 'text file, one caption or query per line' },
  out: { type: 'string', help: 'index to write: OUT.safetensors (vectors) + OUT.jsonl (ids)' },
  'batch-size': { type: 'number', default: 32, help: 'images (or 8x as many texts) per batch' },
  tokenizer: { type: 'string', help: 'tokenizer file (default: found beside the checkpoint)' },
  device: { type: 'string', default: 'auto', help: 'cpu, cuda or auto' },
  restart: { type: 'boolean', help: 'discard an unfinished run instead of resuming it' },
  force: { type: 'boolean', help: 'overwrite an existing index' },
  quiet: { type: 'boolean', help: 'no progress bar' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip embed --model M [--images DIR_OR_LIST] [--texts FILE] --out emb.safetensors [options]

Embeds images and texts (unit-length vectors) into an index for \`tsclip search\`. Interrupted runs
resume where they stopped when started again with the same arguments.

examples:
  tsclip embed --model ViT-B-32.pt --images photos/ --out photos.safetensors
  tsclip embed --model hf/clip-vit-base-patch32 --images list.txt --texts captions.txt --out emb.safetensors
  tsclip embed --model runs/shapes --images renders/ --out shapes.safetensors --batch-size 128 --device cuda

${flagHelp(FLAGS)}`;

export async function embedCommand(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) return void console.log(HELP);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}" (give images with --images)\n\n${HELP}`);
  const modelPath = requireModel(flags, HELP);
  if (!flags.images && !flags.texts) throw new UsageError(`give --images and/or --texts\n\n${HELP}`);
  const out = flags.out as string | undefined;
  if (!out) throw new UsageError(`--out is required\n\n${HELP}`);
  if (!out.endsWith('.safetensors')) throw new UsageError(`--out ${out}: the index file must end in .safetensors`);
  if (!existsSync(path.dirname(path.resolve(out)))) throw new UsageError(`--out ${out}: folder ${path.dirname(out)} does not exist`);
  if (existsSync(out) && !flags.force) throw new UsageError(`--out ${out} already exists; pass --force to overwrite it`);
  const batchSize = positiveInt(flags, 'batch-size');
  const device = checkDevice(flags.device);
  let images: ImageItem[] = [], texts: TextItem[] = [];
  try {
    if (flags.images) images = listImages(flags.images as string);
    if (flags.texts) texts = listTexts(flags.texts as string);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }

  const { model, tokenizer } = await loadForInference(modelPath, { device, tokenizer: flags.tokenizer as string | undefined });
  try {
    const D = model.config.embedDim;
    const partialFile = partialPathFor(out);
    if (flags.restart) rmSync(partialFile, { force: true });
    const partial = PartialFile.open(partialFile, { model: path.resolve(modelPath), dim: D });
    const todoImages = images.filter((it) => !partial.has('image', it.id));
    const todoTexts = texts.filter((it) => !partial.has('text', it.id));
    const done0 = images.length + texts.length - todoImages.length - todoTexts.length;
    if (done0 && !flags.quiet) process.stderr.write(`resuming: ${done0} of ${images.length + texts.length} already embedded\n`);
    const bar = new ProgressBar(images.length + texts.length, 'items', { quiet: Boolean(flags.quiet), done: done0 });
    let done = done0;
    const tf = imageTransformOf(model);
    for (let s = 0; s < todoImages.length; s += batchSize) {
      const chunk = todoImages.slice(s, s + batchSize);
      const px = await preprocess(chunk.map((c) => c.path), tf);
      let emb: Float32Array;
      try {
        emb = embedPixels(model, px, batchSize);
      } finally {
        px.dispose();
      }
      partial.append(chunk.map((c, i) => ({ id: c.id, kind: 'image', vector: emb.slice(i * D, (i + 1) * D) })));
      bar.update((done += chunk.length));
    }
    const textBatch = batchSize * 8;
    for (let s = 0; s < todoTexts.length; s += textBatch) {
      const chunk = todoTexts.slice(s, s + textBatch);
      const emb = embedTexts(model, tokenizer, chunk.map((c) => c.text));
      partial.append(chunk.map((c, i) => ({ id: c.id, kind: 'text', text: c.text, vector: emb.slice(i * D, (i + 1) * D) })));
      bar.update((done += chunk.length));
    }
    bar.finish();
    // The index keeps input order (images, then texts), whatever order the runs computed them in.
    const entries: IndexEntry[] = [];
    const vectors = new Float32Array((images.length + texts.length) * D);
    const put = (kind: 'image' | 'text', id: string, text?: string) => {
      const row = partial.rows.get(PartialFile.key(kind, id))!;
      vectors.set(row.vector, entries.length * D);
      entries.push(text === undefined ? { id, kind } : { id, kind, text });
    };
    for (const it of images) put('image', it.id);
    for (const it of texts) put('text', it.id, it.text);
    const info = { model: path.resolve(modelPath), imageSize: tf.size, dim: D, tokenizer: tokenizer.source };
    await new EmbeddingIndex(entries, vectors, D, info).write(out);
    partial.remove();
    console.log(`wrote ${out} (${images.length} images, ${texts.length} texts, ${D} dims) and ${idsPathFor(out)}`);
  } finally {
    model.dispose();
  }
}
