// The README's examples marked "runs in test/readme.test.ts" run as written (`tsclip` is this tree).
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/<!-- runs in test\/readme\.test\.ts -->\n```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

describe('README examples', () => {
  it('are found', () => expect(blocks.length).toBeGreaterThanOrEqual(2));
  blocks.forEach((code, i) => {
    it(`example ${i + 1} runs`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tsclip-readme-'));
      const file = join(dir, `example${i}.ts`);
      writeFileSync(file, code.replace(/from 'tsclip'/g, `from ${JSON.stringify(join(__dirname, '..', 'lib', 'index.ts'))}`));
      await import(file);
    }, 120_000);
  });
});
