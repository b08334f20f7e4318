"""A tiny SavedModel with DELF's exact serving signature, for tests and local runs without weights.

Its features are real, if simple, local features computed from the image in TensorFlow ops, so
that two views of one scene match and RANSAC verifies them:

- for each of the `image_scales`: resize, blur, and cut 5 x 8 patches (sampled every 5 px) on a
  4 px grid; a patch's descriptor is its mean-free, L2-normalised values (40 dims, as DELF);
  its attention is the patch variance in 0..255 grey levels (0 on a blank image);
- keep the local maxima of attention (3 x 3 cells) above `score_threshold`, then the
  `max_feature_num` highest over all scales;
- `locations` are patch centres in (y, x) pixel order of the input image, `scales` are
  1 / scale and `attention` the scores, as DELF returns them.

Write one with `gld make-tiny-delf DIR`, then `gld curate --extractor delf --delf-model DIR`.
"""

from __future__ import annotations

import tensorflow as tf

_PATCH = (5, 8)  # rows x columns of one descriptor's samples: 40 values
_RATE = 5  # pixels between two samples
_STRIDE = 4  # pixels between two patches


class TinyDelf(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([], tf.float32, name="score_threshold"),
            tf.TensorSpec([None], tf.float32, name="image_scales"),
            tf.TensorSpec([], tf.int32, name="max_feature_num"),
        ]
    )
    def default(
        self, image: tf.Tensor, score_threshold: tf.Tensor, image_scales: tf.Tensor, max_feature_num: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        grey = tf.reduce_mean(image, axis=-1, keepdims=True)[tf.newaxis] * 255.0  # [1, H, W, 1]
        count = tf.size(image_scales)
        locations = tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=[None, 2])
        descriptors = tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=[None, 40])
        attention = tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=[None])
        scales = tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=[None])
        for i in tf.range(count):
            loc, desc, att = _features_at_scale(grey, image_scales[i], score_threshold)
            locations = locations.write(i, loc)
            descriptors = descriptors.write(i, desc)
            attention = attention.write(i, att)
            scales = scales.write(i, tf.fill(tf.shape(att), 1.0 / image_scales[i]))
        all_attention = attention.concat()
        k = tf.minimum(max_feature_num, tf.size(all_attention))
        top = tf.math.top_k(all_attention, k=k).indices
        return {
            "locations": tf.gather(locations.concat(), top),
            "descriptors": tf.gather(descriptors.concat(), top),
            "scales": tf.gather(scales.concat(), top),
            "attention": tf.gather(all_attention, top),
        }


def _features_at_scale(
    grey: tf.Tensor, scale: tf.Tensor, score_threshold: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(locations [M, 2] (y, x) in input pixels, descriptors [M, 40], attention [M]) at one scale."""
    size = tf.cast(tf.shape(grey)[1:3], tf.float32)
    scaled_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
    scaled = tf.image.resize(grey, scaled_size, antialias=True)
    blurred = tf.nn.avg_pool2d(tf.nn.avg_pool2d(scaled, 5, 1, "SAME"), 5, 1, "SAME")
    patches = tf.image.extract_patches(
        blurred,
        sizes=[1, *_PATCH, 1],
        strides=[1, _STRIDE, _STRIDE, 1],
        rates=[1, _RATE, _RATE, 1],
        padding="VALID",
    )[0]  # [rows, cols, 40]
    centred = patches - tf.reduce_mean(patches, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(centred), axis=-1)  # [rows, cols]
    peaks = tf.equal(variance, tf.nn.max_pool2d(variance[tf.newaxis, ..., tf.newaxis], 3, 1, "SAME")[0, ..., 0])
    cells = tf.where(tf.logical_and(peaks, variance > score_threshold))  # [M, 2] (row, col)
    offset = tf.constant([(_PATCH[0] - 1) * _RATE / 2, (_PATCH[1] - 1) * _RATE / 2], tf.float32)
    centres = tf.cast(cells, tf.float32) * _STRIDE + offset
    ratio = tf.cast(scaled_size, tf.float32) / size  # per axis: the scaled size was rounded
    locations = (centres + 0.5) / ratio - 0.5  # pixel centres of the scaled image -> of the input
    descriptors = tf.math.l2_normalize(tf.gather_nd(centred, cells), axis=-1)
    return locations, descriptors, tf.gather_nd(variance, cells)


def build_tiny_delf(path: str) -> str:
    """Write the SavedModel to `path` and return `path`."""
    module = TinyDelf()
    tf.saved_model.save(module, path, signatures={"default": module.default})
    return path
