"""Write a tiny, deterministic llama-architecture GGUF model for tests and demos.

``python scripts/make_tiny_gguf.py OUT_DIR [--split N] [--seed S]`` writes
``OUT_DIR/sovnet-tiny.gguf`` (or, with ``--split N``, the N shards
``OUT_DIR/sovnet-tiny-00001-of-0000N.gguf`` ...) holding a ~0.5 MB model that
llama.cpp / llama-cpp-python load and generate from on CPU:

* architecture ``llama``: 2 layers, n_embd 64, 4 query heads, 2 KV heads (GQA),
  n_ff 128, context length 256, all tensors F32 (``general.file_type`` 0);
* a self-contained SentencePiece-style (``tokenizer.ggml.model = "llama"``)
  vocabulary of 512 tokens: ``<unk>``, ``<s>``, ``</s>``, the 256 byte-fallback
  tokens ``<0x00>``..``<0xFF>`` (so any UTF-8 text tokenizes), the printable
  ASCII characters, and prefix chains of a few English words;
* a plain Jinja chat template (``tokenizer.chat_template``) so chat completion
  works.

The weights are random (a ``numpy.random.Generator`` seeded with ``--seed``),
so generated text is gibberish; the point is a real model small enough to
commit, hash and ship through sovnet without downloading anything.

The output is deterministic: byte-identical for the same ``--split`` and
``--seed`` (given the same numpy and gguf-py versions). There are no
timestamps, UUIDs, host names or paths in the metadata; the only randomness is
the seeded PCG64 generator, consumed in a fixed tensor order; KV pairs and
tensors are written in a fixed insertion order; and gguf-py pads with zeros.

Splits follow llama.cpp's ``gguf-split`` conventions (gguf-py's ``GGUFWriter``
implements the same layout): the shard names use ``%s-%05d-of-%05d.gguf``;
the first shard carries every metadata KV pair; every shard carries
``split.no`` (uint16, 0-based), ``split.count`` (uint16) and
``split.tensors.count`` (int32, total over all shards). Tensors are spread as
evenly as possible over the shards in their normal order, every shard holding
at least one. ``llama_cpp.Llama(model_path=<first shard>)`` loads all of them.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

import gguf
import numpy as np
import numpy.typing as npt

STEM = "sovnet-tiny"
NAME = "sovnet-tiny"
ARCH = "llama"

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_CTX = 256
HEAD_DIM = N_EMBD // N_HEAD
N_EMBD_KV = HEAD_DIM * N_HEAD_KV
RMS_EPS = 1e-5
ROPE_FREQ_BASE = 10000.0
INIT_STD = 0.02

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2
N_VOCAB = 512

SPACE = "\u2581"  # SentencePiece's word-boundary marker "▁"

WORDS: tuple[str, ...] = (
    "Hello",
    "world",
    "the",
    "and",
    "of",
    "to",
    "in",
    "is",
    "it",
    "a",
    "I",
    "you",
    "that",
    "this",
    "for",
    "with",
    "on",
    "are",
    "be",
    "model",
    "tiny",
    "peer",
    "weight",
    "llama",
    "sovnet",
    "user",
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>\n"
    "{% elif message['role'] == 'user' %}<|user|>\n"
    "{% else %}<|assistant|>\n"
    "{% endif %}"
    "{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Return (tokens, scores, token_types) for the tiny SentencePiece-style vocabulary.

    Ids 0..2 are ``<unk>``/``<s>``/``</s>``, ids 3..258 the byte-fallback tokens, then
    normal pieces: ``▁``, printable ASCII (space excluded: SentencePiece maps it to ``▁``),
    and every prefix of each word in ``WORDS`` with and without a leading ``▁`` (llama.cpp's
    SPM tokenizer only merges adjacent pieces whose concatenation is itself in the vocabulary,
    so whole words need their prefix chains). Unused ``<unusedN>`` slots pad it to ``N_VOCAB``.
    """
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    scores: list[float] = [0.0, 0.0, 0.0]
    types: list[int] = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)

    pieces: dict[str, None] = {SPACE: None}
    for code in range(0x21, 0x7F):
        pieces[chr(code)] = None
    for word in WORDS:
        for form in (SPACE + word, word):
            for end in range(2, len(form) + 1):
                pieces[form[:end]] = None
    for rank, piece in enumerate(pieces):
        if piece in tokens:
            continue
        tokens.append(piece)
        # SentencePiece scores are log-probabilities; merges with higher scores win.
        # Favour longer pieces, break ties by insertion order (all exactly representable).
        scores.append(float(len(piece)) - rank / 1024.0)
        types.append(gguf.TokenType.NORMAL)

    if len(tokens) > N_VOCAB:
        raise AssertionError(f"vocabulary has {len(tokens)} tokens, more than {N_VOCAB}")
    for index in range(N_VOCAB - len(tokens)):
        tokens.append(f"<unused{index}>")
        scores.append(0.0)
        types.append(gguf.TokenType.UNUSED)
    return tokens, scores, types


