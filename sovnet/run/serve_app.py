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
import re
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from sovnet.errors import RunnerError
from sovnet.run.template_budget import ChatTemplateError

# Requests whose body names a model (OpenAI's and llama-cpp-python's extras alike).
_METHOD_WITH_A_BODY = "POST"
# The most of a request body read (a prompt longer than any context is still
# far below it); a longer one is refused unparsed.
_MAX_BODY_BYTES = 64 * 1024 * 1024
# The deepest nesting of arrays and objects a request may have: OpenAI's requests
# nest a handful deep, a JSON schema of a response format a few dozen at most.
_MAX_DEPTH = 64
_MAX_FIELDS_SAID = 5  # of a request's invalid fields, those an error names


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """The addresses ``host`` names, to listen on; RunnerError in one line if none (an
    address such as 256.1.1.1 is looked up as a name, and not found). The CLI calls it
    before it warns about what listening there exposes."""
    try:
        return socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise RunnerError(
            f"cannot serve on {_where(host, port)}: {exc.strerror}",
            hint="--host takes an address or a name of this machine",
        ) from exc


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of ``host`` (as uvicorn's own binding does for
    a name); RunnerError in one line when the port is in use or cannot be had."""
    where = _where(host, port)
    infos = resolve(host, port)
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


def validation_error(errors: Any) -> ErrorAnswer:
    """pydantic's errors of a request as OpenAI's 400: each field and what is wrong
    with it, never the value given (it may be long) nor where the check is made."""
    fields: list[str] = []
    said: list[str] = []
    for error in list(errors)[:_MAX_FIELDS_SAID]:
        where = [str(part) for part in error.get("loc", ()) if part != "body"]
        field = ".".join(where) or "body"
        fields.append(field)
        said.append(f"{field}: {error.get('msg', 'invalid')}")
    message = "; ".join(said) or "the request is not valid"
    param = fields[0] if fields else None
    return ErrorAnswer(400, _error(message, "invalid_request_error", "invalid_value", param))


class KnownModelOnly:
    """ASGI middleware: a request whose JSON body names a model other than ``alias``
    gets OpenAI's 404 ``model_not_found``; one that names none is given ``alias`` (the
    server would otherwise answer in the name of the model file's path in the store).

    The body is checked here before the server parses it: one over ``_MAX_BODY_BYTES``
    is a 413, one that is not a JSON object (truncated, not UTF-8, nested past
    ``_MAX_DEPTH``) a 400, each in OpenAI's shape and one log line, where the server
    would answer 500 with a traceback (or a RecursionError) in its log."""

    def __init__(self, app: Any, alias: str) -> None:
        self._app = app
        self._alias = alias

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != _METHOD_WITH_A_BODY:
            await self._app(scope, receive, send)
            return
        received: list[Any] = []
        body = b""
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":  # the client left: the app sees it
                await self._app(scope, _replaying(received, receive), send)
                return
            body += message.get("body", b"")
            if len(body) > _MAX_BODY_BYTES:
                limit = f"{_MAX_BODY_BYTES // (1024 * 1024)} MiB"
                await _refuse(send, scope, 413, f"the body is over {limit}", "request_too_large")
                return
            if not message.get("more_body", False):
                break
        value = _json_object(body)
        if isinstance(value, str):
            await _refuse(send, scope, 400, value, "invalid_json")
            return
        name = value.get("model")
        if isinstance(name, str) and name != self._alias:
            await _respond(send, 404, model_not_found(name, self._alias))
            return
        if name is None:
            body = json.dumps({**value, "model": self._alias}).encode()
            received = [{"type": "http.request", "body": body, "more_body": False}]
            scope = {**scope, "headers": _with_length(scope["headers"], len(body))}
        await self._app(scope, _replaying(received, receive), send)


def _replaying(received: list[Any], receive: Any) -> Any:
    async def replay() -> Any:
        return received.pop(0) if received else await receive()

    return replay


async def _refuse(send: Any, scope: Any, status: int, message: str, code: str) -> None:
    """A request refused before the server saw it: OpenAI's error, one log line."""
    print(f"sovnet: invalid request to {scope['path']}: {message}", file=sys.stderr)
    error = _error(message, "invalid_request_error", code)
    await _respond(send, status, json.dumps({"error": error}).encode())


# A JSON string (possessive: a string is scanned once), a quote that opens none, or
# a bracket: all a nesting count needs to see, in one linear pass.
_JSON_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*+"|"|[\[\]{}]', re.DOTALL)


def _too_deep(body: bytes) -> bool:
    """Whether ``body`` nests arrays and objects deeper than ``_MAX_DEPTH`` (an
    unterminated string ends the count: the parser refuses the body anyway)."""
    depth = 0
    for match in _JSON_NESTING.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b'"':
            return False
    return False


def _json_object(body: bytes) -> dict[str, Any] | str:
    """The JSON object a body holds, or what is wrong with it."""
    if _too_deep(body):
        return f"the body nests arrays or objects more than {_MAX_DEPTH} deep"
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    except ValueError as exc:
        return f"the body is not JSON ({exc})"
    except RecursionError:  # not reached below _MAX_DEPTH; a bound all the same
        return f"the body nests arrays or objects more than {_MAX_DEPTH} deep"
    if not isinstance(value, dict):
        return "the body is not a JSON object"
    return value


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
