/* Decoding strategies (text/generate.c) behind a toy decoder.
 *
 * The toy decoder's logits for a slot at position pos are table[pos][last token] plus
 * mix[hash(prefix) % H]: the hash of the whole prefix lives in the slot, so a missed or wrong
 * cache reorder changes the logits. It also records the prefix hash each slot held at each step,
 * which lets the beam trace be checked against what the decoder really saw.
 *
 * Covered: each processor and warper against a naive version; greedy against a naive argmax
 * loop; sampling reproducibility and its distribution; beam search on hand-computed V = 5 cases
 * (a winner that changes slot, a dropped eos ranked >= num_beams, the three early_stopping
 * modes, length_penalty, n-best, max_length); parameter errors; four generations driven in lock
 * step through xcap_gen_begin/want/feed/end against their solo runs; and every case in
 * tests/fixtures/generate/toy_cases.json, written by weights/reference/toy_generate_goldens.py
 * from the Python reference on the same toy decoder (tokens identical, scores within 1e-5). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "nn/common.h"
#include "text/generate.h"

/* ---- toy decoder ---------------------------------------------------------------------- */

#define TOY_MAX_SLOTS 8
#define TOY_MAX_POS 64
#define TOY_HASH_START 12345u

typedef struct {
    int V, P, H;
    const float *table; /* [P][V][V]: row for (position, last token) */
    const float *mix;   /* [H][V], or NULL */
    uint64_t hash[TOY_MAX_SLOTS];
    int len[TOY_MAX_SLOTS];
    uint64_t seen[TOY_MAX_POS][TOY_MAX_SLOTS]; /* prefix hash of each slot after each step */
    int steps, reorders;
    int ignore_reorder; /* a broken cache, to show that the tests notice */
} toy_decoder;

static uint64_t toy_hash_push(uint64_t h, int32_t token) {
    return (h * 1000003u + (uint64_t)token + 1u) % 2147483647u;
}

static uint64_t toy_hash(const int32_t *prefix, int n) {
    uint64_t h = TOY_HASH_START;
    for (int i = 0; i < n; i++) h = toy_hash_push(h, prefix[i]);
    return h;
}

static void toy_row(const toy_decoder *t, int pos, int32_t last, uint64_t hash, float *out) {
    const float *a = t->table + ((size_t)pos * t->V + last) * t->V;
    for (int v = 0; v < t->V; v++) out[v] = t->mix ? a[v] + t->mix[(size_t)(hash % t->H) * t->V + v] : a[v];
}

static int toy_step(void *ctx, const int32_t *tokens, int n_seq, int pos, float *logits, char *err, size_t errlen) {
    toy_decoder *t = ctx;
    if (n_seq < 1 || n_seq > TOY_MAX_SLOTS || pos < 0 || pos >= t->P || pos >= TOY_MAX_POS)
        return xcap_fail(err, errlen, XCAP_ERR_ARG, "toy: %d slots at position %d", n_seq, pos);
    for (int i = 0; i < n_seq; i++) {
        if (pos == 0) {
            t->hash[i] = TOY_HASH_START;
            t->len[i] = 0;
        }
        if (t->len[i] != pos)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "toy: slot %d holds %d positions, step at %d", i, t->len[i],
                             pos);
        if (tokens[i] < 0 || tokens[i] >= t->V)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "toy: token %d", (int)tokens[i]);
        t->hash[i] = toy_hash_push(t->hash[i], tokens[i]);
        t->len[i] = pos + 1;
        t->seen[pos][i] = t->hash[i];
        toy_row(t, pos, tokens[i], t->hash[i], logits + (size_t)i * t->V);
    }
    t->steps++;
    return XCAP_OK;
}

static int toy_reorder(void *ctx, const int *src, int n_seq, int pos, char *err, size_t errlen) {
    toy_decoder *t = ctx;
    uint64_t hash[TOY_MAX_SLOTS];
    int identity = 1;
    for (int i = 0; i < n_seq; i++) {
        if (src[i] < 0 || src[i] >= n_seq || t->len[src[i]] != pos + 1)
            return xcap_fail(err, errlen, XCAP_ERR_ARG, "toy: reorder src[%d] = %d at position %d", i, src[i], pos);
        hash[i] = t->hash[src[i]];
        identity &= src[i] == i;
    }
    if (identity) return xcap_fail(err, errlen, XCAP_ERR_ARG, "toy: identity reorder at position %d", pos);
    t->reorders++;
    if (!t->ignore_reorder) memcpy(t->hash, hash, (size_t)n_seq * sizeof *hash);
    return XCAP_OK;
}

static xcap_decoder_ops toy_ops(toy_decoder *t) {
    return (xcap_decoder_ops){.ctx = t, .vocab_size = t->V, .step = toy_step, .reorder = toy_reorder};
}

/* Settings written out in full, so the tests do not depend on anyone's defaults. */
static xcap_params base_params(void) {
    xcap_params p;
    memset(&p, 0, sizeof p);
    p.max_length = 20;
    p.num_beams = 1;
    p.length_penalty = 1.0f;
    p.early_stopping = XCAP_EARLY_STOP_HEURISTIC;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    p.num_return_sequences = 1;
    return p;
}

/* Every hypothesis's trace must point, at each step, at a slot whose prefix (as the decoder saw
 * it) is exactly start + the hypothesis's tokens before that step. */
static int trace_matches(const toy_decoder *t, int32_t start, const xcap_result *r, const xcap_gen_trace *tr) {
    if (tr->n_hyps != r->n_hyps) return 0;
    for (int h = 0; h < r->n_hyps; h++) {
        int32_t prefix[TOY_MAX_POS + 1];
        prefix[0] = start;
        for (int s = 0; s < tr->stride; s++) {
            int slot = tr->slots[h * tr->stride + s];
            if (s >= r->hyps[h].n_tokens) {
                if (slot != -1) return 0;
                continue;
            }
            if (slot < 0 || slot >= TOY_MAX_SLOTS) return 0;
            if (t->seen[s][slot] != toy_hash(prefix, s + 1)) return 0;
            prefix[s + 1] = r->hyps[h].tokens[s];
        }
    }
    return 1;
}

/* ---- hand-made V = 5 decoders: logits = log(probabilities) per (position, last token) ---- */

#define HV 5
#define HP 6

typedef struct {
    int pos, last;
    float prob[HV];
} hand_row;

static float hand_table[HP * HV * HV];

static void hand_build(const hand_row *rows, int n_rows) {
    static const float fallback[HV] = {0.1f, 0.15f, 0.2f, 0.25f, 0.3f};
    for (int pos = 0; pos < HP; pos++)
        for (int last = 0; last < HV; last++)
            for (int v = 0; v < HV; v++) hand_table[(pos * HV + last) * HV + v] = logf(fallback[v]);
    for (int i = 0; i < n_rows; i++)
        for (int v = 0; v < HV; v++)
            hand_table[(rows[i].pos * HV + rows[i].last) * HV + v] = logf(rows[i].prob[v]);
}

static toy_decoder hand_decoder(void) {
    toy_decoder t;
    memset(&t, 0, sizeof t);
    t.V = HV;
    t.P = HP;
    t.H = 1;
    t.table = hand_table;
    return t;
}

static int tokens_are(const xcap_hypothesis *h, const int32_t *want, int n) {
    if (h->n_tokens != n) return 0;
    for (int i = 0; i < n; i++)
        if (h->tokens[i] != want[i]) return 0;
    return 1;
}

static int slots_are(const xcap_gen_trace *tr, int h, const int *want, int n) {
    for (int i = 0; i < n; i++)
        if (tr->slots[h * tr->stride + i] != want[i]) return 0;
    return 1;
}

#define HAND_START 4
#define HAND_EOS 0

static void run_hand(const xcap_params *p, toy_decoder *t, xcap_result *r, xcap_gen_trace *tr) {
    char err[256] = "";
    const int32_t eos = HAND_EOS;
    xcap_decoder_ops ops = toy_ops(t);
    int rc = xcap_generate_traced(&ops, p, HAND_START, &eos, 1, HP, r, tr, err, sizeof err);
    CHECK(rc == XCAP_OK, "hand case: %s", err);
}

