"""`report.html` of a curation: the page (`page.build_report`), the numbers read from the outputs
(`data`), inline SVG charts (`charts`), thumbnails and drawn matches (`images`) and the
`gld overlap` section (`overlap`).

May import `transforms` and `schemas`; no sibling subpackage (curation calls into it through
`page.build_report`).
"""
