// The CUDA kernels, compiled as C++ against CPU emulations of the CUDA runtime (native/cuda/dev),
// checked here on machines without a GPU: the op kernels against the CPU backend, the tensor-core
// GEMM, attention, contrastive-loss and conv kernels against float64 references. What an emulator
// cannot see (speed, coalescing, real atomics, the sm_90a wgmma path) is left to bench/gpu.sh.
import { describe, expect, it } from 'vitest';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
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

  // build.sh emu compiles the emulator test once and runs all its groups; the tests below read it
  let tensorCoreRun: SpawnSyncReturns<string> | undefined;
  const tensorCore = () =>
    (tensorCoreRun ??= spawnSync('bash', [join(root, 'native/cuda/dev/build.sh'), 'emu'], { encoding: 'utf8', env: { ...process.env, TMPDIR: mkdtempSync(join(tmpdir(), 'tsclip-emu-')) } }));

  it('tensor-core GEMM, attention and contrastive-loss kernels match float64 references', () => {
    const r = tensorCore();
    expect(r.stdout).toMatch(/\d+ checks, 0 failed/);
    expect(r.status, r.stdout.slice(-2000)).toBe(0);
  }, 600_000);

  it('implicit-GEMM conv kernels (tensor cores and the fp32 fallback) match float64 references in all three directions', () => {
    const lines = tensorCore().stdout.split('\n').filter((l) => /^(ok {3}|FAIL )conv /.test(l));
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    // every direction on tensor cores over the case list (3x3/1x1, stride 1/2, stem, f32), and v1
    for (const dir of ['fwd', 'bwd_data', 'bwd_weight']) {
      const mma = lines.filter((l) => l.startsWith('ok   conv mma ') && l.includes(` ${dir} `));
      expect(mma.length, `${dir} checks`).toBeGreaterThanOrEqual(8);
      expect(lines.some((l) => l.startsWith('ok   conv simple ') && l.includes(` ${dir}`)), `${dir} v1`).toBe(true);
    }
    expect(lines.some((l) => / bwd_weight .*splits [2-9]/.test(l)), 'a split weight gradient').toBe(true);
  }, 600_000);
});
