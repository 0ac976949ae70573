// Reading vocabularies: CLIP's merges file (bpe_simple_vocab_16e6.txt[.gz], and files written by
// writeMerges), Hugging Face vocab.json + merges.txt, and Hugging Face tokenizer.json.
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BYTE_ORDER, BYTE_TO_CHAR } from './bytes.js';
import { END_OF_WORD, EOT_TEXT, SOT_TEXT, type Vocabulary } from './bpe.js';

/** Merges CLIP uses from its file: 49152 - 256 - 2 (the file holds more). */
export const CLIP_MERGES = 49152 - 256 - 2;
export const CLIP_BPE_FILE = 'bpe_simple_vocab_16e6.txt.gz';

export interface MergesOptions {
  /** How many merges to use; default: the count the header names, else min(CLIP_MERGES, all). */
  numMerges?: number;
}

/** Bytes of a file, gunzipped when they start with the gzip magic number. */
export async function readMaybeGzip(path: string): Promise<string> {
  const raw = await readFile(path);
  const gz = raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b;
  let bytes: Buffer = raw;
  if (gz) {
    try {
      bytes = gunzipSync(raw);
    } catch (e) {
      throw new Error(`${path}: not a valid gzip file (${(e as Error).message})`);
    }
  }
  return bytes.toString('utf8');
}

function parseMergeLine(line: string, where: string): [string, string] {
  const parts = line.trim().split(/ +/);
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new Error(`${where}: expected a merge "first second", found "${line}"`);
  }
  return [parts[0], parts[1]];
}

