"""Migration scripts, one per revision, oldest first (``0001_initial`` creates the whole schema)."""
