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
 * broadcast against it, which is the whole trick of a register-blocked GEMM. */
#ifndef XCAP_NN_LINEAR_H
#define XCAP_NN_LINEAR_H

#include <stddef.h>

#define NN_PANEL 16

typedef struct {
    float *panels; /* K × round_up(N, NN_PANEL), panel-major; 64-byte aligned */
    float *bias;   /* round_up(N, NN_PANEL), zero where the layer has none */
    int K, N;
} nn_linear;

/* Packs a weight stored [K,N] (GPT-2's Conv1D). b may be NULL. Returns 0, or -1 out of memory. */
int nn_linear_pack_kn(nn_linear *w, const float *weight, const float *b, int K, int N);
/* Packs a weight stored [N,K] (nn.Linear, ViT, a tied lm_head). */
int nn_linear_pack_nk(nn_linear *w, const float *weight, const float *b, int K, int N);
/* Packs several nn.Linear layers that read the same input side by side into one (ViT's query,
 * key and value): parts[i] is [n_parts[i], K], biases[i] may be NULL. */
int nn_linear_pack_nk_concat(nn_linear *w, const float *const *parts, const float *const *biases,
                             const int *n_parts, int count, int K);
void nn_linear_free(nn_linear *w);

/* out[k] = W[k][n] for k < K: one column of the weight, read back from the panels (a tied
 * GPT-2 looks its token embeddings up in the packed output projection). */
void nn_linear_column(const nn_linear *w, int n, float *out);

/* y[T,N] = x[T,K] · W + b. x rows are x_stride floats apart, y rows y_stride (>= N). Runs on the
 * OpenMP threads set by nn_set_threads; the result does not depend on their number. */
void nn_linear_forward(float *y, size_t y_stride, const float *x, size_t x_stride, const nn_linear *w, int T);

/* The reference: the same sum in the same order with plain loops over an unpacked [K,N] weight
 * (tests compare the packed kernel with it bit for bit). */
void nn_linear_naive(float *y, const float *x, const float *weight_kn, const float *b, int T, int K, int N);

#endif
