"""Keras baseline for `npm run bench`: the reference notebook's model and generators, timed.

Prints progress to stderr and exactly one JSON line to stdout (see bench/keras/run.ts for its type).
Micro-figures (generator alone, frozen backbone forward alone, one train step on an in-memory batch)
are measured in the same process, before `fit`, so they share its thread pools and warm caches.
"""
import argparse
import json
import os
import sys
import time

# stdout carries only the JSON: Keras' progress lines and any C-level prints go to stderr.
_json_out = os.fdopen(os.dup(1), 'w')
os.dup2(2, 1)
sys.stdout = sys.stderr
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='folder with train/ and validation/ class subfolders')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--steps', type=int, default=100, help='steps_per_epoch')
    p.add_argument('--validation-steps', type=int, default=50)
    p.add_argument('--batch', type=int, default=20)
    p.add_argument('--size', type=int, default=150, help='square input size')
    p.add_argument('--dropout', type=float, default=0.2)
    p.add_argument('--weights', help='legacy Keras .h5 weights for InceptionV3 (no top); random init if absent')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--micro-batches', type=int, default=10, help='batches timed per micro-figure (after one warm-up)')
    return p.parse_args()


def log(msg):
    print(f'[keras-baseline] {msg}', file=sys.stderr, flush=True)


def build_model(args):
    from keras import layers, Model
    from keras.applications import InceptionV3
    from keras.optimizers import RMSprop

    pre_trained_model = InceptionV3(input_shape=(args.size, args.size, 3), include_top=False, weights=None)
    if args.weights:
        pre_trained_model.load_weights(args.weights)
    for layer in pre_trained_model.layers:
        layer.trainable = False
    last_output = pre_trained_model.get_layer('mixed7').output
    x = layers.Flatten()(last_output)
    x = layers.Dense(1024, activation='relu')(x)
    x = layers.Dropout(args.dropout)(x)
    x = layers.Dense(1, activation='sigmoid')(x)
    model = Model(pre_trained_model.input, x)
    model.compile(optimizer=RMSprop(learning_rate=0.0001), loss='binary_crossentropy', metrics=['accuracy'])
    backbone = Model(pre_trained_model.input, last_output)
    return model, backbone


def image_data_generator():
    try:  # Keras 2 / tf.keras
        from keras.preprocessing.image import ImageDataGenerator
    except ImportError:  # Keras 3 only keeps it under legacy
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    return ImageDataGenerator


def make_generators(args, seed):
    ImageDataGenerator = image_data_generator()
    train_datagen = ImageDataGenerator(rescale=1. / 255., rotation_range=40, width_shift_range=0.2,
                                       height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True)
    test_datagen = ImageDataGenerator(rescale=1.0 / 255.)
    size = (args.size, args.size)
    train = train_datagen.flow_from_directory(os.path.join(args.data, 'train'), batch_size=args.batch,
                                              class_mode='binary', target_size=size, seed=seed)
    val = test_datagen.flow_from_directory(os.path.join(args.data, 'validation'), batch_size=args.batch,
                                           class_mode='binary', target_size=size, seed=seed)
    return train, val


def images_per_second(fn, n, batch):
    fn()  # warm-up: tracing, first-file caches
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n * batch / (time.perf_counter() - t0)


