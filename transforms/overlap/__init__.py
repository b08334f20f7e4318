"""Overlap: which images of a curated split show what an evaluation set shows (`gld overlap`).

`stage` (`FindOverlap`: a global-descriptor kNN across a training and an evaluation set in
bounded block x block tasks reading descriptors from the store, a per-image top-k combiner, then
each candidate verified with the curation's own matcher).

Public composite: `FindOverlap`.

Layer: the top, beside `transforms.selection` (neither imports the other). Imports
`transforms.matching` (`verify_pair`), `transforms.features` (the features store, global
descriptors), `schemas` and `transforms.plumbing`.
"""
