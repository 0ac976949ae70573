// `npm run bench -- <name> [args]`: bundles bench/<name>.bench.ts with esbuild and runs it.
// Benchmarks print numbers and ratios; none of them is a test.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [name, ...args] = process.argv.slice(2);
const available = readdirSync(here).filter((f) => f.endsWith('.bench.ts')).map((f) => f.replace('.bench.ts', ''));
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- <${available.join('|')}> [args]`);
  process.exit(name ? 2 : 0);
}
// Inside node_modules so that external packages (sharp, onnxruntime-node) resolve from the project.
const out = join(here, '..', 'node_modules', '.cache', 'tsclip-bench', `${name}.cjs`);
await build({
  entryPoints: [join(here, `${name}.bench.ts`)],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: out,
  external: ['sharp', 'onnxruntime-node'],
  define: { 'import.meta.url': 'import_meta_url' },
  banner: { js: `const import_meta_url = require('url').pathToFileURL(__filename).href; const __benchdir = ${JSON.stringify(here)};` },
  logLevel: 'warning',
});
const r = spawnSync(process.execPath, [out, ...args], { stdio: 'inherit', env: { ...process.env, TSCLIP_ADDON: process.env.TSCLIP_ADDON ?? join(here, '..', 'build', 'Release', 'tsclip.node') } });
process.exit(r.status ?? 1);
