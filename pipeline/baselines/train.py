"""`gld train`: the GLDv2 paper's global-descriptor baseline (DELG's `training/train.py` recipe)
on the TFRecords of `gld export-tfrecords`.

Model: ResNet-50/101 backbone (`weights=None`, or a Keras weights file; nothing is downloaded),
or a small ResNet-like `tiny` backbone for CPU demos and tests -> GeM pooling (p=3, eps 1e-6)
-> FC embedding (2048 in the paper) -> ArcFace (margin 0.1, scale 45.25) over the K classes.
Input: ImageNet-style random crops (area `min_crop_area`..1, aspect 3/4..4/3), no flips,
resized to `image_size` (321 in the paper), pixels (x - 128) / 128. SGD with momentum 0.9,
learning rate decayed linearly to 0 over `steps`, gradients clipped to global norm 10.

Outputs under `output`: `checkpoints/` (every `checkpoint_every` steps and at the end; a re-run
resumes from the latest), `logs/` (TensorBoard scalars: loss, accuracy, learning_rate), and
`saved_model/` with the embedding signatures (see `EmbeddingExport`).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass

import numpy as np

BACKBONES = ("resnet50", "resnet101", "tiny")
STRATEGIES = ("one", "mirrored", "tpu")
#: The signature `gld curate --pairs knn --embedding-model` and `gld evaluate` load.
SIGNATURE = "serving_default"
BATCH_SIGNATURE = "embed_batch"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class TrainConfig:
    """`tfrecords`: folder of `train-*-of-*` shards and `relabeling.csv`; `output`: folder for
    checkpoints, logs and the SavedModel. `backbone_weights`: optional Keras weights file for the
    ResNet backbone (e.g. ImageNet weights fetched beforehand). `tiny_width`: channels of the
    first stage of the `tiny` backbone. `steps` = 0 exports the initialised, untrained model."""

    tfrecords: str
    output: str
    backbone: str = "resnet50"
    backbone_weights: str = ""
    tiny_width: int = 16
    image_size: int = 321
    embedding_dim: int = 2048
    batch_size: int = 32
    steps: int = 100_000
    learning_rate: float = 0.01
    momentum: float = 0.9
    clip_norm: float = 10.0
    arcface_margin: float = 0.1
    arcface_scale: float = 45.25
    gem_power: float = 3.0
    min_crop_area: float = 0.08
    test_scales: tuple[float, ...] = (0.7071, 1.0, 1.4142)
    shuffle_buffer: int = 1000
    strategy: str = "one"
    tpu: str = ""
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        if self.backbone_weights and self.backbone == "tiny":
            raise ValueError("backbone_weights applies to the ResNet backbones only")
        positive = ("tiny_width", "image_size", "embedding_dim", "batch_size", "checkpoint_every", "log_every")
        if any(getattr(self, name) < 1 for name in positive):
            raise ValueError(f"{', '.join(positive)} must be >= 1")
        if self.image_size < 32:
            raise ValueError("image_size must be >= 32")
        if self.steps < 0 or self.learning_rate <= 0 or self.clip_norm <= 0 or self.arcface_scale <= 0:
            raise ValueError("steps must be >= 0; learning_rate, clip_norm and arcface_scale > 0")
        if not 0 <= self.momentum < 1 or not 0 <= self.arcface_margin < math.pi / 2:
            raise ValueError("momentum must be in [0, 1) and arcface_margin in [0, pi/2)")
        if not self.test_scales or min(self.test_scales) <= 0:
            raise ValueError("test_scales must be a non-empty tuple of positive factors")
        if not 0 < self.min_crop_area <= 1 or self.gem_power <= 0:
            raise ValueError("min_crop_area must be in (0, 1] and gem_power > 0")


def read_relabeling(tfrecords: str) -> dict[int, int]:
    """new label -> old landmark id, from `relabeling.csv`."""
    with open(os.path.join(tfrecords, "relabeling.csv"), encoding="utf-8") as handle:
        return {int(row["new_label"]): int(row["old_label"]) for row in csv.DictReader(handle)}


def normalise_pixels(images):
    """uint8 or float pixels in 0..255, any shape -> float32 (x - 128) / 128."""
    import tensorflow as tf

    return (tf.cast(images, tf.float32) - 128.0) / 128.0


def _layers():
    """Keras layers of the model; defined lazily so that importing this module stays cheap."""
    import keras
    import tensorflow as tf

    class GeMPooling(keras.layers.Layer):
        """[B, H, W, C] -> [B, C]: (mean over H, W of max(x, eps)^p)^(1/p)."""

        def __init__(self, power: float = 3.0, eps: float = 1e-6, **kwargs) -> None:
            super().__init__(**kwargs)
            self.power = power
            self.eps = eps

        def call(self, x):
            pooled = tf.reduce_mean(tf.pow(tf.maximum(x, self.eps), self.power), axis=[1, 2])
            return tf.pow(pooled, 1.0 / self.power)

    class ArcFace(keras.layers.Layer):
        """(embedding [B, D], labels [B] int) -> logits [B, K]: scale * cos(theta + margin) for
        the label's class, scale * cos(theta) for the others (both vectors L2-normalised)."""

        def __init__(self, num_classes: int, margin: float, scale: float, **kwargs) -> None:
            super().__init__(**kwargs)
            self.num_classes = num_classes
            self.margin = margin
            self.scale = scale

        def build(self, input_shape) -> None:
            self.centers = self.add_weight(
                shape=(int(input_shape[-1]), self.num_classes), initializer="glorot_uniform", name="centers"
            )

        def call(self, embedding, labels):
            cosine = tf.matmul(tf.math.l2_normalize(embedding, axis=1), tf.math.l2_normalize(self.centers, axis=0))
            # clipping keeps acos finite where rounding pushes |cos| past 1
            theta = tf.math.acos(tf.clip_by_value(cosine, -1.0 + 1e-7, 1.0 - 1e-7))
            target = tf.one_hot(labels, self.num_classes, dtype=cosine.dtype)
            return self.scale * tf.where(target > 0, tf.math.cos(theta + self.margin), cosine)

    return GeMPooling, ArcFace


