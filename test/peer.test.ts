// Full-size parity: ViT-B/32 with the peer's patterned weights against the original model's outputs.
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors } from '../lib/io/safetensors.js';
import { toFloat32, toInt32 } from '../lib/io/raw.js';
import { createCLIP } from '../lib/models/clip.js';
import { loadStateDict } from '../lib/models/load.js';
import { Tensor, tidy } from '../lib/tensor.js';
import { PEER_ARCHIVE, patternedWeights, unpackPeer } from '../bench/peer.js';
import { DEVICE, relErr } from './helpers.js';

const have = existsSync(PEER_ARCHIVE);

describe.skipIf(!have)(`ViT-B/32 at full size${have ? '' : ' (skipped: ../shared peers missing)'}`, () => {
  it('image and text features match the original within 1e-3', async () => {
    const dir = unpackPeer();
    const model = createCLIP('ViT-B/32', { device: DEVICE });
    loadStateDict(model, patternedWeights(dir), 'patterned ViT-B/32');
    model.eval();
    const io = await readSafetensors(join(dir, 'io.safetensors'));
    const get = (k: string) => io.tensors.get(k)!;
    const images = Tensor.from(toFloat32(get('images')), get('images').shape, { device: DEVICE });
    const tokens = Tensor.from(toInt32(get('tokens')), get('tokens').shape, { device: DEVICE });
    tidy(() => {
      const img = model.encodeImage(images).toArraySync() as Float32Array;
      const txt = model.encodeText(tokens).toArraySync() as Float32Array;
      expect(relErr(img, toFloat32(get('image_features')))).toBeLessThan(1e-3);
      expect(relErr(txt, toFloat32(get('text_features')))).toBeLessThan(1e-3);
    });
    model.dispose();
  });
});
