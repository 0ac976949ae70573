// Text in: CLIP's exact tokenizer, the loaders for its vocabulary formats, and a BPE trainer.
import { loadVocabulary, type MergesOptions } from './load.js';
import { ClipTokenizer } from './tokenizer.js';

export { ClipTokenizer, type TokenizeOptions, type TokenizeTensorOptions } from './tokenizer.js';
export { BytePairEncoder, type Vocabulary } from './bpe.js';
export { cleanText, fixText } from './clean.js';
export { splitWords } from './words.js';
export {
  loadVocabulary,
  parseClipMerges,
  parseHfTokenizerJson,
  parseHfVocabMerges,
  CLIP_MERGES,
  type MergesOptions,
} from './load.js';
export { trainBPE, writeMerges, trainTokenizerCommand, type TrainOptions } from './train.js';

/**
 * Loads a tokenizer from CLIP's merges file (.txt.gz or .txt), a Hugging Face tokenizer.json or
 * vocab.json + merges.txt, or a directory holding one of these. Without a path, looks for
 * bpe_simple_vocab_16e6.txt.gz (TSCLIP_BPE_PATH, ./data, ../shared/clip-data).
 */
export async function loadTokenizer(path?: string, opts: MergesOptions = {}): Promise<ClipTokenizer> {
  return new ClipTokenizer(await loadVocabulary(path, opts));
}
