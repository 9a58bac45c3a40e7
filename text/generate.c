/* Decoding strategies (spec §6). Which transformers sources and commits this follows: see
 * generate.h. Everything a run needs is carved out of one allocation made before the first
 * decoder step; the token loops allocate nothing. */
#include "text/generate.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "text/rng.h"

/* transformers masks beams with -1e9 in float32, not -inf (spec §6 beam search, step 1), and
 * the arithmetic below adds it exactly where transformers does, so that masked scores round the
 * same way. */
#define BEAM_MASK (-1.0e9f)

void xcap_gen_trace_free(xcap_gen_trace *trace) {
    if (!trace) return;
    free(trace->slots);
    trace->slots = NULL;
    trace->stride = 0;
    trace->n_hyps = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Logits processors (transformers' RepetitionPenalty, NoRepeatNGram, MinLength processors)
 * ------------------------------------------------------------------------------------------- */

void xcap_gen_repetition_penalty(float *scores, int V, const int32_t *seq, int seq_len,
                                 float penalty, uint8_t *mark) {
    /* transformers gathers every position's score and scatters the penalized value back, so a
     * token that occurs several times is penalized once: mark it on first sight. */
    for (int i = 0; i < seq_len; i++) {
        int32_t t = seq[i];
        if (t < 0 || t >= V || mark[t]) continue;
        mark[t] = 1;
        float s = scores[t];
        scores[t] = s < 0 ? s * penalty : s / penalty;
    }
    for (int i = 0; i < seq_len; i++)
        if (seq[i] >= 0 && seq[i] < V) mark[seq[i]] = 0;
}

void xcap_gen_no_repeat_ngram(float *scores, int V, const int32_t *seq, int seq_len, int n) {
    /* The last n-1 tokens are the prefix of the n-gram about to be completed; every earlier
     * occurrence of that prefix bans the token that followed it. The start token takes part. */
    if (n <= 0 || seq_len + 1 < n) return;
    const int32_t *prefix = seq + seq_len - (n - 1);
    for (int i = 0; i + n <= seq_len; i++) {
        if (memcmp(seq + i, prefix, (size_t)(n - 1) * sizeof *seq) != 0) continue;
        int32_t banned = seq[i + n - 1];
        if (banned >= 0 && banned < V) scores[banned] = -INFINITY;
    }
}

void xcap_gen_process(const xcap_gen_processors *pp, const int32_t *seq, int seq_len, float *scores,
                      int V, uint8_t *mark) {
    if (pp->repetition_penalty != 1.0f)
        xcap_gen_repetition_penalty(scores, V, seq, seq_len, pp->repetition_penalty, mark);
    if (pp->no_repeat_ngram_size > 0)
        xcap_gen_no_repeat_ngram(scores, V, seq, seq_len, pp->no_repeat_ngram_size);
    if (seq_len < pp->min_length)
        for (int e = 0; e < pp->n_eos; e++) scores[pp->eos_ids[e]] = -INFINITY;
}

/* ---------------------------------------------------------------------------------------------
 * Normalisation and sampling warpers
 * ------------------------------------------------------------------------------------------- */

/* max and log(sum(exp(x - max))) of a row: log_softmax(x)[v] = (x[v] - max) - log_sum, the
 * order in which torch's CPU kernel forms it. The sum is kept in double. */
static void log_normalizer(const float *x, int V, float *max_out, float *log_sum_out) {
    float m = -INFINITY;
    for (int v = 0; v < V; v++)
        if (x[v] > m) m = x[v];
    double sum = 0;
    if (m != -INFINITY)
        for (int v = 0; v < V; v++) sum += exp((double)(x[v] - m));
    *max_out = m;
    *log_sum_out = (float)log(sum);
}

void xcap_gen_log_softmax(float *scores, int V) {
    float m, log_sum;
    log_normalizer(scores, V, &m, &log_sum);
    if (m == -INFINITY) return;
    for (int v = 0; v < V; v++) scores[v] = (scores[v] - m) - log_sum;
}

static void swap_floats(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

static float median_of_three(float a, float b, float c) {
    if (a > b) swap_floats(&a, &b);
    if (b > c) swap_floats(&b, &c);
    if (a > b) swap_floats(&a, &b);
    return b;
}

/* The k-th largest value (k = 1 is the maximum) by quickselect with a three-way partition, so
 * that long runs of equal values (-inf after the processors) cost one pass. Reorders a. */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n, want = k - 1;
    while (hi - lo > 1) {
        float pivot = median_of_three(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
        int above = lo, i = lo, below = hi; /* [lo,above) > pivot, [above,below) == pivot */
        while (i < below) {
            if (a[i] > pivot)
                swap_floats(&a[above++], &a[i++]);
            else if (a[i] < pivot)
                swap_floats(&a[i], &a[--below]);
            else
                i++;
        }
        if (want < above)
            hi = above;
        else if (want >= below)
            lo = below;
        else
            return pivot;
    }
    return a[lo];
}

void xcap_gen_top_k(float *scores, int V, int k, float *scratch) {
    /* TopKLogitsWarper: remove scores < the k-th largest, so ties with it survive. */
    if (k <= 0 || k >= V) return;
    memcpy(scratch, scores, (size_t)V * sizeof *scores);
    float kth = kth_largest(scratch, V, k);
    for (int v = 0; v < V; v++)
        if (scores[v] < kth) scores[v] = -INFINITY;
}

/* The ranking used wherever order matters: score descending, then the lower id first. */
static int ranks_before(xcap_gen_ranked a, xcap_gen_ranked b) {
    return a.score > b.score || (a.score == b.score && a.index < b.index);
}

static void swap_ranked(xcap_gen_ranked *a, xcap_gen_ranked *b) {
    xcap_gen_ranked t = *a;
    *a = *b;
    *b = t;
}

void xcap_gen_top_p(float *scores, int V, float top_p, xcap_gen_ranked *items) {
    /* TopPLogitsWarper sorts ascending and removes a token when the cumulative probability up
     * to and including it is <= 1 - top_p, i.e. when the tokens ranked above it already hold
     * >= top_p; the most probable token always stays. Same rule, but found by quickselect
     * instead of a full sort (a sort of 50 257 entries per step cost ~10 ms): [lo, hi) is the
     * part of the ranking not yet settled, `above` the probability of everything ranked before
     * it, all of which is kept. Probabilities in double. */
    if (!(top_p < 1.0f)) return;
    int n = 0;
    float m = -INFINITY;
    for (int v = 0; v < V; v++) {
        if (scores[v] == -INFINITY) continue;
        items[n++] = (xcap_gen_ranked){scores[v], v};
        if (scores[v] > m) m = scores[v];
    }
    if (n == 0) return;
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)(items[i].score - m));
    const double cut = top_p;
    double above = 0;
    xcap_gen_ranked last_kept = items[0];
    int lo = 0, hi = n;
    while (lo < hi) {
        /* Median of three by rank, moved to the end of the range, then a partition that puts
         * what ranks before it at the front and adds up its probability. */
        int mid = lo + (hi - lo) / 2;
        if (ranks_before(items[mid], items[lo])) swap_ranked(&items[mid], &items[lo]);
        if (ranks_before(items[hi - 1], items[lo])) swap_ranked(&items[hi - 1], &items[lo]);
        if (ranks_before(items[mid], items[hi - 1])) swap_ranked(&items[mid], &items[hi - 1]);
        const xcap_gen_ranked pivot = items[hi - 1];
        int front = lo;
        double front_mass = 0;
        for (int i = lo; i < hi - 1; i++) {
            if (!ranks_before(items[i], pivot)) continue;
            front_mass += exp((double)(items[i].score - m)) / z;
            swap_ranked(&items[i], &items[front++]);
        }
        swap_ranked(&items[front], &items[hi - 1]);
        if (above + front_mass >= cut) {
            hi = front; /* the pivot already has >= top_p above it: the cut is in the front */
        } else {
            above += front_mass + exp((double)(pivot.score - m)) / z;
            last_kept = pivot; /* it and all the front are kept */
            lo = front + 1;
            if (above >= cut) break;
        }
    }
    for (int v = 0; v < V; v++)
        if (scores[v] != -INFINITY && ranks_before(last_kept, (xcap_gen_ranked){scores[v], v})) scores[v] = -INFINITY;
}

/* Draws v with probability softmax(x)[v]: one uniform number against the running sum, in
 * token order. Needs one finite score. */
static int draw_token(const float *x, int V, xcap_rng *rng) {
    float m = -INFINITY;
    for (int v = 0; v < V; v++)
        if (x[v] > m) m = x[v];
    double z = 0;
    for (int v = 0; v < V; v++) z += exp((double)(x[v] - m));
    double target = xcap_rng_uniform(rng) * z, acc = 0;
    int last = -1;
    for (int v = 0; v < V; v++) {
        if (x[v] == -INFINITY) continue;
        acc += exp((double)(x[v] - m));
        last = v;
        if (target < acc) return v;
    }
    return last; /* rounding left target at the very top of the sum */
}

int xcap_gen_select_top(const float *values, int n, int k, xcap_gen_ranked *out) {
    if (k <= 0) return 0;
    int count = 0;
    for (int i = 0; i < n; i++) {
        float x = values[i];
        if (count == k) {
            /* Equal to the last kept: the kept one has the lower index and stays. */
            if (!(x > out[k - 1].score)) continue;
            count--;
        } else if (x != x) {
            continue;
        }
        int j = count;
        while (j > 0 && out[j - 1].score < x) {
            out[j] = out[j - 1];
            j--;
        }
        out[j].score = x;
        out[j].index = i;
        count++;
    }
    return count;
}

/* ---------------------------------------------------------------------------------------------
 * Run set-up
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    xcap_params params; /* a copy: the generation may outlive the caller's struct */
    const xcap_params *p; /* = &params */
    int V;
    int max_length; /* effective, start token counted */
    int32_t start;
    const int32_t *eos; /* the caller's list until gen_setup_buffers copies it */
    int n_eos;
    xcap_gen_processors proc;
} gen_setup;

