// Checks that need more than the schema: the weights file, cut_layer and trainable_from against the backbone's
// layers, the image size against the cut backbone, the data folders. What a model or a folder holds comes from
// functions the caller hands in (the CLI passes the model and data packages'), so that config knows nothing of
// how models and images are read. Paths arrive resolved (resolve-paths.ts): absolute, or an https URL of weights.
import fs from 'node:fs';
import path from 'node:path';
import type { BackboneName, Experiment } from './types.ts';
import type { FieldProblem } from './validate.ts';
import { didYouMean } from './problems.ts';
import { closest } from '../util/edit-distance.ts';
import { isUrl } from '../remote/url.ts';
import { LockError } from '../errors.ts';
import { classWeightProblem, topKProblem } from './classes.ts';

export interface BackboneRef {
  name: BackboneName;
  /** `nsfwjs`, `imagenet`, the absolute path of a .h5 / model.json file, or the URL of a .h5 file. */
  weights: string;
  /** Where the experiment cuts the backbone: a weights file must hold the layers up to there. */
  cut_layer?: string;
}

export interface LayerFacts {
  /**
   * Layer names (InputLayers left out) of the backbone the weights describe; with `cut`, those of the backbone cut
   * at that layer (what the head is built on). May throw when a weights file cannot be read or is not a model:
   * its message becomes the problem.
   */
  layerNames(backbone: BackboneRef, cut?: string): Promise<string[]>;
  /** How to tell the user a layer is not there (e.g. listing the block outputs); a plain sentence otherwise. */
  unknownLayer?(field: string, given: string, names: string[], what: string): string;
  /** The first layer of the backbone cut at `cut` whose output would be empty for images of `size`, if any. */
  emptyOutput?(
    backbone: BackboneRef,
    cut: string,
    size: [number, number],
  ): Promise<{ layer: string; size: [number, number] } | undefined>;
  /**
   * Why the weights file cannot fill the backbone cut at `cut` for images of `size` (a weight missing, or of another
   * shape), or undefined when it can.
   */
  weightsMismatch?(backbone: BackboneRef, cut: string, size: [number, number]): Promise<string | undefined>;
}

export interface DataFacts {
  /**
   * Looks into the train and validation folders as training will (class subfolders, images, the same classes in
   * both, as many as class_mode says, links followed or not) and says what is wrong, by the data field to fix,
   * without decoding any image. With data.url, the folders unpacked in the data directory, if they are there.
   */
  classFolders(data: Experiment['data']): Promise<{ field: 'train' | 'validation' | 'class_mode'; message: string }[]>;
  /** The classes training will see, when the folders can be scanned (undefined when they cannot). */
  classNames?(data: Experiment['data']): Promise<string[] | undefined>;
}

export interface Facts {
  layers?: LayerFacts;
  data?: DataFacts;
}

export async function crossChecks(e: Experiment, facts: Facts = {}): Promise<FieldProblem[]> {
  const weights = weightsChecks(e);
  const layers = weights.problem || !facts.layers ? [] : await layerChecks(e, weights.ref, facts.layers);
  return [...(weights.problem ? [weights.problem] : []), ...layers, ...(await dataChecks(e, facts.data))];
}

function weightsChecks(e: Experiment): { ref: BackboneRef; problem?: FieldProblem } {
  const w = e.backbone.weights;
  const ref = { name: e.backbone.name, weights: w, cut_layer: e.backbone.cut_layer };
  const problem = (message: string) => ({
    ref,
    problem: { path: ['backbone', 'weights'], message: `backbone.weights: ${message}` },
  });
  if (w === 'nsfwjs' || w === 'imagenet') return { ref };
  const kind = /\.h5$/i.test(w) ? 'a Keras .h5 weights file' : /\.json$/i.test(w) ? 'a tfjs model.json' : undefined;
  if (!kind) return problem(`must be nsfwjs, imagenet, a Keras .h5 file or a tfjs model.json (got "${w}")`);
  // A URL is fetched by `facts` (into the cache) when it reads the layers.
  if (isUrl(w)) return { ref };
  const file = w;
  try {
    if (!fs.statSync(file).isFile()) return problem(`${file} is not a regular file; give the path of ${kind}`);
    fs.accessSync(file, fs.constants.R_OK);
  } catch (error) {
    const { code, message: reason } = error as NodeJS.ErrnoException;
    if (code === 'ENOENT') {
      const near = nearestPath(file, 'file');
      return problem(`no such file ${file}${near || `; give the path of ${kind}, or use nsfwjs or imagenet`}`);
    }
    return problem(`cannot read (${code ?? reason}) ${file}; give the path of ${kind}, or use nsfwjs or imagenet`);
  }
  // What is inside the file (a Keras weights file, a tfjs model) is for `facts` to judge.
  return { ref: { ...ref, weights: file } };
}