def _tiny_backbone(inputs, width: int):
    """A small ResNet-like stack: stem (stride 2) + 3 residual stages (stride 2 each), widths
    w, 2w, 4w; [B, S, S, 3] -> [B, S/16, S/16, 4w]."""
    import keras

    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for stage, channels in enumerate((width, 2 * width, 4 * width)):
        shortcut = keras.layers.Conv2D(channels, 1, strides=2, use_bias=False, name=f"tiny{stage}_proj")(x)
        y = keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False)(x)
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
        y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization()(y)
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    return x


def build_embedder(config: TrainConfig):
    """Keras model: normalised pixels [B, H, W, 3] -> embedding [B, D] (not L2-normalised)."""
    import keras

    GeMPooling, _ = _layers()
    # any input size: training uses image_size crops, the export embeds at several scales
    shape = (None, None, 3)
    inputs = keras.Input(shape=shape, name="pixels")
    if config.backbone == "tiny":
        features = _tiny_backbone(inputs, config.tiny_width)
    else:
        build = keras.applications.ResNet50 if config.backbone == "resnet50" else keras.applications.ResNet101
        backbone = build(include_top=False, weights=None, input_shape=shape)
        if config.backbone_weights:
            backbone.load_weights(config.backbone_weights)
        features = backbone(inputs)
    pooled = GeMPooling(config.gem_power, name="gem")(features)
    embedding = keras.layers.Dense(config.embedding_dim, name="whitening")(pooled)
    return keras.Model(inputs, embedding, name="global_descriptor")


def _parse_example(serialized):
    import tensorflow as tf

    parsed = tf.io.parse_single_example(
        serialized,
        {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        },
    )
    return parsed["image/encoded"], parsed["image/class/label"]


