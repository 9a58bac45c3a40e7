/* preprocessor_config.json -> xcap_preprocess_config, with the defaults and size conventions
 * of transformers' ViTImageProcessor (models/vit/image_processing_vit.py, get_size_dict in
 * image_processing_utils.py). */
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/common.h"
#include "vision/preprocess.h"
#include "weights/config.h"

/* Output sides above this are refused as nonsense rather than allocated. */
#define CONFIG_MAX_SIDE 16384

xcap_preprocess_config preprocess_config_default(void) {
    xcap_preprocess_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.width = cfg.height = 224;
    cfg.resample = XCAP_RESAMPLE_BILINEAR;
    cfg.do_resize = cfg.do_rescale = cfg.do_normalize = 1;
    cfg.do_convert_rgb = -1;
    cfg.rescale_factor = 1.0 / 255; /* the Python literal 1 / 255, a double */
    for (int c = 0; c < 3; c++) cfg.mean[c] = cfg.std[c] = 0.5f; /* IMAGENET_STANDARD_* */
    return cfg;
}

/* A JSON number that is an integer in [lo, hi]. */
static int json_int_in(const cJSON *v, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return 0;
    *out = (int)d;
    return 1;
}

static int parse_side(const cJSON *v, const char *name, const char *key, int *out, char *err,
                      size_t errlen) {
    if (!json_int_in(v, 1, CONFIG_MAX_SIDE, out))
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: key \"%s\": expected an integer from 1 to %d", name, key,
                         CONFIG_MAX_SIDE);
    return XCAP_OK;
}

/* `size` as ViTImageProcessor accepts it: {"height", "width"}, an int (square, as
 * get_size_dict with default_to_square), or a [height, width] list. {"shortest_edge": s} is
 * taken as s x s per spec §3.2; note that transformers' ViTImageProcessor itself rejects a
 * size dict without height and width when it resizes. */
static int parse_size(const cJSON *size, const char *name, xcap_preprocess_config *cfg, char *err,
                      size_t errlen) {
    int rc;
    if (cJSON_IsNumber(size)) {
        if ((rc = parse_side(size, name, "size", &cfg->height, err, errlen))) return rc;
        cfg->width = cfg->height;
        return XCAP_OK;
    }
    if (cJSON_IsArray(size)) {
        if (cJSON_GetArraySize(size) != 2)
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                             "%s: key \"size\": a list must be [height, width]", name);
        if ((rc = parse_side(cJSON_GetArrayItem(size, 0), name, "size[0]", &cfg->height, err,
                             errlen)))
            return rc;
        return parse_side(cJSON_GetArrayItem(size, 1), name, "size[1]", &cfg->width, err, errlen);
    }
    if (!cJSON_IsObject(size))
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: key \"size\": expected an object, an integer or [height, width]",
                         name);
    const cJSON *height = cJSON_GetObjectItemCaseSensitive(size, "height");
    const cJSON *width = cJSON_GetObjectItemCaseSensitive(size, "width");
    const cJSON *shortest = cJSON_GetObjectItemCaseSensitive(size, "shortest_edge");
    int n_keys = cJSON_GetArraySize(size);
    if (height && width && n_keys == 2) {
        if ((rc = parse_side(height, name, "size.height", &cfg->height, err, errlen))) return rc;
        return parse_side(width, name, "size.width", &cfg->width, err, errlen);
    }
    if (shortest && n_keys == 1) {
        if ((rc = parse_side(shortest, name, "size.shortest_edge", &cfg->height, err, errlen)))
            return rc;
        cfg->width = cfg->height;
        return XCAP_OK;
    }
    /* {"shortest_edge", "longest_edge"}, {"longest_edge"}, {"max_height", "max_width"}:
     * aspect-preserving sizes that a ViT processor does not produce. */
    char keys[160] = "";
    for (const cJSON *k = size->child; k; k = k->next) {
        size_t used = strlen(keys);
        snprintf(keys + used, sizeof keys - used, "%s\"%s\"", used ? ", " : "", k->string);
    }
    return xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED,
                     "%s: key \"size\": keys {%s} are not supported (expected \"height\" and "
                     "\"width\", or \"shortest_edge\")",
                     name, keys);
}

/* Booleans as Python reads them (`if do_resize:`): true/false or a number; null = default. */
static int parse_flag(const cJSON *root, const char *name, const char *key, int *out, char *err,
                      size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return XCAP_OK;
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return XCAP_OK;
    }
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble != 0;
        return XCAP_OK;
    }
    return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: key \"%s\": expected true or false", name,
                     key);
}

/* image_mean / image_std: three numbers, or one number for all channels (as transformers'
 * normalize accepts). Stored as float32, which is what numpy does with them. */