static void check_hyp(const xcap_result *r, int h, const int32_t *tokens, int n, double prob, float lp,
                      const char *what) {
    if (h >= r->n_hyps) {
        CHECK(0, "%s: hypothesis %d missing (%d returned)", what, h, r->n_hyps);
        return;
    }
    CHECK(tokens_are(&r->hyps[h], tokens, n), "%s: hypothesis %d tokens (got %d tokens, first %d)", what, h,
          r->hyps[h].n_tokens, r->hyps[h].n_tokens ? r->hyps[h].tokens[0] : -1);
    double sum = log(prob), score = sum / pow(n, lp);
    CHECK(fabs(r->hyps[h].sum_logprob - sum) < 1e-5, "%s: hypothesis %d sum_logprob %.7f, expected %.7f", what, h,
          r->hyps[h].sum_logprob, sum);
    CHECK(fabs(r->hyps[h].score - score) < 1e-5, "%s: hypothesis %d score %.7f, expected %.7f", what, h,
          r->hyps[h].score, score);
}

/* Beam search, B = 2, max_length 4. Step 0: t1 .6, t2 .3, t3 .05, eos .04 (ranked 3 >= B:
 * dropped, not finished). Step 1: [2]+3 = .27 (from slot 1), [1]+1 = .18 (slot 0), [1]+2 = .15,
 * [1]+3 = .12: the winner moves from slot 1 to slot 0, so the cache is swapped (src {1, 0}).
 * Step 2 reaches max_length: [2,3]+eos = .216 and [1,1]+eos = .09 rank 0 and 1 and finish. */
static void test_beam_winner_changes_slot(void) {
    const hand_row rows[] = {
        {0, 4, {.04f, .6f, .3f, .05f, .01f}}, {1, 1, {.1f, .3f, .25f, .2f, .15f}},
        {1, 2, {.01f, .02f, .03f, .9f, .04f}}, {2, 3, {.8f, .03f, .04f, .05f, .08f}},
        {2, 1, {.5f, .2f, .15f, .1f, .05f}},
    };
    hand_build(rows, sizeof rows / sizeof rows[0]);
    toy_decoder t = hand_decoder();
    xcap_params p = base_params();
    p.num_beams = 2;
    p.num_return_sequences = 2;
    p.max_length = 4;
    xcap_result r;
    xcap_gen_trace tr;
    run_hand(&p, &t, &r, &tr);
    const int32_t best[] = {2, 3, 0}, second[] = {1, 1, 0};
    check_hyp(&r, 0, best, 3, .3 * .9 * .8, 1.0f, "winner changes slot");
    check_hyp(&r, 1, second, 3, .6 * .3 * .5, 1.0f, "winner changes slot");
    const int best_slots[] = {0, 1, 0}, second_slots[] = {0, 0, 1};
    CHECK(r.n_hyps == 2 && slots_are(&tr, 0, best_slots, 3) && slots_are(&tr, 1, second_slots, 3),
          "winner changes slot: trace");
    CHECK(trace_matches(&t, HAND_START, &r, &tr), "winner changes slot: trace disagrees with the decoder's slots");
    CHECK(t.reorders == 1 && t.steps == 3, "winner changes slot: %d reorders, %d steps (want 1, 3)", t.reorders,
          t.steps);
    xcap_result_free(&r);
    xcap_gen_trace_free(&tr);
}

/* B = 2, max_length 3. Step 0: t1 .34, t2 .33, eos .32 ranked 2 >= B: dropped, although its
 * score log(.32) = -1.139 would beat both survivors: [2,4] = .33 * .3 (-1.156 per token) and
 * [1,2] = .34 * .29 (-1.158), which finish at max_length. */
static void test_beam_drops_low_ranked_eos(void) {
    const hand_row rows[] = {
        {0, 4, {.32f, .34f, .33f, .006f, .004f}},
        {1, 1, {.1f, .2f, .29f, .26f, .15f}},
    };
    hand_build(rows, sizeof rows / sizeof rows[0]);
    toy_decoder t = hand_decoder();
    xcap_params p = base_params();
    p.num_beams = 2;
    p.num_return_sequences = 2;
    p.max_length = 3;
    xcap_result r;
    xcap_gen_trace tr;
    run_hand(&p, &t, &r, &tr);
    const int32_t best[] = {2, 4}, second[] = {1, 2};
    check_hyp(&r, 0, best, 2, .33 * .3, 1.0f, "dropped eos");
    check_hyp(&r, 1, second, 2, .34 * .29, 1.0f, "dropped eos");
    xcap_result_free(&r);
    xcap_gen_trace_free(&tr);
}

/* B = 2, max_length 5, length_penalty 1, one table for the three early_stopping modes:
 * step 0: t1 .4, eos .3 (finishes: [0], -1.204), t2 .2.
 * step 1: [1]+eos .2 finishes ([1,0], -0.805); running [2,3] .156, [1,1] .12. The set is full:
 *   true stops here. false: -1.858 / 2 = -0.929 > worst -1.204, go on. never: / 4, go on.
 * step 2: [2,3]+eos .1404 finishes ([2,3,0], -0.654), pushing out [0]; running [1,1,1] .06.
 *   false: -2.813 / 3 = -0.938 < worst -0.805: stop. never: -2.813 / 4 = -0.703, go on.
 * step 3 (max_length): [1,1,1,1] .042 (-0.793) finishes and pushes out [1,0]. */
static void test_beam_early_stopping(void) {
    const hand_row rows[] = {
        {0, 4, {.3f, .4f, .2f, .06f, .04f}}, {1, 1, {.5f, .3f, .1f, .06f, .04f}},
        {1, 2, {.04f, .05f, .06f, .78f, .07f}}, {2, 3, {.9f, .04f, .03f, .02f, .01f}},
        {2, 1, {.1f, .5f, .2f, .15f, .05f}}, {3, 1, {.2f, .7f, .05f, .03f, .02f}},
        {3, 2, {.4f, .3f, .15f, .1f, .05f}},
    };
    hand_build(rows, sizeof rows / sizeof rows[0]);
    const int32_t h0[] = {0}, h10[] = {1, 0}, h230[] = {2, 3, 0}, h1111[] = {1, 1, 1, 1};
    const double p0 = .3, p10 = .4 * .5, p230 = .2 * .78 * .9, p1111 = .4 * .3 * .5 * .7;
    const xcap_early_stopping modes[] = {XCAP_EARLY_STOP_TRUE, XCAP_EARLY_STOP_HEURISTIC, XCAP_EARLY_STOP_NEVER};
    const int want_steps[] = {2, 3, 4};
    for (int m = 0; m < 3; m++) {
        toy_decoder t = hand_decoder();
        xcap_params p = base_params();
        p.num_beams = 2;
        p.num_return_sequences = 2;
        p.max_length = 5;
        p.early_stopping = modes[m];
        xcap_result r;
        xcap_gen_trace tr;
        run_hand(&p, &t, &r, &tr);
        char what[64];
        snprintf(what, sizeof what, "early_stopping mode %d", (int)modes[m]);
        if (modes[m] == XCAP_EARLY_STOP_TRUE) {
            check_hyp(&r, 0, h10, 2, p10, 1.0f, what);
            check_hyp(&r, 1, h0, 1, p0, 1.0f, what);
        } else if (modes[m] == XCAP_EARLY_STOP_HEURISTIC) {
            check_hyp(&r, 0, h230, 3, p230, 1.0f, what);
            check_hyp(&r, 1, h10, 2, p10, 1.0f, what);
        } else {
            check_hyp(&r, 0, h230, 3, p230, 1.0f, what);
            check_hyp(&r, 1, h1111, 4, p1111, 1.0f, what);
        }
        CHECK(t.steps == want_steps[m], "%s: %d decoder steps, expected %d", what, t.steps, want_steps[m]);
        CHECK(trace_matches(&t, HAND_START, &r, &tr), "%s: trace", what);
        xcap_result_free(&r);
        xcap_gen_trace_free(&tr);
    }

    /* length_penalty 0 ranks by plain sums; at step 1 the running [2,3] (-1.858) cannot beat
     * the worst finished [1,0] (-1.609) and the heuristic stops: n-best = [0], [1,0]. */
    {
        toy_decoder t = hand_decoder();
        xcap_params p = base_params();
        p.num_beams = 2;
        p.num_return_sequences = 2;
        p.max_length = 5;
        p.length_penalty = 0.0f;
        xcap_result r;
        xcap_gen_trace tr;
        run_hand(&p, &t, &r, &tr);
        check_hyp(&r, 0, h0, 1, p0, 0.0f, "length_penalty 0");
        check_hyp(&r, 1, h10, 2, p10, 0.0f, "length_penalty 0");
        CHECK(t.steps == 2, "length_penalty 0: %d steps, expected 2", t.steps);
        xcap_result_free(&r);
        xcap_gen_trace_free(&tr);
    }
    /* length_penalty 2 favours length more: after step 2 the bound -2.813 / 9 = -0.313 beats
     * the worst finished ([1,0]: -1.609 / 4 = -0.402), so it runs to max_length; then
     * [1,1,1,1] (-3.170 / 16 = -0.198) beats [2,3,0] (-1.963 / 9 = -0.218). */
    {
        toy_decoder t = hand_decoder();
        xcap_params p = base_params();
        p.num_beams = 2;
        p.num_return_sequences = 2;
        p.max_length = 5;
        p.length_penalty = 2.0f;
        xcap_result r;
        xcap_gen_trace tr;
        run_hand(&p, &t, &r, &tr);
        check_hyp(&r, 0, h1111, 4, p1111, 2.0f, "length_penalty 2");
        check_hyp(&r, 1, h230, 3, p230, 2.0f, "length_penalty 2");
        CHECK(t.steps == 4, "length_penalty 2: %d steps, expected 4", t.steps);
        xcap_result_free(&r);
        xcap_gen_trace_free(&tr);
    }
    /* num_return_sequences 1 returns the best only. */
    {
        toy_decoder t = hand_decoder();
        xcap_params p = base_params();
        p.num_beams = 2;
        p.max_length = 5;
        xcap_result r;
        xcap_gen_trace tr;
        run_hand(&p, &t, &r, &tr);
        CHECK(r.n_hyps == 1, "n-best 1: %d hypotheses", r.n_hyps);
        check_hyp(&r, 0, h230, 3, p230, 1.0f, "n-best 1");
        xcap_result_free(&r);
        xcap_gen_trace_free(&tr);
    }
}

