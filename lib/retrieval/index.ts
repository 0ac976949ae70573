// Retrieval: recall@K metrics and embedding indexes on disk.
export { retrievalRecall, similarityMatrix, topK, type RetrievalRecall, type RecallAtK } from './metrics.js';
export { EmbeddingIndex, idsPathFor, type IndexEntry, type SearchHit, type EntryKind } from './store.js';
