"""The Socket.IO channel (Flask-SocketIO, threading mode; WebSocket through simple-websocket).

Protocol, default namespace ``/``:

- connect with ``auth={"token": <API key or login JWT>}``; refused (``connect_error``, data
  ``{code, message, details}``) without a valid one or without ``read``. With
  ``LLAMA_GPU_AUTH=off`` no token is needed (the open-access plugin answers). The server
  then emits ``connected`` ``{user: {kind, id, roles}, channels}`` (the channels it may
  subscribe to); every connection is in the room ``alerts``.
- ``subscribe`` / ``unsubscribe`` ``{channels: [...]}`` → ack ``{success, channels}``; one
  unknown name refuses the whole call (``INVALID_INPUT``, details ``unknown``/``known``), and so
  does a list longer than :data:`MAX_SUBSCRIPTIONS` (details ``limit``). Each channel needs its
  role (``CHANNEL_ROLES``: ``plugin_events`` and ``convert`` need ``admin``, else ``read``;
  ``PERMISSION_DENIED`` otherwise). Each kind of job declares its channel
  (:attr:`llama_gpu.jobs.JobKind.channel`); ``benchmarks`` and ``evaluations`` carry only the
  caller's own jobs (all of them for an admin).

Connections are re-checked every ``LLAMA_GPU_SOCKET_RECHECK_INTERVAL`` seconds: one whose key
was revoked or whose login token expired gets ``session_ended`` {code, message} and is
disconnected. Connect attempts and refused connects are limited per client address
(``LLAMA_GPU_SOCKET_CONNECTS_PER_MINUTE``, ``LLAMA_GPU_SOCKET_FAILURES_PER_MINUTE``); a
connection holds a stream slot of its identity (``LLAMA_GPU_MAX_STREAMS_PER_IDENTITY``), and
every ``/socket.io/`` request one of its address (``LLAMA_GPU_MAX_STREAMS_PER_ADDRESS``) and of
the process (``LLAMA_GPU_MAX_STREAMS``), answered 429 beyond them.
- ``chat`` ``{request_id?, model?, messages, max_tokens?, temperature?, top_p?, seed?, stop?}``
  (needs ``write``) → ack ``{success: true, request_id}``, then to this client only
  ``chat_chunk`` {request_id, text, index}… and ``chat_done`` or ``chat_error``. The request
  is admitted before the ack (refusals are acks, as HTTP answers 4xx before streaming) and
  streamed on a background task. ``chat_cancel`` {request_id} stops it (``chat_error``
  ``REQUEST_CANCELLED``); a disconnect cancels the client's chats.

Every ack of a refusal is ``{success: false, error: {code, message, details}}``; a handler
never lets an exception reach the server. The bus events themselves are emitted by the
``socketio_bridge`` plugin through the server shared as ``kernel.services[SOCKETIO]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from flask import Flask, request
from flask_socketio import SocketIO, join_room, leave_room
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from socketio.exceptions import ConnectionRefusedError as Refused

from ..api.openai_schemas import CHAT_DEFAULT_MAX_TOKENS, MessageSchema, StopField
from ..api.schemas import StrictFloat
from ..jobs import owner_of
from ..kernel.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    LlamaGPUError,
    PermissionDenied,
    RateLimitExceeded,
    RequestCancelled,
)
from ..kernel.inference import InferenceStream
from ..kernel.kernel import Kernel
from ..kernel.streams import AttemptCounter, StreamLease, StreamLimiter
from ..kernel.types import Credentials, Identity, InferenceRequest, new_id, utc_iso
from ..plugins.monitoring import CHANNEL_ROLES, CHANNELS, OWNER_CHANNELS, SOCKETIO, owner_room

log = logging.getLogger(__name__)

#: The endpoint name socket requests carry (logs, metrics).
ENDPOINT = "socketio"
#: The room every connection joins at once.
ALERTS_ROOM = "alerts"
#: Most channel names one ``subscribe``/``unsubscribe`` call may list (and rooms a connection may join).
MAX_SUBSCRIPTIONS = 32
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_INTERNAL = {"code": "INTERNAL_ERROR", "message": "internal server error; see the server log", "details": {}}


class ChatSchema(Schema):
    """The ``chat`` event's data (fields and ranges as ``/v1/chat/completions``; unknown ones ignored)."""

    class Meta:
        """Unknown fields are ignored, as ``/v1/chat/completions`` ignores them."""

        unknown = EXCLUDE

    request_id = fields.String(
        validate=validate.Regexp(_REQUEST_ID, error="request_id must be 1 to 128 letters, digits or ._:-")
    )
    model = fields.String(load_default="default", validate=validate.Length(1, 200))
    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1, max=1000))
    max_tokens = fields.Integer(
        strict=True, load_default=CHAT_DEFAULT_MAX_TOKENS, validate=validate.Range(1, 1_000_000)
    )
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 2.0))
    top_p = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 1.0, min_inclusive=False))
    seed = fields.Integer(strict=True, allow_none=True, validate=validate.Range(-(2**63), 2**63 - 1))
    stop = StopField(load_default=list)


