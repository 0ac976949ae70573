// The BPE trainer: its merges against a from-scratch recount at every step, the file it writes read
// back by the loader, round trips of every training caption, and frequent words as single tokens.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { rng } from './helpers.js';
import { cleanText, loadTokenizer, splitWords, trainBPE, trainTokenizerCommand, writeMerges } from '../lib/tokenizer/index.js';

const ADJ = ['small', 'big', 'red', 'blurry', 'bright', 'dark', 'old', 'Shiny', 'wet', 'tiny', 'furry', 'café-style'];
const NOUN = ['cat', 'dog', 'car', 'bird', 'tree', 'house', 'boat', 'Horse', 'bicycle', 'flower', 'jalapeño', 'chair'];
const PLACE = ['on the beach', 'in the park', 'at night', 'near a river', 'under the snow', 'in Tokyo 東京'];

/** Deterministic captions: "a photo of a <adj> <noun> <place>." and variants. */
function captions(n: number, seed: number): string[] {
  const r = rng(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(r() * 3);
    if (kind === 0) out.push(`a photo of a ${pick(ADJ)} ${pick(NOUN)} ${pick(PLACE)}.`);
    else if (kind === 1) out.push(`A ${pick(ADJ)} ${pick(NOUN)}, ${pick(PLACE)}!  It's ${1 + Math.floor(r() * 99)} years old`);
    else out.push(`the photo of the ${pick(NOUN)} and the ${pick(NOUN)} ${pick(PLACE)} — “nice”`);
  }
  return out;
}

/** Byte-level BPE by recounting every pair of every word before each merge (the slow, obvious way). */
function naiveMerges(texts: string[], vocabSize: number): Array<[string, string]> {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const byteChar = new Map<number, string>();
  let extra = 0;
  for (let b = 0; b < 256; b++) byteChar.set(b, String.fromCharCode(printable.includes(b) ? b : 256 + extra++));
  const order = [...printable, ...[...byteChar.keys()].filter((b) => !printable.includes(b))];
  const base = order.map((b) => byteChar.get(b) as string);
  const tokens = [...base, ...base.map((c) => c + '</w>')];
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of splitWords(cleanText(t))) counts.set(w, (counts.get(w) ?? 0) + 1);
  const words = [...counts].map(([w, f]) => {
    const syms = [...new TextEncoder().encode(w)].map((b) => byteChar.get(b) as string);
    syms[syms.length - 1] += '</w>';
    return { syms, f };
  });
  const merges: Array<[string, string]> = [];
  const banned = new Set<string>();
  while (merges.length < vocabSize - 514) {
    const pairs = new Map<string, { a: string; b: string; n: number }>();
    for (const { syms, f } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = `${syms[i]} ${syms[i + 1]}`;
        const p = pairs.get(k) ?? { a: syms[i], b: syms[i + 1], n: 0 };
        p.n += f;
        pairs.set(k, p);
      }
    }
    let best: { a: string; b: string; n: number } | undefined;
    for (const [k, p] of pairs) {
      if (banned.has(k)) continue;
      const better =
        !best ||
        p.n > best.n ||
        (p.n === best.n && ((idOf.get(p.a) as number) < (idOf.get(best.a) as number) ||
          (p.a === best.a && (idOf.get(p.b) as number) < (idOf.get(best.b) as number))));
      if (better) best = p;
    }
    if (!best || best.n < 2) break;
    const joined = best.a + best.b;
    if (idOf.has(joined)) {
      banned.add(`${best.a} ${best.b}`);
      continue;
    }
    idOf.set(joined, tokens.length);
    tokens.push(joined);
    merges.push([best.a, best.b]);
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; ) {
        if (i + 1 < w.syms.length && w.syms[i] === best.a && w.syms[i + 1] === best.b) {
          out.push(joined);
          i += 2;
        } else out.push(w.syms[i++]);
      }
      w.syms = out;
    }
  }
  return merges;
}

