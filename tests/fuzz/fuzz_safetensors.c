/* safetensors: the whole header parser and tensor validation (weights/safetensors.c) on a file
 * image in memory. Invariants: a refusal names the file; an accepted file's tensors lie inside
 * the input, tile its data section, match their shapes, and can be found by name. Reading
 * every tensor byte lets ASan catch a tensor that points outside the input. */
#include <stdint.h>

#include "fuzz.h"
#include "weights/safetensors.h"
#include "xcap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    char err[1024] = "";
    int rc = st_open_memory(data, size, "fuzz.safetensors", &f, err, sizeof err);
    if (rc != XCAP_OK) {
        FUZZ_ERROR_NAMES(err, "fuzz.safetensors");
        return 0;
    }
    size_t covered = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        size_t esize = t->dtype == ST_F32 ? 4 : t->dtype == ST_I8 ? 1 : 2;
        FUZZ_ASSERT(t->data >= data + 8 && t->data + t->n_bytes <= data + size, "tensor %s outside the input", t->name);
        FUZZ_ASSERT(t->n_bytes == t->n_elements * esize, "tensor %s: %zu bytes for %zu elements", t->name,
                    t->n_bytes, t->n_elements);
        FUZZ_ASSERT(st_find(&f, t->name) == t, "tensor %s not found by name", t->name);
        size_t count = 1;
        for (int d = 0; d < t->ndim; d++) count *= (size_t)t->shape[d];
        FUZZ_ASSERT(count == t->n_elements, "tensor %s: shape gives %zu elements, not %zu", t->name, count,
                    t->n_elements);
        float chunk[64];
        for (size_t at = 0; at < t->n_elements; at += 64) {
            size_t n = t->n_elements - at < 64 ? t->n_elements - at : 64;
            if (t->dtype == ST_F32) memcpy(chunk, t->data + 4 * at, 4 * n);
            else if (t->dtype == ST_I8) for (size_t k = 0; k < n; k++) chunk[k] = (int8_t)t->data[at + k];
            else if (t->dtype == ST_F16) st_f16_to_f32(t->data + 2 * at, chunk, n);
            else st_bf16_to_f32(t->data + 2 * at, chunk, n);
        }
        covered += t->n_bytes;
    }
    /* no overlap and no hole: the tensors account for every byte after the header */
    uint64_t header = 0;
    for (int i = 7; i >= 0; i--) header = header << 8 | data[i];
    FUZZ_ASSERT(covered == size - 8 - header, "tensors cover %zu of %zu data bytes", covered,
                (size_t)(size - 8 - header));
    st_close(&f);
    return 0;
}
