"""The decoding cases of goldens/<model>/decode.json and the near-tie check applied to them.

A golden is only useful if a correct float32 engine must reproduce it: when two candidates are
within rounding noise of each other, the token sequences could legitimately differ. So every
decision the reference takes in a golden case is checked for a margin: the top-2 gap of the
processed log-probabilities at each greedy step, the gaps between neighbouring candidates
among the best K + 1 at each beam step (this covers the B-th and 2B-th cuts), the cut of the
finished set, and the early-stopping comparison. The fixture builder reseeds a model until
every case passes.
"""

import math
from dataclasses import replace

import generate

GREEDY_MIN_GAP = 1e-3   # top-2 log-prob gap at a greedy step
BEAM_MIN_GAP = 1e-4     # between neighbouring beam candidates / finished scores

# (name, settings that differ from the model's generation defaults)
CASES = [
    ("greedy", {}),
    ("beam4_nbest4", {"num_beams": 4, "num_return_sequences": 4}),
    ("beam3_lp0.5_early", {"num_beams": 3, "length_penalty": 0.5, "early_stopping": True,
                           "num_return_sequences": 3}),
    ("beam2_never", {"num_beams": 2, "early_stopping": "never", "num_return_sequences": 2}),
    ("greedy_rep1.3_ngram2", {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}),
    ("greedy_min_new3", {"min_new_tokens": 3}),
    ("greedy_min_length5", {"min_length": 5}),
    ("greedy_max_new4", {"max_new_tokens": 4}),
    ("beam4_min_new3", {"num_beams": 4, "min_new_tokens": 3, "num_return_sequences": 2}),
    ("beam3_never_lp2", {"num_beams": 3, "early_stopping": "never", "length_penalty": 2.0,
                         "num_return_sequences": 3}),
    ("beam4_ngram2_rep1.2", {"num_beams": 4, "no_repeat_ngram_size": 2, "repetition_penalty": 1.2}),
    ("beam5_lp-0.5", {"num_beams": 5, "length_penalty": -0.5, "num_return_sequences": 5}),
]


def case_settings(base, changes):
    """base: the model's GenerationSettings; changes: a CASES entry's dict."""
    return replace(base, eos_token_id=list(base.eos_token_id), **changes)


def case_params(s):
    """The settings as written into decode.json: every knob explicit."""
    p = {
        "max_length": s.max_length,
        "min_length": s.min_length,
        "num_beams": s.num_beams,
        "do_sample": s.do_sample,
        "length_penalty": s.length_penalty,
        "early_stopping": s.early_stopping,
        "num_return_sequences": s.num_return_sequences,
        "repetition_penalty": s.repetition_penalty,
        "no_repeat_ngram_size": s.no_repeat_ngram_size,
    }
    if s.max_new_tokens is not None:
        p["max_new_tokens"] = s.max_new_tokens
    if s.min_new_tokens is not None:
        p["min_new_tokens"] = s.min_new_tokens
    return p


def near_ties(record, s):
    """Problems (strings) found in one case's step records; empty when every decision has
    a safe margin."""
    problems = []
    for step_no, info in enumerate(record):
        if isinstance(info, generate.GreedyStepInfo):
            if info.top2_gap < GREEDY_MIN_GAP:
                problems.append(f"greedy step {step_no}: top-2 gap {info.top2_gap:.2e}")
            continue
        scores = [x for x in info.candidate_scores if math.isfinite(x) and x > -1e8]
        for k in range(len(scores) - 1):
            if scores[k] - scores[k + 1] < BEAM_MIN_GAP:
                problems.append(f"beam step {step_no}: candidates {k}/{k + 1} within "
                                f"{scores[k] - scores[k + 1]:.2e}")
        if info.finished_cut is not None:
            a, la, b, lb = info.finished_cut
            if a - b < normalized_tolerance(s, la, lb):
                problems.append(f"beam step {step_no}: finished-set cut gap {a - b:.2e}")
        if info.heuristic is not None:
            best, lbest, worst, lworst = info.heuristic
            if abs(best - worst) < normalized_tolerance(s, lbest, lworst):
                problems.append(f"beam step {step_no}: early-stop margin {best - worst:.2e}")
    return problems


def normalized_tolerance(s, len_a, len_b):
    """BEAM_MIN_GAP on the summed log-probabilities, carried over to length-normalized scores
    (sum / L^length_penalty) of hypotheses of lengths len_a and len_b."""
    return BEAM_MIN_GAP / min(len_a ** s.length_penalty, len_b ** s.length_penalty)


def final_score_ties(hyps, s):
    problems = []
    for k in range(len(hyps) - 1):
        gap = hyps[k].score - hyps[k + 1].score
        if gap < normalized_tolerance(s, len(hyps[k].tokens), len(hyps[k + 1].tokens)):
            problems.append(f"hyps {k}/{k + 1} scores within {gap:.2e}")
    return problems


def run_case(model, memory, s):
    """Decodes one image's memory with settings s. Returns (hyps, problems)."""
    record = []
    hyps = generate.generate(generate.ModelStepper(model, memory), s, record=record)
    return hyps, near_ties(record, s) + final_score_ties(hyps, s)
