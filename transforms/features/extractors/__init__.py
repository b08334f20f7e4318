"""Local feature extractors behind one interface, chosen by name.

`base` (the `Extractor` protocol, `FeatureArrays`, descriptor storage, the working-side shrink),
`config` (`FeatureConfig` and the extractors' defaults), `sift` (OpenCV SIFT/RootSIFT), `delf`
(DELF; with `tiny_delf`, a small SavedModel with DELF's signature for tests and
runs without weights, the only TensorFlow importers), `learned` (ALIKED features, LightGlue matching; the only
PyTorch importer) and `registry` (`EXTRACTORS`, importing `delf` and `learned` on first use).
The Beam stage that runs them is `transforms.features.stage`.

Imports inside: base ← sift ← registry ← config; `delf` and `learned` import `base`; the
extractors see `FeatureConfig` for annotations only, so there is no loop.
"""
