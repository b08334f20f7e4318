"""gld train: a few steps of the tiny model on synthetic records lower the loss; checkpoints
resume; the SavedModel has the embedding signatures."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline.baselines.tfrecords import ExportConfig, run_export
from pipeline.baselines.train import BATCH_SIGNATURE, OUTPUT_NAME, SIGNATURE, TrainConfig, run_training
from tests.baseline_data import class_view, write_store, write_train_clean

CLASSES = {lid: [f"{lid:04d}{i:012x}" for i in range(6)] for lid in (11, 12, 13, 14)}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    images = write_store(str(root / "store"), CLASSES)
    train_clean = write_train_clean(str(root / "train_clean.csv"), CLASSES)
    out = str(root / "records")
    run_export(ExportConfig(train_clean, images, out, train_shards=2, validation_shards=1), show_progress=False)
    return out


def _config(records, output, steps):
    return TrainConfig(
        records,
        output,
        backbone="tiny",
        tiny_width=8,
        image_size=32,
        embedding_dim=16,
        batch_size=16,
        steps=steps,
        learning_rate=0.05,
        min_crop_area=0.5,
        checkpoint_every=10,
        log_every=5,
    )


def test_loss_falls_and_training_resumes(records, tmp_path):
    output = str(tmp_path / "model")
    first = run_training(_config(records, output, 40))
    assert first.step == 40 and len(first.losses) == 8
    assert np.mean(first.losses[-2:]) < 0.8 * np.mean(first.losses[:2])
    resumed = run_training(_config(records, output, 50))
    assert resumed.step == 50 and len(resumed.losses) == 2  # steps 41..50 only
    loaded = tf.saved_model.load(resumed.saved_model)
    single = loaded.signatures[SIGNATURE](image=tf.constant(class_view(11, 0, 48)))[OUTPUT_NAME]
    assert single.shape == (16,)
    assert np.isclose(np.linalg.norm(single.numpy()), 1.0, atol=1e-5)
    batch = np.stack([class_view(11, 0), class_view(12, 0)])
    embedded = loaded.signatures[BATCH_SIGNATURE](images=tf.constant(batch))[OUTPUT_NAME].numpy()
    assert embedded.shape == (2, 16)
    assert np.allclose(embedded[0], loaded.signatures[SIGNATURE](image=tf.constant(batch[0]))[OUTPUT_NAME], atol=1e-5)


def test_config_is_validated(records):
    with pytest.raises(ValueError):
        TrainConfig(records, "out", backbone="vgg")
    with pytest.raises(ValueError):
        TrainConfig(records, "out", strategy="gpu")
    with pytest.raises(ValueError):
        TrainConfig(records, "out", backbone="tiny", backbone_weights="w.h5")
