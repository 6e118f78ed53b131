"""Small PyTorch models in the style of real families, written with each family's own building blocks.

Each factory returns an eval-mode ``nn.Module`` with non-trivial BatchNorm
statistics; ``SHAPES`` gives an input shape per factory.  Used by the tests
and by ``make test-slow``; convert one with
``python -m pipeline convert models/torch_zoo.py:resnet --input x=2,3,32,32``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _randomize(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """ResNet-style: 7x7 stem, max-pool, residual blocks, global pool, fc.  (N, 3, H, W) -> (N, 10)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        y = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expand, stride, act, se):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act(),
                  nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), act()]
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNet(nn.Module):
    """MobileNetV2/V3-style: depthwise convs, ReLU6 and hard-swish, squeeze-excite.  (N, 3, H, W) -> (N, 10)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 2, 1, nn.ReLU6, False),
                                    InvertedResidual(16, 24, 3, 2, nn.Hardswish, True),
                                    InvertedResidual(24, 24, 3, 1, nn.Hardswish, True))
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        y = self.blocks(self.stem(x))
        return self.head(y.mean((2, 3)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim) * 1.1)
        self.bias = nn.Parameter(torch.zeros(dim) + 0.1)
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXt(nn.Module):
    """ConvNeXt-style: patchify stem, LayerNorm over channels, 7x7 depthwise, GELU MLP.  (N, 3, H, W) -> (N, 10)."""

    def __init__(self, dim=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), ChannelsFirstLayerNorm(dim))
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        y = self.blocks(self.stem(x))
        return self.head(self.norm(y.mean((-2, -1))))


class UNet(nn.Module):
    """U-Net: strided down path, ConvTranspose2d and bilinear up path, concatenated skips.  (N, 3, H, W) -> (N, 2, H, W)."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.enc3 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.dec1 = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
        up1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(self.dec1(torch.cat([up1, e1], dim=1)))


class AudioEncoder(nn.Module):
    """wav2vec2-style: strided Conv1d stack with GroupNorm and GELU, grouped positional conv.  (N, T) -> (N, T', C)."""

    def __init__(self, dim=32):
        super().__init__()
        self.conv0 = nn.Conv1d(1, dim, 10, 5, bias=False)
        self.norm0 = nn.GroupNorm(dim, dim)
        self.conv1 = nn.Conv1d(dim, dim, 3, 2, bias=False)
        self.conv2 = nn.Conv1d(dim, dim, 2, 2, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.pos_conv = nn.Conv1d(dim, dim, 8, padding=4, groups=4)
        self.norm = nn.LayerNorm(dim)

    def forward(self, waveform):
        x = F.gelu(self.norm0(self.conv0(waveform.unsqueeze(1))))
        x = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        x = self.proj(x.transpose(1, 2))  # (N, T', C)
        pos = self.pos_conv(x.transpose(1, 2))[:, :, :-1]
        return self.norm(x + F.gelu(pos).transpose(1, 2))


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Transformer(nn.Module):
    """Transformer encoder over token embeddings: attention reshapes, LayerNorm, Softmax, Erf-GELU.  (N, L) int64 -> (N, L, D)."""

    def __init__(self, vocab=50, dim=32, heads=4, length=12):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.1)
        self.layers = nn.Sequential(EncoderLayer(dim, heads), EncoderLayer(dim, heads))

    def forward(self, ids):
        return self.layers(self.embed(ids) + self.pos)


