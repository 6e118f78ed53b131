"""PyTorch pooling that Keras has no argument for converts exactly (PyTorch -> Keras).

ceil_mode windows and padding excluded from an average have no Keras flag: the
importer writes them as an explicit pad (-inf for max, 0 for average) and, for
an average, a constant rescale by kernel size / real element count.  The
reference is PyTorch itself.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from pipeline.convert import Options, convert
from pipeline.spec import InputSpec

CASES = {
    # name: (pool module, input shape)
    "max2d_ceil": (lambda: nn.MaxPool2d(3, 2, ceil_mode=True), (2, 3, 10, 9)),
    "max2d_ceil_pad": (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (1, 3, 10, 9)),
    "max2d_ceil_stride_gt_kernel": (lambda: nn.MaxPool2d(2, 3, ceil_mode=True), (1, 3, 10, 9)),
    "avg2d_ceil_exclude": (lambda: nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False), (2, 3, 10, 9)),
    "avg1d_ceil_pad_exclude": (lambda: nn.AvgPool1d(4, 3, 1, ceil_mode=True, count_include_pad=False), (2, 3, 11)),
    "avg3d_ceil_pad_exclude": (lambda: nn.AvgPool3d(3, 2, 1, ceil_mode=True, count_include_pad=False), (1, 2, 5, 6, 7)),
}


class Net(nn.Module):
    """conv -> pool, so the pool runs on a computed channels-first tensor."""

    def __init__(self, pool: nn.Module, channels: int, rank: int):
        super().__init__()
        self.conv = getattr(nn, f"Conv{rank}d")(channels, 4, 1)
        self.pool = pool

    def forward(self, x):
        return self.pool(self.conv(x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_pool_to_keras(tmp_path, name, monkeypatch):
    """Parity's converted_vs_source stage compares the generated Keras model with PyTorch."""
    make, shape = CASES[name]
    torch.manual_seed(0)
    module = types.ModuleType("pool_case")
    module.build = lambda: Net(make(), shape[1], len(shape) - 2).eval()
    monkeypatch.setitem(sys.modules, "pool_case", module)
    result = convert(Options(model="pool_case:build", to="keras", out=str(tmp_path / "out"),
                             inputs=[InputSpec("x", shape)]))
    assert result.exit_code == 0, result.report["parity"]
    (vs_torch,) = result.report["parity"]["stages"]["converted_vs_source"]
    assert vs_torch["max_rel_err"] <= 1e-5
    code = (result.out_dir / "model.py").read_text()
    assert "Pooling" in code  # a native Keras pooling layer, not an unrolled expression