/* Greedy on the hand table: ties go to the first index. Row (0, start) has .3 at tokens 1 and
 * 2; row (1, 1) has .35 at 3 and 4; then eos. */
static void test_greedy_ties(void) {
    const hand_row rows[] = {
        {0, 4, {.1f, .3f, .3f, .2f, .1f}},
        {1, 1, {.1f, .1f, .1f, .35f, .35f}},
        {2, 3, {.6f, .1f, .1f, .1f, .1f}},
    };
    hand_build(rows, sizeof rows / sizeof rows[0]);
    toy_decoder t = hand_decoder();
    xcap_params p = base_params();
    p.max_length = 6;
    xcap_result r;
    xcap_gen_trace tr;
    run_hand(&p, &t, &r, &tr);
    const int32_t want[] = {1, 3, 0};
    check_hyp(&r, 0, want, 3, .3 * .35 * .6, 0.0f, "greedy ties");
    CHECK(r.n_hyps == 1 && r.hyps[0].score == r.hyps[0].sum_logprob, "greedy: score = sum_logprob");
    const int zeros[] = {0, 0, 0};
    CHECK(r.n_hyps == 1 && slots_are(&tr, 0, zeros, 3) && tr.slots[3] == -1, "greedy: trace is slot 0");
    xcap_result_free(&r);
    xcap_gen_trace_free(&tr);

    /* max_length cuts it: 2 tokens, no eos. */
    t = hand_decoder();
    p.max_length = 3;
    run_hand(&p, &t, &r, &tr);
    check_hyp(&r, 0, want, 2, .3 * .35, 0.0f, "greedy max_length");
    xcap_result_free(&r);
    xcap_gen_trace_free(&tr);
    /* max_new_tokens wins over max_length. */
    t = hand_decoder();
    p.max_length = 3;
    p.max_new_tokens = 1;
    run_hand(&p, &t, &r, &tr);
    check_hyp(&r, 0, want, 1, .3, 0.0f, "greedy max_new_tokens");
    xcap_result_free(&r);
    xcap_gen_trace_free(&tr);
}

/* ---- processors and warpers against naive versions ---------------------------------------- */

static int in_seq(const int32_t *seq, int n, int32_t tok) {
    for (int i = 0; i < n; i++)
        if (seq[i] == tok) return 1;
    return 0;
}

static void naive_repetition(float *s, int V, const int32_t *seq, int n, float penalty) {
    for (int v = 0; v < V; v++)
        if (in_seq(seq, n, v)) s[v] = s[v] < 0 ? s[v] * penalty : s[v] / penalty;
}

/* v is banned when prefix-of-(n-1) + v occurs anywhere in seq. */
static void naive_ngram(float *s, int V, const int32_t *seq, int len, int n) {
    if (n <= 0 || len < n - 1) return;
    for (int v = 0; v < V; v++) {
        int32_t gram[16];
        for (int i = 0; i < n - 1; i++) gram[i] = seq[len - (n - 1) + i];
        gram[n - 1] = v;
        for (int i = 0; i + n <= len; i++)
            if (!memcmp(seq + i, gram, (size_t)n * sizeof *gram)) s[v] = -INFINITY;
    }
}

static int same_floats(const float *a, const float *b, int n) {
    for (int i = 0; i < n; i++)
        if (!(a[i] == b[i]) && !(isnan(a[i]) && isnan(b[i]))) return 0;
    return 1;
}

static void test_processors(void) {
    uint64_t rng = 7;
    enum { V = 13 };
    float got[V], want[V];
    uint8_t mark[V] = {0};
    for (int trial = 0; trial < 400; trial++) {
        int len = 1 + (int)(test_rng_next(&rng) % 24);
        int32_t seq[32];
        int alphabet = 2 + (int)(test_rng_next(&rng) % 6); /* few symbols: many repeats */
        for (int i = 0; i < len; i++) seq[i] = (int32_t)(test_rng_next(&rng) % alphabet);
        for (int v = 0; v < V; v++) want[v] = got[v] = 4 * test_rng_uniform(&rng);
        want[3] = got[3] = 0.0f;

        float penalty = 0.5f + (float)(test_rng_next(&rng) % 4) * 0.5f;
        naive_repetition(want, V, seq, len, penalty);
        xcap_gen_repetition_penalty(got, V, seq, len, penalty, mark);
        CHECK(same_floats(got, want, V), "repetition penalty trial %d", trial);
        int clean = 1;
        for (int v = 0; v < V; v++) clean &= mark[v] == 0;
        CHECK(clean, "repetition penalty leaves its scratch zeroed");

        int n = 1 + (int)(test_rng_next(&rng) % 4);
        naive_ngram(want, V, seq, len, n);
        xcap_gen_no_repeat_ngram(got, V, seq, len, n);
        CHECK(same_floats(got, want, V), "no_repeat_ngram n=%d len=%d trial %d", n, len, trial);

        /* The three together, min_length included, in the spec's order. */
        int32_t eos[2] = {1, 5};
        xcap_gen_processors pp = {penalty, n, 1 + (int)(test_rng_next(&rng) % 30), eos, 2};
        for (int v = 0; v < V; v++) want[v] = got[v] = 4 * test_rng_uniform(&rng);
        naive_repetition(want, V, seq, len, penalty);
        naive_ngram(want, V, seq, len, n);
        if (len < pp.min_length) want[1] = want[5] = -INFINITY;
        xcap_gen_process(&pp, seq, len, got, V, mark);
        CHECK(same_floats(got, want, V), "processors together, trial %d", trial);
    }
    /* n-gram by hand: seq 7 1 2 3 1 2, n = 3: prefix (1 2) was followed by 3: 3 banned. */
    {
        const int32_t seq[] = {7, 1, 2, 3, 1, 2};
        for (int v = 0; v < V; v++) got[v] = 1;
        xcap_gen_no_repeat_ngram(got, V, seq, 6, 3);
        int ok = got[3] == -INFINITY;
        for (int v = 0; v < V; v++) ok &= v == 3 || got[v] == 1;
        CHECK(ok, "no_repeat_ngram by hand");
    }
}

