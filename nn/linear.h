/* Linear layers with weights packed once at load: y[T,N] = x[T,K] · W + b.
 *
 * Why xcap has its own matrix product instead of calling sgemm: every output element is
 * computed by one fixed sequence of operations,
 *     y[t][n] = b[n];  for k = 0 .. K-1:  y[t][n] = fma(x[t][k], W[k][n], y[t][n])
 * whatever the number of rows T, the row's place among them, and the number of threads. A
 * caption therefore does not depend on which other images or beams shared the call, so `xcap
 * batch --batch-size 8` writes the same scores, to the last bit, as one `xcap caption` per file,
 * and shards or resumed runs concatenate to exactly one run's records. A BLAS gives no such
 * promise (OpenBLAS picks kernels and splits by the matrix size and thread count).
 *
 * Layout: W is cut into panels of NN_PANEL consecutive output columns; a panel stores, for each
 * k in order, its NN_PANEL weights W[k][n0 .. n0+NN_PANEL-1] contiguously (the last panel
 * zero-padded). The inner loop then streams one panel linearly while a few rows of x are
 * broadcast against it, which is the whole trick of a register-blocked GEMM. The kernels come in
 * three families chosen at run time (nn/cpu.h): AVX-512 (a tile of 6 rows x 4 panels, single
 * rows over up to 8 panels with software prefetch), AVX2 + FMA (6 rows x 1 panel, rows over 4
 * panels) and plain C; all three compute the sequence above, so they give the same bits.
 *
 * Weights may stay in a narrower type (a decoder step reads every weight once, so its time
 * follows the bytes):
 * - NN_F16: IEEE half, widened to fp32 as it streams by; the product is the same as with the
 *   weight converted to fp32 first.
 * - NN_Q8: int8 with one fp32 scale per output column s[n] (symmetric, no zero point), and the
 *   activations in 16-bit integers so that the products are integer dot products (nn/linear_q8.c
 *   says why and how). Each row of x is cut into blocks of 32 values (K padded with zeros); a
 *   block whose largest magnitude is m gets d = m / 32767 and v[k] = round(x[t][k] · (32767 / m))
 *   (fp32 product, nearest, ties to even; a block with m < 2^-100 gets d = 0, v = 0). Then
 *       acc = 0;  for each block b in order:  acc = fma((float) Σ_{k in b} v[k]·q[k][n], d, acc);
 *       y = fma(acc, s[n], b[n])
 *   with the integer sums exact. Like the fp32 sequence above, this is the same for every row
 *   count, row position, thread count and instruction set. */
#ifndef XCAP_NN_LINEAR_H
#define XCAP_NN_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#define NN_PANEL 16

typedef enum { NN_F32, NN_F16, NN_Q8 } nn_weight_type;

typedef struct {
    nn_weight_type type;
    void *panels;  /* K × round_up(N, NN_PANEL) elements of `type`, panel-major; 64-byte aligned */
    float *bias;   /* round_up(N, NN_PANEL), zero where the layer has none */
    float *scale;  /* NN_Q8: round_up(N, NN_PANEL) column scales; NULL otherwise */
    int K, N;
} nn_linear;

/* One stored weight (with its bias, and its column scales for NN_Q8) feeding n output columns.
 * weight points at float (NN_F32), uint16_t half bits (NN_F16) or int8_t (NN_Q8) values, laid
 * out [K, n] (GPT-2's Conv1D) or [n, K] (nn.Linear), as the pack call says. */
typedef struct {
    const void *weight;
    const float *scale; /* NN_Q8 only: [n] */
    const float *bias;  /* may be NULL */
    int n;
} nn_linear_part;

/* Packs count parts side by side (n summed; ViT's query, key and value read the same input). */
int nn_linear_pack(nn_linear *w, nn_weight_type type, int stored_nk, const nn_linear_part *parts, int count,
                   int K);

/* fp32 shortcuts. Each returns 0, or -1 out of memory. */
int nn_linear_pack_kn(nn_linear *w, const float *weight, const float *b, int K, int N); /* weight [K,N] */
int nn_linear_pack_nk(nn_linear *w, const float *weight, const float *b, int K, int N); /* weight [N,K] */
int nn_linear_pack_nk_concat(nn_linear *w, const float *const *parts, const float *const *biases,
                             const int *n_parts, int count, int K);
void nn_linear_free(nn_linear *w);

/* A layer over memory the caller owns, for weights that change from call to call (attention's
 * keys and values): packs the fp32 matrix src into `panels` as type NN_F32 or NN_F16 (rounded
 * to nearest half), nn_linear_packed_elems(K, N) elements, 64-byte aligned, with no bias
 * (`zero_bias`: round_up(N, NN_PANEL) zeros, 64-byte aligned). src is [K rows][N] (stored_nk 0)
 * or [N rows][K] (stored_nk 1), src_stride floats between its rows. Not to be freed with
 * nn_linear_free. */
size_t nn_linear_packed_elems(int K, int N);
void nn_linear_view(nn_linear *w, nn_weight_type type, void *panels, const float *zero_bias, const float *src,
                    size_t src_stride, int stored_nk, int K, int N);
/* The layer over panels packed earlier by nn_linear_view (same type, K, N), without packing. */
nn_linear nn_linear_wrap(nn_weight_type type, void *panels, const float *zero_bias, int K, int N);

/* out[k] = W[k][n] for k < K, dequantised (·s[n] for NN_Q8): one column of the weight, read
 * back from the panels (a tied GPT-2 looks its token embeddings up in the packed output
 * projection). */
void nn_linear_column(const nn_linear *w, int n, float *out);

/* y[T,N] = x[T,K] · W + b. x rows are x_stride floats apart, y rows y_stride (>= N). Runs on the
 * OpenMP threads set by nn_set_threads; the result does not depend on their number. NN_Q8
 * quantises x first, into a stack buffer for a few rows and on the heap beyond 64 KiB. */
void nn_linear_forward(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T);
/* The same with caller-owned memory for NN_Q8's quantised rows (used when scratch_floats >=
 * nn_linear_scratch_floats(K, T); otherwise as nn_linear_forward), so that a loop sized once,
 * such as a decoder's token loop, never allocates. Other types ignore it. */
void nn_linear_forward_scratch(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T,
                               float *scratch, size_t scratch_floats);
size_t nn_linear_scratch_floats(int K, int T);

/* Bytes of weights (panels) the layer reads per call. */
size_t nn_linear_weight_bytes(const nn_linear *w);

/* The reference: the same sum in the same order with plain loops over an unpacked fp32 [K,N]
 * weight (tests compare the packed kernel with it bit for bit). */
void nn_linear_naive(float *y, const float *x, const float *weight_kn, const float *b, int T, int K, int N);

/* IEEE half <-> float (round to nearest even; a NaN becomes a quiet NaN of its sign), for
 * packing and tests; nn_floats_to_halves converts n at once (vectorised where the CPU can). */
float nn_half_to_float(uint16_t h);
uint16_t nn_float_to_half(float f);
void nn_floats_to_halves(uint16_t *dst, const float *src, size_t n);

#endif
