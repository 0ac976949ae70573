// Learning-rate schedules by optimizer step (0-based): linear warm-up, then cosine decay to zero
// over the remaining steps (open_clip's `cosine_lr`), or a constant rate after warm-up.
export type ScheduleKind = 'cosine' | 'constant';

export interface ScheduleOptions {
  kind: ScheduleKind;
  baseLr: number;
  /** Steps of linear warm-up: step s < warmup gets baseLr * (s + 1) / warmup. */
  warmup: number;
  /** Total optimizer steps of the run (the cosine reaches zero there). */
  totalSteps: number;
}

export function checkSchedule(s: ScheduleOptions): ScheduleOptions {
  if (s.kind !== 'cosine' && s.kind !== 'constant') throw new Error(`schedule: unknown kind "${s.kind}" (cosine or constant)`);
  if (!(s.baseLr >= 0) || !Number.isFinite(s.baseLr)) throw new Error(`schedule: learning rate must be a finite number >= 0, got ${s.baseLr}`);
  if (!Number.isInteger(s.warmup) || s.warmup < 0) throw new Error(`schedule: warm-up must be an integer >= 0, got ${s.warmup}`);
  if (!Number.isInteger(s.totalSteps) || s.totalSteps < 1) throw new Error(`schedule: total steps must be an integer >= 1, got ${s.totalSteps}`);
  return s;
}

/** The learning rate for optimizer step `step`. */
export function lrAt(s: ScheduleOptions, step: number): number {
  if (step < s.warmup) return (s.baseLr * (step + 1)) / s.warmup;
  if (s.kind === 'constant') return s.baseLr;
  const decay = s.totalSteps - s.warmup;
  if (decay <= 0) return s.baseLr;
  const e = Math.min(step - s.warmup, decay);
  return 0.5 * (1 + Math.cos((Math.PI * e) / decay)) * s.baseLr;
}
