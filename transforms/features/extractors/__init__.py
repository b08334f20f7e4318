"""Local feature extractors behind one interface, chosen by name (no Beam here).

`base` (the `Extractor` protocol, `FeatureArrays`, descriptor storage, the working-side shrink),
`config` (`FeatureConfig` and the extractors' defaults), `sift` (OpenCV SIFT/RootSIFT), `delf`
(DELF; with `tiny_delf`, a small SavedModel with DELF's signature for tests and runs without
weights, the only TensorFlow importers), `learned` (ALIKED features, LightGlue matching; the only
PyTorch importer) and `registry` (`EXTRACTORS`, importing `delf` and `learned` on first use, and
`check_extractor`, the one check of an extractor name). The Beam stage that runs them is
`transforms.features.stage`.

Layer: the bottom of `transforms`, beside `transforms.plumbing`: these modules import `schemas`
and each other only, no stage and no plumbing, so an extractor runs anywhere.

Imports inside: base ← sift ← registry; `delf` and `learned` import `base`; `config` imports none
of them. The extractors and the registry name `FeatureConfig` in annotations only
(`TYPE_CHECKING`), and the config imports neither the registry nor an extractor, so there is no
loop even counting those (`tests/test_imports.py` counts them).
"""
