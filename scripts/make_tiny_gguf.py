"""Write a tiny, deterministic llama-architecture GGUF model for tests and demos.

``python scripts/make_tiny_gguf.py OUT_DIR [--split N] [--seed S] [--quant Q]`` writes
``OUT_DIR/sovnet-tiny.gguf`` (or, with ``--split N``, the N shards
``OUT_DIR/sovnet-tiny-00001-of-0000N.gguf`` ...) holding a ~0.5 MB model that
llama.cpp / llama-cpp-python load and generate from on CPU:

* architecture ``llama``: 2 layers, n_embd 64, 4 query heads, 2 KV heads (GQA),
  n_ff 128, context length 256, all tensors F32 (``general.file_type`` 0);
* with ``--quant Q8_0``, ``Q4_0`` or ``Q4_K``, its weight matrices are quantised
  instead (norms stay F32) and the file is ``sovnet-tiny-q8_0.gguf`` etc., so that
  llama.cpp takes its quantised kernels, as it does for real models (an F32 model
  never reaches them: llama.cpp's AMX kernels, say, only run on quantised weights).
  Q8_0 and Q4_0 are gguf-py's own quantisers; gguf-py only reads K-quants, so
  Q4_K is packed here (:func:`quantize_q4_k`, checked against gguf-py's reader).
  A K-quant block holds 256 values, so the Q4_K model is wider: n_embd 256, n_ff
  512 (about 1 MB);
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
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

STEM = "sovnet-tiny"
NAME = "sovnet-tiny"
ARCH = "llama"

N_LAYER = 2
N_CTX = 256
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


@dataclass(frozen=True)
class Geometry:
    """The widths of the model; every row length is a multiple of its quant's block."""

    n_embd: int
    n_ff: int
    n_head: int = 4
    n_head_kv: int = 2

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_embd_kv(self) -> int:
        return self.head_dim * self.n_head_kv


SMALL = Geometry(n_embd=64, n_ff=128)
WIDE = Geometry(n_embd=256, n_ff=512)  # rows of 256: one K-quant block
# --quant: (tensor type of the weight matrices, general.file_type, geometry)
QUANTS: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType, Geometry]] = {
    "F32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32, SMALL),
    "Q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0, SMALL),
    "Q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0, SMALL),
    "Q4_K": (gguf.GGMLQuantizationType.Q4_K, gguf.LlamaFileType.MOSTLY_Q4_K_S, WIDE),
}
QK_K = 256  # values in a K-quant super-block
Q4_K_BLOCK_BYTES = 2 + 2 + 12 + QK_K // 2


