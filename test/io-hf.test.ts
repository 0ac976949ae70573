import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { readCheckpoint } from '../lib/io/checkpoint.js';
import { configFromOpenAI } from '../lib/io/config.js';
import { hfToOriginal, originalToHF, readHFDir, writeHFDir } from '../lib/io/hf.js';
import { fromFloat32, toFloat32, type RawTensor } from '../lib/io/raw.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { FIXTURES, HAVE_FIXTURES } from './io-helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tsclip-hf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const seq = (n: number, start: number, shape: number[]) => fromFloat32(Float32Array.from({ length: n }, (_, i) => start + i), shape);

describe('HF name mapping on synthetic tensors', () => {
  test('q/k/v stack in order, projections transpose, unknown names are refused', () => {
    const hf = new Map<string, RawTensor>([
      ['text_model.encoder.layers.3.self_attn.k_proj.bias', seq(2, 10, [2])],
      ['text_model.encoder.layers.3.self_attn.v_proj.bias', seq(2, 20, [2])],
      ['text_model.encoder.layers.3.self_attn.q_proj.bias', seq(2, 0, [2])],
      ['visual_projection.weight', seq(6, 0, [2, 3])],
      ['text_model.embeddings.position_ids', seq(3, 0, [1, 3])],
    ]);
    const o = hfToOriginal(hf);
    expect([...o.keys()].sort()).toEqual(['transformer.resblocks.3.attn.in_proj_bias', 'visual.proj']);
    expect([...toFloat32(o.get('transformer.resblocks.3.attn.in_proj_bias')!)]).toEqual([0, 1, 10, 11, 20, 21]);
    expect(o.get('visual.proj')!.shape).toEqual([3, 2]);
    expect([...toFloat32(o.get('visual.proj')!)]).toEqual([0, 3, 1, 4, 2, 5]);
    expect(() => hfToOriginal(new Map([['text_model.encoder.layers.0.self_attn.q_proj.weight', seq(4, 0, [2, 2])]]), 'm')).toThrow(
      /m: transformer\.resblocks\.0\.attn\.in_proj_weight needs q, k and v projections, missing k, v/,
    );
    expect(() => hfToOriginal(new Map([['text_model.pooler.weight', seq(1, 0, [1])]]), 'm')).toThrow(/m: tensor "text_model\.pooler\.weight" is not part of a CLIP model/);
    expect(() => hfToOriginal(new Map([['vision_model.encoder.layers.0.adapter.weight', seq(1, 0, [1])]]), 'm')).toThrow(/is not part of a CLIP layer/);
    expect(() => originalToHF(new Map([['visual.layer1.0.conv1.weight', seq(1, 0, [1, 1, 1, 1])]]), 'rn')).toThrow(
      /rn: tensor "visual\.layer1\.0\.conv1\.weight" has no HF CLIPModel name \(HF CLIPModel has only ViT image towers\)/,
    );
  });
});

