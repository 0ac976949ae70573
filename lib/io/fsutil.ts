// File helpers shared by the readers and writers: positioned reads into fresh buffers (one read
// call is capped near 2 GiB, so large ranges go in pieces) and atomic replacement of a file.
import { constants as bufferConstants } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { promises as fsp, type PathLike } from 'node:fs';
import * as path from 'node:path';

const CHUNK = 1 << 30;

/** The largest single Buffer this Node can allocate. */
export const MAX_BUFFER = bufferConstants.MAX_LENGTH;

/** Reads exactly `length` bytes at `offset` into a new, unpooled (so 8-byte aligned) Buffer. */
export async function readRange(fh: fsp.FileHandle, offset: number, length: number, file: string): Promise<Buffer> {
  if (length > MAX_BUFFER) throw new Error(`${file}: cannot read ${length} bytes into one buffer (limit ${MAX_BUFFER})`);
  const buf = Buffer.allocUnsafeSlow(length);
  let done = 0;
  while (done < length) {
    const n = Math.min(CHUNK, length - done);
    const { bytesRead } = await fh.read(buf, done, n, offset + done);
    if (bytesRead === 0) {
      throw new Error(`${file}: unexpected end of file at byte ${offset + done}, expected ${length} bytes from offset ${offset}`);
    }
    done += bytesRead;
  }
  return buf;
}

/**
 * Writes `chunks` to `target` through a temporary file in the same directory, fsynced and renamed
 * over the target, so a crash leaves either the old file or the complete new one.
 */
export async function writeFileAtomic(target: string, chunks: Iterable<Uint8Array>): Promise<void> {
  const dir = path.dirname(path.resolve(target));
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fsp.open(tmp, 'wx');
  let ok = false;
  try {
    for (const c of chunks) {
      let done = 0;
      while (done < c.byteLength) {
        const n = Math.min(CHUNK, c.byteLength - done);
        const { bytesWritten } = await fh.write(c, done, n);
        done += bytesWritten;
      }
    }
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await fsp.rm(tmp, { force: true });
  }
  try {
    await fsp.rename(tmp, target);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await syncDir(dir);
}

// Makes the rename itself durable; some platforms cannot open a directory, which is not an error.
async function syncDir(dir: PathLike): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // best effort
  } finally {
    await fh?.close();
  }
}
