// Counting unusable examples by reason, and stopping a run whose data is mostly bad.
import type { DataStats } from './types.js';

export class DataCounters {
  readonly s: DataStats = { examples: 0, skipped: 0, skippedReasons: {}, waitMs: 0 };
  constructor(private readonly name: string, private readonly maxBad = 0.5) {}

  good(): void {
    this.s.examples++;
  }

  /** Counts a skipped example; throws once more than maxBad of at least 20 tried were bad. */
  bad(reason: string): void {
    this.s.skipped++;
    const r = shortReason(reason);
    this.s.skippedReasons[r] = (this.s.skippedReasons[r] ?? 0) + 1;
    const tried = this.s.examples + this.s.skipped;
    if (tried >= 20 && this.s.skipped / tried > this.maxBad) {
      const reasons = Object.entries(this.s.skippedReasons).map(([k, v]) => `${v} x ${k}`).join('; ');
      throw new Error(`data ${this.name}: ${this.s.skipped} of ${tried} examples are unusable (more than ${Math.round(this.maxBad * 100)}%): ${reasons}`);
    }
  }

  snapshot(): DataStats {
    return { ...this.s, skippedReasons: { ...this.s.skippedReasons } };
  }
}

function shortReason(msg: string): string {
  // Group errors by their kind, not by the file named in them.
  const m = msg.replace(/^(preprocess: )?[^:\s]*[\\/][^:]*:\s*/, '');
  return m.length > 80 ? `${m.slice(0, 77)}...` : m;
}
