import { describe, expect, it } from 'vitest';
import { Tensor, tidy, keep, availableDevices } from '../lib/tensor.js';
import { ops } from '../lib/index.js';
import { info } from '../lib/runtime.js';
import { DEVICE } from './helpers.js';

describe('Tensor', () => {
  it('round-trips data of every dtype', () => {
    const f = Tensor.from(new Float32Array([1, 2.5, -3, 4, 5, 6]), [2, 3], { device: DEVICE });
    expect(f.shape).toEqual([2, 3]);
    expect(f.strides).toEqual([3, 1]);
    expect(Array.from(f.toArraySync())).toEqual([1, 2.5, -3, 4, 5, 6]);
    const i = Tensor.from(new Int32Array([7, -8, 2 ** 30]), [3], { device: DEVICE });
    expect(Array.from(i.toArraySync())).toEqual([7, -8, 2 ** 30]);
    const u = Tensor.from(new Uint8Array([0, 255, 17]), [3], { device: DEVICE });
    expect(Array.from(u.toArraySync())).toEqual([0, 255, 17]);
    const b = Tensor.from(new Float32Array([1, 1.005859375, -2, 3.14159]), [4], { device: DEVICE, dtype: 'bfloat16' });
    expect(Array.from(b.toArraySync())).toEqual([1, 1.0078125, -2, 3.140625]);
    for (const t of [f, i, u, b]) t.dispose();
  });

  it('toArray is synchronous on the CPU', () => {
    const t = Tensor.from([1, 2], [2]);
    expect(t.toArray()).toBeInstanceOf(Float32Array);
    t.dispose();
  });

  it('casts between dtypes', () => {
    const f = Tensor.from([1.4, 2.6, -3.5, 300], [4], { device: DEVICE });
    expect(Array.from(ops.cast(f, 'int32').toArraySync())).toEqual([1, 3, -4, 300]);
    expect(Array.from(ops.cast(f, 'uint8').toArraySync())).toEqual([1, 3, 0, 255]);
    f.dispose();
  });

  it('throws on use after dispose, naming the op', () => {
    const t = Tensor.from([1, 2, 3], [3], { device: DEVICE });
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.toArraySync()).toThrow(/used after dispose/);
    expect(() => ops.add(t, t)).toThrow(/add: .*after dispose/);
    t.dispose(); // twice is harmless
  });

  it('Symbol.dispose frees with `using`', () => {
    let ref: Tensor;
    {
      using t = Tensor.zeros([4], { device: DEVICE });
      ref = t;
      expect(t.disposed).toBe(false);
    }
    expect(ref.disposed).toBe(true);
  });

  it('tidy frees intermediates and keeps what is returned', () => {
    let inner: Tensor | undefined, kept: Tensor | undefined;
    const out = tidy(() => {
      const a = Tensor.ones([3], { device: DEVICE });
      inner = ops.add(a, a);
      kept = keep(ops.mul(a, a));
      return { result: ops.add(inner, a) };
    });
    expect(inner!.disposed).toBe(true);
    expect(kept!.disposed).toBe(false);
    expect(Array.from(out.result.toArraySync())).toEqual([3, 3, 3]);
    out.result.dispose();
    kept!.dispose();
  });

  it('views share storage and survive the disposal of their base', () => {
    const a = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3], { device: DEVICE });
    const t = ops.transpose(a);
    expect(t.shape).toEqual([3, 2]);
    expect(t.isContiguous).toBe(false);
    a.dispose();
    expect(t.toList()).toEqual([[1, 4], [2, 5], [3, 6]]);
    const s = ops.slice(t, 0, 1, 3);
    expect(s.toList()).toEqual([[2, 5], [3, 6]]);
    t.dispose();
    s.dispose();
  });

  it('empty tensors: zeros, ops and views with a zero-sized dimension', () => {
    const z = Tensor.zeros([0, 8], { device: DEVICE });
    expect(z.shape).toEqual([0, 8]);
    expect((z.toArraySync() as Float32Array).length).toBe(0);
    const y = ops.add(z, Tensor.ones([8], { device: DEVICE }));
    expect(y.shape).toEqual([0, 8]);
    expect(ops.sum(Tensor.zeros([3, 0], { device: DEVICE }), 1).toArraySync()).toEqual(new Float32Array([0, 0, 0]));
  });

  it('rejects bad shapes and data', () => {
    expect(() => Tensor.from([1, 2, 3], [2, 2])).toThrow(/3 values do not fill shape \[2,2\]/);
    expect(() => Tensor.empty([2, -1])).toThrow(/invalid shape/);
    expect(() => Tensor.from(new Int32Array(2), [2], { dtype: 'float32' })).toThrow(/cannot hold float32/);
  });

  it('reports devices and refuses unknown ones with the list', () => {
    expect(availableDevices()).toContain('cpu');
    expect(() => Tensor.zeros([1], { device: 'tpu' as never })).toThrow(/unknown device 'tpu'; available devices: cpu/);
    const i = info();
    expect(i.backends).toContain('cpu');
    expect(i.threads).toBeGreaterThan(0);
    if (!i.cudaCompiled || i.cudaDevices.length === 0) {
      expect(() => Tensor.zeros([1], { device: 'cuda' })).toThrow(/'cuda' is not available/);
    }
  });

  it('moves between devices', () => {
    const a = Tensor.from([1, 2, 3], [3]);
    const b = a.to(DEVICE);
    const c = b.to('cpu');
    expect(Array.from(c.toArraySync())).toEqual([1, 2, 3]);
    for (const t of new Set([a, b, c])) t.dispose();
  });
});
