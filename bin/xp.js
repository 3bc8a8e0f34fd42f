#!/usr/bin/env node
// Runs the TypeScript sources directly (no build step) through tsx's loader. Works from any folder and through the
// link `npm link` or `npm install -g` puts on the PATH: Node runs this file from its real path, so imports resolve
// in the installation, and the installation's tsconfig.json compiles the sources, not one in the current folder.
import { spawn } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

// Commands that load TensorFlow run in a child process: glibc tunables are read at process start, and TensorFlow's
// start-up lines reach stderr before any log level applies, so they can only be filtered from outside.
const heavy = ['run', 'worker', 'bench', 'evaluate', 'predict', 'serve'].includes(process.argv[2] ?? '');

async function runCli() {
  const parent = Number(process.env.XP_PARENT_PID);
  // Its own children (--parallel workers) have another parent.
  delete process.env.XP_PARENT_PID;
  if (parent) await dieWithParent(parent);
  const { register } = await import('tsx/esm/api');
  // TensorFlow's C++ chatter (oneDNN, CPU features) is noise to users; errors still show.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
  register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
  const { main } = await import('../src/cli/main.ts');
  process.exitCode = await main(process.argv.slice(2));
}

/**
 * Spawned by supervise(): end with the parent, however it ends (SIGKILL too). A worker thread watches the parent
 * pid, since training may hold the main thread for long stretches. When it is gone: as two Ctrl-C (stop at the end
 * of the step, journal the runs' end, stop waiting on MLflow) as soon as the main thread listens, and after a
 * grace period a kill (`xp sync` then closes the runs as KILLED).
 */
async function dieWithParent(parent) {
  const { Worker } = await import('node:worker_threads');
  // Signals, not messages: a listened-to message port would keep the process alive.
  const watchdog = new Worker(
    `
    const { workerData } = require('node:worker_threads');
    const timer = setInterval(() => {
      if (process.ppid === workerData.parent) return;
      clearInterval(timer);
      process.kill(process.pid, 'SIGTERM');
      setTimeout(() => process.kill(process.pid, 'SIGTERM'), 100);
      setTimeout(() => process.kill(process.pid, 'SIGKILL'), workerData.graceMs);
    }, 200);
  `,
    { eval: true, workerData: { parent, graceMs: 3000 } },
  );
  watchdog.unref();
}

async function supervise() {
  const env = { ...process.env, XP_CHILD: '1', XP_PARENT_PID: String(process.pid) };
  // Training allocates and frees tensors of up to ~150 MB every step (the reference head's kernel). glibc maps each
  // with 4 KB pages, first-touched one fault at a time; transparent huge pages make the head's training step faster.
  const tunable = 'glibc.malloc.hugetlb=1';
  if (os.platform() === 'linux' && !(env.GLIBC_TUNABLES ?? '').includes('glibc.malloc.hugetlb')) {
    env.GLIBC_TUNABLES = [env.GLIBC_TUNABLES, tunable].filter(Boolean).join(':');
  }
  const quiet = !process.env.XP_DEBUG;
  // Own process group: a terminal's Ctrl-C reaches this process only, which passes it on exactly once.
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['inherit', 'inherit', quiet ? 'pipe' : 'inherit'],
    env,
    detached: true,
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  const drained = quiet ? filterStderr(child.stderr) : Promise.resolve();
  const [code, signal] = await new Promise((resolve) => child.on('exit', (...result) => resolve(result)));
  // A grandchild holding the pipe must not keep this process alive.
  await Promise.race([drained, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
  process.exit(code ?? 128 + (os.constants.signals[signal] ?? 1));
}

// TensorFlow's start-up lines, written before its log level applies: absl's banner and INFO-level lines (oneDNN,
// CPU features). Warnings and errors pass. XP_DEBUG=1 shows everything.
const NOISE = [
  /^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$/,
  /^I\d{4} [\d:.]+\s+\d+ [\w.-]+:\d+\] /,
  /^\d{4}-\d\d-\d\d [\d:.]+: I [\w/.-]+:\d+\] /,
  /^To enable the following instructions: .*, in other operations, rebuild TensorFlow with the appropriate compiler flags\.$/,
];

function filterStderr(stream) {
  let rest = '';
  let timer;
  const write = (text) => {
    const lines = text.split('\n');
    process.stderr.write(
      lines.filter((line, i) => i === lines.length - 1 || !NOISE.some((re) => re.test(line))).join('\n'),
    );
  };
  return new Promise((resolve) => {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      clearTimeout(timer);
      const text = rest + chunk;
      const cut = text.lastIndexOf('\n') + 1;
      write(text.slice(0, cut));
      rest = text.slice(cut);
      // A prompt or progress without a newline still shows.
      if (rest)
        timer = setTimeout(() => {
          write(rest);
          rest = '';
        }, 100);
    });
    stream.on('end', () => {
      clearTimeout(timer);
      if (rest) write(rest);
      resolve();
    });
  });
}

// A reader that went away (`xp runs | head`) is no reason to stop, least of all in the middle of a run: what is
// written after it is dropped, instead of an EPIPE error ending the process with a stack trace.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (error) => {
    if (error.code !== 'EPIPE') throw error;
  });

if (heavy && !process.env.XP_CHILD) await supervise();
else await runCli();
