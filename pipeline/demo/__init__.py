"""The offline demo: a generated landmark-like dataset with known truth (`data`), a loopback
HTTP server for it (`serve`), and `gld demo` itself (`run`: generate, serve, curate, score).

May import `pipeline.runner`, `transforms` and `schemas`. One seam to a sibling: `run` runs the
curation through `pipeline.curation.config.build_config` and `pipeline.curation.curate`
(`run_curation`, `output_paths`).
"""
