"""A second implementation of the model and of Pillow's resampling, in numpy, written from
the spec text (../../shared/spec/hf-vit-gpt2.md §3-§5) without using hf_vit_gpt2.py: its own
safetensors parsing, explicit patch GEMM, per-head attention loops.

Used by test_reference.py to check every golden (in float64), and by make_fixtures.py to pick
seeds whose goldens a float32 engine with another summation order reproduces comfortably
(run in float32 it stands in for such an engine).
"""

import json
import math
import os
import struct

import numpy as np

# ------------------------------------------------------------------------------------------
# The model, from the spec text (float64 by default)
# ------------------------------------------------------------------------------------------


def np_read_safetensors(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        raw = data[e["data_offsets"][0]:e["data_offsets"][1]]
        if e["dtype"] == "F32":
            a = np.frombuffer(raw, "<f4").astype(np.float64)
        elif e["dtype"] == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float64)
        elif e["dtype"] == "BF16":  # the upper half of a float32
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
        out[name] = a.reshape(e["shape"])
    return out


def np_layernorm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


_erf = np.vectorize(math.erf)


def np_mha(q, k, v, heads, causal=False):
    """q [Tq, C], k/v [Tk, C] -> (out [Tq, C], probs [heads, Tq, Tk])."""
    hd = q.shape[1] // heads
    outs, probs = [], []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        s = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
        if causal:
            s = np.where(np.tril(np.ones_like(s, dtype=bool)), s, -np.inf)
        p = np_softmax(s)
        probs.append(p)
        outs.append(p @ v[:, sl])
    return np.concatenate(outs, axis=1), np.stack(probs)


class NumpyModel:
    """config.json + weights; computes in `dtype` (float64: a precise second opinion;
    float32: a stand-in for another float32 engine)."""

    def __init__(self, config, weights, dtype=np.float64):
        self.cfg = config
        self.dtype = dtype
        self.w = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}
        if "decoder.transformer.wte.weight" not in self.w:
            self.w["decoder.transformer.wte.weight"] = self.w["decoder.lm_head.weight"]

    @classmethod
    def from_dir(cls, model_dir, dtype=np.float64):
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        return cls(config, np_read_safetensors(os.path.join(model_dir, "model.safetensors")), dtype)

    def encode(self, pixels):
        """pixels [3, H, W] -> dict of stages (spec §4)."""
        w, enc = self.w, self.cfg["encoder"]
        pixels = np.asarray(pixels, dtype=self.dtype)
        p, eps, heads = enc["patch_size"], enc.get("layer_norm_eps", 1e-12), enc["num_attention_heads"]
        g = pixels.shape[1] // p
        patches = [pixels[:, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1)
                   for r in range(g) for c in range(g)]
        wp = w["encoder.embeddings.patch_embeddings.projection.weight"]
        pe = np.stack(patches) @ wp.reshape(wp.shape[0], -1).T + w["encoder.embeddings.patch_embeddings.projection.bias"]
        x = np.concatenate([w["encoder.embeddings.cls_token"][0], pe]) + w["encoder.embeddings.position_embeddings"][0]
        stages = {"patch_embeddings": pe, "embeddings": x}
        x = x.astype(self.dtype)
        for i in range(enc["num_hidden_layers"]):
            L = f"encoder.encoder.layer.{i}."

            def lin(name, t):
                return t @ w[L + name + ".weight"].T + w[L + name + ".bias"]
            a = np_layernorm(x, w[L + "layernorm_before.weight"], w[L + "layernorm_before.bias"], eps)
            att, _ = np_mha(lin("attention.attention.query", a), lin("attention.attention.key", a),
                            lin("attention.attention.value", a), heads)
            h = x + lin("attention.output.dense", att)
            m = np_layernorm(h, w[L + "layernorm_after.weight"], w[L + "layernorm_after.bias"], eps)
            u = lin("intermediate.dense", m)
            x = h + lin("output.dense", (0.5 * u * (1 + _erf(u / math.sqrt(2)))).astype(self.dtype))
            stages[f"enc_layer_{i}"] = x
        mem = np_layernorm(x, w["encoder.layernorm.weight"], w["encoder.layernorm.bias"], eps)
        if "enc_to_dec_proj.weight" in w:
            mem = mem @ w["enc_to_dec_proj.weight"].T + w["enc_to_dec_proj.bias"]
        stages["memory"] = mem
        E = self.cfg["decoder"]["n_embd"]
        for i in range(self.cfg["decoder"]["n_layer"]):
            L = f"decoder.transformer.h.{i}.crossattention."
            kv = mem @ w[L + "c_attn.weight"] + w[L + "c_attn.bias"]
            stages[f"cross_k_{i}"], stages[f"cross_v_{i}"] = kv[:, :E], kv[:, E:]
        return stages

    def decode(self, tokens, stages):
        """Teacher-forced decoder over tokens (start first): logits [T, V], cross probs
        [T, layers, heads, M] (spec §5)."""
        w, dec = self.w, self.cfg["decoder"]
        E, heads, eps = dec["n_embd"], dec["n_head"], dec.get("layer_norm_epsilon", 1e-5)
        x = w["decoder.transformer.wte.weight"][tokens] + w["decoder.transformer.wpe.weight"][:len(tokens)]
        cross = []
        for i in range(dec["n_layer"]):
            L = f"decoder.transformer.h.{i}."

            def conv(name, t):
                return t @ w[L + name + ".weight"] + w[L + name + ".bias"]

            def ln(name, t):
                return np_layernorm(t, w[L + name + ".weight"], w[L + name + ".bias"], eps)
            qkv = conv("attn.c_attn", ln("ln_1", x))
            att, _ = np_mha(qkv[:, :E], qkv[:, E:2 * E], qkv[:, 2 * E:], heads, causal=True)
            x = x + conv("attn.c_proj", att)
            q = conv("crossattention.q_attn", ln("ln_cross_attn", x))
            att, probs = np_mha(q, stages[f"cross_k_{i}"], stages[f"cross_v_{i}"], heads)
            cross.append(probs)
            x = x + conv("crossattention.c_proj", att)
            u = conv("mlp.c_fc", ln("ln_2", x))
            x = x + conv("mlp.c_proj", 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3))))
        h = np_layernorm(x, w["decoder.transformer.ln_f.weight"], w["decoder.transformer.ln_f.bias"], eps)
        return h @ w["decoder.transformer.wte.weight"].T, np.stack(cross).transpose(2, 0, 1, 3)


