#include "cmd/options.h"

#include "cmd/image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef XCAP_DEFAULT_MODEL_DIR
#define XCAP_DEFAULT_MODEL_DIR "weights/default"
#endif

void options_init(cli_options *o) {
    memset(o, 0, sizeof *o);
    o->values = xcap_default_params();
}

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "xcap: %s: expected an integer in [%d, %d], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "xcap: %s: expected a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int options_take_value(int argc, char **argv, int *i, const char *lng, const char *shrt, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(lng);
    if (!strncmp(a, lng, n) && a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (strcmp(a, lng) != 0 && !(shrt && !strcmp(a, shrt))) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "xcap: option %s needs a value\n", a);
        *value = NULL;
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

int options_parse_one(cli_options *o, int argc, char **argv, int *i) {
    xcap_params *p = &o->values;
    const char *v;
    int m, rc = 0;
    const char *a = argv[*i];
#define OPTION(lng, shrt) ((m = options_take_value(argc, argv, i, lng, shrt, &v)) != 0)
    if (!strcmp(a, "--json")) return o->json = 1;
    if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) return o->verbose = 1;
    if (!strcmp(a, "--sample")) {
        o->set |= OPT_SAMPLE;
        return p->do_sample = 1;
    }
    if (!strcmp(a, "--greedy")) {
        o->set |= OPT_SAMPLE | OPT_BEAMS;
        p->do_sample = 0;
        p->num_beams = 1;
        return 1;
    }
    if (OPTION("--model", "-m")) {
        if (m > 0) o->model_dir = v;
    } else if (OPTION("--threads", "-t")) {
        if (m > 0) rc = parse_int("--threads", v, 0, 1024, &p->n_threads), o->set |= OPT_THREADS;
    } else if (OPTION("--max-tokens", NULL)) {
        if (m > 0) rc = parse_int("--max-tokens", v, 1, INT_MAX / 2, &p->max_new_tokens), o->set |= OPT_MAX_TOKENS;
    } else if (OPTION("--max-length", NULL)) {
        if (m > 0) rc = parse_int("--max-length", v, 2, INT_MAX / 2, &p->max_length), o->set |= OPT_MAX_LENGTH;
    } else if (OPTION("--min-length", NULL)) {
        if (m > 0) rc = parse_int("--min-length", v, 0, INT_MAX / 2, &p->min_length), o->set |= OPT_MIN_LENGTH;
    } else if (OPTION("--min-tokens", NULL)) {
        if (m > 0) rc = parse_int("--min-tokens", v, 0, INT_MAX / 2, &p->min_new_tokens), o->set |= OPT_MIN_TOKENS;
    } else if (OPTION("--beams", "-b")) {
        if (m > 0) rc = parse_int("--beams", v, 1, 256, &p->num_beams), o->set |= OPT_BEAMS;
    } else if (OPTION("--length-penalty", NULL)) {
        if (m > 0) rc = parse_float("--length-penalty", v, -100, 100, &p->length_penalty), o->set |= OPT_LENGTH_PENALTY;
    } else if (OPTION("--early-stopping", NULL)) {
        if (m > 0) {
            o->set |= OPT_EARLY_STOPPING;
            if (!strcmp(v, "true")) p->early_stopping = XCAP_EARLY_STOP_TRUE;
            else if (!strcmp(v, "false")) p->early_stopping = XCAP_EARLY_STOP_HEURISTIC;
            else if (!strcmp(v, "never")) p->early_stopping = XCAP_EARLY_STOP_NEVER;
            else {
                fprintf(stderr, "xcap: --early-stopping: expected true, false or never, got '%s'\n", v);
                rc = -1;
            }
        }
    } else if (OPTION("--temperature", NULL)) {
        if (m > 0) rc = parse_float("--temperature", v, 1e-6, 1e6, &p->temperature), o->set |= OPT_TEMPERATURE;
    } else if (OPTION("--top-k", NULL)) {
        if (m > 0) rc = parse_int("--top-k", v, 0, INT_MAX, &p->top_k), o->set |= OPT_TOP_K;
    } else if (OPTION("--top-p", NULL)) {
        if (m > 0) rc = parse_float("--top-p", v, 1e-9, 1.0, &p->top_p), o->set |= OPT_TOP_P;
    } else if (OPTION("--seed", NULL)) {
        if (m > 0) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "xcap: --seed: expected a non-negative integer, got '%s'\n", v);
                rc = -1;
            }
            p->seed = s;
            o->set |= OPT_SEED;
        }
    } else if (OPTION("--n-best", NULL)) {
        if (m > 0) rc = parse_int("--n-best", v, 1, 256, &p->num_return_sequences), o->set |= OPT_N_BEST;
    } else if (OPTION("--repetition-penalty", NULL)) {
        if (m > 0)
            rc = parse_float("--repetition-penalty", v, 1e-6, 1e6, &p->repetition_penalty), o->set |= OPT_REPETITION_PENALTY;
    } else if (OPTION("--no-repeat-ngram", NULL)) {
        if (m > 0) rc = parse_int("--no-repeat-ngram", v, 0, 1 << 20, &p->no_repeat_ngram_size), o->set |= OPT_NO_REPEAT_NGRAM;
    } else {
        return 0;
    }
#undef OPTION
    return (m < 0 || rc < 0) ? -1 : 1;
}

