// tsclip: CLIP for TypeScript on a native compute core.
export { Tensor, tidy, keep, untracked, availableDevices, numel, type DType, type Device, type TypedArray, type TensorOptions } from './tensor.js';
export { backward, noGrad, isGradEnabled } from './autograd.js';
export * as ops from './ops/index.js';
export { info, setNumThreads, memoryStats, synchronize } from './runtime.js';
