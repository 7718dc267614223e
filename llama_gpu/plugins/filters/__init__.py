"""Pre- and post-processing filters."""
