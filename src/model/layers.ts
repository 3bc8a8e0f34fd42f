// Layer names of the backbones, read from topology JSON only: `xp check` validates cut layers without loading
// TensorFlow or any weights.
import type { BackboneName } from '../config/types.ts';
import { ModelError } from '../errors.ts';
import { nsfwjsModelJson } from './nsfwjs.ts';
import { allLayerNames, cutAt, findLayerPath, modelConfigOf, type LayerJson } from './topology.ts';

// Last layer of the Keras `include_top=False` model; the nsfwjs topologies go on with their own head.
export const KERAS_TOP: Record<BackboneName, string> = { inception_v3: 'mixed10', mobilenet_v2: 'out_relu' };

/** The Keras architecture (no top) as a topology JSON, taken from the model bundled with nsfwjs. */
export function kerasArchitecture(name: BackboneName): LayerJson {
  const full = modelConfigOf(nsfwjsModelJson(name).modelTopology);
  return cutAt(full, findLayerPath(full, KERAS_TOP[name])!);
}

/** Names of the layers a backbone can be cut at (reads the topology only, no weights). */
export async function backboneLayerNames(name: BackboneName): Promise<string[]> {
  return allLayerNames(kerasArchitecture(name));
}

// Block outputs are the sensible cut points; list them first in errors.
const BLOCK_OUTPUT = /^(mixed\d+|block_\d+_add|out_relu)$/;

export function unknownLayerError(field: string, given: string, names: string[], what: string): ModelError {
  const blocks = names.filter((n) => BLOCK_OUTPUT.test(n));
  const others = names.filter((n) => !BLOCK_OUTPUT.test(n));
  const shown = 12;
  const otherText =
    others.length === 0
      ? ''
      : `${blocks.length > 0 ? ` and ${others.length} other layers` : ''}: ${others.slice(0, shown).join(', ')}${others.length > shown ? ', ...' : ''}`;
  const similar = names.filter((n) => n.toLowerCase().includes(given.toLowerCase()) || given.toLowerCase().includes(n.toLowerCase())).slice(0, 5);
  return new ModelError(`${field} "${given}" is not a layer of ${what}. Valid layers: ${blocks.join(', ')}${otherText}.`, {
    hint: similar.length > 0 ? `Did you mean ${similar.join(' or ')}?` : 'Run `xp check` to validate the experiment before training.',
  });
}

