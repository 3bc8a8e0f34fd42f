#!/usr/bin/env node
// `npm test`: the typecheck, vitest, then one plain closing line "N passed, N failed" that any CI log reader understands.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// Types first: strict TypeScript is part of the test (tsx runs the sources without checking them).
const types = spawnSync('npx', ['tsc', '--noEmit', '-p', '.'], { stdio: 'inherit' });
if (types.status !== 0) {
  console.log('\ntypecheck: 0 passed, 1 failed');
  process.exit(types.status || 1);
}

const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-vitest-')), 'report.json');
const r = spawnSync('npx', ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)], { stdio: 'inherit' });
try {
  const { numPassedTests, numFailedTests, numPendingTests } = JSON.parse(fs.readFileSync(report, 'utf8'));
  console.log(`\nvitest: ${numPassedTests} passed, ${numFailedTests} failed${numPendingTests ? `, ${numPendingTests} skipped` : ''}`);
} catch {
  console.log('\nvitest: 0 passed, 1 failed'); // no report: vitest itself failed to run
  process.exit(r.status || 1);
}
process.exit(r.status ?? 1);
