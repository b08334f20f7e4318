"""The `gld` jobs on top of `transforms` and `schemas`, in layers that import downwards only:

`cli` → (`curation`, `baselines`, `report`, `demo`) → `runner` → `transforms` → `schemas`.

The four middle subpackages do not import each other except through the seams their
docstrings name (curation → report for `report.html`; demo → curation to run the demo);
`tests/test_imports.py` checks the order.
"""
