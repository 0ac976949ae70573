// The training loop behind `tsclip train` and usable from scripts: AdamW with open_clip's defaults
// and weight-decay rule, warm-up + cosine schedule, gradient clipping, the temperature clamped to
// [0, ln 100] after each step, feature-cache gradient accumulation, checkpoints that resume exactly,
// a stop with a clear message on a non-finite loss or gradient, and a checkpoint on Ctrl-C.
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { Tensor, tidy } from '../tensor.js';
import * as ops from '../ops/index.js';
import { AdamW } from '../optim/adamw.js';
import { CLIP } from '../models/clip.js';
import type { Batch, BatchSource, DataPosition } from '../data/types.js';
import { accumulateGradients, type MicroBatch } from './accumulate.js';
import { checkSchedule, lrAt, type ScheduleKind, type ScheduleOptions } from './schedule.js';
import { latestCheckpoint, loadTrainingCheckpoint, saveTrainingCheckpoint, type TrainState } from './checkpoint.js';
import { Progress, type StepMetrics } from './progress.js';
import { lockImage, lockText } from './lock.js';
import { setGradCheckpointing } from '../models/transformer.js';
import { autocast, checkPrecision, type Precision } from '../amp.js';

export const MAX_LOGIT_SCALE = Math.log(100);

export interface TrainerOptions {
  lr?: number;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  warmup?: number;
  schedule?: ScheduleKind;
  /** Clip the global gradient norm to this value (none by default). */
  gradClipNorm?: number | null;
  /** Micro-batches per optimizer step (the effective batch is accumFreq x the source's batch size). */
  accumFreq?: number;
  seed?: number;
  /** Run directory: checkpoints/ and metrics.jsonl go there. None: nothing is written. */
  outDir?: string | null;
  /** Save a checkpoint every N optimizer steps (and always at the end). 0: only at the end. */
  checkpointEvery?: number;
  /** Checkpoints kept (newest). */
  keepCheckpoints?: number;
  /** Model mode while training (eval: dropout-free, BatchNorm uses running statistics). */
  mode?: 'train' | 'eval';
  lockImage?: boolean;
  lockText?: boolean;
  /** Recompute each transformer block's activations in the backward pass: less memory, about one more forward per step. */
  gradCheckpointing?: boolean;
  /** 'bf16': mixed precision (bf16 matmul inputs, fp32 accumulation; weights, gradients and AdamW state stay fp32). */
  precision?: Precision;
  /** Called every evalEvery steps and at the end; its numbers go to the log and the 'eval' event. */
  evaluate?: (model: CLIP, step: number) => Record<string, number> | Promise<Record<string, number>>;
  evalEvery?: number;
  /** Progress bar on stderr: default when stderr is a terminal. */
  progressBar?: boolean;
  /** Save a checkpoint and stop on SIGINT (default true when outDir is set). */
  handleSigint?: boolean;
}

export interface FitOptions {
  epochs?: number;
  steps?: number;
  /** A checkpoint directory, or true for the newest checkpoint under outDir. */
  resume?: string | boolean;
}

export interface FitResult {
  steps: number;
  stoppedBy: 'done' | 'stop' | 'signal';
  losses: number[];
  lastCheckpoint: string | null;
  dataWaitFraction: number;
  skipped: number;
  seconds: number;
}

export class NonFiniteError extends Error {}

export interface TrainerEvents {
  step: [StepMetrics];
  eval: [{ step: number; metrics: Record<string, number> }];
  checkpoint: [{ step: number; path: string }];
}

export class Trainer extends EventEmitter<TrainerEvents> {
  readonly optimizer: AdamW;
  readonly paramNames: string[];
  readonly opts: Required<Omit<TrainerOptions, 'evaluate' | 'outDir' | 'gradClipNorm' | 'progressBar' | 'handleSigint'>> & TrainerOptions;
  step = 0;
  position: DataPosition = { epoch: 0, cursor: 0 };
  private stopRequested: 'stop' | 'signal' | null = null;
  private lastCheckpoint: string | null = null;
  /** What gradCheckpointing covers (null when off). */
  readonly gradCheckpointing: ReturnType<typeof setGradCheckpointing> | null = null;