static int is_eos(const gen_setup *g, int32_t token) {
    for (int e = 0; e < g->n_eos; e++)
        if (g->eos[e] == token) return 1;
    return 0;
}

/* has_reorder: whether the caller can reorder cache slots (xcap_generate's ops->reorder); checked
 * where xcap_generate always checked it, so that the first error reported stays the same. */
static int check_params(int V, const xcap_params *p, int32_t start_token, const int32_t *eos_ids, int n_eos,
                        int max_positions, int has_reorder, gen_setup *g, char *err, size_t errlen) {
    if (!p) return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: no parameters");
    if (V < 1) return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: vocab_size %d must be at least 1", V);
    if (start_token < 0 || start_token >= V)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: start token %d outside the vocabulary [0, %d)",
                         (int)start_token, V);
    if (n_eos < 0 || (n_eos > 0 && !eos_ids))
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: %d eos ids given without a list", n_eos);
    for (int e = 0; e < n_eos; e++)
        if (eos_ids[e] < 0 || eos_ids[e] >= V)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: eos token %d outside the vocabulary [0, %d)",
                             (int)eos_ids[e], V);
    if (p->max_new_tokens < 0)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "max_new_tokens %d is negative", p->max_new_tokens);
    if (p->max_new_tokens == INT_MAX)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "max_new_tokens %d is too large", p->max_new_tokens);
    int max_length = p->max_new_tokens > 0 ? p->max_new_tokens + 1 : p->max_length;
    if (max_length < 2)
        return xcap_fail(err, errlen, XCAP_ERR_ARG,
                         "max_length %d leaves no token to generate (it counts the start token: use 2 or more)",
                         max_length);
    if (max_positions < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: decoder has %d positions", max_positions);
    if (max_length - 1 > max_positions) {
        if (p->max_new_tokens > 0)
            return xcap_fail(err, errlen, XCAP_ERR_ARG,
                             "max_new_tokens %d exceeds the decoder's %d positions (at most %d new tokens)",
                             p->max_new_tokens, max_positions, max_positions);
        return xcap_fail(err, errlen, XCAP_ERR_ARG,
                         "max_length %d exceeds the decoder's %d positions (at most %d, start token counted)",
                         max_length, max_positions, max_positions + 1);
    }
    if (p->min_length < 0) return xcap_fail(err, errlen, XCAP_ERR_ARG, "min_length %d is negative", p->min_length);
    if (p->min_new_tokens < 0)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "min_new_tokens %d is negative", p->min_new_tokens);
    if (p->min_new_tokens == INT_MAX)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "min_new_tokens %d is too large", p->min_new_tokens);
    if (p->num_beams < 1) return xcap_fail(err, errlen, XCAP_ERR_ARG, "num_beams %d must be at least 1", p->num_beams);
    if (p->num_return_sequences < 1)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "num_return_sequences %d must be at least 1",
                         p->num_return_sequences);
    if (p->num_return_sequences > p->num_beams)
        return xcap_fail(err, errlen, XCAP_ERR_ARG,
                         "num_return_sequences %d exceeds num_beams %d (n-best comes from the beams)",
                         p->num_return_sequences, p->num_beams);
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "repetition_penalty %g must be a positive number",
                         (double)p->repetition_penalty);
    if (p->no_repeat_ngram_size < 0)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "no_repeat_ngram_size %d is negative", p->no_repeat_ngram_size);
    if (p->do_sample) {
        if (p->num_beams > 1)
            return xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED,
                             "sampling with num_beams %d (beam sampling) is not implemented: use num_beams 1",
                             p->num_beams);
        if (!(p->temperature > 0) || !isfinite(p->temperature))
            return xcap_fail(err, errlen, XCAP_ERR_ARG,
                             "temperature %g must be positive when sampling (for greedy, turn sampling off)",
                             (double)p->temperature);
        if (p->top_k < 0) return xcap_fail(err, errlen, XCAP_ERR_ARG, "top_k %d is negative (0 = off)", p->top_k);
        if (!(p->top_p > 0 && p->top_p <= 1))
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "top_p %g must be in (0, 1] (1 = off)", (double)p->top_p);
    }
    if (p->num_beams > 1) {
        if (!has_reorder)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: beam search needs a reorder callback");
        if (!isfinite(p->length_penalty))
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "length_penalty %g is not a finite number",
                             (double)p->length_penalty);
        if (p->early_stopping != XCAP_EARLY_STOP_HEURISTIC && p->early_stopping != XCAP_EARLY_STOP_TRUE &&
            p->early_stopping != XCAP_EARLY_STOP_NEVER)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "early_stopping %d is not one of 0 (false), 1 (true), 2 (never)",
                             (int)p->early_stopping);
        long long per_beam = n_eos + 1LL > 2 ? n_eos + 1LL : 2;
        if ((long long)p->num_beams * V > INT_MAX || per_beam * p->num_beams > INT_MAX / 2)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "num_beams %d is too large for a vocabulary of %d",
                             p->num_beams, V);
        /* transformers' torch.topk would fail the same way: it needs K candidates out of B x V. */
        if (per_beam * p->num_beams > p->num_beams * V)
            return xcap_fail(err, errlen, XCAP_ERR_ARG,
                             "beam search keeps %lld candidates per step but %d beams x %d tokens offer fewer",
                             per_beam * p->num_beams, p->num_beams, V);
    }

    g->params = *p;
    g->p = &g->params;
    g->V = V;
    g->max_length = max_length;
    g->start = start_token;
    g->eos = eos_ids;
    g->n_eos = n_eos;
    g->proc.repetition_penalty = p->repetition_penalty;
    g->proc.no_repeat_ngram_size = p->no_repeat_ngram_size;
    /* _prepare_generated_length: min_new_tokens, when set, replaces min_length by
     * min_new_tokens + prompt length (the MinNewTokens processor then bans the same steps). */
    g->proc.min_length = p->min_new_tokens > 0 ? p->min_new_tokens + 1 : p->min_length;
    g->proc.eos_ids = eos_ids;
    g->proc.n_eos = n_eos;
    return XCAP_OK;
}

