#include "weights/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/common.h"

const char *st_dtype_name(st_dtype d) {
    switch (d) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    case ST_I8: return "I8";
    }
    return "?";
}

static int dtype_from_string(const char *s, st_dtype *d, size_t *size) {
    if (!strcmp(s, "F32")) *d = ST_F32, *size = 4;
    else if (!strcmp(s, "F16")) *d = ST_F16, *size = 2;
    else if (!strcmp(s, "BF16")) *d = ST_BF16, *size = 2;
    else if (!strcmp(s, "I8")) *d = ST_I8, *size = 1;
    else return -1;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : (x->n_bytes > y->n_bytes) - (x->n_bytes < y->n_bytes);
}

/* Largest offset or dimension taken from a header: every integer up to 2^53 is exact in the
 * double that JSON gives us, and sums of two such values cannot overflow 64 bits. */
#define ST_MAX_JSON_INT 9007199254740992.0

/* Reads a JSON number that must be a non-negative integer representable exactly. */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0) || v > ST_MAX_JSON_INT || v != floor(v)) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* data_offsets[i] of tensor name, with a message saying what is wrong with it. */
static int parse_offset(const st_file *f, const char *name, const cJSON *jo, int i, uint64_t *out,
                        char *err, size_t errlen) {
    const cJSON *v = cJSON_GetArrayItem(jo, i);
    if (json_uint(v, out) == 0) return XCAP_OK;
    if (cJSON_IsNumber(v) && v->valuedouble > ST_MAX_JSON_INT)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: tensor %s: data_offsets[%d] = %.0f is beyond 2^53 (offsets that large "
                         "overflow 64-bit arithmetic and no file holds them)",
                         f->path, name, i, v->valuedouble);
    return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                     "%s: tensor %s: data_offsets[%d] is not a non-negative integer", f->path, name, i);
}

static int parse_entry(const st_file *f, const cJSON *item, st_tensor *t, const uint8_t *data,
                       size_t data_size, char *err, size_t errlen) {
    const char *path = f->path, *name = item->string;
    if (!cJSON_IsObject(item))
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s: entry is not an object", path, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo))
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: tensor %s: needs string dtype, array shape and array data_offsets", path, name);
    size_t esize;
    if (dtype_from_string(jd->valuestring, &t->dtype, &esize) != 0)
        return xcap_fail(err, errlen, XCAP_ERR_UNSUPPORTED,
                         "%s: tensor %s: dtype %.40s is not supported (F32, F16, BF16, I8 are)", path, name,
                         jd->valuestring);
    int ndim = cJSON_GetArraySize(js);
    if (ndim > ST_MAX_DIMS)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s: %d dimensions (at most %d)", path,
                         name, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d;
        if (json_uint(cJSON_GetArrayItem(js, i), &d) != 0)
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer",
                             path, name, i);
        if (d != 0 && count > UINT64_MAX / 8 / d)
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s: element count overflows", path, name);
        count *= d;
        t->shape[i] = (int64_t)d;
    }
    if (cJSON_GetArraySize(jo) != 2)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s: data_offsets must be [begin, end]", path, name);
    uint64_t begin, end;
    int rc;
    if ((rc = parse_offset(f, name, jo, 0, &begin, err, errlen)) || (rc = parse_offset(f, name, jo, 1, &end, err, errlen)))
        return rc;
    if (begin > end)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] end before they begin",
                         path, name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu] run past the end of the data section of %zu "
                         "bytes (file truncated?)",
                         path, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    if (count * esize != end - begin)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: tensor %s: shape holds %llu bytes of %s but data_offsets span %llu", path, name,
                         (unsigned long long)(count * esize), jd->valuestring, (unsigned long long)(end - begin));
    t->n_elements = (size_t)count;
    t->n_bytes = (size_t)(end - begin);
    t->data = data + begin;
    return XCAP_OK;
}

/* The tensors must tile the data section: no overlap, no hole (as the reference checks). The
 * offsets are already known to lie inside the section. */
