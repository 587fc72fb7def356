"""The one exception tree of sovnet.

Every error sovnet raises on purpose is a :class:`SovnetError`. Each class has a
stable machine-readable ``code`` and an ``exit_code`` for the CLI; the families
below are documented in README.md and never reuse each other's exit codes, so a
script can tell "the content is tampered" from "you typed it wrong".

    SovnetError                      exit 1   (only as a base; never raised bare)
    ├── InternalError                exit 1   a failure sovnet did not expect: a bug
    ├── NotFoundError                exit 3   a CID, key or model is not here
    ├── InvalidInputError            exit 4   malformed input: CID, name, key, manifest
    │   ├── InvalidCIDError
    │   ├── ManifestFormatError
    │   ├── InvalidKeyError
    │   ├── ConfigError              a daemon setting that cannot be used
    │   └── ModelRejectedError       a model sovnet will not publish
    │       ├── UnsafeFileError      could run code, a symlink, a device, ...
    │       └── MalformedFileError   a GGUF/safetensors/JSON file that does not parse
    ├── IntegrityError               exit 5   bytes differ from what the manifest says
    ├── TrustError                   exit 6   a signature is invalid or nobody trusted signed
    │   └── RevokedError             a release its publisher revoked (an advisory)
    ├── LocalStateError              exit 7   the store or key files cannot be used
    │   └── StoreLockedError
    ├── TransferError                exit 8   peers had the model but the transfer failed
    ├── DaemonError                  exit 9   sovnetd is not running or not reachable
    ├── RunnerError                  exit 10  a verified model cannot be run here
    └── RunnerCrashError             exit 11  llama.cpp crashed running a verified model

Foreign exceptions (OSError, json errors, cryptography's) are wrapped where they
enter, with ``raise ... from exc``, so the cause stays visible in tracebacks.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


class SovnetError(Exception):
    """Base of every deliberate sovnet error: a message and what to do about it."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_json(self) -> dict[str, str | int | None]:
        return {
            "code": self.code,
            "exit_code": self.exit_code,
            "message": self.message,
            "hint": self.hint,
        }

    @classmethod
    def _from_json(cls, message: str, hint: str | None, value: dict[object, object]) -> SovnetError:
        """Rebuild from ``to_json`` (error_from_json): a class with more fields says how."""
        return cls(message, hint=hint)


class InternalError(SovnetError):
    """A failure sovnet did not expect (a bug, or a helper process that died without
    saying why): reported with what is known, and a hint to see the log."""

    code = "internal"
    exit_code = 1


class NotFoundError(SovnetError):
    """Something named by the user (a CID, a key, a model) is not present."""

    code = "not-found"
    exit_code = 3


class InvalidInputError(SovnetError):
    """Input that does not have the required form; nothing was changed."""

    code = "invalid-input"
    exit_code = 4


class InvalidCIDError(InvalidInputError):
    code = "invalid-cid"


class ManifestFormatError(InvalidInputError):
    """Manifest or signature bytes that are not in sovnet's canonical format."""

    code = "invalid-manifest"


class InvalidKeyError(InvalidInputError):
    code = "invalid-key"


class ConfigError(InvalidInputError):
    """A daemon setting (file, environment or flag) that cannot be used."""

    code = "invalid-config"


@dataclass(frozen=True)
class RefusedFile:
    """One file a publish refused: its path in the model, why, and what to do."""

    path: str
    reason: str
    hint: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"path": self.path, "reason": self.reason, "hint": self.hint}


class ModelRejectedError(InvalidInputError):
    """A model directory or file that sovnet refuses to publish; ``refused`` lists
    every refused file when there are any (scan.py names them all at once)."""

    code = "model-rejected"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        refused: tuple[RefusedFile, ...] = (),
        refused_total: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.refused = refused
        # A long list is cut (the message and JSON stay small); the total is kept.
        self.refused_total = len(refused) if refused_total is None else refused_total

    def to_json(self) -> dict[str, object]:  # type: ignore[override]
        out: dict[str, object] = dict(super().to_json())
        if self.refused:
            out["refused"] = [item.to_json() for item in self.refused]
            out["refused_total"] = self.refused_total
        return out

    @classmethod
    def _from_json(cls, message: str, hint: str | None, value: dict[object, object]) -> SovnetError:
        listed = value.get("refused")
        refused = tuple(
            RefusedFile(
                str(item.get("path")),
                str(item.get("reason")),
                None if item.get("hint") is None else str(item.get("hint")),
            )
            for item in (listed if isinstance(listed, list) else [])
            if isinstance(item, dict)
        )
        total = value.get("refused_total")
        return cls(
            message,
            hint=hint,
            refused=refused,
            refused_total=total if isinstance(total, int) and not isinstance(total, bool) else None,
        )


