// Watching the xp processes the hostile tests start, signal and kill.
import type { ResultPromise } from 'execa';

/** Resolves once the process's stdout contains `text`; rejects when it exits first, with what it printed. */
export function until(child: ResultPromise, text: string | RegExp): Promise<void> {
  let seen = '';
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (typeof text === 'string' ? seen.includes(text) : text.test(seen)) resolve();
    });
    child.once('exit', () => reject(new Error(`exited before printing ${text}:\n${seen}`)));
  });
}

/** Whether a process of this pid runs (signal 0 asks without sending). */
export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