static void test_log_softmax(void) {
    uint64_t rng = 11;
    float x[37];
    for (int trial = 0; trial < 50; trial++) {
        int V = 1 + (int)(test_rng_next(&rng) % 37);
        double m = -INFINITY, sum = 0, ref[37];
        for (int v = 0; v < V; v++) {
            x[v] = 30 * test_rng_uniform(&rng);
            if (x[v] > m) m = x[v];
        }
        for (int v = 0; v < V; v++) sum += exp(x[v] - m);
        for (int v = 0; v < V; v++) ref[v] = x[v] - m - log(sum);
        xcap_gen_log_softmax(x, V);
        double worst = 0;
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(x[v] - ref[v]));
        CHECK(worst < 1e-5, "log_softmax V=%d: max error %g", V, worst);
    }
}

static int ranked_cmp(const void *pa, const void *pb) {
    const xcap_gen_ranked *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->index - b->index;
}

static void test_select_top(void) {
    uint64_t rng = 5;
    float v[300];
    xcap_gen_ranked got[40], all[300];
    for (int trial = 0; trial < 300; trial++) {
        int n = 1 + (int)(test_rng_next(&rng) % 300), k = 1 + (int)(test_rng_next(&rng) % 40);
        int levels = 1 + (int)(test_rng_next(&rng) % 8); /* few levels: many ties */
        for (int i = 0; i < n; i++) {
            int l = (int)(test_rng_next(&rng) % levels);
            v[i] = l == 0 ? -INFINITY : (float)l;
            all[i] = (xcap_gen_ranked){v[i], i};
        }
        qsort(all, (size_t)n, sizeof *all, ranked_cmp);
        int count = xcap_gen_select_top(v, n, k, got);
        int ok = count == (k < n ? k : n);
        for (int i = 0; ok && i < count; i++) ok = got[i].index == all[i].index && got[i].score == all[i].score;
        CHECK(ok, "select_top n=%d k=%d levels=%d: not the stable descending order", n, k, levels);
    }
}

static void naive_top_k(float *s, int V, int k) {
    if (k <= 0 || k >= V) return;
    static float sorted[4096];
    memcpy(sorted, s, (size_t)V * sizeof *s);
    for (int i = 1; i < V; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && sorted[j - 1] < sorted[j]; j--) {
            float t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    for (int v = 0; v < V; v++)
        if (s[v] < sorted[k - 1]) s[v] = -INFINITY;
}

/* Sort by (score desc, id asc), then keep the shortest prefix whose probability reaches top_p. */
static void naive_top_p(float *s, int V, float top_p) {
    if (top_p >= 1) return;
    static xcap_gen_ranked r[4096];
    int n = 0;
    for (int v = 0; v < V; v++)
        if (s[v] != -INFINITY) r[n++] = (xcap_gen_ranked){s[v], v};
    if (!n) return;
    qsort(r, (size_t)n, sizeof *r, ranked_cmp);
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)(r[i].score - r[0].score));
    double cum = 0;
    int keep = n;
    for (int i = 0; i < n; i++) {
        cum += exp((double)(r[i].score - r[0].score)) / z;
        if (cum >= top_p) {
            keep = i + 1;
            break;
        }
    }
    for (int i = keep; i < n; i++) s[r[i].index] = -INFINITY;
}

static void test_warpers(void) {
    uint64_t rng = 3;
    static float got[4096], want[4096], scratch[4096];
    static xcap_gen_ranked ranked[4096];
    for (int trial = 0; trial < 400; trial++) {
        /* mostly small rows; the last 20 long enough for deep selection recursion */
        int V = trial < 380 ? 1 + (int)(test_rng_next(&rng) % 300) : 1000 + (int)(test_rng_next(&rng) % 3000);
        int quantized = trial % 2; /* half the trials with many equal logits */
        for (int v = 0; v < V; v++) {
            float x = 5 * test_rng_uniform(&rng);
            want[v] = got[v] = quantized ? floorf(x) : x;
        }
        if (V > 3) want[2] = got[2] = -INFINITY;
        int k = (int)(test_rng_next(&rng) % (V + 3));
        naive_top_k(want, V, k);
        xcap_gen_top_k(got, V, k, scratch);
        CHECK(same_floats(got, want, V), "top_k V=%d k=%d trial %d", V, k, trial);

        float top_p = (float)(1 + test_rng_next(&rng) % 100) / 100.0f;
        naive_top_p(want, V, top_p);
        xcap_gen_top_p(got, V, top_p, ranked);
        CHECK(same_floats(got, want, V), "top_p V=%d p=%g trial %d", V, top_p, trial);
        int kept = 0;
        for (int v = 0; v < V; v++) kept += got[v] != -INFINITY;
        CHECK(kept >= 1 || V <= 3, "top_p keeps at least one token");
    }
    /* By hand: probabilities .5 .3 .2; top_p .45 keeps one token, .55 and .79 two, .85 three
     * (cuts away from the sums .5 and .8, where float rounding decides). */
    const float probs[3] = {.5f, .3f, .2f};
    const float cut[4] = {.45f, .55f, .79f, .85f};
    const int kept_want[4] = {1, 2, 2, 3};
    for (int c = 0; c < 4; c++) {
        for (int v = 0; v < 3; v++) got[v] = logf(probs[v]);
        xcap_gen_top_p(got, 3, cut[c], ranked);
        int kept = 0;
        for (int v = 0; v < 3; v++) kept += got[v] != -INFINITY;
        CHECK(kept == kept_want[c], "top_p %.2f on .5/.3/.2 kept %d, expected %d", cut[c], kept, kept_want[c]);
    }
    /* Exactly on the boundary: four equal scores are exactly .25 each; with top_p .5 the third
     * token has exactly .5 above it and goes (transformers: cumulative .5 <= 1 - .5). Among
     * equal scores the lower ids rank first. */
    const float cuts[2] = {.5f, .75f};
    for (int c = 0; c < 2; c++) {
        for (int v = 0; v < 4; v++) got[v] = 0.0f;
        xcap_gen_top_p(got, 4, cuts[c], ranked);
        int ok = 1;
        for (int v = 0; v < 4; v++) ok &= (got[v] == 0.0f) == (v < 2 + c);
        CHECK(ok, "top_p %.2f on four equal scores: keeps the wrong tokens", cuts[c]);
    }
}

/* ---- greedy and sampling on the random toy ----------------------------------------------- */

typedef struct {
    npy_array table, mix;
    int ok;
} toy_tables;

static toy_tables load_toy(void) {
    toy_tables tt;
    memset(&tt, 0, sizeof tt);
    if (npy_load("tests/fixtures/generate/toy_table.npy", &tt.table) != 0 ||
        npy_load("tests/fixtures/generate/toy_mix.npy", &tt.mix) != 0) {
        CHECK(0, "toy decoder tables missing (tests/fixtures/generate/toy_*.npy)");
        return tt;
    }
    tt.ok = tt.table.dtype == 'f' && tt.table.ndim == 3 && tt.table.shape[1] == tt.table.shape[2] &&
            tt.mix.dtype == 'f' && tt.mix.ndim == 2 && tt.mix.shape[1] == tt.table.shape[1];
    CHECK(tt.ok, "toy tables have unexpected shapes");
    return tt;
}

static toy_decoder toy_from(const toy_tables *tt) {
    toy_decoder t;
    memset(&t, 0, sizeof t);
    t.P = (int)tt->table.shape[0];
    t.V = (int)tt->table.shape[1];
    t.H = (int)tt->mix.shape[0];
    t.table = tt->table.data;
    t.mix = tt->mix.data;
    return t;
}

#define TOY_START 22

/* Greedy written the slow way: full prefix, naive processors, argmax, log-sum-exp in double. */
static void naive_greedy(const toy_decoder *t, const xcap_params *p, const int32_t *eos, int n_eos, int32_t *out,
                         int *n_out, double *sum) {
    int32_t seq[TOY_MAX_POS + 1] = {TOY_START};
    int len = 1, max_length = p->max_new_tokens > 0 ? p->max_new_tokens + 1 : p->max_length;
    int min_length = p->min_new_tokens > 0 ? p->min_new_tokens + 1 : p->min_length;
    float row[64];
    *sum = 0;
    while (len < max_length) {
        toy_row(t, len - 1, seq[len - 1], toy_hash(seq, len), row);
        naive_repetition(row, t->V, seq, len, p->repetition_penalty);
        naive_ngram(row, t->V, seq, len, p->no_repeat_ngram_size);
        if (len < min_length)
            for (int e = 0; e < n_eos; e++) row[eos[e]] = -INFINITY;
        int best = 0;
        for (int v = 0; v < t->V; v++)
            if (row[v] > row[best]) best = v;
        double z = 0;
        for (int v = 0; v < t->V; v++) z += exp((double)row[v] - row[best]);
        *sum += -log(z);
        seq[len++] = best;
        if (in_seq(eos, n_eos, best)) break;
    }
    *n_out = len - 1;
    memcpy(out, seq + 1, (size_t)(len - 1) * sizeof *out);
}