int options_parse_max_pixels(int argc, char **argv, int *i, long long *max_pixels) {
    const char *v;
    int m = options_take_value(argc, argv, i, "--max-pixels", NULL, &v);
    if (m <= 0) return m;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < 1 || n > IMAGE_MAX_PIXELS) {
        fprintf(stderr, "xcap: --max-pixels: expected an integer in [1, %lld], got '%s'\n", IMAGE_MAX_PIXELS, v);
        return -1;
    }
    *max_pixels = n;
    return 1;
}

void options_print_help(FILE *out) {
    xcap_params d = xcap_default_params();
    fprintf(out,
            "Model and machine:\n"
            "  -m, --model DIR          model directory (default: $XCAP_MODEL, else the shipped model\n"
            "                           %s)\n"
            "  -t, --threads N          compute threads (default: %d = all cores)\n"
            "Decoding (defaults: the model's generation_config.json, else these):\n"
            "      --max-tokens N       generate at most N tokens (wins over --max-length)\n"
            "      --max-length N       at most N tokens counting the start token (default: %d)\n"
            "      --min-length N       no end-of-text before N tokens, start token counted (default: %d)\n"
            "      --min-tokens N       no end-of-text before N generated tokens (default: %d)\n"
            "  -b, --beams N            beam search with N beams; 1 = greedy (default: %d)\n"
            "      --length-penalty F   beam score = log-prob sum / length^F (default: %g)\n"
            "      --early-stopping X   true | false | never (default: %s)\n"
            "      --n-best N           return the N best beams (N <= beams) (default: %d)\n"
            "      --greedy             argmax decoding (overrides the model's beams and sampling)\n"
            "      --sample             sample instead of argmax (also turned on by the next three)\n"
            "      --temperature F      sampling temperature (default: %g)\n"
            "      --top-k N            sample from the N most likely tokens; 0 = off (default: %d)\n"
            "      --top-p F            sample from the smallest set reaching probability F (default: %g)\n"
            "      --seed N             sampling seed: same seed, same caption (default: %llu)\n"
            "      --repetition-penalty F  penalise tokens already generated (default: %g)\n"
            "      --no-repeat-ngram N  never repeat an N-gram; 0 = off (default: %d)\n",
            XCAP_DEFAULT_MODEL_DIR, d.n_threads, d.max_length, d.min_length, d.min_new_tokens, d.num_beams,
            d.length_penalty,
            d.early_stopping == XCAP_EARLY_STOP_TRUE ? "true" : d.early_stopping == XCAP_EARLY_STOP_NEVER ? "never" : "false",
            d.num_return_sequences, d.temperature, d.top_k, d.top_p, (unsigned long long)d.seed, d.repetition_penalty,
            d.no_repeat_ngram_size);
}

int options_resolve(const cli_options *o, const xcap_model *model, xcap_params *out) {
    xcap_params p = xcap_model_params(model);
    const xcap_params *v = &o->values;
    unsigned s = o->set;
    if (s & OPT_THREADS) p.n_threads = v->n_threads;
    if (s & OPT_MAX_TOKENS) p.max_new_tokens = v->max_new_tokens;
    if (s & OPT_MAX_LENGTH) p.max_length = v->max_length, p.max_new_tokens = (s & OPT_MAX_TOKENS) ? p.max_new_tokens : 0;
    if (s & OPT_MIN_LENGTH) p.min_length = v->min_length;
    if (s & OPT_MIN_TOKENS) p.min_new_tokens = v->min_new_tokens;
    if (s & OPT_BEAMS) p.num_beams = v->num_beams;
    if (s & OPT_LENGTH_PENALTY) p.length_penalty = v->length_penalty;
    if (s & OPT_EARLY_STOPPING) p.early_stopping = v->early_stopping;
    if (s & OPT_SAMPLE) p.do_sample = v->do_sample;
    if (s & OPT_TEMPERATURE) p.temperature = v->temperature, p.do_sample = 1;
    if (s & OPT_TOP_K) p.top_k = v->top_k, p.do_sample = 1;
    if (s & OPT_TOP_P) p.top_p = v->top_p, p.do_sample = 1;
    if (s & OPT_SEED) p.seed = v->seed;
    if (s & OPT_N_BEST) p.num_return_sequences = v->num_return_sequences;
    if (s & OPT_REPETITION_PENALTY) p.repetition_penalty = v->repetition_penalty;
    if (s & OPT_NO_REPEAT_NGRAM) p.no_repeat_ngram_size = v->no_repeat_ngram_size;
    if (p.do_sample && p.num_beams > 1) {
        if (s & OPT_BEAMS) {
            fprintf(stderr, "xcap: --beams %d cannot be combined with sampling (beam sampling is not implemented)\n",
                    p.num_beams);
            return -1;
        }
        p.num_beams = 1; /* sampling asked on the command line wins over the model's beams */
    }
    if (p.num_return_sequences > p.num_beams && !p.do_sample) {
        fprintf(stderr, "xcap: --n-best %d needs at least as many beams (--beams %d)\n", p.num_return_sequences,
                p.num_beams);
        return -1;
    }
    *out = p;
    return 0;
}

const char *options_model_dir(const cli_options *o) {
    if (o->model_dir) return o->model_dir;
    const char *env = getenv("XCAP_MODEL");
    if (env && *env) return env;
    return XCAP_DEFAULT_MODEL_DIR;
}
