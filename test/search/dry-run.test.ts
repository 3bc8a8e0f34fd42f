// `xp run --dry-run` of a search: the round size and why (the head's bytes from the backbone's topology, the memory
// available), Hyperband's brackets and their rungs, the most trial-epochs it can cost; the same head size as the run.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeTempDirs, tempDir } from '../tracking/helpers.ts';
import { writeSearch, xpIn } from './helpers.ts';

const tmp = tempDir('search-dry-run');
const runs = path.join(tmp, 'runs');
afterAll(removeTempDirs);

const dropout = `
  head.dropout: {distribution: uniform, min: 0.0, max: 0.7}`;

describe('xp run --dry-run of a search', () => {
  it("prints Hyperband's brackets, the round size from memory, and the most it can cost", async () => {
    const file = writeSearch(
      tmp,
      'hyperband',
      'dry-hyperband',
      `
  method: tpe
  trials: 10
  early_terminate: {type: hyperband, min_epochs: 1, eta: 3}${dropout}`,
      9,
    );
    const r = await xpIn(runs, ['run', file, '--dry-run', '--no-track']);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    // block_2_add of MobileNetV2 at 96x96 is 24x24x24; avg pooling, 16 units, one output: 417 weights, RMSprop's
    // one slot: 4 bytes x 417 x 3 = 5004 bytes.
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^ {2}rounds of 10 trial\(s\) now: auto: 5 KB per head \(weights, gradient, optimizer slots\), half of \d+ MB available fits [\d,]+, capped at trials 10$/,
      ),
    );
    expect(lines).toContain(
      "  early_terminate hyperband: 3 bracket(s), trials spread over them; the top 1/3 of a rung's trials go on",
    );
    expect(lines).toContain('    bracket 1: rungs after epoch 1, 3');
    expect(lines).toContain('    bracket 2: rungs after epoch 3');
    expect(lines).toContain('    bracket 3: no rung: its trials train every epoch');
    expect(lines).toContain('  at most 90 trial-epochs (10 trials x 9 epochs, if none is stopped)');
    // xp check counts the search's trials, not the probes its checks try.
    const checked = await xpIn(runs, ['check', file]);
    expect(checked.stdout.trim()).toBe(`${file}: ok (mobilenet_v2 cut at block_2_add, tpe search of 10 trials)`);
  });

  it('counts the same bytes per head as the run, which builds the backbone', async () => {
    const file = writeSearch(tmp, 'one', 'dry-one', `\n  method: tpe\n  trials: 1${dropout}`, 1);
    const dry = await xpIn(runs, ['run', file, '--dry-run', '--no-track']);
    const planned = /rounds of 1 trial\(s\) now: auto: (\d+ KB) per head/.exec(dry.stdout)?.[1];
    expect(planned, dry.stdout).toBeDefined();
    const run = await xpIn(runs, ['run', file, '--no-track', '--quiet']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain(`Rounds of 1 trial(s): auto: ${planned} per head`);
  });
});
