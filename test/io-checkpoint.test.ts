import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { convertCheckpoint, detectFormat, readCheckpoint, writeCheckpoint } from '../lib/io/checkpoint.js';
import { configFromOpenAI, inferConfig, parseClipConfig, type ClipConfig } from '../lib/io/config.js';
import { castFloat, toFloat32, type RawTensor } from '../lib/io/raw.js';
import { readSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { FIXTURES, HAVE_FIXTURES } from './io-helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tsclip-ck-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const fixture = (name: string) => JSON.parse(readFileSync(path.join(FIXTURES, name, 'fixture.json'), 'utf8'));
const weights = (name: string) => path.join(FIXTURES, name, 'weights.safetensors');

function sameTensors(a: Map<string, RawTensor>, b: Map<string, RawTensor>): void {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    expect([k, u.dtype, u.shape]).toEqual([k, t.dtype, t.shape]);
    expect(Buffer.from(u.data).equals(Buffer.from(t.data))).toBe(true);
  }
}

describe.skipIf(!HAVE_FIXTURES)('config inference from weights (needs ../shared/fixtures; skipped when missing)', () => {
  test('openai-vit-tiny: every field equals fixture.json', async () => {
    const c = fixture('openai-vit-tiny').config;
    const cfg = inferConfig((await readSafetensors(weights('openai-vit-tiny'))).tensors);
    expect(cfg.vision.kind).toBe('vit');
    if (cfg.vision.kind !== 'vit') return;
    expect(cfg.embedDim).toBe(c.embed_dim);
    expect(cfg.vision.imageSize).toBe(c.image_resolution);
    expect(cfg.vision.layers).toBe(c.vision_layers);
    expect(cfg.vision.width).toBe(c.vision_width);
    expect(cfg.vision.patchSize).toBe(c.vision_patch_size);
    expect(cfg.vision.heads).toBe(Math.floor(c.vision_width / 64));
    expect(cfg.text).toEqual({
      contextLength: c.context_length,
      vocabSize: c.vocab_size,
      width: c.transformer_width,
      heads: c.transformer_heads,
      layers: c.transformer_layers,
    });
    expect(cfg.activation).toBe('quick_gelu');
  });

  test('openai-rn-tiny: stage counts, width, resolution and attention-pool heads', async () => {
    const c = fixture('openai-rn-tiny').config;
    const { tensors } = await readSafetensors(weights('openai-rn-tiny'));
    const cfg = inferConfig(tensors);
    expect(cfg.vision.kind).toBe('resnet');
    if (cfg.vision.kind !== 'resnet') return;
    expect(cfg.vision.layers).toEqual(c.vision_layers);
    expect(cfg.vision.width).toBe(c.vision_width);
    expect(cfg.vision.imageSize).toBe(c.image_resolution);
    // The attention pool runs on width * 32 channels (its q projection shows it) at 64 per head.
    const poolChannels = tensors.get('visual.attnpool.q_proj.weight')!.shape[0];
    expect(poolChannels).toBe(c.vision_width * 32);
    expect(cfg.vision.heads).toBe(poolChannels / 64);
    expect(cfg.embedDim).toBe(c.embed_dim);
    expect(cfg.text).toEqual({
      contextLength: c.context_length,
      vocabSize: c.vocab_size,
      width: c.transformer_width,
      heads: c.transformer_heads,
      layers: c.transformer_layers,
    });
  });

  test('readCheckpoint uses the metadata config and checks it against the weights', async () => {
    for (const name of ['openai-vit-tiny', 'openai-rn-tiny']) {
      const ck = await readCheckpoint(weights(name));
      expect(ck.format).toBe('safetensors');
      expect(ck.config).toEqual(configFromOpenAI(fixture(name).config));
    }
    // A declared config that contradicts the shapes is an error, not a silent pick.
    const { tensors, metadata } = await readSafetensors(weights('openai-vit-tiny'));
    const lying = JSON.parse(metadata.config);
    lying.vision_width = 256;
    const file = path.join(tmp, 'lying.safetensors');
    await writeSafetensors(file, tensors, { ...metadata, config: JSON.stringify(lying) });
    await expect(readCheckpoint(file)).rejects.toThrow(/lying\.safetensors: config says vision\.width = 256, but the weights imply 128/);
  });

  test('a missing tensor is named', async () => {
    const { tensors } = await readSafetensors(weights('openai-vit-tiny'));
    tensors.delete('ln_final.weight');
    expect(() => inferConfig(tensors)).toThrow(/cannot infer CLIP config: missing tensor "ln_final\.weight"/);
  });

  test('writeCheckpoint stores tsclip.config; heads and activation survive the round trip', async () => {
    const { tensors } = await readSafetensors(weights('openai-vit-tiny'));
    const base = inferConfig(tensors);
    const custom: ClipConfig = { ...base, activation: 'gelu', vision: { ...base.vision, heads: 4 } };
    const file = path.join(tmp, 'custom.safetensors');
    await writeCheckpoint(file, tensors, { config: custom, metadata: { note: 'kept' } });
    const back = await readCheckpoint(file);
    expect(back.config).toEqual(custom);
    expect(back.metadata.note).toBe('kept');
    expect(parseClipConfig(JSON.parse(back.metadata['tsclip.config']))).toEqual(custom);
    sameTensors(tensors, back.tensors);
    await expect(writeCheckpoint(path.join(tmp, 'bad.safetensors'), tensors, { config: { ...base, embedDim: 32 } })).rejects.toThrow(
      /config says embedDim = 32, but the weights imply 64/,
    );
  });

  test('convert: safetensors -> HF directory -> safetensors keeps every tensor and the config', async () => {
    const src = await readCheckpoint(weights('openai-vit-tiny'));
    const hfDir = path.join(tmp, 'vit-hf');
    const r1 = await convertCheckpoint(weights('openai-vit-tiny'), hfDir, { format: 'hf' });
    expect(r1).toMatchObject({ from: 'safetensors', to: 'hf', tensors: src.tensors.size });
    expect(await detectFormat(hfDir)).toBe('hf');
    const back = path.join(tmp, 'vit-back.safetensors');
    const r2 = await convertCheckpoint(hfDir, back);
    expect(r2).toMatchObject({ from: 'hf', to: 'safetensors' });
    const ck = await readCheckpoint(back);
    expect(ck.config).toEqual(src.config);
    sameTensors(src.tensors, ck.tensors);
  });

  test('convert with a dtype casts float tensors and keeps integer ones', async () => {
    const out = path.join(tmp, 'rn-bf16.safetensors');
    await convertCheckpoint(weights('openai-rn-tiny'), out, { dtype: 'BF16' });
    const src = await readCheckpoint(weights('openai-rn-tiny'));
    const ck = await readCheckpoint(out);
    expect(ck.config).toEqual(src.config);
    for (const [k, t] of src.tensors) {
      const u = ck.tensors.get(k)!;
      if (t.dtype === 'I64') {
        expect(u.dtype).toBe('I64');
        continue;
      }
      expect(u.dtype).toBe('BF16');
      expect(toFloat32(u)).toEqual(toFloat32(castFloat(t, 'BF16')));
    }
  });

  test('a ResNet cannot be written as HF', async () => {
    await expect(convertCheckpoint(weights('openai-rn-tiny'), path.join(tmp, 'rn-hf'), { format: 'hf' })).rejects.toThrow(
      /HF CLIPModel has only ViT image towers/,
    );
  });

  test('a lone HF model.safetensors is mapped to original names', async () => {
    const ck = await readCheckpoint(path.join(FIXTURES, 'hf-vit-tiny', 'model.safetensors'));
    expect(ck.format).toBe('safetensors');
    expect(ck.tensors.has('transformer.resblocks.0.attn.in_proj_weight')).toBe(true);
    expect(ck.config).toEqual(configFromOpenAI(fixture('openai-vit-tiny').config));
  });

  test('non-CLIP safetensors have no config', async () => {
    const ck = await readCheckpoint(path.join(FIXTURES, 'openai-vit-tiny', 'io.safetensors'));
    expect(ck.config).toBeUndefined();
    expect(ck.tensors.get('tokens')!.dtype).toBe('I32');
  });
});

