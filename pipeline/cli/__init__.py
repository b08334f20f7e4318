"""The `gld` command line: flag parsing and the command table (`main.run`, the console entry
point), the stage-setting flags defined once (`settings`), with the option parsing of the
baseline commands (`baselines`) and of `gld overlap` (`overlap`).

Top layer: may import every subpackage of `pipeline` (curation, baselines, report, demo),
`pipeline.runner`, `transforms` and `schemas`; nothing imports it.
"""
