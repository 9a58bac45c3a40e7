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

/* The reference implementation refuses headers above 100 MB (safetensors/src/tensor.rs). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

const char *st_dtype_name(st_dtype d) {
    switch (d) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    }
    return "?";
}

static int dtype_from_string(const char *s, st_dtype *d, size_t *size) {
    if (!strcmp(s, "F32")) *d = ST_F32, *size = 4;
    else if (!strcmp(s, "F16")) *d = ST_F16, *size = 2;
    else if (!strcmp(s, "BF16")) *d = ST_BF16, *size = 2;
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

/* Reads a JSON number that must be a non-negative integer representable exactly. */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || v != floor(v)) return -1;
    *out = (uint64_t)v;
    return 0;
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
                         "%s: tensor %s: dtype %s is not supported (F32, F16, BF16 are)", path, name,
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
    uint64_t begin, end;
    if (cJSON_GetArraySize(jo) != 2 || json_uint(cJSON_GetArrayItem(jo, 0), &begin) != 0 ||
        json_uint(cJSON_GetArrayItem(jo, 1), &end) != 0)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s: data_offsets must be [begin, end]", path, name);
    if (begin > end || end > data_size)
        return xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu] outside the data section of %zu bytes (file truncated?)",
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

int st_open(const char *path, st_file *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
    int rc = XCAP_OK;
    cJSON *root = NULL;
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
    if (size < 8) {
        close(fd);
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors header", path, size);
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
    const uint8_t *bytes = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    if (n > ST_MAX_HEADER || n > size - 8) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT,
                       "%s: header length %llu exceeds the file (%zu bytes) or the 100 MB limit", path,
                       (unsigned long long)n, size);
        goto fail;
    }
    root = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)n);
    if (!root || !cJSON_IsObject(root)) {
        rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }
    const uint8_t *data = bytes + 8 + n;
    size_t data_size = size - 8 - (size_t)n;
    int count = 0;
    for (const cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__") != 0) count++;
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    if (!f->tensors) {
        rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it)) {
                rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: __metadata__ is not an object", path);
                goto fail;
            }
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(it->string);
        if (!t->name) {
            rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        f->n_tensors++;
        if ((rc = parse_entry(f, it, t, data, data_size, err, errlen)) != XCAP_OK) goto fail;
    }
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name)) {
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s appears twice", path, f->tensors[i].name);
            goto fail;
        }
    /* The tensors must tile the data section: no overlap, no hole (as the reference checks). */
    {
        const st_tensor **byoff = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *byoff);
        if (!byoff) {
            rc = xcap_fail(err, errlen, XCAP_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        for (int i = 0; i < f->n_tensors; i++) byoff[i] = &f->tensors[i];
        qsort(byoff, f->n_tensors, sizeof *byoff, cmp_tensor_offset);
        const uint8_t *expect = data;
        for (int i = 0; i < f->n_tensors && rc == XCAP_OK; i++) {
            if (byoff[i]->data != expect)
                rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: tensor %s starts at data offset %zu, expected %zu (%s)",
                               path, byoff[i]->name, (size_t)(byoff[i]->data - data), (size_t)(expect - data),
                               byoff[i]->data < expect ? "overlaps the previous tensor" : "hole before it");
            expect = byoff[i]->data + byoff[i]->n_bytes;
        }
        if (rc == XCAP_OK && expect != data + data_size)
            rc = xcap_fail(err, errlen, XCAP_ERR_FORMAT, "%s: %zu bytes after the last tensor are not covered by any tensor",
                           path, (size_t)(data + data_size - expect));
        free(byoff);
        if (rc != XCAP_OK) goto fail;
    }
    cJSON_Delete(root);
    return XCAP_OK;
fail:
    cJSON_Delete(root);
    st_close(f);
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
