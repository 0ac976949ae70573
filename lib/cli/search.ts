// `tsclip search`: nearest neighbours in an index written by `tsclip embed`: text -> image (a
// query sentence), image -> image (a query picture, or an id already in the index).
import { existsSync } from 'node:fs';
import { EmbeddingIndex, type EntryKind, type SearchHit } from '../retrieval/store.js';
import { embedImages, embedTexts } from '../zeroshot/encode.js';
import { loadForInference } from '../zeroshot/load.js';
import { checkDevice, positiveInt } from './classify.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  index: { type: 'string', help: 'index written by tsclip embed (emb.safetensors, ids in emb.jsonl)' },
  query: { type: 'string', help: 'a sentence: finds images (text -> image)' },
  image: { type: 'string', help: 'an image file: finds similar images (image -> image)' },
  like: { type: 'string', help: 'an id in the index: finds entries similar to it (no model needed)' },
  top: { type: 'number', default: 10, help: 'results shown' },
  kind: { type: 'string', help: 'what to return: image or text (default image; text for --like on a text)' },
  model: { type: 'string', help: 'checkpoint for the query (default: the one the index was made with)' },
  tokenizer: { type: 'string', help: 'tokenizer file (default: found beside the checkpoint)' },
  device: { type: 'string', default: 'auto', help: 'cpu, cuda or auto' },
  json: { type: 'boolean', help: 'print JSON: [{rank, id, kind, score, text?}]' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip search --index emb.safetensors (--query TEXT | --image FILE | --like ID) [--top 10]

examples:
  tsclip search --index photos.safetensors --query "a dog on a beach" --top 10
  tsclip search --index photos.safetensors --image holiday/beach.jpg --top 5
  tsclip search --index emb.safetensors --like holiday/beach.jpg --kind text --json

${flagHelp(FLAGS)}`;

export async function searchCommand(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) return void console.log(HELP);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}" (put the query in --query "...")`);
  const indexFile = flags.index as string | undefined;
  if (!indexFile) throw new UsageError(`--index is required\n\n${HELP}`);
  if (!existsSync(indexFile)) throw new UsageError(`--index ${indexFile}: no such file`);
  const given = ['query', 'image', 'like'].filter((k) => flags[k] !== undefined);
  if (given.length !== 1) throw new UsageError(`give exactly one of --query, --image, --like\n\n${HELP}`);
  if (flags.kind !== undefined && flags.kind !== 'image' && flags.kind !== 'text') throw new UsageError(`--kind must be image or text, got "${flags.kind}"`);
  if (flags.image && !existsSync(flags.image as string)) throw new UsageError(`--image ${flags.image}: no such file`);
  const top = positiveInt(flags, 'top');
  const device = checkDevice(flags.device);
  const index = await EmbeddingIndex.read(indexFile);

  let query: Float32Array;
  let exclude: number | undefined;
  let kind = flags.kind as EntryKind | undefined;
  if (flags.like !== undefined) {
    const row = index.find(flags.like as string);
    if (row < 0) throw new UsageError(`--like ${flags.like}: no such id in ${indexFile}`);
    query = index.vector(row);
    exclude = row;
    kind ??= index.entries[row].kind;
  } else {
    const modelPath = (flags.model as string | undefined) ?? (index.info.model as string | undefined);
    if (!modelPath) throw new UsageError(`the index does not say which model made it; give --model`);
    if (!existsSync(modelPath)) throw new UsageError(`model ${modelPath}: no such file or directory${flags.model ? '' : ' (named by the index; give --model)'}`);
    const { model, tokenizer } = await loadForInference(modelPath, { device, tokenizer: flags.tokenizer as string | undefined });
    try {
      if (model.config.embedDim !== index.dim) throw new UsageError(`the model makes ${model.config.embedDim}-dim embeddings, the index holds ${index.dim}`);
      query = flags.query !== undefined ? embedTexts(model, tokenizer, [flags.query as string]) : await embedImages(model, [flags.image as string]);
    } finally {
      model.dispose();
    }
    kind ??= 'image';
  }
  const hits = index.search(query, top, { kind, exclude });
  if (flags.json) {
    console.log(JSON.stringify(hits.map((h, r) => ({ rank: r + 1, id: h.id, kind: h.kind, score: h.score, ...(h.text !== undefined ? { text: h.text } : {}) })), null, 2));
    return;
  }
  if (!hits.length) return void console.log(`no ${kind} entries in ${indexFile}`);
  console.log(hits.map((h: SearchHit, r) => `${String(r + 1).padStart(3)}. ${h.score.toFixed(4)}  ${h.kind === 'text' ? JSON.stringify(h.text ?? h.id) : h.id}`).join('\n'));
}
