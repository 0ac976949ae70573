// Byte-level BPE on token ids: a word's UTF-8 bytes start as byte tokens (the last one with the
// '</w>' end-of-word mark); then, as the reference does, the adjacent pair with the lowest merge
// rank is merged everywhere in the word (left to right), until no adjacent pair has a rank.
import { BYTE_TO_CHAR } from './bytes.js';

export const END_OF_WORD = '</w>';
export const SOT_TEXT = '<|startoftext|>';
export const EOT_TEXT = '<|endoftext|>';

/** A vocabulary as read from disk: id -> token text, and the merges in rank order. */
export interface Vocabulary {
  /** Token text per id (byte characters, maybe ending in '</w>'); undefined for unused ids. */
  tokens: Array<string | undefined>;
  /** Merge rules in rank order, each the two token texts that join. */
  merges: Array<[string, string]>;
  /** Where the vocabulary came from, for error messages. */
  source: string;
}

export class BytePairEncoder {
  readonly tokenToId = new Map<string, number>();
  private readonly byteId = new Int32Array(256);
  private readonly byteEndId = new Int32Array(256);
  private readonly stride: number;
  /** pair key (first * stride + second) -> rank */
  private readonly ranks = new Map<number, number>();
  /** rank -> id of the joined token */
  private readonly joined: Int32Array;

  constructor(readonly vocab: Vocabulary) {
    const { tokens, merges, source } = vocab;
    // Later duplicates win, as in the reference's dict(zip(vocab, range(len(vocab)))).
    tokens.forEach((t, id) => {
      if (t !== undefined) this.tokenToId.set(t, id);
    });
    const idOf = (text: string, what: string): number => {
      const id = this.tokenToId.get(text);
      if (id === undefined) throw new Error(`${source}: ${what} "${text}" is not in the vocabulary`);
      return id;
    };
    for (let b = 0; b < 256; b++) {
      this.byteId[b] = idOf(BYTE_TO_CHAR[b], `byte token 0x${b.toString(16)}`);
      this.byteEndId[b] = idOf(BYTE_TO_CHAR[b] + END_OF_WORD, `byte token 0x${b.toString(16)}`);
    }
    this.stride = tokens.length;
    this.joined = new Int32Array(merges.length);
    merges.forEach(([a, b], rank) => {
      const what = `merge ${rank + 1} ("${a} ${b}")`;
      this.ranks.set(idOf(a, `${what}: token`) * this.stride + idOf(b, `${what}: token`), rank);
      this.joined[rank] = idOf(a + b, `${what}: joined token`);
    });
  }

  /** Token ids of one word given as UTF-8 bytes (non-empty). */
  encodeWord(bytes: Uint8Array): number[] {
    const n = bytes.length;
    if (n === 0) return [];
    const word = new Int32Array(n);
    for (let i = 0; i < n - 1; i++) word[i] = this.byteId[bytes[i]];
    word[n - 1] = this.byteEndId[bytes[n - 1]];
    let len = n;
    const { ranks, stride } = this;
    while (len > 1) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < len - 1; i++) {
        const r = ranks.get(word[i] * stride + word[i + 1]);
        if (r !== undefined && r < best) {
          best = r;
          at = i;
        }
      }
      if (at < 0) break;
      const joined = this.joined[best];
      const first = word[at];
      const second = word[at + 1];
      let out = 0;
      for (let i = 0; i < len; ) {
        if (i < len - 1 && word[i] === first && word[i + 1] === second) {
          word[out++] = joined;
          i += 2;
        } else {
          word[out++] = word[i++];
        }
      }
      len = out;
    }
    return Array.from(word.subarray(0, len));
  }
}
