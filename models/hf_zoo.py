"""Hugging Face ``transformers`` models, built offline from tiny configs with random weights.

Nothing is downloaded: every factory builds its model from a config
(``Model(Config(...))``, never ``from_pretrained``) after ``torch.manual_seed(0)``,
then gives the normalization layers non-trivial statistics and returns it in
eval mode.  ``transformers`` is a test-only extra (``pip install -e .[test]``).

The ``transformers`` models return a ``ModelOutput`` (a dict-like dataclass) and
take most inputs as optional keyword arguments, so each factory wraps its model
in a small ``nn.Module`` whose ``forward`` names the inputs a user feeds
(``input_ids, attention_mask`` / ``pixel_values`` / ``input_values`` /
``input_features``) and returns one tensor: ``last_hidden_state`` for base
models, ``logits`` for task heads.  ``SHAPES`` gives the inputs per factory;
convert one with::

    HF_HUB_OFFLINE=1 python -m pipeline convert models/hf_zoo.py:bert --to keras \\
        --input input_ids=2,8:int64 --input attention_mask=2,8:int64
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub, even by accident

import torch  # noqa: E402
from torch import nn  # noqa: E402

SEED = 0
TEXT = 8  # sequence length of the text models
IMAGE = 32  # side of the square images

# Hidden size 32, 2 layers, 2-4 heads everywhere: big enough to exercise every
# op of the family, small enough to convert in seconds.
_TINY_TEXT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=32)


def _randomize(model: nn.Module) -> nn.Module:
    """Non-trivial affine parameters and running statistics for every norm layer
    (the Hub's init leaves them at 1/0, which would hide a missing scale or shift)."""
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def _build(model_cls, config) -> nn.Module:
    """``model_cls(config)`` with seeded random weights, in eval mode (default attention implementation)."""
    torch.manual_seed(SEED)
    return _randomize(model_cls(config))


class TextEncoder(nn.Module):
    """``(input_ids, attention_mask)`` int64 (N, L) -> ``last_hidden_state`` (N, L, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CausalLM(nn.Module):
    """``(input_ids, attention_mask)`` int64 (N, L) -> next-token ``logits`` (N, L, vocab), no cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class ImageEncoder(nn.Module):
    """``pixel_values`` (N, 3, H, W) -> ``last_hidden_state`` (or ``logits`` when ``key='logits'``)."""

    def __init__(self, model: nn.Module, key: str = "last_hidden_state"):
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, pixel_values):
        return getattr(self.model(pixel_values=pixel_values), self.key)


class AudioEncoder(nn.Module):
    """``input_values`` raw waveform (N, samples) -> ``last_hidden_state`` (N, frames, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values):
        return self.model(input_values=input_values).last_hidden_state


class SpectrogramEncoder(nn.Module):
    """``input_features`` log-mel (N, mels, frames) -> ``last_hidden_state`` (N, frames / 2, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_features):
        return self.model(input_features=input_features).last_hidden_state


# ---------------------------------------------------------------- text


def bert():
    """BertModel: token + position + segment embeddings, post-LN encoder, padding mask."""
    from transformers import BertConfig, BertModel

    return TextEncoder(_build(BertModel, BertConfig(**_TINY_TEXT, add_pooling_layer=False)))


def distilbert():
    """DistilBertModel: sinusoid-free learned positions, 2 layers, padding mask."""
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32)
    return TextEncoder(_build(DistilBertModel, cfg))


def roberta():
    """RobertaModel: positions computed from the non-padding tokens (cumsum of a mask)."""
    from transformers import RobertaConfig, RobertaModel

    return TextEncoder(_build(RobertaModel, RobertaConfig(**_TINY_TEXT, pad_token_id=1)))


def gpt2():
    """GPT2LMHeadModel: causal mask combined with the padding mask, Conv1D (addmm) projections, tied LM head."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    return CausalLM(_build(GPT2LMHeadModel, cfg))


def t5_encoder():
    """T5EncoderModel: RMS LayerNorm, bucketed relative position bias (log of int positions)."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    return TextEncoder(_build(T5EncoderModel, cfg))


def llama():
    """LlamaModel: RMSNorm, rotary position embeddings, grouped-query attention (2 KV heads), SwiGLU MLP, causal mask."""
    from transformers import LlamaConfig, LlamaModel

    return TextEncoder(_build(LlamaModel, LlamaConfig(**_TINY_TEXT, num_key_value_heads=2)))


# ---------------------------------------------------------------- vision


def vit():
    """ViTModel: patch embedding Conv2d, CLS token, pre-LN encoder."""
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64)
    return ImageEncoder(_build(lambda c: ViTModel(c, add_pooling_layer=False), cfg))


