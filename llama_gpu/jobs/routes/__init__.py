"""The job plugins' HTTP routes, registered through ``register_routes`` as a third-party plugin's are.

Each route declares its permission, rate-limit group and schemas on itself
(:func:`llama_gpu.api.routing.route`): ``benchmarks`` (``/api/v1/benchmarks``), ``convert``
(``/v1/convert``) and ``evaluate`` (``/api/v1/models/{id}/evaluate``, ``/api/v1/metrics/history``).
"""
