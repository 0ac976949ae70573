// The CLIP tokenizer against the reference tokenizations in ../shared/clip-data, the Hugging Face
// formats against the same ids, and the text cleaning against values from ftfy 6.3.1 + html.unescape.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanText, loadTokenizer, parseClipMerges, splitWords, type ClipTokenizer } from '../lib/tokenizer/index.js';

const CLIP_DATA = join(__dirname, '..', '..', 'shared', 'clip-data');
const BPE = join(CLIP_DATA, 'bpe_simple_vocab_16e6.txt.gz');
const CASES = join(CLIP_DATA, 'tokenizer_cases.json');
const HAVE_DATA = existsSync(BPE) && existsSync(CASES);

interface Case {
  text: string;
  ids: number[];
  bpe_ids: number[];
  truncated: boolean;
  decoded: string;
}
interface CaseFile {
  sot: number;
  eot: number;
  context_length: number;
  vocab_size: number;
  cases: Case[];
}
const data: CaseFile = HAVE_DATA ? JSON.parse(readFileSync(CASES, 'utf8')) : { sot: 0, eot: 0, context_length: 0, vocab_size: 0, cases: [] };

// The byte alphabet written out independently of lib/tokenizer/bytes.ts, for building HF files.
function byteAlphabet(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const chars = printable.map((b) => String.fromCharCode(b));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!printable.includes(b)) chars.push(String.fromCharCode(256 + n++));
  return chars;
}

describe('text cleaning (values from ftfy 6.3.1 + html.unescape twice)', () => {
  const expected: Array<[string, string]> = [
    ['ﬁnd “quoted” ‘x’ ＦＵＬＬ\u3000width ｶﾞ', 'find "quoted" \'x\' full width ガ'],
    ['fish &amp;amp; chips', 'fish & chips'],
    ['<b>&amp;amp;</b>', '<b>&</b>'],
    ['caf&EACUTE;', 'café'],
    ['<i>caf&EACUTE;</i>', '<i>caf&eacute;</i>'],
    ['&ampx &lt3', '&x <3'],
    ['\x1b[31mred\x1b[0m alert', 'red alert'],
    ['wait\x85 what', 'wait… what'],
    ['cafe\u0301', 'café'],
    ['\ufeffhi\x00 there\x07', 'hi there'],
    ['ŉ Ĳssel', "'n ijssel"],
    ['line one\r\nline\u2028two', 'line one line two'],
    ['x &#x85; &#150; &#0; &#xD800;', 'x … – \ufffd \ufffd'],
    ['ΌΣΟΣ  Σ', 'όσος σ'],
  ];
  it.each(expected)('cleans %j', (input, want) => {
    expect(cleanText(input)).toBe(want);
  });

  it('splits words with the reference pattern', () => {
    expect(splitWords("it's <|endoftext|>x ſ'ſ a\u0345b 12 ..!")).toEqual(['it', "'s", '<|endoftext|>', 'x', 'ſ', "'ſ", 'a', 'b', '1', '2', '..!']);
  });
});

