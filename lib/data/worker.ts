// A data worker thread: runs the example jobs DecodePool posts (decode, resize, normalise), at most
// `concurrency` at a time, and posts each result back with its pixel buffer transferred, not copied.
// A job that fails (a corrupt image, a missing caption) is answered with its error, for the loader
// to skip and count; a message that is not a job this code knows (a worker script from another
// version of the package) throws here, which stops the thread and fails the pool.
import { parentPort, workerData } from 'node:worker_threads';
import { JOB_OPS, ownsBuffer, runJob, type ExampleJob } from './jobs.js';

interface JobMessage {
  type: 'job';
  id: number;
  job: ExampleJob;
}

if (!parentPort) throw new Error('lib/data/worker.ts runs as a worker thread of DecodePool');
const port = parentPort;
const limit = Math.max(1, Number((workerData as { concurrency?: number } | null)?.concurrency ?? 2));
const queue: JobMessage[] = [];
let running = 0;
let closing = false;

port.on('message', (m: { type?: string; id?: unknown; job?: { op?: unknown } }) => {
  if (m?.type === 'close') {
    // Jobs not started are dropped; the thread ends once the running ones are done.
    closing = true;
    queue.length = 0;
    if (running === 0) port.close();
    return;
  }
  if (m?.type !== 'job' || typeof m.id !== 'number' || !JOB_OPS.has(String(m.job?.op))) {
    const why = `not a job this worker knows: ${JSON.stringify(m).slice(0, 200)}`;
    // Say which job it was before the thread stops, so the error can name its file.
    if (typeof m?.id === 'number') port.postMessage({ id: m.id, fatal: why });
    throw new Error(`data worker: ${why}`);
  }
  queue.push(m as JobMessage);
  pump();
});

function pump(): void {
  while (running < limit && queue.length) {
    const m = queue.shift()!;
    running++;
    void run(m).finally(() => {
      running--;
      if (closing && running === 0) port.close();
      else pump();
    });
  }
}

async function run({ id, job }: JobMessage): Promise<void> {
  let reply: object, transfer: ArrayBuffer[] = [];
  try {
    const ex = await runJob(job);
    if (!ex) {
      reply = { id, none: true };
    } else {
      const image = ex.image instanceof Float32Array && !ownsBuffer(ex.image) ? ex.image.slice() : ex.image;
      reply = { id, image, caption: ex.caption };
      if (image instanceof Float32Array) transfer = [image.buffer as ArrayBuffer];
    }
  } catch (e) {
    reply = { id, error: (e as Error)?.message ?? String(e) };
  }
  if (!closing) port.postMessage(reply, transfer);
}
