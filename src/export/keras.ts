// Keras' side of `xp export`: keras_export.py in the project's Keras environment (.venv-keras), made on first use.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { ModelError, XpError } from '../errors.ts';
import { ensureKerasVenv } from '../python/keras-env.ts';

const SCRIPT = path.join(import.meta.dirname, 'keras_export.py');

/** The layer classes Keras has (keras.layers), to refuse a model with others before anything is written. */
export async function kerasLayerClasses(): Promise<Set<string>> {
  const python = await ensureKerasVenv();
  const r = await execa(
    python,
    ['-c', 'import json, keras; print(json.dumps([n for n in dir(keras.layers) if n[:1].isupper()]))'],
    { reject: false, env: { TF_CPP_MIN_LOG_LEVEL: '3' } },
  );
  if (r.exitCode !== 0) throw failed('list the layers Keras has', r);
  return new Set(JSON.parse(String(r.stdout).trim().split('\n').at(-1) ?? '[]') as string[]);
}

export async function kerasBuild(tfjsDir: string, format: 'keras' | 'savedmodel', out: string): Promise<void> {
  await python(['build', '--tfjs', tfjsDir, '--format', format, '--out', out], `build the ${format} model`);
}

/** The exported model's outputs on `count` uint8 RGB images in `images`, one row per image. */
export async function kerasPredict(
  format: 'keras' | 'savedmodel',
  model: string,
  images: string,
  count: number,
  [height, width]: [number, number],
  out: string,
): Promise<Float32Array> {
  await python(
    ['predict', '--format', format, '--model', model, '--images', images, '--count', String(count)].concat([
      '--height',
      String(height),
      '--width',
      String(width),
      '--out',
      out,
    ]),
    `predict with the ${format} model`,
  );
  const bytes = fs.readFileSync(out);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

async function python(args: string[], what: string): Promise<void> {
  const r = await execa(await ensureKerasVenv(), [SCRIPT, ...args], { reject: false, stdin: 'ignore', all: true });
  if (r.exitCode === 3) {
    const said = String(r.stderr)
      .split('\n')
      .reverse()
      .find((l) => l.startsWith('xp-export: '));
    throw new ModelError(`${said?.slice('xp-export: '.length) ?? 'refused'}; nothing was written`, {
      hint: 'export it with --format tfjs',
    });
  }
  if (r.exitCode !== 0) throw failed(what, r);
}

function failed(what: string, r: { exitCode?: number; all?: unknown; stderr?: unknown }): XpError {
  const tail = String(r.all ?? r.stderr ?? '')
    .trim()
    .split('\n')
    .filter((l) => !/^(WARNING: All log messages|[IWE]\d{4} )/.test(l))
    .slice(-4)
    .join('\n');
  return new XpError(`Keras could not ${what} (exit ${r.exitCode}): ${tail}`, {
    hint: 'nothing was written; run it again with the run folder, and report it if it fails the same way',
  });
}
