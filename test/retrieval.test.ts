// Retrieval: recall@K against ranks worked out by hand, top-k search, and the index file format.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { retrievalRecall, topK, similarityMatrix } from '../lib/retrieval/metrics.js';
import { EmbeddingIndex, idsPathFor } from '../lib/retrieval/store.js';
import { PartialFile } from '../lib/retrieval/partial.js';

const f32 = (rows: number[][]) => Float32Array.from(rows.flat());

describe('retrievalRecall', () => {
  // Images I0=(1,0), I1=(0,1), I2=(.8,.6); texts T0=(.6,.8)->I0, T1=(0,1)->I1, T2=(1,0)->I2, T3=(.8,.6)->I2.
  const images = f32([[1, 0], [0, 1], [0.8, 0.6]]);
  const texts = f32([[0.6, 0.8], [0, 1], [1, 0], [0.8, 0.6]]);
  const links = [0, 1, 2, 2];
  it('image -> text: an image counts when any of its captions is in the top K', () => {
    // I0 ranks T2 (1), T3 (.8), T0 (.6): its caption T0 is third. I1: T1 first. I2: T3 first.
    const r = retrievalRecall(images, texts, links, 2, [1, 2, 3]);
    expect(r.imageToText[1]).toBeCloseTo(2 / 3, 12);
    expect(r.imageToText[2]).toBeCloseTo(2 / 3, 12);
    expect(r.imageToText[3]).toBe(1);
  });
  it('text -> image: a caption counts when its image is in the top K', () => {
    // T0: I2 .96, I1 .8, I0 .6 -> rank 3; T1 -> 1; T2: I0 1, I2 .8 -> 2; T3 -> 1.
    const r = retrievalRecall(images, texts, links, 2, [1, 2, 3]);
    expect(r.textToImage[1]).toBe(0.5);
    expect(r.textToImage[2]).toBe(0.75);
    expect(r.textToImage[3]).toBe(1);
    expect(r.images).toBe(3);
    expect(r.texts).toBe(4);
  });
  it('defaults to recall@1/5/10 and breaks ties by index', () => {
    // Two identical images: the caption of the second ranks behind the first.
    const r = retrievalRecall(f32([[1, 0], [1, 0]]), f32([[1, 0], [1, 0]]), [0, 1], 2);
    expect(Object.keys(r.textToImage).map(Number)).toEqual([1, 5, 10]);
    expect(r.textToImage[1]).toBe(0.5);
    expect(r.imageToText[1]).toBe(0.5);
    expect(r.textToImage[5]).toBe(1);
  });
  it('rejects links that do not fit', () => {
    expect(() => retrievalRecall(images, texts, [0, 1, 2], 2)).toThrow(/4 texts but 3/);
    expect(() => retrievalRecall(images, texts, [0, 1, 2, 3], 2)).toThrow(/links to image 3/);
  });
  it('similarity matrix and topK', () => {
    expect(Array.from(similarityMatrix(images, texts, 2)).map((x) => +x.toFixed(6))).toEqual([0.6, 0, 1, 0.8, 0.8, 1, 0, 0.6, 0.96, 0.6, 0.8, 1]);
    expect(topK(Float32Array.from([0.6, 0.8]), images, 2, 2).map((h) => h.index)).toEqual([2, 1]); // .96, .8
    expect(topK(Float32Array.from([0.6, 0.8]), images, 2, 5, (i) => i !== 1).map((h) => h.index)).toEqual([2, 0]);
  });
});

describe('EmbeddingIndex', () => {
  it('writes vectors as safetensors and ids as JSONL, reads them back, searches by kind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsclip-index-'));
    try {
      const file = join(dir, 'emb.safetensors');
      const idx = new EmbeddingIndex(
        [{ id: 'a.png', kind: 'image' }, { id: 'b.png', kind: 'image' }, { id: 'text:1', kind: 'text', text: 'a cat' }],
        f32([[1, 0], [0.6, 0.8], [0, 1]]), 2, { model: '/m' });
      await idx.write(file);
      expect(idsPathFor(file)).toBe(join(dir, 'emb.jsonl'));
      const back = await EmbeddingIndex.read(file);
      expect(back.entries).toEqual(idx.entries);
      expect(Array.from(back.vectors)).toEqual(Array.from(idx.vectors));
      expect(back.info).toEqual({ model: '/m' });
      const hits = back.search(Float32Array.from([0, 1]), 5, { kind: 'image' });
      expect(hits.map((h) => h.id)).toEqual(['b.png', 'a.png']);
      expect(hits[0].score).toBeCloseTo(0.8, 6);
      expect(back.search(Float32Array.from([0, 1]), 1)[0].id).toBe('text:1');
      expect(() => back.search(Float32Array.from([1]), 1)).toThrow(/1 dimensions, the index 2/);
      writeFileSync(idsPathFor(file), '{"id":"a.png","kind":"image"}\n');
      await expect(EmbeddingIndex.read(file)).rejects.toThrow(/3 vectors but 1 ids/);
      await expect(EmbeddingIndex.read(join(dir, 'none.safetensors'))).rejects.toThrow(/no such file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('PartialFile (resumable embedding)', () => {
  it('keeps complete rows, drops a torn last line, refuses another model', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsclip-partial-'));
    try {
      const file = join(dir, 'x.partial.jsonl');
      const p = PartialFile.open(file, { model: '/m', dim: 2 });
      p.append([{ id: 'a', kind: 'image', vector: Float32Array.from([1, 2]) }, { id: 't', kind: 'text', text: 'hi', vector: Float32Array.from([3, 4]) }]);
      writeFileSync(file, readFileSync(file, 'utf8') + '{"id":"b","kind":"ima');
      const q = PartialFile.open(file, { model: '/m', dim: 2 });
      expect([...q.rows.keys()].length).toBe(2);
      expect(Array.from(q.rows.get(PartialFile.key('text', 't'))!.vector)).toEqual([3, 4]);
      expect(q.has('image', 'b')).toBe(false);
      q.append([{ id: 'b', kind: 'image', vector: Float32Array.from([5, 6]) }]);
      expect(PartialFile.open(file, { model: '/m', dim: 2 }).rows.size).toBe(3);
      expect(() => PartialFile.open(file, { model: '/other', dim: 2 })).toThrow(/another model/);
      q.remove();
      expect(existsSync(file)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
