"""What the generated code does beyond matching the source: computed weights folded into
layers, and a PyTorch ``forward`` that lets go of values it no longer needs.

Each model is checked against the PyTorch module itself (not the pipeline's report).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onnx_graphs import run_generated
from pipeline.convert import Options, convert


class WeightNormConv(nn.Module):
    """wav2vec2's positional convolution: weight = g * v / ||v||, computed in forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(8, 8, 5, padding=2, groups=2), dim=2)

    def forward(self, x):
        return F.gelu(self.conv(x))


class StandardizedConv(nn.Module):
    """NF-Net style: the kernel standardized by a training-mode batch norm in forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.weight = nn.Parameter(torch.randn(6, 4, 3, 3))
        self.gain = nn.Parameter(torch.rand(6, 1, 1, 1) + 0.5)

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, 6, -1), None, None, training=True, momentum=0.0, eps=1e-5)
        return F.conv2d(x, w.reshape_as(self.weight) * self.gain, padding=1)


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(8))

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x


class Projection(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.token_projection = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.token_projection(x)


class DeepNames(nn.Module):
    """A layer named ``stages.1.blocks.1.pos_embd.token_projection``: past the 40 characters a
    generated name keeps (a hybrid network's layer once failed to load its Keras weights, exit 4)."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([nn.Module(), nn.Module()])
        self.stages[1].blocks = nn.ModuleList([nn.Identity(), nn.Module()])
        self.stages[1].blocks[1].pos_embd = Projection()

    def forward(self, x):
        return self.stages[1].blocks[1].pos_embd(x)


def deep_names():
    return DeepNames()


def weight_norm_conv():
    return WeightNormConv()


def standardized_conv():
    return StandardizedConv()


def chain():
    return Chain()


def _converted(tmp_path, factory: str, shape, to: str):
    result = convert(Options(model=f"{__file__}:{factory}", to=to, out=str(tmp_path / factory),
                             inputs=[_spec(shape)]))
    assert result.exit_code == 0, result.report["parity"]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        want = globals()[factory]().eval()(torch.from_numpy(x)).numpy()
    got = run_generated(result.out_dir, to, [x])[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    return (result.out_dir / "model.py").read_text()


def _spec(shape):
    from pipeline.spec import InputSpec

    return InputSpec("x", tuple(shape))


def test_weight_normalized_conv_becomes_a_plain_conv(tmp_path):
    """Every input of the weight computation is a constant: folded, the Conv1D takes the weight
    (it was refused with 'the weight must be a constant')."""
    code = _converted(tmp_path, "weight_norm_conv", (2, 8, 16), "keras")
    assert "layers.Conv1D(8, 5" in code and "ops.sqrt" not in code


def test_weight_standardized_conv_becomes_a_plain_conv(tmp_path):
    code = _converted(tmp_path, "standardized_conv", (2, 4, 8, 8), "keras")
    assert code.count("layers.Conv2D(") == 1 and "BatchNormalization" not in code


def test_forward_releases_each_value_after_its_last_use(tmp_path):
    """At most the input and two intermediates are alive at any line of the generated forward
    (a straight-line forward used to hold all 16)."""
    _converted(tmp_path, "chain", (1, 4, 8, 8), "torch")
    from pipeline.parity import load_generated

    path = tmp_path / "chain" / "model.py"
    model = load_generated(path)
    alive = []

    def lines(frame, event, arg):
        if event == "line":
            alive.append(sum(isinstance(v, torch.Tensor) for v in frame.f_locals.values()))
        return lines

    def calls(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "forward" and frame.f_code.co_filename == str(path.resolve()):
            return lines
        return None

    sys.settrace(calls)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 4, 8, 8))
    finally:
        sys.settrace(None)
    assert alive and max(alive) <= 3, alive


def test_a_long_layer_name_loads_its_keras_weights(tmp_path):
    code = _converted(tmp_path, "deep_names", (1, 4, 5, 5), "keras")
    assert "name='stages_1_blocks_1_pos_embd_token_project'" in code
