"""Matching: candidate pairs per class and their geometric verification (stages 5-6).

`pairs` (`GeneratePairs`: all / kNN / random partners within a class, stored results reused,
the rest planned as bounded blocks with the references they need), `rounds` (adaptive
verification: which pairs can still change the split, `FindUnsafeSkips`) and `verify`
(`VerifyPairs`: blocks spread over workers, feature sets read from the store, matching, seeded
RANSAC, results committed to the verified-pair store; `verify_pair` for the audit and overlap).

Public composites: `GeneratePairs`, then `VerifyPairs`.

Layer: above `transforms.features` (it reads the features store, global descriptors and the
learned matcher of the extractors' registry) and `transforms.ingest` (its store parts). Imports
those, `schemas` and `transforms.plumbing`, and one documented seam upwards: `rounds` reads the
selection rule (`transforms.selection.select.SelectConfig`) to know which pairs cannot change a
decision.
"""
