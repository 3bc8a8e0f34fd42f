// A worker trains each job in a process of its own (`xp worker --train-job`, train-job.ts). The worker's event loop
// then only talks to Redis and MLflow, so BullMQ's lock on the job is renewed however long TensorFlow holds the
// trainer's thread; a trainer that dies (the kernel's OOM killer) fails its job, not the worker; and each job starts
// with all of the machine's memory.
import { fork } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../paths.ts';
import type { Outcome } from '../run/trials.ts';
import type { FromTrainer, JobRequest, ToTrainer } from './train-job.ts';
import type { JobEvent } from './worker.ts';

/** The trainer ended without an answer: killed, or crashed. */
export class TrainerDied extends Error {}

export async function trainInProcess(
  request: Omit<JobRequest, 'type'>,
  ctx: { stopLevel: () => number; cancelled: () => boolean; report: (event: JobEvent) => void; log: (line: string) => void },
): Promise<Outcome[]> {
  const child = fork(path.join(repoRoot, 'bin', 'xp.js'), ['worker', '--train-job'], {
    // XP_CHILD: the worker's own process filters TensorFlow's start-up lines already. XP_PARENT_PID: the trainer
    // ends with the worker, even while TensorFlow holds its main thread.
    env: { ...process.env, XP_CHILD: '1', XP_PARENT_PID: String(process.pid) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // Structured clone: NaN losses and Maps (the resume plan) arrive as they are.
    serialization: 'advanced',
  });
  ctx.log(`job ${request.jobId}: training in process ${child.pid}`);
  const send = (message: ToTrainer) => child.connected && child.send(message);
  let answer: FromTrainer | undefined;
  child.on('message', (message: FromTrainer) => {
    if (message.type === 'event') ctx.report(message.event);
    else answer = message;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  send({ type: 'job', ...request });
  let level = 0;
  let cancelled = false;
  const relay = setInterval(() => {
    if (ctx.stopLevel() > level) send({ type: 'stop', level: (level = ctx.stopLevel()) });
    if (ctx.cancelled() && !cancelled) {
      cancelled = true;
      send({ type: 'cancel' });
    }
  }, 100);
  try {
    const { code, signal } = await exited;
    if (answer?.type === 'done') return answer.outcomes;
    if (answer?.type === 'failed') throw new Error(answer.message);
    throw new TrainerDied(`the training process (${request.worker} on ${os.hostname()}) ended ${signal ? `by ${signal}${signal === 'SIGKILL' ? ' (out of memory? the kernel log says)' : ''}` : `with exit code ${code}`} before its job did`);
  } finally {
    clearInterval(relay);
  }
}
