// Tokenizer throughput on one core: short captions (CLIP's zero-shot prompts, templates x class
// names) through encode and tokenizeToArray, with the word cache cold and warm.
// Run after `npm run build`:  node bench/tokenizer.bench.mjs [vocabulary path]
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTokenizer } from '../dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const clipData = join(here, '..', '..', 'shared', 'clip-data');
const vocabPath = process.argv[2] ?? join(clipData, 'bpe_simple_vocab_16e6.txt.gz');
if (!existsSync(vocabPath)) {
  console.error(`tokenizer bench: vocabulary ${vocabPath} not found; pass its path as the first argument`);
  process.exit(1);
}

function promptCaptions() {
  const file = join(clipData, 'zeroshot_prompts.json');
  if (existsSync(file)) {
    const sets = JSON.parse(readFileSync(file, 'utf8'));
    const out = [];
    for (const { classes, templates } of Object.values(sets)) {
      for (const cls of classes) {
        const name = Array.isArray(cls) ? cls[0] : cls;
        for (const t of templates) out.push(t.replace('{}', name));
      }
    }
    return out;
  }
  // Without the prompt file: generated captions of the same shape.
  const adj = ['small', 'big', 'blurry', 'bright', 'dark', 'cropped', 'black and white', 'low resolution'];
  const noun = ['cat', 'dog', 'airplane', 'golden retriever', 'fire truck', 'espresso', 'sea anemone', 'tabby cat'];
  const out = [];
  for (let i = 0; i < 50000; i++) out.push(`a ${adj[i % adj.length]} photo of a ${noun[(i * 7) % noun.length]} number ${i}.`);
  return out;
}

function rate(fn, count, minSeconds = 1) {
  let reps = 0;
  const start = performance.now();
  let elapsed = 0;
  do {
    fn();
    reps++;
    elapsed = (performance.now() - start) / 1000;
  } while (elapsed < minSeconds);
  return (reps * count) / elapsed;
}

const captions = promptCaptions();
const t0 = performance.now();
const tok = await loadTokenizer(vocabPath);
const loadMs = performance.now() - t0;

let tokens = 0;
const coldStart = performance.now();
for (const c of captions) tokens += tok.encode(c).length;
const cold = captions.length / ((performance.now() - coldStart) / 1000);

const warmEncode = rate(() => {
  for (const c of captions) tok.encode(c);
}, captions.length);

const batch = 1024;
const batches = [];
for (let i = 0; i < captions.length; i += batch) batches.push(captions.slice(i, i + batch));
const warmArray = rate(() => {
  for (const b of batches) tok.tokenizeToArray(b, { truncate: true });
}, captions.length);

// Accented text is NFC-normalized; curly quotes and the like take the full ftfy + HTML cleaning.
const timeEncode = (texts) =>
  rate(() => {
    for (const c of texts) tok.encode(c);
  }, texts.length);
const warmAccented = timeEncode(captions.map((c) => `${c} café naïve`));
const warmFixed = timeEncode(captions.map((c) => `${c} “café” &amp; ﬁsh`));

const fmt = (x) => Math.round(x).toLocaleString('en-US');
console.log(`tokenizer: ${vocabPath}`);
console.log(`  load: ${loadMs.toFixed(0)} ms (vocabulary ${tok.vocabSize})`);
console.log(`  captions: ${fmt(captions.length)}, ${(tokens / captions.length).toFixed(1)} BPE tokens each on average`);
console.log(`  encode, cold cache: ${fmt(cold)} captions/s`);
console.log(`  encode, warm cache: ${fmt(warmEncode)} captions/s`);
console.log(`  encode, warm cache, accented captions: ${fmt(warmAccented)} captions/s`);
console.log(`  encode, warm cache, captions needing ftfy fixes: ${fmt(warmFixed)} captions/s`);
console.log(`  tokenizeToArray (batches of ${batch}, 77 tokens): ${fmt(warmArray)} captions/s`);