@dataclasses.dataclass
class _Chat:
    request_id: str
    stream: InferenceStream
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: Whether the client is told of a cancellation (not when it went away).
    notify: bool = True

    def cancel(self, notify: bool = True) -> None:
        self.notify = notify
        self.cancelled.set()
        self.stream.job.cancel()  # wakes the reader: it gets REQUEST_CANCELLED at once


@dataclasses.dataclass
class _Session:
    identity: Identity
    token: str | None
    remote_addr: str | None
    lease: StreamLease | None = None
    chats: dict[str, _Chat] = dataclasses.field(default_factory=dict)
    rooms: set[str] = dataclasses.field(default_factory=set)


def _error(exc: LlamaGPUError) -> dict[str, Any]:
    return {"success": False, "error": exc.to_dict()}


def _single_object(args: tuple[Any, ...], event: str) -> dict[str, Any]:
    if len(args) != 1 or not isinstance(args[0], dict):
        raise InvalidInput(f"{event} expects one JSON object", details={"event": event})
    return cast(dict[str, Any], args[0])


def _refuse(exc: LlamaGPUError) -> Refused:
    return Refused(exc.message, exc.to_dict())


class SocketChannel:
    """The handlers of one Socket.IO server, bound to a kernel."""

    def __init__(self, socketio: SocketIO, kernel: Kernel, streams: StreamLimiter | None = None) -> None:
        self.socketio = socketio
        self.kernel = kernel
        self.streams = streams
        settings = kernel.settings
        self.connects = AttemptCounter(settings.socket_connects_per_minute, "Socket.IO connect attempts")
        self.failures = AttemptCounter(settings.socket_failures_per_minute, "refused Socket.IO connects")
        self.recheck_interval = settings.socket_recheck_interval
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._rechecking = False

    # ------------------------------------------------------------------ wiring
    def register(self) -> None:
        """Attach the handlers to the server."""
        on: Callable[..., Any] = self.socketio.on
        on("connect")(self.on_connect)
        on("disconnect")(self.on_disconnect)
        for name, handler in (
            ("subscribe", self.on_subscribe),
            ("unsubscribe", self.on_unsubscribe),
            ("chat", self.on_chat),
            ("chat_cancel", self.on_chat_cancel),
        ):
            on(name)(self._guarded(name, handler))
        on("*")(self.on_unknown)
        self.socketio.on_error_default(self.on_error)

    def _guarded(self, name: str, handler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def guarded(*args: Any) -> dict[str, Any]:
            try:
                return handler(*args)
            except LlamaGPUError as exc:
                return _error(exc)
            except Exception:
                log.exception("socket event %s failed", name)
                return {"success": False, "error": dict(_INTERNAL)}

        guarded.__name__ = f"on_{name}"
        return guarded

    def on_error(self, exc: BaseException) -> dict[str, Any]:
        """Last resort: an exception that escaped a handler becomes an error ack."""
        log.error("socket handler failed: %s: %s", type(exc).__name__, exc)
        return {"success": False, "error": dict(_INTERNAL)}

    def on_unknown(self, event: str, *_args: Any) -> dict[str, Any]:
        """An event this server does not know: refused in the ack."""
        known = ["subscribe", "unsubscribe", "chat", "chat_cancel"]
        error = InvalidInput(f"unknown event {event!r}", details={"event": event, "known": known})
        return _error(error)

    def _session(self) -> _Session:
        with self._lock:
            session = self._sessions.get(request.sid)  # type: ignore[attr-defined]
        if session is None:  # pragma: no cover - events only come from connected clients
            raise AuthenticationFailed("not connected")
        return session

    # ------------------------------------------------------------------ connection
    def on_connect(self, auth: Any = None) -> None:
        """Authenticate with ``auth.token``; join ``alerts``; emit ``connected``."""
        address = request.remote_addr or "unknown"
        lease: StreamLease | None = None
        try:
            self.failures.check(address)
            self.connects.check(address)
            self.connects.add(address)
            token = auth.get("token") if isinstance(auth, dict) else None
            try:
                if token is not None and (not isinstance(token, str) or len(token) > 4096):
                    raise AuthenticationFailed("auth.token must be a string", details={"field": "auth.token"})
                credentials = Credentials(bearer_token=token or None, remote_addr=request.remote_addr)
                identity = self.kernel.authenticate(credentials)
                if identity is None:
                    raise AuthenticationFailed(
                        "authentication required: connect with auth={token: <API key or login token>}"
                    )
                if not self.kernel.check_permission(identity, "read"):
                    raise PermissionDenied("'read' permission required", details={"permission": "read"})
            except (AuthenticationFailed, PermissionDenied):
                self.failures.add(address)
                raise
            if self.streams is not None:
                lease = self.streams.acquire(f"{identity.kind}:{identity.id}", None, count_total=False)
        except LlamaGPUError as exc:
            raise _refuse(exc) from None
        except Exception as exc:
            log.exception("socket authentication failed")
            raise Refused(_INTERNAL["message"], dict(_INTERNAL)) from exc
        sid: str = request.sid  # type: ignore[attr-defined]
        with self._lock:
            self._sessions[sid] = _Session(identity, token or None, request.remote_addr, lease)
            start = not self._rechecking and token is not None
            self._rechecking = self._rechecking or start
        if start:
            self.socketio.start_background_task(self._recheck_loop)
        join_room(ALERTS_ROOM)
        user = {"kind": identity.kind, "id": identity.id, "roles": sorted(identity.roles)}
        allowed = [c for c in CHANNELS if self.kernel.check_permission(identity, CHANNEL_ROLES.get(c, "read"), c)]
        self.socketio.emit("connected", {"user": user, "channels": allowed}, to=sid)

    def on_disconnect(self, *_reason: Any) -> None:
        """Forget the client, give back its stream slot and cancel its running chats."""
        with self._lock:
            session = self._sessions.pop(request.sid, None)  # type: ignore[attr-defined]
            chats = list(session.chats.values()) if session is not None else []
        if session is not None and session.lease is not None:
            session.lease.release()
        for chat in chats:
            chat.cancel(notify=False)

    # ------------------------------------------------------------------ re-checks
    def _still_valid(self, session: _Session) -> LlamaGPUError | None:
        """Why ``session``'s credentials no longer hold (revoked, expired, no ``read``), or ``None``."""
        try:
            credentials = Credentials(bearer_token=session.token, remote_addr=session.remote_addr)
            identity = self.kernel.authenticate(credentials)
            if identity is None:
                return AuthenticationFailed("the connection's key was revoked or its login token expired")
            if not self.kernel.check_permission(identity, "read"):
                return PermissionDenied("'read' permission required", details={"permission": "read"})
        except LlamaGPUError as exc:
            return exc
        except Exception:  # fail closed: a check that cannot run ends the connection
            log.exception("socket credential re-check failed")
            return AuthenticationFailed("the connection's credentials could not be checked again")
        return None

    def recheck(self) -> list[str]:
        """Check every token-authenticated connection again; disconnect the ones no longer valid (their sids)."""
        with self._lock:
            sessions = [(sid, s) for sid, s in self._sessions.items() if s.token is not None]
        ended = []
        for sid, session in sessions:
            error = self._still_valid(session)
            if error is None:
                continue
            ended.append(sid)
            self.socketio.emit("session_ended", error.to_dict(), to=sid)
            self.socketio.server.disconnect(sid)
        return ended

    def _recheck_loop(self) -> None:
        """Re-check connections every ``recheck_interval`` seconds while any has a token."""
        while True:
            time.sleep(self.recheck_interval)
            with self._lock:
                if not any(s.token is not None for s in self._sessions.values()):
                    self._rechecking = False
                    return
            try:
                self.recheck()
            except Exception:  # the next round tries again
                log.exception("socket re-check failed")

    # ------------------------------------------------------------------ channels
    def _channels(self, args: tuple[Any, ...], event: str) -> list[str]:
        data = _single_object(args, event)
        channels = data.get("channels")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise InvalidInput(
                "channels must be a non-empty list of channel names",
                details={"field": "channels", "known": list(CHANNELS)},
            )
        if len(channels) > MAX_SUBSCRIPTIONS:
            raise InvalidInput(
                f"at most {MAX_SUBSCRIPTIONS} channels per call",
                details={"field": "channels", "limit": MAX_SUBSCRIPTIONS, "given": len(channels)},
            )
        unknown = sorted({c for c in channels if c not in CHANNELS})
        if unknown:
            raise InvalidInput(
                f"unknown channel(s): {', '.join(unknown)}", details={"unknown": unknown, "known": list(CHANNELS)}
            )
        return list(dict.fromkeys(channels))

    def _room(self, identity: Identity, channel: str) -> str:
        """The room ``identity`` joins for ``channel`` (an owner channel: its own, or every owner's for admins)."""
        if channel not in OWNER_CHANNELS:
            return channel
        if self.kernel.check_permission(identity, "admin"):
            return owner_room(channel, "*")
        return owner_room(channel, owner_of(identity))

    def on_subscribe(self, *args: Any) -> dict[str, Any]:
        """Join the rooms of ``channels`` (all or none; each needs its channel's role)."""
        session = self._session()
        channels = self._channels(args, "subscribe")
        for channel in channels:
            role = CHANNEL_ROLES.get(channel, "read")
            if not self.kernel.check_permission(session.identity, role, channel):
                raise PermissionDenied(
                    f"channel {channel!r} needs the {role!r} role",
                    details={"channel": channel, "permission": role},
                )
        rooms = [self._room(session.identity, channel) for channel in channels]
        with self._lock:
            if len(session.rooms | set(rooms)) > MAX_SUBSCRIPTIONS:
                raise InvalidInput(
                    f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection",
                    details={"field": "channels", "limit": MAX_SUBSCRIPTIONS},
                )
            session.rooms.update(rooms)
        for room in rooms:
            join_room(room)
        return {"success": True, "channels": channels}

    def on_unsubscribe(self, *args: Any) -> dict[str, Any]:
        """Leave the rooms of ``channels`` (all or none)."""
        session = self._session()
        channels = self._channels(args, "unsubscribe")
        rooms = [self._room(session.identity, channel) for channel in channels]
        with self._lock:
            session.rooms.difference_update(rooms)
        for room in rooms:
            leave_room(room)
        return {"success": True, "channels": channels}

    # ------------------------------------------------------------------ chat
    def on_chat(self, *args: Any) -> dict[str, Any]:
        """Admit a chat request and stream it on a background task."""
        session = self._session()
        sid: str = request.sid  # type: ignore[attr-defined]
        kernel = self.kernel
        identity = session.identity
        if session.token is not None:  # a key revoked (or a token expired) since connecting chats no more
            identity = kernel.authenticate(Credentials(bearer_token=session.token, remote_addr=session.remote_addr))
        kernel.require(identity, "write", "chat")
        limit = kernel.rate_limit(identity, "stream", session.remote_addr or "unknown")
        if limit is not None and not limit.allowed:
            raise RateLimitExceeded(
                f"rate limit exceeded: {limit.limit} stream requests per hour; retry in {limit.retry_after}s",
                details={"limit": limit.limit, "group": "stream", "retry_after": limit.retry_after},
            )
        try:
            body = ChatSchema().load(_single_object(args, "chat"))
        except ValidationError as exc:
            raise InvalidInput("chat validation failed", details={"errors": exc.messages}) from None
        request_id: str = body.get("request_id") or new_id("req")
        with self._lock:
            if request_id in session.chats:
                raise Conflict(f"chat {request_id!r} is already running", details={"request_id": request_id})
        inference = InferenceRequest(
            prompt="",
            messages=[{"role": m["role"], "content": m["content"]} for m in body["messages"]],
            model=body["model"],
            max_tokens=body["max_tokens"],
            temperature=body["temperature"],
            top_p=body["top_p"],
            stop=body["stop"],
            seed=body.get("seed"),
            stream=True,
            id=request_id,
            identity=identity,
            endpoint=ENDPOINT,
            metadata={"input_field": "messages"},
        )
        stream = kernel.generate(inference)  # refusals (unknown model, no chat template, draining) raise here
        chat = _Chat(request_id, stream)
        with self._lock:
            live = self._sessions.get(sid) is session and request_id not in session.chats
            if live:
                session.chats[request_id] = chat
        if not live:  # the client left (or reused the id) while the model was being acquired
            stream.close()
            raise Conflict(f"chat {request_id!r} is already running", details={"request_id": request_id})
        self.socketio.start_background_task(self._stream_chat, sid, session, chat, threading.current_thread())
        return {"success": True, "request_id": request_id}

    def on_chat_cancel(self, *args: Any) -> dict[str, Any]:
        """Cancel one of this client's running chats."""
        session = self._session()
        request_id = _single_object(args, "chat_cancel").get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInput("request_id must be a non-empty string", details={"field": "request_id"})
        with self._lock:
            chat = session.chats.get(request_id)
        if chat is None:
            raise InvalidInput(f"no running chat {request_id!r}", details={"request_id": request_id})
        chat.cancel()
        return {"success": True, "request_id": request_id}

    def _stream_chat(self, sid: str, session: _Session, chat: _Chat, handler: threading.Thread) -> None:
        """Emit the chat's chunks, then ``chat_done`` or ``chat_error``, to ``sid`` only."""
        if handler is not threading.main_thread():
            handler.join(timeout=2.0)  # the handler's thread sends the ack: let it go first
        emit = self.socketio.emit
        stream, request_id = chat.stream, chat.request_id
        try:
            for index, chunk in enumerate(stream):
                if chat.cancelled.is_set():
                    raise RequestCancelled("the request was cancelled", details={"request_id": request_id})
                emit("chat_chunk", {"request_id": request_id, "text": chunk.text, "index": index}, to=sid)
            if chat.cancelled.is_set():
                raise RequestCancelled("the request was cancelled", details={"request_id": request_id})
            response = stream.response
            assert response is not None
            usage = {
                "prompt_tokens": response.prompt_tokens,
                "completion_tokens": response.completion_tokens,
                "total_tokens": response.prompt_tokens + response.completion_tokens,
            }
            done = {
                "request_id": request_id,
                "model": response.model,
                "text": response.text,
                "finish_reason": response.finish_reason,
                "usage": usage,
                "inference_time": round(response.inference_time, 6),
            }
            emit("chat_done", done, to=sid)
        except LlamaGPUError as exc:
            if chat.notify:
                emit("chat_error", {"request_id": request_id, "error": exc.to_dict()}, to=sid)
        except Exception:
            log.exception("socket chat %s failed", request_id)
            if chat.notify:
                emit("chat_error", {"request_id": request_id, "error": dict(_INTERNAL)}, to=sid)
        finally:
            stream.close()  # cancels an unfinished stream; a finished one is left as it is
            with self._lock:
                if session.chats.get(request_id) is chat:
                    del session.chats[request_id]


def close_after_websocket(wsgi_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Close the TCP connection of a finished WebSocket under Werkzeug's server.

    Werkzeug treats an upgraded HTTP/1.1 connection as keep-alive: when the WebSocket ends
    it reads the client's last frames as a new request (logging "Bad request syntax") and
    the client waits for its closing handshake until it times out (3 s in websocket-client).
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("werkzeug.socket")
        if sock is None or environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return wsgi_app(environ, start_response)
        try:
            return wsgi_app(environ, start_response)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    return app


def limit_socket_requests(
    wsgi_app: Callable[..., Iterable[bytes]], streams: StreamLimiter
) -> Callable[..., Iterable[bytes]]:
    """Hold a stream slot of the client address (and of the process) for every ``/socket.io/`` request.

    A WebSocket holds its request (and a gunicorn thread) for its whole life, a long-poll for
    up to the ping interval, before any credentials are checked: beyond the caps the request
    is answered 429 with ``Retry-After`` and the error envelope. Wrapped inside ProxyFix, so
    ``REMOTE_ADDR`` is the client as the trusted proxies vouch for it.
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith("/socket.io"):
            return wsgi_app(environ, start_response)
        try:
            lease = streams.acquire(None, environ.get("REMOTE_ADDR") or "unknown")
        except RateLimitExceeded as exc:
            body = {"success": False, "error": exc.to_dict(), "request_id": None, "timestamp": utc_iso()}
            payload = json.dumps(body).encode()
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("Retry-After", str(exc.retry_after)),
            ]
            start_response("429 Too Many Requests", headers)
            return [payload]
        try:
            return list(wsgi_app(environ, start_response))  # the whole request, body included, under the slot
        finally:
            lease.release()

    return app


def init_socketio(app: Flask, kernel: Kernel) -> SocketIO:
    """Attach Flask-SocketIO to ``app``; share it as ``kernel.services[SOCKETIO]``.

    Same-origin only (Flask-SocketIO's default). With ``LLAMA_GPU_REDIS_URL`` set, emits go
    through Redis so that every worker process reaches its own clients.
    """
    options: dict[str, Any] = {"async_mode": "threading", "logger": False, "engineio_logger": False}
    if kernel.settings.redis_url:
        options["message_queue"] = kernel.settings.redis_url
    socketio = SocketIO(app, **options)
    app.wsgi_app = close_after_websocket(app.wsgi_app)  # type: ignore[method-assign]
    streams = cast("StreamLimiter | None", app.extensions.get("llama_gpu.streams"))
    if streams is not None:
        app.wsgi_app = limit_socket_requests(app.wsgi_app, streams)  # type: ignore[method-assign]
    channel = SocketChannel(socketio, kernel, streams)
    channel.register()
    app.extensions["llama_gpu.socket"] = channel
    kernel.services[SOCKETIO] = socketio
    return socketio
