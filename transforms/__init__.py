"""The Beam stages of a curation, one subpackage per stage, and the plumbing they share.

Each subpackage's docstring says what its stage does and names its public composite transform.
Layers, lowest first, as the imports stand: a module may import its own subpackage, `schemas`
and the layers below it, nothing above and no sibling on its own layer.

1. `plumbing` (Parquet tables, dead-letter routing, the shuffle meter, counters, threads) and
   `features.extractors` (SIFT, DELF, ALIKED and their registry): they import no stage and not
   each other.
2. `ingest`: manifest, fetch or tar shards, decode, the image store (`ReadManifest`, `Ingest`).
3. `features`: `ExtractFeatures`, the features store, global descriptors; reads ingest's store.
4. `matching`: `GeneratePairs`, adaptive rounds, `VerifyPairs`; reads the features store and
   writes its pairs through ingest's store parts.
5. `selection` (`SelectClean`, the audit, c2x, reviews) and `overlap` (`FindOverlap`): both
   verify with `matching.verify.verify_pair` and read the features store; neither imports the
   other.

Two documented seams point up: `features.stage` -> `selection.audit_signatures` (the feature step
computes the audit's perceptual hash and mean descriptor on the pixels it holds) and
`matching.rounds` -> `selection.select` (adaptive verification reads the selection rule to know
which pairs cannot change a decision). `tests/test_imports.py` checks all of this on every
import, those inside functions and under `if TYPE_CHECKING:` included, and that the import graph
has no cycle. This package itself holds no module: every module lives in a stage's subpackage.
"""
