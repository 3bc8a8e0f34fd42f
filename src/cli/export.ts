// `xp export`: parses, calls the export use case, prints what was written and how it was checked.
import fs from 'node:fs';
import path from 'node:path';
import { XpError } from '../errors.ts';
import { EXPORT_FORMATS, TOLERANCE, type ExportFormat } from '../export/export.ts';

export async function exportCommand(
  target: string,
  opts: { format?: string; out?: string; images?: string; json: boolean },
): Promise<number> {
  const format = (opts.format ?? 'tfjs') as ExportFormat;
  if (!EXPORT_FORMATS.includes(format))
    throw new XpError(`--format ${opts.format}: unknown format`, { hint: `one of ${EXPORT_FORMATS.join(', ')}` });
  const runDir = await runFolder(target);
  const { exportRun } = await import('../export/export.ts');
  const log = (line: string) => console.error(line);
  const result = await exportRun({ runDir, format, out: opts.out, images: opts.images, log });
  if (opts.json) {
    console.log(JSON.stringify({ format, ...result }));
    return 0;
  }
  console.log(`Exported ${format}: ${shown(result.model)}`);
  console.log(
    `  checked: on the ${result.check.images} images of ${shown(result.check.folder)}, its probabilities differ from xp predict's by at most ${result.check.maxDifference.toExponential(1)} (allowed ${TOLERANCE})`,
  );
  console.log(`  class names, image size and the run it came from: ${shown(metadataPath(result.out, format))}`);
  return 0;
}

export async function registerCommand(
  target: string,
  name: string,
  opts: { metric?: string; images?: string; json: boolean },
): Promise<number> {
  const runDir = await runFolder(target);
  const { championLine, registerRun } = await import('../export/register.ts');
  const { modelVersionRoute, uiLink } = await import('../tracking/links.ts');
  const r = await registerRun({ runDir, name, metric: opts.metric, images: opts.images, log: (l) => console.error(l) });
  if (opts.json) {
    console.log(JSON.stringify(r));
    return 0;
  }
  console.log(
    `Registered ${r.name} version ${r.version} (${r.metric} ${r.value.toFixed(4)}): models:/${r.name}/${r.version}`,
  );
  console.log(`  ${championLine(r)}`);
  console.log(`  MLflow: ${uiLink(r.trackingUri, modelVersionRoute(r.name, r.version))}`);
  const { kerasBin } = await import('../python/keras-env.ts');
  console.log(
    `  serve it: PATH=${kerasBin()}:$PATH MLFLOW_TRACKING_URI=${r.trackingUri} mlflow models serve -m models:/${r.name}@champion --env-manager local${r.embedded ? ' (while `xp ui` serves the embedded store)' : ''}`,
  );
  return 0;
}

/** A run folder, or `runs:/<run id>` (MLflow's words) for a run whose folder this machine has. */
async function runFolder(target: string): Promise<string> {
  const id = /^runs:\/([0-9a-f]{32})\/?$/i.exec(target)?.[1];
  if (!id) {
    if (target.startsWith('runs:/'))
      throw new XpError(`${target} is not runs:/<run id> (32 hex digits)`, {
        hint: 'xp runs --wide lists whole run ids',
      });
    if (!fs.statSync(target, { throwIfNoEntry: false })?.isDirectory())
      throw new XpError(`${target} is not a run folder`, {
        hint: 'give runs/<experiment>/<run-id>, or runs:/<run id>',
      });
    return target;
  }
  const { storedRuns } = await import('../tracking/store.ts');
  const { trackingUriFromEnv } = await import('../tracking/uri.ts');
  const { mlflowStoreDir } = await import('../paths.ts');
  const { rows, from } = await storedRuns({ uri: trackingUriFromEnv(), storeDir: mlflowStoreDir() });
  const row = rows.find((r) => r.runId === id.toLowerCase());
  if (!row) throw new XpError(`MLflow (${from}) has no run ${id}`, { hint: 'xp runs --wide lists whole run ids' });
  if (!row.runDir || !fs.existsSync(row.runDir))
    throw new XpError(`run ${id} has no run folder on this machine${row.runDir ? ` (it was ${row.runDir})` : ''}`, {
      hint: 'export it on the machine that trained it, or copy its run folder here and give that folder',
    });
  return row.runDir;
}

function metadataPath(out: string, format: ExportFormat): string {
  return format === 'savedmodel' ? path.join(out, 'assets.extra', 'xp-model.json') : path.join(out, 'xp-model.json');
}

const shown = (p: string) => {
  const rel = path.relative(process.cwd(), p);
  return rel.startsWith('..') ? p : rel || '.';
};