describe.skipIf(!HAVE_FIXTURES)('hf-vit-tiny fixture against openai-vit-tiny names (needs ../shared/fixtures; skipped when missing)', () => {
  const hfDir = path.join(FIXTURES, 'hf-vit-tiny');
  const hfFile = path.join(hfDir, 'model.safetensors');
  const openaiFile = path.join(FIXTURES, 'openai-vit-tiny', 'weights.safetensors');

  test('mapping gives the original key set and shapes; in_proj = concat(q, k, v); projections transposed', async () => {
    const { tensors: hf } = await readSafetensors(hfFile);
    const { tensors: ref } = await readSafetensors(openaiFile);
    const o = hfToOriginal(hf);
    expect([...o.keys()].sort()).toEqual([...ref.keys()].sort());
    for (const [k, t] of ref) expect([k, o.get(k)!.shape]).toEqual([k, t.shape]);

    for (const [hfTower, tower] of [
      ['text_model', 'transformer'],
      ['vision_model', 'visual.transformer'],
    ]) {
      for (const layer of [0, 1]) {
        for (const kind of ['weight', 'bias']) {
          const part = (p: string) => toFloat32(hf.get(`${hfTower}.encoder.layers.${layer}.self_attn.${p}_proj.${kind}`)!);
          const [q, k, v] = [part('q'), part('k'), part('v')];
          const want = new Float32Array(q.length * 3);
          want.set(q, 0);
          want.set(k, q.length);
          want.set(v, 2 * q.length);
          expect(toFloat32(o.get(`${tower}.resblocks.${layer}.attn.in_proj_${kind}`)!)).toEqual(want);
        }
      }
    }
    for (const [hfName, name] of [
      ['text_projection.weight', 'text_projection'],
      ['visual_projection.weight', 'visual.proj'],
    ]) {
      const src = hf.get(hfName)!;
      const [out, inp] = src.shape;
      const a = toFloat32(src);
      const b = toFloat32(o.get(name)!);
      expect(o.get(name)!.shape).toEqual([inp, out]);
      let mismatches = 0;
      for (let i = 0; i < inp; i++) for (let j = 0; j < out; j++) if (b[i * out + j] !== a[j * inp + i]) mismatches++;
      expect(mismatches).toBe(0);
    }
    // Renamed-only tensors keep their bytes.
    expect(toFloat32(o.get('visual.conv1.weight')!)).toEqual(toFloat32(hf.get('vision_model.embeddings.patch_embedding.weight')!));
    expect(toFloat32(o.get('transformer.resblocks.1.mlp.c_proj.bias')!)).toEqual(toFloat32(hf.get('text_model.encoder.layers.1.mlp.fc2.bias')!));
    expect(toFloat32(o.get('visual.ln_pre.weight')!)).toEqual(toFloat32(hf.get('vision_model.pre_layrnorm.weight')!));
  });

  test('the reverse mapping restores every HF tensor exactly', async () => {
    const { tensors: hf } = await readSafetensors(hfFile);
    const back = originalToHF(hfToOriginal(hf));
    expect([...back.keys()].sort()).toEqual([...hf.keys()].sort());
    for (const [k, t] of hf) {
      expect(back.get(k)!.shape).toEqual(t.shape);
      expect(Buffer.from(back.get(k)!.data).equals(Buffer.from(t.data))).toBe(true);
    }
  });

  test('readCheckpoint on the directory: format hf, the same config as the OpenAI fixture', async () => {
    const ck = await readCheckpoint(hfDir);
    expect(ck.format).toBe('hf');
    const fixture = JSON.parse(readFileSync(path.join(FIXTURES, 'openai-vit-tiny', 'fixture.json'), 'utf8'));
    expect(ck.config).toEqual(configFromOpenAI(fixture.config));
    const hfConfig = JSON.parse(readFileSync(path.join(hfDir, 'config.json'), 'utf8'));
    expect(ck.config!.activation).toBe(hfConfig.text_config.hidden_act);
    expect(ck.config!.text.heads).toBe(hfConfig.text_config.num_attention_heads);
    expect(ck.config!.vision.heads).toBe(hfConfig.vision_config.num_attention_heads);
  });

  test('writeHFDir then readHFDir round-trips tensors and config', async () => {
    const src = await readHFDir(hfDir);
    const out = path.join(tmp, 'written');
    await writeHFDir(out, src.tensors, src.config);
    const again = await readHFDir(out);
    expect(again.config).toEqual(src.config);
    for (const [k, t] of src.tensors) expect(Buffer.from(again.tensors.get(k)!.data).equals(Buffer.from(t.data))).toBe(true);
    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    const orig = JSON.parse(readFileSync(path.join(hfDir, 'config.json'), 'utf8'));
    for (const k of ['hidden_size', 'intermediate_size', 'num_attention_heads', 'num_hidden_layers', 'hidden_act', 'vocab_size', 'max_position_embeddings', 'bos_token_id', 'eos_token_id']) {
      expect([k, cfg.text_config[k]]).toEqual([k, orig.text_config[k]]);
    }
    for (const k of ['hidden_size', 'intermediate_size', 'num_attention_heads', 'num_hidden_layers', 'hidden_act', 'image_size', 'patch_size']) {
      expect([k, cfg.vision_config[k]]).toEqual([k, orig.vision_config[k]]);
    }
    expect(cfg.projection_dim).toBe(orig.projection_dim);
    expect((await readSafetensors(path.join(out, 'model.safetensors'))).metadata.format).toBe('pt');
  });

  /** A copy of the fixture directory with config.json edited. */
  function variant(name: string, edit: (c: Record<string, any>) => void): string {
    const d = path.join(tmp, name);
    mkdirSync(d, { recursive: true });
    copyFileSync(hfFile, path.join(d, 'model.safetensors'));
    const c = JSON.parse(readFileSync(path.join(hfDir, 'config.json'), 'utf8'));
    edit(c);
    writeFileSync(path.join(d, 'config.json'), JSON.stringify(c));
    return d;
  }

  test('hidden_act selects the activation; unsupported or mixed values are refused', async () => {
    const gelu = variant('gelu', (c) => {
      c.text_config.hidden_act = 'gelu';
      c.vision_config.hidden_act = 'gelu';
    });
    expect((await readCheckpoint(gelu)).config!.activation).toBe('gelu');
    const mixed = variant('mixed', (c) => (c.vision_config.hidden_act = 'gelu'));
    await expect(readCheckpoint(mixed)).rejects.toThrow(/text hidden_act "quick_gelu" differs from vision hidden_act "gelu"/);
    const tanh = variant('tanh', (c) => (c.text_config.hidden_act = 'gelu_pytorch_tanh'));
    await expect(readCheckpoint(tanh)).rejects.toThrow(/text_config\.hidden_act: activation "gelu_pytorch_tanh" is not supported/);
  });

  test('head counts come from config.json; sizes that contradict the weights are refused', async () => {
    const heads = variant('heads', (c) => (c.vision_config.num_attention_heads = 4));
    expect((await readCheckpoint(heads)).config!.vision.heads).toBe(4);
    const wrong = variant('wrong', (c) => (c.text_config.hidden_size = 256));
    await expect(readCheckpoint(wrong)).rejects.toThrow(/config\.json: text_config\.hidden_size is 256, but the weights imply 128/);
    const badHeads = variant('badheads', (c) => (c.text_config.num_attention_heads = 3));
    await expect(readCheckpoint(badHeads)).rejects.toThrow(/text width 128 is not divisible by 3 heads/);
    const eps = variant('eps', (c) => (c.text_config.layer_norm_eps = 1e-6));
    await expect(readCheckpoint(eps)).rejects.toThrow(/text_config\.layer_norm_eps is 0\.000001, only 1e-5/);
  });
});
