// A run folder's saved model, `<run>/model/`: the trained model as a tfjs LayersModel (model.json and
// weights.bin) and xp.json, what using it needs besides (class names, image size, preprocessing,
// interpolation). Written at the end of a run, read by `xp predict` and `xp evaluate`; everything read
// is checked, so that a damaged folder is one clear error naming the folder and the file.
import fs from 'node:fs';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs-node'; // types only: TensorFlow is loaded when a model is
import { INTERPOLATIONS, PREPROCESSINGS, type Interpolation } from '../config/types.ts';
import { ModelError } from '../errors.ts';
import { freeSpaceHint, writing } from '../util/disk.ts';
import type { ResolvedPreprocessing } from './backbone.ts';
import { taskFor } from './task.ts';
import { inspectTfjsModel, readWeightGroup } from './tfjs-model.ts';

/** The contents of model/xp.json. */
export interface SavedModelInfo {
  class_names: string[];
  image_size: [number, number];
  preprocessing: ResolvedPreprocessing;
  interpolation: Interpolation;
}

export interface SavedModel {
  info: SavedModelInfo;
  model: tf.LayersModel;
}

const MODEL = 'model';
const INFO = 'xp.json';
const TOPOLOGY = 'model.json';

/**
 * Writes the model and its xp.json into `<runDir>/model/`, replacing a previous one whole: the files
 * go to a sibling folder first, renamed into place once complete, so a failure leaves no half model.
 */
export async function writeSavedModel(runDir: string, model: tf.LayersModel, info: SavedModelInfo): Promise<void> {
  const { saveModel } = await import('./save.ts');
  const dir = path.join(runDir, MODEL);
  const partial = `${dir}.partial`;
  fs.rmSync(partial, { recursive: true, force: true });
  try {
    await writing(
      dir,
      async () => {
        await saveModel(model, partial);
        fs.writeFileSync(path.join(partial, INFO), `${JSON.stringify(info, null, 2)}\n`);
      },
      freeSpaceHint(dir, 'XP_RUNS_DIR'),
    );
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(partial, dir);
  } finally {
    fs.rmSync(partial, { recursive: true, force: true });
  }
}

const DAMAGED =
  'The run folder is damaged: train the run again, or copy its model/ folder whole from where it is intact.';

function damaged(runDir: string, file: string, what: string, cause?: unknown): ModelError {
  return new ModelError(`${runDir}: ${path.join(MODEL, file)} ${what}`, { cause, hint: DAMAGED });
}

const isSize = (v: unknown) => Number.isSafeInteger(v) && (v as number) > 0;

/** Reads and checks `<runDir>/model/xp.json` (no TensorFlow). */
export function readSavedModelInfo(runDir: string): SavedModelInfo {
  const dir = path.join(runDir, MODEL);
  if (!fs.existsSync(dir)) {
    throw new ModelError(`${runDir} has no trained model (no ${MODEL}/ folder).`, {
      hint: 'Give a folder under runs/<experiment>/ written by `xp run` that finished at least one epoch.',
    });
  }
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, INFO), 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw damaged(runDir, INFO, code === 'ENOENT' ? 'is missing.' : `cannot be read (${code}).`, error);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw damaged(runDir, INFO, `is not valid JSON (${(error as Error).message}).`, error);
  }
  const info = raw as Partial<Record<keyof SavedModelInfo, unknown>>;
  const wrong = (field: string, expected: string) => damaged(runDir, INFO, `has no valid ${field} (${expected}).`);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw damaged(runDir, INFO, 'is not a JSON object.');
  const names = info.class_names;
  if (
    !Array.isArray(names) ||
    names.length < 2 ||
    !names.every((n) => typeof n === 'string' && n !== '') ||
    new Set(names).size !== names.length
  ) {
    throw wrong('class_names', 'a list of at least two distinct class names');
  }
  const size = info.image_size;
  if (!Array.isArray(size) || size.length !== 2 || !size.every(isSize))
    throw wrong('image_size', '[height, width] in pixels');
  const preprocessing = info.preprocessing;
  if (
    typeof preprocessing !== 'string' ||
    preprocessing === 'auto' ||
    !(PREPROCESSINGS as readonly string[]).includes(preprocessing)
  ) {
    throw wrong('preprocessing', PREPROCESSINGS.filter((p) => p !== 'auto').join(', '));
  }
  // Runs saved before xp.json carried interpolation resized with nearest.
  const interpolation = info.interpolation ?? 'nearest';
  if (typeof interpolation !== 'string' || !(INTERPOLATIONS as readonly string[]).includes(interpolation))
    throw wrong('interpolation', INTERPOLATIONS.join(', '));
  return {
    class_names: names as string[],
    image_size: size as [number, number],
    preprocessing: preprocessing as ResolvedPreprocessing,
    interpolation: interpolation as Interpolation,
  };
}

/** Reads `<runDir>/model/` whole: xp.json checked, model.json and weights.bin checked, then loaded. */
export async function readSavedModel(runDir: string): Promise<SavedModel> {
  const info = readSavedModelInfo(runDir);
  const file = path.join(runDir, MODEL, TOPOLOGY);
  if (!fs.existsSync(file)) throw damaged(runDir, TOPOLOGY, 'is missing.');
  // Its errors name the file by its full path, which names the run folder too.
  const saved = await inspectTfjsModel(file).catch((error) => {
    throw error instanceof ModelError ? new ModelError(error.message, { cause: error, hint: DAMAGED }) : error;
  });
  const tf = await import('@tensorflow/tfjs-node');
  const weightData = (await Promise.all(saved.groups.map((g) => readWeightGroup(saved, g)))).flat();
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: saved.json.modelTopology,
        weightSpecs: saved.groups.flatMap((g) => g.weights),
        weightData,
      }),
    );
  } catch (error) {
    // tfjs' first sentence says what is wrong; the rest is advice for a developer porting layers.
    const what = (error as Error).message.split(/\n| This may be due to /)[0].replace(/\.$/, '');
    throw damaged(runDir, TOPOLOGY, `does not load as a tfjs model (${what}).`, error);
  }
  const [h, w] = info.image_size;
  const input = model.inputs[0].shape;
  const units = model.outputs[0].shape.at(-1);
  const expected = taskFor(info.class_names.length).units;
  const mismatch =
    model.inputs.length !== 1 || input.length !== 4 || input[1] !== h || input[2] !== w || input[3] !== 3
      ? `takes input [${input.slice(1)}], ${INFO} says images of ${h}x${w} with 3 channels`
      : units !== expected
        ? `has ${units} output unit${units === 1 ? '' : 's'}, the ${info.class_names.length} classes of ${INFO} need ${expected}`
        : undefined;
  if (mismatch) {
    model.dispose();
    throw damaged(runDir, TOPOLOGY, `does not match ${path.join(MODEL, INFO)}: the model ${mismatch}.`);
  }
  return { info, model };
}