describe.skipIf(!HAVE_DATA)('CLIP tokenizer against the reference cases (skipped: ../shared/clip-data missing)', () => {
  let tok: ClipTokenizer;
  beforeAll(async () => {
    tok = await loadTokenizer(BPE);
  });

  it('has the reference vocabulary layout', () => {
    expect(data.cases.length).toBe(564);
    expect(tok.vocabSize).toBe(data.vocab_size);
    expect(tok.sot).toBe(data.sot);
    expect(tok.eot).toBe(data.eot);
  });

  it.each(data.cases.map((c, i) => [i, c] as const))('case %i', (_i, c) => {
    expect(tok.encode(c.text)).toEqual(c.bpe_ids);
    const row = tok.tokenizeToArray([c.text], { contextLength: data.context_length, truncate: c.truncated });
    expect(Array.from(row)).toEqual(c.ids);
    expect(tok.decode(c.bpe_ids)).toBe(c.decoded);
  });

  it('tokenizes all cases as one batch', () => {
    const all = tok.tokenizeToArray(data.cases.map((c) => c.text), { truncate: true });
    expect(Array.from(all)).toEqual(data.cases.flatMap((c) => c.ids));
  });

  it('gives the same ids from a cold cache', async () => {
    const fresh = await loadTokenizer(BPE);
    const texts = data.cases.slice(0, 40).map((c) => c.text).reverse();
    for (const t of texts) expect(fresh.encode(t)).toEqual(tok.encode(t));
  });

  it('refuses an over-long text unless truncating, naming the text, its length and the limit', () => {
    const long = data.cases.find((c) => c.truncated) as Case;
    const length = long.bpe_ids.length + 2;
    expect(length).toBeGreaterThan(77);
    let message = '';
    try {
      tok.tokenizeToArray(['a photo of a cat', long.text]);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain(`text 1 "${long.text.slice(0, 57)}..."`);
    expect(message).toContain(`${length} tokens`);
    expect(message).toContain('context length 77');
    // Exactly at the limit is fine; one more is not.
    const ids = tok.encode('a photo of a cat');
    expect(() => tok.tokenizeToArray(['a photo of a cat'], { contextLength: ids.length + 2 })).not.toThrow();
    expect(() => tok.tokenizeToArray(['a photo of a cat'], { contextLength: ids.length + 1 })).toThrow(/context length 6/);
    const cut = tok.tokenizeToArray(['a photo of a cat'], { contextLength: 4, truncate: true });
    expect(Array.from(cut)).toEqual([tok.sot, ids[0], ids[1], tok.eot]);
  });

  it('decode keeps special tokens as text and rejects unknown ids', () => {
    expect(tok.decode([tok.sot, ...tok.encode('Hello'), tok.eot])).toBe('<|startoftext|>hello <|endoftext|>');
    expect(() => tok.decode([1, 49408])).toThrow(/id 49408 at position 1/);
    expect(() => tok.decode([1.5])).toThrow(/id 1.5/);
  });

  it('returns a [N, contextLength] int32 tensor from tokenize()', () => {
    const texts = data.cases.slice(0, 3).map((c) => c.text);
    const t = tok.tokenize(texts);
    expect(t.shape).toEqual([3, 77]);
    expect(t.dtype).toBe('int32');
    expect(Array.from(t.toArraySync() as Int32Array)).toEqual(data.cases.slice(0, 3).flatMap((c) => c.ids));
    t.dispose();
  });

  describe('Hugging Face formats', () => {
    let dir: string;
    let tokens: string[];
    let merges: string[];
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'tsclip-hf-'));
      const lines = gunzipSync(readFileSync(BPE)).toString('utf8').split('\n');
      merges = lines.slice(1, 1 + 48894);
      const bytes = byteAlphabet();
      tokens = [...bytes, ...bytes.map((c) => c + '</w>'), ...merges.map((m) => m.replace(' ', '')), '<|startoftext|>', '<|endoftext|>'];
      // Keys in reverse order: ids must come from the values, not the order.
      const vocab: Record<string, number> = {};
      for (let id = tokens.length - 1; id >= 0; id--) vocab[tokens[id]] = id;
      writeFileSync(join(dir, 'vocab.json'), JSON.stringify(vocab));
      writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\n' + merges.join('\n') + '\n');
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    const sample = () => data.cases.filter((_, i) => i < 30 || i % 7 === 0);

    it('vocab.json + merges.txt give the reference ids', async () => {
      const hf = await loadTokenizer(dir);
      expect([hf.vocabSize, hf.sot, hf.eot]).toEqual([49408, 49406, 49407]);
      for (const c of sample()) expect(hf.encode(c.text)).toEqual(c.bpe_ids);
      for (const c of sample()) expect(hf.decode(c.bpe_ids)).toBe(c.decoded);
    });

    it('tokenizer.json (merges as strings or pairs, specials in added_tokens) gives the reference ids', async () => {
      const vocab: Record<string, number> = {};
      tokens.slice(0, -2).forEach((t, id) => (vocab[t] = id));
      const added = [
        { id: 49406, content: '<|startoftext|>' },
        { id: 49407, content: '<|endoftext|>' },
      ];
      for (const [name, list] of [
        ['strings', merges],
        ['pairs', merges.map((m) => m.split(' '))],
      ] as const) {
        const path = join(dir, `tokenizer-${name}.json`);
        const doc = { added_tokens: added, model: { type: 'BPE', end_of_word_suffix: '</w>', vocab, merges: list } };
        writeFileSync(path, JSON.stringify(doc));
        const hf = await loadTokenizer(path);
        expect(hf.vocabSize).toBe(49408);
        for (const c of sample()) expect(hf.encode(c.text)).toEqual(c.bpe_ids);
      }
    });

    it('names the file and problem for bad input', async () => {
      const bad = join(dir, 'bad.json');
      writeFileSync(bad, JSON.stringify({ model: { type: 'Unigram', vocab: {}, merges: [] } }));
      await expect(loadTokenizer(bad)).rejects.toThrow(/bad\.json: model.type is "Unigram", expected "BPE"/);
      writeFileSync(bad, JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] } }));
      await expect(loadTokenizer(bad)).rejects.toThrow(/byte token 0x0 .* is not in the vocabulary/);
      await expect(loadTokenizer(join(dir, 'missing.txt.gz'))).rejects.toThrow(/missing\.txt\.gz does not exist/);
      const badMerges = join(dir, 'bad.txt.gz');
      writeFileSync(badMerges, gzipSync('#version: 0.2\ni n\nt h e\n'));
      await expect(loadTokenizer(badMerges)).rejects.toThrow(/bad\.txt\.gz:3: expected a merge "first second", found "t h e"/);
    });
  });

  it('uses the merge count a header names, else the first 48,894 merges', () => {
    const text = gunzipSync(readFileSync(BPE)).toString('utf8');
    expect(parseClipMerges(text, 'clip').merges.length).toBe(48894);
    const lines = text.split('\n');
    const small = ['#version: 0.2 vocab_size=614', ...lines.slice(1, 101)].join('\n');
    const vocab = parseClipMerges(small, 'small');
    expect(vocab.merges.length).toBe(100);
    expect(vocab.tokens.length).toBe(614);
    expect(() => parseClipMerges(['#vocab_size=9999', ...lines.slice(1, 11)].join('\n'), 'short')).toThrow(/short: 9485 merges wanted, the file has 10/);
  });
});
