#!/usr/bin/python3
"""Checks the reference against second computations written independently of it:

    /usr/bin/python3 weights/reference/test_reference.py

- a float64 numpy implementation of the whole model written from the spec text (its own
  safetensors parsing included), compared with every committed golden stage;
- Pillow's resampling re-implemented from the spec (§3) in numpy, compared with Pillow on every
  fixture image and with the committed resized/pixel_values goldens;
- beam search against brute-force enumeration, and against a plain list-based beam search
  written from the spec's description, on random toy models;
- the logits processors on hand-worked examples; greedy/sampling basics;
- safetensors reading, writing and every validation error; tokenizer ids against the npm
  gpt-3-encoder package's output; model save/load round trips; settings precedence.

Needs torch (developers run it; CI has no torch). Prints the largest golden differences.
"""

import io
import itertools
import json
import math
import os
import random
import shutil
import struct
import sys
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fixture_images  # noqa: E402
import generate  # noqa: E402
import hf_vit_gpt2 as ref  # noqa: E402
import make_goldens  # noqa: E402
from numpy_model import NumpyModel, np_resize  # noqa: E402
import safetensors_io  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(REPO, "tests", "fixtures")
MODELS = os.path.join(FIX, "models")
GOLDENS = os.path.join(FIX, "goldens")

# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------

GOLDEN_MODELS = {"tiny": "tiny", "tiny-bf16": "tiny-bf16", "wide": "wide", "gpt2vocab": "gpt2vocab"}
REPORT = {}


class GoldenStagesTest(unittest.TestCase):
    """Every committed per-stage golden against the float64 implementation."""

    def test_nearest_needs_the_accumulated_position(self):
        image = Image.fromarray(fixture_images.gradient(32, 32), "RGB")
        direct = [int((x + 0.5) * 32 / 24) for x in range(24)]
        got = np.asarray(image.resize((24, 1), resample=0))[0]
        self.assertFalse(np.array_equal(got, np.asarray(image)[16, direct]))

    def test_stages_match_float64_computation(self):
        for model_name in GOLDEN_MODELS:
            model_dir = os.path.join(MODELS, model_name)
            npm = NumpyModel.from_dir(model_dir)
            proc = ref.load_processor(model_dir)
            gdir = os.path.join(GOLDENS, model_name)
            for stem in sorted(d for d in os.listdir(gdir) if os.path.isdir(os.path.join(gdir, d))):
                g = {f[:-4]: np.load(os.path.join(gdir, stem, f)) for f in os.listdir(os.path.join(gdir, stem))}
                rgb = np.asarray(ref.load_rgb(os.path.join(FIX, "images", stem + ".png")))
                resized = np_resize(rgb, proc.width, proc.height, proc.resample)
                self.assertTrue(np.array_equal(resized, g["resized"]), f"{model_name}/{stem} resized")
                x = (resized.astype(np.float64) * proc.rescale_factor).astype(np.float32)
                x = (x - np.float32(proc.image_mean)) / np.float32(proc.image_std)
                self.assertTrue(np.array_equal(x.transpose(2, 0, 1), g["pixel_values"]),
                                f"{model_name}/{stem} pixel_values")
                stages = npm.encode(g["pixel_values"].astype(np.float64))
                for key, value in stages.items():
                    self.check(model_name, key, g[key], value)
                with open(os.path.join(gdir, "decode.json")) as f:
                    dec = json.load(f)
                greedy = [c for c in dec["cases"] if c["name"] == "greedy"
                          and c["image"].endswith(stem + ".png")][0]["hyps"][0]["tokens"]
                start = npm.cfg["decoder_start_token_id"]
                logits, cross = npm.decode([start] + greedy[:-1], stages)
                steps = g["greedy_logits"].shape[0]
                self.check(model_name, "greedy_logits", g["greedy_logits"], logits[:steps])
                self.check(model_name, "greedy_cross_attn", g["greedy_cross_attn"], cross)
                self.assertTrue(np.allclose(g["greedy_cross_attn"].sum(-1), 1.0, atol=1e-5))
                self.assertEqual(int(np.argmax(logits[0])), greedy[0])

    def check(self, model_name, key, golden, value):
        diff = float(np.abs(golden.astype(np.float64) - value).max())
        kind = key.rstrip("0123456789").rstrip("_")
        REPORT[(model_name, kind)] = max(REPORT.get((model_name, kind), 0.0), diff)
        self.assertEqual(golden.shape, value.shape, f"{model_name} {key}")
        self.assertLess(diff, 1e-4, f"{model_name} {key}")