async function layerChecks(e: Experiment, ref: BackboneRef, facts: LayerFacts): Promise<FieldProblem[]> {
  const what =
    ref.weights === 'nsfwjs' || ref.weights === 'imagenet'
      ? ref.name
      : isUrl(ref.weights)
        ? ref.weights
        : path.relative(process.cwd(), ref.weights) || ref.weights;
  const names = await facts.layerNames(ref).catch((error: Error) => error);
  // Fetched weights that do not match xp.lock are not a problem of the file: the command stops with the lock's error.
  if (names instanceof LockError) throw names;
  if (names instanceof Error) {
    const hint = (names as { hint?: unknown }).hint;
    return [
      {
        path: ['backbone', 'weights'],
        message: `backbone.weights: ${names.message}${typeof hint === 'string' ? ` ${hint}` : ''}`,
      },
    ];
  }
  const unknown = (field: string, given: string, list: string[]) => {
    const sentence =
      facts.unknownLayer?.(`backbone.${field}`, given, list, what) ??
      `backbone.${field} "${given}" is not a layer of ${what}.`;
    // The suggestion goes right after the statement, before any list of valid layers.
    const suggestion = didYouMean(given, list);
    const statement = `is not a layer of ${what}.`;
    return suggestion && sentence.includes(statement)
      ? sentence.replace(statement, `is not a layer of ${what}${suggestion}`)
      : sentence.replace(/\.$/, '') + suggestion;
  };
  const { cut_layer: cut, trainable_from: from } = e.backbone;
  if (!names.includes(cut)) return [{ path: ['backbone', 'cut_layer'], message: unknown('cut_layer', cut, names) }];
  // A topology the sizing does not understand is left to the build, which checks sizes again.
  const empty = await facts.emptyOutput?.(ref, cut, e.data.image_size).catch(() => undefined);
  if (empty) {
    const [h, w] = e.data.image_size;
    const message = `data.image_size [${h}, ${w}] is too small for ${what} cut at ${cut}: layer ${empty.layer} would output ${empty.size.join('x')}; raise data.image_size or cut earlier`;
    return [{ path: ['data', 'image_size'], message }];
  }
  const mismatch = await facts.weightsMismatch?.(ref, cut, e.data.image_size);
  const weights = mismatch ? [{ path: ['backbone', 'weights'], message: `backbone.weights: ${mismatch}` }] : [];
  if (from === undefined) return weights;
  const kept = await facts.layerNames(ref, cut);
  if (!names.includes(from))
    return [...weights, { path: ['backbone', 'trainable_from'], message: unknown('trainable_from', from, kept) }];
  if (!kept.includes(from)) {
    return [
      ...weights,
      {
        path: ['backbone', 'trainable_from'],
        message: `backbone.trainable_from "${from}" is not part of the backbone cut at ${cut} (it comes after the cut); choose a layer before ${cut}, or ${cut} itself`,
      },
    ];
  }
  return weights;
}

async function dataChecks(e: Experiment, facts?: DataFacts): Promise<FieldProblem[]> {
  // A data set given by url is downloaded when missing: only one unpacked already can be looked into.
  if (e.data.url) return facts ? scannedProblems(e, facts) : [];
  const problems: FieldProblem[] = [];
  for (const field of ['train', 'validation'] as const) {
    const dir = e.data[field];
    const hint = 'give a folder with one subfolder per class, or set data.url';
    try {
      if (!fs.statSync(dir).isDirectory())
        problems.push({ path: ['data', field], message: `data.${field}: ${dir} is not a directory; ${hint}` });
      else fs.accessSync(dir, fs.constants.R_OK | fs.constants.X_OK);
    } catch (error) {
      const { code, message: reason } = error as NodeJS.ErrnoException;
      const message =
        code === 'ENOENT'
          ? `no such directory ${dir}${nearestPath(dir, 'directory') || `; ${hint}`}`
          : `cannot read (${code ?? reason}) ${dir}; ${hint}`;
      problems.push({ path: ['data', field], message: `data.${field}: ${message}` });
    }
  }
  if (problems.length || !facts) return problems;
  return scannedProblems(e, facts);
}

/** What the scan of the class folders finds wrong, then the class weights against the classes it found. */
async function scannedProblems(e: Experiment, facts: DataFacts): Promise<FieldProblem[]> {
  const found = folderProblems(await facts.classFolders(e.data));
  return found.length ? found : classProblems(e, facts);
}

/** training.class_weight and top_k_accuracy against the classes the folders hold. */
async function classProblems(e: Experiment, facts: DataFacts): Promise<FieldProblem[]> {
  const weights = e.training?.class_weight;
  const topK = e.training?.metrics?.includes('top_k_accuracy');
  if ((weights === undefined && !topK) || !facts.classNames) return [];
  const names = await facts.classNames(e.data);
  if (!names) return [];
  const problems: FieldProblem[] = [];
  const message = weights !== undefined && classWeightProblem(weights, names);
  if (message) problems.push({ path: ['training', 'class_weight'], message });
  const k = topKProblem(e.training.top_k, names);
  if (topK && k) problems.push({ path: ['training', 'metrics'], message: k });
  return problems;
}

const folderProblems = (found: Awaited<ReturnType<DataFacts['classFolders']>>): FieldProblem[] =>
  found.map((f) => ({
    path: ['data', f.field],
    message: f.message.startsWith(`data.${f.field} `) ? f.message : `data.${f.field}: ${f.message}`,
  }));

/**
 * "; did you mean <path>?" for a path that does not exist, when its first missing part is a near miss of an entry of
 * the folder above (a misspelt folder, as layers get it from their siblings); '' otherwise.
 */
export function nearestPath(missing: string, kind: 'directory' | 'file'): string {
  let parent = missing;
  const rest: string[] = [];
  while (!fs.existsSync(parent)) {
    if (path.dirname(parent) === parent) return '';
    rest.unshift(path.basename(parent));
    parent = path.dirname(parent);
  }
  let siblings: string[];
  try {
    siblings = fs
      .readdirSync(parent, { withFileTypes: true })
      .filter(
        (d) => !d.name.startsWith('.') && (rest.length > 1 || kind === 'directory' ? d.isDirectory() : d.isFile()),
      )
      .map((d) => d.name);
  } catch {
    return '';
  }
  const near = closest(rest[0], siblings);
  return near === undefined ? '' : `; did you mean ${path.join(parent, near, ...rest.slice(1))}?`;
}