static void test_greedy_toy(const toy_tables *tt) {
    uint64_t rng = 99;
    for (int trial = 0; trial < 60; trial++) {
        toy_decoder t = toy_from(tt);
        xcap_params p = base_params();
        p.max_length = 2 + (int)(test_rng_next(&rng) % (t.P - 1));
        if (trial % 3 == 0) p.repetition_penalty = 1.0f + (float)(test_rng_next(&rng) % 4) * 0.5f;
        if (trial % 4 == 1) p.no_repeat_ngram_size = 1 + (int)(test_rng_next(&rng) % 3);
        if (trial % 5 == 2) p.min_length = (int)(test_rng_next(&rng) % 12);
        if (trial % 7 == 3) p.min_new_tokens = (int)(test_rng_next(&rng) % 8);
        int32_t eos[2] = {2, 7};
        int n_eos = 1 + trial % 2;
        int32_t want[TOY_MAX_POS];
        int n_want;
        double sum;
        naive_greedy(&t, &p, eos, n_eos, want, &n_want, &sum);
        xcap_result r;
        char err[256] = "";
        xcap_decoder_ops ops = toy_ops(&t);
        int rc = xcap_generate(&ops, &p, TOY_START, eos, n_eos, t.P, &r, err, sizeof err);
        CHECK(rc == XCAP_OK, "greedy trial %d: %s", trial, err);
        if (rc) continue;
        CHECK(r.n_hyps == 1 && tokens_are(&r.hyps[0], want, n_want), "greedy trial %d: not the argmax path", trial);
        CHECK(fabs(r.hyps[0].sum_logprob - sum) < 1e-4, "greedy trial %d: sum_logprob %.6f, naive %.6f", trial,
              r.hyps[0].sum_logprob, sum);
        xcap_result_free(&r);
    }
}

static int sample_once(toy_decoder *t, const xcap_params *p, xcap_result *r) {
    char err[256] = "";
    const int32_t eos = 2;
    xcap_decoder_ops ops = toy_ops(t);
    int rc = xcap_generate(&ops, p, TOY_START, &eos, 1, t->P, r, err, sizeof err);
    CHECK(rc == XCAP_OK, "sampling: %s", err);
    return rc;
}

static int same_hyp(const xcap_hypothesis *a, const xcap_hypothesis *b) {
    return tokens_are(a, b->tokens, b->n_tokens) && a->sum_logprob == b->sum_logprob;
}

static void test_sampling(const toy_tables *tt) {
    toy_decoder t = toy_from(tt);
    xcap_params p = base_params();
    p.do_sample = 1;
    p.max_length = 16;
    p.temperature = 0.9f;
    p.top_k = 8;
    p.top_p = 0.95f;
    xcap_result a, b;
    int distinct = 0;
    for (uint64_t seed = 0; seed < 12; seed++) {
        p.seed = seed;
        if (sample_once(&t, &p, &a)) return;
        if (sample_once(&t, &p, &b)) return;
        CHECK(a.n_hyps == 1 && b.n_hyps == 1 && same_hyp(&a.hyps[0], &b.hyps[0]), "seed %llu: two runs differ",
              (unsigned long long)seed);
        xcap_result c;
        p.seed = seed + 1;
        if (sample_once(&t, &p, &c)) return;
        distinct += !same_hyp(&a.hyps[0], &c.hyps[0]);
        xcap_result_free(&a);
        xcap_result_free(&b);
        xcap_result_free(&c);
    }
    CHECK(distinct >= 8, "neighbouring seeds gave the same caption %d times in 12", 12 - distinct);

    /* top_k 1 (or a tiny top_p) leaves one token: sampling is greedy. */
    xcap_params g = base_params();
    g.max_length = 16;
    if (sample_once(&t, &g, &a)) return;
    p.top_k = 1;
    p.top_p = 1.0f;
    p.seed = 5;
    if (sample_once(&t, &p, &b)) return;
    CHECK(tokens_are(&b.hyps[0], a.hyps[0].tokens, a.hyps[0].n_tokens), "sampling with top_k 1 is not greedy");
    CHECK(fabs(b.hyps[0].sum_logprob - a.hyps[0].sum_logprob) < 1e-6,
          "sampling sum_logprob (before warpers) differs from greedy's with top_k 1");
    xcap_result_free(&b);
    p.top_k = 0;
    p.top_p = 1e-6f;
    if (sample_once(&t, &p, &b)) return;
    CHECK(tokens_are(&b.hyps[0], a.hyps[0].tokens, a.hyps[0].n_tokens), "sampling with top_p 1e-6 is not greedy");
    xcap_result_free(&a);
    xcap_result_free(&b);

    /* Distribution of the first token over many seeds: frequencies match softmax(row / T) for
     * the 3 tokens top_k keeps, within 5 standard deviations. */
    p.max_new_tokens = 1;
    p.temperature = 2.0f;
    p.top_k = 3;
    p.top_p = 1.0f;
    float row[64];
    int32_t start = TOY_START;
    toy_row(&t, 0, start, toy_hash(&start, 1), row);
    float kept[64];
    for (int v = 0; v < t.V; v++) kept[v] = row[v] / p.temperature;
    naive_top_k(kept, t.V, 3);
    double z = 0, prob[64];
    for (int v = 0; v < t.V; v++) z += exp(kept[v]);
    for (int v = 0; v < t.V; v++) prob[v] = exp(kept[v]) / z;
    enum { DRAWS = 3000 };
    int count[64] = {0};
    for (int d = 0; d < DRAWS; d++) {
        p.seed = 1000 + (uint64_t)d;
        if (sample_once(&t, &p, &a)) return;
        count[a.hyps[0].tokens[0]]++;
        xcap_result_free(&a);
    }
    int ok = 1;
    for (int v = 0; v < t.V; v++) {
        double expect = DRAWS * prob[v], sd = sqrt(DRAWS * prob[v] * (1 - prob[v]));
        if (prob[v] == 0 ? count[v] != 0 : fabs(count[v] - expect) > 5 * sd + 1) ok = 0;
    }
    CHECK(ok, "sampled first-token frequencies do not follow the warped softmax");
}

/* ---- a broken cache is noticed ---------------------------------------------------------- */

static void test_reorder_matters(const toy_tables *tt) {
    xcap_params p = base_params();
    p.num_beams = 4;
    p.num_return_sequences = 4;
    p.max_length = 12;
    p.early_stopping = XCAP_EARLY_STOP_NEVER;
    const int32_t eos = 2;
    char err[256];
    xcap_result good, bad;
    xcap_gen_trace tr;
    toy_decoder t = toy_from(tt);
    xcap_decoder_ops ops = toy_ops(&t);
    int rc = xcap_generate_traced(&ops, &p, TOY_START, &eos, 1, t.P, &good, &tr, err, sizeof err);
    CHECK(rc == XCAP_OK, "reorder: %s", err);
    if (rc) return;
    CHECK(t.reorders > 0, "reorder: this case should move beams between slots");
    CHECK(trace_matches(&t, TOY_START, &good, &tr), "beam trace disagrees with the decoder's slots");
    toy_decoder broken = toy_from(tt);
    broken.ignore_reorder = 1;
    ops = toy_ops(&broken);
    rc = xcap_generate(&ops, &p, TOY_START, &eos, 1, broken.P, &bad, err, sizeof err);
    CHECK(rc == XCAP_OK, "reorder: %s", err);
    int differ = rc != XCAP_OK || bad.n_hyps != good.n_hyps;
    for (int h = 0; !differ && h < good.n_hyps; h++) differ = !same_hyp(&good.hyps[h], &bad.hyps[h]);
    CHECK(differ, "a decoder that ignores reorder gives the same n-best: the toy cannot see reorder bugs");
    xcap_result_free(&good);
    xcap_result_free(&bad);
    xcap_gen_trace_free(&tr);
}