class Float32EngineTest(unittest.TestCase):
    """numpy_model in float32 (other summation order, no torch) stands in for the C engine:
    it must reproduce every decode.json token sequence, and scores closely."""

    def test_every_decode_golden_is_reproduced(self):
        for model_name in GOLDEN_MODELS:
            model_dir = os.path.join(MODELS, model_name)
            npm = NumpyModel.from_dir(model_dir, np.float32)
            proc = ref.load_processor(model_dir)
            with open(os.path.join(GOLDENS, model_name, "decode.json")) as f:
                cases = json.load(f)["cases"]
            base = generate.load_settings(model_dir)
            memories = {}
            worst = 0.0
            for case in cases:
                if case["image"] not in memories:
                    _, pixels = ref.preprocess(ref.load_rgb(os.path.join(REPO, case["image"])), proc)
                    memories[case["image"]] = npm.encode(pixels)
                stages = memories[case["image"]]

                def step(prefixes, parents):
                    return torch.from_numpy(np.stack(
                        [npm.decode(p, stages)[0][-1] for p in prefixes.tolist()]).astype(np.float32))
                p = dict(case["params"])
                s = generate.GenerationSettings(**p, eos_token_id=base.eos_token_id,
                                                decoder_start_token_id=base.decoder_start_token_id)
                hyps = generate.generate(step, s)
                self.assertEqual([h.tokens for h in hyps], [h["tokens"] for h in case["hyps"]],
                                 (model_name, case["image"], case["name"]))
                for h, g in zip(hyps, case["hyps"]):
                    worst = max(worst, abs(h.sum_logprob - g["sum_logprob"]), abs(h.score - g["score"]))
            REPORT[(model_name, "decode scores")] = worst
            self.assertLess(worst, 1e-3, model_name)


class ResizeTest(unittest.TestCase):
    def test_spec_resampling_equals_pillow_on_every_fixture_image(self):
        for name, data in fixture_images.build_images().items():
            image = Image.open(io.BytesIO(data)).convert("RGB")
            rgb = np.asarray(image)
            for w, h, resample in make_goldens.RESIZE_CHECKS + [(5, 3, 2), (300, 2, 3), (1, 1, 2), (224, 224, 2)]:
                want = np.asarray(image.resize((w, h), resample=resample))
                got = np_resize(rgb, w, h, resample)
                self.assertTrue(np.array_equal(want, got), f"{name} -> {w}x{h} filter {resample}")

    def test_manifest_hashes(self):
        with open(os.path.join(FIX, "images", "manifest.json")) as f:
            manifest = json.load(f)
        self.assertGreaterEqual(len(manifest["images"]), 24)
        for e in manifest["images"]:
            path = os.path.join(REPO, e["file"])
            self.assertLess(os.path.getsize(path), 20 * 1024, path)
            image = ref.load_rgb(path)
            self.assertEqual(make_goldens.fnv1a32(np.asarray(image).tobytes()), e["rgb_fnv1a32"])
            for r in e["resized"]:
                out = np_resize(np.asarray(image), r["width"], r["height"], r["resample"])
                self.assertEqual(make_goldens.fnv1a32(out.tobytes()), r["fnv1a32"], (path, r))

    def test_rgb_conversion_cases(self):
        images = fixture_images.build_images()
        la = Image.open(io.BytesIO(images["grey_alpha_30x30.png"]))
        rgb = np.asarray(la.convert("RGB"))
        grey = np.asarray(la)[..., 0]
        self.assertTrue(all(np.array_equal(rgb[..., c], grey) for c in range(3)))
        rgba = Image.open(io.BytesIO(images["rgba_40x24.png"]))
        self.assertTrue(np.array_equal(np.asarray(rgba.convert("RGB")), np.asarray(rgba)[..., :3]))
        self.assertEqual(int(np.asarray(rgba)[0, 0, 3]), 0)  # colour kept under alpha 0
        rgb16 = np.asarray(Image.open(io.BytesIO(images["rgb16_20x20.png"])).convert("RGB"))
        self.assertEqual(rgb16[0, 1, 0], (1 * 3300 + 17) >> 8)  # high byte


