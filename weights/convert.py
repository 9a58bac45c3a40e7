#!/usr/bin/python3
"""Converts a checkpoint's pytorch_model.bin to model.safetensors, offline, with torch only.

    /usr/bin/python3 weights/convert.py MODEL_DIR [--dtype keep|f32|f16|bf16] [--force]

Reads MODEL_DIR/pytorch_model.bin (a torch state_dict, as transformers saves it) and writes
MODEL_DIR/model.safetensors, which xcap loads (spec §1-§2):

- dtypes are kept unless --dtype asks for one (floating tensors only);
- the causal-mask buffers of old GPT-2 checkpoints (attn.bias, attn.masked_bias,
  crossattention.bias, crossattention.masked_bias) are dropped: they are constants;
- tensors that share storage (the tied decoder.lm_head.weight / transformer.wte.weight) are
  stored once, under the embedding's name, as transformers' own safetensors save does; an
  untied-in-the-file but equal lm_head of a model whose config ties them is dropped likewise.

Nothing is downloaded. The conversion is deterministic: the same input gives the same bytes.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))

import safetensors_io  # noqa: E402

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
MASK_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".crossattention.bias",
                        ".crossattention.masked_bias")
WTE = "decoder.transformer.wte.weight"
LM_HEAD = "decoder.lm_head.weight"


class ConvertError(Exception):
    pass


def load_state_dict(path):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch older than 1.13 has no weights_only
        state = torch.load(path, map_location="cpu")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConvertError(f"{path}: not a flat state_dict of tensors")
    return state


def is_mask_buffer(name):
    return name.endswith(MASK_BUFFER_SUFFIXES) and ".h." in name


def _storage_key(t):
    try:
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
    except AttributeError:  # torch < 2.0
        return (t.storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def dedupe_shared(state, notes):
    """Keeps one name per group of tensors sharing the same storage view."""
    groups = {}
    for name, t in state.items():
        groups.setdefault(_storage_key(t), []).append(name)
    out = dict(state)
    for names in groups.values():
        if len(names) < 2:
            continue
        keep = WTE if WTE in names else sorted(names)[0]
        for name in names:
            if name != keep:
                del out[name]
                notes.append(f"{name} shares storage with {keep}: stored once as {keep}")
    return out


def convert(model_dir, dtype="keep", force=False):
    """Returns (output path, notes)."""
    src = os.path.join(model_dir, "pytorch_model.bin")
    dst = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(src):
        raise ConvertError(f"{src}: not found")
    if os.path.exists(dst) and not force:
        raise ConvertError(f"{dst} exists (use --force to overwrite)")
    tied = True
    cfg_path = os.path.join(model_dir, "config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            tied = json.load(f).get("tie_word_embeddings", True)

    notes = []
    state = load_state_dict(src)
    for name in [n for n in state if is_mask_buffer(n)]:
        del state[name]
        notes.append(f"{name}: causal-mask buffer dropped")
    state = dedupe_shared(state, notes)
    if tied and LM_HEAD in state and WTE in state and torch.equal(state[LM_HEAD], state[WTE]):
        del state[LM_HEAD]
        notes.append(f"{LM_HEAD} equals {WTE} and the config ties them: stored once as {WTE}")

    out = {}
    for name, t in state.items():
        if not t.is_floating_point():
            raise ConvertError(f"{src}: tensor {name} has dtype {t.dtype}; only floating tensors "
                               f"can be stored for xcap")
        if dtype != "keep":
            t = t.to(DTYPES[dtype])
        elif t.dtype not in DTYPES.values():
            raise ConvertError(f"{src}: tensor {name} is {t.dtype}; pass --dtype f32|f16|bf16")
        out[name] = t.contiguous()
    tmp = dst + ".tmp"
    safetensors_io.save_file(out, tmp, metadata={"format": "pt"})
    os.replace(tmp, dst)
    return dst, notes


def main(argv=None):
    parser = argparse.ArgumentParser(description="pytorch_model.bin -> model.safetensors")
    parser.add_argument("model_dir")
    parser.add_argument("--dtype", choices=["keep", "f32", "f16", "bf16"], default="keep")
    parser.add_argument("--force", action="store_true", help="overwrite model.safetensors")
    args = parser.parse_args(argv)
    try:
        dst, notes = convert(args.model_dir, args.dtype, args.force)
    except (ConvertError, safetensors_io.SafetensorsError, OSError) as e:
        print(f"convert: {e}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"convert: {note}", file=sys.stderr)
    print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
