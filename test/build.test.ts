// The fresh-clone path: the addon matches this source tree, and a machine with nvcc builds the CUDA
// backend in (so a CUDA build break fails CI instead of silently falling back to the CPU).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { info } from '../lib/runtime.js';
import { OP_NAMES } from '../lib/native/ops.gen.js';
import { addon } from '../lib/native/addon.js';

const nvcc = spawnSync('nvcc', ['--version']).status === 0;
const mode = (process.env.TSCLIP_CUDA ?? 'auto').toLowerCase();

describe('build', () => {
  it('the addon was built from this op list', () => {
    expect(addon().opNames()).toEqual([...OP_NAMES]);
  });

  it.skipIf(!nvcc || mode === 'off')(`nvcc is on PATH, so the CUDA backend is compiled in${nvcc ? '' : ' (skipped: no nvcc)'}`, () => {
    expect(info().backends).toContain('cuda');
  });

  it('a CUDA build without a GPU still loads and runs on the CPU', () => {
    const i = info();
    if (i.cudaCompiled && i.cudaDevices.length === 0) expect(i.cudaUnavailableReason).not.toBe('');
    expect(i.backends).toContain('cpu');
  });
});
