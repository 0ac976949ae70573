import { defineConfig } from 'tsup';

export default defineConfig({
  // data-worker: the worker threads' code, found next to the bundle that starts them (lib/data/worker-script.ts).
  entry: { index: 'lib/index.ts', cli: 'lib/cli/main.ts', 'data-worker': 'lib/data/worker.ts' },
  format: ['esm', 'cjs'],
  target: 'node20',
  platform: 'node',
  dts: { entry: { index: 'lib/index.ts' } },
  sourcemap: true,
  clean: true,
  shims: true,
  splitting: false,
  external: ['sharp'],
});
