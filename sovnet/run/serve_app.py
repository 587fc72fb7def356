"""What ``sovnet serve`` adds to llama-cpp-python's OpenAI-compatible server.

llama-cpp-python's app (a FastAPI app) answers any model name with its one model, and
echoes the name back: a client asking for "gpt-4o" is told it got it. Here a request
that names another model gets OpenAI's 404 ``model_not_found``; ``GET /v1/models/NAME``
(``models.retrieve``) and ``GET /health`` answer; a chat template that breaks its budget
is an error in OpenAI's shape, not a 500 with a traceback. The port is bound before the
model loads, so one already in use is reported at once, in one line.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from sovnet.errors import RunnerError
from sovnet.run.template_budget import ChatTemplateError

# Requests whose body names a model (OpenAI's and llama-cpp-python's extras alike).
_METHOD_WITH_A_BODY = "POST"
# The most of a request body read here to find its model; the server reads the rest.
_MAX_BODY_BYTES = 64 * 1024 * 1024


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of ``host`` (as uvicorn's own binding does for
    a name); RunnerError in one line when the port is in use or cannot be had."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise RunnerError(
            f"cannot serve on {where}: {exc.strerror}",
            hint="--host takes an address or a name of this machine",
        ) from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # its IPv4 twin, if any, is bound on its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                sock.close()
                # A name with an IPv6 address on a machine without IPv6 (as asyncio's
                # own binding does, bpo-30945): served on its other addresses.
                if family == socket.AF_INET6 and exc.errno == errno.EADDRNOTAVAIL:
                    continue
                raise
            sockets.append(sock)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise _cannot_listen(where, port, exc) from exc
    if not sockets:
        raise _cannot_listen(where, port, OSError(errno.EADDRNOTAVAIL, "no address to listen on"))
    return sockets


def _cannot_listen(where: str, port: int, exc: OSError) -> RunnerError:
    if exc.errno == errno.EADDRINUSE:
        return RunnerError(
            f"cannot serve on {where}: the port is already in use",
            hint=f"another program listens on it (`ss -ltnp 'sport = :{port}'` says which); "
            "choose another with --port",
        )
    if exc.errno == errno.EACCES:
        return RunnerError(
            f"cannot serve on {where}: permission denied",
            hint="ports below 1024 need privileges: choose another with --port",
        )
    return RunnerError(
        f"cannot serve on {where}: {exc.strerror or exc}",
        hint="--host takes an address of this machine",
    )


def _error(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    """An error as OpenAI's API words one (the value of its ``error``)."""
    return {"message": message, "type": kind, "param": param, "code": code}


def model_not_found(name: str, alias: str) -> bytes:
    shown = name if len(name) <= 200 else name[:200] + "..."
    message = f"The model `{shown}` does not exist: this server serves `{alias}`"
    error = _error(message, "invalid_request_error", "model_not_found", "model")
    return json.dumps({"error": error}).encode()


def add_routes(app: Any, alias: str) -> None:
    """``GET /v1/models/NAME``, ``GET /health``, and the model-name check, on ``app``
    (llama-cpp-python's FastAPI app, made but not yet started)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    created = int(time.time())

    async def retrieve_model(request: Request) -> Response:
        name = request.path_params["name"]
        if name != alias:
            return Response(model_not_found(name, alias), 404, media_type="application/json")
        # as llama-cpp-python lists it in /v1/models, with OpenAI's `created`
        model = {"id": alias, "object": "model", "created": created, "owned_by": "me"}
        return JSONResponse({**model, "permissions": []})

    async def health(request: Request) -> Response:
        # The app starts listening once create_app() has loaded the model.
        return JSONResponse({"status": "ok", "model": alias})

    app.add_route("/v1/models/{name:path}", retrieve_model, methods=["GET"])
    app.add_route("/health", health, methods=["GET"])
    app.add_middleware(KnownModelOnly, alias=alias)
    app.add_middleware(TemplateErrorsInStreams)


class TemplateErrorsInStreams:
    """ASGI middleware: a streamed chat completion renders its template after its 200
    has gone out, so a template's error (template_budget.py) ends the stream with an
    event that is OpenAI's error (as OpenAI's own streams do), in one log line, where
    the stream would end empty and the log get a traceback."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False
        last: list[Any] = []  # a response's end, held until the app has returned

        async def holding_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                last.append(message)
                return
            await send(message)

        try:
            await self._app(scope, receive, holding_send)
        except ChatTemplateError as exc:
            answer = template_error(exc.message, refused=exc.kind == "refused")
            print(f"sovnet: {exc.message}", file=sys.stderr)
            if not started:
                await _respond(send, answer.status, answer.body)
                return
            event = b"data: " + answer.body + b"\n\n"
            last[:] = [{"type": "http.response.body", "body": event, "more_body": False}]
        finally:
            for message in last:
                await send(message)


@dataclass(frozen=True)
class ErrorAnswer:
    """An HTTP status and the value of OpenAI's ``error``."""

    status: int
    error: dict[str, Any]

    @property
    def body(self) -> bytes:
        return json.dumps({"error": self.error}).encode()


def template_error(message: str, *, refused: bool) -> ErrorAnswer:
    """A chat template's error (template_budget.py) as OpenAI's API words one: the
    template's refusal is the request's (400), anything else the model's (500)."""
    if refused:
        return ErrorAnswer(400, _error(message, "invalid_request_error", "chat_template_refused"))
    return ErrorAnswer(500, _error(message, "server_error", "chat_template_failed"))


class KnownModelOnly:
    """ASGI middleware: a request whose JSON body names a model other than ``alias``
    gets OpenAI's 404 ``model_not_found``; one that names none is given ``alias`` (the
    server would otherwise answer in the name of the model file's path in the store)."""

    def __init__(self, app: Any, alias: str) -> None:
        self._app = app
        self._alias = alias

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != _METHOD_WITH_A_BODY:
            await self._app(scope, receive, send)
            return
        received: list[Any] = []
        body = b""
        complete = False
        while len(body) <= _MAX_BODY_BYTES:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                complete = True
                break
        value = _json_object(body) if complete else None
        if value is not None:
            name = value.get("model")
            if isinstance(name, str) and name != self._alias:
                await _respond(send, 404, model_not_found(name, self._alias))
                return
            if name is None:
                body = json.dumps({**value, "model": self._alias}).encode()
                received = [{"type": "http.request", "body": body, "more_body": False}]
                scope = {**scope, "headers": _with_length(scope["headers"], len(body))}

        async def replay() -> Any:
            return received.pop(0) if received else await receive()

        await self._app(scope, replay, send)


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The JSON object a body holds; None if it holds none (the server says what is
    wrong with it)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