/* ---- several generations driven in lock step (xcap_gen_begin/want/feed/end) -------------- */

/* One generation of a lock-step run: its own settings, decoder (cache slots) and start. */
typedef struct {
    const char *name;
    xcap_params p;
    int32_t start, eos[2];
    int n_eos;
    int first_round; /* rounds before this one joins */
    int own_buffer;  /* the decoder writes into xcap_gen_logits instead of the shared buffer */
    toy_decoder t;
    xcap_gen *gen;
    int rounds; /* decoder steps it took part in */
} lockstep_run;

#define LOCKSTEP_RUNS 4

static int same_result(const xcap_result *a, const xcap_gen_trace *ta, const xcap_result *b,
                       const xcap_gen_trace *tb) {
    if (a->n_hyps != b->n_hyps || ta->stride != tb->stride || ta->n_hyps != tb->n_hyps) return 0;
    for (int h = 0; h < a->n_hyps; h++)
        if (!tokens_are(&a->hyps[h], b->hyps[h].tokens, b->hyps[h].n_tokens) ||
            a->hyps[h].sum_logprob != b->hyps[h].sum_logprob || a->hyps[h].score != b->hyps[h].score)
            return 0;
    return memcmp(ta->slots, tb->slots, (size_t)ta->n_hyps * ta->stride * sizeof *ta->slots) == 0;
}

/* The settings of lock-step run i (see test_lockstep). */
static xcap_params lockstep_params(int i) {
    xcap_params p = base_params();
    if (i == 0) { /* long beam search that moves beams between slots */
        p.num_beams = 4;
        p.num_return_sequences = 4;
        p.max_length = 14;
        p.early_stopping = XCAP_EARLY_STOP_NEVER;
        p.no_repeat_ngram_size = 2;
    } else if (i == 1) {
        p.do_sample = 1;
        p.seed = 7;
        p.temperature = 0.8f;
        p.top_k = 6;
        p.top_p = 0.9f;
        p.repetition_penalty = 1.3f;
        p.max_length = 12;
    } else if (i == 2) { /* ends after three tokens at most */
        p.num_beams = 3;
        p.num_return_sequences = 2;
        p.length_penalty = 0.5f;
        p.early_stopping = XCAP_EARLY_STOP_TRUE;
        p.max_new_tokens = 3;
    } else {
        p.max_length = 5;
        p.min_new_tokens = 2;
    }
    return p;
}

/* Each round gathers the rows every running generation wants into one logits buffer (as one
 * batched decoder call would), then feeds each its rows and applies its reorder. Every result,
 * score and trace must equal that generation's solo xcap_generate_traced bit for bit. */
static void test_lockstep(const toy_tables *tt) {
    lockstep_run runs[LOCKSTEP_RUNS] = {
        {.name = "beam 4, n-best 4, never", .start = TOY_START, .eos = {2}, .n_eos = 1},
        {.name = "sampling", .start = 5, .eos = {2, 7}, .n_eos = 2, .own_buffer = 1},
        {.name = "beam 3, early_stopping true, short", .start = 9, .eos = {7}, .n_eos = 1},
        {.name = "greedy, joins late, other vocabulary", .start = HAND_START, .eos = {HAND_EOS}, .n_eos = 1,
         .first_round = 2},
    };
    for (int i = 0; i < LOCKSTEP_RUNS; i++) runs[i].p = lockstep_params(i);
    hand_build(NULL, 0);
    size_t shared_size = 0;
    for (int i = 0; i < LOCKSTEP_RUNS; i++) {
        lockstep_run *r = &runs[i];
        r->t = i == 3 ? hand_decoder() : toy_from(tt);
        char err[256] = "";
        int rc = xcap_gen_begin(&r->gen, &r->p, r->t.V, r->start, r->eos, r->n_eos, r->t.P, err, sizeof err);
        CHECK(rc == XCAP_OK, "lock step %s: begin: %s", r->name, err);
        if (rc) goto done;
        shared_size += (size_t)r->p.num_beams * r->t.V;
    }
    float *shared = malloc(shared_size * sizeof *shared);
    CHECK(shared != NULL, "lock step: out of memory");
    if (!shared) goto done;
    size_t offset[LOCKSTEP_RUNS];
    int n_rows[LOCKSTEP_RUNS], last_round[LOCKSTEP_RUNS] = {0}, reorders = 0;
    for (int round = 0;; round++) {
        size_t used = 0;
        int running = 0;
        for (int i = 0; i < LOCKSTEP_RUNS; i++) {
            lockstep_run *r = &runs[i];
            const int32_t *tokens;
            int pos;
            n_rows[i] = 0;
            if (round < r->first_round || !xcap_gen_want(r->gen, &tokens, &n_rows[i], &pos)) continue;
            running++;
            CHECK(pos == round - r->first_round, "lock step %s: position %d in round %d", r->name, pos, round);
            offset[i] = used;
            float *out = r->own_buffer ? xcap_gen_logits(r->gen) : shared + used;
            char err[256] = "";
            CHECK(toy_step(&r->t, tokens, n_rows[i], pos, out, err, sizeof err) == XCAP_OK, "lock step %s: %s",
                  r->name, err);
            used += r->own_buffer ? 0 : (size_t)n_rows[i] * r->t.V;
        }
        if (!running && round > runs[3].first_round) break;
        for (int i = 0; i < LOCKSTEP_RUNS; i++) {
            lockstep_run *r = &runs[i];
            if (!n_rows[i]) continue;
            const int *src;
            char err[256] = "";
            int rc = xcap_gen_feed(r->gen, r->own_buffer ? xcap_gen_logits(r->gen) : shared + offset[i], &src, err,
                                   sizeof err);
            CHECK(rc == XCAP_OK, "lock step %s: feed in round %d: %s", r->name, round, err);
            if (!rc && src) {
                rc = toy_reorder(&r->t, src, n_rows[i], round - r->first_round, err, sizeof err);
                CHECK(rc == XCAP_OK, "lock step %s: reorder in round %d: %s", r->name, round, err);
                reorders++;
            }
            r->rounds++;
            last_round[i] = round;
        }
    }
    free(shared);
    printf("lock step: decoder rounds per generation %d, %d, %d, %d (the last joined at round %d); %d reorders\n",
           runs[0].rounds, runs[1].rounds, runs[2].rounds, runs[3].rounds, runs[3].first_round, reorders);
    CHECK(reorders > 0, "lock step: no beam moved between slots, so reorders went untested");
    CHECK(last_round[2] < last_round[0] && last_round[3] < last_round[0],
          "lock step: the short generations should end before the long beam search (rounds %d, %d, %d)",
          last_round[2], last_round[3], last_round[0]);

    for (int i = 0; i < LOCKSTEP_RUNS; i++) {
        lockstep_run *r = &runs[i];
        xcap_result got, solo;
        xcap_gen_trace got_trace, solo_trace;
        char err[256] = "";
        const int *src;
        CHECK(xcap_gen_feed(r->gen, xcap_gen_logits(r->gen), &src, err, sizeof err) ==
                      XCAP_ERR_ARG && src == NULL,
              "lock step %s: logits fed after the end were taken", r->name);
        int rc = xcap_gen_end(r->gen, &got, &got_trace, err, sizeof err);
        CHECK(rc == XCAP_OK, "lock step %s: end: %s", r->name, err);
        if (rc) continue;
        CHECK(trace_matches(&r->t, r->start, &got, &got_trace), "lock step %s: trace disagrees with the decoder's slots",
              r->name);
        toy_decoder alone = i == 3 ? hand_decoder() : toy_from(tt);
        xcap_decoder_ops ops = toy_ops(&alone);
        rc = xcap_generate_traced(&ops, &r->p, r->start, r->eos, r->n_eos, alone.P, &solo, &solo_trace, err,
                                  sizeof err);
        CHECK(rc == XCAP_OK, "lock step %s: solo: %s", r->name, err);
        if (!rc) {
            CHECK(same_result(&got, &got_trace, &solo, &solo_trace),
                  "lock step %s: result differs from the solo run (%d vs %d hypotheses)", r->name, got.n_hyps,
                  solo.n_hyps);
            CHECK(alone.steps == r->rounds && alone.reorders == r->t.reorders,
                  "lock step %s: %d steps and %d reorders, solo %d and %d", r->name, r->rounds, r->t.reorders,
                  alone.steps, alone.reorders);
            xcap_result_free(&solo);
            xcap_gen_trace_free(&solo_trace);
        }
        xcap_result_free(&got);
        xcap_gen_trace_free(&got_trace);
    }
done:
    for (int i = 0; i < LOCKSTEP_RUNS; i++) xcap_gen_free(runs[i].gen);
}

