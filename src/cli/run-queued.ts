// `xp run --queue`: every trial validated here, the sweep's parent run opened, the share groups (or single trials
// with --split) put on the queue for `xp worker`s, and with --wait followed to the summary. No TensorFlow here.
import { readLock } from '../lock/file.ts';
import os from 'node:os';
import path from 'node:path';
import type { LoadedExperiment } from '../config/load.ts';
import { reachQueue } from '../queue/connection.ts';
import { jobsOf } from '../queue/jobs.ts';
import { sweepRuns } from '../queue/runs.ts';
import { submitJobs } from '../queue/submit.ts';
import { openTracking } from '../tracking/session.ts';
import { closeSweep, finishedByHash, openSweep, sweepHash } from '../tracking/sweep.ts';
import type { Progress } from '../train/progress.ts';
import { groupTrials } from '../train/sharing.ts';
import { stoppable } from './interrupt.ts';
import { printLinks, summarize, type RunOptions } from './run.ts';

export async function runQueued(
  file: string,
  loaded: LoadedExperiment,
  opts: RunOptions & { queue: string; lockFile?: string },
  progress: Progress,
): Promise<number> {
  // Before MLflow starts or the sweep's parent run opens: a Redis that never answered is an error now.
  await reachQueue(opts.queue);
  const stop = stoppable(
    progress,
    '\nStopped: the jobs stay on the queue and the workers go on (`xp queue status` shows them; again to quit now)',
  );
  const log = (line: string) => progress.line(line);
  const tracking = opts.track ? await openTracking(loaded.base, log) : undefined;
  try {
    if (opts.parallel > 1 || opts.resume)
      log(
        '--parallel and --resume are for training here: with --queue, each worker trains one job at a time and resumes what it can by itself',
      );
    if (tracking?.embedded) {
      log(
        `warning: workers on other machines cannot log to this machine's embedded MLflow; serve one with \`xp server --backend postgresql://...\` and set MLFLOW_TRACKING_URI to it${opts.wait ? '' : ' (and this one stops with this command)'}`,
      );
    }
    const sweep =
      tracking && loaded.sweep
        ? await openSweep({
            uri: tracking.uri,
            experimentName: tracking.experimentName,
            loaded,
            trials: loaded.trials,
            rerun: opts.rerun,
            sourceFile: file,
            log,
          })
        : undefined;
    if (stop.requested()) return 130;
    const toRun = sweep?.trials ?? loaded.trials;
    if (!toRun.length) {
      progress.line('Every trial of this sweep has FINISHED already: nothing to queue.');
      return 0;
    }
    const groups = groupTrials(toRun, opts.share);
    const jobTracking = tracking && {
      uri: tracking.uri,
      experimentName: process.env.MLFLOW_EXPERIMENT_NAME || tracking.experimentName,
      parentRunId: sweep?.parentRunId,
      embeddedOn: tracking.embedded ? os.hostname() : undefined,
      sweep: sweep?.parentRunId
        ? {
            metric: sweep.config.metric,
            goal: sweep.config.goal,
            trialHashes: loaded.trials.map((t) => t.configHash),
          }
        : undefined,
    };
    const jobs = jobsOf(opts.split ? groups.flat().map((t) => [t]) : groups, {
      sweepId: sweepHash(loaded),
      sweepName: loaded.base.name,
      file: path.resolve(file),
      sources: loaded.sources,
      pins: opts.lockFile ? (await readLock(opts.lockFile)).remote : {},
      tracking: jobTracking,
      backup: opts.backup,
    });
    const { outcomes, ended } = await submitJobs({
      url: opts.queue,
      jobs,
      wait: opts.wait ?? false,
      progress,
      stop: stop.signal,
    });
    if (!ended) return stop.requested() ? 130 : 0;
    // Trials a worker found FINISHED already (an earlier attempt did them) compete for best too.
    if (sweep && jobTracking) {
      const rows = await sweepRuns(jobTracking).then(
        (r) => r.rows,
        () => [],
      );
      for (const [hash, row] of finishedByHash(
        rows,
        loaded.trials.map((t) => t.configHash),
      ))
        sweep.finished.set(hash, row);
    }
    const end =
      sweep && tracking
        ? await closeSweep({ uri: tracking.uri, loaded, session: sweep, results: outcomes, killed: false, log })
        : undefined;
    summarize(outcomes, progress, opts.output);
    if (opts.output !== 'json') printLinks(end, loaded, tracking, progress, false);
    return outcomes.some((o) => o.status === 'FAILED') ? 1 : 0;
  } finally {
    stop.dispose();
    await tracking?.close();
  }
}
