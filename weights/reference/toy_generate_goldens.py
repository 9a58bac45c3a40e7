"""Goldens for tests/test_generate.c: the Python reference decoder (generate.py, a port of
transformers' generation) run on the same toy decoder as the C test, for many settings.

The toy decoder: for a prefix p (start token first) of length pos + 1, the next-token logits are
    table[pos, p[-1], :] + mix[hash(p) % H, :]          (one float32 addition)
with hash folding h = (h * 1000003 + token + 1) mod 2147483647 over the prefix from h = 12345.
The hash term makes the logits depend on the whole prefix, as a KV cache does, so a decoder slot
that was not reordered correctly gives different logits. tests/test_generate.c implements the
same function behind xcap's callbacks.

Writes, under tests/fixtures/generate/:
  toy_table.npy  float32 [P, V, V]     toy_mix.npy  float32 [H, V]
  toy_cases.json {"start_token", "vocab", "cases": [{"name", "params", "eos", "hyps": [
                  {"tokens", "sum_logprob", "score", "beam_indices"}]}]}
beam_indices[t] is the decoder row (cache slot) whose logits chose token t, as transformers'
`beam_indices` output; xcap reports the same through xcap_gen_trace.

Cases whose decisions hinge on a near-tie (any gap < 1e-4 between the scores that decide a
top-k cut, a finished-set cut, the stopping test or a greedy argmax) are left out and counted,
because float summation order may legitimately flip them.

Run from the repository root:  /usr/bin/python3 weights/reference/toy_generate_goldens.py
"""

import json
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate as ref  # noqa: E402  (weights/reference/generate.py)

OUT_DIR = os.path.join("tests", "fixtures", "generate")
V, P, H = 23, 20, 61
START = 22           # the last id, as GPT-2's <|endoftext|> is
EOS, EOS2 = 2, 7     # not 0: catches code that assumes eos or start is 0
HASH_START = 12345
NEAR_TIE = 1e-4


def make_tables():
    rng = np.random.RandomState(20240611)
    table = (rng.randn(P, V, V) * 1.5).astype(np.float32)
    # eos grows likelier along the sequence so that beams finish at different lengths
    for pos in range(P):
        table[pos, :, EOS] += np.float32(-2.5 + 0.35 * pos)
        table[pos, :, EOS2] += np.float32(-3.0 + 0.25 * pos)
    mix = (rng.randn(H, V) * 1.0).astype(np.float32)
    return table, mix


def prefix_hash(prefix):
    h = HASH_START
    for t in prefix:
        h = (h * 1000003 + int(t) + 1) % 2147483647
    return h


class ToyStep:
    """generate.py's step interface; records every call's prefixes for beam_indices."""

    def __init__(self, table, mix):
        self.table = torch.from_numpy(table)
        self.mix = torch.from_numpy(mix)
        self.calls = []

    def __call__(self, prefixes, parents):
        rows = prefixes.tolist()
        self.calls.append(rows)
        out = torch.empty((len(rows), V), dtype=torch.float32)
        for i, p in enumerate(rows):
            out[i] = self.table[len(p) - 1, p[-1]] + self.mix[prefix_hash(p) % H]
        return out

    def beam_indices(self, tokens):
        """Row of each call whose prefix is start + tokens[:t] (the first such row: at the first
        call every row holds the start token and transformers expands row 0)."""
        slots = []
        for t in range(len(tokens)):
            want = [START] + list(tokens[:t])
            slots.append(next(i for i, row in enumerate(self.calls[t]) if row == want))
        return slots


def near_tie(record):
    """The smallest decision gap in the recorded steps (inf when there is none). Reads
    generate.py's step records: greedy top-2 gaps; for beam search the K + 1 best candidate
    scores, the finished-set cut (score_a, len_a, score_b, len_b) and the early-stopping
    comparison (best possible, its length, worst finished, its length)."""
    gap = float("inf")
    for info in record:
        if isinstance(info, ref.GreedyStepInfo):
            if np.isfinite(info.top2_gap):
                gap = min(gap, info.top2_gap)
            continue
        real = [x for x in info.candidate_scores if x > -1e8]
        for a, b in zip(real, real[1:]):
            gap = min(gap, a - b)
        if info.finished_cut is not None:
            gap = min(gap, info.finished_cut[0] - info.finished_cut[2])
        if info.heuristic is not None:
            gap = min(gap, abs(info.heuristic[0] - info.heuristic[2]))
    return gap


