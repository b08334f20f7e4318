"""`gld review`: judge a finished run by eye on loopback; verdicts go to `reviews.csv`."""
