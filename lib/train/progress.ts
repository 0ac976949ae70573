// Run reporting: a one-line progress bar on stderr when it is a terminal, JSON lines of metrics on
// disk always, and an SVG loss curve written beside the log at the end.
import { appendFileSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';

export interface StepMetrics {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  logitScale: number;
  gradNorm: number;
  samplesPerSec: number;
  dataWaitFraction: number;
  elapsedSec: number;
}

export class Progress {
  private readonly tty: boolean;
  private lastDraw = 0;

  constructor(private readonly logFile: string | null, private readonly totalSteps: number, opts: { bar?: boolean } = {}) {
    this.tty = opts.bar ?? Boolean(process.stderr.isTTY);
    if (logFile) mkdirSync(path.dirname(logFile), { recursive: true });
  }

  /** Appends one record (a step, an evaluation, the summary) to the JSONL log. */
  record(kind: string, data: object): void {
    if (this.logFile) appendFileSync(this.logFile, JSON.stringify({ kind, time: new Date().toISOString(), ...data }) + '\n');
  }

  step(m: StepMetrics, startStep: number): void {
    this.record('step', m);
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.lastDraw < 200 && m.step < this.totalSteps) return;
    this.lastDraw = now;
    const frac = m.step / this.totalSteps;
    const width = 24;
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
    const done = m.step - startStep;
    const eta = done > 0 ? (m.elapsedSec / done) * (this.totalSteps - m.step) : 0;
    process.stderr.write(
      `\r[${bar}] ${m.step}/${this.totalSteps}  loss ${m.loss.toFixed(4)}  lr ${m.lr.toExponential(2)}  ` +
        `scale ${Math.exp(m.logitScale).toFixed(1)}  ${m.samplesPerSec.toFixed(0)} samples/s  ETA ${formatSeconds(eta)}   `,
    );
  }

  /** Ends the bar's line and writes the loss curve of every step logged so far (resumed runs too). */
  finish(): string | null {
    if (this.tty) process.stderr.write('\n');
    if (!this.logFile || !existsSync(this.logFile)) return null;
    const points: [number, number][] = [];
    for (const line of readFileSync(this.logFile, 'utf8').split('\n')) {
      if (!line) continue;
      try {
        const r = JSON.parse(line) as { kind: string; step: number; loss: number };
        if (r.kind === 'step' && Number.isFinite(r.loss)) points.push([r.step, r.loss]);
      } catch {
        // a torn last line after a crash: ignore it
      }
    }
    const svgFile = this.logFile.replace(/\.jsonl$/, '') + '-loss.svg';
    writeFileSync(svgFile, lossCurveSvg(points));
    return svgFile;
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)}s`;
}

/** A line plot of (step, loss) as a standalone SVG document. */
export function lossCurveSvg(points: [number, number][], title = 'training loss'): string {
  const W = 640, H = 360, L = 60, R = 20, T = 30, B = 40;
  // Later records for the same step (a resumed run) replace earlier ones.
  const byStep = new Map<number, number>();
  for (const [s, l] of points) byStep.set(s, l);
  const pts = [...byStep.entries()].sort((a, b) => a[0] - b[0]);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs, 0), x1 = Math.max(...xs, 1);
  const y0 = Math.min(...ys, 0), y1 = Math.max(...ys, 1e-9);
  const sx = (x: number) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y: number) => H - B - ((y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const path = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const y = y0 + f * (y1 - y0);
    return `<line x1="${L}" x2="${W - R}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#ddd"/>` +
      `<text x="${L - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end" font-size="11">${y.toPrecision(3)}</text>`;
  }).join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-family="sans-serif">${title}</text>
<g font-family="sans-serif">${ticks}
<text x="${L}" y="${H - 12}" font-size="11">step ${x0}</text><text x="${W - R}" y="${H - 12}" font-size="11" text-anchor="end">step ${x1}</text></g>
<path d="${path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>
</svg>
`;
}
