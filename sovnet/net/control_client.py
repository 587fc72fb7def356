"""The control plane's client: asks other members of the network (see control.py),
each request bounded in time and size."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.manifest import MAX_MANIFEST_BYTES
from sovnet.core.network import TlsFiles
from sovnet.core.signing import MAX_BUNDLE_BYTES
from sovnet.errors import InvalidCIDError, InvalidInputError
from sovnet.net.control import (
    MAX_JSON_BYTES,
    MAX_LISTED_PEERS,
    MAX_METADATA_BYTES,
    AnnounceReply,
    PeerRequestError,
    RemoteNode,
    client_context,
)

log = logging.getLogger(__name__)


class PeerClient:
    """Asks other nodes, each request bounded in time and size."""

    def __init__(self, tls: TlsFiles, timeout: float) -> None:
        self._context = client_context(tls)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PeerClient:
        self._session = aiohttp.ClientSession(
            # Idle connections are dropped before a peer's server would close them
            # (its control_header_timeout, 10 s by default): a request sent on a
            # connection the server is closing fails, and would count against it.
            connector=aiohttp.TCPConnector(ssl=self._context, limit=64, keepalive_timeout=4.0),
            timeout=self._timeout,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        peer: PeerAddress,
        path: str,
        limit: int,
        body: Mapping[str, object] | None = None,
    ) -> bytes | None:
        """The response body (None on 404); PeerRequestError on anything else."""
        if self._session is None:
            raise RuntimeError("PeerClient used outside 'async with'")
        url = f"https://{peer}{path}"
        try:
            # A peer answers for itself: a redirect would make this node ask any
            # address the peer names (another host, plain HTTP) and take its answer.
            async with self._session.request(
                method, url, json=body, allow_redirects=False
            ) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise PeerRequestError(f"{peer} answered HTTP {response.status}")
                too_large = PeerRequestError(f"{peer} sent more than {limit} bytes")
                if (response.content_length or 0) > limit:
                    raise too_large
                # To the end of the body, or past the limit: read(n) returns what is
                # buffered, which cut manifests over about 64 KiB short.
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    received += len(chunk)
                    if received > limit:
                        raise too_large
                    chunks.append(chunk)
                return b"".join(chunks)
        except TimeoutError as exc:  # before OSError, which it is a kind of
            raise PeerRequestError(f"{peer}: no answer within the timeout") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PeerRequestError(f"{peer}: its certificate is not from this network") from exc
        except aiohttp.ClientSSLError as exc:
            raise PeerRequestError(f"{peer}: TLS failed ({exc})") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: what aiohttp lets through of a peer's malformed answer (a
            # UnicodeError of a host name, for one) is the peer's failure, not ours.
            raise PeerRequestError(f"{peer}: {exc or type(exc).__name__}") from exc

    async def _json(
        self, method: str, peer: PeerAddress, path: str, body: Mapping[str, object] | None = None
    ) -> dict[str, Any] | None:
        data = await self._request(method, peer, path, MAX_JSON_BYTES, body)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:  # nested deeper than Python goes
            raise PeerRequestError(f"{peer} sent malformed JSON") from exc
        if not isinstance(value, dict):
            raise PeerRequestError(f"{peer} sent JSON that is not an object")
        return value

    async def node(self, peer: PeerAddress) -> RemoteNode:
        value = await self._json("GET", peer, "/v1/node")
        try:
            assert value is not None
            return RemoteNode(
                name=str(value["name"])[:64],
                swarm_port=_port(value["swarm_port"]),
                control_port=_port(value["control_port"]),
            )
        except (AssertionError, KeyError, ValueError) as exc:
            raise PeerRequestError(f"{peer} sent a malformed node description") from exc

    async def manifest(self, peer: PeerAddress, cid: CID) -> tuple[bytes, bytes] | None:
        raw = await self._request("GET", peer, f"/v1/models/{cid}/manifest", MAX_MANIFEST_BYTES)
        if raw is None:
            return None
        bundle = await self._request("GET", peer, f"/v1/models/{cid}/signatures", MAX_BUNDLE_BYTES)
        return raw, bundle or b""

    async def announce(
        self, peer: PeerAddress, cid: CID, swarm_port: int, control_port: int
    ) -> AnnounceReply | None:
        value = await self._json(
            "POST",
            peer,
            f"/v1/models/{cid}/announce",
            {"swarm_port": swarm_port, "control_port": control_port},
        )
        if value is None:
            return None
        try:
            members = value["members"]
            if not isinstance(members, list):
                raise ValueError("members")
            return AnnounceReply(
                holder=bool(value["holder"]),
                complete=bool(value["complete"]),
                swarm_port=_port(value["swarm_port"]),
                members=tuple(PeerAddress.parse(str(m)) for m in members[:MAX_LISTED_PEERS]),
            )
        except (KeyError, ValueError, InvalidInputError) as exc:
            raise PeerRequestError(f"{peer} sent a malformed announce reply") from exc

    async def publisher_file(self, peer: PeerAddress, publisher: str, name: str) -> bytes | None:
        return await self._request(
            "GET", peer, f"/v1/publishers/{publisher}/{name}", MAX_METADATA_BYTES
        )

    async def hint(self, peer: PeerAddress, publisher: str, version: int) -> None:
        await self._request("POST", peer, f"/v1/hints/{publisher}", 64, {"version": version})

    async def models(self, peer: PeerAddress) -> list[tuple[CID, bool]]:
        value = await self._json("GET", peer, "/v1/models")
        held: list[tuple[CID, bool]] = []
        for item in (value or {}).get("models", []):
            try:
                held.append((CID.parse(str(item["cid"])), item.get("complete") is True))
            except (InvalidCIDError, KeyError, TypeError):
                continue  # one odd entry from a peer spoils nothing else
        return held

    async def peers(self, peer: PeerAddress) -> list[PeerAddress]:
        value = await self._json("GET", peer, "/v1/peers")
        found: list[PeerAddress] = []
        for item in (value or {}).get("peers", [])[:MAX_LISTED_PEERS]:
            try:
                found.append(PeerAddress.parse(str(item)))
            except InvalidInputError:
                continue
        return found


def _port(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"bad port {value!r}")
    return value
