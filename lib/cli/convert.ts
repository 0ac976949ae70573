// `tsclip convert IN OUT`: between OpenAI .pt, safetensors (original names) and HF directories.
import { convertCheckpoint } from '../io/checkpoint.js';
import { flagHelp, parseArgs, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  format: { type: 'string', help: 'safetensors (original key names) or hf (a directory with config.json)', default: 'safetensors' },
  dtype: { type: 'string', help: 'cast floating-point tensors: F32, F16 or BF16' },
  help: { type: 'boolean', help: 'show this help' },
};

const HELP = `usage: tsclip convert IN OUT [--format safetensors|hf] [--dtype F32|F16|BF16]

Reads a CLIP checkpoint in any supported format (an OpenAI .pt archive, safetensors with original or
open_clip key names, or a Hugging Face directory) and writes it in another.

examples:
  tsclip convert ViT-B-32.pt ViT-B-32.safetensors
  tsclip convert ViT-B-32.safetensors hf/clip-vit-b32 --format hf

${flagHelp(FLAGS)}`;

export async function convertCommand(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) return void console.log(HELP);
  if (positionals.length !== 2) throw new UsageError(`convert needs IN and OUT\n\n${HELP}`);
  const format = flags.format as string;
  if (format !== 'safetensors' && format !== 'hf') throw new UsageError(`--format must be safetensors or hf, got "${format}"`);
  const dtype = flags.dtype as string | undefined;
  if (dtype && !['F32', 'F16', 'BF16'].includes(dtype)) throw new UsageError(`--dtype must be F32, F16 or BF16, got "${dtype}"`);
  await convertCheckpoint(positionals[0], positionals[1], { format, dtype: dtype as 'F32' | 'F16' | 'BF16' | undefined });
  console.log(`wrote ${positionals[1]} (${format})`);
}
