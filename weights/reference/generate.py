"""Decoding as transformers' `generate` does it (spec §6): greedy, sampling, beam search with
n-best, and the logits processors, in float32.

Followed: huggingface/transformers `src/transformers/generation/utils.py` at commit
000034a44ef887621d9b36001a5eb7c46e64cb3f (main after the 4.5x vectorized beam-search rewrite;
the file schedules removals "in v4.62.0"): `_sample`, `_beam_search` and its helpers
`_get_top_k_continuations`, `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
`_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`; `_get_logits_processor`
(processor order), `_prepare_generated_length` (max/min length rules); and
`generation/logits_process.py` for the processors. The code below is our own, for one image
at a time (transformers' batch dimension dropped), with the same float32 operations.

The model is any callable `step(prefixes, parents) -> logits`:
  prefixes  LongTensor [N, t]: the sequences so far, start token first;
  parents   LongTensor [N] or None: row i of this call extends row parents[i] of the previous
            call's prefixes (None on the first call). A caching model reorders its cache by
            it; a recomputing model ignores it.
  logits    FloatTensor [N, V]: next-token logits for each row.
"""

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import List, Optional, Union

import torch
from torch.nn import functional as F

NEG_INF = -math.inf

# ------------------------------------------------------------------------------------------
# Settings (§6): transformers' defaults and where a checkpoint overrides them
# ------------------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    max_length: int = 20             # counts the start token
    max_new_tokens: Optional[int] = None
    min_length: int = 0              # counts the start token
    min_new_tokens: Optional[int] = None
    num_beams: int = 1
    do_sample: bool = False
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = False  # False, True or "never"
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_return_sequences: int = 1
    eos_token_id: List[int] = field(default_factory=list)
    decoder_start_token_id: Optional[int] = None
    seed: int = 0                    # sampling only

    def effective_max_length(self, prompt_len=1):
        """max_new_tokens wins over max_length (_prepare_generated_length)."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens + prompt_len
        return self.max_length

    def effective_min_length(self, prompt_len=1):
        if self.min_new_tokens is not None:
            return self.min_new_tokens + prompt_len
        return self.min_length


GENERATION_KEYS = [f.name for f in fields(GenerationSettings) if f.name not in ("seed",)]


def settings_from_dict(d, base=None):
    """Overlays the generation keys of d on base (or the defaults)."""
    s = base if base is not None else GenerationSettings()
    for k in GENERATION_KEYS:
        if k in d and d[k] is not None:
            v = d[k]
            if k == "eos_token_id":
                v = [v] if isinstance(v, int) else list(v)
            setattr(s, k, v)
    return s


def load_settings(model_dir, overrides=None):
    """The decoding settings transformers would use for this directory, then `overrides`
    (command-line options) on top.

    As in transformers: if generation_config.json exists it alone gives the model's settings;
    otherwise they come from the top level of config.json, and from the decoder sub-config for
    keys the top level leaves at their default (GenerationConfig.from_model_config). When
    nothing overrides a max_length of 20 (the library default), the newest transformers
    generates 20 *new* tokens: max_length becomes 21 (_prepare_generated_length).
    """
    overrides = dict(overrides or {})
    defaults = GenerationSettings()
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    gen_path = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(gen_path):
        with open(gen_path, encoding="utf-8") as f:
            s = settings_from_dict(json.load(f))
    else:
        s = settings_from_dict(config)
        decoder = config.get("decoder", {})
        for k in GENERATION_KEYS:
            if k in decoder and decoder[k] is not None and getattr(s, k) == getattr(defaults, k):
                settings_from_dict({k: decoder[k]}, s)
    # Special tokens fall back on the model config, then the decoder's bos (for the start).
    if not s.eos_token_id:
        eos = config.get("eos_token_id", config.get("decoder", {}).get("eos_token_id"))
        s.eos_token_id = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if s.decoder_start_token_id is None:
        s.decoder_start_token_id = config.get("decoder_start_token_id",
                                              config.get("decoder", {}).get("bos_token_id"))
    s = settings_from_dict(overrides, s)
    if "max_length" not in overrides and s.max_new_tokens is None and s.max_length == defaults.max_length:
        s.max_length = defaults.max_length + 1
    return s


# ------------------------------------------------------------------------------------------
# Logits processors, in the order _get_logits_processor builds them
# ------------------------------------------------------------------------------------------


def apply_repetition_penalty(seqs, scores, penalty):
    """Tokens already in the sequence (start token included): score / p if score > 0,
    score * p otherwise (RepetitionPenaltyLogitsProcessor)."""
    picked = torch.gather(scores, 1, seqs)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, seqs, picked)


def banned_ngram_tokens(seq, n):
    """Tokens that would complete an n-gram already present in seq (start token included)."""
    if len(seq) + 1 < n:
        return []
    prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
    banned = []
    for i in range(len(seq) - n + 1):
        if tuple(seq[i:i + n - 1]) == prefix:
            banned.append(seq[i + n - 1])
    return banned


def apply_no_repeat_ngram(seqs, scores, n):
    out = scores.clone()
    for row, seq in enumerate(seqs.tolist()):
        banned = banned_ngram_tokens(seq, n)
        if banned:
            out[row, banned] = NEG_INF
    return out


def apply_min_length(seqs, scores, min_length, eos_ids):
    """eos banned while the sequence (start token counted) is shorter than min_length."""
    if seqs.shape[1] < min_length:
        scores = scores.clone()
        scores[:, eos_ids] = NEG_INF
    return scores


def process(seqs, scores, s, prompt_len=1):
    """Runs the configured processors over scores [N, V] for sequences seqs [N, t]."""
    if s.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(seqs, scores, s.repetition_penalty)
    if s.no_repeat_ngram_size > 0:
        scores = apply_no_repeat_ngram(seqs, scores, s.no_repeat_ngram_size)
    if s.eos_token_id:
        min_length = s.effective_min_length(prompt_len)
        if min_length > 0:  # MinLengthLogitsProcessor (min_new_tokens also sets min_length)
            scores = apply_min_length(seqs, scores, min_length, s.eos_token_id)
        if s.min_new_tokens is not None and s.min_new_tokens > 0:  # MinNewTokensLength...
            scores = apply_min_length(seqs, scores, s.min_new_tokens + prompt_len, s.eos_token_id)
    return scores


def warp_for_sampling(scores, s, min_tokens_to_keep=1):
    """Temperature, top-k, top-p (the former logits warpers), in that order."""
    if s.temperature != 1.0:
        scores = scores / s.temperature
    if s.top_k:
        k = min(max(s.top_k, min_tokens_to_keep), scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, NEG_INF)  # ties at the k-th are kept
    if s.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - s.top_p)
        drop[..., -min_tokens_to_keep:] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)
    return scores


# ------------------------------------------------------------------------------------------
# Greedy and sampling (_sample)
# ------------------------------------------------------------------------------------------


@dataclass
class Hypothesis:
    tokens: List[int]        # generated ids: start token excluded, final eos included
    sum_logprob: float
    score: float


@dataclass
class GreedyStepInfo:
    """What one greedy step decided (used to check the goldens for near-ties)."""
    top2_gap: float                 # best minus second-best processed log-probability


def greedy_or_sample(step, s, prompt=None, record=None):
    """One sequence. sum_logprob = sum of log_softmax(processed logits)[chosen] (float32);
    score = sum_logprob. record: optional list that receives a GreedyStepInfo per step."""
    start = [s.decoder_start_token_id] if prompt is None else list(prompt)
    prompt_len = len(start)
    max_length = s.effective_max_length(prompt_len)
    seq = torch.tensor([start], dtype=torch.long)
    total = torch.zeros((), dtype=torch.float32)
    generator = torch.Generator().manual_seed(s.seed) if s.do_sample else None
    parents = None
    if max_length <= prompt_len:
        raise ValueError(f"max_length {max_length} leaves no room after the {prompt_len}-token prompt")
    while seq.shape[1] < max_length:
        logits = step(seq, parents).to(torch.float32)
        scores = process(seq, logits, s, prompt_len)
        if s.do_sample:
            probs = F.softmax(warp_for_sampling(scores, s), dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator)[0, 0])
        else:
            token = int(torch.argmax(scores[0]))  # first index among equal maxima
        log_probs = F.log_softmax(scores[0], dim=-1)
        total = total + log_probs[token]
        if record is not None:
            top2 = torch.topk(log_probs, 2)[0]
            record.append(GreedyStepInfo(float(top2[0] - top2[1])))
        seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
        parents = torch.zeros(1, dtype=torch.long)
        if token in s.eos_token_id:
            break
    return [Hypothesis(seq[0, prompt_len:].tolist(), float(total), float(total))]


# ------------------------------------------------------------------------------------------
# Beam search (_beam_search)
# ------------------------------------------------------------------------------------------


@dataclass
class BeamStepInfo:
    """What one beam step decided (used to check the goldens for near-ties)."""
    candidate_scores: List[float]   # the K + 1 best accumulated scores, best first
    finishing: List[bool]           # which of the K candidates finished
    # the B-th and (B+1)-th scores of the merged finished set, with their lengths, when both
    # are real hypotheses: (score_a, length_a, score_b, length_b)
    finished_cut: Optional[tuple] = None
    # the early-stopping comparison once the finished set is full:
    # (best possible running score, its length, worst finished score, its length)
    heuristic: Optional[tuple] = None


def beam_search(step, s, prompt=None, record=None):
    """Returns the finished hypotheses, best score first (num_return_sequences of them).

    record: optional list that receives a BeamStepInfo per step.
    """
    start = [s.decoder_start_token_id] if prompt is None else list(prompt)
    prompt_len = len(start)
    max_length = s.effective_max_length(prompt_len)
    n_beams = s.num_beams
    lp = s.length_penalty
    early = s.early_stopping
    if s.num_return_sequences > n_beams:
        raise ValueError(f"num_return_sequences {s.num_return_sequences} > num_beams {n_beams}")
    if max_length <= prompt_len:
        raise ValueError(f"max_length {max_length} leaves no room after the {prompt_len}-token prompt")
    n_keep = max(2, 1 + len(s.eos_token_id)) * n_beams          # K candidates per step
    in_top_beams = torch.arange(n_keep) < n_beams
    eos = torch.tensor(s.eos_token_id, dtype=torch.long)

    running = torch.full((n_beams, max_length), -1, dtype=torch.long)
    running[:, :prompt_len] = torch.tensor(start)
    # every beam holds the same prefix, so only beam 0 is expanded at the first step
    running_scores = torch.zeros(n_beams, dtype=torch.float32)
    running_scores[1:] = -1e9
    finished = running.clone()
    finished_scores = torch.full((n_beams,), -1e9, dtype=torch.float32)
    finished_sums = torch.full((n_beams,), -1e9, dtype=torch.float32)
    finished_lens = torch.zeros(n_beams, dtype=torch.long)
    is_finished = torch.zeros(n_beams, dtype=torch.bool)
    can_improve = True   # is_early_stop_heuristic_unsatisfied
    cur_len = prompt_len
    parents = None

    while True:
        logits = step(running[:, :cur_len], parents).to(torch.float32)
        log_probs = F.log_softmax(logits, dim=-1)
        log_probs = process(running[:, :cur_len], log_probs, s, prompt_len)
        vocab = log_probs.shape[-1]
        accumulated = (log_probs + running_scores[:, None]).reshape(-1)

        # c. top-K continuations over all beams
        top_scores, top_index = torch.topk(accumulated, n_keep)
        top_beam = top_index // vocab
        top_token = top_index % vocab
        candidates = running[top_beam].clone()
        candidates[:, cur_len] = top_token

        # d. which candidates finish: an eos token, or the sequence reaching max_length
        hits = torch.isin(top_token, eos) | torch.tensor(cur_len + 1 >= max_length)

        # e. next running beams: the best B of the K that did not finish
        running_candidate_scores = top_scores + hits.to(torch.float32) * -1.0e9
        keep = torch.topk(running_candidate_scores, n_beams)[1]
        running = candidates[keep]
        running_scores = running_candidate_scores[keep]
        parents = top_beam[keep]

        # f. finished hypotheses: finishing candidates ranked < B, length-normalized
        just_finished = hits & in_top_beams
        n_generated = cur_len + 1 - prompt_len
        normalized = top_scores / (n_generated ** lp)
        full_and_eager = bool(is_finished.all()) and early is True
        normalized = normalized + torch.tensor(float(full_and_eager)) * -1.0e9
        normalized = normalized + torch.tensor(float(not can_improve)) * -1.0e9
        normalized = normalized + (~just_finished).to(torch.float32) * -1.0e9
        merged_scores = torch.cat([finished_scores, normalized])
        pick = torch.topk(merged_scores, n_beams)[1]
        if record is not None:
            merged_lens = torch.cat([finished_lens, torch.full((n_keep,), n_generated)])
            cut_scores, cut_index = torch.topk(merged_scores, n_beams + 1)
            cut = None
            if float(cut_scores[-1]) > -1e8:
                cut = (float(cut_scores[-2]), int(merged_lens[cut_index[-2]]),
                       float(cut_scores[-1]), int(merged_lens[cut_index[-1]]))
        finished = torch.cat([finished, candidates])[pick]
        finished_scores = merged_scores[pick]
        finished_sums = torch.cat([finished_sums, top_scores])[pick]
        finished_lens = torch.cat([finished_lens, torch.full((n_keep,), n_generated)])[pick]
        is_finished = torch.cat([is_finished, just_finished])[pick]

        # g. stopping: can a running beam still beat the worst finished one?
        cur_len += 1
        if early == "never" and lp > 0.0:
            best_len = max_length - prompt_len
        else:
            best_len = cur_len - prompt_len
        best_possible = running_scores[0] / (best_len ** lp)
        worst_finished = torch.where(is_finished, finished_scores.min(), torch.tensor(-1.0e9))
        can_improve = can_improve and bool(torch.any(best_possible > worst_finished))
        if record is not None:
            heuristic = None
            if bool(is_finished.all()):
                worst = int(torch.argmin(finished_scores))
                heuristic = (float(best_possible), best_len, float(finished_scores[worst]),
                             int(finished_lens[worst]))
            record.append(BeamStepInfo(torch.topk(accumulated, n_keep + 1)[0].tolist(),
                                       hits.tolist(), cut, heuristic))

        all_done_eagerly = bool(is_finished.all()) and early is True
        if not can_improve or all_done_eagerly or bool(hits.all()):
            break

    hyps = []
    for i in range(s.num_return_sequences):
        if not bool(is_finished[i]):
            raise RuntimeError(f"beam search ended with finished slot {i} empty")
        n = int(finished_lens[i])
        hyps.append(Hypothesis(finished[i, prompt_len:prompt_len + n].tolist(),
                               float(finished_sums[i]), float(finished_scores[i])))
    return hyps


def generate(step, s, prompt=None, record=None):
    if s.num_beams > 1:
        if s.do_sample:
            raise NotImplementedError("beam sampling is not implemented")
        return beam_search(step, s, prompt, record)
    if s.num_return_sequences != 1:
        raise NotImplementedError("num_return_sequences > 1 without beams is not implemented")
    return greedy_or_sample(step, s, prompt, record)


# ------------------------------------------------------------------------------------------
# The model as a step function
# ------------------------------------------------------------------------------------------


class ModelStepper:
    """Wraps a VisionEncoderDecoder and one image's memory as a caching step function. With
    `record=True` it keeps every call's raw logits and cross-attention probabilities."""

    def __init__(self, model, memory, record=False):
        self.model = model
        self.memory = memory          # [1, M, E]
        self.cache = None
        self.record = record
        self.logits = []              # per call: [N, V]
        self.cross_attn = []          # per call: [N, layers, heads, M]

    def __call__(self, prefixes, parents):
        with torch.no_grad():
            if parents is None:
                n = prefixes.shape[0]
                self.cache = self.model.new_cache(self.memory.expand(n, -1, -1))
                new_tokens = prefixes
            else:
                self.cache.reorder(parents)
                new_tokens = prefixes[:, -1:]
            trace = {} if self.record else None
            logits = self.model.decode(new_tokens, self.cache, trace)[:, -1, :]
            if self.record:
                self.logits.append(logits.clone())
                self.cross_attn.append(trace["cross_attn"][:, :, :, -1, :].clone())
            return logits


def caption(model, pixel_values, s, record=None):
    """pixel_values [3, H, W] float32 -> hypotheses."""
    with torch.no_grad():
        memory = model.encode(torch.as_tensor(pixel_values)[None])
    return generate(ModelStepper(model, memory), s, record=record)