  constructor(readonly model: CLIP, options: TrainerOptions = {}) {
    super();
    if (!(model instanceof CLIP)) throw new Error('Trainer: model must be a CLIP (createCLIP or loadCLIP)');
    this.opts = {
      lr: 5e-4, weightDecay: 0.2, betas: [0.9, 0.98], eps: 1e-6, warmup: 0, schedule: 'cosine', accumFreq: 1, seed: 0,
      checkpointEvery: 0, keepCheckpoints: 3, mode: 'train', lockImage: false, lockText: false, gradCheckpointing: false, evalEvery: 0, precision: 'fp32',
      ...options,
    };
    const o = this.opts;
    if (!Number.isInteger(o.accumFreq) || o.accumFreq < 1) throw new Error(`Trainer: accumFreq must be an integer >= 1, got ${o.accumFreq}`);
    if (o.gradClipNorm != null && !(o.gradClipNorm > 0)) throw new Error(`Trainer: gradClipNorm must be > 0, got ${o.gradClipNorm}`);
    checkPrecision('Trainer', o.precision);
    if (o.lockImage) lockImage(model);
    if (o.lockText) lockText(model);
    if (o.gradCheckpointing) this.gradCheckpointing = setGradCheckpointing(model, true);
    const trainable = model.namedParameters().filter(([, p]) => p.requiresGrad);
    if (!trainable.length) throw new Error('Trainer: every parameter is frozen (both towers locked?)');
    // open_clip's rule: no weight decay on gains, biases, norms and the temperature.
    const decay = trainable.filter(([n, p]) => !CLIP.noWeightDecay(n, p));
    const noDecay = trainable.filter(([n, p]) => CLIP.noWeightDecay(n, p));
    this.paramNames = [...decay, ...noDecay].map(([n]) => n);
    this.optimizer = new AdamW(
      [{ params: decay.map(([, p]) => p), weightDecay: o.weightDecay }, { params: noDecay.map(([, p]) => p), weightDecay: 0 }],
      { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weightDecay },
    );
  }

  /** Asks fit() to save a checkpoint and return after the current step. */
  stop(): void {
    this.stopRequested = 'stop';
  }

  private get checkpointDir(): string | null {
    return this.opts.outDir ? path.join(this.opts.outDir, 'checkpoints') : null;
  }

  private state(schedule: ScheduleOptions, batchSize: number): TrainState {
    return {
      step: this.step, position: this.position, schedule, seed: this.opts.seed, accumFreq: this.opts.accumFreq,
      batchSize, config: this.model.config, paramNames: this.paramNames,
    };
  }

  private async save(schedule: ScheduleOptions, batchSize: number): Promise<string | null> {
    const dir = this.checkpointDir;
    if (!dir) return null;
    const p = await saveTrainingCheckpoint(dir, this.model, this.optimizer, this.state(schedule, batchSize), this.opts.keepCheckpoints);
    this.lastCheckpoint = p;
    this.emit('checkpoint', { step: this.step, path: p });
    return p;
  }

  /** Restores a checkpoint directory (or the newest under outDir when `true`); returns its state. */
  async resume(from: string | true): Promise<TrainState> {
    let ckpt: string | null = from === true ? null : from;
    if (from === true) {
      if (!this.checkpointDir) throw new Error('resume: no outDir to look for checkpoints in');
      ckpt = await latestCheckpoint(this.checkpointDir);
      if (!ckpt) throw new Error(`resume: no checkpoint under ${this.checkpointDir}`);
    }
    const st = await loadTrainingCheckpoint(ckpt!, this.model, this.optimizer, this.paramNames);
    this.step = st.step;
    this.position = st.position;
    this.lastCheckpoint = ckpt;
    return st;
  }

  private toDevice(b: Batch): MicroBatch {
    const device = this.model.device;
    return {
      pixels: Tensor.from(b.pixels, [b.size, 3, b.imageSize, b.imageSize], { device }),
      tokens: Tensor.from(b.tokens, [b.size, b.contextLength], { device }),
    };
  }

  /** Global L2 norm of the gradients, scaled down to gradClipNorm when above it. */
  private gradNorm(): number {
    const params = this.optimizer.groups.flatMap((g) => g.params);
    // Summed where the gradients live and read once: one device sync per step, not one per tensor.
    const sq = tidy(() => {
      let acc: Tensor | null = null;
      for (const p of params) {
        if (!p.grad) continue;
        const s = ops.sumSquares(p.grad);
        acc = acc ? ops.add(acc, s) : s;
      }
      return acc ? acc.item() : 0;
    });
    const norm = Math.sqrt(sq);
    const max = this.opts.gradClipNorm;
    if (max != null && Number.isFinite(norm) && norm > max) {
      const f = max / (norm + 1e-6);
      for (const p of params) {
        if (!p.grad) continue;
        const scaled = ops.scale(p.grad, f);
        p.grad.dispose();
        p.grad = scaled;
      }
    }
    return norm;
  }

  private clampLogitScale(): void {
    const t = this.model.logitScale;
    const v = t.item();
    const c = Math.min(Math.max(v, 0), MAX_LOGIT_SCALE);
    if (c !== v) ops.fillFrom(t, new Float32Array([c]));
  }