# --- generation ---------------------------------------------------------------------------


class ToyModel:
    """Deterministic pseudo-random logits as a function of the prefix."""

    def __init__(self, vocab, seed, scale=3.0):
        self.vocab, self.seed, self.scale = vocab, seed, scale
        self.calls = 0

    def logits_for(self, prefix):
        g = torch.Generator().manual_seed(hash((self.seed,) + tuple(prefix)) % (2 ** 62))
        return torch.randn(self.vocab, generator=g) * self.scale

    def __call__(self, prefixes, parents):
        self.calls += 1
        return torch.stack([self.logits_for(p) for p in prefixes.tolist()])


def settings(**kw):
    base = dict(max_length=6, eos_token_id=[0], decoder_start_token_id=1)
    base.update(kw)
    return generate.GenerationSettings(**base)


def list_beam_search(model, s):
    """Beam search written from the spec's description (§6 'Beam search'), with lists."""
    B, lp, early = s.num_beams, s.length_penalty, s.early_stopping
    max_length = s.effective_max_length()
    K = max(2, 1 + len(s.eos_token_id)) * B
    beams = [([s.decoder_start_token_id], np.float32(0.0 if b == 0 else -1e9)) for b in range(B)]
    finished = []  # (score, sum, tokens)
    can_improve = True
    cur = 1
    while True:
        cands = []
        for b, (seq, total) in enumerate(beams):
            lps = torch.log_softmax(model.logits_for(seq), -1)
            lps = generate.process(torch.tensor([seq]), lps[None], s)[0]
            for v in range(len(lps)):
                cands.append((np.float32(total + np.float32(lps[v].item())), b * len(lps) + v, seq + [v]))
        cands.sort(key=lambda c: (-c[0], c[1]))
        top = cands[:K]
        was_full = len(finished) == B
        next_beams = []
        for rank, (total, _, seq) in enumerate(top):
            if seq[-1] in s.eos_token_id or len(seq) >= max_length:
                if rank < B and can_improve and not (was_full and early is True):
                    finished.append((np.float32(total / np.float32((len(seq) - 1) ** lp)), total, seq))
            elif len(next_beams) < B:
                next_beams.append((seq, total))
        finished = sorted(finished, key=lambda f: -f[0])[:B]
        cur += 1
        if len(next_beams) < B or all(c[2][-1] in s.eos_token_id or len(c[2]) >= max_length for c in top):
            break
        beams = next_beams
        if len(finished) == B:
            if early is True:
                break
            length = (max_length - 1) if (early == "never" and lp > 0) else (cur - 1)
            if not np.float32(beams[0][1] / np.float32(length ** lp)) > finished[-1][0]:
                break
    return [(f[2][1:], float(f[1]), float(f[0])) for f in finished[:s.num_return_sequences]]