def case_list():
    """Hand-picked settings first, then seeded random combinations."""
    cases = []

    def add(name, eos=(EOS,), **params):
        cases.append((name, list(eos), params))

    add("greedy")
    add("greedy_max_length_5", max_length=5)
    add("greedy_max_new_tokens", max_length=5, max_new_tokens=9)
    add("greedy_min_length", min_length=12)
    add("greedy_min_new_tokens", min_length=3, min_new_tokens=10)
    add("greedy_repetition_1_5", repetition_penalty=1.5)
    add("greedy_repetition_0_75", repetition_penalty=0.75)
    add("greedy_ngram_1", no_repeat_ngram_size=1)
    add("greedy_ngram_2", no_repeat_ngram_size=2)
    add("greedy_two_eos", eos=(EOS, EOS2))
    add("greedy_no_eos", eos=())
    for b in (2, 3, 4, 5):
        add(f"beam{b}", num_beams=b, num_return_sequences=b)
    for lp in (0.0, 0.5, 1.5, 2.0, -0.5):
        add(f"beam4_lp{lp}", num_beams=4, num_return_sequences=4, length_penalty=lp)
    for early in (True, "never"):
        for lp in (1.0, 2.0, 0.0, -0.5):
            add(f"beam3_early_{early}_lp{lp}", num_beams=3, num_return_sequences=3,
                early_stopping=early, length_penalty=lp)
    add("beam4_max_length_6", num_beams=4, num_return_sequences=4, max_length=6)
    add("beam4_max_new_tokens_4", num_beams=4, num_return_sequences=2, max_new_tokens=4)
    add("beam2_min_length", num_beams=2, num_return_sequences=2, min_length=10)
    add("beam3_min_new_tokens", num_beams=3, num_return_sequences=3, min_new_tokens=8)
    add("beam4_repetition", num_beams=4, num_return_sequences=4, repetition_penalty=1.25)
    add("beam4_ngram_2", num_beams=4, num_return_sequences=4, no_repeat_ngram_size=2)
    add("beam3_ngram_1", num_beams=3, num_return_sequences=3, no_repeat_ngram_size=1)
    add("beam3_two_eos", eos=(EOS, EOS2), num_beams=3, num_return_sequences=3)
    add("beam5_two_eos_never", eos=(EOS, EOS2), num_beams=5, num_return_sequences=5,
        early_stopping="never", length_penalty=1.5)
    add("beam3_no_eos", eos=(), num_beams=3, num_return_sequences=3, max_length=9)

    rnd = random.Random(7)
    for i in range(60):
        params = {}
        beams = rnd.choice([1, 1, 2, 3, 4, 5, 6])
        if beams > 1:
            params["num_beams"] = beams
            params["num_return_sequences"] = rnd.randint(1, beams)
            params["length_penalty"] = rnd.choice([1.0, 1.0, 0.0, 0.5, 0.75, 1.5, 2.0, -0.5])
            params["early_stopping"] = rnd.choice([False, True, "never"])
        if rnd.random() < 0.5:
            params["max_length"] = rnd.randint(2, P + 1)
        if rnd.random() < 0.2:
            params["max_new_tokens"] = rnd.randint(1, P)
        if rnd.random() < 0.3:
            params["min_length"] = rnd.randint(0, 14)
        if rnd.random() < 0.2:
            params["min_new_tokens"] = rnd.randint(1, 10)
        if rnd.random() < 0.3:
            params["repetition_penalty"] = rnd.choice([0.75, 1.25, 1.5, 2.0])
        if rnd.random() < 0.3:
            params["no_repeat_ngram_size"] = rnd.randint(1, 4)
        eos = rnd.choice([(EOS,), (EOS,), (EOS, EOS2), ()])
        add(f"random{i:02d}", eos=eos, **params)
    return cases


def settings_for(params, eos):
    s = ref.GenerationSettings()
    s.max_length = P + 1   # the whole table: positions 0 .. P-1
    for k, v in params.items():
        setattr(s, k, v)
    s.eos_token_id = list(eos)
    s.decoder_start_token_id = START
    return s


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    table, mix = make_tables()
    np.save(os.path.join(OUT_DIR, "toy_table.npy"), table)
    np.save(os.path.join(OUT_DIR, "toy_mix.npy"), mix)

    out_cases, skipped = [], []
    for name, eos, params in case_list():
        s = settings_for(params, eos)
        step = ToyStep(table, mix)
        record = []
        hyps = ref.generate(step, s, record=record)
        gap = near_tie(record)
        if gap < NEAR_TIE:
            skipped.append((name, gap))
            continue
        json_params = {"max_length": s.max_length}
        json_params.update(params)
        out_cases.append({
            "name": name,
            "params": json_params,
            "eos": eos,
            "hyps": [{
                "tokens": h.tokens,
                "sum_logprob": h.sum_logprob,
                "score": h.score,
                "beam_indices": step.beam_indices(h.tokens) if s.num_beams > 1 else [0] * len(h.tokens),
            } for h in hyps],
        })

    doc = {
        "source": "weights/reference/toy_generate_goldens.py running weights/reference/generate.py",
        "start_token": START,
        "vocab": V,
        "positions": P,
        "cases": out_cases,
    }
    # One case per line: compact, and a regenerated file diffs case by case.
    cases_text = ",\n".join(json.dumps(c, separators=(",", ":")) for c in out_cases)
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"})[:-1]
    with open(os.path.join(OUT_DIR, "toy_cases.json"), "w", encoding="utf-8") as f:
        f.write(f'{head}, "cases": [\n{cases_text}\n]}}\n')
    print(f"{len(out_cases)} cases written, {len(skipped)} left out for near-ties:")
    for name, gap in skipped:
        print(f"  {name}: gap {gap:.3g}")


if __name__ == "__main__":
    main()
