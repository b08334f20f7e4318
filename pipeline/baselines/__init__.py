"""The baselines on a clean split: `gld export-tfrecords` (`tfrecords`), `gld train` (`train`),
`gld evaluate` (`evaluate`), `gld score` (`metrics`, pure functions) and the baseline part of
`gld demo --with-baselines` (`demo_baselines`).

May import `pipeline.runner`, `transforms` and `schemas`; no sibling subpackage.
"""
