"""Plumbing shared by every stage: no stage of its own.

`store` (`write_atomically`, the sorted range-partitioned Parquet tables, their readers,
`WriteTrainClean`), `routing` (dead-letter routing of `Failure`s), `metering` (the
`shuffle/bytes` counter every grouping step is fed through), `progress` (counters and the local
progress line) and `threads` (one BLAS thread per worker thread).

Public transforms: `WriteSortedParquet`, `ReadTable`, `WriteTrainClean`, `meter`, `route`.

Layer: the bottom of `transforms`. Imports `schemas` only, and no other `transforms`
subpackage.
"""
