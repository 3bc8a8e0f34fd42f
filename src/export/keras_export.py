"""A Keras 3 model from xp's exported tfjs LayersModel, and predictions of the exported file, for `xp export`.

Run by src/export/keras.ts with the python of .venv-keras (tensorflow-cpu, which brings Keras 3):

  keras_export.py build --tfjs DIR --format keras|savedmodel --out PATH
      DIR holds model.json (a flat functional topology, src/export/topology.ts) and its weight files; weights go to
      Keras' layers by layer name, in order; a missing or misshapen one is refused (exit 3).
      keras: PATH is the .keras file (model.save). savedmodel: PATH is the folder (model.export, serving_default).
  keras_export.py predict --format keras|savedmodel --model PATH --images FILE --count N --height H --width W --out FILE
      FILE holds N images as uint8 RGB, H x W each; writes the model's outputs as float32, one row per image.

Errors are one line on stderr, `xp-export: ...`, and a non-zero exit.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 32


class Refused(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build")
    build.add_argument("--tfjs", required=True)
    build.add_argument("--format", choices=["keras", "savedmodel"], required=True)
    build.add_argument("--out", required=True)
    predict = sub.add_parser("predict")
    predict.add_argument("--format", choices=["keras", "savedmodel"], required=True)
    predict.add_argument("--model", required=True)
    predict.add_argument("--images", required=True)
    predict.add_argument("--count", type=int, required=True)
    predict.add_argument("--height", type=int, required=True)
    predict.add_argument("--width", type=int, required=True)
    predict.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        if args.command == "build":
            build_model(args.tfjs, args.format, args.out)
        else:
            predict_images(args)
    except Refused as error:
        print(f"xp-export: {error}", file=sys.stderr)
        return 3
    return 0


def build_model(tfjs_dir: str, fmt: str, out: str) -> None:
    with open(os.path.join(tfjs_dir, "model.json"), encoding="utf8") as f:
        saved = json.load(f)
    config = saved["modelTopology"]["config"]
    import keras

    model = keras.Model.from_config(config)
    by_layer = read_weights(tfjs_dir, saved["weightsManifest"])
    for layer in model.layers:
        given = by_layer.pop(layer.name, [])
        if len(given) != len(layer.weights):
            raise Refused(f"the layer {layer.name} has {len(layer.weights)} weights in Keras, {len(given)} in tfjs")
        # In each layer's order, as Keras' own loader of Keras 2 files matches them: the names differ in places
        # (Keras 2 and tfjs call a depthwise kernel `depthwise_kernel`, Keras 3 `kernel`), the order does not.
        for variable, (name, value) in zip(layer.weights, given):
            if tuple(value.shape) != tuple(variable.shape):
                raise Refused(f"{name} has shape {list(value.shape)} in tfjs, {list(variable.shape)} in Keras")
            variable.assign(value)
    if by_layer:
        raise Refused(f"Keras' model has no layer for the weights of {', '.join(sorted(by_layer)[:5])}")
    if fmt == "keras":
        model.save(out)
    else:
        model.export(out, format="tf_saved_model", verbose=False)


def read_weights(tfjs_dir: str, manifest: list) -> dict:
    """The weights of each layer (`<layer>/<variable>` names), in the manifest's order."""
    import numpy as np

    weights: dict[str, list] = {}
    for group in manifest:
        data = b"".join(open(os.path.join(tfjs_dir, p), "rb").read() for p in group["paths"])
        at = 0
        for spec in group["weights"]:
            if spec.get("dtype", "float32") != "float32" or "quantization" in spec:
                raise Refused(f"the weight {spec['name']} is {spec.get('dtype')}; export takes float32 weights")
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            value = np.frombuffer(data, dtype="<f4", count=count, offset=at).reshape(spec["shape"])
            weights.setdefault(spec["name"].rsplit("/", 1)[0], []).append((spec["name"], value))
            at += 4 * count
    return weights


def predict_images(args) -> None:
    import numpy as np

    images = np.fromfile(args.images, dtype=np.uint8).reshape(args.count, args.height, args.width, 3)
    run = load_predictor(args.format, args.model)
    outputs = [run(images[i : i + BATCH].astype(np.float32)) for i in range(0, args.count, BATCH)]
    np.concatenate(outputs).astype("<f4").tofile(args.out)


def load_predictor(fmt: str, path: str):
    import numpy as np

    if fmt == "keras":
        import keras

        model = keras.saving.load_model(path)
        return lambda x: np.asarray(model(x, training=False))
    import tensorflow as tf

    serving = tf.saved_model.load(path).signatures["serving_default"]
    _, inputs = serving.structured_input_signature
    (name,) = inputs.keys()

    def run(x):
        (out,) = serving(**{name: tf.constant(x)}).values()
        return out.numpy()

    return run


if __name__ == "__main__":
    sys.exit(main())
