"""Flags the end-to-end tests share."""

#: Tests of accounting, resumes, re-selection and overlap run SIFT, the fast preset that needs no
#: PyTorch; the default preset's own end-to-end run is `tests/test_default_preset.py`.
SIFT = ["--preset", "gldv2-components"]