  async fit(data: BatchSource, fitOpts: FitOptions): Promise<FitResult> {
    const o = this.opts;
    let totalSteps: number;
    if (fitOpts.steps !== undefined) {
      totalSteps = fitOpts.steps;
    } else if (fitOpts.epochs !== undefined) {
      const per = data.batchesPerEpoch();
      if (per === undefined) throw new Error('fit: the data does not know its epoch length; give steps instead of epochs');
      totalSteps = Math.max(1, Math.floor((fitOpts.epochs * per) / o.accumFreq));
    } else {
      throw new Error('fit: give epochs or steps');
    }
    let schedule = checkSchedule({ kind: o.schedule, baseLr: o.lr, warmup: o.warmup, totalSteps });
    if (fitOpts.resume) {
      const st = await this.resume(fitOpts.resume);
      if (st.batchSize !== data.batchSize || st.accumFreq !== o.accumFreq) {
        throw new Error(`resume: the checkpoint ran with batch size ${st.batchSize} x accum ${st.accumFreq}, this run ${data.batchSize} x ${o.accumFreq}`);
      }
      schedule = st.schedule;
      totalSteps = schedule.totalSteps;
    }
    this.model.train(o.mode === 'train');
    const startStep = this.step;
    const progress = new Progress(o.outDir ? path.join(o.outDir, 'metrics.jsonl') : null, totalSteps, { bar: o.progressBar });
    progress.record('start', { step: this.step, totalSteps, schedule, accumFreq: o.accumFreq, batchSize: data.batchSize, seed: o.seed, precision: o.precision });
    const onSigint = () => {
      this.stopRequested = 'signal';
    };
    const sigint = o.handleSigint ?? Boolean(o.outDir);
    if (sigint) process.on('SIGINT', onSigint);
    this.stopRequested = null;
    const losses: number[] = [];
    const t0 = performance.now();
    const wait0 = data.stats().waitMs;
    let stoppedBy: FitResult['stoppedBy'] = 'done';
    const iter = data.batches(this.position)[Symbol.asyncIterator]();
    try {
      while (this.step < totalSteps) {
        const micro: MicroBatch[] = [];
        let next = this.position;
        let samples = 0;
        try {
          for (let k = 0; k < o.accumFreq; k++) {
            const r = await iter.next();
            if (r.done) throw new Error('fit: the data source ended');
            micro.push(this.toDevice(r.value.batch));
            samples += r.value.batch.size;
            next = r.value.next;
          }
          const lr = lrAt(schedule, this.step);
          for (const g of this.optimizer.groups) g.lr = lr;
          // The backward runs inside too: it multiplies the bf16 copies the forward saved.
          const loss = autocast(o.precision, () => accumulateGradients(this.model, micro));
          const gradNorm = this.gradNorm();
          const failed = !Number.isFinite(loss) ? `loss is ${loss}` : !Number.isFinite(gradNorm) ? `gradient norm is ${gradNorm}` : null;
          if (failed) {
            this.optimizer.zeroGrad();
            const where = this.lastCheckpoint ? `the last good checkpoint is ${this.lastCheckpoint}` : 'no checkpoint was saved yet';
            throw new NonFiniteError(`training stopped at step ${this.step + 1}: ${failed} (lr ${lr.toExponential(3)}); ${where}`);
          }
          this.optimizer.step();
          this.optimizer.zeroGrad();
          this.clampLogitScale();
          this.step++;
          this.position = next;
          losses.push(loss);
          const elapsed = (performance.now() - t0) / 1000;
          const metrics: StepMetrics = {
            step: this.step, epoch: next.epoch, loss, lr, logitScale: this.model.logitScale.item(), gradNorm,
            samplesPerSec: ((this.step - startStep) * samples) / Math.max(elapsed, 1e-9),
            dataWaitFraction: (data.stats().waitMs - wait0) / 1000 / Math.max(elapsed, 1e-9), elapsedSec: elapsed,
          };
          progress.step(metrics, startStep);
          this.emit('step', metrics);
        } finally {
          for (const m of micro) {
            m.pixels.dispose();
            m.tokens.dispose();
          }
        }
        if (o.evaluate && o.evalEvery > 0 && this.step % o.evalEvery === 0 && this.step < totalSteps) await this.runEval(progress);
        // Let signal handlers run: the step itself never yields to the event loop.
        await new Promise((r) => setImmediate(r));
        if (this.stopRequested) {
          stoppedBy = this.stopRequested;
          break;
        }
        if (o.checkpointEvery > 0 && this.step % o.checkpointEvery === 0 && this.step < totalSteps) await this.save(schedule, data.batchSize);
      }
      await this.save(schedule, data.batchSize);
      if (o.evaluate && stoppedBy === 'done') await this.runEval(progress);
    } finally {
      if (sigint) process.off('SIGINT', onSigint);
      await iter.return?.(undefined);
      const st = data.stats();
      progress.record('end', { step: this.step, stoppedBy, skipped: st.skipped, skippedReasons: st.skippedReasons, examples: st.examples });
      progress.finish();
    }
    const seconds = (performance.now() - t0) / 1000;
    const st = data.stats();
    return {
      steps: this.step, stoppedBy, losses, lastCheckpoint: this.lastCheckpoint,
      dataWaitFraction: (st.waitMs - wait0) / 1000 / Math.max(seconds, 1e-9), skipped: st.skipped, seconds,
    };
  }

  private async runEval(progress: Progress): Promise<void> {
    const wasTraining = this.model.training;
    this.model.eval();
    try {
      const metrics = await this.opts.evaluate!(this.model, this.step);
      progress.record('eval', { step: this.step, ...metrics });
      this.emit('eval', { step: this.step, metrics });
    } finally {
      this.model.train(wasTraining);
    }
  }
}
