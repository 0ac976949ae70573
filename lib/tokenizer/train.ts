// Learning a byte-level BPE in CLIP's conventions: the same cleaning and word pattern, words end in
// '</w>', the vocabulary is 256 bytes + 256 bytes</w> + merges + <|startoftext|> + <|endoftext|>.
// Pair counts are kept up to date incrementally: a merge only revisits the words that hold the pair,
// and the next pair comes from a max-heap with lazily discarded stale entries.
import { readFile, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { BYTE_ORDER, BYTE_TO_CHAR, BYTE_TO_ID, utf8Bytes } from './bytes.js';
import { END_OF_WORD, EOT_TEXT, SOT_TEXT } from './bpe.js';
import { cleanForSplit } from './clean.js';
import { splitWords } from './words.js';

/** Ids that are not merges: 256 bytes, 256 bytes + '</w>', 2 special tokens. */
export const BASE_VOCAB = 512 + 2;

export interface TrainOptions {
  /** Final vocabulary size: 512 + merges + 2. */
  vocabSize: number;
  /** Stop when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** Called every `progressEvery` merges with the number learned so far. */
  onProgress?: (merges: number) => void;
  progressEvery?: number;
}

/** Max-heap of (count, pair key); ties go to the smaller key so training is deterministic. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  private above(i: number, j: number): boolean {
    const ci = this.counts[i];
    const cj = this.counts[j];
    return ci > cj || (ci === cj && this.keys[i] < this.keys[j]);
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    for (let i = this.counts.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!this.above(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** Removes the top entry, returning [count, key]. */
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0], this.keys[0]];
    const lastCount = this.counts.pop() as number;
    const lastKey = this.keys.pop() as number;
    if (this.counts.length > 0) {
      this.counts[0] = lastCount;
      this.keys[0] = lastKey;
      const n = this.counts.length;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < n && this.above(l, best)) best = l;
        if (r < n && this.above(r, best)) best = r;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
    return top;
  }
}

/** Distinct words of the captions (cleaned and split as the tokenizer does) with their counts. */
export function countWords(captions: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const caption of captions) {
    for (const word of splitWords(cleanForSplit(caption))) {
      // The tokenizer maps these straight to the special ids; they are never split.
      if (word === SOT_TEXT || word === EOT_TEXT) continue;
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  return counts;
}

/** Learns merges (in the byte-character spelling of merges files) from captions. */
export function trainBPE(captions: Iterable<string>, opts: TrainOptions): Array<[string, string]> {
  const { vocabSize } = opts;
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isInteger(vocabSize) || vocabSize < BASE_VOCAB) {
    throw new Error(
      `trainBPE: vocabSize ${vocabSize} must be an integer >= ${BASE_VOCAB} ` +
        '(256 byte tokens + 256 end-of-word byte tokens + 2 special tokens)',
    );
  }
  if (!(minFrequency >= 1)) throw new Error(`trainBPE: minFrequency must be >= 1, found ${minFrequency}`);
  const target = vocabSize - BASE_VOCAB;

  const tokens: string[] = BYTE_ORDER.map((b) => BYTE_TO_CHAR[b]);
  for (let i = 0; i < 256; i++) tokens.push(tokens[i] + END_OF_WORD);
  const known = new Set(tokens);
  known.add(SOT_TEXT).add(EOT_TEXT);

  // Each distinct word as a mutable symbol array; ids of new tokens stay below vocabSize.
  const words: Int32Array[] = [];
  const lengths: number[] = [];
  const freqs: number[] = [];
  for (const [word, freq] of countWords(captions)) {
    const bytes = utf8Bytes(word);
    const syms = new Int32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) syms[i] = BYTE_TO_ID[bytes[i]];
    syms[bytes.length - 1] += 256;
    words.push(syms);
    lengths.push(bytes.length);
    freqs.push(freq);
  }

  const stride = vocabSize;
  const counts = new Map<number, number>();
  const where = new Map<number, number[]>();
  const addPairs = (w: number, sign: number, touched: Set<number> | null, onlyWith: number) => {
    const syms = words[w];
    const f = freqs[w] * sign;
    for (let i = 0; i + 1 < lengths[w]; i++) {
      const key = syms[i] * stride + syms[i + 1];
      counts.set(key, (counts.get(key) ?? 0) + f);
      touched?.add(key);
      if (sign > 0 && (onlyWith < 0 || syms[i] === onlyWith || syms[i + 1] === onlyWith)) {
        let list = where.get(key);
        if (!list) where.set(key, (list = []));
        if (list[list.length - 1] !== w) list.push(w);
      }
    }
  };
  for (let w = 0; w < words.length; w++) addPairs(w, 1, null, -1);

  const heap = new PairHeap();
  for (const [key, count] of counts) heap.push(count, key);
  const seen = new Int32Array(words.length).fill(-1);
  const merges: Array<[string, string]> = [];
  const every = opts.progressEvery ?? 1000;

  while (merges.length < target && heap.size > 0) {
    const [count, key] = heap.pop();
    if (counts.get(key) !== count) continue; // stale entry
    if (count < minFrequency) break;
    const a = Math.floor(key / stride);
    const b = key - a * stride;
    const text = tokens[a] + tokens[b];
    if (known.has(text)) {
      // Should not happen (merging in rank order gives each text one last merge), but a second id
      // for one text would break the file format's one-token-per-merge vocabulary.
      counts.delete(key);
      continue;
    }
    const id = tokens.length;
    tokens.push(text);
    known.add(text);
    merges.push([tokens[a], tokens[b]]);

    const touched = new Set<number>();
    for (const w of where.get(key) ?? []) {
      if (seen[w] === id) continue;
      seen[w] = id;
      const syms = words[w];
      const n = lengths[w];
      let has = false;
      for (let i = 0; i + 1 < n && !has; i++) has = syms[i] === a && syms[i + 1] === b;
      if (!has) continue;
      addPairs(w, -1, touched, -1);
      let out = 0;
      for (let i = 0; i < n; ) {
        if (i + 1 < n && syms[i] === a && syms[i + 1] === b) {
          syms[out++] = id;
          i += 2;
        } else {
          syms[out++] = syms[i++];
        }
      }
      lengths[w] = out;
      addPairs(w, 1, touched, id);
    }
    where.delete(key);
    counts.delete(key);
    touched.delete(key);
    for (const k of touched) {
      const c = counts.get(k) ?? 0;
      if (c > 0) heap.push(c, k);
      else {
        counts.delete(k);
        where.delete(k);
      }
    }
    if (opts.onProgress && merges.length % every === 0) opts.onProgress(merges.length);
  }
  return merges;
}

