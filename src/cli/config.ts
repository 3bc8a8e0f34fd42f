// `xp config <file|URL>`: the resolved experiment as YAML, what `xp run` uses: the files it extends merged, flags
// applied, paths resolved, schema defaults filled in. With --origins, each value says where it came from: the
// file:line that wrote it (with the files extending that one), the flag, or `default` (Hydra's --cfg job / --info).
import YAML, { isMap, isScalar, isSeq, type Node } from 'yaml';
import { loadExperiment, type LoadedExperiment } from '../config/load.ts';
import { useLock, type LockOptions } from '../lock/lock.ts';

export interface ConfigOptions {
  set?: string[];
  sweep?: string[];
  maxTrials?: number;
  reload?: boolean;
  origins?: boolean;
  /** Remote files fetched on the way are pinned as `xp run` pins them. */
  lock: LockOptions;
}

export async function configCommand(file: string, opts: ConfigOptions): Promise<number> {
  await useLock(file, opts.lock);
  const loaded = await loadExperiment(file, {
    set: opts.set,
    sweep: opts.sweep,
    maxTrials: opts.maxTrials,
    reload: opts.reload,
    deep: false,
  });
  const doc = new YAML.Document(loaded.base);
  if (opts.origins) annotate(doc.contents, [], loaded.origin);
  const chain =
    loaded.sources.length > 1
      ? `, extending ${loaded.sources
          .slice(1)
          .map((s) => s.spec)
          .join(', ')}`
      : '';
  process.stdout.write(`# Resolved experiment from ${file}${chain}\n${doc.toString({ lineWidth: 0 })}`);
  return 0;
}

// Each value that is not a mapping gets its origin as a comment on its line (lists written inline to keep it there).
function annotate(node: unknown, at: string[], origin: LoadedExperiment['origin']): void {
  if (!isMap(node)) return;
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const value = pair.value as Node | null;
    if (isMap(value)) annotate(value, [...at, key], origin);
    else if (value) {
      if (isSeq(value)) value.flow = true;
      value.comment = ` ${origin([...at, key])}`;
    }
  }
}