def random_crop(jpeg, seed, config: TrainConfig):
    """JPEG bytes -> float32 [S, S, 3] normalised pixels of one random crop (the official
    augmentation: area min_crop_area..1 of the image, aspect 3/4..4/3, no flip). `seed` int64
    [2]: the crop is a function of it, so a run's crops do not depend on thread scheduling."""
    import tensorflow as tf

    image = tf.io.decode_jpeg(jpeg, channels=3)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        area_range=(config.min_crop_area, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    return normalise_pixels(tf.image.resize(crop, (config.image_size, config.image_size)))


def training_dataset(config: TrainConfig, global_batch: int):
    """Endless shuffled batches (pixels [B, S, S, 3] float32, labels [B] int64) from the shards."""
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(config.tfrecords, "train-*-of-*"))
    if not files:
        raise FileNotFoundError(f"no train-*-of-* shards in {config.tfrecords}")
    dataset = tf.data.Dataset.from_tensor_slices(sorted(files)).shuffle(len(files), seed=config.seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed).repeat().map(_parse_example).enumerate()

    def crop(position, example):
        jpeg, label = example
        seed = tf.stack([tf.constant(config.seed, tf.int64), position])
        return random_crop(jpeg, seed, config), label

    dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(global_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def make_strategy(config: TrainConfig):
    import tensorflow as tf

    if config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if config.strategy == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def export_saved_model(embedder, config: TrainConfig, path: str) -> None:
    """Write the SavedModel with two signatures, both returning L2-normalised `embedding`:

    - `serving_default`: `image` uint8 [H, W, 3] (any size, RGB) -> `embedding` float32 [D];
    - `embed_batch`: `images` uint8 [B, H, W, 3] -> `embedding` float32 [B, D].

    As in the paper's test-time descriptor, images are resized to `s * image_size` square (aspect
    not kept) for each s in `test_scales`, normalised as in training, embedded, L2-normalised,
    summed over scales and L2-normalised again; callers pass decoded pixels only.
    """
    import tensorflow as tf

    sizes = [max(32, round(scale * config.image_size)) for scale in config.test_scales]

    def embed(images):
        total = 0.0
        for side in sizes:
            pixels = normalise_pixels(tf.image.resize(tf.cast(images, tf.float32), (side, side)))
            total += tf.math.l2_normalize(embedder(pixels, training=False), axis=1)
        return tf.math.l2_normalize(total, axis=1)

    module = tf.Module()
    module.embedder = embedder
    module.serve = tf.function(
        lambda image: {OUTPUT_NAME: embed(image[None])[0]},
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")],
    )
    module.serve_batch = tf.function(
        lambda images: {OUTPUT_NAME: embed(images)},
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    tf.saved_model.save(
        module, path, signatures={SIGNATURE: module.serve, BATCH_SIGNATURE: module.serve_batch.get_concrete_function()}
    )


@dataclass(frozen=True)
class TrainResult:
    """`losses`: mean loss per logged interval, in order; `step`: the last step trained."""

    step: int
    losses: list[float]
    saved_model: str
    seconds: float


def run_training(config: TrainConfig) -> TrainResult:
    """Train (resuming from the latest checkpoint under `output`), then export the SavedModel."""
    import keras
    import tensorflow as tf

    started = time.time()
    keras.utils.set_random_seed(config.seed)
    num_classes = len(read_relabeling(config.tfrecords))
    strategy = make_strategy(config)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    _, ArcFace = _layers()
    with strategy.scope():
        embedder = build_embedder(config)
        arcface = ArcFace(num_classes, config.arcface_margin, config.arcface_scale, name="arcface")
        arcface.build((None, config.embedding_dim))
        schedule = keras.optimizers.schedules.PolynomialDecay(config.learning_rate, max(config.steps, 1), 0.0)
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
        variables = embedder.trainable_variables + arcface.trainable_variables
        optimizer.build(variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(embedder=embedder, arcface=arcface, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(config.output, "checkpoints"), max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    losses: list[float] = []
    if int(step.numpy()) < config.steps:
        losses = _train_loop(config, strategy, embedder, arcface, optimizer, step, manager, global_batch, variables)
    saved_model = os.path.join(config.output, "saved_model")
    export_saved_model(embedder, config, saved_model)
    return TrainResult(int(step.numpy()), losses, saved_model, time.time() - started)


def _train_loop(config, strategy, embedder, arcface, optimizer, step, manager, global_batch, variables) -> list[float]:
    import keras
    import tensorflow as tf

    def replica_step(pixels, labels):
        with tf.GradientTape() as tape:
            logits = arcface(embedder(pixels, training=True), labels)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        gradients, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), config.clip_norm)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=1), labels), tf.float32)
        return loss, tf.reduce_sum(correct) / global_batch

    @tf.function
    def train_step(batch):
        loss, accuracy = strategy.run(replica_step, args=batch)
        reduce = tf.distribute.ReduceOp.SUM
        return strategy.reduce(reduce, loss, axis=None), strategy.reduce(reduce, accuracy, axis=None)

    batches = iter(strategy.experimental_distribute_dataset(training_dataset(config, global_batch)))
    writer = tf.summary.create_file_writer(os.path.join(config.output, "logs"))
    losses: list[float] = []
    window: list[tuple[float, float]] = []
    while int(step.numpy()) < config.steps:
        loss, accuracy = train_step(next(batches))
        step.assign_add(1)
        window.append((float(loss), float(accuracy)))
        current = int(step.numpy())
        if current % config.log_every == 0 or current == config.steps:
            mean_loss, mean_accuracy = np.mean(window, axis=0)
            losses.append(float(mean_loss))
            with writer.as_default(step=current):
                tf.summary.scalar("loss", mean_loss)
                tf.summary.scalar("accuracy", mean_accuracy)
                tf.summary.scalar("learning_rate", optimizer.learning_rate)
            window = []
        if current % config.checkpoint_every == 0 or current == config.steps:
            manager.save(checkpoint_number=current)
    writer.flush()
    return losses