class BeamSearchTest(unittest.TestCase):
    def test_brute_force_when_nothing_is_pruned(self):
        # V = 4 (eos = 0), 3 generated tokens at most: 1 + 3 + 27 finished sequences in all.
        for seed in range(6):
            model = ToyModel(4, seed)
            for lp, early in ((0.0, False), (1.0, "never"), (0.0, True)):
                s = settings(num_beams=16, num_return_sequences=16, max_length=4,
                             length_penalty=lp, early_stopping=early)
                got = generate.beam_search(model, s)
                if early is True:  # stops at the first 16 finished: not exhaustive
                    self.assertEqual(len(got), 16)
                    continue
                everything = []
                for n in (1, 2, 3):
                    for tail in itertools.product(range(4), repeat=n):
                        if 0 in tail[:-1] or (n < 3 and tail[-1] != 0):
                            continue
                        seq = [1] + list(tail)
                        total = sum(float(torch.log_softmax(model.logits_for(seq[:k]), -1)[seq[k]])
                                    for k in range(1, len(seq)))
                        everything.append((total / (n ** lp), seq[1:]))
                everything.sort(key=lambda e: -e[0])
                self.assertEqual([h.tokens for h in got], [e[1] for e in everything[:16]], (seed, lp))
                for h, e in zip(got, everything):
                    self.assertAlmostEqual(h.score, e[0], places=4)

    def test_equals_list_implementation_on_random_models(self):
        rng = random.Random(5)
        checked = 0
        for trial in range(300):
            B = rng.randint(1, 5)
            s = settings(num_beams=max(B, 2), max_length=rng.randint(2, 8),
                         length_penalty=rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0]),
                         early_stopping=rng.choice([False, True, "never"]),
                         repetition_penalty=rng.choice([1.0, 1.0, 1.5]),
                         no_repeat_ngram_size=rng.choice([0, 0, 2, 3]),
                         min_new_tokens=rng.choice([None, None, 2]))
            s.num_return_sequences = rng.randint(1, s.num_beams)
            model = ToyModel(rng.choice([5, 11, 40]), trial, scale=rng.choice([1.0, 3.0]))
            got = [(h.tokens, h.sum_logprob, h.score) for h in generate.beam_search(model, s)]
            want = list_beam_search(model, s)
            self.assertEqual([g[0] for g in got], [w[0] for w in want], (trial, s))
            for g, w in zip(got, want):
                self.assertAlmostEqual(g[1], w[1], places=4)
                self.assertAlmostEqual(g[2], w[2], places=4)
            checked += 1
        self.assertEqual(checked, 300)

    def test_cache_reorder_matches_recomputation(self):
        model = ref.VisionEncoderDecoder.from_pretrained(os.path.join(MODELS, "tiny"))
        pixels = torch.from_numpy(np.load(os.path.join(GOLDENS, "tiny", "circles_200x150", "pixel_values.npy")))
        with torch.no_grad():
            memory = model.encode(pixels[None])

        def recompute(prefixes, parents):
            with torch.no_grad():
                cache = model.new_cache(memory.expand(prefixes.shape[0], -1, -1))
                return model.decode(prefixes, cache)[:, -1]
        s = settings(num_beams=4, num_return_sequences=4, max_length=12,
                     eos_token_id=[299], decoder_start_token_id=299)
        a = generate.beam_search(generate.ModelStepper(model, memory), s)
        b = generate.beam_search(recompute, s)
        self.assertEqual([h.tokens for h in a], [h.tokens for h in b])
        for x, y in zip(a, b):
            self.assertAlmostEqual(x.score, y.score, places=4)

    def test_first_step_expands_beam_zero_only_and_stops_at_max_length(self):
        model = ToyModel(7, 3)
        hyps = generate.beam_search(model, settings(num_beams=3, num_return_sequences=3, max_length=3))
        self.assertEqual(len({tuple(h.tokens) for h in hyps}), 3)
        self.assertTrue(all(len(h.tokens) <= 2 for h in hyps))