/* The decoder's logits must be finite: a NaN would rank arbitrarily and an inf would turn
 * log_softmax into NaN. Naming the slot and position helps whoever debugs the decoder. */
static int check_logits(const float *row, int V, int pos, int slot, char *err, size_t errlen) {
    for (int v = 0; v < V; v++)
        if (!isfinite(row[v]))
            return xcap_fail(err, errlen, XCAP_ERR_MODEL,
                             "decoder step at position %d gave a non-finite logit (%g) for token %d in slot %d",
                             pos, (double)row[v], v, slot);
    return XCAP_OK;
}

/* One allocation carved into aligned pieces: the first pass (base NULL) measures. */
typedef struct {
    char *base;
    size_t used;
} arena;

static void *arena_take(arena *a, size_t count, size_t elem) {
    size_t at = (a->used + 63) & ~(size_t)63;
    a->used = at + count * elem;
    return a->base ? a->base + at : NULL;
}

static int arena_alloc(arena *a, char *err, size_t errlen, const char *what) {
    size_t size = a->used;
    a->base = malloc(size ? size : 1);
    a->used = 0;
    if (!a->base)
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for %s (%zu bytes)", what, size);
    return XCAP_OK;
}

/* Result and trace are filled only once the loop is over. Hypothesis h takes n_tokens[h]
 * tokens from tokens + h * row_stride, and its slots from slots + h * row_stride. */
