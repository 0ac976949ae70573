// The causal text transformer: token + positional embedding, causal blocks, ln_final, features at
// the end-of-text token (the position of the largest id), projection.
import { Tensor } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Embedding, LayerNorm, randn, type InitContext } from '../nn/layers.js';
import * as ops from '../ops/index.js';
import { Transformer } from './transformer.js';
import type { ActivationName, TextConfig } from './config.js';

export class TextTransformer extends Module {
  readonly tokenEmbedding: Tensor;
  readonly positionalEmbedding: Tensor;
  readonly transformer: Transformer;
  readonly lnFinal: LayerNorm;
  readonly textProjection: Tensor;

  constructor(ctx: InitContext, readonly config: TextConfig, embedDim: number, act: ActivationName) {
    super();
    const { vocabSize, contextLength, width, layers, heads, mlpDim } = config;
    this.tokenEmbedding = this.child('token_embedding', new Embedding(ctx, vocabSize, width, 0.02)).weight;
    this.positionalEmbedding = this.param('positional_embedding', randn(ctx, [contextLength, width], 0.01));
    this.transformer = this.child('transformer', new Transformer(ctx, width, layers, heads, mlpDim, act));
    this.lnFinal = this.child('ln_final', new LayerNorm(ctx, width));
    this.textProjection = this.param('text_projection', randn(ctx, [width, embedDim], width ** -0.5));
    this.transformer.initClip(ctx);
  }

  /**
   * tokens int32 [B, contextLength] -> [B, embedDim]. Runs only as far as the longest caption: the
   * encoder is causal and pools at end-of-text, so later positions cannot change the result.
   */
  forward(tokens: Tensor, opts: { fullContext?: boolean } = {}): Tensor {
    const { contextLength, width } = this.config;
    if (tokens.ndim !== 2 || tokens.dtype !== 'int32') throw new Error(`encodeText: expected int32 tokens [B, ${contextLength}], got ${tokens.describe()}`);
    const [B, S] = tokens.shape;
    if (S > contextLength) throw new Error(`encodeText: ${S} tokens per caption exceed the context length ${contextLength}`);
    const eot = ops.argmax(tokens);
    const eotHost = eot.toArraySync() as Int32Array;
    eot.dispose();
    const L = opts.fullContext ? S : Math.max(...eotHost) + 1;
    const tok = L < S ? ops.contiguous(ops.slice(tokens, 1, 0, L)) : tokens;
    const emb = ops.embedding(this.tokenEmbedding, tok);
    if (tok !== tokens) tok.dispose();
    const pos = ops.slice(this.positionalEmbedding, 0, 0, L);
    const x0 = ops.add(emb, pos);
    emb.dispose();
    pos.dispose();
    const x1 = this.transformer.forward(x0, true);
    x0.dispose();
    const x2 = this.lnFinal.forward(x1);
    x1.dispose();
    const rows = Tensor.from(Int32Array.from(eotHost, (p, b) => b * L + p), [B], { device: tokens.device });
    const flat = ops.reshape(x2, [B * L, width]);
    const pooled = ops.gatherRows(flat, rows);
    const out = ops.matmul(pooled, this.textProjection);
    for (const t of [rows, flat, x2, pooled]) t.dispose();
    return out;
  }
}
