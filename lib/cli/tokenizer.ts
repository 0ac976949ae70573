// `tsclip tokenizer train ...`: learn a byte-level BPE vocabulary from captions.
import { trainTokenizerCommand } from '../tokenizer/index.js';
import { UsageError } from './args.js';

const HELP = `usage: tsclip tokenizer train --captions FILE --vocab-size N --out merges.txt.gz [--min-frequency N]

Learns a byte-level BPE in the original CLIP merges format (one caption per line in FILE), so a
model trained from scratch needs no downloaded vocabulary. loadTokenizer(out) reads it back.

example:
  tsclip tokenizer train --captions captions.txt --vocab-size 4096 --out runs/tok/merges.txt.gz`;

export async function tokenizerCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || rest.includes('--help')) {
    console.log(HELP);
    return;
  }
  if (sub !== 'train') throw new UsageError(`unknown tokenizer command "${sub}"\n\n${HELP}`);
  try {
    await trainTokenizerCommand(rest);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}