/** Header line of merges files written here; the loader reads the vocabulary size from it. */
export function mergesHeader(numMerges: number): string {
  return `#version: 0.2 tsclip byte-level BPE, vocab_size=${BASE_VOCAB + numMerges}`;
}

/** Writes merges in CLIP's format (header line, "first second" per line), gzipped for .gz paths. */
export async function writeMerges(path: string, merges: ReadonlyArray<readonly [string, string]>): Promise<void> {
  const lines = [mergesHeader(merges.length)];
  merges.forEach(([a, b], i) => {
    if (!a || !b || /\s/.test(a) || /\s/.test(b)) {
      throw new Error(`writeMerges: merge ${i + 1} ("${a}", "${b}") has an empty token or whitespace in a token`);
    }
    lines.push(`${a} ${b}`);
  });
  const text = Buffer.from(lines.join('\n') + '\n', 'utf8');
  await writeFile(path, path.endsWith('.gz') ? gzipSync(text) : text);
}

const USAGE = 'usage: tsclip tokenizer train --captions FILE --vocab-size N --out merges.txt.gz [--min-frequency N]';

/** `tsclip tokenizer train`: one caption per line in FILE; writes the merges file. */
export async function trainTokenizerCommand(
  argv: readonly string[],
  log: (line: string) => void = console.log,
): Promise<{ merges: number; vocabSize: number; out: string }> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!['--captions', '--vocab-size', '--out', '--min-frequency'].includes(flag)) {
      throw new Error(`tokenizer train: unknown argument "${flag}"\n${USAGE}`);
    }
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) throw new Error(`tokenizer train: ${flag} needs a value\n${USAGE}`);
    flags.set(flag, value);
    i++;
  }
  const need = (flag: string) => {
    const v = flags.get(flag);
    if (v === undefined) throw new Error(`tokenizer train: missing ${flag}\n${USAGE}`);
    return v;
  };
  const captionsPath = need('--captions');
  const out = need('--out');
  const integer = (flag: string, text: string) => {
    const n = Number(text);
    if (!Number.isInteger(n)) throw new Error(`tokenizer train: ${flag} must be an integer, found "${text}"`);
    return n;
  };
  const vocabSize = integer('--vocab-size', need('--vocab-size'));
  const minText = flags.get('--min-frequency');
  const minFrequency = minText === undefined ? undefined : integer('--min-frequency', minText);

  let text: string;
  try {
    text = await readFile(captionsPath, 'utf8');
  } catch (e) {
    throw new Error(`tokenizer train: cannot read captions file ${captionsPath}: ${(e as Error).message}`);
  }
  const captions = text.split(/\r?\n/).filter((line) => line.trim() !== '');
  if (captions.length === 0) throw new Error(`tokenizer train: ${captionsPath} has no captions`);
  const start = performance.now();
  const merges = trainBPE(captions, {
    vocabSize,
    minFrequency,
    progressEvery: 5000,
    onProgress: (n) => log(`  ${n} merges`),
  });
  await writeMerges(out, merges);
  const seconds = ((performance.now() - start) / 1000).toFixed(1);
  const size = BASE_VOCAB + merges.length;
  log(`learned ${merges.length} merges from ${captions.length} captions in ${seconds} s; vocabulary ${size} -> ${out}`);
  if (size < vocabSize) log(`(stopped below ${vocabSize}: no pair left that occurs often enough)`);
  return { merges: merges.length, vocabSize: size, out };
}
