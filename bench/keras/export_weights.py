"""InceptionV3 (no top) weights in the legacy Keras h5 layout, so xp and Keras run the same backbone.

  export_weights.py --out inception_v3_seed42_notop.h5 [--seed 42]   # seeded random init, written as Keras 2 did
  export_weights.py --check FILE.h5                                    # load into InceptionV3, print a fingerprint

The layout is that of the notebook's inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5: root attrs
layer_names (every layer), backend, keras_version; one group per layer with attr weight_names
('<layer>/<var>:0') and datasets at '<layer>/<layer>/<var>:0'. Keras' load_weights reads it by layer order,
so the real ImageNet file works with baseline.py --weights as well.

--check prints one JSON line: the mixed7 output of the input linspace(0, 1, 150*150*3) reshaped to
(1, 150, 150, 3), for comparing xp's forward pass with Keras' on the same weights.
"""
import argparse
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--out', help='write seeded random InceptionV3 weights here')
    g.add_argument('--check', help='load these weights and print a fingerprint')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--size', type=int, default=150)
    return p.parse_args()


def inception(size):
    from keras.applications import InceptionV3
    return InceptionV3(input_shape=(size, size, 3), include_top=False, weights=None)


def var_name(weight):
    # Keras 3 paths read 'conv2d_3/kernel'; Keras 2 files name the same variable 'conv2d_3/kernel:0'.
    return f'{weight.path.split("/")[-1]}:0'


def write_legacy_h5(model, path):
    import h5py
    import keras
    import numpy as np

    with h5py.File(path, 'w') as f:
        f.attrs['layer_names'] = [layer.name.encode('utf8') for layer in model.layers]
        f.attrs['backend'] = b'tensorflow'
        f.attrs['keras_version'] = keras.__version__.encode('utf8')
        for layer in model.layers:
            g = f.create_group(layer.name)
            names = [f'{layer.name}/{var_name(w)}' for w in layer.weights]
            g.attrs['weight_names'] = [n.encode('utf8') for n in names]
            for name, w in zip(names, layer.weights):
                g.create_dataset(name, data=np.asarray(w.numpy()))


def fingerprint(model, size):
    import numpy as np
    from keras import Model

    backbone = Model(model.input, model.get_layer('mixed7').output)
    x = np.linspace(0, 1, size * size * 3, dtype=np.float32).reshape(1, size, size, 3)
    y = backbone.predict_on_batch(x)
    flat = y.reshape(-1)
    return {
        'layers_with_weights': sum(1 for layer in model.layers if layer.weights),
        'params': int(sum(int(np.prod(w.shape)) for w in model.weights)),
        'mixed7_shape': list(y.shape),
        'mixed7_mean': float(flat.mean()),
        'mixed7_std': float(flat.std()),
        'mixed7_first': [float(v) for v in flat[:5]],
    }


def main():
    args = parse_args()
    import keras
    import numpy as np

    if args.out:
        keras.utils.set_random_seed(args.seed)
        model = inception(args.size)
        write_legacy_h5(model, args.out)
        # Round trip through Keras' own legacy loader: the file must give back exactly these weights.
        loaded = inception(args.size)
        loaded.load_weights(args.out)
        same = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights()))
        if not same:
            sys.exit(f'{args.out}: weights read back by Keras differ from those written')
        print(json.dumps({'out': args.out, 'seed': args.seed, **fingerprint(loaded, args.size)}))
    else:
        model = inception(args.size)
        model.load_weights(args.check)
        print(json.dumps({'weights': args.check, **fingerprint(model, args.size)}))


if __name__ == '__main__':
    main()