static int parse_triple(const cJSON *root, const char *name, const char *key, int nonzero,
                        float out[3], char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return XCAP_OK;
    double vals[3];
    if (cJSON_IsNumber(v)) {
        vals[0] = vals[1] = vals[2] = v->valuedouble;
    } else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 3) {
        for (int c = 0; c < 3; c++) {
            const cJSON *item = cJSON_GetArrayItem(v, c);
            if (!cJSON_IsNumber(item))
                return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: key \"%s\": item %d is not a number",
                                 name, key, c);
            vals[c] = item->valuedouble;
        }
    } else {
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: key \"%s\": expected a list of 3 numbers (one per RGB channel)",
                         name, key);
    }
    for (int c = 0; c < 3; c++) {
        /* checked as a double first: converting a value beyond float's range is undefined */
        if (!isfinite(vals[c]) || fabs(vals[c]) > FLT_MAX || (nonzero && (float)vals[c] == 0.0f))
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: key \"%s\": bad value %g%s", name,
                             key, vals[c], nonzero ? " (must be finite and non-zero)" : " (must be finite)");
        out[c] = (float)vals[c];
    }
    return XCAP_OK;
}

/* Processor classes whose pixel path is the one implemented here. Other processors (DeiT,
 * ConvNeXT, ... with center crops or aspect-preserving resizes) are refused by name instead
 * of being approximated. */
static int processor_type_ok(const char *type) {
    static const char *known[] = {"ViTImageProcessor", "ViTImageProcessorFast",
                                  "ViTFeatureExtractor"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(type, known[i]) == 0) return 1;
    return 0;
}

int preprocess_config_parse(const char *json, const char *name, xcap_preprocess_config *cfg,
                            char *err, size_t errlen) {
    *cfg = preprocess_config_default();
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: invalid JSON near byte %ld", name,
                         at ? (long)(at - json) : -1L);
    }
    int rc = XCAP_OK;
    if (!cJSON_IsObject(root)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: expected a JSON object", name);
        goto done;
    }
    static const char *type_keys[] = {"image_processor_type", "feature_extractor_type"};
    for (int i = 0; i < 2; i++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, type_keys[i]);
        if (t && !cJSON_IsNull(t) && (!cJSON_IsString(t) || !processor_type_ok(t->valuestring))) {
            rc = xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED,
                           "%s: key \"%s\": %s%s%s is not supported (ViTImageProcessor only)",
                           name, type_keys[i], cJSON_IsString(t) ? "\"" : "",
                           cJSON_IsString(t) ? t->valuestring : "non-string value",
                           cJSON_IsString(t) ? "\"" : "");
            goto done;
        }
    }
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "size");
    if (size && !cJSON_IsNull(size) && (rc = parse_size(size, name, cfg, err, errlen))) goto done;

    const cJSON *resample = cJSON_GetObjectItemCaseSensitive(root, "resample");
    if (resample && !cJSON_IsNull(resample) && !json_int_in(resample, 0, 5, &cfg->resample)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                       "%s: key \"resample\": expected a Pillow filter number 0..5 (0 NEAREST, "
                       "1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)",
                       name);
        goto done;
    }
    if ((rc = parse_flag(root, name, "do_resize", &cfg->do_resize, err, errlen)) ||
        (rc = parse_flag(root, name, "do_rescale", &cfg->do_rescale, err, errlen)) ||
        (rc = parse_flag(root, name, "do_normalize", &cfg->do_normalize, err, errlen)) ||
        (rc = parse_flag(root, name, "do_convert_rgb", &cfg->do_convert_rgb, err, errlen)))
        goto done;

    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(root, "rescale_factor");
    if (factor && !cJSON_IsNull(factor)) {
        if (!cJSON_IsNumber(factor) || !isfinite(factor->valuedouble)) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                           "%s: key \"rescale_factor\": expected a number", name);
            goto done;
        }
        cfg->rescale_factor = factor->valuedouble;
    }
    if ((rc = parse_triple(root, name, "image_mean", 0, cfg->mean, err, errlen)) ||
        (rc = parse_triple(root, name, "image_std", 1, cfg->std, err, errlen)))
        goto done;

done:
    cJSON_Delete(root);
    return rc;
}

int preprocess_config_load(const char *model_dir, xcap_preprocess_config *cfg, char *err,
                           size_t errlen) {
    char path[4096];
    int rc = xcap_join_path(path, sizeof path, model_dir, "preprocessor_config.json", err, errlen);
    if (rc) return rc;
    char *text;
    size_t len;
    if ((rc = config_read_file(path, CONFIG_MAX_FILE_BYTES, &text, &len, err, errlen))) return rc;
    rc = preprocess_config_parse(text, path, cfg, err, errlen);
    free(text);
    return rc;
}