static int fill_result(int n_hyps, const int32_t *tokens, const int *slots, size_t row_stride,
                       const int *n_tokens, const float *sum_logprob, const float *score, int trace_stride,
                       xcap_result *result, xcap_gen_trace *trace, char *err, size_t errlen) {
    xcap_hypothesis *hyps = calloc((size_t)n_hyps, sizeof *hyps);
    int *trace_slots = trace ? malloc((size_t)n_hyps * trace_stride * sizeof *trace_slots) : NULL;
    int ok = hyps && (!trace || trace_slots);
    for (int h = 0; ok && h < n_hyps; h++) {
        hyps[h].tokens = malloc((size_t)(n_tokens[h] ? n_tokens[h] : 1) * sizeof *hyps[h].tokens);
        if (!hyps[h].tokens) {
            ok = 0;
            break;
        }
        memcpy(hyps[h].tokens, tokens + h * row_stride, (size_t)n_tokens[h] * sizeof *tokens);
        hyps[h].n_tokens = n_tokens[h];
        hyps[h].sum_logprob = sum_logprob[h];
        hyps[h].score = score[h];
        for (int t = 0; trace && t < trace_stride; t++)
            trace_slots[(size_t)h * trace_stride + t] = t < n_tokens[h] ? slots[h * row_stride + t] : -1;
    }
    if (!ok) {
        for (int h = 0; hyps && h < n_hyps; h++) free(hyps[h].tokens);
        free(hyps);
        free(trace_slots);
        return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for %d hypotheses", n_hyps);
    }
    result->hyps = hyps;
    result->n_hyps = n_hyps;
    if (trace) {
        trace->slots = trace_slots;
        trace->stride = trace_stride;
        trace->n_hyps = n_hyps;
    }
    return XCAP_OK;
}

/* ---------------------------------------------------------------------------------------------
 * The generation as a state object: the loops of transformers' _sample and _beam_search cut
 * at the decoder call. xcap_gen_want says which rows the next decoder step needs,
 * xcap_gen_feed runs the rest of the loop body on its logits. A caller can thus drive several
 * generations in lock step (one decoder call for the rows of all of them).
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    int32_t *seq;  /* [B][L] running: start token + generated; finished: generated only */
    int *slots;    /* [B][L] slot that produced each generated token (rows as long as seq's) */
    float *score;  /* [B] running: unnormalised sum; finished: normalised score */
    float *sum;    /* [B] finished only: unnormalised sum of log-probabilities */
    int *len;      /* [B] finished only: generated tokens, eos included */
    uint8_t *done; /* [B] finished only: slot holds a finished hypothesis */
} beam_set;

