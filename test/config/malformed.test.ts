import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { preflight as loadExperiment } from '../../src/cli/preflight.ts';
import { ConfigProblems, formatProblem } from '../../src/config/problems.ts';

const dir = path.resolve(import.meta.dirname, '../fixtures/malformed');
const files = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .sort();

describe('malformed experiment files', () => {
  it('has a corpus of at least 20 files', () => {
    expect(files.length).toBeGreaterThanOrEqual(20);
  });

  for (const name of files) {
    it(`rejects ${name} with the expected position and message`, async () => {
      const file = path.join(dir, name);
      const expected = fs
        .readFileSync(file, 'utf8')
        .split('\n')[0]
        .replace(/^# expect: /, '');
      const error = await loadExperiment(file).then(
        () => undefined,
        (e) => e,
      );
      expect(error).toBeInstanceOf(ConfigProblems);
      const lines = (error as ConfigProblems).problems.map(formatProblem);
      expect(
        lines.some((l) => l.startsWith(`${file}:${expected}`)),
        `got:\n${lines.join('\n')}`,
      ).toBe(true);
    });
  }
});
