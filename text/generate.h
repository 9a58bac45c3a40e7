/* Decoding strategies (spec §6): greedy, sampling and beam search with n-best, behind a
 * decoder-callback interface so that this code never sees the network.
 *
 * Reference followed: huggingface/transformers main, generation/utils.py at commit
 * 000034a44ef887621d9b36001a5eb7c46e64cb3f (`_sample`, `_beam_search`, `_get_top_k_continuations`,
 * `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
 * `_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`, `_get_logits_processor`,
 * `_prepare_generated_length`) and generation/logits_process.py at commit
 * 00857b6cf63a4fa05cbd9bdc8a4fd78b6168c5af. That is the beam search as rewritten in v4.50 (PR
 * #35802), not the BeamScorer of 4.30 and before. */
#ifndef XCAP_TEXT_GENERATE_H
#define XCAP_TEXT_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "xcap.h"

typedef struct {
    void *ctx;
    int vocab_size;
    /* Runs the decoder one position for n_seq sequences held in cache slots 0..n_seq-1:
     * tokens[i] is appended to slot i at position pos (pos 0 = the start token); writes logits
     * (n_seq x vocab_size, row-major). */
    int (*step)(void *ctx, const int32_t *tokens, int n_seq, int pos, float *logits, char *err,
                size_t errlen);
    /* Beam reordering: after it, cache slot i holds what old slot src[i] held (positions 0..pos).
     * Only beam search calls it (it may be NULL when num_beams is 1), never with the identity
     * permutation and never at position 0 (every slot then holds the start token alone). */
    int (*reorder)(void *ctx, const int *src, int n_seq, int pos, char *err, size_t errlen);
} xcap_decoder_ops;

/* Beam history, for attention maps. At every position pos the decoder runs once per cache slot;
 * the token that hypothesis h generated at step t (its t-th generated token, t = 0 first) was
 * chosen from the logits of slot slots[h * stride + t] at position t. A caller that kept some
 * per-slot output of every step (cross-attention probabilities, say) finds hypothesis h's
 * output for its token t at [t][slots[h * stride + t]], even when the beam moved between slots.
 * Entries t >= result->hyps[h].n_tokens are -1. Greedy and sampling use slot 0 throughout. */
typedef struct {
    int *slots;
    int stride; /* the most tokens any hypothesis can have (effective max_length - 1) */
    int n_hyps; /* = result->n_hyps */
} xcap_gen_trace;

void xcap_gen_trace_free(xcap_gen_trace *trace);

/* Generates with params p (include/xcap.h's xcap_params) from the start token; eos ids list
 * (usually one; n_eos may be 0, then only the length ends a sequence). max_positions = decoder
 * n_positions: the decoder runs at positions 0 .. max_length - 2, so an effective max_length
 * above max_positions + 1 is an XCAP_ERR_ARG error, never silently clamped (a caller whose
 * max_length is only a default should clamp it before calling, and say so). Fills
 * result->hyps (best first; tokens, n_tokens, sum_logprob, score; text left NULL for the caller
 * to decode). result is emptied first, and left empty on error. Everything the run needs is
 * allocated before the first decoder step.
 *
 * Semantics, in transformers' terms:
 * - effective max_length = 1 + max_new_tokens when max_new_tokens > 0, else max_length (both
 *   count the start token). Eos is banned while the sequence (start token counted) is shorter
 *   than min_length, or than 1 + min_new_tokens when min_new_tokens > 0 (which wins, as in
 *   transformers' _prepare_generated_length).
 * - Processors, in this order: repetition_penalty, no_repeat_ngram_size, min length. Greedy and
 *   sampling apply them to the raw logits, beam search to log_softmax scores.
 * - Greedy: argmax, first index among equal maxima. Sampling: processors, then temperature,
 *   top-k, top-p, softmax and a draw from xcap_rng seeded with p->seed. For both,
 *   sum_logprob = score = sum over chosen tokens of log_softmax(processed logits)[token], where
 *   processed means after the processors and before temperature/top-k/top-p.
 * - Beam search (num_beams > 1): see beam_search() in generate.c; score =
 *   sum_logprob / n_tokens^length_penalty, n_tokens counting the eos and not the start token.
 *   num_return_sequences (<= num_beams) hypotheses are returned.
 * - Equal scores: the lower index (beam-major flat index, beam * V + token) ranks first, and
 *   greedy takes the first maximum as torch.argmax does. torch.topk promises no order among
 *   equal values (on CPU, torch 1.13 returned lower-index-first in only 47 of 2000 random
 *   tie-heavy trials), so an exact tie that decides a beam step can differ from transformers;
 *   real logits make that a measure-zero event, and the goldens exclude near-ties. */
int xcap_generate(const xcap_decoder_ops *ops, const xcap_params *p, int32_t start_token,
                  const int32_t *eos_ids, int n_eos, int max_positions, xcap_result *result,
                  char *err, size_t errlen);