struct xcap_gen {
    gen_setup g;
    arena a;
    int beam;     /* beam search, else greedy or sampling */
    int pos;      /* position of the next decoder step */
    int finished; /* the loop has ended: only xcap_gen_end remains */
    int failed;   /* a feed failed: the generation is unusable */
    float *logits; /* [rows][V]: the caller's logits are copied here (or written here directly) */
    uint8_t *mark;
    /* greedy / sampling */
    int32_t *seq;
    int *slots;
    float *warped, *kth_scratch;
    xcap_gen_ranked *ranked;
    xcap_rng rng;
    float sum_logprob;
    int n;
    /* beam search */
    int B, K, cur, heuristic_open;
    float *masked, *merged;
    uint8_t *cand_hit;
    int32_t *tokens;
    int *src, *n_out;
    xcap_gen_ranked *cand, *pick;
    beam_set run[2], fin[2];
};

static void beam_set_take(arena *a, beam_set *s, int B, int L) {
    s->seq = arena_take(a, (size_t)B * L, sizeof *s->seq);
    s->slots = arena_take(a, (size_t)B * L, sizeof *s->slots);
    s->score = arena_take(a, (size_t)B, sizeof *s->score);
    s->sum = arena_take(a, (size_t)B, sizeof *s->sum);
    s->len = arena_take(a, (size_t)B, sizeof *s->len);
    s->done = arena_take(a, (size_t)B, sizeof *s->done);
}

/* Carves every buffer out of one allocation (first pass measures) and sets the loops' starting
 * state. */
static int gen_setup_buffers(xcap_gen *s, char *err, size_t errlen) {
    gen_setup *g = &s->g;
    const int V = g->V, L = g->max_length, T = L - 1;
    arena *a = &s->a;
    int32_t *eos = NULL;
    for (int pass = 0; pass < 2; pass++) {
        eos = arena_take(a, (size_t)g->n_eos, sizeof *eos);
        s->mark = arena_take(a, (size_t)V, sizeof *s->mark);
        if (!s->beam) {
            s->seq = arena_take(a, (size_t)L, sizeof *s->seq);
            s->slots = arena_take(a, (size_t)T, sizeof *s->slots);
            s->logits = arena_take(a, (size_t)V, sizeof *s->logits);
            if (g->p->do_sample) {
                s->warped = arena_take(a, (size_t)V, sizeof *s->warped);
                s->kth_scratch = arena_take(a, (size_t)V, sizeof *s->kth_scratch);
                s->ranked = arena_take(a, (size_t)V, sizeof *s->ranked);
            }
        } else {
            const int B = s->B, K = s->K;
            s->logits = arena_take(a, (size_t)B * V, sizeof *s->logits);
            s->tokens = arena_take(a, (size_t)B, sizeof *s->tokens);
            s->src = arena_take(a, (size_t)B, sizeof *s->src);
            s->cand = arena_take(a, (size_t)K, sizeof *s->cand);
            s->cand_hit = arena_take(a, (size_t)K, sizeof *s->cand_hit);
            s->masked = arena_take(a, (size_t)K, sizeof *s->masked);
            s->merged = arena_take(a, (size_t)(B + K), sizeof *s->merged);
            s->pick = arena_take(a, (size_t)B, sizeof *s->pick);
            s->n_out = arena_take(a, (size_t)B, sizeof *s->n_out);
            for (int i = 0; i < 2; i++) {
                beam_set_take(a, &s->run[i], B, L);
                beam_set_take(a, &s->fin[i], B, L);
            }
        }
        if (pass == 0) {
            int rc = arena_alloc(a, err, errlen, s->beam ? "beam search buffers" : "greedy/sampling buffers");
            if (rc) return rc;
        }
    }
    /* The generation outlives the caller's eos list. */
    if (g->n_eos) memcpy(eos, g->eos, (size_t)g->n_eos * sizeof *eos);
    g->eos = eos;
    g->proc.eos_ids = eos;
    memset(s->mark, 0, (size_t)V);
    if (!s->beam) {
        memset(s->slots, 0, (size_t)T * sizeof *s->slots);
        xcap_rng_seed(&s->rng, g->p->seed);
        s->seq[0] = g->start;
        return XCAP_OK;
    }
    s->cur = 0;
    for (int b = 0; b < s->B; b++) {
        s->run[0].seq[(size_t)b * L] = g->start;
        s->tokens[b] = g->start;
        s->run[0].score[b] = b == 0 ? 0.0f : BEAM_MASK;
        s->fin[0].score[b] = BEAM_MASK;
        s->fin[0].sum[b] = BEAM_MASK;
        s->fin[0].len[b] = 0;
        s->fin[0].done[b] = 0;
    }
    s->heuristic_open = 1; /* transformers' is_early_stop_heuristic_unsatisfied */
    return XCAP_OK;
}

static int gen_begin(xcap_gen **out, const xcap_params *p, int vocab_size, int32_t start_token, const int32_t *eos_ids,
                     int n_eos, int max_positions, int has_reorder, char *err, size_t errlen) {
    *out = NULL;
    xcap_gen *s = calloc(1, sizeof *s);
    if (!s) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "out of memory for a generation");
    int rc = check_params(vocab_size, p, start_token, eos_ids, n_eos, max_positions, has_reorder, &s->g, err, errlen);
    if (!rc) {
        s->beam = p->num_beams > 1;
        s->B = p->num_beams;
        s->K = (s->g.n_eos + 1 > 2 ? s->g.n_eos + 1 : 2) * s->B;
        rc = gen_setup_buffers(s, err, errlen);
    }
    if (rc) {
        xcap_gen_free(s);
        return rc;
    }
    *out = s;
    return XCAP_OK;
}

