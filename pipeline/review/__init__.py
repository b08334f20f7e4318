"""`gld review`: judge a finished run by eye on loopback; verdicts go to `reviews.csv`.

The queues read from the run's tables (`queues`), the pictures from its stores (`pictures`), the
verdict store (`verdicts`), the Flask app and its static page (`app`, `static/`) and the
offline export (`export`). Applying the verdicts is selection's work (`transforms.selection.apply_reviews`,
`gld select --reviews`).

May import `pipeline.runner`, `transforms` and `schemas`; two seams to siblings:
`app` reads a run through `pipeline.curation.run_folder.finished_run`, and `pictures` draws
with `pipeline.report.images`.
"""
