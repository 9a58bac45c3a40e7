/* safetensors reader (spec §1): memory-maps the file read-only, validates the whole header
 * before anything is used, and hands out tensors by name. */
#ifndef XCAP_WEIGHTS_SAFETENSORS_H
#define XCAP_WEIGHTS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* I8: xcap's quantised weights (README, "Lighter weights"); other readers see plain int8. */
typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2, ST_I8 = 3 } st_dtype;

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
    char *path;      /* the file, or the name given to st_open_memory */
    void *map;       /* the read-only mapping; NULL for st_open_memory */
    size_t map_size;
    st_tensor *tensors; /* sorted by name */
    int n_tensors;
} st_file;

/* Limits checked before anything is allocated or trusted: the header length (as the reference
 * implementation, 100 MB) and every data offset (integers below 2^53, inside the data section,
 * tensors tiling it without overlap or hole). Errors name the file, the tensor and the problem. */
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)

int st_open(const char *path, st_file *f, char *err, size_t errlen);

/* The same checks on a whole safetensors file already in memory (bytes[0..size)). Tensors point
 * into bytes, which must outlive f; name stands for the file in messages. */
int st_open_memory(const uint8_t *bytes, size_t size, const char *name, st_file *f, char *err,
                   size_t errlen);
void st_close(st_file *f);
st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(st_dtype d);

/* Converts n elements of a half-precision tensor to float32. */
void st_f16_to_f32(const uint8_t *src, float *dst, size_t n);
void st_bf16_to_f32(const uint8_t *src, float *dst, size_t n);

#endif
