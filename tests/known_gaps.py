"""The one table of known gaps: what the pipeline cannot convert, or cannot prove, today.

Each entry names the strict xfail test that pins it (``xfail(strict=True)``: the day the
gap closes, that test passes and the suite fails until the entry goes), and says what
the fuzz does about it:

- ``refused``: the pipeline exits 3 for it; a fuzz refusal is excused only if its reason
  matches ``refusal`` (a regular expression) AND ``applies(case)`` holds;
- ``filtered``: the fuzz generator does not draw such cases, because the referee
  (onnxruntime) or the source framework departs from the spec there, so no verdict
  would be sound;
- ``other``: not drawn by the fuzz at all (not a conv/pool op).

``tests/test_known_gaps.py`` checks that every named test exists and is a strict xfail,
and that the README's "Known gaps" table lists exactly these ids.  A fuzz refusal that
matches no entry is a failure (``tests/fuzz_cases.py``, ``bench/fuzz.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Gap:
    id: str
    what: str  # one line, as in the README table
    fuzz: str  # refused | filtered | other
    test: str  # the strict xfail test: path::name
    refusal: str = ""  # for ``refused``: a regex the exit-3 reason matches
    applies: Callable | None = None  # for ``refused``: does a fuzz case belong to this gap?

    def excuses(self, case, reason: str) -> bool:
        """Whether this gap covers a fuzz refusal of ``case`` worded ``reason``."""
        return (self.fuzz == "refused" and bool(self.refusal) and re.search(self.refusal, reason) is not None
                and (self.applies is None or bool(self.applies(case))))


GAPS: tuple[Gap, ...] = (
    Gap("ort-avgpool-include-pad",
        "onnxruntime 1.23's 2-D/3-D AveragePool(count_include_pad=1) with unequal pads divides by the wrong "
        "window size; a PyTorch source's ONNX stage then fails parity (exit 1) though the conversion matches PyTorch",
        "filtered", "tests/test_fuzz_regressions.py::test_torch_avgpool2d_count_include_pad_unequal_pads"),
    Gap("ort-convtranspose-outpad-ge-stride",
        "onnxruntime's ConvTranspose with output_padding >= stride (PyTorch allows up to max(stride, dilation) - 1) "
        "computes another result; the conversion matches PyTorch, the ONNX stage fails (exit 1)",
        "filtered", "tests/test_known_gaps.py::test_convtranspose_output_padding_beyond_stride"),
    Gap("ort-same-negative-padding",
        "onnxruntime's SAME_UPPER/LOWER Conv and pooling with a kernel extent below the stride pad negatively "
        "(the ONNX reference clamps at 0): the normalize check stops the conversion (exit 1)",
        "filtered", "tests/test_fuzz_regressions.py::test_onnx_same_upper_negative_total_padding"),
    Gap("tf-3d-same-kernel-below-stride",
        "TensorFlow's CPU Conv3D / 3-D pooling with padding='same' and a kernel smaller than the stride shift "
        "their windows (2-D and the docs do not): parity against Keras fails (exit 1)",
        "filtered", "tests/test_fuzz_regressions.py::test_keras_conv3d_same_kernel_smaller_than_stride"),
    Gap("maxpool-window-only-padding",
        "a dilated max-pool window whose taps all fall in the padding has no number for its max: -inf in "
        "PyTorch, the lowest float in onnxruntime",
        "filtered", "tests/test_known_gaps.py::test_dilated_maxpool_window_of_padding_only"),
    Gap("topk-unsorted",
        "torch.topk(sorted=False) / TopK sorted=0: onnxruntime, PyTorch and TensorFlow order the k values "
        "differently",
        "other", "tests/test_ops_extra.py::test_topk_unsorted_order_matches_onnxruntime"),
    Gap("keras-recurrent-loop",
        "Keras GRU / SimpleRNN with masking, reset_after=False or non-default activations -> PyTorch: tf2onnx "
        "writes a Loop that is not a default cell, refused (exit 3) naming it",
        "other", "tests/test_known_gaps.py::test_keras_masked_gru_converts", refusal=r"Loop at '"),
)

BY_ID = {g.id: g for g in GAPS}


def excusing(case, reason: str) -> Gap | None:
    """The gap that covers a fuzz refusal, or None (then the refusal is a failure)."""
    for gap in GAPS:
        if gap.excuses(case, reason):
            return gap
    return None


def markdown_table() -> str:
    """The README's table, generated from GAPS (``python tests/known_gaps.py``)."""
    rows = ["| id | gap | fuzz | pinned by (strict xfail) |", "| --- | --- | --- | --- |"]
    rows += [f"| `{g.id}` | {g.what} | {g.fuzz} | `{g.test}` |" for g in GAPS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
