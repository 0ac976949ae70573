// Where a data worker thread's code comes from. The built package runs data-worker.js, which tsup
// emits next to the bundle that starts it (an entry in tsup.config.ts). Running from the TypeScript
// sources (vitest, or a bundle of them elsewhere) there is no JavaScript a Worker could load, so
// lib/data/worker.ts is bundled with esbuild (tsup's own bundler, present wherever the sources are
// built) into node_modules/.cache/tsclip/, where sharp and the native addon resolve as they do for
// the package. The file is named by a hash of its content, so concurrent processes agree on it.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../native/addon.js';

export const WORKER_NAMES = ['data-worker.js', 'data-worker.mjs', 'data-worker.cjs'];

function here(): string {
  if (typeof __dirname === 'string') return __dirname;
  return dirname(fileURLToPath(import.meta.url));
}

let cached: string | undefined;

/** The path of the worker's JavaScript (built once per process when running from sources). */
export function workerScript(): string {
  if (cached) return cached;
  const dir = here();
  for (const name of WORKER_NAMES) {
    if (existsSync(join(dir, name))) return (cached = join(dir, name));
  }
  const root = packageRoot();
  const src = join(root, 'lib', 'data', 'worker.ts');
  if (!existsSync(src)) {
    throw new Error(`data worker threads: no ${WORKER_NAMES[0]} next to ${dir} and no ${src} to build it from; rebuild the package or use --workers 0`);
  }
  type Esbuild = { buildSync(o: object): { outputFiles: { contents: Uint8Array }[] } };
  let esbuild: Esbuild;
  try {
    // A require made at run time, so that bundlers leave esbuild out of the package.
    esbuild = createRequire(join(root, 'package.json'))('esbuild') as Esbuild;
  } catch (e) {
    throw new Error(`data worker threads: running from the TypeScript sources needs esbuild to build ${src} (${(e as Error).message}); build the package (npm run build) or use --workers 0`);
  }
  const out = esbuild.buildSync({
    entryPoints: [src], bundle: true, platform: 'node', format: 'esm', target: 'node20', external: ['sharp'], write: false, logLevel: 'silent',
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
  const text = out.outputFiles[0].contents;
  const cacheDir = join(root, 'node_modules', '.cache', 'tsclip');
  const file = join(cacheDir, `data-worker-${createHash('sha256').update(text).digest('hex').slice(0, 16)}.mjs`);
  if (!existsSync(file)) {
    mkdirSync(cacheDir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, file);
  }
  return (cached = file);
}
