import { describe, expect, it } from 'vitest';
import { ops } from '../lib/index.js';
import { checkOp, randArray, tensor } from './helpers.js';

function permuteRef(v: Float64Array, shape: number[], dims: number[]): Float64Array {
  const out = new Float64Array(v.length);
  const oshape = dims.map((d) => shape[d]);
  const istr = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  for (let i = 0; i < v.length; i++) {
    let r = i, off = 0;
    for (let d = oshape.length - 1; d >= 0; d--) {
      off += (r % oshape[d]) * istr[dims[d]];
      r = Math.floor(r / oshape[d]);
    }
    out[i] = v[off];
  }
  return out;
}

describe('shape ops', () => {
  it('permute and contiguous, with gradient', () => {
    const shape = [2, 3, 4];
    checkOp({ shapes: [shape], op: ([t]) => ops.contiguous(ops.permute(t, [2, 0, 1])), ref: ([v]) => permuteRef(v, shape, [2, 0, 1]) });
  });

  it('reshape of a non-contiguous view copies, with gradient', () => {
    const shape = [3, 4];
    checkOp({ shapes: [shape], op: ([t]) => ops.reshape(ops.transpose(t), [2, 6]), ref: ([v]) => permuteRef(v, shape, [1, 0]) });
    const t = tensor(randArray(12, 1), [3, 4]);
    expect(ops.reshape(t, [-1, 6]).shape).toEqual([2, 6]);
    expect(() => ops.reshape(t, [5, -1])).toThrow(/reshape: cannot reshape float32\[3,4\]/);
  });

  it('slice, select and concat with gradients', () => {
    checkOp({ shapes: [[4, 5]], op: ([t]) => ops.contiguous(ops.slice(t, 1, 1, 4)), ref: ([v]) => Float64Array.from({ length: 12 }, (_, i) => v[Math.floor(i / 3) * 5 + 1 + (i % 3)]) });
    checkOp({ shapes: [[4, 5]], op: ([t]) => ops.contiguous(ops.select(t, 0, 2)), ref: ([v]) => v.slice(10, 15) });
    checkOp({
      shapes: [[2, 3], [2, 1]],
      op: ([a, b]) => ops.concat([a, b], 1),
      ref: ([a, b]) => Float64Array.of(a[0], a[1], a[2], b[0], a[3], a[4], a[5], b[1]),
    });
    const a = tensor([1, 2], [2]);
    expect(() => ops.slice(a, 0, 1, 3)).toThrow(/slice: range 1..3 is out of bounds/);
    expect(() => ops.concat([a, tensor([1, 2, 3, 4], [2, 2])])).toThrow(/concat: shapes/);
  });

  it('expand with gradient summing back', () => {
    checkOp({ shapes: [[3, 1]], op: ([t]) => ops.contiguous(ops.expand(t, [2, 3, 4])), ref: ([v]) => Float64Array.from({ length: 24 }, (_, i) => v[Math.floor(i / 4) % 3]) });
  });

  it('stack', () => {
    const out = ops.stack([tensor([1, 2], [2]), tensor([3, 4], [2])], 1);
    expect(out.toList()).toEqual([[1, 3], [2, 4]]);
  });
});