def build_tensors(seed: int) -> list[tuple[str, npt.NDArray[np.float32]]]:
    """Return the model tensors in file order, drawn from ``default_rng(seed)`` in that order.

    numpy shapes are (rows, cols) = (out_features, in_features); GGUF stores the reverse,
    which is exactly what llama.cpp expects (e.g. ``token_embd`` is ne = [n_embd, n_vocab]).
    """
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> npt.NDArray[np.float32]:
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(INIT_STD)
        return np.ascontiguousarray(values, dtype=np.float32)

    def ones(n: int) -> npt.NDArray[np.float32]:
        return np.ones((n,), dtype=np.float32)

    tensors: list[tuple[str, npt.NDArray[np.float32]]] = [
        ("token_embd.weight", normal(N_VOCAB, N_EMBD)),
    ]
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}."
        tensors += [
            (prefix + "attn_norm.weight", ones(N_EMBD)),
            (prefix + "attn_q.weight", normal(N_EMBD, N_EMBD)),
            (prefix + "attn_k.weight", normal(N_EMBD_KV, N_EMBD)),
            (prefix + "attn_v.weight", normal(N_EMBD_KV, N_EMBD)),
            (prefix + "attn_output.weight", normal(N_EMBD, N_EMBD)),
            (prefix + "ffn_norm.weight", ones(N_EMBD)),
            (prefix + "ffn_gate.weight", normal(N_FF, N_EMBD)),
            (prefix + "ffn_up.weight", normal(N_FF, N_EMBD)),
            (prefix + "ffn_down.weight", normal(N_EMBD, N_FF)),
        ]
    tensors += [
        ("output_norm.weight", ones(N_EMBD)),
        ("output.weight", normal(N_VOCAB, N_EMBD)),
    ]
    return tensors


def _split_starts(n_tensors: int, split: int) -> set[int]:
    """Indices of the tensors that open a new shard: ``split`` near-equal contiguous groups."""
    base, extra = divmod(n_tensors, split)
    starts: set[int] = set()
    index = 0
    for group in range(split):
        starts.add(index)
        index += base + (1 if group < extra else 0)
    starts.discard(0)
    return starts


def _add_metadata(writer: gguf.GGUFWriter) -> None:
    writer.add_name(NAME)
    writer.add_description("Random-weight test model written by sovnet scripts/make_tiny_gguf.py")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_vocab_size(N_VOCAB)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)

    tokens, scores, types = build_vocab()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(True)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_tiny_gguf(out_dir: pathlib.Path, *, split: int = 1, seed: int = 0) -> list[pathlib.Path]:
    """Write the tiny model into ``out_dir`` (created if missing); return the paths written.

    ``split == 1`` writes ``out_dir/sovnet-tiny.gguf``; ``split >= 2`` writes that many
    gguf-split-style shards, first shard first. Existing files of the same names are replaced.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    tensors = build_tensors(seed)
    if not 1 <= split <= len(tensors):
        raise ValueError(f"split must be between 1 and {len(tensors)}, got {split}")

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{STEM}.gguf"

    writer = gguf.GGUFWriter(path=None, arch=ARCH)
    _add_metadata(writer)
    # GGUFWriter opens a new shard when the current one holds >= split_max_tensors tensors;
    # set the limit to 1 just before each tensor that should open a shard, 0 (off) otherwise.
    starts = _split_starts(len(tensors), split)
    for index, (name, array) in enumerate(tensors):
        writer.split_max_tensors = 1 if index in starts else 0
        writer.add_tensor(name, array)
    writer.split_max_tensors = 0
    if len(writer.tensors) != split:
        raise AssertionError(f"planned {split} shards, GGUFWriter made {len(writer.tensors)}")

    paths = [pathlib.Path(p) for p in writer.format_shard_names(path)]
    try:
        writer.write_header_to_file(path=path)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a tiny deterministic llama GGUF model (random weights, tiny vocab).",
    )
    parser.add_argument("out_dir", type=pathlib.Path, metavar="OUT_DIR")
    parser.add_argument(
        "--split",
        type=int,
        default=1,
        metavar="N",
        help="write N gguf-split shards instead of one file (default: 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="weight RNG seed (default: 0)"
    )
    args = parser.parse_args(argv)
    try:
        paths = write_tiny_gguf(args.out_dir, split=args.split, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    for written in paths:
        print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
