"""`report.html` of a curation: the page (`page.build_report`), the numbers read from the outputs
(`data`), inline SVG charts (`charts`), thumbnails and drawn matches (`images`) and the
`gld overlap` section (`overlap`).

May import `transforms` and `schemas`; of the sibling subpackages only `pipeline.review.queues`
(the page counts and links the review's items); curation calls into it through
`page.build_report`, and `pipeline.review.pictures` uses `images`.
"""
