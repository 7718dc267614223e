"""Alembic migrations of the LLaMA GPU schema, driven by :mod:`llama_gpu.db.migrate` (no ``alembic.ini``)."""