class UnsafeFileError(ModelRejectedError):
    """A file that could execute code when loaded, or is not a regular file."""

    code = "unsafe-file"


class MalformedFileError(ModelRejectedError):
    """A file whose declared format does not parse within sovnet's limits."""

    code = "malformed-file"


class IntegrityError(SovnetError):
    """Bytes on disk or from a peer differ from what a manifest says."""

    code = "integrity"
    exit_code = 5


class TrustError(SovnetError):
    """A signature does not verify, or no trusted publisher signed."""

    code = "not-trusted"
    exit_code = 6


class RevokedError(TrustError):
    """A release its publisher's advisories revoked, which this node's policy refuses
    to run (``--allow-revoked`` overrides it)."""

    code = "revoked"


class LocalStateError(SovnetError):
    """The local store, key or trust files cannot be read or written."""

    code = "local-state"
    exit_code = 7


class StoreLockedError(LocalStateError):
    code = "store-locked"


class TransferError(SovnetError):
    """Peers were found, but the bytes did not arrive (stalled, or only bad data came)."""

    code = "transfer-failed"
    exit_code = 8


class DiskFullError(TransferError):
    """The disk under the store has no room for the bytes a fetch needs."""

    code = "disk-full"


class StoreQuotaError(TransferError):
    """A fetch that would break the store's budget (max_store_bytes, min_disk_free)
    even after garbage collection: refused before it downloads anything."""

    code = "quota"


class FetchCancelledError(TransferError):
    """Another command (``sovnet rm``) stopped the fetch a client was following."""

    code = "cancelled"


class DaemonError(SovnetError):
    """The local daemon is not running, not reachable, or stopped mid-request."""

    code = "daemon"
    exit_code = 9


class RunnerError(SovnetError):
    """A trusted, intact model that llama.cpp cannot run here: it holds no GGUF file
    (or several, or an incomplete split), llama-cpp-python is not installed, or
    llama.cpp failed to load it."""

    code = "cannot-run"
    exit_code = 10


class RunnerCrashError(SovnetError):
    """llama.cpp died of a signal while running a model that passed the gate: a fault
    in llama.cpp or in its build for this CPU, since the model's bytes were verified."""

    code = "runner-crashed"
    exit_code = 11


def unexpected(exc: Exception) -> SovnetError:
    """What an exception nobody raised on purpose means to a user: a full disk is said
    so (every write can meet one: lock files, resume data, the peer book); anything
    else is an internal error, whose traceback belongs in the log."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" ({exc.filename})" if exc.filename else ""
        return LocalStateError(
            f"the disk is full{where}: nothing was changed",
            hint="free some space on it, then run the command again",
        )
    return InternalError(f"internal error: {exc!r}", hint="see sovnetd's log")


def _all_classes() -> list[type[SovnetError]]:
    found: list[type[SovnetError]] = []
    pending: list[type[SovnetError]] = [SovnetError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_json(value: object) -> SovnetError:
    """Rebuild an error that crossed the local API (``to_json``), by its code."""
    if not isinstance(value, dict):
        return DaemonError(f"sovnetd sent a malformed error: {value!r}"[:300])
    code, message, hint = value.get("code"), value.get("message"), value.get("hint")
    known = (c for c in _all_classes() if c is not SovnetError and c.code == code)
    cls = next(known, InternalError)
    return cls._from_json(
        str(message) if message is not None else "unknown error",
        str(hint) if hint is not None else None,
        value,
    )


def quoted(text: str, limit: int = 80) -> str:
    """Untrusted text as an error message may show it: escaped, and cut at ``limit``."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)
