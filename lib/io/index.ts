// Checkpoint I/O: plain typed arrays in and out, independent of the tensor core.
export {
  type RawDType,
  type RawTensor,
  RAW_DTYPES,
  DTYPE_BYTES,
  numelOf,
  rawTensor,
  fromFloat32,
  fromInt32,
  toFloat32,
  toInt32,
  castFloat,
  transpose2d,
  concatRows,
  splitRows,
} from './raw.js';
export {
  type SafetensorsFile,
  type TensorInput,
  readSafetensors,
  readSafetensorsHeader,
  parseSafetensors,
  serializeSafetensors,
  writeSafetensors,
} from './safetensors.js';
export { ZipReader, writeZip, type ZipEntry, type ZipInput } from './zip.js';
export { unpickle, type UnpickleOptions } from './pickle.js';
export { readTorchArchive, type TorchArchive } from './torch.js';
export {
  hfToOriginal,
  originalToHF,
  configFromHF,
  configToHF,
  readHFDir,
  writeHFDir,
  looksLikeHF,
  type HFCheckpoint,
} from './hf.js';
export {
  type Activation,
  type ClipConfig,
  type VitVisionConfig,
  type ResNetVisionConfig,
  type TextConfig,
  CONFIG_METADATA_KEY,
  inferConfig,
  looksLikeClip,
  parseClipConfig,
  configFromOpenAI,
  configToOpenAI,
  configFromMetadata,
} from './config.js';
export {
  type Checkpoint,
  type CheckpointFormat,
  type WriteOptions,
  type ConvertOptions,
  detectFormat,
  readCheckpoint,
  writeCheckpoint,
  convertCheckpoint,
} from './checkpoint.js';
