// Builds the addon with cmake-js: the CPU backend always, the CUDA backend too when nvcc is found
// (TSCLIP_CUDA=auto, the default), required (on) or skipped (off). A failed CUDA build falls back
// to a CPU-only build with a message; only a failed CPU build fails the install.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const mode = (process.env.TSCLIP_CUDA ?? 'auto').toLowerCase();
if (!['auto', 'on', 'off'].includes(mode)) {
  console.error(`tsclip: TSCLIP_CUDA must be auto, on or off (got "${mode}")`);
  process.exit(1);
}

function findNvcc() {
  const r = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
  if (r.status === 0) return 'nvcc';
  for (const p of [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'].filter(Boolean)) {
    const bin = join(p, 'bin', 'nvcc');
    if (existsSync(bin)) return bin;
  }
  return null;
}

const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
const run = (args) => spawnSync(process.execPath, [cmakeJs, ...args, '-d', root, '-O', join(root, 'build')], { stdio: 'inherit', cwd: root }).status === 0;

function build(cuda) {
  const defs = [`--CDTSCLIP_CUDA=${cuda ? 'ON' : 'OFF'}`, `--CDTSCLIP_VERSION=${pkg.version}`];
  if (cuda && nvcc !== 'nvcc') defs.push(`--CDCMAKE_CUDA_COMPILER=${nvcc}`);
  if (cuda && process.env.TSCLIP_CUDA_ARCHS) defs.push(`--CDTSCLIP_CUDA_ARCHS=${process.env.TSCLIP_CUDA_ARCHS}`);
  console.log(`tsclip: building the native addon (${cuda ? 'CPU + CUDA' : 'CPU only'})`);
  // Configure every time: `cmake-js build` alone keeps an earlier cache and its CUDA setting.
  return run(['configure', ...defs]) && run(['build', '-p', String(Math.max(1, cpus().length))]);
}

const nvcc = mode === 'off' ? null : findNvcc();
if (mode === 'on' && !nvcc) {
  console.error('tsclip: TSCLIP_CUDA=on but nvcc was not found (set CUDA_HOME or put nvcc on PATH)');
  process.exit(1);
}
if (nvcc) {
  if (build(true)) process.exit(0);
  if (mode === 'on') {
    console.error('tsclip: the CUDA build failed and TSCLIP_CUDA=on was asked for');
    process.exit(1);
  }
  console.warn('tsclip: the CUDA build failed (see above); falling back to the CPU-only backend.');
  console.warn('tsclip: set TSCLIP_CUDA=off to skip the attempt, or TSCLIP_CUDA=on to make it an error.');
} else if (mode === 'auto') {
  console.log('tsclip: nvcc not found; building the CPU backend only (TSCLIP_CUDA=on to require CUDA)');
}
// A clean configure: a cache from a CUDA attempt would keep the CUDA language enabled.
if (nvcc) run(['clean']);
process.exit(build(false) ? 0 : 1);
