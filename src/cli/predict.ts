// `xp predict` and `xp evaluate`: use a trained run's saved model on new images.
import fs from 'node:fs';
import path from 'node:path';
import { DataError } from '../errors.ts';
import { openSavedRun } from '../model/predictor.ts';

export async function predictCommand(runDir: string, args: string[], opts: { json: boolean }): Promise<number> {
  const { files, empty } = await imagesToPredict(args);
  const run = await openSavedRun(runDir);
  const { loadImages } = await import('../data/load.ts');
  const loaded = await loadImages(
    files.map((f) => ({ path: path.resolve(f), label: 0 })),
    {
      imageSize: run.imageSize,
      interpolation: run.interpolation,
      onWarning: (m) => console.error(`warning: ${m}`),
    },
  ).catch((error) => {
    throw new DataError(`cannot read the images: ${error.message}`);
  });
  const readable = files.filter((f) => !loaded.skipped.some((s) => s.path === path.resolve(f)));
  const probabilities = await run.predict(loaded.images, loaded.count);
  const width = Math.max(...readable.map((f) => f.length));
  readable.forEach((file, i) => {
    const p = probabilities[i];
    const k = p.indexOf(Math.max(...p));
    if (opts.json)
      console.log(
        JSON.stringify({
          file,
          class: run.classNames[k],
          probability: p[k],
          probabilities: Object.fromEntries(run.classNames.map((c, j) => [c, p[j]])),
        }),
      );
    else console.log(`${file.padEnd(width)}  ${run.classNames[k]}  ${p[k].toFixed(4)}`);
  });
  return loaded.skipped.length || empty ? 1 : 0;
}

/**
 * The image files named, a folder standing for the images in it and below it (Keras users predict a directory);
 * a name that is neither a file nor a folder is an error, a folder without images a warning.
 */
async function imagesToPredict(args: string[]): Promise<{ files: string[]; empty: number }> {
  const { IMAGE_EXTENSIONS, linkWarning, listImages } = await import('../data/scan.ts');
  const files: string[] = [];
  const missing: string[] = [];
  const empty: string[] = [];
  for (const arg of args) {
    const info = fs.statSync(arg, { throwIfNoEntry: false });
    if (!info) missing.push(arg);
    else if (info.isFile()) files.push(arg);
    else if (!info.isDirectory())
      throw new DataError(`${arg} is neither an image file nor a folder`, {
        hint: 'give image files, or folders of them',
      });
    else {
      const listed = await listImages(arg);
      const links = linkWarning(arg, listed.links, false);
      if (links) console.error(`warning: ${links}`);
      if (!listed.files.length) empty.push(arg);
      files.push(...listed.files.map((f) => path.join(arg, f)));
    }
  }
  if (missing.length) throw new DataError(`no such file: ${missing.join(', ')}`);
  if (!files.length)
    throw new DataError(`no images to predict in ${args.join(', ')}`, {
      hint: `give image files (${IMAGE_EXTENSIONS.join(', ')}), or folders of them`,
    });
  for (const folder of empty)
    console.error(`warning: the folder ${folder} holds no ${IMAGE_EXTENSIONS.join('/')} images`);
  return { files, empty: empty.length };
}

export async function evaluateCommand(runDir: string, dir: string, opts: { json: boolean }): Promise<number> {
  const info = fs.statSync(dir, { throwIfNoEntry: false });
  if (!info?.isDirectory())
    throw new DataError(`${dir} ${info ? 'is not a folder' : 'does not exist'}`, {
      hint: 'give a folder with one subfolder of images per class, as data.validation is (e.g. validation/cats, validation/dogs)',
    });
  const run = await openSavedRun(runDir);
  const { linkWarning, scanClasses } = await import('../data/scan.ts');
  const { loadImages } = await import('../data/load.ts');
  const scanned = await scanClasses(dir);
  // As training says it: links are not followed, and a figure on fewer images than the folder seems to hold says why.
  const links = linkWarning(dir, scanned.links, false);
  if (links) console.error(`warning: ${links}`);
  const known = new Map(run.classNames.map((c, i) => [c, i]));
  const unknown = scanned.classNames.filter((c) => !known.has(c));
  if (unknown.length)
    throw new DataError(
      `${dir} has classes the model does not know: ${unknown.join(', ')} (it knows ${run.classNames.join(', ')})`,
    );
  // Every class is known (checked above): no file is left out.
  const files = scanned.files.flatMap((f) => {
    const label = known.get(scanned.classNames[f.label]);
    return label === undefined ? [] : [{ path: f.path, label }];
  });
  const loaded = await loadImages(files, {
    imageSize: run.imageSize,
    interpolation: run.interpolation,
    onWarning: (m) => console.error(`warning: ${m}`),
  });
  const probabilities = await run.predict(loaded.images, loaded.count);
  const k = run.classNames.length;
  const matrix = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (const [i, p] of probabilities.entries()) matrix[loaded.labels[i]][p.indexOf(Math.max(...p))]++;
  const correct = matrix.reduce((a, row, i) => a + row[i], 0);
  const accuracy = correct / loaded.count;
  if (opts.json) {
    console.log(
      JSON.stringify({ images: loaded.count, accuracy, class_names: run.classNames, confusion_matrix: matrix }),
    );
    return 0;
  }
  console.log(`${loaded.count} images, accuracy ${accuracy.toFixed(4)} (${correct}/${loaded.count})`);
  console.log('confusion matrix (rows: true class, columns: predicted):');
  const w = Math.max(8, ...run.classNames.map((c) => c.length)) + 2;
  console.log(`${''.padEnd(w)}${run.classNames.map((c) => c.padStart(w)).join('')}`);
  for (const [i, row] of matrix.entries())
    console.log(`${run.classNames[i].padEnd(w)}${row.map((v) => String(v).padStart(w)).join('')}`);
  return 0;
}