/* xcap_generate that also fills trace (if non-NULL; free it with xcap_gen_trace_free). */
int xcap_generate_traced(const xcap_decoder_ops *ops, const xcap_params *p, int32_t start_token,
                         const int32_t *eos_ids, int n_eos, int max_positions, xcap_result *result,
                         xcap_gen_trace *trace, char *err, size_t errlen);

/* ---- The same generation driven by the caller (lock-step decoding of several images) ----
 *
 * xcap_generate is a loop over these; a caller that runs one decoder call for the rows of
 * several generations uses them directly:
 *
 *     xcap_gen_begin(&g, ...);
 *     while (xcap_gen_want(g, &tokens, &n_seq, &pos)) {
 *         run the decoder: tokens[i] enters cache slot i at position pos -> logits [n_seq][V]
 *         xcap_gen_feed(g, logits, &src, ...);
 *         if (src) make slot i hold what slot src[i] held (positions 0..pos)
 *     }
 *     xcap_gen_end(g, &result, &trace, ...);  xcap_gen_free(g);
 *
 * The results are those of xcap_generate_traced with the same logits, bit for bit. */
typedef struct xcap_gen xcap_gen;

/* Checks the parameters exactly as xcap_generate does (same messages) and allocates everything
 * the generation needs. p and eos_ids are copied. */
int xcap_gen_begin(xcap_gen **gen, const xcap_params *p, int vocab_size, int32_t start_token, const int32_t *eos_ids,
                   int n_eos, int max_positions, char *err, size_t errlen);
/* 1 and the next decoder step's rows (tokens[n_seq], valid until the next feed) and position,
 * or 0 when the generation has ended (or failed). */
int xcap_gen_want(const xcap_gen *gen, const int32_t **tokens, int *n_seq, int *pos);
/* A buffer of the generation's own that can take that step's logits ([n_seq][V]) directly. */
float *xcap_gen_logits(xcap_gen *gen);
/* Hands in the step's logits and runs the rest of the step. *reorder is NULL, or src[n_seq]:
 * the cache-slot permutation to apply before the next step (beam search only; never the
 * identity, never at position 0). A failure (a non-finite logit, every token banned, ...) ends
 * the generation. */
int xcap_gen_feed(xcap_gen *gen, const float *logits, const int **reorder, char *err, size_t errlen);
/* Fills result (best first) and trace (if non-NULL) once want has returned 0 without a failure. */
int xcap_gen_end(xcap_gen *gen, xcap_result *result, xcap_gen_trace *trace, char *err, size_t errlen);
void xcap_gen_free(xcap_gen *gen);

/* ---- Building blocks, exposed for tests (tests/test_generate.c checks each against a naive
 * version). All work in place on one row of V scores. ---- */

/* Logits processors (spec §6), applied in this order by xcap_gen_process. */
typedef struct {
    float repetition_penalty; /* 1 = off */
    int no_repeat_ngram_size; /* 0 = off */
    int min_length;           /* eos banned while seq_len < min_length (start token counted) */
    const int32_t *eos_ids;
    int n_eos;
} xcap_gen_processors;

/* seq = the sequence so far, start token included (seq_len >= 1). mark is V bytes of zeroes
 * (scratch; left zeroed). */
void xcap_gen_process(const xcap_gen_processors *pp, const int32_t *seq, int seq_len, float *scores,
                      int V, uint8_t *mark);

/* Each token present in seq, once: score < 0 ? score * penalty : score / penalty. */
void xcap_gen_repetition_penalty(float *scores, int V, const int32_t *seq, int seq_len,
                                 float penalty, uint8_t *mark);
/* -inf for every token that would complete an n-gram already present in seq. */
void xcap_gen_no_repeat_ngram(float *scores, int V, const int32_t *seq, int seq_len, int n);

/* log_softmax in place; a row that is all -inf stays all -inf. */
void xcap_gen_log_softmax(float *scores, int V);

/* Sets to -inf every score below the k-th largest (ties with the k-th are kept). scratch: V
 * floats. k >= V keeps everything. */
void xcap_gen_top_k(float *scores, int V, int k, float *scratch);

typedef struct {
    float score;
    int index;
} xcap_gen_ranked;

/* Keeps the smallest set of most probable tokens whose probability reaches top_p, at least one:
 * a token is removed when the tokens ranked above it (score descending, lower id first among
 * equal scores) already hold probability >= top_p. scratch: V entries. Linear time (quickselect),
 * no full sort. */
void xcap_gen_top_p(float *scores, int V, float top_p, xcap_gen_ranked *scratch);

/* The k best of values[0..n) into out, best first; among equal values the lower index first.
 * Returns min(k, n). One pass, insertion into the k kept (k is small: 2 * num_beams). NaN never
 * ranks (the decoder's logits are checked before they get here). */
int xcap_gen_select_top(const float *values, int n, int k, xcap_gen_ranked *out);

#endif
