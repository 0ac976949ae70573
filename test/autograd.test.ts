import { describe, expect, it } from 'vitest';
import { ops, noGrad } from '../lib/index.js';
import { runRaw, tidy } from '../lib/tensor.js';
import { randArray, tensor } from './helpers.js';

describe('autograd', () => {
  it('accumulates gradients through shared inputs and across calls', () => {
    const x = tensor([1, 2, 3], [3], true);
    const y = ops.sum(ops.mul(x, x)); // d/dx = 2x
    y.backward();
    expect(Array.from(x.grad!.toArraySync())).toEqual([2, 4, 6]);
    const z = ops.sum(ops.add(x, ops.mul(x, 3))); // d/dx = 4, accumulated
    z.backward();
    expect(Array.from(x.grad!.toArraySync())).toEqual([6, 8, 10]);
  });

  it('noGrad records nothing', () => {
    const x = tensor([1, 2], [2], true);
    const y = noGrad(() => ops.mul(x, 2));
    expect(y.requiresGrad).toBe(false);
    expect(y.gradFn).toBeNull();
  });

  it('rejects backward on non-scalars without a gradient', () => {
    const x = tensor([1, 2], [2], true);
    expect(() => ops.mul(x, 2).backward()).toThrow(/not a scalar/);
    expect(() => tensor([1], [1]).backward()).toThrow(/does not require grad/);
  });

  it('frees the graph after backward', () => {
    const x = tensor([1, 2], [2], true);
    const y = ops.mul(x, x);
    const s = ops.sum(y);
    s.backward();
    expect(s.gradFn).toBeNull();
    expect(y.gradFn).toBeNull();
  });

  it('a 1,000-step training loop keeps memory flat', () => {
    const w1 = tensor(randArray(16 * 8, 1), [16, 8], true);
    const b1 = tensor(randArray(16, 2), [16], true);
    const w2 = tensor(randArray(1 * 16, 3), [1, 16], true);
    const x = tensor(randArray(32 * 8, 4), [32, 8]);
    const target = tensor(randArray(32, 5), [32, 1]);
    const step = () =>
      tidy(() => {
        const h = ops.quickGelu(ops.linear(x, w1, b1));
        const y = ops.linear(h, w2);
        const loss = ops.mean(ops.square(ops.sub(y, target)));
        loss.backward();
        for (const p of [w1, b1, w2]) {
          // plain SGD, in place: p -= 0.05 * grad
          const d = ops.mul(p.grad!, 0.05);
          runRaw('binary', [p, d], [p], [1]);
          p.grad!.dispose();
          p.grad = null;
        }
        return loss.item();
      });
    const first = step();
    for (let i = 0; i < 50; i++) step();
    const rss0 = process.memoryUsage().rss;
    let last = 0;
    for (let i = 0; i < 1000; i++) last = step();
    const grown = process.memoryUsage().rss - rss0;
    expect(last).toBeLessThan(first);
    expect(grown).toBeLessThan(20 * 1024 * 1024);
  });
});

