"""scripts/make_tiny_gguf.py's quantised models: the tensor types llama.cpp will see,
and the Q4_K packer (ours: gguf-py only reads K-quants) checked against gguf-py's
reader, an implementation that is not ours."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.conftest import make_tiny_gguf, write_tiny_gguf

Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize(
    ("quant", "qtype", "file_type"),
    [
        ("F32", Q.F32, gguf.LlamaFileType.ALL_F32),
        ("Q8_0", Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
        ("Q4_0", Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
        ("Q4_K", Q.Q4_K, gguf.LlamaFileType.MOSTLY_Q4_K_S),
    ],
)
def test_weight_matrices_have_the_type_asked_for_and_norms_stay_f32(
    tmp_path: Path, quant: str, qtype: gguf.GGMLQuantizationType, file_type: int
) -> None:
    [path] = write_tiny_gguf(tmp_path, quant=quant)
    assert path.name == (
        "sovnet-tiny.gguf" if quant == "F32" else f"sovnet-tiny-{quant.lower()}.gguf"
    )
    reader = gguf.GGUFReader(path)
    types = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    assert {t for name, t in types.items() if "norm" not in name} == {qtype}
    assert {t for name, t in types.items() if "norm" in name} == {Q.F32}
    assert reader.fields["general.file_type"].contents() == file_type


def test_the_q4_k_model_reads_back_close_to_its_f32_weights(tmp_path: Path) -> None:
    [path] = write_tiny_gguf(tmp_path, quant="Q4_K", seed=3)
    weights = dict(make_tiny_gguf.build_tensors(3, make_tiny_gguf.WIDE))
    for tensor in gguf.GGUFReader(path).tensors:
        if tensor.tensor_type != Q.Q4_K:
            continue
        original = weights[tensor.name]
        back = gguf.quants.dequantize(tensor.data, Q.Q4_K).reshape(original.shape)
        assert _within_q4_k_error(back, original)


@settings(max_examples=200)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.sampled_from([256, 512])),
        elements=st.floats(-1000, 1000, width=32),
    )
)
def test_q4_k_packing_is_what_gguf_py_reads(values: np.ndarray) -> None:
    packed = make_tiny_gguf.quantize_q4_k(values)
    assert packed.dtype == np.uint8
    assert packed.shape == (values.shape[0], values.shape[1] // 256 * 144)
    back = gguf.quants.dequantize(packed, Q.Q4_K).reshape(values.shape)
    assert _within_q4_k_error(back, values)


def _within_q4_k_error(back: np.ndarray, original: np.ndarray) -> bool:
    """Within a 4-bit step of each super-block's span, plus what rounding the 6-bit
    scales and mins and their f16 factors may add: at most 1/126 of its span, and
    1/126 of its largest magnitude (for the min), each, and f16's relative error.
    f16 factors below 6e-8 are 0, so a block of values under about 1e-4 reads as 0."""
    blocks = original.reshape(-1, 256).astype(np.float64)
    span = np.maximum(blocks.max(axis=1), 0) - np.minimum(blocks.min(axis=1), 0)
    largest = np.abs(blocks).max(axis=1)
    error = np.abs(back.reshape(-1, 256) - blocks).max(axis=1)
    return bool(np.all(error <= span / 15 + largest / 50 + 1e-4))


def test_q4_k_refuses_rows_that_are_not_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 256"):
        make_tiny_gguf.quantize_q4_k(np.zeros((2, 64), dtype=np.float32))


def test_the_command_line_takes_a_chat_template_from_a_file(tmp_path: Path) -> None:
    template = tmp_path / "loops.jinja"
    template.write_text("{% for i in range(3) %}{{ i }}{% endfor %}")
    assert make_tiny_gguf.main([str(tmp_path / "m"), "--chat-template", str(template)]) == 0
    reader = gguf.GGUFReader(tmp_path / "m" / "sovnet-tiny.gguf")
    field = reader.fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == template.read_text()
