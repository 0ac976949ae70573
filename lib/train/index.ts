// Training and fine-tuning: the trainer, schedules, checkpoints, accumulation, locking and WiSE-FT.
export { Trainer, NonFiniteError, MAX_LOGIT_SCALE, type TrainerOptions, type FitOptions, type FitResult, type TrainerEvents } from './trainer.js';
export { lrAt, checkSchedule, type ScheduleKind, type ScheduleOptions } from './schedule.js';
export {
  saveTrainingCheckpoint, loadTrainingCheckpoint, listCheckpoints, latestCheckpoint, readTrainState,
  saveModelWeights, loadTrainedCLIP, type TrainState,
} from './checkpoint.js';
export { accumulateGradients, type MicroBatch } from './accumulate.js';
export { lockImage, lockText, snapshotWeights, wiseFt } from './lock.js';
export { Progress, lossCurveSvg, type StepMetrics } from './progress.js';
export { embedImages, embedTexts } from './evaluate.js';
export { shapesZeroShot, type ShapesZeroShot } from './shapes-eval.js';
