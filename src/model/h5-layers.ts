// Pairs the layers of a model with the layers of a Keras .h5 file and checks their weight shapes,
// for loading the weights and for `xp check` (which knows the shapes without building the model).
import { ModelError } from '../errors.ts';

/** A weight as far as pairing sees it: its shape. */
export type Shaped = { readonly shape: readonly (number | null)[] };
/** A layer and its weights, in the layer's Keras weight order. */
export type LayerShapes = { readonly name: string; readonly weights: readonly Shaped[] };

// Auto-generated Keras names: `conv2d_7` -> base `conv2d`, index 7; `conv2d` -> index 0.
function splitAutoName(name: string): { base: string; index: number } {
  const numbered = /^(.*)_(\d+)$/.exec(name);
  return numbered ? { base: numbered[1], index: Number(numbered[2]) } : { base: name, index: 0 };
}

function groupByBase(names: string[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const n of names) {
    const { base } = splitAutoName(n);
    groups.set(base, [...(groups.get(base) ?? []), n]);
  }
  for (const list of groups.values()) list.sort((a, b) => splitAutoName(a).index - splitAutoName(b).index);
  return groups;
}

/**
 * Pairs model layers with file layers by name. Auto-generated names can be numbered differently
 * (Keras 2 counts conv2d_1, conv2d_2...; Keras 3 conv2d, conv2d_1...): when a group of same-base
 * names does not line up (some missing in the file, or the file has the bare `conv2d` and the
 * model not), the group is paired in creation order, as Keras' by-order loading would.
 */
function matchLayers(modelNames: string[], fileNames: string[]): Map<string, string> {
  const match = new Map<string, string>();
  const fileSet = new Set(fileNames);
  const fileGroups = groupByBase(fileNames);
  for (const [base, names] of groupByBase(modelNames)) {
    const candidates = fileGroups.get(base) ?? [];
    const shifted = candidates.includes(base) && !names.includes(base);
    const exact = !shifted && names.every((n) => fileSet.has(n));
    names.forEach((n, i) => {
      const other = exact ? n : candidates[i];
      if (other) match.set(n, other);
    });
  }
  return match;
}

const sameShape = (a: readonly (number | null)[], b: readonly (number | null)[]) =>
  a.length === b.length && a.every((v, i) => v === b[i]);
const shapesText = (list: readonly Shaped[]) => list.map((w) => `[${w.shape}]`).join(' ');

/**
 * Every layer of `model` with the file's layer for it and that layer's weights; a ModelError naming `source` when
 * the file lacks one or its shapes differ.
 */
export function pairH5Layers<L extends LayerShapes, W extends Shaped>(
  model: readonly L[],
  file: ReadonlyMap<string, readonly W[]>,
  source: string,
): { layer: L; fileLayer: string; weights: readonly W[] }[] {
  const match = matchLayers(
    model.map((l) => l.name),
    [...file.keys()],
  );
  const pairs = model.flatMap((layer) => {
    const fileLayer = match.get(layer.name);
    const weights = fileLayer === undefined ? undefined : file.get(fileLayer);
    return fileLayer === undefined || weights === undefined ? [] : [{ layer, fileLayer, weights }];
  });
  const paired = new Set(pairs.map((p) => p.layer));
  const missing = model.filter((l) => !paired.has(l)).map((l) => l.name);
  if (missing.length > 0) {
    throw new ModelError(
      `${source} has no weights for ${missing.length} layers of the model: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}.`,
      { hint: 'Check that the file holds weights for this backbone (backbone.name) and not another architecture.' },
    );
  }
  for (const { layer, fileLayer, weights: found } of pairs) {
    const expected = layer.weights;
    if (found.length !== expected.length || found.some((w, i) => !sameShape(w.shape, expected[i].shape))) {
      throw new ModelError(
        `Layer ${layer.name} expects weights of shapes ${shapesText(expected)}, ${source} has ${shapesText(found)} for layer ${fileLayer}.`,
        {
          hint: 'The weights were saved for a different architecture or width (alpha).',
        },
      );
    }
  }
  return pairs;
}
