// Image input throughput: JPEG decode (sharp), the PIL-exact resize alone, and the whole CLIP
// transform (decode + resize + crop + normalise) to 224, in images per second on this machine.
// `npm run bench -- preprocess [image files...]` (default: the JPEGs in ../shared/fixtures/preprocess
// plus a 1024x683 JPEG made from one of them, the size of a typical photo in a web dataset).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeImage, decodeImageAsStored } from '../lib/image/decode.js';
import { preprocess, resizeShorterSide } from '../lib/image/preprocess.js';
import { info } from '../lib/runtime.js';

declare const __benchdir: string;

async function rate(what: string, count: number, fn: () => Promise<unknown> | unknown, minSeconds = 2): Promise<number> {
  await fn(); // warm-up
  let done = 0;
  const start = performance.now();
  while (performance.now() - start < minSeconds * 1000) {
    await fn();
    done += count;
  }
  const perSec = done / ((performance.now() - start) / 1000);
  console.log(`${what.padEnd(58)} ${perSec.toFixed(1).padStart(8)} images/s`);
  return perSec;
}

async function main(): Promise<void> {
  const fixtures = join(__benchdir, '..', '..', 'shared', 'fixtures', 'preprocess');
  let files = process.argv.slice(2);
  const sets: [string, Buffer[]][] = [];
  if (files.length) {
    sets.push(['given files', files.map((f) => readFileSync(f))]);
  } else if (existsSync(fixtures)) {
    files = readdirSync(fixtures).filter((f) => f.endsWith('.jpg')).map((f) => join(fixtures, f));
    const jpgs = files.map((f) => readFileSync(f));
    sets.push([`fixture JPEGs (${jpgs.length}, 400x100 .. 600x400)`, jpgs]);
    const photo = await sharp(jpgs[0]).resize(1024, 683, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();
    sets.push(['1024x683 JPEG', [photo]]);
  } else {
    const noise = Buffer.alloc(1024 * 683 * 3);
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
    const photo = await sharp(noise, { raw: { width: 1024, height: 683, channels: 3 } }).blur(3).jpeg({ quality: 90 }).toBuffer();
    sets.push(['1024x683 JPEG (synthetic)', [photo]]);
  }
  console.log(`CPU threads for native kernels: ${info().threads}; sharp concurrency ${sharp.concurrency()}`);
  for (const [name, bufs] of sets) {
    console.log(`\n${name}`);
    // Repeat the set to a batch of at least 32 images.
    const batch: Buffer[] = [];
    while (batch.length < 32) batch.push(...bufs);
    await rate('decode only (sharp, batch, parallel)', batch.length, () => Promise.all(batch.map((b) => decodeImage(b))));
    const decoded = await Promise.all(bufs.map((b) => decodeImageAsStored(b)));
    await rate('resize to short side 224 only (native, one at a time)', decoded.length, () => decoded.forEach((d) => resizeShorterSide(d, 224)));
    await rate('preprocess to [N,3,224,224], one image per call', bufs.length, async () => {
      for (const b of bufs) (await preprocess(b)).dispose();
    });
    await rate(`preprocess to [${batch.length},3,224,224], one batch call`, batch.length, async () => (await preprocess(batch)).dispose());
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
