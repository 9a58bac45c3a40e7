#!/usr/bin/python3
"""Tests weights/convert.py (needs torch, so developers run it; CI has no torch):

    /usr/bin/python3 weights/reference/test_convert.py

Saves the tiny fixture as a transformers-style pytorch_model.bin (tied lm_head sharing the
embedding's storage, old causal-mask buffers), converts it, and checks the result against the
fixture's own model.safetensors.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import convert  # noqa: E402
import hf_vit_gpt2 as ref  # noqa: E402
import safetensors_io  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MODELS = os.path.join(REPO, "tests", "fixtures", "models")


def bin_state_dict(model):
    """What transformers' torch.save of a GPT-2-era checkpoint holds: the tied lm_head is the
    same tensor as wte, and every attention module carries its mask buffers."""
    state = model.state_dict()
    n_pos = model.cfg.decoder.n_positions
    mask = torch.tril(torch.ones(n_pos, n_pos, dtype=torch.uint8)).view(1, 1, n_pos, n_pos)
    for i in range(model.cfg.decoder.n_layer):
        for part in ("attn", "crossattention"):
            state[f"decoder.transformer.h.{i}.{part}.bias"] = mask
            state[f"decoder.transformer.h.{i}.{part}.masked_bias"] = torch.tensor(-1e4)
    return state


class ConvertTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="xcap-convert-")
        self.model = ref.VisionEncoderDecoder.from_pretrained(os.path.join(MODELS, "tiny"))
        shutil.copy(os.path.join(MODELS, "tiny", "config.json"), self.dir)
        torch.save(bin_state_dict(self.model), os.path.join(self.dir, "pytorch_model.bin"))

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_bin_really_shares_the_embedding(self):
        state = torch.load(os.path.join(self.dir, "pytorch_model.bin"))
        self.assertEqual(state["decoder.lm_head.weight"].data_ptr(),
                         state["decoder.transformer.wte.weight"].data_ptr())

    def test_f32_conversion_reproduces_the_fixture_bytes(self):
        dst, notes = convert.convert(self.dir)
        with open(dst, "rb") as a, open(os.path.join(MODELS, "tiny", "model.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        got, _ = safetensors_io.load_file(dst)
        self.assertNotIn("decoder.lm_head.weight", got)
        self.assertFalse([n for n in got if n.endswith((".attn.bias", "masked_bias"))])
        for name, t in got.items():
            self.assertTrue(torch.equal(t, self.model.state_dict()[name]), name)
        self.assertEqual(sum("buffer dropped" in n for n in notes), 4 * self.model.cfg.decoder.n_layer)

    def test_dtype_option_matches_the_f16_and_bf16_fixtures(self):
        for dtype, fixture in (("f16", "tiny-f16"), ("bf16", "tiny-bf16")):
            dst, _ = convert.convert(self.dir, dtype=dtype, force=True)
            got, _ = safetensors_io.load_file(dst)
            want, _ = safetensors_io.load_file(os.path.join(MODELS, fixture, "model.safetensors"))
            self.assertEqual(sorted(got), sorted(want))
            for name in want:
                self.assertEqual(got[name].dtype, want[name].dtype, name)
                self.assertTrue(torch.equal(got[name], want[name]), name)

    def test_converted_directory_loads_and_keeps_dtype(self):
        for name in ("preprocessor_config.json",):
            shutil.copy(os.path.join(MODELS, "tiny", name), self.dir)
        state = {k: v.to(torch.float16) for k, v in bin_state_dict(self.model).items()
                 if v.is_floating_point()}
        state["decoder.lm_head.weight"] = state["decoder.transformer.wte.weight"]  # shared again
        torch.save(state, os.path.join(self.dir, "pytorch_model.bin"))
        dst, _ = convert.convert(self.dir)
        got, _ = safetensors_io.load_file(dst)
        self.assertTrue(all(t.dtype == torch.float16 for t in got.values()))
        loaded = ref.VisionEncoderDecoder.from_pretrained(self.dir)
        self.assertEqual(loaded.load_warnings, [])

    def test_refuses_to_overwrite_and_reports_errors(self):
        convert.convert(self.dir)
        with self.assertRaises(convert.ConvertError):
            convert.convert(self.dir)
        torch.save({"encoder.embeddings.position_ids": torch.arange(5)},
                   os.path.join(self.dir, "pytorch_model.bin"))
        with self.assertRaisesRegex(convert.ConvertError, "position_ids"):
            convert.convert(self.dir, force=True)

    def test_command_line(self):
        script = os.path.join(REPO, "weights", "convert.py")
        run = subprocess.run([sys.executable, script, self.dir, "--dtype", "bf16"],
                             capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(run.stdout.strip().endswith("model.safetensors"))
        run = subprocess.run([sys.executable, script, self.dir], capture_output=True, text=True)
        self.assertEqual(run.returncode, 1)
        self.assertIn("exists", run.stderr)
        run = subprocess.run([sys.executable, script, os.path.join(self.dir, "nope")],
                             capture_output=True, text=True)
        self.assertEqual(run.returncode, 1)
        self.assertIn("not found", run.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
