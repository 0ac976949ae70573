// Loading a model for inference together with its tokenizer: the tokenizer is the one beside the
// checkpoint (a Hugging Face folder's tokenizer.json or vocab.json + merges.txt, a tsclip run
// folder's merges file), one given explicitly, or CLIP's own vocabulary for the released models.
import { existsSync, statSync } from 'node:fs';
import * as path from 'node:path';
import type { Device } from '../tensor.js';
import { resolveDevice, type CLIP } from '../models/clip.js';
import { loadTrainedCLIP } from '../train/checkpoint.js';
import { loadCLIP } from '../models/load.js';
import { loadTokenizer } from '../tokenizer/index.js';
import type { ClipTokenizer } from '../tokenizer/tokenizer.js';
import { checkTokenizerFits } from './encode.js';

/** File names looked for beside a checkpoint, in order ("vocab.json" needs merges.txt too). */
export const TOKENIZER_FILES = ['tokenizer.json', 'vocab.json', 'merges.txt.gz', 'merges.txt', 'tokenizer.txt.gz', 'bpe_simple_vocab_16e6.txt.gz'];

/** The vocabulary size of the released CLIP models: their checkpoints ship without a tokenizer file. */
const CLIP_VOCAB = 49408;

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Folders a checkpoint's tokenizer may sit in: its own folder, and a run folder above checkpoints/. */
function tokenizerDirs(modelPath: string): string[] {
  const dir = isDir(modelPath) ? modelPath : path.dirname(modelPath);
  const dirs = [dir];
  const parent = path.dirname(dir);
  if (path.basename(parent) === 'checkpoints') dirs.push(path.dirname(parent));
  return dirs;
}

/** The tokenizer file found beside a checkpoint, or null. */
export function findTokenizer(modelPath: string): string | null {
  for (const dir of tokenizerDirs(modelPath)) {
    for (const name of TOKENIZER_FILES) {
      const p = path.join(dir, name);
      if (!existsSync(p)) continue;
      if (name === 'vocab.json' && !existsSync(path.join(dir, 'merges.txt'))) continue;
      return p;
    }
  }
  return null;
}

export interface InferenceOptions {
  device?: Device | 'auto';
  /** A tokenizer, or the path of one (default: found beside the checkpoint). */
  tokenizer?: string | ClipTokenizer;
}

/** The tokenizer for a model: explicit, beside the checkpoint, or CLIP's for released models. */
export async function tokenizerFor(modelPath: string, model: CLIP, given?: string | ClipTokenizer): Promise<ClipTokenizer> {
  let tok: ClipTokenizer;
  if (given !== undefined && typeof given !== 'string') {
    tok = given;
  } else if (given !== undefined) {
    if (!existsSync(given)) throw new Error(`tokenizer ${given}: no such file or directory`);
    tok = await loadTokenizer(given);
  } else {
    const found = findTokenizer(modelPath);
    if (found) {
      tok = await loadTokenizer(found);
    } else if (model.config.text.vocabSize === CLIP_VOCAB) {
      tok = await loadTokenizer();
    } else {
      throw new Error(`no tokenizer found beside ${modelPath} (looked for ${TOKENIZER_FILES.join(', ')} in ${tokenizerDirs(modelPath).join(' and ')}); ` +
        `the model has a ${model.config.text.vocabSize}-token vocabulary, so give its tokenizer with --tokenizer FILE`);
    }
  }
  checkTokenizerFits(model, tok);
  return tok;
}

/** A model in eval mode: an HF folder through its config.json, anything else as a training run or checkpoint. */
export async function loadModel(modelPath: string, device?: Device | 'auto'): Promise<CLIP> {
  if (!existsSync(modelPath)) throw new Error(`model ${modelPath}: no such file or directory`);
  const dev = resolveDevice(device);
  // An HF folder also holds model.safetensors, but only config.json states its activation.
  const hf = isDir(modelPath) && existsSync(path.join(modelPath, 'config.json'));
  const model = hf ? await loadCLIP(modelPath, { device: dev }) : await loadTrainedCLIP(modelPath, { device: dev });
  model.eval();
  return model;
}

/** A model in eval mode plus its tokenizer, from any checkpoint tsclip reads. */
export async function loadForInference(modelPath: string, opts: InferenceOptions = {}): Promise<{ model: CLIP; tokenizer: ClipTokenizer }> {
  const model = await loadModel(modelPath, opts.device);
  try {
    return { model, tokenizer: await tokenizerFor(modelPath, model, opts.tokenizer) };
  } catch (e) {
    model.dispose();
    throw e;
  }
}
