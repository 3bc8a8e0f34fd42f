// `xp queue [status|cancel|retry] [sweep]`: prints what the queue holds of a sweep and acts on it.
import { XpError } from '../errors.ts';
import { connectionOf, queueUrl, shownUrl } from '../queue/connection.ts';

export const QUEUE_ACTIONS = ['status', 'cancel', 'retry'] as const;

export async function queueCommand(args: string[], opts: { queue?: string; json: boolean }): Promise<number> {
  const url = queueUrl(opts.queue);
  if (!url) throw new XpError('xp queue needs the queue: --queue redis://host:6379 (or XP_QUEUE_URL)');
  connectionOf(url);
  const [action, sweep] = (QUEUE_ACTIONS as readonly string[]).includes(args[0] ?? '') ? args : ['status', ...args];
  const admin = await import('../queue/admin.ts');
  const reach = (error: Error) => {
    if (error instanceof XpError) throw error;
    throw new XpError(`cannot reach the queue at ${shownUrl(url)}: ${error.message}`, {
      cause: error,
      hint: 'is Redis running there? (redis-cli -u URL ping)',
    });
  };
  if (action === 'status') {
    const rows = await admin.queueStatus(url, sweep).catch(reach);
    if (opts.json) console.log(JSON.stringify(rows));
    else if (!rows.length)
      console.log(sweep ? `No job of sweep ${sweep} on ${shownUrl(url)}` : `No job on ${shownUrl(url)}`);
    else {
      const count = (state: string) => rows.filter((r) => r.state === state).length;
      console.log(
        `${rows.length} job(s): ${count('waiting') + count('prioritized') + count('delayed')} waiting, ${count('active')} running, ${count('completed')} done, ${count('failed')} failed`,
      );
      for (const r of rows) {
        const by = r.worker && r.state !== 'waiting' ? ` on ${r.worker}` : '';
        console.log(
          `  ${r.id}  ${r.state}${by}${r.attempts > 1 ? ` (attempt ${r.attempts})` : ''}: ${r.trials.join('; ')}${r.error && r.state === 'failed' ? `\n      ${r.error}` : ''}`,
        );
      }
    }
    return 0;
  }
  if (!sweep)
    throw new XpError(
      `xp queue ${action} needs the sweep: its id (as \`xp queue status\` prints it) or experiment name`,
    );
  if (action === 'cancel') {
    const { removed, stopping } = await admin.cancelSweep(url, sweep).catch(reach);
    console.log(`${removed} waiting job(s) removed; ${stopping} running job(s) stop at the end of their step`);
  } else {
    const retried = await admin.retrySweep(url, sweep).catch(reach);
    console.log(`${retried} failed job(s) of ${sweep} queued again`);
  }
  return 0;
}