# ------------------------------------------------------------------------------------------
# Pillow's resampling, from the spec text (§3)
# ------------------------------------------------------------------------------------------


def _bilinear(x):
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x, a=-0.5):
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def resample_axis(src, out_size, kernel, base_support):
    """src [in, n, 3] uint8 -> [out, n, 3] uint8 along axis 0."""
    in_size = src.shape[0]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    out = np.empty((out_size,) + src.shape[1:], np.uint8)
    for x in range(out_size):
        center = (x + 0.5) * scale
        xmin = max(0, int(center - support + 0.5))
        xmax = min(in_size, int(center + support + 0.5))
        ws = [kernel((i - center + 0.5) * (1.0 / filterscale)) for i in range(xmin, xmax)]
        total = sum(ws)
        ks = [int(w / total * (1 << 22) + (0.5 if w / total >= 0 else -0.5)) for w in ws]
        acc = np.full(src.shape[1:], 1 << 21, dtype=np.int64)
        for i, k in zip(range(xmin, xmax), ks):
            acc += src[i].astype(np.int64) * k
        out[x] = np.clip(acc >> 22, 0, 255)
    return out


def np_resize(rgb, width, height, resample):
    if resample == 0:
        # NEAREST goes through Pillow's affine scaling, which *accumulates* the position in
        # double: x_0 = scale / 2, x_{i+1} = x_i + scale, source index (int)x_i. Computing
        # (i + 0.5) * scale directly differs when it lands on an integer (e.g. 32 -> 24).
        def positions(n_in, n_out):
            scale, pos, out = n_in / n_out, 0.5 * (n_in / n_out), []
            for _ in range(n_out):
                out.append(int(pos))
                pos += scale
            return out
        return rgb[positions(rgb.shape[0], height)][:, positions(rgb.shape[1], width)]
    kernel, support = {2: (_bilinear, 1.0), 3: (_bicubic, 2.0)}[resample]
    out = rgb
    if width != rgb.shape[1]:  # horizontal pass first
        out = resample_axis(out.transpose(1, 0, 2), width, kernel, support).transpose(1, 0, 2)
    if height != rgb.shape[0]:
        out = resample_axis(out, height, kernel, support)
    return out
