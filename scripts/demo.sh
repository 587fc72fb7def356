#!/usr/bin/env bash
# sovnet's main job on an embedded default, start to finish, on this machine:
# generate a small GGUF model, create a publisher key, publish the model (validate,
# hash, sign, store), list and show it, verify it, then show that one flipped byte
# is caught and named. Everything happens in a temporary directory, removed at exit.
#
# The swarm (fetching by CID from another node) and running the model with
# llama.cpp join this same command as they are built.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

WORK=$(mktemp -d -t sovnet-demo.XXXXXX)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
export SOVNET_STATE_DIR="$WORK/node-a"
sovnet() { .venv/bin/sovnet "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Generate a small model (a real llama-architecture GGUF and its config)"
.venv/bin/python scripts/make_tiny_gguf.py "$WORK/model" >/dev/null
cat > "$WORK/model/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
JSON
ls -l "$WORK/model"

step "Create this node's publisher key"
sovnet key gen

step "Publish: validate headers, hash (BLAKE3 + BitTorrent v2 roots), sign, store"
CID=$(sovnet publish "$WORK/model" --name sovnet/tiny --version 1.0 --license apache-2.0)
echo "CID: $CID"

step "The store"
sovnet ls
sovnet show "$CID"

step "Verify: re-hash every file, check the signature against trusted keys"
sovnet verify "$CID"

step "Tamper with one byte of a stored file: verify must name it and fail"
BLOB=$(sovnet show "$CID" --json | .venv/bin/python -c \
    'import json,sys; m=json.load(sys.stdin)["manifest"]; print([f["blake3"] for f in m["files"] if f["path"].endswith(".gguf")][0])')
BLOB_PATH="$SOVNET_STATE_DIR/blobs/$BLOB"
chmod u+w "$BLOB_PATH"
printf '\xff' | dd of="$BLOB_PATH" bs=1 seek=4096 conv=notrunc status=none
if sovnet verify "$CID"; then
    echo "demo: FAILED: tampering was not detected" >&2
    exit 1
else
    echo "(exit $?: the tampered file was caught, as it must be)"
fi

step "Done"
echo "Published, verified and caught tampering of $CID. The temporary store is removed now."
