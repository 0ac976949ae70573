// Zero-shot classification: prompt templates, the ensembled classifier, and model + tokenizer loading.
export { ZeroShotClassifier, embedPrompts, averageUnit, softmaxRows, clearPromptCache, type Prediction, type ZeroShotOptions, type ClassifyOptions } from './classifier.js';
export { DEFAULT_TEMPLATES, loadPromptFile, fillTemplate, type ClassName, type PromptSet } from './templates.js';
export { embedImages, embedTexts, embedPixels, imageTransformOf, logitScaleOf } from './encode.js';
export { loadForInference, loadModel, findTokenizer, tokenizerFor, TOKENIZER_FILES, type InferenceOptions } from './load.js';
