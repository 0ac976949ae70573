// A one-line progress bar on stderr for long embedding jobs: redrawn in place on a terminal, a
// line every 10% otherwise (logs stay short), nothing when quiet.
import { formatSeconds } from '../train/progress.js';

export class ProgressBar {
  private readonly start = Date.now();
  private lastDraw = 0;
  private lastDecile = -1;
  private readonly tty: boolean;

  constructor(private readonly total: number, private readonly label: string, private readonly opts: { quiet?: boolean; done?: number } = {}) {
    this.tty = Boolean(process.stderr.isTTY);
  }

  update(done: number): void {
    if (this.opts.quiet || this.total === 0) return;
    const frac = done / this.total;
    const now = Date.now();
    const fresh = done - (this.opts.done ?? 0);
    const rate = fresh / Math.max(1e-3, (now - this.start) / 1000);
    const eta = rate > 0 ? (this.total - done) / rate : NaN;
    const text = `${done}/${this.total} ${this.label}  ${rate.toFixed(1)}/s  ETA ${formatSeconds(eta)}`;
    if (this.tty) {
      if (now - this.lastDraw < 100 && done < this.total) return;
      this.lastDraw = now;
      const width = 24;
      process.stderr.write(`\r[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] ${text}   `);
    } else {
      if (done === 0) return;
      const decile = Math.floor(frac * 10);
      if (decile === this.lastDecile) return;
      this.lastDecile = decile;
      process.stderr.write(`${text}\n`);
    }
  }

  finish(): void {
    if (!this.opts.quiet && this.tty && this.total > 0) process.stderr.write('\n');
  }
}
