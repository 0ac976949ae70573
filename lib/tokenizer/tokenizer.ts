// CLIP's tokenizer: cleaned text -> words -> byte-level BPE ids, and back.
import { Tensor, type Device } from '../tensor.js';
import { BytePairEncoder, END_OF_WORD, EOT_TEXT, SOT_TEXT, type Vocabulary } from './bpe.js';
import { CHAR_TO_BYTE, utf8Bytes } from './bytes.js';
import { cleanForSplit } from './clean.js';
import { splitWords } from './words.js';

export interface TokenizeOptions {
  /** Tokens per row, start and end tokens included (CLIP: 77). */
  contextLength?: number;
  /** Cut over-long texts to contextLength, keeping the end token last; otherwise throw. */
  truncate?: boolean;
}

export interface TokenizeTensorOptions extends TokenizeOptions {
  device?: Device;
}

// Words seen once are looked up afterwards; the cap keeps memory bounded on endless streams.
const CACHE_LIMIT = 1 << 18;

function preview(text: string): string {
  const oneLine = text.replace(/\s+/g, ' ');
  return oneLine.length > 60 ? `${oneLine.slice(0, 57)}...` : oneLine;
}

export class ClipTokenizer {
  /** Id of <|startoftext|>. */
  readonly sot: number;
  /** Id of <|endoftext|>. */
  readonly eot: number;
  /** Number of ids (the largest id + 1). */
  readonly vocabSize: number;
  readonly source: string;
  private readonly bpe: BytePairEncoder;
  private readonly cache = new Map<string, number[]>();
  private tokenBytes: Array<Uint8Array | undefined> | undefined;
  private readonly utf8 = new TextDecoder('utf-8');

  constructor(vocab: Vocabulary) {
    this.bpe = new BytePairEncoder(vocab);
    this.source = vocab.source;
    this.vocabSize = vocab.tokens.length;
    const special = (text: string) => {
      const id = this.bpe.tokenToId.get(text);
      if (id === undefined) throw new Error(`${vocab.source}: special token ${text} is not in the vocabulary`);
      return id;
    };
    this.sot = special(SOT_TEXT);
    this.eot = special(EOT_TEXT);
    this.seedCache();
  }

  private seedCache(): void {
    this.cache.clear();
    // The reference maps the special tokens' own text straight to their ids.
    this.cache.set(SOT_TEXT, [this.sot]);
    this.cache.set(EOT_TEXT, [this.eot]);
  }

  /** BPE ids of a text, without start and end tokens. */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw new Error(`tokenizer.encode: expected a string, found ${typeof text}`);
    const ids: number[] = [];
    for (const word of splitWords(cleanForSplit(text))) {
      let wordIds = this.cache.get(word);
      if (wordIds === undefined) {
        wordIds = this.bpe.encodeWord(utf8Bytes(word));
        if (this.cache.size >= CACHE_LIMIT) this.seedCache();
        this.cache.set(word, wordIds);
      }
      for (let i = 0; i < wordIds.length; i++) ids.push(wordIds[i]);
    }
    return ids;
  }

  /** Text of ids: bytes decoded as UTF-8 (bad sequences -> U+FFFD), '</w>' -> ' ', specials kept. */
  decode(ids: ArrayLike<number>): string {
    const table = this.tokenBytesTable();
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const bytes = Number.isInteger(id) ? table[id] : undefined;
      if (bytes === undefined) {
        const token = Number.isInteger(id) ? this.bpe.vocab.tokens[id] : undefined;
        throw new Error(
          token === undefined
            ? `tokenizer.decode: id ${id} at position ${i} is not in the vocabulary (size ${this.vocabSize})`
            : `tokenizer.decode: token ${id} "${token}" is not spelled in byte characters`,
        );
      }
      parts.push(bytes);
      total += bytes.length;
    }
    const all = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.length;
    }
    return this.utf8.decode(all).replaceAll(END_OF_WORD, ' ');
  }

  // Each token's bytes, spelled by its byte characters (specials are plain ASCII, so they too).
  private tokenBytesTable(): Array<Uint8Array | undefined> {
    if (this.tokenBytes) return this.tokenBytes;
    this.tokenBytes = this.bpe.vocab.tokens.map((token) => {
      if (token === undefined) return undefined;
      const bytes = new Uint8Array(token.length);
      for (let i = 0; i < token.length; i++) {
        const c = token.charCodeAt(i);
        const b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
        if (b < 0) return undefined;
        bytes[i] = b;
      }
      return bytes;
    });
    return this.tokenBytes;
  }

  /** Rows of [SOT, ids..., EOT] padded with 0, as one Int32Array of texts.length * contextLength. */
  tokenizeToArray(texts: string | readonly string[], opts: TokenizeOptions = {}): Int32Array {
    const list = typeof texts === 'string' ? [texts] : texts;
    const contextLength = opts.contextLength ?? 77;
    if (!Number.isInteger(contextLength) || contextLength < 2) {
      throw new Error(`tokenize: contextLength must be an integer >= 2, found ${contextLength}`);
    }
    const out = new Int32Array(list.length * contextLength);
    list.forEach((text, row) => {
      const ids = this.encode(text);
      const length = ids.length + 2;
      const base = row * contextLength;
      if (length > contextLength && !opts.truncate) {
        throw new Error(
          `tokenize: text ${row} "${preview(text)}" is ${length} tokens long (start and end tokens ` +
            `included), more than the context length ${contextLength}; pass truncate: true to cut it`,
        );
      }
      out[base] = this.sot;
      const kept = Math.min(ids.length, contextLength - 2);
      for (let i = 0; i < kept; i++) out[base + 1 + i] = ids[i];
      // As the reference: tokens[:contextLength] with the end token written over the last one.
      out[base + Math.min(length, contextLength) - 1] = this.eot;
    });
    return out;
  }

  /** tokenizeToArray as an int32 Tensor of shape [texts, contextLength]. */
  tokenize(texts: string | readonly string[], opts: TokenizeTensorOptions = {}): Tensor {
    const rows = typeof texts === 'string' ? 1 : texts.length;
    const data = this.tokenizeToArray(texts, opts);
    return Tensor.from(data, [rows, opts.contextLength ?? 77], opts.device ? { device: opts.device } : {});
  }
}
