// `tsclip info`: what this build and machine offer.
import { info } from '../runtime.js';

export function infoCommand(json: boolean): void {
  const i = info();
  if (json) {
    console.log(JSON.stringify(i, null, 2));
    return;
  }
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const simd = [i.cpu.avx512bf16 && 'AVX-512 BF16', i.cpu.avx512f && 'AVX-512', i.cpu.avx2 && 'AVX2', i.cpu.fma && 'FMA'].filter(Boolean);
  console.log(`tsclip ${i.version}`);
  console.log(`backends compiled in: ${i.backends.join(', ')}`);
  if (i.cudaDevices.length) {
    i.cudaDevices.forEach((d, k) => console.log(`cuda:${k}  ${d.name}  ${gib(d.totalMemory)}  compute capability ${d.computeCapability}  ${d.multiprocessors} SMs`));
  } else {
    console.log(`CUDA devices: none (${i.cudaUnavailableReason || 'none found'})`);
  }
  console.log(`CPU features used: ${simd.length ? simd.join(', ') : 'scalar only'}`);
  console.log(`CPU threads: ${i.threads} (TSCLIP_NUM_THREADS)`);
}
