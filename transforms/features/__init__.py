"""Features: local features and global descriptors of stored images (stage 4).

`stage` (`ExtractFeatures`: any extractor under `RunInference`, reading JPEGs by reference, the
summary kept beside the features, the features store writes; `check_model`), `feature_store`
(the features store's folder per settings, `ReuseStoredFeatures`, `read_features`),
`global_descriptor` (one global descriptor per image, `DescribeImages`, the chunked class kNN)
and `extractors` (SIFT, DELF, ALIKED behind one interface, and their registry).

Public composite: `ExtractFeatures` (with `ReuseStoredFeatures` in front of it on a re-run).

Layer: above `transforms.ingest` (it reads the image store and decodes the stored JPEGs). Imports
`schemas`, `transforms.plumbing` and `transforms.ingest`, and one documented seam upwards:
`stage` computes the audit's perceptual hash and mean descriptor
(`transforms.selection.audit_signatures`, pure numpy) on the pixels it already holds.
`extractors` is a layer of its own below (see its docstring): it imports none of this.
"""