/** The CLIP merges format: header line, then one merge per line; vocab built from the merges. */
export function parseClipMerges(text: string, source: string, opts: MergesOptions = {}): Vocabulary {
  const lines = text.split('\n');
  const header = lines[0] ?? '';
  let end = lines.length;
  while (end > 1 && lines[end - 1].trim() === '') end--;
  const available = end - 1;
  // Files written by writeMerges name their vocabulary size (512 byte tokens + merges + 2) in the header.
  const named = /vocab_size=(\d+)/.exec(header);
  const numMerges = opts.numMerges ?? (named ? Number(named[1]) - 514 : Math.min(CLIP_MERGES, available));
  if (!Number.isInteger(numMerges) || numMerges < 0) {
    throw new Error(`${source}: invalid number of merges ${numMerges}`);
  }
  if (numMerges > available) {
    throw new Error(`${source}: ${numMerges} merges wanted, the file has ${available}`);
  }
  const merges: Array<[string, string]> = [];
  for (let i = 1; i <= numMerges; i++) merges.push(parseMergeLine(lines[i], `${source}:${i + 1}`));
  const bytes = BYTE_ORDER.map((b) => BYTE_TO_CHAR[b]);
  const tokens: string[] = [...bytes, ...bytes.map((c) => c + END_OF_WORD)];
  for (const [a, b] of merges) tokens.push(a + b);
  tokens.push(SOT_TEXT, EOT_TEXT);
  return { tokens, merges, source };
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: invalid JSON (${(e as Error).message})`);
  }
}

function vocabFromObject(obj: unknown, source: string): Array<string | undefined> {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new Error(`${source}: vocabulary must be an object of token -> id`);
  }
  const tokens: Array<string | undefined> = [];
  for (const [token, id] of Object.entries(obj as Record<string, unknown>)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new Error(`${source}: token "${token}" has id ${JSON.stringify(id)}, expected an integer >= 0`);
    }
    if (tokens[id] !== undefined) throw new Error(`${source}: id ${id} used by "${tokens[id]}" and "${token}"`);
    tokens[id] = token;
  }
  return tokens;
}

/** Hugging Face vocab.json text + merges.txt text. */
export function parseHfVocabMerges(vocabJson: string, mergesTxt: string, source: string, mergesSource = source): Vocabulary {
  const tokens = vocabFromObject(parseJson(vocabJson, source), source);
  const merges: Array<[string, string]> = [];
  mergesTxt.split('\n').forEach((line, i) => {
    if (line.trim() === '' || (i === 0 && line.startsWith('#version'))) return;
    merges.push(parseMergeLine(line, `${mergesSource}:${i + 1}`));
  });
  return { tokens, merges, source };
}

/** Hugging Face tokenizer.json, as text or parsed (model.type BPE, '</w>' end-of-word suffix). */
export function parseHfTokenizerJson(json: string | object, source: string): Vocabulary {
  const doc = (typeof json === 'string' ? parseJson(json, source) : json) as {
    model?: { type?: string; vocab?: unknown; merges?: unknown; end_of_word_suffix?: string | null };
    added_tokens?: Array<{ id: number; content: string }>;
  };
  const model = doc.model;
  if (!model || typeof model !== 'object') throw new Error(`${source}: no "model" section`);
  if (model.type !== undefined && model.type !== 'BPE') {
    throw new Error(`${source}: model.type is "${model.type}", expected "BPE"`);
  }
  if (model.end_of_word_suffix != null && model.end_of_word_suffix !== END_OF_WORD) {
    throw new Error(`${source}: model.end_of_word_suffix is "${model.end_of_word_suffix}", expected "${END_OF_WORD}"`);
  }
  const tokens = vocabFromObject(model.vocab, `${source} model.vocab`);
  for (const added of doc.added_tokens ?? []) {
    if (tokens[added.id] === undefined) tokens[added.id] = added.content;
  }
  if (!Array.isArray(model.merges)) throw new Error(`${source}: model.merges must be an array`);
  const merges = model.merges.map((m: unknown, i: number): [string, string] => {
    const where = `${source} model.merges[${i}]`;
    if (typeof m === 'string') return parseMergeLine(m, where);
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      return [m[0], m[1]];
    }
    throw new Error(`${where}: expected "first second" or [first, second], found ${JSON.stringify(m)}`);
  });
  return { tokens, merges, source };
}

/** Where loadVocabulary looks when given no path. */
export function defaultVocabularyCandidates(): string[] {
  const fromEnv = process.env.TSCLIP_BPE_PATH;
  return [
    ...(fromEnv ? [fromEnv] : []),
    resolve('data', CLIP_BPE_FILE),
    resolve('..', 'shared', 'clip-data', CLIP_BPE_FILE),
  ];
}

/**
 * Reads a vocabulary from a CLIP merges file (.txt or .txt.gz), a Hugging Face tokenizer.json or
 * vocab.json (merges.txt beside it), or a directory holding one of these.
 */
export async function loadVocabulary(path?: string, opts: MergesOptions = {}): Promise<Vocabulary> {
  if (path === undefined) {
    const candidates = defaultVocabularyCandidates();
    const found = candidates.find((p) => existsSync(p));
    if (!found) {
      throw new Error(
        `tokenizer: no vocabulary given and none found at ${candidates.join(', ')}; ` +
          `pass the path of ${CLIP_BPE_FILE} (or set TSCLIP_BPE_PATH)`,
      );
    }
    path = found;
  }
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new Error(`tokenizer: vocabulary path ${path} does not exist`);
  }
  if (info.isDirectory()) {
    const inDir = (name: string) => join(path as string, name);
    if (existsSync(inDir('vocab.json')) && existsSync(inDir('merges.txt'))) {
      return loadHfPair(inDir('vocab.json'), inDir('merges.txt'));
    }
    if (existsSync(inDir('tokenizer.json'))) return loadVocabulary(inDir('tokenizer.json'), opts);
    if (existsSync(inDir(CLIP_BPE_FILE))) return loadVocabulary(inDir(CLIP_BPE_FILE), opts);
    throw new Error(`tokenizer: directory ${path} has no vocab.json + merges.txt, tokenizer.json or ${CLIP_BPE_FILE}`);
  }
  if (path.endsWith('.json')) {
    const text = await readFile(path, 'utf8');
    const doc = parseJson(text, path);
    if (typeof doc === 'object' && doc !== null && 'model' in doc) return parseHfTokenizerJson(doc, path);
    const merges = join(path, '..', 'merges.txt');
    if (!existsSync(merges)) throw new Error(`tokenizer: ${path} looks like vocab.json but ${merges} is missing`);
    return loadHfPair(path, merges);
  }
  return parseClipMerges(await readMaybeGzip(path), path, opts);
}

async function loadHfPair(vocabPath: string, mergesPath: string): Promise<Vocabulary> {
  const [vocab, merges] = await Promise.all([readFile(vocabPath, 'utf8'), readFile(mergesPath, 'utf8')]);
  return parseHfVocabMerges(vocab, merges, vocabPath, mergesPath);
}