def quantize_q4_k(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """ggml's Q4_K encoding of ``values`` (rows of a multiple of 256): uint8 rows.

    Each super-block of 256 values holds eight sub-blocks of 32, each with a 6-bit
    scale and a 6-bit min, themselves scaled by the block's f16 ``d`` and ``dmin``:
    value = d * scale * q - dmin * min, q in 0..15. A plain min/max fit per
    sub-block (llama.cpp searches for a better one; a test model needs none).
    """
    rows, width = values.shape
    if width % QK_K:
        raise ValueError(f"Q4_K rows must be a multiple of {QK_K} values, got {width}")
    blocks = values.astype(np.float32).reshape(-1, 8, 32)
    low = np.minimum(blocks.min(axis=2), 0.0)  # the encoding's min is subtracted: <= 0
    step = (blocks.max(axis=2) - low) / 15.0
    d = (step.max(axis=1) / 63.0).astype(np.float16)
    dmin = (np.abs(low).max(axis=1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.where(d32 > 0, np.rint(step / d32), 0).clip(0, 63).astype(np.uint8)
        mins = np.where(dmin32 > 0, np.rint(-low / dmin32), 0).clip(0, 63).astype(np.uint8)
        sub_step = (d32 * scales)[:, :, None]
        sub_min = (dmin32 * mins)[:, :, None]
        quants = np.where(sub_step > 0, np.rint((blocks + sub_min) / sub_step), 0)
    quants = quants.clip(0, 15).astype(np.uint8).reshape(-1, 4, 2, 32)
    # Sub-blocks 2k and 2k+1 share 32 bytes: the low nibbles hold 2k, the high 2k+1.
    packed_quants = (quants[:, :, 0, :] | (quants[:, :, 1, :] << 4)).reshape(-1, QK_K // 2)
    # Scales and mins: 6 bits each, the low four sub-blocks' whole in bytes 0-7 (top two
    # bits borrowed by the high four), the high four's low nibbles in bytes 8-11.
    packed_scales = np.empty((blocks.shape[0], 12), dtype=np.uint8)
    packed_scales[:, 0:4] = scales[:, 0:4] | ((scales[:, 4:8] >> 4) << 6)
    packed_scales[:, 4:8] = mins[:, 0:4] | ((mins[:, 4:8] >> 4) << 6)
    packed_scales[:, 8:12] = (scales[:, 4:8] & 0xF) | ((mins[:, 4:8] & 0xF) << 4)
    out = np.concatenate(
        [
            d.view(np.uint8).reshape(-1, 2),
            dmin.view(np.uint8).reshape(-1, 2),
            packed_scales,
            packed_quants,
        ],
        axis=1,
    )
    return np.ascontiguousarray(out.reshape(rows, -1))


def encode(
    array: npt.NDArray[np.float32], qtype: gguf.GGMLQuantizationType
) -> tuple[npt.NDArray[Any], gguf.GGMLQuantizationType | None]:
    """``array`` as GGUFWriter.add_tensor takes it for type ``qtype``: (data, raw_dtype).
    Vectors (the norms) stay F32, as llama.cpp's quantisers leave them."""
    if qtype == gguf.GGMLQuantizationType.F32 or array.ndim == 1:
        return array, None
    if qtype == gguf.GGMLQuantizationType.Q4_K:
        return quantize_q4_k(array), qtype
    encoded: npt.NDArray[Any] = gguf.quants.quantize(array, qtype)
    return encoded, qtype


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


def build_tensors(seed: int, shape: Geometry = SMALL) -> list[tuple[str, npt.NDArray[np.float32]]]:
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
        ("token_embd.weight", normal(N_VOCAB, shape.n_embd)),
    ]
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}."
        tensors += [
            (prefix + "attn_norm.weight", ones(shape.n_embd)),
            (prefix + "attn_q.weight", normal(shape.n_embd, shape.n_embd)),
            (prefix + "attn_k.weight", normal(shape.n_embd_kv, shape.n_embd)),
            (prefix + "attn_v.weight", normal(shape.n_embd_kv, shape.n_embd)),
            (prefix + "attn_output.weight", normal(shape.n_embd, shape.n_embd)),
            (prefix + "ffn_norm.weight", ones(shape.n_embd)),
            (prefix + "ffn_gate.weight", normal(shape.n_ff, shape.n_embd)),
            (prefix + "ffn_up.weight", normal(shape.n_ff, shape.n_embd)),
            (prefix + "ffn_down.weight", normal(shape.n_embd, shape.n_ff)),
        ]
    tensors += [
        ("output_norm.weight", ones(shape.n_embd)),
        ("output.weight", normal(N_VOCAB, shape.n_embd)),
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


def _add_metadata(
    writer: gguf.GGUFWriter, file_type: gguf.LlamaFileType, shape: Geometry, chat_template: str
) -> None:
    writer.add_name(NAME)
    writer.add_description("Random-weight test model written by sovnet scripts/make_tiny_gguf.py")
    writer.add_file_type(file_type)

    writer.add_vocab_size(N_VOCAB)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_rope_dimension_count(shape.head_dim)
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
    writer.add_chat_template(chat_template)


def write_tiny_gguf(
    out_dir: pathlib.Path,
    *,
    split: int = 1,
    seed: int = 0,
    quant: str = "F32",
    chat_template: str = CHAT_TEMPLATE,
    extra_uint32: dict[str, int] | None = None,
) -> list[pathlib.Path]:
    """Write the tiny model into ``out_dir`` (created if missing); return the paths written.

    ``split == 1`` writes ``out_dir/sovnet-tiny.gguf`` (``sovnet-tiny-q4_0.gguf`` for
    ``quant="Q4_0"``...); ``split >= 2`` writes that many gguf-split-style shards, first
    shard first. Existing files of the same names are replaced. ``chat_template`` and
    ``extra_uint32`` (more uint32 metadata) make models that llama.cpp refuses, for tests.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {', '.join(QUANTS)}, got {quant!r}")
    qtype, file_type, shape = QUANTS[quant]
    tensors = build_tensors(seed, shape)
    if not 1 <= split <= len(tensors):
        raise ValueError(f"split must be between 1 and {len(tensors)}, got {split}")

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (f"{STEM}.gguf" if quant == "F32" else f"{STEM}-{quant.lower()}.gguf")

    writer = gguf.GGUFWriter(path=None, arch=ARCH)
    _add_metadata(writer, file_type, shape, chat_template)
    for key, value in (extra_uint32 or {}).items():
        writer.add_uint32(key, value)
    # GGUFWriter opens a new shard when the current one holds >= split_max_tensors tensors;
    # set the limit to 1 just before each tensor that should open a shard, 0 (off) otherwise.
    starts = _split_starts(len(tensors), split)
    for index, (name, array) in enumerate(tensors):
        writer.split_max_tensors = 1 if index in starts else 0
        data, raw_dtype = encode(array, qtype)
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
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
    parser.add_argument(
        "--quant",
        choices=tuple(QUANTS),
        default="F32",
        help="tensor type of the weight matrices (default: F32)",
    )
    parser.add_argument(
        "--chat-template",
        type=pathlib.Path,
        metavar="FILE",
        help="use the Jinja template in FILE as tokenizer.chat_template "
        "(default: a plain one that works)",
    )
    args = parser.parse_args(argv)
    try:
        template = args.chat_template.read_text() if args.chat_template else CHAT_TEMPLATE
        paths = write_tiny_gguf(
            args.out_dir,
            split=args.split,
            seed=args.seed,
            quant=args.quant,
            chat_template=template,
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    for written in paths:
        print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
