// Training data: datasets, the batching loader, WebDataset streaming and the embedded shapes set.
export type { Example, Dataset, Batch, BatchSource, DataPosition, DataStats } from './types.js';
export { DataLoader, epochOrder, type LoaderOptions } from './loader.js';
export { CsvDataset, type CsvOptions } from './csv.js';
export { FolderDataset } from './folder.js';
export { WebDatasetSource, expandShards, type WebDatasetOptions } from './webdataset.js';
export { FashionMnistDataset, FASHION_CLASSES, FASHION_TEMPLATES, FASHION_MNIST_DIR } from './fashion-mnist.js';
export { ShapesDataset, shapesTokenizer, candidateCaptions, HELD_OUT, PAIRS, type Scene } from './shapes.js';
export { openData, openDataset, dataKind, type OpenDataOptions } from './spec.js';
export { loadImage, type ImageTransform } from './image.js';
export { DecodePool, DataWorkerError, defaultWorkerThreads } from './pool.js';
export type { ExampleJob } from './jobs.js';