/* The state object refuses calls out of order instead of running on stale state. */
static void test_gen_misuse(void) {
    xcap_params p = base_params();
    p.max_length = 4;
    const int32_t eos = HAND_EOS;
    xcap_gen *g;
    char err[256] = "";
    CHECK(xcap_gen_begin(&g, &p, HV, HAND_START, &eos, 1, HP, err, sizeof err) == XCAP_OK, "begin: %s", err);
    xcap_result r;
    CHECK(xcap_gen_end(g, &r, NULL, err, sizeof err) == XCAP_ERR_ARG && strstr(err, "not finished") &&
              r.n_hyps == 0 && r.hyps == NULL,
          "end before the generation finished: %s", err);
    float bad[HV] = {0, 1, NAN, 3, 4};
    const int *src;
    CHECK(xcap_gen_feed(g, bad, &src, err, sizeof err) == XCAP_ERR_MODEL && strstr(err, "non-finite"),
          "NaN logits: %s", err);
    const int32_t *tokens;
    int n_seq, pos;
    CHECK(!xcap_gen_want(g, &tokens, &n_seq, &pos), "a failed generation still wants a step");
    CHECK(xcap_gen_end(g, &r, NULL, err, sizeof err) == XCAP_ERR_ARG && strstr(err, "failed"),
          "end after a failure: %s", err);
    xcap_gen_free(g);
    p.num_beams = 0;
    static char not_null;
    g = (xcap_gen *)&not_null; /* begin must clear it on failure */
    CHECK(xcap_gen_begin(&g, &p, HV, HAND_START, &eos, 1, HP, err, sizeof err) == XCAP_ERR_ARG && g == NULL &&
              strstr(err, "num_beams 0"),
          "begin with bad settings: %s", err);
}

/* ---- parameter errors ---------------------------------------------------------------- */

static void expect_error(const xcap_params *p, int n_positions, int want_rc, const char *needle, const char *what) {
    toy_decoder t = hand_decoder();
    hand_build(NULL, 0);
    xcap_decoder_ops ops = toy_ops(&t);
    const int32_t eos = HAND_EOS;
    xcap_result r = {(xcap_hypothesis *)&r, 99, NULL};
    char err[256] = "";
    int rc = xcap_generate(&ops, p, HAND_START, &eos, 1, n_positions, &r, err, sizeof err);
    CHECK(rc == want_rc && strstr(err, needle) != NULL, "%s: rc %d (want %d), message \"%s\" (want \"%s\")", what,
          rc, want_rc, err, needle);
    CHECK(r.hyps == NULL && r.n_hyps == 0, "%s: result not left empty", what);
    if (rc == XCAP_OK) xcap_result_free(&r);
}

