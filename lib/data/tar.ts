// Reading tar archives entry by entry without loading them whole (ustar, GNU long names, pax paths).
import { promises as fsp } from 'node:fs';

export interface TarEntry {
  name: string;
  data: Uint8Array;
}

function str(b: Uint8Array, start: number, len: number): string {
  let end = start;
  while (end < start + len && b[end] !== 0) end++;
  return Buffer.from(b.subarray(start, end)).toString('utf8');
}

/** Regular files of a tar archive in order, read sequentially. */
export async function* readTar(file: string): AsyncGenerator<TarEntry> {
  const fh = await fsp.open(file, 'r').catch((e) => {
    throw new Error(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  });
  try {
    const header = new Uint8Array(512);
    let pos = 0;
    let longName: string | null = null;
    for (;;) {
      const { bytesRead } = await fh.read(header, 0, 512, pos);
      if (bytesRead === 0) return;
      if (bytesRead < 512) throw new Error(`${file}: truncated tar header at byte ${pos}`);
      if (header.every((x) => x === 0)) return;
      const sizeText = str(header, 124, 12).trim();
      const size = parseInt(sizeText || '0', 8);
      if (!Number.isFinite(size) || size < 0) throw new Error(`${file}: bad tar entry size "${sizeText}" at byte ${pos}`);
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : header[i];
      const stored = parseInt(str(header, 148, 8).trim(), 8);
      if (stored !== sum) throw new Error(`${file}: tar header checksum mismatch at byte ${pos} (not a tar file or corrupt)`);
      const type = String.fromCharCode(header[156] || 48);
      const prefix = str(header, 345, 155);
      let name = (prefix ? `${prefix}/` : '') + str(header, 0, 100);
      pos += 512;
      const data = new Uint8Array(size);
      if (size) {
        const r = await fh.read(data, 0, size, pos);
        if (r.bytesRead < size) throw new Error(`${file}: entry "${name}" is truncated (${r.bytesRead} of ${size} bytes)`);
      }
      pos += Math.ceil(size / 512) * 512;
      if (type === 'L') {
        longName = str(data, 0, data.length);
        continue;
      }
      if (type === 'x') {
        const m = /\d+ path=([^\n]*)\n/.exec(Buffer.from(data).toString('utf8'));
        if (m) longName = m[1];
        continue;
      }
      if (longName) {
        name = longName;
        longName = null;
      }
      if (type === '0' || type === '\0' || type === '7') yield { name, data };
    }
  } finally {
    await fh.close();
  }
}
