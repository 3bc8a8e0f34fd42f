// `xp export`: a run's saved model as one self-contained model in a format other tools read (tfjs LayersModel,
// Keras 3 `.keras`, TensorFlow SavedModel), with what using it needs beside it, checked before it is called done:
// its predictions on the run's validation images must equal `xp predict`'s within TOLERANCE, or nothing is left.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataError, ModelError, XpError } from '../errors.ts';
import { asProbabilities, openSavedRun } from '../model/predictor.ts';
import { readSavedModelInfo } from '../model/saved-run.ts';
import { inspectTfjsModel } from '../model/tfjs-model.ts';
import { openJournal } from '../tracking/journal.ts';
import { EXPERIMENT_FILE, readRunExperiment } from '../train/run-folder.ts';
import type { Experiment } from '../config/types.ts';
import { redactUrl } from '../util/url.ts';
import { layerClasses, selfContained, type ModelTopology } from './topology.ts';

export const EXPORT_FORMATS = ['tfjs', 'keras', 'savedmodel'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** The most an exported model's probability may differ from `xp predict`'s on any image and class. */
export const TOLERANCE = 1e-4;

/** Written beside every export (a SavedModel keeps it in assets.extra/, where TensorFlow Serving ignores it). */
export const METADATA_FILE = 'xp-model.json';

export interface ExportOptions {
  runDir: string;
  format: ExportFormat;
  /** Default: `<run-dir>/export/<format>`. */
  out?: string;
  /** Labelled folder (one subfolder per class) the check predicts; default: the run's data.validation. */
  images?: string;
  log: (line: string) => void;
}

export interface ExportResult {
  /** The folder written: the tfjs model, the folder holding model.keras, or the SavedModel. */
  out: string;
  /** The file a user loads: model.json, model.keras, or the SavedModel folder. */
  model: string;
  check: { images: number; folder: string; maxDifference: number };
}

export async function exportRun(opts: ExportOptions): Promise<ExportResult> {
  const { runDir, format, log } = opts;
  const info = readSavedModelInfo(runDir);
  const saved = await inspectTfjsModel(path.join(runDir, 'model', 'model.json'));
  const topology = selfContained(saved.json.modelTopology as unknown as ModelTopology, info.preprocessing);
  const out = path.resolve(opts.out ?? path.join(runDir, 'export', format));
  refuseToReplace(out);
  const experiment = opts.images === undefined ? readRunExperiment(runDir) : tryReadRunExperiment(runDir);
  const folder = opts.images ?? (await validationFolder(runDir, experiment));
  const run = await openSavedRun(runDir);
  const images = await checkImages(folder, run.imageSize, run.interpolation);
  if (format !== 'tfjs') await refuseMissingKerasLayers(topology);

  const source = sourceHash(runDir);
  const staging = `${out}.partial`;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-export-'));
  fs.rmSync(staging, { recursive: true, force: true });
  try {
    const tfjsDir = format === 'tfjs' ? staging : path.join(work, 'tfjs');
    writeTfjs(tfjsDir, topology, saved);
    let model = path.join(staging, 'model.json');
    if (format !== 'tfjs') {
      const { kerasBuild } = await import('./keras.ts');
      fs.mkdirSync(staging, { recursive: true });
      model = format === 'keras' ? path.join(staging, 'model.keras') : staging;
      log(`Building the ${format === 'keras' ? 'Keras' : 'SavedModel'} file with Keras in .venv-keras ...`);
      await kerasBuild(tfjsDir, format, model);
    }
    const reference = await run.predict(images.pixels, images.count);
    const exported = await predictExported(format, model, images, work);
    const maxDifference = largestDifference(reference, exported);
    if (!(maxDifference <= TOLERANCE))
      throw new ModelError(
        `the ${format} export predicts differently from xp predict: up to ${maxDifference.toExponential(2)} on the ${images.count} images of ${folder} (at most ${TOLERANCE} allowed); nothing was written`,
        { hint: 'report it with the run folder: this is a bug in xp export' },
      );
    const metadataDir = format === 'savedmodel' ? path.join(staging, 'assets.extra') : staging;
    fs.mkdirSync(metadataDir, { recursive: true });
    fs.writeFileSync(
      path.join(metadataDir, METADATA_FILE),
      `${JSON.stringify({ ...metadata(runDir, format, info, experiment?.name), source_sha256: source, check: { images: images.count, folder: path.resolve(folder), max_difference: maxDifference } }, null, 2)}\n`,
    );
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.renameSync(staging, out);
    const final = format === 'savedmodel' ? out : path.join(out, path.basename(model));
    return { out, model: final, check: { images: images.count, folder, maxDifference } };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The export at the default place when it was made from the run's model as it is now (and checked then), else
 * undefined: `xp register` takes it instead of exporting again.
 */
export function currentExport(runDir: string, format: ExportFormat): ExportResult | undefined {
  const out = path.resolve(runDir, 'export', format);
  const file = format === 'savedmodel' ? path.join(out, 'assets.extra', METADATA_FILE) : path.join(out, METADATA_FILE);
  try {
    const meta = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (meta.source_sha256 !== sourceHash(runDir) || typeof meta.check?.max_difference !== 'number') return undefined;
    const model = format === 'savedmodel' ? out : path.join(out, format === 'keras' ? 'model.keras' : 'model.json');
    if (!fs.existsSync(model)) return undefined;
    return {
      out,
      model,
      check: { images: meta.check.images, folder: meta.check.folder, maxDifference: meta.check.max_difference },
    };
  } catch {
    return undefined;
  }
}

/** What the run's saved model is: a hash of its files (model.json, weights, xp.json). */
function sourceHash(runDir: string): string {
  const dir = path.join(runDir, 'model');
  const hash = crypto.createHash('sha256');
  for (const name of fs.readdirSync(dir).sort()) hash.update(name).update(fs.readFileSync(path.join(dir, name)));
  return hash.digest('hex');
}

/** An earlier export (it has our metadata) is replaced whole; anything else at that path is the user's. */
function refuseToReplace(out: string): void {
  const stat = fs.statSync(out, { throwIfNoEntry: false });
  if (!stat) return;
  const ours = [path.join(out, METADATA_FILE), path.join(out, 'assets.extra', METADATA_FILE)].some((f) =>
    fs.existsSync(f),
  );
  if (!ours)
    throw new XpError(`${out} exists and is not an earlier xp export`, {
      hint: 'give --out a path that does not exist yet, or remove that one',
    });
}

/** The run's validation folder, as its resolved experiment names it (unpacked in the data directory for data.url). */
async function validationFolder(runDir: string, experiment: Partial<Experiment> | undefined): Promise<string> {
  const hint = 'give the images to check the export on with --images <folder of class folders>';
  const data = experiment?.data;
  if (!data || typeof data.validation !== 'string')
    throw new ModelError(`${path.join(runDir, EXPERIMENT_FILE)} names no validation folder`, { hint });
  if (!data.url) return data.validation;
  const { unpackedDataset } = await import('../data/dataset.ts');
  const unpacked = await unpackedDataset(data);
  if (!unpacked)
    throw new ModelError(`the run's data set (${redactUrl(data.url)}) is not unpacked in the data directory`, {
      hint: 'run the experiment once on this machine (it downloads the data set), or give the images with --images <folder of class folders>',
    });
  return unpacked.validationDir;
}

async function checkImages(folder: string, imageSize: [number, number], interpolation: string) {
  const { scanClasses } = await import('../data/scan.ts');
  const { loadImages } = await import('../data/load.ts');
  const scanned = await scanClasses(folder).catch((error) => {
    throw new DataError(`the check's images: ${(error as Error).message}`, {
      cause: error,
      hint: 'give a folder of class folders with --images',
    });
  });
  if (!scanned.files.length)
    throw new DataError(`${folder} holds no images to check the export on`, { hint: 'give one with --images' });
  const loaded = await loadImages(
    scanned.files.map((f) => ({ path: f.path, label: f.label })),
    { imageSize, interpolation: interpolation as never, onWarning: () => {} },
  );
  return { pixels: loaded.images, count: loaded.count, size: imageSize };
}

async function refuseMissingKerasLayers(topology: ModelTopology): Promise<void> {
  const { kerasLayerClasses } = await import('./keras.ts');
  const known = await kerasLayerClasses();
  const missing = [...layerClasses(topology)].filter(([cls]) => !known.has(cls));
  if (missing.length)
    throw new ModelError(
      `Keras has no layer for ${missing.map(([cls, names]) => `${cls} (layer ${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''})`).join('; ')}: the model cannot be exported to Keras or SavedModel; nothing was written`,
      { hint: 'export it with --format tfjs, or train it with a backbone whose layers Keras has' },
    );
}

function writeTfjs(dir: string, topology: ModelTopology, saved: Awaited<ReturnType<typeof inspectTfjsModel>>): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const group of saved.groups)
    for (const file of group.files) fs.copyFileSync(file.real, path.join(dir, path.basename(file.listed)));
  const json = {
    modelTopology: topology,
    weightsManifest: saved.groups.map((g) => ({
      paths: g.files.map((f) => path.basename(f.listed)),
      weights: g.weights,
    })),
    format: 'layers-model',
    generatedBy: (saved.json as unknown as { generatedBy?: string }).generatedBy ?? null,
    convertedBy: 'xp export',
  };
  fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
}

async function predictExported(
  format: ExportFormat,
  model: string,
  images: { pixels: Uint8Array; count: number; size: [number, number] },
  work: string,
): Promise<Float32Array[]> {
  const [h, w] = images.size;
  if (format === 'tfjs') {
    const tf = await import('@tensorflow/tfjs-node');
    const loaded = await tf.loadLayersModel(`file://${model}`);
    const rows: Float32Array[] = [];
    for (let start = 0; start < images.count; start += 32) {
      const m = Math.min(32, images.count - start);
      const y = tf.tidy(() =>
        loaded.predict(
          tf
            .tensor4d(images.pixels.subarray(start * h * w * 3, (start + m) * h * w * 3), [m, h, w, 3], 'int32')
            .toFloat(),
        ),
      ) as import('@tensorflow/tfjs-node').Tensor;
      for (const row of (await y.array()) as number[][]) rows.push(asProbabilities(row));
      y.dispose();
    }
    for (const weight of loaded.weights) weight.dispose();
    return rows;
  }
  const { kerasPredict } = await import('./keras.ts');
  const input = path.join(work, 'images.u8');
  fs.writeFileSync(input, images.pixels.subarray(0, images.count * h * w * 3));
  const outputs = await kerasPredict(format, model, input, images.count, [h, w], path.join(work, 'outputs.f32'));
  const width = outputs.length / images.count;
  return Array.from({ length: images.count }, (_, i) => asProbabilities(outputs.subarray(i * width, (i + 1) * width)));
}

function largestDifference(a: Float32Array[], b: Float32Array[]): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let most = 0;
  for (const [i, row] of a.entries()) {
    if (row.length !== b[i].length) return Number.POSITIVE_INFINITY;
    for (const [j, v] of row.entries()) most = Math.max(most, Math.abs(v - b[i][j]));
  }
  return most;
}

/** What using the exported model needs besides it, and where it came from. */
function metadata(
  runDir: string,
  format: ExportFormat,
  info: ReturnType<typeof readSavedModelInfo>,
  experiment: string | undefined,
) {
  const run = openJournal(runDir).runRef();
  return {
    format,
    class_names: info.class_names,
    image_size: info.image_size,
    resize: info.interpolation,
    input: "RGB images, height x width x 3, values 0-255, float32; the preprocessing is the model's first layer",
    output:
      info.class_names.length === 2
        ? `the probability of ${info.class_names[1]} (sigmoid); ${info.class_names[0]} is 1 minus it`
        : 'a probability per class, in class_names order (softmax)',
    preprocessing: info.preprocessing,
    experiment,
    run_dir: path.resolve(runDir),
    mlflow_run: run ? { run_id: run.runId, experiment_id: run.experimentId } : undefined,
  };
}

/** The run's experiment for the metadata when the check does not need it: none when it cannot be read. */
function tryReadRunExperiment(runDir: string): Partial<Experiment> | undefined {
  try {
    return readRunExperiment(runDir);
  } catch {
    return undefined;
  }
}
