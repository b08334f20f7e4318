"""Ingest: manifest rows in, stored images out (stages 1-3).

`manifest` (`ReadManifest`: lines with numbers, parse, dead-letter bad rows, duplicate ids),
`fetch` (`FetchImages`: HTTP(S) or a GLDv2-layout folder), `tar_shards` (`ReadShards`,
`MatchCopies`: the official tar shards read in place), `decode` (`DecodeImages`: decode,
normalise, re-encode; `stored_pixels`), `image_store` (the part stores, their claim checks and
listings, settings keys, the failure log) and `stage` (`Ingest`).

Public composites: `ReadManifest`, then `Ingest` (resume from the store, fetch or read the
shards, decode, store; emits `ImageRef`s and `Failure`s).

Layer: the first stage. Imports `schemas` and `transforms.plumbing` only.
"""
