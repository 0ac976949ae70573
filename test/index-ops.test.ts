import { describe, expect, it } from 'vitest';
import { ops } from '../lib/index.js';
import { Tensor } from '../lib/tensor.js';
import { checkOp, DEVICE } from './helpers.js';

describe('embedding and gathers', () => {
  it('embedding forward and scatter-add gradient with repeated ids', () => {
    const ids = [3, 0, 3, 1, 4, 3];
    const idT = Tensor.from(Int32Array.from(ids), [2, 3], { device: DEVICE });
    checkOp({
      shapes: [[5, 4]],
      op: ([w]) => ops.embedding(w, idT),
      ref: ([w]) => Float64Array.from({ length: 24 }, (_, i) => w[ids[Math.floor(i / 4)] * 4 + (i % 4)]),
    });
  });

  it('out-of-range ids throw instead of reading out of bounds', () => {
    const w = Tensor.zeros([5, 2], { device: DEVICE });
    const bad = Tensor.from(Int32Array.from([1, 5]), [2], { device: DEVICE });
    expect(() => ops.embedding(w, bad)).toThrow(/gather_rows: index 5 at position 1 is out of range \[0, 5\)/);
    const neg = Tensor.from(Int32Array.from([-1]), [1], { device: DEVICE });
    expect(() => ops.embedding(w, neg)).toThrow(/out of range/);
  });

  it('argmax finds the first largest value', () => {
    const x = Tensor.from(Int32Array.from([1, 9, 9, 0, 2, 5, 3, 5]), [2, 4], { device: DEVICE });
    expect(Array.from(ops.argmax(x).toArraySync())).toEqual([1, 1]);
  });
});