int xcap_gen_begin(xcap_gen **out, const xcap_params *p, int vocab_size, int32_t start_token, const int32_t *eos_ids,
                   int n_eos, int max_positions, char *err, size_t errlen) {
    return gen_begin(out, p, vocab_size, start_token, eos_ids, n_eos, max_positions, 1, err, errlen);
}

void xcap_gen_free(xcap_gen *s) {
    if (!s) return;
    free(s->a.base);
    free(s);
}

int xcap_gen_want(const xcap_gen *s, const int32_t **tokens, int *n_seq, int *pos) {
    if (s->finished || s->failed) return 0;
    *pos = s->pos;
    *tokens = s->beam ? s->tokens : &s->seq[s->pos];
    *n_seq = s->beam ? s->B : 1;
    return 1;
}

float *xcap_gen_logits(xcap_gen *s) { return s->logits; }

/* ---------------------------------------------------------------------------------------------
 * Greedy and sampling (transformers' _sample), one sequence in slot 0: the loop body after
 * the decoder call at position pos.
 * ------------------------------------------------------------------------------------------- */

static int greedy_or_sample_step(xcap_gen *s, char *err, size_t errlen) {
    const gen_setup *g = &s->g;
    const xcap_params *p = g->p;
    const int V = g->V, T = g->max_length - 1, pos = s->pos;
    float *logits = s->logits, *warped = s->warped;
    int rc = check_logits(logits, V, pos, 0, err, errlen);
    if (rc) return rc;
    xcap_gen_process(&g->proc, s->seq, pos + 1, logits, V, s->mark);
    float m, log_sum;
    log_normalizer(logits, V, &m, &log_sum);
    if (m == -INFINITY) {
        /* torch would take token 0 (argmax of all -inf) or fail to sample; neither is a caption. */
        return xcap_fail(err, errlen, XCAP_ERR_ARG,
                         "every token is banned at position %d (no_repeat_ngram_size %d, min_length %d)", pos,
                         p->no_repeat_ngram_size, g->proc.min_length);
    }
    int token = 0;
    if (!p->do_sample) {
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[token]) token = v; /* first index among equal maxima */
    } else {
        memcpy(warped, logits, (size_t)V * sizeof *warped);
        /* Warpers in _get_logits_processor's order: temperature, top-k, top-p. */
        if (p->temperature != 1.0f) {
            float top = -INFINITY;
            for (int v = 0; v < V; v++) {
                warped[v] = warped[v] / p->temperature;
                if (warped[v] > top) top = warped[v];
            }
            if (isinf(top))
                return xcap_fail(err, errlen, XCAP_ERR_ARG,
                                 "temperature %g is too small: the scaled logits overflow at position %d",
                                 (double)p->temperature, pos);
        }
        if (p->top_k > 0) xcap_gen_top_k(warped, V, p->top_k, s->kth_scratch);
        if (p->top_p < 1.0f) xcap_gen_top_p(warped, V, p->top_p, s->ranked);
        token = draw_token(warped, V, &s->rng);
    }
    s->sum_logprob += (logits[token] - m) - log_sum;
    s->seq[pos + 1] = token;
    s->n = pos + 1;
    s->pos = pos + 1;
    if (is_eos(g, token) || s->pos >= T) s->finished = 1;
    return XCAP_OK;
}

static int greedy_or_sample_end(xcap_gen *s, xcap_result *result, xcap_gen_trace *trace, char *err, size_t errlen) {
    float score = s->sum_logprob;
    return fill_result(1, s->seq + 1, s->slots, (size_t)(s->g.max_length - 1), &s->n, &s->sum_logprob, &score,
                       s->g.max_length - 1, result, trace, err, errlen);
}

/* ---------------------------------------------------------------------------------------------
 * Beam search (transformers' _beam_search, batch of one)
 *
 * Per step, with B beams in cache slots 0..B-1 and K = max(2, 1 + n_eos) * B:
 *  b. scores = log_softmax(logits) -> processors -> + the beam's running sum (float32)
 *  c. the K best of the B x V candidates (beam 0 alone at the first step: the others start at
 *     -1e9)
 *  d. a candidate finishes on an eos id or when it reaches max_length
 *  e. the next running beams are the best B candidates after finished ones get -1e9
 *  f. finished candidates ranked < B enter the finished set with sum / length^length_penalty;
 *     the set keeps the best B (merged by the same masked-score top-k as transformers)
 *  g. stop when the early-stopping heuristic says no running beam can improve the finished set,
 *     when early_stopping is true and B hypotheses are finished, or when every candidate
 *     finished (max_length). Otherwise reorder the cache slots and go on.
 * ------------------------------------------------------------------------------------------- */

/* The loop body after the decoder call at position pos (step a). Sets *reorder to the slot
 * permutation the caller must apply, or NULL. */
