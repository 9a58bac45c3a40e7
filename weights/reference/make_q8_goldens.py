"""Writes the goldens of q8 copies of the fixture models (never from the C code).

    /usr/bin/python3 weights/reference/make_q8_goldens.py

- tests/fixtures/goldens/<model>-q8/<image>/: per-stage tensors as make_goldens.py writes them
  (see tests/fixtures/goldens/README.md), for STAGE_MODELS, on the images of the model's float
  goldens; tests/test_forward.c checks `xcap_quantize` copies against them;
- tests/fixtures/goldens/q8_captions.json: the captions `xcap caption --json` writes for each
  model tests/test_quantize.sh quantises, on that test's four images.

For each model tests/test_quantize.sh quantises, the reference model is turned into xcap's q8
arithmetic by q8_reference.to_q8 (from the float checkpoint, by the documented rule; the test
checks separately that `xcap quantize` writes exactly those int8 values and scales) and
captions the test's four images with the model's own generation settings, as `xcap caption`
does. Each record carries the near-tie problems of its decisions (golden_cases.near_ties):
the file is refused if any decision is within rounding noise, since then a correct engine
could legitimately pick the other token.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import generate  # noqa: E402
import golden_cases  # noqa: E402
import hf_vit_gpt2 as ref  # noqa: E402
import make_fixtures  # noqa: E402
import make_goldens  # noqa: E402
import q8_reference  # noqa: E402

REPO = make_fixtures.REPO
MODELS = ("tiny", "tiny-lmhead", "tiny-bf16", "wide", "gpt2vocab")
IMAGES = ("circles_200x150", "gradient_32x32", "noise_17x23", "stripes_100x37")
GOLDENS = os.path.join(REPO, "tests", "fixtures", "goldens")
OUT = os.path.join(GOLDENS, "q8_captions.json")
STAGE_MODELS = ("tiny", "wide")


def write_stages(name):
    model_dir = os.path.join(REPO, "tests", "fixtures", "models", name)
    model = q8_reference.load_q8(model_dir)
    proc = ref.load_processor(model_dir)
    settings = generate.load_settings(model_dir)
    out_root = os.path.join(GOLDENS, name + "-q8")
    for stem in sorted(os.listdir(os.path.join(GOLDENS, name))):
        if os.path.isdir(os.path.join(GOLDENS, name, stem)):
            image = os.path.join(REPO, "tests", "fixtures", "images", stem + ".png")
            make_goldens.stage_dumps(model, proc, settings, image, os.path.join(out_root, stem), None)


def main():
    for name in STAGE_MODELS:
        write_stages(name)
    result, problems = {}, []
    for name in MODELS:
        model_dir = os.path.join(REPO, "tests", "fixtures", "models", name)
        model = q8_reference.load_q8(model_dir)
        proc = ref.load_processor(model_dir)
        settings = generate.load_settings(model_dir)
        records = []
        for stem in IMAGES:
            image = f"tests/fixtures/images/{stem}.png"
            _, pixels = ref.preprocess(ref.load_rgb(os.path.join(REPO, image)), proc)
            with torch.no_grad():
                memory = model.encode(torch.from_numpy(pixels)[None])
                hyps, found = golden_cases.run_case(model, memory, settings)
            problems += [f"{name} {image}: {p}" for p in found]
            best = hyps[0]
            records.append({"file": image, "tokens": best.tokens, "sum_logprob": best.sum_logprob,
                            "score": best.score})
        result[name] = records
        print(name, [r["tokens"][:6] for r in records], flush=True)
    if problems:
        raise SystemExit("near ties, goldens not written:\n" + "\n".join(problems))
    with open(OUT, "w", encoding="utf-8") as f:
        f.write('{"what": "xcap caption --json of q8 copies, from weights/reference/make_q8_goldens.py",\n')
        f.write(' "models": {\n')
        f.write(",\n".join(f"  {json.dumps(k)}: [\n" + ",\n".join("   " + json.dumps(r) for r in v) + "]"
                           for k, v in result.items()))
        f.write("\n }}\n")


if __name__ == "__main__":
    main()
