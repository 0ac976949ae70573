// tsclip: CLIP for TypeScript on a native compute core.
export { Tensor, tidy, keep, untracked, availableDevices, numel, type DType, type Device, type TypedArray, type TensorOptions } from './tensor.js';
export { backward, noGrad, isGradEnabled } from './autograd.js';
export { autocast, currentPrecision, PRECISIONS, type Precision } from './amp.js';
export { checkpoint, checkpointWith } from './recompute.js';
export * as ops from './ops/index.js';
export { info, setNumThreads, memoryStats, liveStorages, synchronize } from './runtime.js';
export { setWeightPacking, weightPacking } from './ops/packed.js';
export {
  loadTokenizer, ClipTokenizer, loadVocabulary, trainBPE, writeMerges, cleanText,
  type TokenizeOptions, type TokenizeTensorOptions, type TrainOptions, type Vocabulary, type MergesOptions,
} from './tokenizer/index.js';
export * from './io/index.js';
export { CLIP, createCLIP, resolveDevice, type CLIPOutput, type CreateOptions } from './models/clip.js';
export { loadCLIP, saveCLIP, loadStateDict, type LoadOptions } from './models/load.js';
export { CONFIGS, resolveConfig, CLIP_MEAN, CLIP_STD, type CLIPConfig, type VitConfig, type ResNetConfig, type ActivationName } from './models/config.js';
export { Module, ModuleList } from './nn/module.js';
export { setGradCheckpointing } from './models/transformer.js';
export { Random } from './nn/random.js';
export { AdamW, type AdamWOptions, type AdamWStateDict, type ParamGroup, type ParamGroupInput } from './optim/adamw.js';
export * from './zeroshot/index.js';
export { pipeline, DEFAULT_HYPOTHESIS_TEMPLATE, type ZeroShotImageClassificationPipeline, type ZeroShotImageClassificationOutput, type PipelineOptions } from './pipeline.js';
export * from './retrieval/index.js';
export * from './probe/index.js';
export { decodeImage, decodeImageAsStored, toRGB, modeOf, SUPPORTED_FORMATS, type RawImage, type ImageInput, type DecodeOptions, type PilMode } from './image/decode.js';
export { preprocess, resizeShorterSide, centerCrop, clipCrop, resizePIL, resampleBicubic, resampleNearest, resizedSize, type PreprocessOptions, type Box } from './image/preprocess.js';
export { Trainer, NonFiniteError, lrAt, saveModelWeights, loadTrainedCLIP, latestCheckpoint, listCheckpoints, accumulateGradients, lockImage, lockText, snapshotWeights, wiseFt, type TrainerOptions, type FitOptions, type FitResult } from './train/index.js';
export { DataLoader, CsvDataset, FolderDataset, WebDatasetSource, FashionMnistDataset, ShapesDataset, shapesTokenizer, openData, openDataset, type Dataset, type Batch, type BatchSource } from './data/index.js';