class GreedyAndProcessorsTest(unittest.TestCase):
    def test_repetition_penalty(self):
        scores = torch.tensor([[2.0, -2.0, 1.0, 0.0]])
        out = generate.apply_repetition_penalty(torch.tensor([[0, 1, 1, 3]]), scores, 2.0)
        self.assertEqual(out.tolist(), [[1.0, -4.0, 1.0, 0.0]])

    def test_no_repeat_ngram(self):
        self.assertEqual(generate.banned_ngram_tokens([1, 2, 3, 1, 2], 2), [3])
        self.assertEqual(sorted(generate.banned_ngram_tokens([1, 2, 3, 1, 2], 3)), [3])
        self.assertEqual(generate.banned_ngram_tokens([5, 5], 2), [5])
        self.assertEqual(generate.banned_ngram_tokens([5], 3), [])
        out = generate.apply_no_repeat_ngram(torch.tensor([[4, 2, 4]]), torch.zeros(1, 5), 2)
        self.assertEqual(out[0].tolist(), [0, 0, -math.inf, 0, 0])

    def test_min_length_counts_the_start_token(self):
        s = settings(min_length=3)
        out = generate.process(torch.tensor([[1, 2]]), torch.zeros(1, 4), s)
        self.assertEqual(out[0, 0].item(), -math.inf)
        out = generate.process(torch.tensor([[1, 2, 3]]), torch.zeros(1, 4), s)
        self.assertEqual(out[0, 0].item(), 0.0)
        s = settings(min_new_tokens=2)
        self.assertEqual(generate.process(torch.tensor([[1, 2]]), torch.zeros(1, 4), s)[0, 0].item(), -math.inf)
        self.assertEqual(generate.process(torch.tensor([[1, 2, 3]]), torch.zeros(1, 4), s)[0, 0].item(), 0.0)

    def test_greedy_lengths_and_scores(self):
        model = ToyModel(9, 11)
        for max_length in (2, 5, 9):
            h = generate.generate(model, settings(max_length=max_length))[0]
            self.assertLessEqual(len(h.tokens), max_length - 1)
            seq, total = [1], 0.0
            for t in h.tokens:
                lps = torch.log_softmax(model.logits_for(seq), -1)
                self.assertEqual(t, int(torch.argmax(lps)))
                total += float(lps[t])
                seq.append(t)
            self.assertAlmostEqual(h.sum_logprob, total, places=5)
            self.assertEqual(h.score, h.sum_logprob)
        h = generate.generate(model, settings(max_length=9, max_new_tokens=3))[0]
        self.assertLessEqual(len(h.tokens), 3)
        with self.assertRaises(ValueError):
            generate.generate(model, settings(max_length=1))

    def test_sampling_is_reproducible_and_respects_top_k(self):
        model = ToyModel(30, 2, scale=0.5)
        s = settings(do_sample=True, top_k=1, seed=7, max_length=8)
        greedy = generate.generate(model, settings(max_length=8))[0].tokens
        self.assertEqual(generate.generate(model, s)[0].tokens, greedy)
        s = settings(do_sample=True, top_k=0, top_p=0.9, temperature=1.5, seed=3, max_length=8)
        self.assertEqual(generate.generate(model, s)[0].tokens, generate.generate(model, s)[0].tokens)

    def test_top_k_keeps_ties_and_top_p_keeps_one(self):
        s = settings(top_k=2, top_p=1.0)
        out = generate.warp_for_sampling(torch.tensor([[3.0, 1.0, 1.0, 0.0]]), s)
        self.assertEqual(out[0].tolist(), [3.0, 1.0, 1.0, -math.inf])
        s = settings(top_k=0, top_p=0.01)
        out = generate.warp_for_sampling(torch.tensor([[3.0, 1.0, 2.0]]), s)
        self.assertEqual(out[0].tolist(), [3.0, -math.inf, -math.inf])


