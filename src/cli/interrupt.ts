// Ctrl-C, SIGTERM and SIGHUP for the commands that train (`xp run`, `xp worker`): stop gently first, harder after.
import { hurryTracking } from '../tracking/tracker.ts';
import type { Progress } from '../train/progress.ts';

/**
 * SIGINT, SIGTERM and SIGHUP: the first stops training at the end of the step, writes what exists and closes the
 * runs; the second journals every open run's end (KILLED) at once and stops waiting on MLflow, so the process exits
 * as soon as its files are written; the third exits now (the runs' end is journaled on the way out). With
 * `finishEpoch` (a queue worker) one more signal comes first: it lets the current epoch end, so that the job given
 * back resumes after it.
 */
export function interruptible(progress: Progress, opts: { finishEpoch?: boolean } = {}) {
  const gentle = opts.finishEpoch ? 1 : 0;
  let count = 0;
  const onSignal = () => {
    count++;
    if (count <= gentle)
      progress.line(
        '\nStopping: finishing the current epoch, then giving the job back (again to stop at the end of the step)',
      );
    else if (count === gentle + 1)
      progress.line(
        '\nInterrupted: finishing the current step, saving what exists and closing the runs (again to stop waiting for MLflow)',
      );
    else if (count === gentle + 2) {
      const ended = hurryTracking();
      progress.line(
        `\nInterrupted again: ${ended ? `${ended} run(s) journaled as KILLED; ` : ''}not waiting for MLflow (\`xp sync\` sends the rest); once more to quit now`,
      );
    } else process.exit(130);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const signal of signals) process.on(signal, onSignal);
  return {
    /** A stop was asked for: no new epoch (or job) starts. */
    requested: () => count > 0,
    /** Training stops at the end of the step. */
    atStep: () => count > gentle,
    /** How many signals came (a queue worker passes the count on to its training process). */
    count: () => count,
    dispose: () => {
      for (const signal of signals) process.off(signal, onSignal);
    },
  };
}

/**
 * SIGINT, SIGTERM and SIGHUP for a command that only waits on others (`xp run --queue` following its jobs, which
 * workers train): the first says `saying` and aborts `signal`, so that whatever it waits on (Redis, MLflow) is
 * given up and the command ends; the second exits now.
 */
export function stoppable(progress: Progress, saying: string) {
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130);
    progress.line(saying);
    controller.abort();
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const signal of signals) process.on(signal, onSignal);
  return {
    signal: controller.signal,
    requested: () => controller.signal.aborted,
    dispose: () => {
      for (const signal of signals) process.off(signal, onSignal);
    },
  };
}
