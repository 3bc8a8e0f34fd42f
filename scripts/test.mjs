#!/usr/bin/env node
// `npm test`: the typecheck, vitest, the training tests again under XP_ACCEL=plain, then one plain closing line
// "N passed, N failed" (over both passes) that any CI log reader understands.
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

// Then the training tests again under the plain acceleration policy (XP_ACCEL=plain: trainOnBatch, model.predict,
// tfjs optimizer ops), so xp without native/build/xp_ops.node stays tested. Arguments run only what they name.
const passes = [{ args: process.argv.slice(2), env: {} }];
if (process.argv.length <= 2)
  passes.push({ args: ['test/train'], env: { XP_ACCEL: 'plain' }, label: 'XP_ACCEL=plain' });

let passed = 0,
  failed = 0,
  skipped = 0,
  status = 0;
for (const pass of passes) {
  if (pass.label) console.log(`\nvitest again with ${pass.label}: ${pass.args.join(' ')}`);
  const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-vitest-')), 'report.json');
  const r = spawnSync(
    'npx',
    ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...pass.args],
    { stdio: 'inherit', env: { ...process.env, ...pass.env } },
  );
  try {
    const { numPassedTests, numFailedTests, numPendingTests } = JSON.parse(fs.readFileSync(report, 'utf8'));
    passed += numPassedTests;
    failed += numFailedTests;
    skipped += numPendingTests;
    if (r.status !== 0) status = r.status ?? 1;
  } catch {
    console.log('\nvitest: 0 passed, 1 failed'); // no report: vitest itself failed to run
    process.exit(r.status || 1);
  }
}
console.log(`\nvitest: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(status);
