// Writes a backbone's weights as a Keras (legacy layout) notop .h5 file, e.g. the nsfwjs InceptionV3, so that
// Keras and xp can train from identical weights: npx tsx scripts/export-keras-h5.ts inception_v3 nsfwjs out.h5
import path from 'node:path';
import type { BackboneName } from '../src/config/types.ts';
import { loadBackbone } from '../src/model/backbone.ts';
import { writeKerasH5 } from '../src/model/h5.ts';
import { layerWeights } from '../src/model/weights.ts';

const [name = 'inception_v3', weights = 'nsfwjs', out = 'inception_v3_nsfwjs_notop.h5'] = process.argv.slice(2);
const top: Record<BackboneName, string> = { inception_v3: 'mixed10', mobilenet_v2: 'out_relu' };
const backbone = await loadBackbone(
  {
    name: name as BackboneName,
    weights,
    cut_layer: top[name as BackboneName],
    trainable: false,
    preprocessing: 'auto',
  },
  [299, 299],
);
await writeKerasH5(path.resolve(out), layerWeights(backbone.model));
console.log(`${out}: ${name} (${weights}) weights, Keras notop layout, ${backbone.model.countParams()} parameters`);
