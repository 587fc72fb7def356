"""The node's publisher key and trust store on disk, under the state directory.

    <state>/keys/publisher.pem   Ed25519 private key, PKCS#8 PEM, mode 0600
    <state>/trust.json           the trust store (canonical JSON)

Both are written atomically under a lock of their own, so concurrent CLI calls
never lose an update.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sovnet.core.signing import PrivateKey
from sovnet.errors import InvalidInputError, LocalStateError, NotFoundError, SovnetError
from sovnet.store.atomicfile import write_atomic
from sovnet.store.lockfile import exclusive_lock
from sovnet.trust.keys import TrustedKey, TrustStore

SELF_TRUST_NAME = "this node"

TrustChange = Callable[[TrustStore], TrustStore]


def any_root_pinned(state_dir: Path) -> bool:
    """Whether a publisher root is pinned here; asked before store/rootfiles.py is
    imported, so that a node without one never pays for tuf's import (~0.1 s)."""
    roots = state_dir / "roots"
    return roots.is_dir() and any(roots.iterdir())


class NodeFiles:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.key_path = state_dir / "keys" / "publisher.pem"
        self.trust_path = state_dir / "trust.json"
        self.lock_path = state_dir / "keys.lock"

    def _ensure_dirs(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.key_path.parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise LocalStateError(f"cannot create {self.state_dir}: {exc.strerror}") from exc

    def load_key(self) -> PrivateKey:
        try:
            data = self.key_path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"this node ({self.state_dir}) has no publisher key",
                hint="create one with `sovnet key gen`",
            ) from None
        except OSError as exc:
            raise LocalStateError(f"cannot read {self.key_path}: {exc.strerror}") from exc
        mode = os.stat(self.key_path).st_mode & 0o777
        if mode & 0o077:
            raise LocalStateError(
                f"{self.key_path} is readable by others (mode {mode:o})",
                hint=f"run `chmod 600 {self.key_path}`",
            )
        try:
            return PrivateKey.from_pem(data)
        except SovnetError as exc:
            raise LocalStateError(f"{self.key_path}: {exc.message}") from exc

    def generate_key(self, *, force: bool = False) -> PrivateKey:
        """Create the publisher key and trust it as this node's own."""
        self._ensure_dirs()
        with exclusive_lock(self.lock_path, what="the key files"):
            if self.key_path.exists() and not force:
                raise InvalidInputError(
                    f"this node already has a publisher key ({self.key_path})",
                    hint="`sovnet key show` prints it; --force replaces it (old signatures stay "
                    "valid, but new ones use the new key)",
                )
            key = PrivateKey.generate()
            write_atomic(self.key_path, key.to_pem(), mode=0o600)
            trust = self._read_trust()
            self._write_trust(
                trust.with_key(TrustedKey(key.public_key.key_id, SELF_TRUST_NAME, key.public_key))
            )
            return key

    def load_trust(self) -> TrustStore:
        """The trusted keys, and the releases of the publisher roots pinned here."""
        trust = self._read_trust()
        if not any_root_pinned(self.state_dir):
            return trust
        from sovnet.store.rootfiles import RootFiles

        return trust.with_releases(RootFiles(self.state_dir).released())

    def update_trust(self, change: TrustChange) -> TrustStore:
        self._ensure_dirs()
        with exclusive_lock(self.lock_path, what="the key files"):
            trust = change(self._read_trust())
            self._write_trust(trust)
            return trust

    def _read_trust(self) -> TrustStore:
        try:
            data = self.trust_path.read_bytes()
        except FileNotFoundError:
            return TrustStore()
        except OSError as exc:
            raise LocalStateError(f"cannot read {self.trust_path}: {exc.strerror}") from exc
        try:
            return TrustStore.from_bytes(data)
        except SovnetError as exc:
            raise LocalStateError(
                f"{self.trust_path} is damaged: {exc.message}",
                hint="restore it from a backup, or remove it and re-add trusted keys",
            ) from exc

    def _write_trust(self, trust: TrustStore) -> None:
        write_atomic(self.trust_path, trust.to_bytes(), mode=0o600)
