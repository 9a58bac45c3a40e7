#!/usr/bin/python3
"""Writes tests/fixtures/images/ and tests/fixtures/goldens/ from the fixture checkpoints.

    /usr/bin/python3 weights/reference/make_goldens.py

Run make_fixtures.py first. Every golden comes from this reference loading the checkpoint
files back (so F16/BF16 goldens are computed from the rounded weights, in float32); none comes
from the C code. Formats are described in tests/fixtures/goldens/README.md.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixture_images  # noqa: E402
import generate  # noqa: E402
import golden_cases  # noqa: E402
import hf_vit_gpt2 as ref  # noqa: E402
import make_fixtures  # noqa: E402

REPO = make_fixtures.REPO
FIXTURES = os.path.join(REPO, "tests", "fixtures")
IMAGES_DIR = os.path.join(FIXTURES, "images")
MODELS_DIR = os.path.join(FIXTURES, "models")
GOLDENS_DIR = os.path.join(FIXTURES, "goldens")

# model -> greedy steps kept in greedy_logits.npy (None = all). With V = 50 257 a [steps, V]
# float32 dump costs 200 KB per step, so gpt2vocab keeps the first step only (decode.json
# still checks whole token sequences).
GOLDEN_MODELS = {"tiny": None, "tiny-bf16": None, "wide": None, "gpt2vocab": 1}
# Checkpoints that must reproduce another model's goldens exactly (same weight values).
SHARED_GOLDENS = {"tiny-f16": "tiny", "tiny-lmhead": "tiny", "tiny-nowte": "tiny",
                  "tiny-tokjson": "tiny"}

# Extra Pillow resize results recorded in images/manifest.json: (width, height, resample).
RESIZE_CHECKS = [(32, 32, 2), (48, 48, 2), (57, 19, 2), (24, 40, 0), (24, 40, 3)]


def fnv1a32(data):
    h = 0x811C9DC5
    for b in bytes(data):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def rel(path):
    return os.path.relpath(path, REPO).replace(os.sep, "/")


def write_images():
    os.makedirs(IMAGES_DIR, exist_ok=True)
    for old in os.listdir(IMAGES_DIR):
        if old.endswith(".png"):
            os.remove(os.path.join(IMAGES_DIR, old))
    manifest = []
    for name, data in fixture_images.build_images().items():
        path = os.path.join(IMAGES_DIR, name)
        with open(path, "wb") as f:
            f.write(data)
        rgb_image = ref.load_rgb(path)
        with ref.Image.open(path) as im:
            mode = im.mode
        rgb = np.asarray(rgb_image, dtype=np.uint8)
        entry = {"file": rel(path), "width": rgb_image.width, "height": rgb_image.height,
                 "pil_mode": mode, "rgb_fnv1a32": fnv1a32(rgb.tobytes()), "resized": []}
        for w, h, resample in RESIZE_CHECKS:
            proc = ref.ProcessorConfig(height=h, width=w, resample=resample)
            out = ref.resize_rgb(rgb_image, proc)
            entry["resized"].append({"width": w, "height": h, "resample": resample,
                                     "fnv1a32": fnv1a32(out.tobytes())})
        manifest.append(entry)
    with open(os.path.join(IMAGES_DIR, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"hash": "FNV-1a 32-bit over the row-major H x W x 3 uint8 bytes",
                   "images": manifest}, f, indent=1)
        f.write("\n")
    return [os.path.join(IMAGES_DIR, e["file"].rsplit("/", 1)[-1]) for e in manifest]


def save_npy(path, array):
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        array = array.astype("<f4")
    np.save(path, array, allow_pickle=False)


def load_model(name):
    model_dir = os.path.join(MODELS_DIR, name)
    model = ref.VisionEncoderDecoder.from_pretrained(model_dir)
    if model.load_warnings:
        raise RuntimeError(f"{name}: {model.load_warnings}")
    return (model, ref.load_processor(model_dir), ref.load_tokenizer(model_dir),
            generate.load_settings(model_dir))


def stage_dumps(model, proc, settings, image_path, out_dir, logit_steps):
    """The per-stage tensors of one image (float32 unless noted)."""
    os.makedirs(out_dir, exist_ok=True)
    resized, pixels = ref.preprocess(ref.load_rgb(image_path), proc)
    trace = {}
    with torch.no_grad():
        memory = model.encode(torch.from_numpy(pixels)[None], trace)
        model.new_cache(memory, trace)
    stepper = generate.ModelStepper(model, memory, record=True)
    hyps = generate.generate(stepper, settings)
    logits = torch.stack([l[0] for l in stepper.logits])
    if logit_steps is not None:
        logits = logits[:logit_steps]
    save_npy(os.path.join(out_dir, "resized.npy"), resized)              # uint8 [H, W, 3]
    save_npy(os.path.join(out_dir, "pixel_values.npy"), pixels)          # [3, H, W]
    for key, value in trace.items():                                    # batch row 0
        save_npy(os.path.join(out_dir, f"{key}.npy"), value[0].numpy())
    save_npy(os.path.join(out_dir, "greedy_logits.npy"), logits.numpy())  # [steps, V]
    save_npy(os.path.join(out_dir, "greedy_cross_attn.npy"),             # [steps, L, H, M]
             torch.stack([a[0] for a in stepper.cross_attn]).numpy())
    return hyps


def decode_cases(model, proc, tok, base, image_paths):
    cases = []
    problems = []
    for path in image_paths:
        _, pixels = ref.preprocess(ref.load_rgb(path), proc)
        with torch.no_grad():
            memory = model.encode(torch.from_numpy(pixels)[None])
        for case, changes in golden_cases.CASES:
            s = golden_cases.case_settings(base, changes)
            hyps, found = golden_cases.run_case(model, memory, s)
            problems += [f"{rel(path)} {case}: {p}" for p in found]
            cases.append({
                "image": rel(path),
                "name": case,
                "params": golden_cases.case_params(s),
                "hyps": [{"tokens": h.tokens, "sum_logprob": h.sum_logprob, "score": h.score,
                          "text": tok.decode(h.tokens)} for h in hyps],
            })
    return cases, problems


def write_decode_json(path, model, cases):
    """One case per line: small, and diffs show which case changed."""
    lines = [json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases]
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"model":' + json.dumps(model) + ',"cases":[\n' + ",\n".join(lines) + "\n]}\n")


def coverage(cases, eos_ids):
    """A few counts showing the cases exercise what they are meant to."""
    ended = sum(1 for c in cases for h in c["hyps"][:1] if h["tokens"] and h["tokens"][-1] in eos_ids)
    return {"cases": len(cases), "best_hyp_ends_on_eos": ended}


def main():
    torch.set_num_threads(1)
    image_paths = write_images()
    by_name = {os.path.basename(p): p for p in image_paths}
    summary = {}
    for name, logit_steps in GOLDEN_MODELS.items():
        dump_images = make_fixtures.DUMP_IMAGES[name]
        decode_images = make_fixtures.DECODE_IMAGES[name]
        model, proc, tok, base = load_model(name)
        out = os.path.join(GOLDENS_DIR, name)
        if os.path.isdir(out):
            shutil.rmtree(out)
        for image in dump_images:
            stem = os.path.splitext(image)[0]
            stage_dumps(model, proc, base, by_name[image], os.path.join(out, stem), logit_steps)
        paths = image_paths if decode_images is None else [by_name[i] for i in decode_images]
        cases, problems = decode_cases(model, proc, tok, base, paths)
        if problems:
            raise RuntimeError(f"{name}: near-ties in goldens: {problems[:5]}")
        write_decode_json(os.path.join(out, "decode.json"), rel(os.path.join(MODELS_DIR, name)), cases)
        summary[name] = coverage(cases, base.eos_token_id)
        print(name, summary[name])

    # The F16 copies of tiny must reproduce tiny's goldens bit for bit.
    tiny_cases = json.load(open(os.path.join(GOLDENS_DIR, "tiny", "decode.json"), encoding="utf-8"))
    for name, target in SHARED_GOLDENS.items():
        model, proc, tok, base = load_model(name)
        cases, _ = decode_cases(model, proc, tok, base, image_paths)
        if cases != tiny_cases["cases"]:
            raise RuntimeError(f"{name} does not reproduce {target}'s decode goldens")
        for image in make_fixtures.DUMP_IMAGES[target]:
            stem = os.path.splitext(image)[0]
            check_dir = os.path.join(GOLDENS_DIR, "_check")
            stage_dumps(model, proc, base, by_name[image], check_dir, None)
            for f in os.listdir(check_dir):
                a = np.load(os.path.join(check_dir, f))
                b = np.load(os.path.join(GOLDENS_DIR, target, stem, f))
                if not np.array_equal(a, b):
                    raise RuntimeError(f"{name}: {f} of {image} differs from {target}'s golden")
            for f in os.listdir(check_dir):
                os.remove(os.path.join(check_dir, f))
            os.rmdir(check_dir)
        print(f"{name}: reproduces {target}'s goldens exactly")


if __name__ == "__main__":
    main()
