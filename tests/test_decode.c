/* End to end: image file → caption tokens, for greedy, beam search (with n-best) and the logits
 * processors, against the PyTorch reference's results in tests/fixtures/goldens/<model>/decode.json.
 * Token sequences must be identical; scores agree to fp32 summation-order noise. Sampling is
 * checked for reproducibility (the reference's random stream cannot be matched). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/image.h"
#include "harness.h"
#include "nn/common.h"

static int cases_run;

static void apply_params(const cJSON *j, xcap_params *p) {
    const cJSON *v;
#define INT_KEY(key, field) if ((v = cJSON_GetObjectItemCaseSensitive(j, key)) && cJSON_IsNumber(v)) p->field = v->valueint
#define FLOAT_KEY(key, field) if ((v = cJSON_GetObjectItemCaseSensitive(j, key)) && cJSON_IsNumber(v)) p->field = (float)v->valuedouble
    INT_KEY("max_length", max_length);
    INT_KEY("max_new_tokens", max_new_tokens);
    INT_KEY("min_length", min_length);
    INT_KEY("min_new_tokens", min_new_tokens);
    INT_KEY("num_beams", num_beams);
    INT_KEY("num_return_sequences", num_return_sequences);
    INT_KEY("no_repeat_ngram_size", no_repeat_ngram_size);
    FLOAT_KEY("length_penalty", length_penalty);
    FLOAT_KEY("repetition_penalty", repetition_penalty);
#undef INT_KEY
#undef FLOAT_KEY
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "early_stopping"))) {
        if (cJSON_IsTrue(v)) p->early_stopping = XCAP_EARLY_STOP_TRUE;
        else if (cJSON_IsString(v) && !strcmp(v->valuestring, "never")) p->early_stopping = XCAP_EARLY_STOP_NEVER;
        else p->early_stopping = XCAP_EARLY_STOP_HEURISTIC;
    }
}

static void check_case(xcap_state *st, const xcap_model *m, const char *model_name, const cJSON *c, int idx) {
    const cJSON *image = cJSON_GetObjectItemCaseSensitive(c, "image");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(c, "params");
    const cJSON *hyps = cJSON_GetObjectItemCaseSensitive(c, "hyps");
    if (!cJSON_IsString(image) || !cJSON_IsObject(params) || !cJSON_IsArray(hyps)) {
        CHECK(0, "%s case %d: malformed", model_name, idx);
        return;
    }
    char err[512];
    uint8_t *rgb;
    int w, h;
    if (image_load_file(image->valuestring, &rgb, &w, &h, err, sizeof err) != 0) {
        CHECK(0, "%s", err);
        return;
    }
    xcap_params p = xcap_model_params(m);
    p.n_threads = 2;
    apply_params(params, &p);
    xcap_result r;
    int rc = xcap_caption(st, rgb, w, h, &p, &r, err, sizeof err);
    free(rgb);
    char *pj = cJSON_PrintUnformatted(params);
    CHECK(rc == XCAP_OK, "%s case %d (%s %s): %s", model_name, idx, image->valuestring, pj, err);
    if (rc) {
        free(pj);
        return;
    }
    cases_run++;
    int n_ref = cJSON_GetArraySize(hyps);
    CHECK(r.n_hyps == n_ref, "%s case %d (%s %s): %d hypotheses, reference has %d", model_name, idx, image->valuestring,
          pj, r.n_hyps, n_ref);
    for (int i = 0; i < n_ref && i < r.n_hyps; i++) {
        const cJSON *hr = cJSON_GetArrayItem(hyps, i);
        const cJSON *toks = cJSON_GetObjectItemCaseSensitive(hr, "tokens");
        int n = cJSON_GetArraySize(toks), same = n == r.hyps[i].n_tokens;
        for (int t = 0; same && t < n; t++) same = cJSON_GetArrayItem(toks, t)->valueint == r.hyps[i].tokens[t];
        char *ts = cJSON_PrintUnformatted(toks);
        CHECK(same, "%s case %d (%s %s) hyp %d: tokens differ; reference %s, got %d tokens starting %d", model_name, idx,
              image->valuestring, pj, i, ts, r.hyps[i].n_tokens, r.hyps[i].n_tokens ? r.hyps[i].tokens[0] : -1);
        free(ts);
        double ref_sum = cJSON_GetObjectItemCaseSensitive(hr, "sum_logprob")->valuedouble;
        double ref_score = cJSON_GetObjectItemCaseSensitive(hr, "score")->valuedouble;
        CHECK(fabs(r.hyps[i].sum_logprob - ref_sum) <= 1e-4 * (1 + fabs(ref_sum)),
              "%s case %d hyp %d: sum_logprob %.7g vs reference %.7g", model_name, idx, i, r.hyps[i].sum_logprob, ref_sum);
        CHECK(fabs(r.hyps[i].score - ref_score) <= 1e-4 * (1 + fabs(ref_score)),
              "%s case %d hyp %d: score %.7g vs reference %.7g", model_name, idx, i, r.hyps[i].score, ref_score);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(hr, "text");
        if (cJSON_IsString(text))
            CHECK(!strcmp(text->valuestring, r.hyps[i].text), "%s case %d hyp %d: text '%s' vs reference '%s'", model_name,
                  idx, i, r.hyps[i].text, text->valuestring);
    }
    free(pj);
    xcap_result_free(&r);
}

static void check_sampling(xcap_state *st, const xcap_model *m) {
    char err[512];
    uint8_t *rgb;
    int w, h;
    if (image_load_file("tests/fixtures/images/gradient_32x32.png", &rgb, &w, &h, err, sizeof err) != 0) {
        CHECK(0, "%s", err);
        return;
    }
    xcap_params p = xcap_model_params(m);
    p.do_sample = 1;
    p.num_beams = 1;
    p.top_k = 0;
    p.temperature = 1.5f;
    int distinct = 0;
    xcap_result first = {0};
    for (int seed = 1; seed <= 6; seed++) {
        xcap_result a, b;
        p.seed = (uint64_t)seed;
        int ra = xcap_caption(st, rgb, w, h, &p, &a, err, sizeof err);
        int rb = xcap_caption(st, rgb, w, h, &p, &b, err, sizeof err);
        CHECK(ra == 0 && rb == 0, "sampling: %s", err);
        if (ra || rb) break;
        int same = a.hyps[0].n_tokens == b.hyps[0].n_tokens &&
                   !memcmp(a.hyps[0].tokens, b.hyps[0].tokens, a.hyps[0].n_tokens * sizeof(int32_t));
        CHECK(same, "sampling with seed %d is not reproducible", seed);
        if (seed == 1) {
            first = a;
        } else {
            distinct += a.hyps[0].n_tokens != first.hyps[0].n_tokens ||
                        memcmp(a.hyps[0].tokens, first.hyps[0].tokens, a.hyps[0].n_tokens * sizeof(int32_t));
            xcap_result_free(&a);
        }
        xcap_result_free(&b);
    }
    CHECK(distinct > 0, "six seeds at temperature 1.5 all gave the same caption");
    xcap_result_free(&first);
    free(rgb);
}

static void check_model(const char *model_name, const char *golden_model, int with_sampling) {
    char dir[512], path[512], err[512];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", model_name);
    snprintf(path, sizeof path, "tests/fixtures/goldens/%s/decode.json", golden_model);
    char *text;
    size_t size;
    if (xcap_read_file(path, &text, &size, err, sizeof err) != 0) {
        CHECK(0, "%s", err);
        return;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    CHECK(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 0, "%s: no cases", path);
    xcap_model *m;
    xcap_state *st;
    int rc = xcap_model_load(dir, &m, err, sizeof err);
    CHECK(rc == 0, "load %s: %s", dir, err);
    if (rc == 0) {
        rc = xcap_state_new(m, &st, err, sizeof err);
        CHECK(rc == 0, "state: %s", err);
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cases) check_case(st, m, model_name, c, i++);
        if (with_sampling) check_sampling(st, m);
        xcap_state_free(st);
        xcap_model_free(m);
    }
    cJSON_Delete(root);
}

int main(void) {
    check_model("tiny", "tiny", 1);
    check_model("wide", "wide", 0);
    check_model("gpt2vocab", "gpt2vocab", 0);
    check_model("tiny-f16", "tiny", 0); /* tiny's weights are exact in F16 */
    check_model("tiny-bf16", "tiny-bf16", 0);
    printf("%d decoding cases compared with the reference\n", cases_run);
    return harness_finish("test_decode");
}
