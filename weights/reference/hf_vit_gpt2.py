"""PyTorch reference for a Hugging Face VisionEncoderDecoder checkpoint: ViT encoder + GPT-2
decoder with cross-attention (spec ../../shared/spec/hf-vit-gpt2.md, §1-§5).

Written from transformers' modeling_vit.py, modeling_gpt2.py and
modeling_vision_encoder_decoder.py, operation by operation, so that `state_dict()` keys are the
checkpoint's tensor names and the numbers are transformers' numbers. It is the source of the
goldens the C engine is tested against, and the building block for training our own model:

- `VisionEncoderDecoder.forward(pixel_values, decoder_input_ids)`: batched, teacher-forced
  (causal) logits [B, T, V], differentiable.
- `encode` / `cross_kv` / `decode` with a `DecoderCache`: the step-by-step path generation uses.
- `trace`: an optional dict that the forward passes fill with intermediates (patch embeddings,
  every encoder layer, memory, cross K/V, cross-attention probabilities).
- `from_pretrained(dir)` / `save_pretrained(dir, dtype)`: the HF directory layout, through our
  own safetensors reader and writer.
- Image preprocessing with Pillow as `ViTImageProcessor` does (§3).
"""

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.nn import functional as F

import safetensors_io
from bpe_tokenizer import ByteLevelBPE

# ------------------------------------------------------------------------------------------
# Configuration (§1). Defaults are transformers' ViTConfig / GPT2Config defaults.
# ------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A config value the reference does not implement; names the key and the value."""


