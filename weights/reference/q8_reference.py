"""xcap's q8 arithmetic on the PyTorch reference model, for goldens of quantised models.

`to_q8(model)` turns a float32 `hf_vit_gpt2.VisionEncoderDecoder` into the model xcap runs
from a `xcap quantize --type q8` copy of the same checkpoint, following the README's
"Lighter weights" section and nn/linear.h, written here from that text and not from the C:

- weights of the linear layers (ViT query/key/value/output/MLP and the patch projection, GPT-2
  c_attn/c_proj/q_attn/c_fc and the cross-attention's c_attn, enc_to_dec_proj, the output
  projection) become int8 per output channel: s = max|w| / 127 (float32), q = round(w / s),
  ties to even, clamped to +-127; a tied model's token embeddings are read back as q * s;
- each input row of such a layer is cut into blocks of 32 (the last one padded with zeros);
  a block with largest magnitude m >= 2^-100 gets d = m / 32767 and v = round(x * (32767 / m))
  (float32 products, ties to even), a smaller one d = 0 and v = 0;
- y[n] = fma(acc, s[n], b[n]) with acc = 0, acc = fma(float(sum_b v*q[:, n]), d_b, acc) over
  the blocks in order; the integer sums are exact (float64 here), fma is done in float64 and
  rounded once to float32 (it can differ from a true fma in the last bit, rarely);
- the cross-attention keys and values made by a q8 layer are kept rounded to IEEE half (nearest,
  ties to even), as xcap caches them.
"""

import torch
from torch import nn

import hf_vit_gpt2 as ref

BLOCK = 32
TINY = 2.0 ** -100


def quantize_channels(w):
    """w [N, K] float32 -> (q [N, K] int8 values as float64, s [N] float32)."""
    w = w.detach().to(torch.float32)
    s = w.abs().amax(dim=1) / torch.tensor(127.0, dtype=torch.float32)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.round(w / safe[:, None]).clamp(-127, 127)
    q = torch.where(s[:, None] > 0, q, torch.zeros_like(q))
    return q.to(torch.float64), s


def fma32(a, b, c):
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


def quantize_rows(x):
    """x [R, K] float32 -> (v [R, blocks, 32] float64 integers, d [R, blocks] float32)."""
    r, k = x.shape
    kp = (k + BLOCK - 1) // BLOCK * BLOCK
    xp = torch.zeros(r, kp, dtype=torch.float32)
    xp[:, :k] = x
    xb = xp.view(r, kp // BLOCK, BLOCK)
    m = xb.abs().amax(dim=2)
    big = m >= TINY
    safe = torch.where(big, m, torch.ones_like(m))
    inv = torch.where(big, torch.tensor(32767.0) / safe, torch.zeros_like(m))
    d = torch.where(big, safe / torch.tensor(32767.0), torch.zeros_like(m))
    v = torch.round(xb * inv[:, :, None]).clamp(-32767, 32767)
    return v.to(torch.float64), d


class Q8Linear(nn.Module):
    """y = x W^T + b with W [N, K] quantised per row, computed as xcap does."""

    def __init__(self, weight_nk, bias):
        super().__init__()
        self.q, self.s = quantize_channels(weight_nk)
        n, k = self.q.shape
        self.k = k
        kp = (k + BLOCK - 1) // BLOCK * BLOCK
        qp = torch.zeros(n, kp, dtype=torch.float64)
        qp[:, :k] = self.q
        self.qb = qp.view(n, kp // BLOCK, BLOCK)
        self.b = (bias.detach().to(torch.float32) if bias is not None else torch.zeros(n, dtype=torch.float32))

    def dequantised(self):
        return self.q.to(torch.float32) * self.s[:, None]

    def forward(self, x):
        shape = x.shape
        v, d = quantize_rows(x.reshape(-1, self.k).to(torch.float32))
        sums = torch.einsum("rbk,nbk->rbn", v, self.qb).to(torch.float32)  # exact, then rounded
        acc = torch.zeros(v.shape[0], self.qb.shape[0], dtype=torch.float32)
        for blk in range(v.shape[1]):
            acc = fma32(sums[:, blk, :], d[:, blk, None], acc)
        y = fma32(acc, self.s[None, :], self.b[None, :])
        return y.view(*shape[:-1], self.qb.shape[0])


class Q8Conv1D(Q8Linear):
    """GPT-2's Conv1D (weight [in, out])."""

    def __init__(self, conv):
        super().__init__(conv.weight.detach().t(), conv.bias)


class HalfKV(nn.Module):
    """The cross-attention's key/value layer with its outputs rounded to half precision."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, memory):
        return self.layer(memory).to(torch.float16).to(torch.float32)


class Q8PatchProjection(nn.Module):
    """ViT's patch Conv2d (kernel = stride = P) as one q8 product over flattened patches."""

    def __init__(self, conv):
        super().__init__()
        self.p = conv.kernel_size[0]
        self.linear = Q8Linear(conv.weight.detach().reshape(conv.weight.shape[0], -1), conv.bias)

    def forward(self, pixel_values):
        b, c, h, w = pixel_values.shape
        p = self.p
        patches = pixel_values.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)
        y = self.linear(patches)                               # [B, n, D]
        return y.transpose(1, 2).reshape(b, -1, h // p, w // p)  # as the Conv2d's output


def to_q8(model):
    """Replaces the quantised layers of `model` in place; returns it."""
    enc = model.encoder
    enc.embeddings.patch_embeddings.projection = Q8PatchProjection(enc.embeddings.patch_embeddings.projection)
    for layer in enc.encoder.layer:
        att = layer.attention.attention
        att.query, att.key, att.value = (Q8Linear(m.weight, m.bias) for m in (att.query, att.key, att.value))
        layer.attention.output.dense = Q8Linear(layer.attention.output.dense.weight, layer.attention.output.dense.bias)
        layer.intermediate.dense = Q8Linear(layer.intermediate.dense.weight, layer.intermediate.dense.bias)
        layer.output.dense = Q8Linear(layer.output.dense.weight, layer.output.dense.bias)
    if model.enc_to_dec_proj is not None:
        model.enc_to_dec_proj = Q8Linear(model.enc_to_dec_proj.weight, model.enc_to_dec_proj.bias)
    for block in model.decoder.transformer.h:
        block.attn.c_attn = Q8Conv1D(block.attn.c_attn)
        block.attn.c_proj = Q8Conv1D(block.attn.c_proj)
        cross = block.crossattention
        cross.q_attn, cross.c_proj = Q8Conv1D(cross.q_attn), Q8Conv1D(cross.c_proj)
        cross.c_attn = HalfKV(Q8Conv1D(cross.c_attn))
        block.mlp.c_fc = Q8Conv1D(block.mlp.c_fc)
        block.mlp.c_proj = Q8Conv1D(block.mlp.c_proj)
    dec = model.decoder
    tied = dec.lm_head.weight is dec.transformer.wte.weight
    head = Q8Linear(dec.lm_head.weight, None)
    if tied:
        with torch.no_grad():
            dec.transformer.wte.weight.copy_(head.dequantised())
    dec.lm_head = head
    return model


def load_q8(model_dir):
    return to_q8(ref.VisionEncoderDecoder.from_pretrained(model_dir))