def convnext():
    """ConvNextModel: 4x4 patchify stem, depthwise 7x7, channels-first LayerNorm, layer scale."""
    from transformers import ConvNextConfig, ConvNextModel

    cfg = ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                         layer_scale_init_value=0.5)
    return ImageEncoder(_build(ConvNextModel, cfg))


def resnet():
    """ResNetForImageClassification: 7x7 stem + max-pool, basic blocks with BatchNorm, 10-way head."""
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
                       num_labels=10)
    return ImageEncoder(_build(ResNetForImageClassification, cfg), key="logits")


def mobilenet_v2():
    """MobileNetV2Model: inverted residuals, ReLU6, TF-style 'same' padding."""
    from transformers import MobileNetV2Config, MobileNetV2Model

    cfg = MobileNetV2Config(num_channels=3, image_size=IMAGE, depth_multiplier=0.35)
    return ImageEncoder(_build(MobileNetV2Model, cfg))


def swin():
    """SwinModel: window attention with relative position bias, shifted windows, patch merging."""
    from transformers import SwinConfig, SwinModel

    cfg = SwinConfig(image_size=IMAGE, patch_size=4, num_channels=3, embed_dim=16, depths=[2, 1], num_heads=[2, 2],
                     window_size=4, mlp_ratio=2.0)
    return ImageEncoder(_build(SwinModel, cfg))


def segformer():
    """SegformerForSemanticSegmentation: overlapping patch embeddings, spatial-reduction attention,
    Mix-FFN depthwise conv, all-MLP decoder with bilinear upsampling."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                          hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
                          mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=5)
    return ImageEncoder(_build(SegformerForSemanticSegmentation, cfg), key="logits")


def efficientnet():
    """EfficientNetModel (B0 widths, depth x0.5): depthwise convs with TF-style 'same' padding, squeeze-excite, swish."""
    from transformers import EfficientNetConfig, EfficientNetModel

    cfg = EfficientNetConfig(image_size=IMAGE, width_coefficient=1.0, depth_coefficient=0.5, hidden_dim=1280)
    return ImageEncoder(_build(EfficientNetModel, cfg))


def mobilevit():
    """MobileViTModel: MobileNetV2 blocks plus transformer blocks over unfolded 2x2 patches (reshape-heavy)."""
    from transformers import MobileViTConfig, MobileViTModel

    cfg = MobileViTConfig(image_size=IMAGE, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64])
    return ImageEncoder(_build(MobileViTModel, cfg))


# ---------------------------------------------------------------- audio


def wav2vec2():
    """Wav2Vec2Model: conv feature extractor (GroupNorm in the first layer), feature projection,
    grouped positional conv embedding (weight norm), post-LN encoder."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), conv_bias=True,
                         feat_extract_norm="group", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         vocab_size=16)
    return AudioEncoder(_build(Wav2Vec2Model, cfg))


def whisper_encoder():
    """WhisperEncoder: two Conv1d + GELU over the log-mel spectrogram, sinusoidal positions, pre-LN encoder."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                        encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64,
                        max_source_positions=16, max_target_positions=16)
    return SpectrogramEncoder(_build(WhisperEncoder, cfg))


_IDS = ((2, TEXT), "int64")
# A causal model's mask with a 0 at a row's first position leaves that query nothing to attend
# to, where torch.onnx's exported attention and PyTorch part ways (README, Shapes): the zoo's
# causal models draw masks of ones (values 1..7, all "attend"), so parity judges the
# conversion and not that export limit.  tests/test_shapes_hf.py checks right-padded masks.
_CAUSAL_MASK = ((2, TEXT), "int64", (1, 8))
SHAPES = {
    "bert": {"input_ids": _IDS, "attention_mask": _IDS},
    "distilbert": {"input_ids": _IDS, "attention_mask": _IDS},
    "roberta": {"input_ids": _IDS, "attention_mask": _IDS},
    "gpt2": {"input_ids": _IDS, "attention_mask": _CAUSAL_MASK},
    "t5_encoder": {"input_ids": _IDS, "attention_mask": _IDS},
    "llama": {"input_ids": _IDS, "attention_mask": _CAUSAL_MASK},
    "vit": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "convnext": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "resnet": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "mobilenet_v2": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "swin": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "segformer": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "efficientnet": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "mobilevit": {"pixel_values": (2, 3, IMAGE, IMAGE)},
    "wav2vec2": {"input_values": (2, 400)},
    "whisper_encoder": {"input_features": (2, 16, 32)},
}
