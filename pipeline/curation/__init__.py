"""The curation jobs: `CurateConfig` and presets (`config`), job 1 and job 2 (`curate`), the
ingest-only job (`ingest`), the checks and listings made before a graph is built
(`preflight`), the offline dry-run plan (`plan`), `gld select` (`reselect`),
`gld overlap` (`overlap`) and `gld compare` (`compare`).

May import `pipeline.runner`, `transforms` and `schemas`. One seam to a sibling: `curate` and
`overlap` call `pipeline.report.page.build_report` to write `report.html` at the end of a run.
"""
