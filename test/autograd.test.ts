import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { liveStorages, ops, noGrad } from '../lib/index.js';
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

  it('a 1,000-step training loop keeps memory flat', async () => {
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
    // Node runs the finalizers of collected native objects from the event loop: garbage is
    // collected and the loop turned before each reading of the memory use.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    const usage = async () => {
      gc();
      await turn();
      return process.memoryUsage();
    };
    const first = step();
    for (let i = 0; i < 300; i++) { // the allocator's caches and the compiled code settle first
      step();
      if (i % 100 === 99) await turn();
    }
    const before = await usage();
    const storages = liveStorages();
    // Synchronously, so that no finalizer runs: a tensor one step forgets to dispose, even a
    // scalar that the garbage collector would free later, changes the exact count.
    let last = 0;
    for (let i = 0; i < 1000; i++) last = step();
    expect(liveStorages()).toBe(storages);
    expect(last).toBeLessThan(first);
    const after = await usage();
    // Native bytes are reported to V8 as external memory when made and when freed.
    expect(after.external - before.external).toBeLessThan(64 * 1024);
    // Memory held without being reported shows in the resident size. Coarse: V8 grows its young
    // generation by 16 MiB at times.
    expect(after.rss - before.rss).toBeLessThan(32 * 1024 * 1024);
  });
});

