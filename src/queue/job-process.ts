// A worker trains its jobs in a process of its own (`xp worker --train-job`, train-job.ts), kept warm from one job
// to the next. The worker's event loop then only talks to Redis and MLflow, so BullMQ's lock on the job is renewed
// however long TensorFlow holds the trainer's thread; and a trainer that dies (the kernel's OOM killer, a crash in
// TensorFlow) fails its job, not the worker, which starts a fresh trainer for the next one.
import { fork, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../paths.ts';
import type { Outcome } from '../run/trials.ts';
import type { FromTrainer, JobRequest, ToTrainer } from './train-job.ts';
import type { JobEvent } from './worker.ts';

/** The trainer ended without an answer: killed, or crashed. `how` says how it ended. */
export class TrainerDied extends Error {
  constructor(
    readonly how: string,
    worker: string,
  ) {
    super(`the training process (${worker} on ${os.hostname()}) ${how}`);
  }
}

interface Trainer {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Where the trainer's messages go while it has a job. */
  onMessage?: (message: FromTrainer) => void;
}

let trainer: Trainer | undefined;

function startTrainer(): Trainer {
  const child = fork(path.join(repoRoot, 'bin', 'xp.js'), ['worker', '--train-job'], {
    // XP_CHILD: the worker's own process filters TensorFlow's start-up lines already. XP_PARENT_PID: the trainer
    // ends with the worker, even while TensorFlow holds its main thread.
    env: { ...process.env, XP_CHILD: '1', XP_PARENT_PID: String(process.pid) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // Structured clone: NaN losses and Maps (the resume plan) arrive as they are.
    serialization: 'advanced',
  });
  const started: Trainer = {
    child,
    exited: new Promise((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
      // A trainer that could not start never exits; a message that cannot be sent (it just died) is answered by its exit.
      child.on('error', () => child.pid === undefined && resolve({ code: null, signal: null }));
    }),
  };
  child.on('message', (message: FromTrainer) => started.onMessage?.(message));
  void started.exited.then(() => {
    if (trainer === started) trainer = undefined;
  });
  return started;
}

export async function trainInProcess(
  request: Omit<JobRequest, 'type'>,
  ctx: {
    stopLevel: () => number;
    cancelled: () => boolean;
    report: (event: JobEvent) => void;
    log: (line: string) => void;
  },
): Promise<Outcome[]> {
  const warm = Boolean(trainer);
  trainer ??= startTrainer();
  const current = trainer;
  ctx.log(`job ${request.jobId}: training in process ${current.child.pid}${warm ? ' (warm from the last job)' : ''}`);
  const send = (message: ToTrainer) => current.child.connected && current.child.send(message);
  const answer = new Promise<FromTrainer | undefined>((resolve) => {
    current.onMessage = (message) => (message.type === 'event' ? ctx.report(message.event) : resolve(message));
    void current.exited.then(() => resolve(undefined));
  });
  send({ type: 'job', ...request });
  let level = 0;
  let cancelled = false;
  const relay = setInterval(() => {
    if (ctx.stopLevel() > level) {
      level = ctx.stopLevel();
      send({ type: 'stop', level });
    }
    if (ctx.cancelled() && !cancelled) {
      cancelled = true;
      send({ type: 'cancel' });
    }
  }, 100);
  try {
    const reply = await answer;
    if (reply?.type === 'done') return reply.outcomes;
    if (reply?.type === 'failed') {
      // Whatever failed may have left TensorFlow's state behind: the next attempt starts in a fresh process.
      void stopTrainer();
      throw new Error(reply.message);
    }
    const { code, signal } = await current.exited;
    throw new TrainerDied(
      `ended ${signal ? `by ${signal}${signal === 'SIGKILL' ? ' (out of memory? the kernel log says)' : ''}` : `with exit code ${code}`} before its job did`,
      request.worker,
    );
  } finally {
    clearInterval(relay);
    current.onMessage = undefined;
  }
}

/** The warm trainer, if any, ends (it exits when its channel to the worker closes). */
export async function stopTrainer(): Promise<void> {
  const current = trainer;
  trainer = undefined;
  if (!current) return;
  if (current.child.connected) current.child.disconnect();
  const timer = setTimeout(() => current.child.kill('SIGKILL'), 5000);
  await current.exited;
  clearTimeout(timer);
}
