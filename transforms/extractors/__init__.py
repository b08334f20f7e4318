"""Local feature extractors behind one interface, chosen by name.

`base` (the `Extractor` protocol, `FeatureArrays`, descriptor storage, the working-side shrink),
`config` (`FeatureConfig` and the extractors' defaults), `sift` (OpenCV SIFT/RootSIFT), `delf`
(DELF; the only TensorFlow importer), `learned` (ALIKED features, LightGlue matching; the only
PyTorch importer) and `registry` (`EXTRACTORS`, importing `delf` and `learned` on first use).
The Beam stage that runs them is `transforms.features`.

Imports inside: base ← sift ← registry ← config; `delf` and `learned` import `base`; the
extractors see `FeatureConfig` for annotations only, so there is no loop.
"""