describe('format detection by content', () => {
  test('each format and each refusal', async () => {
    const st = path.join(tmp, 'weights.bin'); // the extension is irrelevant
    await writeSafetensors(st, { a: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } });
    expect(await detectFormat(st)).toBe('safetensors');
    const zip = path.join(tmp, 'x.safetensors');
    writeFileSync(zip, Buffer.from('PK\x03\x04rest of a zip'));
    expect(await detectFormat(zip)).toBe('openai-pt');
    const legacy = path.join(tmp, 'legacy.pt');
    writeFileSync(legacy, Buffer.from([0x80, 0x02, 0x8a, 0x0a]));
    await expect(detectFormat(legacy)).rejects.toThrow(/legacy\.pt: a bare pickle \(torch\.save before PyTorch 1\.6\) is not supported/);
    const junk = path.join(tmp, 'junk');
    writeFileSync(junk, 'hello world, not a checkpoint');
    await expect(detectFormat(junk)).rejects.toThrow(/junk: unrecognized format \(first bytes 68656c6c6f20776f\)/);
    const emptyDir = path.join(tmp, 'emptydir');
    mkdirSync(emptyDir);
    await expect(detectFormat(emptyDir)).rejects.toThrow(/emptydir: a directory must hold an HF config\.json/);
    await expect(readCheckpoint(path.join(tmp, 'nope'))).rejects.toThrow(/checkpoint .*nope: no such file or directory/);
  });
});
