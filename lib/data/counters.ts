// Counting unusable examples by reason, and stopping a run whose data is mostly bad.
import type { DataStats } from './types.js';

/** What assembling one batch saw: good examples, and the reason for each one skipped. */
export interface CountDelta {
  good: number;
  bad: string[];
}

export class DataCounters {
  readonly s: DataStats = { examples: 0, skipped: 0, skippedReasons: {}, waitMs: 0 };
  constructor(private readonly name: string, private readonly maxBad = 0.5) {}

  good(): void {
    this.s.examples++;
  }

  /** Counts a skipped example; throws once more than maxBad of at least 20 tried were bad. */
  bad(reason: string): void {
    this.record(reason);
    const tried = this.s.examples + this.s.skipped;
    if (tried >= 20 && this.s.skipped / tried > this.maxBad) {
      const reasons = Object.entries(this.s.skippedReasons).map(([k, v]) => `${v} x ${k}`).join('; ');
      throw new Error(`data ${this.name}: ${this.s.skipped} of ${tried} examples are unusable (more than ${Math.round(this.maxBad * 100)}%): ${reasons}`);
    }
  }

  /** Adds a batch's counts (already checked against maxBad where they were made). */
  apply(d: CountDelta): void {
    this.s.examples += d.good;
    for (const r of d.bad) this.record(r);
  }

  snapshot(): DataStats {
    return { ...this.s, skippedReasons: { ...this.s.skippedReasons } };
  }

  private record(reason: string): void {
    this.s.skipped++;
    const r = shortReason(reason);
    this.s.skippedReasons[r] = (this.s.skippedReasons[r] ?? 0) + 1;
  }
}

export function shortReason(msg: string): string {
  // Group errors by their kind, not by the file named in them.
  let m = msg.replace(/^(preprocess: )?[^:\s]*[\\/][^:]*:\s*/, '');
  // A decoder's message is kept up to the detail libvips appends: libvips has one error buffer for
  // the whole process, so with images decoded at once (worker threads) that detail can be cut off
  // or come from another image. It also names the file at times ("Input file is missing: /a/b").
  // The same holds for bytes decoded from memory ("input (12 bytes): cannot decode ...").
  m = m.replace(/^((?:input \(\d+ bytes\): )?cannot decode the image: [^:]+):[\s\S]*$/, '$1');
  return m.length > 80 ? `${m.slice(0, 77)}...` : m;
}
