"""Every hook of LLaMA GPU: the one file a plugin author must read.

A plugin is a module or a class (instantiated once per kernel) whose functions are
marked with ``@hookimpl`` and named after the hooks below. An implementation may take
any subset of a hook's arguments, by name. Specs only ever grow by new arguments, so a
plugin written today keeps working.

Each hook states its aggregation rule:

- **collector**: the hook receives a ``register`` callback; the kernel validates what is
  registered (a duplicate name fails at start-up or at load time) and remembers which
  plugin registered it, so unloading the plugin removes it again.
- **firstresult**: in the same order as pipelines, the first implementation that returns
  something other than ``None`` answers; later ones are not called. One that raises a
  non-``LlamaGPUError`` fails the call with ``PLUGIN_FAILED`` (fail closed).
- **pipeline**: called implementation by implementation, ordered by each plugin's
  configured ``priority`` (lower runs earlier; ``tryfirst`` implementations before all,
  ``trylast`` after all; ties keep pluggy's order, where a plugin registered later runs
  earlier, so third-party plugins run before built-ins), each inside its own error boundary; an
  implementation edits its arguments in place and returns ``None``. An implementation
  that raises :class:`~llama_gpu.errors.LlamaGPUError` answers the request with that
  error; any other exception is a plugin failure: reported (``plugin_error`` event, log
  line with the plugin id), the request fails with ``PLUGIN_FAILED``, and after
  ``LLAMA_GPU_PLUGIN_FAILURE_THRESHOLD`` consecutive failures the plugin is disabled.
- **per-plugin**: called once for each implementation with arguments of its own.
- **broadcast**: every implementation is called; results are ignored or merged as said.
- **subscriber**: called on the plugin's own event-bus thread, never on the request path.

The kernel's plugin host dispatches each hook by one table (``llama_gpu.kernel.plugin_host.HOOKS``)
that states the same kinds. ``@hookimpl(wrapper=True)`` (or the older ``hookwrapper=True``)
wraps the whole call of a **pipeline** or **firstresult** hook, as in pluggy (for timing or
tracing); a wrapper on any other hook is refused when its plugin is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ..bench.metrics import RequestMetrics
    from .backend import Backend, ModelSpec
    from .kernel import Kernel
    from .types import Chunk, Credentials, Event, Identity, InferenceRequest, InferenceResponse, RateLimitStatus
else:
    RequestMetrics = Any  # the kernel imports nothing of the bench suite at run time

PROJECT_NAME = "llama_gpu"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------------------
# lifecycle
# -------------------------------------------------------------------------------------


@hookspec
def configure(kernel: Kernel, settings: Mapping[str, Any]) -> None:
    """Receive the plugin's own settings, at start-up and whenever an operator changes them.

    Aggregation: per-plugin. The kernel calls each implementation with the settings of
    the plugin that owns it (its ``PLUGIN_INFO.default_settings`` merged with what was
    configured; with a ``PLUGIN_INFO.settings_schema``, also ``LLAMA_GPU_<PLUGIN>_<KEY>``
    variables, validated by the schema before this is called). Raise
    :class:`~llama_gpu.errors.InvalidInput` (or ``ValueError``) to refuse the settings: the
    change is rejected and the previous settings stay.

    :param kernel: The kernel the plugin is registered in.
    :param settings: The plugin's settings, a read-only mapping.
    :return: Nothing.
    """


@hookspec
def startup(kernel: Kernel) -> None:
    """The kernel has loaded its plugins and is about to serve.

    Aggregation: broadcast. Also called for a plugin loaded at runtime, once it is in.
    An exception fails start-up (or the runtime load, with ``PLUGIN_LOAD_FAILED``).

    :param kernel: The kernel that starts.
    :return: Nothing.
    """


@hookspec
def shutdown(kernel: Kernel) -> None:
    """The kernel has drained its requests and stops; release resources.

    Aggregation: broadcast, each implementation in its own error boundary (one failing
    does not stop the others). Also called for a plugin unloaded at runtime.

    :param kernel: The kernel that stops.
    :return: Nothing.
    """


# -------------------------------------------------------------------------------------
# collectors
# -------------------------------------------------------------------------------------


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Register model backends.

    Aggregation: collector. Call ``register(backend)`` once per
    :class:`~llama_gpu.Backend` instance; two backends of one ``name`` fail.

    :param register: Adds one backend.
    :return: Nothing.
    """


