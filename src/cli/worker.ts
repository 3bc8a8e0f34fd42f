// `xp worker`: trains the queue's jobs on this machine until stopped. With --concurrency N, N workers in child
// processes, TensorFlow's threads divided between them (as --parallel does).
import os from 'node:os';
import path from 'node:path';
import { XpError } from '../errors.ts';
import { repoRoot } from '../paths.ts';
import { queueUrl, reachQueue } from '../queue/connection.ts';
import { createProgress } from '../train/progress.ts';
import { interruptible } from './interrupt.ts';

export interface WorkerCommandOptions {
  queue?: string;
  name?: string;
  concurrency: number;
  /** Internal: this process is a worker's training process, for one job sent over IPC. */
  trainJob?: boolean;
}

export async function workerCommand(opts: WorkerCommandOptions): Promise<number> {
  if (opts.trainJob) {
    const { trainJobProcess } = await import('../queue/train-job.ts');
    return trainJobProcess();
  }
  const url = queueUrl(opts.queue);
  if (!url)
    throw new XpError('xp worker needs the queue: --queue redis://host:6379 (or XP_QUEUE_URL)', {
      hint: 'xp worker --queue redis://127.0.0.1:6379',
    });
  // A Redis that never answered is an error now; one that answered is reconnected to when it goes away.
  await reachQueue(url);
  const name = opts.name ?? `${os.hostname()}-${process.pid}`;
  if (opts.concurrency > 1) return inChildren(url, name, opts.concurrency);
  const progress = createProgress('quiet');
  // The acceleration policy is settled before any job is taken: a bad XP_ACCEL fails here.
  const { accelPolicy } = await import('../accel/index.ts');
  accelPolicy();
  const stop = interruptible(progress, { finishEpoch: true });
  try {
    const { runWorker } = await import('../queue/worker.ts');
    await runWorker({ url, name, progress, stopLevel: stop.count });
    // ioredis may go on retrying a Redis that is gone even after the worker disconnects: nothing is left to do.
    setTimeout(() => process.exit(), 1000).unref();
    return 0;
  } finally {
    stop.dispose();
  }
}

async function inChildren(url: string, name: string, n: number): Promise<number> {
  const { execa } = await import('execa');
  const threads = String(Math.max(1, Math.floor(os.cpus().length / n)));
  const bin = path.join(repoRoot, 'bin', 'xp.js');
  const children = Array.from({ length: n }, (_, i) =>
    execa(process.execPath, [bin, 'worker', '--queue', url, '--name', `${name}-${i + 1}`], {
      stdio: 'inherit',
      reject: false,
      env: {
        TF_NUM_INTRAOP_THREADS: threads,
        TF_NUM_INTEROP_THREADS: '1',
        OMP_NUM_THREADS: threads,
        XP_PARENT_PID: String(process.pid),
      },
    }),
  );
  const forward = (signal: NodeJS.Signals) => {
    for (const child of children) child.kill(signal);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward);
  const results = await Promise.all(children);
  return results.some((r) => r.exitCode !== 0) ? 1 : 0;
}
