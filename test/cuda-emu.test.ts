// The CUDA kernels, compiled as C++ against CPU emulations of the CUDA runtime (native/cuda/dev),
// checked here on machines without a GPU: the op kernels against the CPU backend, the tensor-core
// GEMM, attention and contrastive-loss kernels against float64 references. What an emulator
// cannot see (speed, coalescing, real atomics, the sm_90a wgmma path) is left to bench/gpu.sh.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const root = join(__dirname, '..');
const gxx = spawnSync('g++', ['--version']).status === 0 && spawnSync('make', ['--version']).status === 0;

describe.skipIf(!gxx)(`CUDA kernels under CPU emulation${gxx ? '' : ' (skipped: no g++/make)'}`, () => {
  it('op kernels (elementwise, index, norm, loss, optim, conv, image) match the CPU backend', () => {
    const out = mkdtempSync(join(tmpdir(), 'tsclip-emu-'));
    const b = spawnSync('make', ['-s', '-C', join(root, 'native/cuda/dev'), 'ops-emu', `OUT=${out}`], { encoding: 'utf8' });
    expect(b.status, b.stderr).toBe(0);
    const r = spawnSync(join(out, 'ops_emu_test'), [], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/\d+ checks, 0 failures/);
    expect(r.status, r.stdout.slice(-2000)).toBe(0);
  }, 600_000);

  it('tensor-core GEMM, attention and contrastive-loss kernels match float64 references', () => {
    const r = spawnSync('bash', [join(root, 'native/cuda/dev/build.sh'), 'emu'], { encoding: 'utf8', env: { ...process.env, TMPDIR: mkdtempSync(join(tmpdir(), 'tsclip-emu-')) } });
    expect(r.stdout).toMatch(/\d+ checks, 0 failed/);
    expect(r.status, r.stdout.slice(-2000)).toBe(0);
  }, 600_000);
});