static int check_tiling(const st_file *f, const uint8_t *data, size_t data_size, char *err, size_t errlen) {
    const st_tensor **byoff = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *byoff);
    if (!byoff) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_tensors; i++) byoff[i] = &f->tensors[i];
    qsort(byoff, f->n_tensors, sizeof *byoff, cmp_tensor_offset);
    int rc = XCAP_OK;
    size_t expect = 0; /* where the next tensor must start */
    for (int i = 0; i < f->n_tensors && rc == XCAP_OK; i++) {
        const st_tensor *t = byoff[i];
        size_t begin = (size_t)(t->data - data);
        if (begin < expect)
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                           "%s: tensor %s (data bytes %zu..%zu) overlaps tensor %s (bytes %zu..%zu)", f->path,
                           t->name, begin, begin + t->n_bytes, byoff[i - 1]->name,
                           (size_t)(byoff[i - 1]->data - data), expect);
        else if (begin > expect)
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                           "%s: tensor %s starts at data offset %zu, expected %zu (a hole of %zu unused bytes "
                           "before it)",
                           f->path, t->name, begin, expect, begin - expect);
        expect = begin + t->n_bytes;
    }
    if (rc == XCAP_OK && expect != data_size)
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: %zu bytes after the last tensor are not covered by any tensor",
                       f->path, data_size - expect);
    free(byoff);
    return rc;
}

/* Everything after the file is in memory: f->path is set, bytes[0..size) is the whole file. */
static int st_parse(st_file *f, const uint8_t *bytes, size_t size, char *err, size_t errlen) {
    const char *path = f->path;
    if (size < 8)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors header", path,
                         size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    if (n > ST_MAX_HEADER_BYTES)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: header length %llu bytes is above the 100 MB limit (corrupt or not a safetensors "
                         "file)",
                         path, (unsigned long long)n);
    if (n > size - 8)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: header length %llu bytes runs past the end of the file (%zu bytes)", path,
                         (unsigned long long)n, size);
    const char *header = (const char *)bytes + 8, *json_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)n, &json_end, 0);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    /* The reference pads the header with spaces; anything else after the object is refused, as
     * the reference's JSON parser does. */
    for (const char *p = json_end; p < header + n; p++)
        if (!strchr(" \t\r\n", *p) || !*p) {
            cJSON_Delete(root);
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: header has bytes after its JSON object (at byte %zu)",
                             path, (size_t)(p - header) + 8);
        }
    const uint8_t *data = bytes + 8 + n;
    size_t data_size = size - 8 - (size_t)n;
    int rc = XCAP_OK, count = 0;
    for (const cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__") != 0) count++;
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    if (!f->tensors) rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
    for (const cJSON *it = root->child; it && rc == XCAP_OK; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it)) rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: __metadata__ is not an object", path);
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(it->string);
        if (!t->name) {
            rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        f->n_tensors++;
        rc = parse_entry(f, it, t, data, data_size, err, errlen);
    }
    cJSON_Delete(root);
    if (rc) return rc;
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name))
            return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s appears twice", path, f->tensors[i].name);
    return check_tiling(f, data, data_size, err, errlen);
}

int st_open(const char *path, st_file *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
    int rc;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        rc = xcap_fail(err, errlen, XCAP_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        rc = xcap_fail(err, errlen, XCAP_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) { /* too short to map usefully; st_parse words the error */
        close(fd);
        rc = st_parse(f, (const uint8_t *)"", size, err, errlen);
        goto fail;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        rc = xcap_fail(err, errlen, XCAP_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    f->map_size = size;
    if ((rc = st_parse(f, map, size, err, errlen)) == XCAP_OK) return XCAP_OK;
fail:
    st_close(f);
    return rc;
}

int st_open_memory(const uint8_t *bytes, size_t size, const char *name, st_file *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    if (!name) name = "(memory)";
    if (!bytes && size) return xcap_fail(err, errlen, XCAP_ERR_ARG, "%s: NULL data", name);
    f->path = strdup(name);
    if (!f->path) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", name);
    int rc = st_parse(f, bytes ? bytes : (const uint8_t *)"", size, err, errlen);
    if (rc) st_close(f);
    return rc;
}

void st_close(st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

st_tensor *st_find(const st_file *f, const char *name) {
    st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
}

void st_f16_to_f32(const uint8_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t h = src[2 * i] | (src[2 * i + 1] << 8);
        uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
        if (exp == 0) {
            if (mant == 0) {
                bits = sign;
            } else { /* subnormal: value = mant * 2^-24, exact in float */
                float v = (float)mant * 5.9604644775390625e-8f;
                memcpy(&bits, &v, 4);
                bits |= sign;
            }
        } else if (exp == 31) {
            bits = sign | 0x7f800000u | (mant << 13);
        } else {
            bits = sign | ((exp + 112) << 23) | (mant << 13);
        }
        memcpy(&dst[i], &bits, 4);
    }
}

void st_bf16_to_f32(const uint8_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
        memcpy(&dst[i], &bits, 4);
    }
}
