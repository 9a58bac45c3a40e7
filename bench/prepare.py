#!/usr/bin/python3
"""Inputs of the benchmark (bench/run.sh), made at bench time and never committed.

    /usr/bin/python3 bench/prepare.py images OUT_DIR N
        N scenes of the default model's world (seed 7, as bench/batch_bench.sh and the
        examples: neither the training nor the validation stream), OUT_DIR/scene_0000.png ...
    /usr/bin/python3 bench/prepare.py base-model OUT_DIR
        a checkpoint with the exact shapes of nlpconnect/vit-gpt2-image-captioning: ViT-base
        224/16 (12 layers, width 768, 12 heads, MLP 3072), GPT-2 124M with cross-attention
        (12 layers, width 768, vocabulary 50 257, 1024 positions, the real GPT-2 BPE), random
        weights drawn as transformers initialises them (normal 0.02, layernorms 1 and 0).
    /usr/bin/python3 bench/prepare.py onnx MODEL_DIR OUT_DIR IMAGE_DIR N
        the model as three ONNX graphs for ONNX Runtime (encoder, cross K/V, one decoder step
        with its self-attention cache), exported from the PyTorch reference with
        torch.onnx.export, and the reference's pixel values of the first N images (ONNX
        Runtime gets no preprocessing of its own), with meta.json describing them.
"""

import json
import os
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "weights", "reference"))
sys.path.insert(0, os.path.join(REPO, "weights", "world"))

import generate  # noqa: E402
import hf_vit_gpt2 as ref  # noqa: E402

ONNX_OPSET = 17  # LayerNormalization is one op from 17 on


def scene_images(out_dir, n):
    from PIL import Image
    from world import World
    os.makedirs(out_dir, exist_ok=True)
    world = World()
    for i in range(n):
        path = os.path.join(out_dir, "scene_%04d.png" % i)
        if not os.path.exists(path):
            Image.fromarray(world.render(world.scene(7, 1000 + i, "train"))).save(path)


def base_model(out_dir):
    import make_fixtures
    tok = make_fixtures.gpt2_tokenizer()
    eos = tok.vocab["<|endoftext|>"]
    cfg = make_fixtures.ved_config(
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
             image_size=224, patch_size=16),
        dict(vocab_size=len(tok.vocab), n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None), eos)
    model = ref.VisionEncoderDecoder(cfg)
    g = torch.Generator().manual_seed(2024)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = any(k in name for k in ("layernorm", ".ln_", "ln_f"))
            if is_norm and name.endswith("weight"):
                p.fill_(1.0)
            elif is_norm or name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    spec = dict(tokenizer=tok, proc=ref.ProcessorConfig(), generation=make_fixtures.generation_config(eos, 20),
                copy_vocab_from=make_fixtures.GPT2_VOCAB_DIR)
    partial = out_dir + ".partial"
    make_fixtures.write_model(model, spec, partial, "f32")
    os.rename(partial, out_dir)


class EncoderGraph(nn.Module):
    """pixel_values [B, 3, S, S] -> memory [B, M, E] (projected to the decoder width)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.encode(pixel_values)


class CrossKVGraph(nn.Module):
    """memory [B, M, E] -> cross keys and values of every layer, each [L, B, H, M, hd]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, memory):
        kv = self.model.decoder.cross_kv(memory)
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class DecoderStepGraph(nn.Module):
    """One position for N rows: input_ids [N, 1], position [1], self-attention cache past_k/v
    [L, N, H, P, hd] (P may be 0), cross_k/v [L, N, H, M, hd] -> logits [N, V] and the cache
    with this position appended [L, N, H, P + 1, hd]. The reference's own blocks do the work;
    only the position comes in as a tensor (the reference keeps it as a Python int)."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, input_ids, position, past_k, past_v, cross_k, cross_v):
        t = self.decoder.transformer
        x = t.wte(input_ids) + t.wpe(position)[None]
        keys, values = [], []
        for i, block in enumerate(t.h):
            x, (k, v), _ = block(x, (cross_k[i], cross_v[i]), (past_k[i], past_v[i]))
            keys.append(k)
            values.append(v)
        logits = self.decoder.lm_head(t.ln_f(x))[:, -1, :]
        return logits, torch.stack(keys), torch.stack(values)


def export_onnx(model_dir, out_dir, image_dir, n_images):
    from PIL import Image
    model = ref.VisionEncoderDecoder.from_pretrained(model_dir)
    proc = ref.load_processor(model_dir)
    cfg = model.cfg
    L, H, E = cfg.decoder.n_layer, cfg.decoder.n_head, cfg.decoder.n_embd
    hd, S = E // H, cfg.encoder.image_size
    M = cfg.encoder.n_patches + 1
    os.makedirs(out_dir, exist_ok=True)
    common = dict(opset_version=ONNX_OPSET, do_constant_folding=True)
    with torch.no_grad():
        pixels = torch.zeros(2, 3, S, S)
        torch.onnx.export(EncoderGraph(model), (pixels,), os.path.join(out_dir, "encoder.onnx"),
                          input_names=["pixel_values"], output_names=["memory"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "memory": {0: "batch"}}, **common)
        memory = model.encode(pixels)
        torch.onnx.export(CrossKVGraph(model), (memory,), os.path.join(out_dir, "cross_kv.onnx"),
                          input_names=["memory"], output_names=["cross_k", "cross_v"],
                          dynamic_axes={"memory": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}},
                          **common)
        rows, past = 2, 3
        args = (torch.zeros(rows, 1, dtype=torch.long), torch.tensor([past]),
                torch.zeros(L, rows, H, past, hd), torch.zeros(L, rows, H, past, hd),
                torch.zeros(L, rows, H, M, hd), torch.zeros(L, rows, H, M, hd))
        cache = {1: "rows", 3: "past"}
        torch.onnx.export(DecoderStepGraph(model), args, os.path.join(out_dir, "decoder_step.onnx"),
                          input_names=["input_ids", "position", "past_k", "past_v", "cross_k", "cross_v"],
                          output_names=["logits", "present_k", "present_v"],
                          dynamic_axes={"input_ids": {0: "rows"}, "past_k": cache, "past_v": cache,
                                        "cross_k": {1: "rows"}, "cross_v": {1: "rows"}, "logits": {0: "rows"},
                                        "present_k": {1: "rows", 3: "total"}, "present_v": {1: "rows", 3: "total"}},
                          **common)
    names = sorted(f for f in os.listdir(image_dir) if f.endswith(".png"))[:n_images]
    pixel_values = np.stack([ref.preprocess(ref.load_rgb(os.path.join(image_dir, f)), proc)[1] for f in names])
    pixel_values.astype("<f4").tofile(os.path.join(out_dir, "pixels.bin"))
    settings = generate.load_settings(model_dir)
    meta = dict(image_size=S, n_memory=M, layers=L, heads=H, head_dim=hd, vocab_size=cfg.decoder.vocab_size,
                start_token=settings.decoder_start_token_id, eos_token=settings.eos_token_id, images=names)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main(argv):
    torch.set_num_threads(1)  # beside the training job; none of this is timed
    if len(argv) == 3 and argv[0] == "images":
        scene_images(argv[1], int(argv[2]))
    elif len(argv) == 2 and argv[0] == "base-model":
        base_model(argv[1])
    elif len(argv) == 5 and argv[0] == "onnx":
        export_onnx(argv[1], argv[2], argv[3], int(argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