class ViTStem(nn.Module):
    """Vision transformer stem: patch-embedding conv, flatten, class token, position embedding, one block.  (N, 3, H, W) -> (N, 10)."""

    def __init__(self, dim=32, patch=4, image=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        n = (image // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.1)
        self.block = EncoderLayer(dim, 4)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        y = self.patch(x).flatten(2).transpose(1, 2)  # (N, HW, D)
        y = torch.cat([self.cls.expand(y.shape[0], -1, -1), y], dim=1) + self.pos
        return self.head(self.block(y)[:, 0])


def resnet():
    return _randomize(ResNet())


def mobilenet():
    return _randomize(MobileNet())


def convnext():
    return _randomize(ConvNeXt())


def unet():
    return _randomize(UNet())


def audio_encoder():
    return _randomize(AudioEncoder())


def transformer():
    return _randomize(Transformer())


def vit_stem():
    return _randomize(ViTStem())


SHAPES = {
    "resnet": {"x": (2, 3, 32, 32)},
    "mobilenet": {"x": (2, 3, 32, 32)},
    "convnext": {"x": (2, 3, 32, 32)},
    "unet": {"x": (1, 3, 16, 16)},
    "audio_encoder": {"waveform": (2, 400)},
    "transformer": {"ids": ((2, 12), "int64")},
    "vit_stem": {"x": (2, 3, 16, 16)},
}


class ConvNeXtT(nn.Module):
    """ConvNeXt-T sized (depths 3-3-9-3, widths 96-192-384-768; 28 M parameters).  (N, 3, 224, 224) -> (N, 1000)."""

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), classes=1000):
        super().__init__()
        self.downsample = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), ChannelsFirstLayerNorm(dims[0]))])
        for i in range(3):
            self.downsample.append(nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[ConvNeXtBlock(d) for _ in range(n)]) for n, d in zip(depths, dims))
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x):
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean((-2, -1))))


def convnext_t():
    return _randomize(ConvNeXtT())


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck: 1x1 reduce, 3x3 (stride here, as in torchvision v1.5), 1x1 expand x4, projection shortcut."""

    expansion = 4

    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    """ResNet-50 sized (bottleneck blocks 3-4-6-3, widths 64-128-256-512; 25.6 M parameters).  (N, 3, 224, 224) -> (N, 1000)."""

    def __init__(self, blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for j in range(n):
                layers.append(Bottleneck(cin, w, stride=2 if (j == 0 and i > 0) else 1))
                cin = w * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        y = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class BertLayer(nn.Module):
    """BERT encoder layer (post-LayerNorm): separate Q/K/V projections, scaled softmax attention, erf-GELU FFN."""

    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=1e-12)
        self.intermediate = nn.Linear(dim, ffn)
        self.output = nn.Linear(ffn, dim)
        self.out_norm = nn.LayerNorm(dim, eps=1e-12)

    def _split(self, t, b, n, d):
        return t.reshape(b, n, self.heads, d // self.heads).permute(0, 2, 1, 3)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = (self._split(f(x), b, n, d) for f in (self.query, self.key, self.value))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        ctx = (att @ v).permute(0, 2, 1, 3).reshape(b, n, d)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.output(F.gelu(self.intermediate(x))))


class Bert(nn.Module):
    """BERT-base width (768 wide, 12 heads, FFN 3072, 30522-token vocabulary) with ``layers`` encoder layers.  (N, L) int64 -> (N, L, 768)."""

    def __init__(self, layers=2, vocab=30522, dim=768, heads=12, ffn=3072, max_len=512):
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.Sequential(*[BertLayer(dim, heads, ffn) for _ in range(layers)])

    def forward(self, ids):
        pos = self.position.weight[: ids.shape[1]].unsqueeze(0)
        return self.layers(self.norm(self.word(ids) + pos))


class BigMLP(nn.Module):
    """About 100 M parameters in a few wide Linear layers (4096 wide, 6 hidden layers).  (N, 4096) -> (N, 1000)."""

    def __init__(self, width=4096, depth=6, classes=1000):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        for layer in self.hidden:
            x = F.gelu(layer(x))
        return self.head(x)


def resnet50():
    return _randomize(ResNet50())


def bert2():
    torch.manual_seed(0)
    return Bert(layers=2).eval()


def big100m():
    torch.manual_seed(0)
    return BigMLP().eval()


# Full-size models for `make bench`; kept out of SHAPES so the test families stay small.
BENCH_SHAPES = {
    "convnext_t": {"x": (1, 3, 224, 224)},
    "resnet50": {"x": (1, 3, 224, 224)},
    "bert2": {"ids": ((1, 128), "int64")},
    "big100m": {"x": (2, 4096)},
}