static int beam_search_step(xcap_gen *s, const int **reorder, char *err, size_t errlen) {
    const gen_setup *g = &s->g;
    const xcap_params *p = g->p;
    const int B = s->B, V = g->V, L = g->max_length, K = s->K, pos = s->pos;
    const float lp = p->length_penalty;
    const xcap_early_stopping early = p->early_stopping;
    const int cur_len = pos + 1; /* tokens in each running beam, start token included */
    const beam_set *r = &s->run[s->cur], *f = &s->fin[s->cur];
    beam_set *rn = &s->run[1 - s->cur], *fn = &s->fin[1 - s->cur];
    float *scores = s->logits, *masked = s->masked, *merged = s->merged;
    xcap_gen_ranked *cand = s->cand, *pick = s->pick;
    uint8_t *cand_hit = s->cand_hit;
    int *src = s->src;
    *reorder = NULL;

    /* b. Log-probabilities plus running sums. */
    for (int b = 0; b < B; b++) {
        float *row = scores + (size_t)b * V;
        int rc = check_logits(row, V, pos, b, err, errlen);
        if (rc) return rc;
        xcap_gen_log_softmax(row, V);
        xcap_gen_process(&g->proc, r->seq + (size_t)b * L, cur_len, row, V, s->mark);
        const float running = r->score[b];
        for (int v = 0; v < V; v++) row[v] += running;
    }

    /* c. Top K of all B x V candidates (flat index = beam * V + token). */
    xcap_gen_select_top(scores, B * V, K, cand);

    /* d. Candidates that finish: an eos id, or the sequence reaches max_length. */
    int all_hit = 1;
    for (int k = 0; k < K; k++) {
        int token = cand[k].index % V;
        cand_hit[k] = (uint8_t)(is_eos(g, token) || cur_len + 1 >= L);
        all_hit &= cand_hit[k];
    }

    /* e. Next running beams: the best B once finished candidates are pushed down by -1e9. */
    for (int k = 0; k < K; k++) masked[k] = cand[k].score + (cand_hit[k] ? BEAM_MASK : 0.0f);
    xcap_gen_select_top(masked, K, B, pick);
    for (int i = 0; i < B; i++) {
        int k = pick[i].index, beam = cand[k].index / V;
        src[i] = beam;
        memcpy(rn->seq + (size_t)i * L, r->seq + (size_t)beam * L, (size_t)cur_len * sizeof *rn->seq);
        rn->seq[(size_t)i * L + cur_len] = cand[k].index % V;
        s->tokens[i] = cand[k].index % V; /* what slot i runs at the next position */
        memcpy(rn->slots + (size_t)i * L, r->slots + (size_t)beam * L, (size_t)pos * sizeof *rn->slots);
        rn->slots[(size_t)i * L + pos] = beam;
        rn->score[i] = pick[i].score;
    }

    /* f. Finished set: merge the previous B with this step's K candidates, where only
     * finishing candidates ranked < B carry their real (length-normalised) score. The two
     * masks before it never fire for one image (the loop has already ended when they would)
     * but are kept so that the arithmetic is transformers'. */
    const float denom = (float)pow((double)cur_len, (double)lp); /* generated tokens incl. this one */
    int all_done = 1;
    for (int b = 0; b < B; b++) all_done &= f->done[b];
    for (int b = 0; b < B; b++) merged[b] = f->score[b];
    for (int k = 0; k < K; k++) {
        float sc = cand[k].score / denom;
        sc += (all_done && early == XCAP_EARLY_STOP_TRUE) ? BEAM_MASK : 0.0f;
        sc += s->heuristic_open ? 0.0f : BEAM_MASK;
        sc += (cand_hit[k] && k < B) ? 0.0f : BEAM_MASK;
        merged[B + k] = sc;
    }
    xcap_gen_select_top(merged, B + K, B, pick);
    for (int i = 0; i < B; i++) {
        int j = pick[i].index;
        if (j < B) {
            memcpy(fn->seq + (size_t)i * L, f->seq + (size_t)j * L, (size_t)f->len[j] * sizeof *fn->seq);
            memcpy(fn->slots + (size_t)i * L, f->slots + (size_t)j * L, (size_t)f->len[j] * sizeof *fn->slots);
            fn->score[i] = f->score[j];
            fn->sum[i] = f->sum[j];
            fn->len[i] = f->len[j];
            fn->done[i] = f->done[j];
        } else {
            int k = j - B, beam = cand[k].index / V;
            fn->done[i] = (uint8_t)(cand_hit[k] && k < B);
            fn->score[i] = pick[i].score;
            fn->sum[i] = fn->done[i] ? cand[k].score : pick[i].score;
            fn->len[i] = fn->done[i] ? cur_len : 0;
            if (fn->done[i]) {
                memcpy(fn->seq + (size_t)i * L, r->seq + (size_t)beam * L + 1, (size_t)pos * sizeof *fn->seq);
                fn->seq[(size_t)i * L + pos] = cand[k].index % V;
                memcpy(fn->slots + (size_t)i * L, r->slots + (size_t)beam * L, (size_t)pos * sizeof *fn->slots);
                fn->slots[(size_t)i * L + pos] = beam;
            }
        }
    }
    s->cur = 1 - s->cur;

    /* g. Stopping (_check_early_stop_heuristic, _beam_search_has_unfinished_sequences). The
     * best running beam's sum is divided by the tokens generated so far, or with "never" and
     * a positive length_penalty by the most it could have; it is compared with the worst
     * finished score, or with -1e9 for a slot not yet finished. */
    {
        const beam_set *rs = &s->run[s->cur], *fs = &s->fin[s->cur];
        int best_len = (early == XCAP_EARLY_STOP_NEVER && lp > 0.0f) ? L - 1 : cur_len;
        float best_possible = rs->score[0] / (float)pow((double)best_len, (double)lp);
        float worst_finished = fs->score[0];
        for (int b = 1; b < B; b++)
            if (fs->score[b] < worst_finished) worst_finished = fs->score[b];
        int improvable = 0;
        all_done = 1;
        for (int b = 0; b < B; b++) {
            float worst = fs->done[b] ? worst_finished : BEAM_MASK;
            if (best_possible > worst) improvable = 1;
            all_done &= fs->done[b];
        }
        s->heuristic_open = s->heuristic_open && improvable;
        if (!s->heuristic_open || (all_done && early == XCAP_EARLY_STOP_TRUE) || all_hit) {
            s->finished = 1;
            return XCAP_OK;
        }
    }

    /* At position 0 every slot holds the start token alone: there is nothing to move. */
    int identity = 1;
    for (int i = 0; i < B; i++) identity &= src[i] == i || pos == 0;
    if (!identity) *reorder = src;
    s->pos = pos + 1;
    return XCAP_OK;
}