class SettingsTest(unittest.TestCase):
    def write(self, d, name, obj):
        with open(os.path.join(d, name), "w") as f:
            json.dump(obj, f)

    def test_precedence(self):
        d = tempfile.mkdtemp()
        try:
            cfg = {"model_type": "vision-encoder-decoder", "decoder_start_token_id": 7,
                   "eos_token_id": 9, "max_length": 16, "num_beams": 4,
                   "decoder": {"bos_token_id": 5, "eos_token_id": 9, "no_repeat_ngram_size": 3,
                               "num_beams": 2}}
            self.write(d, "config.json", cfg)
            s = generate.load_settings(d)  # legacy keys; decoder fills what the top leaves default
            self.assertEqual((s.max_length, s.num_beams, s.no_repeat_ngram_size), (16, 4, 3))
            self.assertEqual((s.decoder_start_token_id, s.eos_token_id), (7, [9]))
            s = generate.load_settings(d, {"num_beams": 1, "max_new_tokens": 5})
            self.assertEqual((s.num_beams, s.effective_max_length()), (1, 6))
            self.write(d, "generation_config.json", {"num_beams": 3, "eos_token_id": 9,
                                                     "decoder_start_token_id": 7})
            s = generate.load_settings(d)  # generation_config.json alone: config keys ignored
            self.assertEqual((s.num_beams, s.max_length, s.no_repeat_ngram_size), (3, 21, 0))
            self.assertEqual(generate.load_settings(d, {"max_length": 20}).max_length, 20)
            s = generate.load_settings(os.path.join(MODELS, "tiny"))
            self.assertEqual((s.max_length, s.num_beams, s.decoder_start_token_id), (12, 1, 299))
        finally:
            shutil.rmtree(d)


# --- files ---------------------------------------------------------------------------------


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_and_layout(self):
        tensors = {"b": torch.randn(3, 4), "a": torch.randn(5).half(), "c": torch.randn(2, 2).bfloat16(),
                   "e": torch.zeros(0, 3)}
        blob = safetensors_io.dump_bytes(tensors, {"format": "pt"})
        n = struct.unpack("<Q", blob[:8])[0]
        self.assertEqual(n % 8, 0)
        header = json.loads(blob[8:8 + n])
        order = [k for k in header if k != "__metadata__"]
        self.assertEqual(order, ["b", "e", "c", "a"])  # F32, then BF16, then F16; names within
        got, meta = safetensors_io.load_bytes(blob)
        self.assertEqual(meta, {"format": "pt"})
        for k, t in tensors.items():
            self.assertEqual(got[k].dtype, t.dtype)
            self.assertTrue(torch.equal(got[k], t))

    def test_validation_errors_name_the_problem(self):
        good = safetensors_io.dump_bytes({"x": torch.ones(2, 2), "y": torch.ones(3)})
        n = struct.unpack("<Q", good[:8])[0]
        header = json.loads(good[8:8 + n])

        def with_header(h, data=None):
            text = json.dumps(h).encode()
            return struct.pack("<Q", len(text)) + text + (good[8 + n:] if data is None else data)
        cases = {
            "shorter than": good[:5],
            "runs past": struct.pack("<Q", 1000) + b"{}",
            "exceeds the": struct.pack("<Q", 200 * 1000 * 1000) + b"{}",
            "not valid": struct.pack("<Q", 3) + b"{x}",
            "not a JSON object": struct.pack("<Q", 2) + b"[]",
            "unsupported dtype": with_header(dict(header, x=dict(header["x"], dtype="I64"))),
            "tensor x: shape": with_header(dict(header, x=dict(header["x"], shape=[3, 2]))),
            "not a list": with_header(dict(header, x=dict(header["x"], shape=[-1, 2]))),
            "exceeds the data section": with_header(header, good[8 + n:-4]),
            "overlap": with_header(dict(header, y=dict(header["y"], data_offsets=[0, 12]))),
            "cover only": with_header(header, good[8 + n:] + b"\0\0\0\0"),
            "begin 16 > end": with_header(dict(header, y=dict(header["y"], data_offsets=[16, 4]))),
        }
        for expected, blob in cases.items():
            with self.assertRaisesRegex(safetensors_io.SafetensorsError, expected, msg=expected):
                safetensors_io.load_bytes(blob, "f.safetensors")
        hole = {"x": dict(header["x"], data_offsets=[4, 20])}
        with self.assertRaisesRegex(safetensors_io.SafetensorsError, "hole"):
            safetensors_io.load_bytes(with_header(hole, good[8 + n:8 + n + 20]))