@dataclass
class ViTConfig:
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    encoder_stride: int = 16

    def validate(self):
        if self.hidden_act != "gelu":
            raise ConfigError(f"encoder.hidden_act = {self.hidden_act!r}: only \"gelu\" (erf) is implemented")
        if self.num_channels != 3:
            raise ConfigError(f"encoder.num_channels = {self.num_channels}: only 3 is supported")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"encoder.hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"encoder.image_size {self.image_size} is not a multiple of "
                              f"patch_size {self.patch_size}")

    @property
    def n_patches(self):
        return (self.image_size // self.patch_size) ** 2


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: Optional[int] = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    use_cache: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    bos_token_id: int = 50256
    eos_token_id: int = 50256
    add_cross_attention: bool = False
    is_decoder: bool = False
    tie_word_embeddings: bool = True

    def validate(self):
        if self.activation_function != "gelu_new":
            raise ConfigError(f"decoder.activation_function = {self.activation_function!r}: "
                              f"only \"gelu_new\" is implemented")
        if self.reorder_and_upcast_attn:
            raise ConfigError("decoder.reorder_and_upcast_attn = true is not implemented")
        if not self.add_cross_attention:
            raise ConfigError("decoder.add_cross_attention must be true for a captioning decoder")
        if self.n_embd % self.n_head:
            raise ConfigError(f"decoder.n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

    @property
    def inner_dim(self):
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd


def _dataclass_from_dict(cls, d):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class VEDConfig:
    encoder: ViTConfig
    decoder: GPT2Config
    decoder_start_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    tie_word_embeddings: bool = True
    extra: dict = field(default_factory=dict)  # other top-level keys (legacy generation keys)

    @classmethod
    def from_dict(cls, d):
        if d.get("model_type") != "vision-encoder-decoder":
            raise ConfigError(f"model_type = {d.get('model_type')!r}: expected \"vision-encoder-decoder\"")
        enc, dec = d.get("encoder", {}), d.get("decoder", {})
        if enc.get("model_type") != "vit":
            raise ConfigError(f"encoder.model_type = {enc.get('model_type')!r}: only \"vit\" is implemented")
        if dec.get("model_type") != "gpt2":
            raise ConfigError(f"decoder.model_type = {dec.get('model_type')!r}: only \"gpt2\" is implemented")
        if dec.get("cross_attention_hidden_size") is not None:
            raise ConfigError("decoder.cross_attention_hidden_size is set: GPT-2 cross-attention "
                              "cannot take a memory width other than n_embd")
        cfg = cls(encoder=_dataclass_from_dict(ViTConfig, enc),
                  decoder=_dataclass_from_dict(GPT2Config, dec),
                  decoder_start_token_id=d.get("decoder_start_token_id"),
                  pad_token_id=d.get("pad_token_id"),
                  eos_token_id=d.get("eos_token_id"),
                  tie_word_embeddings=d.get("tie_word_embeddings", True),
                  extra={k: v for k, v in d.items() if k not in (
                      "encoder", "decoder", "decoder_start_token_id", "pad_token_id",
                      "eos_token_id", "tie_word_embeddings")})
        cfg.encoder.validate()
        cfg.decoder.validate()
        return cfg

    def to_dict(self):
        enc = dict(asdict(self.encoder), model_type="vit")
        dec = dict(asdict(self.decoder), model_type="gpt2")
        d = {
            "architectures": ["VisionEncoderDecoderModel"],
            "decoder": dec,
            "decoder_start_token_id": self.decoder_start_token_id,
            "encoder": enc,
            "eos_token_id": self.eos_token_id,
            "is_encoder_decoder": True,
            "model_type": "vision-encoder-decoder",
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d


# ------------------------------------------------------------------------------------------
# Image preprocessing (§3): what the image-to-text pipeline and ViTImageProcessor do.
# ------------------------------------------------------------------------------------------


@dataclass
class ProcessorConfig:
    height: int = 224
    width: int = 224
    do_resize: bool = True
    resample: int = 2  # Pillow filter number: 0 nearest, 2 bilinear, 3 bicubic
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    @classmethod
    def from_dict(cls, d):
        size = d.get("size", {"height": 224, "width": 224})
        if isinstance(size, int):
            height = width = size
        elif "height" in size and "width" in size:
            height, width = size["height"], size["width"]
        elif "shortest_edge" in size:  # ViT processors treat it as a square
            height = width = size["shortest_edge"]
        else:
            raise ConfigError(f"preprocessor size = {size!r}: expected an int, "
                              f"{{height, width}} or {{shortest_edge}}")
        resample = d.get("resample", 2)
        if resample not in (0, 2, 3):
            raise ConfigError(f"preprocessor resample = {resample}: only 0, 2, 3 are implemented")
        return cls(height=height, width=width, do_resize=d.get("do_resize", True),
                   resample=resample, do_rescale=d.get("do_rescale", True),
                   rescale_factor=d.get("rescale_factor", 1 / 255),
                   do_normalize=d.get("do_normalize", True),
                   image_mean=list(d.get("image_mean", [0.5, 0.5, 0.5])),
                   image_std=list(d.get("image_std", [0.5, 0.5, 0.5])))

    def to_dict(self):
        return {
            "do_normalize": self.do_normalize,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": self.image_mean,
            "image_processor_type": "ViTImageProcessor",
            "image_std": self.image_std,
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": {"height": self.height, "width": self.width},
        }


def load_rgb(path):
    """transformers' `load_image`: EXIF orientation applied, then `convert("RGB")` (grey
    replicated, alpha dropped without compositing, palette looked up)."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def resize_rgb(image, proc):
    """Pillow's resize of the uint8 RGB image to the processor size. Returns uint8 [H, W, 3]."""
    if proc.do_resize:
        image = image.resize((proc.width, proc.height), resample=proc.resample)
    return np.asarray(image, dtype=np.uint8).copy()


def pixel_values_from_resized(resized, proc):
    """uint8 [H, W, 3] -> float32 [3, H, W]: rescale computed in float64 then stored as float32
    (image_transforms.rescale), normalization in float32 (image_transforms.normalize)."""
    x = resized
    if proc.do_rescale:
        x = (x.astype(np.float64) * proc.rescale_factor).astype(np.float32)
    else:
        x = x.astype(np.float32)
    if proc.do_normalize:
        mean = np.array(proc.image_mean, dtype=np.float32)
        std = np.array(proc.image_std, dtype=np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(image, proc):
    """PIL RGB image -> (resized uint8 [H, W, 3], pixel_values float32 [3, H, W])."""
    resized = resize_rgb(image, proc)
    return resized, pixel_values_from_resized(resized, proc)


# ------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------


def gelu_tanh(x):
    """GPT-2's "gelu_new" (§5.3)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def split_heads(x, n_heads):
    b, t, c = x.shape
    return x.view(b, t, n_heads, c // n_heads).permute(0, 2, 1, 3)  # [B, H, T, hd]


def merge_heads(x):
    b, h, t, hd = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, t, h * hd)


def attend(q, k, v, scale_divisor=None, causal_offset=None):
    """Scaled dot-product attention over heads: q [B, H, Tq, hd], k/v [B, H, Tk, hd].

    Scores are divided by scale_divisor (transformers divides rather than multiplies). With
    causal_offset = P (the number of cached positions), query i sees keys 0 .. P + i.
    Returns (output [B, H, Tq, hd], probabilities [B, H, Tq, Tk]); softmax in fp32.
    """
    scores = torch.matmul(q, k.transpose(-1, -2))
    if scale_divisor is not None:
        scores = scores / scale_divisor
    if causal_offset is not None:
        tq, tk = q.shape[-2], k.shape[-2]
        allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(diagonal=causal_offset)
        scores = torch.where(allowed, scores, torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype))
    probs = F.softmax(scores, dim=-1)
    return torch.matmul(probs, v), probs


def _record(trace, name, value):
    if trace is not None:
        trace[name] = value.detach().clone()


# ------------------------------------------------------------------------------------------
# Encoder: ViT (§4). Attribute names give the checkpoint's tensor names.
# ------------------------------------------------------------------------------------------


class ViTPatchEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size,
                                    stride=cfg.patch_size)

    def forward(self, pixel_values):
        # kernel = stride = P: one GEMM over r-major patches, each flattened [c][row][col]
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # [B, n, D]


class ViTEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(cfg)
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.n_patches + 1, cfg.hidden_size))

    def forward(self, pixel_values, trace=None):
        patches = self.patch_embeddings(pixel_values)
        _record(trace, "patch_embeddings", patches)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        x = torch.cat([cls, patches], dim=1) + self.position_embeddings
        _record(trace, "embeddings", x)
        return x


class ViTSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.query = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.key = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.value = nn.Linear(d, d, bias=cfg.qkv_bias)

    def forward(self, x):
        q = split_heads(self.query(x), self.n_heads)
        k = split_heads(self.key(x), self.n_heads)
        v = split_heads(self.value(x), self.n_heads)
        out, _ = attend(q, k, v, scale_divisor=math.sqrt(q.shape[-1]))  # no mask
        return merge_heads(out)


class ViTSelfOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x):
        return self.dense(x)


class ViTAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = ViTSelfAttention(cfg)
        self.output = ViTSelfOutput(cfg)

    def forward(self, x):
        return self.output(self.attention(x))


class ViTIntermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))  # exact erf GELU


class ViTOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.dense(x)


class ViTLayer(nn.Module):
    """Pre-LayerNorm block: h = x + Attn(LN(x)); x' = h + FFN(LN(h))."""

    def __init__(self, cfg):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attention = ViTAttention(cfg)
        self.layernorm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.intermediate = ViTIntermediate(cfg)
        self.output = ViTOutput(cfg)

    def forward(self, x):
        h = x + self.attention(self.layernorm_before(x))
        return h + self.output(self.intermediate(self.layernorm_after(h)))


class ViTLayerStack(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(cfg) for _ in range(cfg.num_hidden_layers)])


class ViTPooler(nn.Module):
    """Present in some checkpoints (`pooler.dense`); never used for captioning."""

    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class ViTEncoder(nn.Module):
    def __init__(self, cfg, with_pooler=False):
        super().__init__()
        self.cfg = cfg
        self.embeddings = ViTEmbeddings(cfg)
        self.encoder = ViTLayerStack(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if with_pooler:
            self.pooler = ViTPooler(cfg)

    def forward(self, pixel_values, trace=None):
        """pixel_values [B, 3, H, W] -> final-layernormed hidden states [B, M, D]."""
        size = self.cfg.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(f"pixel_values are {tuple(pixel_values.shape[-2:])}, the encoder "
                             f"expects {size}x{size} (no position-embedding interpolation)")
        x = self.embeddings(pixel_values, trace)
        for i, layer in enumerate(self.encoder.layer):
            x = layer(x)
            _record(trace, f"enc_layer_{i}", x)
        return self.layernorm(x)


# ------------------------------------------------------------------------------------------
# Decoder: GPT-2 with cross-attention (§5)
# ------------------------------------------------------------------------------------------


class Conv1D(nn.Module):
    """GPT-2's linear layer with the weight stored [in, out]: y = x·W + b."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return out.view(*x.shape[:-1], self.weight.shape[1])


class DecoderCache:
    """Per-layer self-attention keys/values [N, H, t, hd] plus the cross-attention keys/values
    of the memory [N, H, M, hd], made once per image by `cross_kv` and shared by every step."""

    def __init__(self, cross):
        self.cross = cross          # list over layers of (K, V), heads split
        self.self_kv = None         # list over layers of (K, V), or None before the first step
        self.length = 0             # positions already in the cache

    def reorder(self, index):
        """Keeps rows `index` (beam search: the parent beam of each surviving candidate)."""
        if self.self_kv is not None:
            self.self_kv = [(k[index], v[index]) for k, v in self.self_kv]
        self.cross = [(k[index] if k.shape[0] > 1 else k, v[index] if v.shape[0] > 1 else v)
                      for k, v in self.cross]


class GPT2SelfAttention(nn.Module):
    def __init__(self, cfg, layer_idx):
        super().__init__()
        e = cfg.n_embd
        self.n_heads = cfg.n_head
        self.c_attn = Conv1D(e, 3 * e)  # q | k | v side by side
        self.c_proj = Conv1D(e, e)
        self.scale_divisor = _gpt2_scale_divisor(cfg, layer_idx)

    def forward(self, x, past=None):
        """x [N, T, E]; past (K, V) [N, H, P, hd] or None. Returns (out, (K, V) incl. new)."""
        e = x.shape[-1]
        q, k, v = self.c_attn(x).split(e, dim=2)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
        p = 0
        if past is not None:
            p = past[0].shape[2]
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        out, _ = attend(q, k, v, self.scale_divisor, causal_offset=p)
        return self.c_proj(merge_heads(out)), (k, v)


class GPT2CrossAttention(nn.Module):
    def __init__(self, cfg, layer_idx):
        super().__init__()
        e = cfg.n_embd
        self.n_heads = cfg.n_head
        self.q_attn = Conv1D(e, e)
        self.c_attn = Conv1D(e, 2 * e)  # k | v side by side
        self.c_proj = Conv1D(e, e)
        self.scale_divisor = _gpt2_scale_divisor(cfg, layer_idx)

    def memory_kv(self, memory):
        """memory [B, M, E] -> (K, V), each [B, M, E] (before the head split)."""
        return self.c_attn(memory).split(memory.shape[-1], dim=2)

    def forward(self, x, cross):
        q = split_heads(self.q_attn(x), self.n_heads)
        out, probs = attend(q, cross[0], cross[1], self.scale_divisor)  # no mask
        return self.c_proj(merge_heads(out)), probs


def _gpt2_scale_divisor(cfg, layer_idx):
    # scale_attn_weights divides by sqrt(head dim); scale_attn_by_inverse_layer_idx also by
    # (layer index + 1). transformers applies them as two successive divisions; one divisor
    # differs by at most an ulp, far below the goldens' tolerance.
    d = 1.0
    if cfg.scale_attn_weights:
        d *= math.sqrt(cfg.n_embd // cfg.n_head)
    if cfg.scale_attn_by_inverse_layer_idx:
        d *= float(layer_idx + 1)
    return d if d != 1.0 else None


class GPT2MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = Conv1D(cfg.n_embd, cfg.inner_dim)
        self.c_proj = Conv1D(cfg.inner_dim, cfg.n_embd)

    def forward(self, x):
        return self.c_proj(gelu_tanh(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, cfg, layer_idx):
        super().__init__()
        e, eps = cfg.n_embd, cfg.layer_norm_epsilon
        self.ln_1 = nn.LayerNorm(e, eps=eps)
        self.attn = GPT2SelfAttention(cfg, layer_idx)
        self.ln_cross_attn = nn.LayerNorm(e, eps=eps)
        self.crossattention = GPT2CrossAttention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(e, eps=eps)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x, cross, past=None):
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        c, cross_probs = self.crossattention(self.ln_cross_attn(x), cross)
        x = x + c
        x = x + self.mlp(self.ln_2(x))
        return x, present, cross_probs


class GPT2Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList([GPT2Block(cfg, i) for i in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)


class GPT2Decoder(nn.Module):
    def __init__(self, cfg, tie_word_embeddings=True):
        super().__init__()
        self.cfg = cfg
        self.transformer = GPT2Transformer(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def cross_kv(self, memory, trace=None):
        """Cross-attention keys/values for every layer, once per image (§5.2)."""
        kv = []
        for i, block in enumerate(self.transformer.h):
            k, v = block.crossattention.memory_kv(memory)
            _record(trace, f"cross_k_{i}", k)
            _record(trace, f"cross_v_{i}", v)
            kv.append((split_heads(k, self.cfg.n_head), split_heads(v, self.cfg.n_head)))
        return kv

    def forward(self, input_ids, cache, trace=None):
        """input_ids [N, T] continuing the `cache.length` positions already in cache.
        Returns logits [N, T, V] and updates the cache. With a fresh cache and T tokens this
        is the teacher-forced (causal) pass; with T = 1 it is one generation step."""
        n, t = input_ids.shape
        start = cache.length
        if start + t > self.cfg.n_positions:
            raise ValueError(f"position {start + t - 1} is beyond n_positions = {self.cfg.n_positions}")
        positions = torch.arange(start, start + t, device=input_ids.device)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(positions)[None]
        presents, cross_probs = [], []
        for i, block in enumerate(self.transformer.h):
            past = cache.self_kv[i] if cache.self_kv is not None else None
            x, present, probs = block(x, cache.cross[i], past)
            presents.append(present)
            cross_probs.append(probs)
        cache.self_kv = presents
        cache.length = start + t
        if trace is not None:
            # [N, layers, heads, T, M]: the attention maps `xcap attend` shows
            trace["cross_attn"] = torch.stack(cross_probs, dim=1).detach().clone()
        h = self.transformer.ln_f(x)
        return self.lm_head(h)


# ------------------------------------------------------------------------------------------
# The whole model
# ------------------------------------------------------------------------------------------

# Causal-mask buffers of old GPT-2 checkpoints: constants, not weights (§2).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".crossattention.bias",
                    ".crossattention.masked_bias")


def is_ignored_buffer(name):
    return name.startswith("decoder.transformer.h.") and name.endswith(IGNORED_SUFFIXES)


class VisionEncoderDecoder(nn.Module):
    def __init__(self, cfg, with_pooler=False):
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg.encoder, with_pooler)
        self.decoder = GPT2Decoder(cfg.decoder, cfg.tie_word_embeddings)
        if cfg.encoder.hidden_size != cfg.decoder.n_embd:
            self.enc_to_dec_proj = nn.Linear(cfg.encoder.hidden_size, cfg.decoder.n_embd)
        else:
            self.enc_to_dec_proj = None
        self.load_warnings = []

    # --- the step-by-step path ---------------------------------------------------------
    def encode(self, pixel_values, trace=None):
        """pixel_values [B, 3, H, W] -> memory [B, M, E] (CLS first, projected if D != E)."""
        memory = self.encoder(pixel_values, trace)
        if self.enc_to_dec_proj is not None:
            memory = self.enc_to_dec_proj(memory)
        _record(trace, "memory", memory)
        return memory

    def new_cache(self, memory, trace=None):
        return DecoderCache(self.decoder.cross_kv(memory, trace))

    def decode(self, input_ids, cache, trace=None):
        return self.decoder(input_ids, cache, trace)

    # --- training ----------------------------------------------------------------------
    def forward(self, pixel_values, decoder_input_ids):
        """Teacher-forced logits [B, T, V] for decoder_input_ids [B, T] (causal mask)."""
        memory = self.encode(pixel_values)
        return self.decode(decoder_input_ids, self.new_cache(memory))

    # --- files -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_dir):
        """Loads config.json + model.safetensors; weights are computed in float32 whatever
        the stored dtype. Unexpected tensors are listed in `load_warnings`."""
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            cfg = VEDConfig.from_dict(json.load(f))
        path = os.path.join(model_dir, "model.safetensors")
        stored, _ = safetensors_io.load_file(path)
        with_pooler = "encoder.pooler.dense.weight" in stored
        model = cls(cfg, with_pooler)
        expected = model.state_dict()
        state, warnings = {}, []
        for name, t in stored.items():
            if is_ignored_buffer(name):
                continue
            if name not in expected:
                warnings.append(f"{path}: unexpected tensor {name} {list(t.shape)} ignored")
                continue
            if tuple(t.shape) != tuple(expected[name].shape):
                raise ValueError(f"{path}: tensor {name}: expected {list(expected[name].shape)}, "
                                 f"found {list(t.shape)}")
            state[name] = t.to(torch.float32)
        wte, head = "decoder.transformer.wte.weight", "decoder.lm_head.weight"
        if cfg.tie_word_embeddings:
            # a shared tensor is stored once: either name may be the one present (§2)
            if wte not in state and head in state:
                state[wte] = state[head]
            elif head in state and not torch.equal(state[head], state[wte]):
                warnings.append(f"{path}: {head} differs from {wte} although the config ties "
                                f"them; {wte} is used")
            state.pop(head, None)
            expected.pop(head)
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"{path}: missing tensors: {', '.join(missing)}")
        model.load_state_dict(state, strict=False)
        model.load_warnings = warnings
        model.eval()
        return model

    def save_pretrained(self, model_dir, dtype="f32", tied_storage="wte", tokenizer=None,
                        processor=None, generation=None, tokenizer_files="vocab_merges"):
        """Writes the HF directory. dtype: f32 | f16 | bf16. tied_storage (tied models only):
        "wte" stores only the embedding (what transformers' safetensors save does), "lm_head"
        only decoder.lm_head.weight, "both" both names. tokenizer_files: "vocab_merges",
        "tokenizer_json" or "both"."""
        os.makedirs(model_dir, exist_ok=True)
        torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
        state = {k: v.detach().to(torch_dtype) for k, v in self.state_dict().items()}
        wte, head = "decoder.transformer.wte.weight", "decoder.lm_head.weight"
        if self.cfg.tie_word_embeddings:
            if tied_storage == "wte":
                del state[head]
            elif tied_storage == "lm_head":
                del state[wte]
            elif tied_storage != "both":
                raise ValueError(f"tied_storage = {tied_storage!r}")
        safetensors_io.save_file(state, os.path.join(model_dir, "model.safetensors"),
                                 metadata={"format": "pt"})
        cfg = self.cfg.to_dict()
        cfg["torch_dtype"] = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype]
        _write_json(os.path.join(model_dir, "config.json"), cfg)
        if processor is not None:
            _write_json(os.path.join(model_dir, "preprocessor_config.json"), processor.to_dict())
        if generation is not None:
            _write_json(os.path.join(model_dir, "generation_config.json"), generation)
        if tokenizer is not None:
            if tokenizer_files in ("vocab_merges", "both"):
                tokenizer.save_vocab_merges(model_dir)
            if tokenizer_files in ("tokenizer_json", "both"):
                _write_json(os.path.join(model_dir, "tokenizer.json"), tokenizer.tokenizer_json())
            _write_json(os.path.join(model_dir, "tokenizer_config.json"),
                        tokenizer_config(tokenizer, self.cfg.decoder.n_positions))
            eos = tokenizer.special_tokens[0]
            _write_json(os.path.join(model_dir, "special_tokens_map.json"),
                        {"bos_token": eos, "eos_token": eos, "pad_token": eos, "unk_token": eos})


def tokenizer_config(tokenizer, model_max_length):
    eos = tokenizer.special_tokens[0]
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(tokenizer.vocab[t]): {"content": t, "lstrip": False, "normalized": True,
                                      "rstrip": False, "single_word": False, "special": True}
            for t in tokenizer.special_tokens},
        "bos_token": eos,
        "clean_up_tokenization_spaces": tokenizer.clean_up_tokenization_spaces,
        "eos_token": eos,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": eos,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": eos,
    }


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def load_processor(model_dir):
    with open(os.path.join(model_dir, "preprocessor_config.json"), encoding="utf-8") as f:
        return ProcessorConfig.from_dict(json.load(f))


def load_tokenizer(model_dir):
    return ByteLevelBPE.from_dir(model_dir)