describe('BPE trainer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsclip-bpe-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const corpus = captions(400, 7);

  it('learns the same merges as recounting all pairs before every merge', () => {
    const small = captions(120, 3);
    expect(trainBPE(small, { vocabSize: 514 + 150 })).toEqual(naiveMerges(small, 514 + 150));
    // Random words over a few letters (multi-byte ones too): long runs and overlapping pairs.
    const r = rng(17);
    const letters = 'abcdeéñ日';
    const texts = Array.from({ length: 300 }, () => {
      let t = '';
      for (let w = 1 + Math.floor(r() * 6); w > 0; w--) {
        for (let k = 1 + Math.floor(r() * 7); k > 0; k--) t += letters[Math.floor(r() * letters.length)];
        t += r() < 0.2 ? '.. ' : ' ';
      }
      return t;
    });
    const merges = trainBPE(texts, { vocabSize: 514 + 400 });
    expect(merges.length).toBeGreaterThan(300);
    expect(merges).toEqual(naiveMerges(texts, 514 + 400));
  });

  it('writes a merges file the loader reads back, and every caption round-trips', async () => {
    const merges = trainBPE(corpus, { vocabSize: 800 });
    expect(merges.length).toBeGreaterThan(100);
    expect(merges.length).toBeLessThanOrEqual(800 - 514);
    const path = join(dir, 'merges.txt.gz');
    await writeMerges(path, merges);
    const tok = await loadTokenizer(path);
    expect(tok.vocabSize).toBe(514 + merges.length);
    expect([tok.sot, tok.eot]).toEqual([512 + merges.length, 513 + merges.length]);
    for (const c of corpus) {
      const ids = tok.encode(c);
      for (const id of ids) expect(id).toBeLessThan(tok.sot);
      const words = splitWords(cleanText(c));
      expect(tok.decode(ids)).toBe(words.map((w) => w + ' ').join(''));
      expect(tok.decode(ids).replace(/ /g, '')).toBe(cleanText(c).replace(/ /g, ''));
    }
    // Text never seen in training still round-trips through the byte tokens.
    const unseen = 'Zebra crossing ½ ñandú 🦓';
    expect(tok.decode(tok.encode(unseen))).toBe(splitWords(cleanText(unseen)).map((w) => w + ' ').join(''));
  });

  it('learns frequent words as single tokens and compresses the corpus', async () => {
    const merges = trainBPE(corpus, { vocabSize: 800 });
    const path = join(dir, 'words.txt');
    await writeMerges(path, merges);
    const tok = await loadTokenizer(path);
    for (const word of ['photo', 'the', 'of', 'cat', 'bicycle', 'years']) {
      const ids = tok.encode(word);
      expect(ids.length, word).toBe(1);
      expect(tok.decode(ids)).toBe(word + ' ');
    }
    const bytes = corpus.reduce((n, c) => n + new TextEncoder().encode(cleanText(c)).length, 0);
    const ids = corpus.reduce((n, c) => n + tok.encode(c).length, 0);
    expect(ids).toBeLessThan(bytes / 3);
  });

  it('stops early when no pair is frequent enough, and checks its options', () => {
    const merges = trainBPE(['aaa bbb'], { vocabSize: 10_000 });
    expect(merges).toEqual([]);
    expect(trainBPE(['ab ab'], { vocabSize: 10_000 })).toEqual([['a', 'b</w>']]);
    expect(() => trainBPE(['x'], { vocabSize: 513 })).toThrow(/vocabSize 513 must be an integer >= 514/);
  });

  it('runs as the `tokenizer train` command', async () => {
    const file = join(dir, 'captions.txt');
    writeFileSync(file, corpus.join('\n') + '\n\n');
    const out = join(dir, 'cli.txt.gz');
    const lines: string[] = [];
    const result = await trainTokenizerCommand(['--captions', file, '--vocab-size', '600', '--out', out], (l) => lines.push(l));
    expect(result.vocabSize).toBe(600);
    expect(lines.at(-1)).toMatch(/learned 86 merges from 400 captions in .* s; vocabulary 600 ->/);
    const tok = await loadTokenizer(out);
    expect(tok.vocabSize).toBe(600);
    await expect(trainTokenizerCommand(['--captions', file, '--out', out])).rejects.toThrow(/missing --vocab-size/);
    await expect(trainTokenizerCommand(['--captions', file, '--vocab-size', 'big', '--out', out])).rejects.toThrow(/--vocab-size must be an integer, found "big"/);
    await expect(trainTokenizerCommand(['--captions', join(dir, 'nope.txt'), '--vocab-size', '600', '--out', out])).rejects.toThrow(/cannot read captions file .*nope\.txt/);
  });
});
