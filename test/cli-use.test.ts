// `tsclip classify`, `embed` and `search` end to end on a tiny model saved as a run folder.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { classifyCommand } from '../lib/cli/classify.js';
import { embedCommand } from '../lib/cli/embed.js';
import { searchCommand } from '../lib/cli/search.js';
import { UsageError } from '../lib/cli/args.js';
import { ZeroShotClassifier } from '../lib/zeroshot/classifier.js';
import { DEFAULT_TEMPLATES } from '../lib/zeroshot/templates.js';
import { embedImages, embedTexts } from '../lib/zeroshot/encode.js';
import { EmbeddingIndex } from '../lib/retrieval/store.js';
import { PartialFile, partialPathFor } from '../lib/retrieval/partial.js';
import { capture, tinyRun, writeImages, type TinyRun } from './use-helpers.js';

let run: TinyRun;
let images: string[];
beforeAll(async () => {
  run = await tinyRun(3);
  images = await writeImages(join(run.dir, 'photos'), 5);
});
afterAll(() => {
  run.model.dispose();
  rmSync(run.dir, { recursive: true, force: true });
});

/** Runs a command, returning what it printed to stdout (stderr is silenced). */
describe('tsclip classify', () => {
  it('--json gives the classifier\'s sorted predictions per image; the table shows them', async () => {
    const argv = ['--model', run.dir, '--labels', 'cat,dog|puppy,bird', '--device', 'cpu', images[0], images[1]];
    const json = JSON.parse(await capture(() => classifyCommand([...argv, '--json', '--top', '2'])));
    const zs = ZeroShotClassifier.create(run.model, run.tokenizer, ['cat', ['dog', 'puppy'], 'bird'], DEFAULT_TEMPLATES);
    const want = await zs.classify([images[0], images[1]], { topK: 2 });
    expect(json.map((r: { image: string }) => r.image)).toEqual([images[0], images[1]]);
    json.forEach((r: { predictions: { label: string; score: number }[] }, i: number) => {
      expect(r.predictions.map((p) => p.label)).toEqual(want[i].map((p) => p.label));
      r.predictions.forEach((p, j) => expect(p.score).toBeCloseTo(want[i][j].score, 6));
    });
    const table = await capture(() => classifyCommand(argv));
    expect(table).toContain(images[1]);
    expect(table).toMatch(/ 1\. (cat|dog|bird) +\d+\.\d%/);
    expect(table.split('\n').filter((l) => /^\s+\d\./.test(l)).length).toBe(6);
    // A folder expands to its images.
    const all = JSON.parse(await capture(() => classifyCommand(['--model', run.dir, '--labels', 'cat,dog', '--json', '--template', 'a {}', join(run.dir, 'photos')])));
    expect(all.length).toBe(5);
  });

  it('user errors are UsageErrors that name the problem', async () => {
    await expect(classifyCommand(['--model', join(run.dir, 'nope'), '--labels', 'a', images[0]])).rejects.toThrow(/--model .*nope: no such file/);
    await expect(classifyCommand(['--model', run.dir, '--labels', 'a', join(run.dir, 'missing.jpg')])).rejects.toThrow(UsageError);
    await expect(classifyCommand(['--model', run.dir, '--lables', 'a', images[0]])).rejects.toThrow(/unknown flag --lables/);
    await expect(classifyCommand(['--model', run.dir, images[0]])).rejects.toThrow(/--labels/);
    await expect(classifyCommand(['--model', run.dir, '--labels', 'a', '--top', '0', images[0]])).rejects.toThrow(/--top must be a positive integer/);
    await expect(classifyCommand(['--model', run.dir, '--labels', 'a', '--template', 'no slot', images[0]])).rejects.toThrow(/has no \{\}/);
    expect(await capture(() => classifyCommand(['--help']))).toMatch(/examples:[\s\S]*tsclip classify --model/);
  });
});

