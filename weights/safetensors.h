/* safetensors reader (spec §1): memory-maps the file read-only, validates the whole header
 * before anything is used, and hands out tensors by name. */
#ifndef XCAP_WEIGHTS_SAFETENSORS_H
#define XCAP_WEIGHTS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2 } st_dtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t n_elements;
    const uint8_t *data; /* inside the mapping */
    size_t n_bytes;
    int used;            /* set by the model loader; unused tensors are reported */
} st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    st_tensor *tensors; /* sorted by name */
    int n_tensors;
} st_file;

int st_open(const char *path, st_file *f, char *err, size_t errlen);
void st_close(st_file *f);
st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(st_dtype d);

/* Converts n elements of a half-precision tensor to float32. */
void st_f16_to_f32(const uint8_t *src, float *dst, size_t n);
void st_bf16_to_f32(const uint8_t *src, float *dst, size_t n);

#endif
