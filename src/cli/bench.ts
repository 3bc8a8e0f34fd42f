// `xp bench` runs bench/main.ts in a process of its own (node with tsx's loader, as bin/xp.js runs the CLI):
// the benchmark is not part of xp's import graph, and xp ships nothing from bench/.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from '../paths.ts';

export interface BenchRequest {
  quick: boolean;
  full: boolean;
  keras: boolean;
  sweep: boolean;
  onlySweep: boolean;
  set: string[];
}

export function runBench(request: BenchRequest): Promise<number> {
  const entry = path.join(repoRoot, 'bench', 'main.ts');
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), entry, JSON.stringify(request)], {
    stdio: 'inherit',
  });
  // bin/xp.js runs this process in a group of its own and passes signals to it alone: pass them on.
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, forward);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      for (const s of signals) process.off(s, forward);
      resolve(code ?? (signal === 'SIGINT' ? 130 : 1));
    });
  });
}
