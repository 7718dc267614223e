"""Model catalogs: the embedded default models and models found on disk."""
