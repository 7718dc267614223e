"""gunicorn configuration of one LLaMA GPU instance: the one shipped in the package.

``llama-gpu serve --production`` uses :mod:`llama_gpu.gunicorn_conf` directly (so a wheel
needs no file of its own); this file is for running gunicorn by hand from the source tree:

    gunicorn -c docker/gunicorn.conf.py llama_gpu.api.wsgi:app

Settings and hooks are documented there; override them with ``GUNICORN_CMD_ARGS`` or a
config of your own (``--gunicorn-config`` / ``LLAMA_GPU_GUNICORN_CONFIG``).
"""

from llama_gpu.gunicorn_conf import *  # noqa: F403 - gunicorn reads the settings and hooks from this namespace
