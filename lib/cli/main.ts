#!/usr/bin/env node
// The tsclip command line. User errors print one clear line (no stack trace) and exit 2.
import { UsageError } from './args.js';
import { infoCommand } from './info.js';
import { tokenizerCommand } from './tokenizer.js';
import { convertCommand } from './convert.js';
import { trainCommand } from './train.js';
import { demoCommand } from './demo.js';
import { classifyCommand } from './classify.js';
import { embedCommand } from './embed.js';
import { searchCommand } from './search.js';
import { probeCommand } from './probe.js';
import { evalCommand } from './eval.js';
import { benchCommand } from './bench.js';

interface Command {
  summary: string;
  run(argv: string[]): Promise<void> | void;
}

const commands: Record<string, Command> = {
  info: { summary: 'version, backends, CUDA devices, CPU features, threads', run: (argv) => infoCommand(argv.includes('--json')) },
  demo: { summary: 'train a small CLIP on generated shapes, report zero-shot on unseen pairs (~3 min)', run: demoCommand },
  train: { summary: 'train or fine-tune CLIP (train --help)', run: trainCommand },
  classify: { summary: 'zero-shot labels for images (a table, or --json)', run: classifyCommand },
  embed: { summary: 'embed images and texts into a searchable index (resumable)', run: embedCommand },
  search: { summary: 'text -> image and image -> image search in an index', run: searchCommand },
  probe: { summary: 'linear probe (logistic regression) on frozen image features', run: probeCommand },
  eval: { summary: 'zero-shot, linear probe and retrieval on fashion-mnist, shapes or a folder', run: evalCommand },
  convert: { summary: 'convert a checkpoint between .pt, safetensors and HF formats', run: convertCommand },
  tokenizer: { summary: 'train a byte-level BPE vocabulary (tokenizer train --help)', run: tokenizerCommand },
  bench: { summary: 'training-step and inference throughput, MFU and peak memory (bench --help)', run: benchCommand },
};

export function registerCommand(name: string, cmd: Command): void {
  commands[name] = cmd;
}

function usage(): string {
  const rows = Object.entries(commands).map(([k, c]) => `  ${k.padEnd(12)}${c.summary}`);
  return `usage: tsclip <command> [options]\n\ncommands:\n${rows.join('\n')}\n\nRun \`tsclip <command> --help\` for a command's options and examples.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) throw new UsageError(`unknown command "${name}"\n\n${usage()}`);
  await cmd.run(rest);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // Errors from tsclip name their problem; a stack trace only with TSCLIP_DEBUG=1.
    const e = err as Error;
    console.error(`tsclip: ${e?.message ?? String(err)}`);
    if (process.env.TSCLIP_DEBUG) console.error(e?.stack);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
