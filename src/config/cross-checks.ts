// Checks that need more than the schema: layer names of the chosen backbone, data folders on disk.
import fs from 'node:fs';
import path from 'node:path';
import { ModelError } from '../errors.ts';
import type { Experiment } from './types.ts';
import type { FieldProblem } from './validate.ts';

export async function crossChecks(e: Experiment, baseDir: string): Promise<FieldProblem[]> {
  return [...(await layerChecks(e, baseDir)), ...dataChecks(e, baseDir)];
}

async function layerChecks(e: Experiment, baseDir: string): Promise<FieldProblem[]> {
  const names = await layerNames(e, baseDir);
  if (!names.ok) return [{ path: ['backbone', 'weights'], message: names.message }];
  const problems: FieldProblem[] = [];
  const { unknownLayerError } = await import('../model/layers.ts');
  for (const field of ['cut_layer', 'trainable_from'] as const) {
    const given = e.backbone[field];
    if (given !== undefined && !names.list.includes(given)) {
      const err = unknownLayerError(`backbone.${field}`, given, names.list, names.what);
      problems.push({ path: ['backbone', field], message: `${err.message}${err.hint?.startsWith('Did you mean') ? ` ${err.hint}` : ''}` });
    }
  }
  return problems;
}

type Names = { ok: true; list: string[]; what: string } | { ok: false; message: string };

// The backbone's weights file is checked here too (structure, shapes, manifest), so that a bad file
// fails `xp check` and `xp run` before any image is decoded.
async function layerNames(e: Experiment, baseDir: string): Promise<Names> {
  const { inspectBackboneWeights } = await import('../model/layers.ts');
  try {
    const { layerNames, what } = await inspectBackboneWeights(e.backbone, { baseDir });
    return { ok: true, list: layerNames, what };
  } catch (error) {
    if (!(error instanceof ModelError)) throw error;
    return { ok: false, message: `backbone.weights: ${error.message}${error.hint ? ` ${error.hint}` : ''}` };
  }
}

function dataChecks(e: Experiment, baseDir: string): FieldProblem[] {
  if (e.data.url) return []; // looked up in the data directory, downloaded when missing
  const problems: FieldProblem[] = [];
  for (const field of ['train', 'validation'] as const) {
    const dir = path.resolve(baseDir, e.data[field]);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      problems.push({ path: ['data', field], message: `data.${field}: no such directory ${dir}; give a folder with one subfolder per class, or set data.url` });
    }
  }
  return problems;
}