@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Declare models (a catalog, a bundled model, a discovered folder).

    Aggregation: collector. Call ``register(spec)`` with a :class:`~llama_gpu.ModelSpec`;
    a model id declared twice fails. Give ``spec.locate`` to prepare the file on first load
    (e.g. assemble it from package parts) rather than at start-up.

    :param register: Adds one model.
    :return: Nothing.
    """


@hookspec
def register_event_types(register: Callable[[str, str], None]) -> None:
    """Declare the event types the plugin publishes.

    Aggregation: collector. Call ``register(name, description)``; a name declared twice
    fails. Publishing an undeclared type is refused.

    :param register: Declares one event type.
    :return: Nothing.
    """


@hookspec
def register_commands(register: Callable[[Any], None]) -> None:
    """Add sub-commands to the ``llama-gpu`` command line.

    Aggregation: collector. Call ``register(command)`` with a ``click.Command`` or
    ``click.Group``; a name that clashes with an existing command fails.

    :param register: Adds one click command.
    :return: Nothing.
    """


@hookspec
def register_routes(register: Callable[[Any], None]) -> None:
    """Add HTTP routes.

    Aggregation: collector. Call ``register(blueprint)`` with a ``flask.Blueprint``; two
    blueprints of one name fail. Routes are collected when the app is created, so a
    plugin loaded later at runtime adds its routes at the next start.

    :param register: Adds one blueprint.
    :return: Nothing.
    """


@hookspec
def register_benchmark_metrics(register: Callable[[str, Callable[[list[RequestMetrics]], float | None]], None]) -> None:
    """Add a metric to benchmark runs and model evaluations.

    Aggregation: collector. Call ``register(name, fn)``; ``fn`` receives the
    :class:`~llama_gpu.bench.metrics.RequestMetrics` of one run (failed requests
    included: check ``metric.ok``) and returns a number, or ``None`` when it does not
    apply. Its value appears in ``aggregated_metrics["custom"][name]``. A name
    registered twice fails; an ``fn`` that raises gives ``None`` for that run.

    :param register: Adds one named metric function.
    :return: Nothing.
    """


@hookspec
def collect_metrics(kernel: Kernel) -> Mapping[str, float] | None:
    """Report current metric values (gauges and counters) by name.

    Aggregation: broadcast; the kernel merges the mappings, keyed
    ``<plugin_id>.<name>`` so plugins cannot overwrite each other. Called when metrics
    are read (a scrape, a dashboard sample), never on the token path.

    :param kernel: The kernel asking.
    :return: A mapping of metric name to value, or ``None``.
    """


# -------------------------------------------------------------------------------------
# the request pipeline
# -------------------------------------------------------------------------------------


@hookspec
def prepare_request(request: InferenceRequest, kernel: Kernel) -> None:
    """Inspect or edit a request before it is queued for a model.

    Aggregation: pipeline. Edit ``request`` in place (the prompt, the sampling
    parameters, ``request.metadata``); raise a ``LlamaGPUError`` such as
    :class:`~llama_gpu.errors.InvalidInput` to refuse it. It runs before the model is
    acquired, so a refusal never loads or evicts one (a chat request: after its messages are
    rendered with the model's chat template).

    :param request: The request; mutable.
    :param kernel: The kernel serving it.
    :return: Nothing.
    """


@hookspec
def process_chunk(request: InferenceRequest, chunk: Chunk) -> None:
    """Inspect or edit one streamed chunk before it reaches the client.

    Aggregation: pipeline. Edit ``chunk.text`` in place, or set ``chunk.dropped`` to
    leave it out. Runs once per token: keep it cheap.

    :param request: The request the chunk belongs to.
    :param chunk: The chunk; mutable.
    :return: Nothing.
    """


@hookspec
def process_response(request: InferenceRequest, response: InferenceResponse) -> None:
    """Inspect or edit the finished response.

    Aggregation: pipeline. Edit ``response`` in place (``response.text``,
    ``response.metadata``). For a streamed request the chunks have already been sent;
    the edited text is the final text.

    :param request: The request that was served.
    :param response: The response; mutable.
    :return: Nothing.
    """


# -------------------------------------------------------------------------------------
# access
# -------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def authenticate(credentials: Credentials, kernel: Kernel) -> Identity | None:
    """Tell who is calling.

    Aggregation: firstresult. Return an :class:`~llama_gpu.Identity` for credentials the
    plugin recognises, ``None`` to let the next plugin decide, or raise
    :class:`~llama_gpu.errors.AuthenticationFailed` for credentials it knows to be bad.
    Nobody answering means the call is unauthenticated. Fails closed: any other exception
    refuses the call (``PLUGIN_FAILED``), and the plugin is never disabled for it.

    :param credentials: What the caller presented.
    :param kernel: The kernel serving the call.
    :return: The caller's identity, or ``None``.
    """


@hookspec(firstresult=True)
def check_permission(identity: Identity | None, permission: str, resource: str | None) -> bool | None:
    """Decide whether ``identity`` may do ``permission`` (``read``, ``write``, ``admin``).

    Aggregation: firstresult. Return ``True`` to allow, ``False`` to deny, ``None`` to
    let the next plugin decide. Nobody answering denies. Fails closed: an exception refuses
    the call, and the plugin is never disabled for it.

    :param identity: The caller, ``None`` when unauthenticated.
    :param permission: The permission asked for.
    :param resource: What it is asked on (e.g. ``plugins``, ``models/echo``), if anything.
    :return: The decision, or ``None``.
    """


@hookspec(firstresult=True)
def rate_limit(identity: Identity | None, group: str, client: str, kernel: Kernel, cost: int) -> RateLimitStatus | None:
    """Count one call of ``identity`` (or of ``client`` when anonymous) against the limit of ``group``.

    Aggregation: firstresult. Return the caller's :class:`~llama_gpu.kernel.types.RateLimitStatus`
    after counting this call (``allowed=False`` when it is over the limit: the call is
    answered 429 ``RATE_LIMIT_EXCEEDED`` with ``Retry-After``), or ``None`` when the plugin
    does not limit this call. Nobody answering means no limit. Fails closed: an exception
    refuses the call, and the plugin is never disabled for it.

    :param identity: The caller, ``None`` when unauthenticated.
    :param group: The endpoint group (``infer``, ``stream``, ``batch``, ``models``, ``plugins``, ``system``…).
    :param client: The client's address (after trusted proxies).
    :param kernel: The kernel serving the call.
    :param cost: How many units the call counts for: the sequences it asks for (a completion of
        8 prompts with ``best_of`` 2 costs 16), 1 for most calls.
    :return: The caller's standing, or ``None``.
    """


# -------------------------------------------------------------------------------------
# events
# -------------------------------------------------------------------------------------


@hookspec
def on_event(event: Event) -> None:
    """Receive every event published on the bus.

    Aggregation: subscriber. Each plugin has its own delivery thread and bounded queue:
    a slow implementation delays only itself (and loses events when its queue fills), and
    one that raises is reported and keeps receiving.

    :param event: The event.
    :return: Nothing.
    """