class ModelFilesTest(unittest.TestCase):
    def test_state_dict_names_are_the_checkpoint_names(self):
        model = ref.VisionEncoderDecoder.from_pretrained(os.path.join(MODELS, "wide"))
        names = set(model.state_dict())
        for name in ("encoder.embeddings.cls_token", "encoder.embeddings.position_embeddings",
                     "encoder.embeddings.patch_embeddings.projection.weight",
                     "encoder.encoder.layer.2.attention.attention.query.weight",
                     "encoder.encoder.layer.0.attention.output.dense.bias",
                     "encoder.encoder.layer.1.intermediate.dense.weight",
                     "encoder.encoder.layer.1.output.dense.weight", "encoder.layernorm.bias",
                     "enc_to_dec_proj.weight", "decoder.transformer.wte.weight",
                     "decoder.transformer.h.0.crossattention.c_attn.weight",
                     "decoder.transformer.h.0.crossattention.q_attn.bias",
                     "decoder.transformer.h.0.ln_cross_attn.weight", "decoder.lm_head.weight"):
            self.assertIn(name, names)
        self.assertEqual(tuple(model.state_dict()["decoder.transformer.h.0.attn.c_attn.weight"].shape), (64, 192))
        self.assertEqual(tuple(model.state_dict()["enc_to_dec_proj.weight"].shape), (64, 96))

    def test_teacher_forced_equals_cached_steps(self):
        model = ref.VisionEncoderDecoder.from_pretrained(os.path.join(MODELS, "tiny"))
        torch.manual_seed(0)
        pixels, ids = torch.randn(3, 3, 32, 32), torch.randint(0, 300, (3, 9))
        with torch.no_grad():
            full = model(pixels, ids)
            cache = model.new_cache(model.encode(pixels))
            steps = torch.cat([model.decode(ids[:, t:t + 1], cache) for t in range(9)], 1)
        self.assertLess(float((full - steps).abs().max()), 1e-4)
        loss = torch.nn.functional.cross_entropy(model(pixels, ids).flatten(0, 1), ids.flatten())
        loss.backward()
        self.assertIsNotNone(model.encoder.embeddings.cls_token.grad)

    def test_tied_storage_variants_and_errors(self):
        d = tempfile.mkdtemp()
        try:
            model = ref.VisionEncoderDecoder.from_pretrained(os.path.join(MODELS, "tiny"))
            for storage in ("wte", "lm_head", "both"):
                model.save_pretrained(d, tied_storage=storage)
                stored, _ = safetensors_io.load_file(os.path.join(d, "model.safetensors"))
                self.assertEqual("decoder.lm_head.weight" in stored, storage != "wte")
                self.assertEqual("decoder.transformer.wte.weight" in stored, storage != "lm_head")
                again = ref.VisionEncoderDecoder.from_pretrained(d)
                for k, v in model.state_dict().items():
                    self.assertTrue(torch.equal(v, again.state_dict()[k]), k)
            stored["encoder.pooler.dense.weight"] = torch.zeros(64, 64)
            stored["encoder.pooler.dense.bias"] = torch.zeros(64)
            stored["decoder.transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
            stored["something.else"] = torch.zeros(2)
            safetensors_io.save_file(stored, os.path.join(d, "model.safetensors"))
            again = ref.VisionEncoderDecoder.from_pretrained(d)
            self.assertEqual(len(again.load_warnings), 1)
            self.assertIn("something.else", again.load_warnings[0])
            del stored["decoder.transformer.h.1.mlp.c_fc.bias"]
            stored["decoder.transformer.h.0.attn.c_attn.weight"] = torch.zeros(192, 64)
            safetensors_io.save_file(stored, os.path.join(d, "model.safetensors"))
            with self.assertRaisesRegex(ValueError, r"c_attn.weight: expected \[64, 192\], found \[192, 64\]"):
                ref.VisionEncoderDecoder.from_pretrained(d)
        finally:
            shutil.rmtree(d)

    def test_config_refusals_name_key_and_value(self):
        with open(os.path.join(MODELS, "tiny", "config.json")) as f:
            cfg = json.load(f)
        for path, value, message in ((("encoder", "hidden_act"), "relu", "hidden_act = 'relu'"),
                                     (("decoder", "activation_function"), "relu", "activation_function"),
                                     (("decoder", "reorder_and_upcast_attn"), True, "reorder_and_upcast_attn"),
                                     (("encoder", "model_type"), "deit", "deit")):
            bad = json.loads(json.dumps(cfg))
            bad[path[0]][path[1]] = value
            with self.assertRaisesRegex(ref.ConfigError, message):
                ref.VEDConfig.from_dict(bad)


class TokenizerTest(unittest.TestCase):
    # ids from the npm gpt-3-encoder package (node) for the same strings
    GPT3_ENCODER = {
        "Hello world, this is a test.": [15496, 995, 11, 428, 318, 257, 1332, 13],
        "नमस्ते दुनिया": [11976, 101, 11976, 106, 11976, 116, 24231, 235, 11976, 97, 24231, 229,
                          28225, 99, 24231, 223, 11976, 101, 11976, 123, 11976, 107, 48077],
        "你好 🌍 emoji 👍🏽": [19526, 254, 25001, 121, 12520, 234, 235, 44805, 50169, 235, 8582, 237, 121],
        "I'm here   and\tthere\n": [40, 1101, 994, 220, 220, 290, 197, 8117, 198],
        "Hello world's  big\n\nday!! 123 abc  ": [15496, 995, 338, 220, 1263, 198, 198, 820, 3228,
                                                  17031, 450, 66, 220, 220],
    }

    def test_gpt2_ids_match_gpt3_encoder(self):
        tok = ref.load_tokenizer(os.path.join(MODELS, "gpt2vocab"))
        for text, ids in self.GPT3_ENCODER.items():
            self.assertEqual(tok.encode(text), ids, text)
            self.assertEqual(tok.decode(ids), text)

    def test_decode_replaces_invalid_utf8_and_skips_eos(self):
        tok = ref.load_tokenizer(os.path.join(MODELS, "gpt2vocab"))
        # 11976 = bytes e0 a4 ("न" minus its last byte), then "!" and eos
        self.assertEqual(tok.decode([11976, 0, 50256]), "\ufffd!")
        self.assertEqual(tok.decode([0, 50256], skip_special_tokens=False), "!<|endoftext|>")

    def test_tokenizer_json_equals_vocab_merges(self):
        a = ref.load_tokenizer(os.path.join(MODELS, "tiny"))
        b = ref.load_tokenizer(os.path.join(MODELS, "tiny-tokjson"))
        self.assertFalse(os.path.exists(os.path.join(MODELS, "tiny-tokjson", "vocab.json")))
        self.assertEqual((a.vocab, a.merges, a.special_ids), (b.vocab, b.merges, b.special_ids))
        self.assertEqual(len(a.vocab), 300)
        self.assertEqual(a.vocab["<|endoftext|>"], 299)
        self.assertEqual(a.decode(a.encode("a dog on the beach")), "a dog on the beach")
        self.assertLess(len(a.encode("a dog on the beach")), len("a dog on the beach"))

    def test_clean_up_spaces_flag(self):
        wide = ref.load_tokenizer(os.path.join(MODELS, "wide"))
        self.assertTrue(wide.clean_up_tokenization_spaces)
        self.assertEqual(wide.decode(wide.encode("a cat , isn't it ?")), "a cat, isn't it?")


def print_report():
    if REPORT:
        print("\nlargest differences (stages and logits: golden vs float64 recomputation; decode scores: golden vs the float32 numpy engine):")
        for (model, kind), diff in sorted(REPORT.items()):
            print(f"  {model:10s} {kind:20s} {diff:.2e}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = unittest.main(verbosity=2, exit=False).result
    print_report()
    sys.exit(0 if result.wasSuccessful() else 1)
