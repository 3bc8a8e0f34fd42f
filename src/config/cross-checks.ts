// Checks that need more than the schema: layer names of the chosen backbone, data folders on disk.
import fs from 'node:fs';
import path from 'node:path';
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

async function layerNames(e: Experiment, baseDir: string): Promise<Names> {
  const w = e.backbone.weights;
  if (/\.json$/i.test(w)) {
    const file = path.resolve(baseDir, w);
    try {
      const { allLayerNames, modelConfigOf } = await import('../model/topology.ts');
      const json = JSON.parse(fs.readFileSync(file, 'utf8'));
      return { ok: true, list: allLayerNames(modelConfigOf(json.modelTopology)), what: path.relative(process.cwd(), file) };
    } catch (error: any) {
      return { ok: false, message: `backbone.weights: cannot read the tfjs model ${file} (${error.code ?? error.message}); give the path of a model.json` };
    }
  }
  if (/\.h5$/i.test(w) && !fs.existsSync(path.resolve(baseDir, w))) {
    return { ok: false, message: `backbone.weights: no such file ${path.resolve(baseDir, w)}; give the path of a Keras .h5 weights file, or use nsfwjs or imagenet` };
  }
  if (!['nsfwjs', 'imagenet'].includes(w) && !/\.(h5|json)$/i.test(w)) {
    return { ok: false, message: `backbone.weights must be nsfwjs, imagenet, a Keras .h5 file or a tfjs model.json (got "${w}")` };
  }
  const { backboneLayerNames } = await import('../model/layers.ts');
  return { ok: true, list: await backboneLayerNames(e.backbone.name), what: e.backbone.name };
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