describe('tsclip embed + search', () => {
  it('embeds images and texts, resumes an interrupted run, and searches text -> image and image -> image', async () => {
    const texts = join(run.dir, 'captions.txt');
    writeFileSync(texts, 'a photo of a cat\n\na dog on a beach\na red circle\n');
    const out = join(run.dir, 'emb.safetensors');
    // An interrupted earlier run left two image rows (marked with a recognisable vector) and a torn line.
    const D = run.model.config.embedDim;
    const marker = new Float32Array(D).fill(0.125);
    const partial = PartialFile.open(partialPathFor(out), { model: run.dir, dim: D });
    partial.append([{ id: 'img0.png', kind: 'image', vector: marker }, { id: 'img3.png', kind: 'image', vector: marker }]);
    writeFileSync(partialPathFor(out), readFileSync(partialPathFor(out), 'utf8') + '{"id":"img4.p');
    await capture(() => embedCommand(['--model', run.dir, '--images', join(run.dir, 'photos'), '--texts', texts, '--out', out, '--batch-size', '2']));
    expect(existsSync(partialPathFor(out))).toBe(false);
    const idx = await EmbeddingIndex.read(out);
    expect(idx.entries.map((e) => e.id)).toEqual(['img0.png', 'img1.png', 'img2.png', 'img3.png', 'img4.png', 'text:1', 'text:3', 'text:4']);
    expect(idx.entries[6]).toEqual({ id: 'text:3', kind: 'text', text: 'a dog on a beach' });
    const fresh = await embedImages(run.model, images);
    const txt = embedTexts(run.model, run.tokenizer, ['a photo of a cat', 'a dog on a beach', 'a red circle']);
    for (const i of [0, 3]) expect(Array.from(idx.vector(i))).toEqual(Array.from(marker));
    for (const i of [1, 2, 4]) idx.vector(i).forEach((v, d) => expect(v).toBeCloseTo(fresh[i * D + d], 5));
    for (let t = 0; t < 3; t++) idx.vector(5 + t).forEach((v, d) => expect(v).toBeCloseTo(txt[t * D + d], 5));
    await expect(embedCommand(['--model', run.dir, '--images', join(run.dir, 'photos'), '--out', out])).rejects.toThrow(/already exists; pass --force/);

    // Rebuild cleanly for the searches.
    await capture(() => embedCommand(['--model', run.dir, '--images', join(run.dir, 'photos'), '--texts', texts, '--out', out, '--force', '--restart']));
    const clean = await EmbeddingIndex.read(out);
    const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, d) => s + v * b[d], 0);
    // text -> image: images ranked by cosine with the query's embedding
    const q = embedTexts(run.model, run.tokenizer, ['a dog on a beach']);
    const expected = images.map((_, i) => ({ id: `img${i}.png`, s: dot(q, fresh.subarray(i * D, (i + 1) * D)) })).sort((a, b) => b.s - a.s);
    const hits = JSON.parse(await capture(() => searchCommand(['--index', out, '--query', 'a dog on a beach', '--top', '3', '--json'])));
    expect(hits.map((h: { id: string }) => h.id)).toEqual(expected.slice(0, 3).map((e) => e.id));
    hits.forEach((h: { score: number }, r: number) => expect(h.score).toBeCloseTo(expected[r].s, 5));
    // image -> image from a file, and from an id in the index (which leaves the image itself out)
    const byFile = JSON.parse(await capture(() => searchCommand(['--index', out, '--image', images[2], '--top', '2', '--json'])));
    expect(byFile[0].id).toBe('img2.png');
    expect(byFile[0].score).toBeCloseTo(1, 5);
    const like = JSON.parse(await capture(() => searchCommand(['--index', out, '--like', 'img2.png', '--top', '4', '--json'])));
    expect(like.map((h: { id: string }) => h.id)).not.toContain('img2.png');
    expect(like[0].id).toBe(byFile[1].id);
    const textHits = await capture(() => searchCommand(['--index', out, '--like', 'img2.png', '--kind', 'text']));
    expect(textHits).toMatch(/"a (photo of a cat|dog on a beach|red circle)"/);
    expect(clean.size).toBe(8);
  });

  it('user errors', async () => {
    await expect(embedCommand(['--model', run.dir, '--out', join(run.dir, 'x.safetensors')])).rejects.toThrow(/--images and\/or --texts/);
    await expect(embedCommand(['--model', run.dir, '--images', join(run.dir, 'none'), '--out', join(run.dir, 'x.safetensors')])).rejects.toThrow(/no such file or directory/);
    await expect(embedCommand(['--model', run.dir, '--images', join(run.dir, 'photos'), '--out', join(run.dir, 'x.bin')])).rejects.toThrow(/must end in .safetensors/);
    await expect(searchCommand(['--index', join(run.dir, 'none.safetensors'), '--query', 'x'])).rejects.toThrow(/no such file/);
    await expect(searchCommand(['--index', join(run.dir, 'emb.safetensors')])).rejects.toThrow(/exactly one of --query, --image, --like/);
    await expect(searchCommand(['--index', join(run.dir, 'emb.safetensors'), '--like', 'zzz'])).rejects.toThrow(/no such id/);
    mkdirSync(join(run.dir, 'empty'), { recursive: true });
    await expect(embedCommand(['--model', run.dir, '--images', join(run.dir, 'empty'), '--out', join(run.dir, 'y.safetensors')])).rejects.toThrow(/no images/);
    expect(await capture(() => searchCommand(['--help']))).toMatch(/examples:/);
    expect(await capture(() => embedCommand(['--help']))).toMatch(/examples:/);
  });
});
