"""The live channel: a small wrapper over ``socketio.Client``.

Connects with ``auth={"token": <key or login token>}``; ``subscribe`` joins channels
(``system_metrics``, ``inference_events``…), ``on`` registers handlers (several per event),
``wait_for`` blocks until an event arrives, ``chat`` streams a chat on the server's engine.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import socketio

from .errors import APIConnectionError, AuthenticationError, LlamaGPUError, build_error
from .types import ChatResult

__all__ = ["CHANNELS", "LlamaGPUSocket"]

#: The channels the server offered when this client was written (``subscribe`` refuses other names;
#: :attr:`LlamaGPUSocket.channels` is the connected server's own list).
CHANNELS = (
    "system_metrics",
    "gpu_metrics",
    "inference_stats",
    "inference_events",
    "plugin_events",
    "model_events",
    "alerts",
    "benchmarks",
    "convert",
    "evaluations",
)

Handler = Callable[[Any], None]
#: Events whose dispatcher the wrapper registers itself.
_BUILT_IN = ("connected", "chat_chunk", "chat_done", "chat_error")


class LlamaGPUSocket:
    """A Socket.IO connection to a LLaMA GPU server (threaded; handlers run on the client's thread)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        transports: Sequence[str] = ("websocket",),
        wait_timeout: float = 10.0,
        call_timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.transports = list(transports)
        self.wait_timeout = wait_timeout
        self.call_timeout = call_timeout
        #: ``{kind, id, roles}`` of the connected caller (from the server's ``connected`` event).
        self.user: dict[str, Any] | None = None
        #: The channels the connected server offers (from its ``connected`` event).
        self.channels: list[str] = []
        self._client = socketio.Client(reconnection=False)
        self._handlers: dict[str, list[Handler]] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._seen: list[tuple[str, Any]] = []
        self._refusal: Any = None
        self._chats: dict[str, queue.Queue[tuple[str, Any]]] = {}
        self._client.on("connect_error", self._on_refused)
        self._client.on("*", self._catch_all)
        for event in _BUILT_IN:
            self._dispatch_for(event)
        self.on("connected", self._on_connected)
        for event in ("chat_chunk", "chat_done", "chat_error"):
            self.on(event, lambda data, kind=event: self._route_chat(kind, data))

    # ------------------------------------------------------------------ connection
    def connect(self) -> LlamaGPUSocket:
        """Connect; a refusal raises :class:`AuthenticationError` or :class:`PermissionDeniedError`."""
        auth = {"token": self.token} if self.token else None
        try:
            self._client.connect(self.base_url, auth=auth, transports=self.transports, wait_timeout=self.wait_timeout)
        except socketio.exceptions.ConnectionError as exc:
            refusal = self._refusal
            if isinstance(refusal, dict) and isinstance(refusal.get("data"), dict):
                raise build_error(refusal["data"], fallback_message=str(refusal.get("message"))) from exc
            if refusal is not None:
                raise AuthenticationError(str(refusal)) from exc
            raise APIConnectionError(f"could not connect to {self.base_url}: {exc}") from exc
        self.wait_for("connected", timeout=self.wait_timeout)
        return self

    @property
    def connected(self) -> bool:
        """Whether the socket is connected."""
        return bool(self._client.connected)

    @property
    def transport(self) -> str | None:
        """``websocket`` or ``polling`` while connected."""
        return self._client.transport() if self.connected else None

    def disconnect(self) -> None:
        """Disconnect (the server cancels this client's running chats)."""
        self._client.disconnect()

    def __enter__(self) -> LlamaGPUSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.disconnect()

    def _on_refused(self, data: Any = None) -> None:
        self._refusal = data

    def _on_connected(self, data: Any) -> None:
        if isinstance(data, dict):
            self.user = data.get("user")
            self.channels = list(data.get("channels") or [])

    # ------------------------------------------------------------------ events
    def _record(self, event: str, data: Any) -> list[Handler]:
        with self._cond:
            self._seen.append((event, data))
            del self._seen[:-1000]
            self._cond.notify_all()
            return list(self._handlers.get(event, ()))

    def _dispatch_for(self, event: str) -> None:
        def dispatch(data: Any = None) -> None:
            for handler in self._record(event, data):
                handler(data)

        self._client.on(event, dispatch)

    def _catch_all(self, event: str, data: Any = None) -> None:
        self._record(event, data)

    def on(self, event: str, handler: Handler) -> Handler:
        """Call ``handler(data)`` for every ``event`` (several handlers per event; returns ``handler``)."""
        with self._lock:
            first = event not in self._handlers
            self._handlers.setdefault(event, []).append(handler)
        if first and event not in _BUILT_IN:
            self._dispatch_for(event)
        return handler

    def off(self, event: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``event``."""
        with self._lock:
            if handler in self._handlers.get(event, []):
                self._handlers[event].remove(handler)

    def wait_for(self, event: str, where: Callable[[Any], bool] | None = None, timeout: float = 10.0) -> Any:
        """Block until ``event`` (matching ``where``) has arrived and return its data; ``TimeoutError`` else.

        Every event received since the socket was created counts (the newest 1000 are kept).
        """

        def found() -> tuple[Any] | None:
            for name, data in self._seen:
                if name == event and (where is None or where(data)):
                    return (data,)
            return None

        with self._cond:
            match = self._cond.wait_for(found, timeout)
        if not match:
            raise TimeoutError(f"no {event!r} event within {timeout}s")
        return match[0]

    # ------------------------------------------------------------------ channels
    def _call(self, event: str, data: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        try:
            ack = self._client.call(event, data, timeout=timeout or self.call_timeout)
        except socketio.exceptions.TimeoutError as exc:
            raise APIConnectionError(f"no answer to {event!r} within {timeout or self.call_timeout}s") from exc
        except socketio.exceptions.BadNamespaceError as exc:
            raise APIConnectionError("the socket is not connected") from exc
        if not isinstance(ack, dict) or not ack.get("success"):
            error = ack.get("error") if isinstance(ack, dict) else None
            raise build_error(error, fallback_message=f"{event} refused")
        return ack

    def subscribe(self, channels: Sequence[str]) -> list[str]:
        """Join ``channels`` (all or none: an unknown name raises :class:`InvalidInputError`)."""
        return list(self._call("subscribe", {"channels": list(channels)})["channels"])

    def unsubscribe(self, channels: Sequence[str]) -> list[str]:
        """Leave ``channels``."""
        return list(self._call("unsubscribe", {"channels": list(channels)})["channels"])

    # ------------------------------------------------------------------ chat
    def chat(
        self,
        messages: Sequence[dict[str, str]],
        model: str = "default",
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        *,
        on_chunk: Callable[[str], None] | None = None,
        timeout: float = 300.0,
        request_id: str | None = None,
    ) -> ChatResult:
        """Run a chat on the server's engine (needs ``write``), calling ``on_chunk(text)`` per chunk.

        Blocks until ``chat_done`` and returns the whole answer; ``chat_error`` (a refusal,
        a cancellation, a failure) raises its :class:`LlamaGPUError`, and no end within
        ``timeout`` seconds cancels the chat and raises ``TimeoutError``.
        """
        request_id = request_id or f"sdk-{uuid.uuid4().hex}"
        options = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed, "stop": stop}
        body: dict[str, Any] = {"request_id": request_id, "model": model, "messages": list(messages)}
        body.update({k: v for k, v in options.items() if v is not None})
        inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        with self._lock:
            self._chats[request_id] = inbox
        try:
            self._call("chat", body, timeout=max(self.call_timeout, 120.0))  # admission may load the model
            chunks: list[str] = []
            deadline = time.monotonic() + timeout
            while True:
                try:
                    kind, data = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    self.cancel_chat(request_id)
                    raise TimeoutError(f"chat {request_id} did not finish within {timeout}s") from None
                if kind == "chat_chunk":
                    chunks.append(data.get("text", ""))
                    if on_chunk is not None:
                        on_chunk(data.get("text", ""))
                elif kind == "chat_done":
                    return ChatResult.from_json(data, chunks)
                else:
                    raise build_error(data.get("error"), request_id=request_id, fallback_message="chat failed")
        finally:
            with self._lock:
                self._chats.pop(request_id, None)

    def cancel_chat(self, request_id: str) -> None:
        """Cancel a running chat of this client (its ``chat`` call raises :class:`RequestCancelledError`)."""
        with contextlib.suppress(LlamaGPUError):  # it finished meanwhile
            self._call("chat_cancel", {"request_id": request_id})

    def _route_chat(self, kind: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        with self._lock:
            inbox = self._chats.get(str(data.get("request_id")))
        if inbox is not None:
            inbox.put((kind, data))