static void test_errors(void) {
    xcap_params p;
#define BAD(field_set, positions, rc, needle)        \
    do {                                             \
        p = base_params();                           \
        p.max_length = HP;                           \
        field_set;                                   \
        expect_error(&p, positions, rc, needle, #field_set); \
    } while (0)
    BAD(p.max_length = 1, HP, XCAP_ERR_ARG, "max_length 1");
    BAD(p.max_length = 8, HP, XCAP_ERR_ARG, "exceeds the decoder's 6 positions");
    BAD(p.max_new_tokens = 7, HP, XCAP_ERR_ARG, "max_new_tokens 7 exceeds");
    BAD(p.max_new_tokens = -1, HP, XCAP_ERR_ARG, "max_new_tokens -1");
    BAD(p.min_length = -2, HP, XCAP_ERR_ARG, "min_length -2");
    BAD(p.min_new_tokens = -1, HP, XCAP_ERR_ARG, "min_new_tokens -1");
    BAD(p.num_beams = 0, HP, XCAP_ERR_ARG, "num_beams 0");
    BAD(p.num_return_sequences = 0, HP, XCAP_ERR_ARG, "num_return_sequences 0");
    BAD((p.num_beams = 2, p.num_return_sequences = 3), HP, XCAP_ERR_ARG, "exceeds num_beams 2");
    BAD(p.num_return_sequences = 2, HP, XCAP_ERR_ARG, "exceeds num_beams 1");
    BAD((p.do_sample = 1, p.num_beams = 2), HP, XCAP_ERR_UNSUPPORTED, "num_beams 2");
    BAD((p.do_sample = 1, p.temperature = 0), HP, XCAP_ERR_ARG, "temperature 0");
    BAD((p.do_sample = 1, p.temperature = -1), HP, XCAP_ERR_ARG, "temperature -1");
    BAD((p.do_sample = 1, p.top_p = 0), HP, XCAP_ERR_ARG, "top_p 0");
    BAD((p.do_sample = 1, p.top_p = 1.5f), HP, XCAP_ERR_ARG, "top_p 1.5");
    BAD((p.do_sample = 1, p.top_k = -3), HP, XCAP_ERR_ARG, "top_k -3");
    BAD(p.repetition_penalty = 0, HP, XCAP_ERR_ARG, "repetition_penalty 0");
    BAD(p.no_repeat_ngram_size = -1, HP, XCAP_ERR_ARG, "no_repeat_ngram_size -1");
    BAD((p.num_beams = 2, p.length_penalty = NAN), HP, XCAP_ERR_ARG, "length_penalty");
    BAD((p.num_beams = 2, p.early_stopping = (xcap_early_stopping)7), HP, XCAP_ERR_ARG, "early_stopping 7");
#undef BAD
    /* Greedy/sampling settings that do nothing are not checked: the defaults (top_k 50,
     * temperature 0 for greedy) must pass. */
    p = base_params();
    p.temperature = 0;
    p.top_p = 0;
    p.max_length = 3;
    toy_decoder t = hand_decoder();
    xcap_decoder_ops ops = toy_ops(&t);
    const int32_t eos = HAND_EOS;
    xcap_result r;
    char err[256] = "";
    CHECK(xcap_generate(&ops, &p, HAND_START, &eos, 1, HP, &r, err, sizeof err) == XCAP_OK,
          "greedy refused unused sampling settings: %s", err);
    xcap_result_free(&r);
    /* Exactly max_positions + 1 fits (positions 0 .. max_length - 2). */
    p.max_length = HP + 1;
    t = hand_decoder();
    CHECK(xcap_generate(&ops, &p, HAND_START, &eos, 1, HP, &r, err, sizeof err) == XCAP_OK,
          "max_length = positions + 1 refused: %s", err);
    xcap_result_free(&r);
    /* Bad ids and a missing reorder. */
    int32_t bad_eos = HV;
    CHECK(xcap_generate(&ops, &p, HAND_START, &bad_eos, 1, HP, &r, err, sizeof err) == XCAP_ERR_ARG &&
              strstr(err, "eos token 5"),
          "eos outside the vocabulary: %s", err);
    CHECK(xcap_generate(&ops, &p, -1, &eos, 1, HP, &r, err, sizeof err) == XCAP_ERR_ARG && strstr(err, "start token -1"),
          "start token outside the vocabulary: %s", err);
    /* A one-token vocabulary cannot give beam search its 2 x num_beams candidates (torch.topk
     * would fail the same way). */
    {
        xcap_decoder_ops tiny = ops;
        tiny.vocab_size = 1;
        const int32_t zero = 0;
        xcap_params b = base_params();
        b.num_beams = 2;
        b.max_length = 3;
        CHECK(xcap_generate(&tiny, &b, 0, &zero, 1, HP, &r, err, sizeof err) == XCAP_ERR_ARG && strstr(err, "offer fewer"),
              "beam search over a 1-token vocabulary: %s", err);
    }
    xcap_decoder_ops no_reorder = ops;
    no_reorder.reorder = NULL;
    p.num_beams = 2;
    CHECK(xcap_generate(&no_reorder, &p, HAND_START, &eos, 1, HP, &r, err, sizeof err) == XCAP_ERR_ARG &&
              strstr(err, "reorder"),
          "beam search without reorder: %s", err);
}

/* A decoder returning NaN, and one that fails, are reported with their position. */
static int nan_step(void *ctx, const int32_t *tokens, int n_seq, int pos, float *logits, char *err, size_t errlen) {
    for (int i = 0; i < n_seq * HV; i++) logits[i] = pos == 1 && i == 3 ? NAN : 0.1f * i;
    return XCAP_OK;
}

static int failing_step(void *ctx, const int32_t *tokens, int n_seq, int pos, float *logits, char *err,
                        size_t errlen) {
    return pos == 2 ? xcap_fail(err, errlen, XCAP_ERR_MODEL, "decoder broke at %d", pos) : nan_step(ctx, tokens, n_seq, 0, logits, err, errlen);
}

static int identity_reorder(void *ctx, const int *src, int n_seq, int pos, char *err, size_t errlen) { return 0; }

static void test_decoder_failures(void) {
    xcap_params p = base_params();
    p.max_length = 5;
    const int32_t eos0 = 0; /* logits rise with the token id: eos 0 is never chosen */
    char err[256] = "";
    xcap_result r;
    for (int beams = 1; beams <= 2; beams++) {
        p.num_beams = beams;
        xcap_decoder_ops ops = {NULL, HV, nan_step, identity_reorder};
        int rc = xcap_generate(&ops, &p, 1, &eos0, 1, HP, &r, err, sizeof err);
        CHECK(rc == XCAP_ERR_MODEL && strstr(err, "position 1") && strstr(err, "nan"), "NaN logits (beams %d): %d %s",
              beams, rc, err);
        ops.step = failing_step;
        rc = xcap_generate(&ops, &p, 1, &eos0, 1, HP, &r, err, sizeof err);
        CHECK(rc == XCAP_ERR_MODEL && strstr(err, "decoder broke at 2"), "failing step (beams %d): %d %s", beams, rc,
              err);
        CHECK(r.n_hyps == 0 && r.hyps == NULL, "failing step leaves the result empty");
    }
}

/* ---- cross-check against the Python reference on the same toy ---------------------------- */

static void test_reference_cases(const toy_tables *tt) {
    char *text = NULL;
    size_t size;
    char err[256];
    if (xcap_read_file("tests/fixtures/generate/toy_cases.json", &text, &size, err, sizeof err) != XCAP_OK) {
        CHECK(0, "%s", err);
        return;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(root, "start_token");
    CHECK(cJSON_IsArray(cases) && cJSON_IsNumber(start), "toy_cases.json malformed");
    int n_cases = 0, n_hyps = 0;
    double worst_sum = 0, worst_score = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *pj = cJSON_GetObjectItemCaseSensitive(c, "params");
        const cJSON *eos_j = cJSON_GetObjectItemCaseSensitive(c, "eos");
        const cJSON *hyps = cJSON_GetObjectItemCaseSensitive(c, "hyps");
        if (!cJSON_IsString(name) || !cJSON_IsObject(pj) || !cJSON_IsArray(eos_j) || !cJSON_IsArray(hyps)) {
            CHECK(0, "toy case %d malformed", n_cases);
            continue;
        }
        xcap_params p = base_params();
        const cJSON *v;
#define INT_KEY(key) \
    if ((v = cJSON_GetObjectItemCaseSensitive(pj, #key))) p.key = v->valueint
#define FLOAT_KEY(key) \
    if ((v = cJSON_GetObjectItemCaseSensitive(pj, #key))) p.key = (float)v->valuedouble
        INT_KEY(max_length);
        INT_KEY(max_new_tokens);
        INT_KEY(min_length);
        INT_KEY(min_new_tokens);
        INT_KEY(num_beams);
        INT_KEY(num_return_sequences);
        INT_KEY(no_repeat_ngram_size);
        FLOAT_KEY(length_penalty);
        FLOAT_KEY(repetition_penalty);
#undef INT_KEY
#undef FLOAT_KEY
        if ((v = cJSON_GetObjectItemCaseSensitive(pj, "early_stopping"))) {
            if (cJSON_IsTrue(v)) p.early_stopping = XCAP_EARLY_STOP_TRUE;
            else if (cJSON_IsString(v) && !strcmp(v->valuestring, "never")) p.early_stopping = XCAP_EARLY_STOP_NEVER;
            else p.early_stopping = XCAP_EARLY_STOP_HEURISTIC;
        }
        int32_t eos[4];
        int n_eos = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, eos_j) if (n_eos < 4) eos[n_eos++] = e->valueint;

        toy_decoder t = toy_from(tt);
        xcap_decoder_ops ops = toy_ops(&t);
        xcap_result r;
        xcap_gen_trace tr;
        int rc = xcap_generate_traced(&ops, &p, start->valueint, eos, n_eos, t.P, &r, &tr, err, sizeof err);
        CHECK(rc == XCAP_OK, "toy case %s: %s", name->valuestring, err);
        if (rc) continue;
        n_cases++;
        int n_ref = cJSON_GetArraySize(hyps);
        n_hyps += n_ref;
        CHECK(r.n_hyps == n_ref, "toy case %s: %d hypotheses, reference %d", name->valuestring, r.n_hyps, n_ref);
        for (int h = 0; h < n_ref && h < r.n_hyps; h++) {
            const cJSON *hr = cJSON_GetArrayItem(hyps, h);
            const cJSON *toks = cJSON_GetObjectItemCaseSensitive(hr, "tokens");
            int n = cJSON_GetArraySize(toks), same = n == r.hyps[h].n_tokens;
            for (int i = 0; same && i < n; i++) same = cJSON_GetArrayItem(toks, i)->valueint == r.hyps[h].tokens[i];
            char *ts = cJSON_PrintUnformatted(toks);
            CHECK(same, "toy case %s hyp %d: tokens differ from the reference %s", name->valuestring, h, ts);
            free(ts);
            double ref_sum = cJSON_GetObjectItemCaseSensitive(hr, "sum_logprob")->valuedouble;
            double ref_score = cJSON_GetObjectItemCaseSensitive(hr, "score")->valuedouble;
            worst_sum = fmax(worst_sum, fabs(r.hyps[h].sum_logprob - ref_sum));
            worst_score = fmax(worst_score, fabs(r.hyps[h].score - ref_score));
            CHECK(fabs(r.hyps[h].sum_logprob - ref_sum) <= 1e-5, "toy case %s hyp %d: sum_logprob %.7f, reference %.7f",
                  name->valuestring, h, r.hyps[h].sum_logprob, ref_sum);
            CHECK(fabs(r.hyps[h].score - ref_score) <= 1e-5, "toy case %s hyp %d: score %.7f, reference %.7f",
                  name->valuestring, h, r.hyps[h].score, ref_score);
            const cJSON *slots = cJSON_GetObjectItemCaseSensitive(hr, "beam_indices");
            if (cJSON_IsArray(slots)) {
                int ok = cJSON_GetArraySize(slots) == r.hyps[h].n_tokens;
                for (int i = 0; ok && i < r.hyps[h].n_tokens; i++)
                    ok = cJSON_GetArrayItem(slots, i)->valueint == tr.slots[h * tr.stride + i];
                CHECK(ok, "toy case %s hyp %d: trace differs from the reference's beam_indices", name->valuestring, h);
            }
        }
        CHECK(trace_matches(&t, start->valueint, &r, &tr), "toy case %s: trace disagrees with the decoder's slots",
              name->valuestring);
        xcap_result_free(&r);
        xcap_gen_trace_free(&tr);
    }
    CHECK(n_cases >= 40, "only %d toy reference cases ran", n_cases);
    printf("toy reference cases: %d (%d hypotheses); largest |difference|: sum_logprob %.3g, score %.3g\n",
           n_cases, n_hyps, worst_sum, worst_score);
    cJSON_Delete(root);
}

int main(void) {
    test_processors();
    test_log_softmax();
    test_select_top();
    test_warpers();
    test_greedy_ties();
    test_beam_winner_changes_slot();
    test_beam_drops_low_ranked_eos();
    test_beam_early_stopping();
    test_errors();
    test_decoder_failures();
    test_gen_misuse();
    toy_tables tt = load_toy();
    if (tt.ok) {
        test_greedy_toy(&tt);
        test_sampling(&tt);
        test_reorder_matters(&tt);
        test_reference_cases(&tt);
        test_lockstep(&tt);
    }
    npy_free(&tt.table);
    npy_free(&tt.mix);
    return harness_finish("test_generate");
}