static int beam_search_end(xcap_gen *s, xcap_result *result, xcap_gen_trace *trace, char *err, size_t errlen) {
    /* The finished set is sorted best first. A slot that never received a hypothesis (only
     * possible when every candidate scored -1e9 or -inf) is returned empty, with the -1e9
     * score transformers reports for it. */
    const beam_set *fs = &s->fin[s->cur];
    const int R = s->g.p->num_return_sequences;
    for (int h = 0; h < R; h++) s->n_out[h] = fs->done[h] ? fs->len[h] : 0;
    return fill_result(R, fs->seq, fs->slots, (size_t)s->g.max_length, s->n_out, fs->sum, fs->score,
                       s->g.max_length - 1, result, trace, err, errlen);
}

int xcap_gen_feed(xcap_gen *s, const float *logits, const int **reorder, char *err, size_t errlen) {
    *reorder = NULL;
    if (s->finished || s->failed)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: logits fed to a generation that has ended");
    size_t n = (size_t)(s->beam ? s->B : 1) * s->g.V;
    if (logits != s->logits) memcpy(s->logits, logits, n * sizeof *logits);
    int rc = s->beam ? beam_search_step(s, reorder, err, errlen) : greedy_or_sample_step(s, err, errlen);
    if (rc) s->failed = rc;
    return rc;
}

int xcap_gen_end(xcap_gen *s, xcap_result *result, xcap_gen_trace *trace, char *err, size_t errlen) {
    if (!result) return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: no result to fill");
    memset(result, 0, sizeof *result);
    if (trace) memset(trace, 0, sizeof *trace);
    if (s->failed || !s->finished)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: the generation %s",
                         s->failed ? "failed" : "has not finished");
    return s->beam ? beam_search_end(s, result, trace, err, errlen) : greedy_or_sample_end(s, result, trace, err, errlen);
}

int xcap_generate_traced(const xcap_decoder_ops *ops, const xcap_params *p, int32_t start_token,
                         const int32_t *eos_ids, int n_eos, int max_positions, xcap_result *result,
                         xcap_gen_trace *trace, char *err, size_t errlen) {
    if (!result) return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: no result to fill");
    memset(result, 0, sizeof *result);
    if (trace) memset(trace, 0, sizeof *trace);
    if (!ops || !ops->step) return xcap_fail(err, errlen, XCAP_ERR_ARG, "generate: no decoder step callback");
    xcap_gen *s;
    int rc = gen_begin(&s, p, ops->vocab_size, start_token, eos_ids, n_eos, max_positions, ops->reorder != NULL, err,
                       errlen);
    if (rc) return rc;
    const int32_t *tokens;
    int n_seq, pos;
    while (xcap_gen_want(s, &tokens, &n_seq, &pos)) {
        const int *src;
        rc = ops->step(ops->ctx, tokens, n_seq, pos, s->logits, err, errlen);
        if (!rc) rc = xcap_gen_feed(s, s->logits, &src, err, errlen);
        if (!rc && src) rc = ops->reorder(ops->ctx, src, n_seq, pos, err, errlen);
        if (rc) break;
    }
    if (!rc) rc = xcap_gen_end(s, result, trace, err, errlen);
    xcap_gen_free(s);
    return rc;
}

int xcap_generate(const xcap_decoder_ops *ops, const xcap_params *p, int32_t start_token,
                  const int32_t *eos_ids, int n_eos, int max_positions, xcap_result *result,
                  char *err, size_t errlen) {
    return xcap_generate_traced(ops, p, start_token, eos_ids, n_eos, max_positions, result, NULL, err,
                                errlen);
}