def micro_figures(args, model, backbone, seed):
    import numpy as np
    import tensorflow as tf

    n, b = args.micro_batches, args.batch
    # A separate generator so the timed batches don't shift what fit sees.
    gen, _ = make_generators(args, seed + 1)
    generator_ips = images_per_second(lambda: next(gen), n, b)
    log(f'generator (decode + augment): {generator_ips:.1f} images/s')

    x = tf.constant(np.random.default_rng(seed).random((b, args.size, args.size, 3), dtype=np.float32))
    y = tf.constant((np.arange(b) % 2).astype(np.float32).reshape(b, 1))
    forward = tf.function(lambda t: backbone(t, training=False))
    backbone_ips = images_per_second(lambda: forward(x).numpy(), n, b)
    log(f'backbone forward to mixed7: {backbone_ips:.1f} images/s')

    # train_on_batch updates the head: snapshot and restore so fit starts from the same weights as without it.
    saved = model.get_weights()
    opt_vars = [v.numpy() for v in model.optimizer.variables]
    train_step_ips = images_per_second(lambda: model.train_on_batch(x, y), n, b)
    model.set_weights(saved)
    for v, value in zip(model.optimizer.variables, opt_vars):
        v.assign(value)
    log(f'train step on an in-memory batch: {train_step_ips:.1f} images/s')
    return generator_ips, backbone_ips, train_step_ips


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Splits each epoch's wall time into training and validation."""

        def __init__(self):
            super().__init__()
            self.epoch, self.train, self.val = [], [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.t_val = None

        def on_test_begin(self, logs=None):
            self.t_val = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            t1 = time.perf_counter()
            t_val = self.t_val or t1
            self.epoch.append(t1 - self.t0)
            self.train.append(t_val - self.t0)
            self.val.append(t1 - t_val)
            log(f'epoch {epoch + 1}: {t1 - self.t0:.1f} s (train {t_val - self.t0:.1f} s, val {t1 - t_val:.1f} s) '
                f'loss {logs.get("loss", float("nan")):.4f} acc {logs.get("accuracy", float("nan")):.4f} '
                f'val_acc {logs.get("val_accuracy", float("nan")):.4f}')

    return EpochTimer()


def main():
    args = parse_args()
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    log(f'tensorflow {tf.__version__}, keras {keras.__version__}, '
        f'threads intra={tf.config.threading.get_intra_op_parallelism_threads()} '
        f'inter={tf.config.threading.get_inter_op_parallelism_threads()}, cpus={os.cpu_count()}')

    model, backbone = build_model(args)
    train_generator, validation_generator = make_generators(args, args.seed)
    generator_ips, backbone_ips, train_step_ips = micro_figures(args, model, backbone, args.seed) if args.micro_batches > 0 else (0, 0, 0)

    timer = epoch_timer()
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    history = model.fit(train_generator, validation_data=validation_generator, steps_per_epoch=args.steps,
                        epochs=args.epochs, validation_steps=args.validation_steps, verbose=0, callbacks=[timer])
    fit_seconds = time.perf_counter() - t_fit
    fit_cpu_seconds = time.process_time() - cpu_fit

    train_images = args.steps * args.batch
    h = history.history
    result = {
        'tensorflow': tf.__version__,
        'keras': keras.__version__,
        'config': {'epochs': args.epochs, 'steps': args.steps, 'validation_steps': args.validation_steps,
                   'batch': args.batch, 'size': args.size, 'dropout': args.dropout,
                   'weights': args.weights or None, 'seed': args.seed, 'micro_batches': args.micro_batches},
        'epoch_seconds': timer.epoch,
        'train_seconds': timer.train,
        'val_seconds': timer.val,
        'fit_seconds': fit_seconds,
        # CPU time of all this process' threads during fit: / fit_seconds = cores it actually got (2 at most here)
        'fit_cpu_seconds': fit_cpu_seconds,
        'total_seconds': time.perf_counter() - t_start,
        # images/s over all epochs' training phases (the first includes tracing)
        'train_images_per_second': train_images * len(timer.train) / sum(timer.train),
        'epoch_train_images_per_second': [train_images / s for s in timer.train],
        'loss': h.get('loss', []),
        'accuracy': h.get('accuracy', []),
        'val_loss': h.get('val_loss', []),
        'val_accuracy': h.get('val_accuracy', []),
        # other processes on the machine skew every figure: 1-minute load >> 0 at either end means re-run
        'load_average': {'start': list(load_start), 'end': list(os.getloadavg())},
        'micro': {
            'generator_images_per_second': generator_ips,
            'backbone_forward_images_per_second': backbone_ips,
            'train_step_images_per_second': train_step_ips,
        },
    }
    _json_out.write(json.dumps(result) + '\n')
    _json_out.flush()


if __name__ == '__main__':
    main()
