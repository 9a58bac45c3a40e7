/* The kernels shared by the image encoder and the text decoder (fp32, row-major), besides the
 * linear layers of nn/linear.h. Each fast kernel has a plain loop twin in tests/ that it is
 * checked against. */
#ifndef XCAP_NN_KERNELS_H
#define XCAP_NN_KERNELS_H

#include <stddef.h>

/* Sets the OpenMP thread count every kernel uses (n <= 0: all cores). */
void nn_set_threads(int n);

/* Mean and biased variance over the last axis: (x − μ)/√(σ² + eps)·γ + β. y may alias x. */
void layernorm(float *y, const float *x, const float *gamma, const float *beta, int T, int C, float eps);

/* x·½·(1 + erf(x/√2)): ViT's "gelu". */
void gelu_erf(float *x, size_t n);
/* ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): GPT-2's "gelu_new". */
void gelu_tanh(float *x, size_t n);

/* y += x */
void add_inplace(float *y, const float *x, size_t n);

/* In-place softmax of one row, max-subtracted, fp32; softmax_scaled takes softmax(scale·x) (the
 * product rounded first, as scaling the row before would). The sum runs in one fixed order, the
 * exponential is xcap's own (nn/kernels.c), so every instruction set gives the same bits. */
void softmax(float *x, int n);
void softmax_scaled(float *x, int n, float scale);

/* Dot product in one fixed order on every machine: 8 lane sums (lane l takes elements l, l+8,
 * ...) folded (l, l+4), (l, l+2), (0, 1), then plus the in-order sum of the tail past the last
 * multiple of 8; all products fused. The query-key scores of attention's few-row path use it. */
float nn_dot(const float *a, const float *b, int n);

/* Multi-head scaled dot-product attention. Non-causal calls with at least 8 query rows (the
 * encoder) run per head as two packed matrix products (nn/linear.h): each score is one fma chain
 * over the head's dimensions in order; other calls (the decoder's self-attention) score with
 * nn_dot. Either way the output sums the values in key order with one fma per term, and the
 * result does not depend on the thread count or the instruction set.
 * Head h of query row i uses q[i*q_stride + h*hd ..],
 * keys k[j*k_stride + h*hd ..] and values v[j*v_stride + h*hd ..] for j < n_keys, where
 * n_keys = causal ? causal_offset + i + 1 : Tk. Writes out[i*out_stride + h*hd ..] and the
 * softmax rows into probs[(h*Tq + i)*Tk ..] (entries past n_keys are set to 0). probs must hold
 * H*Tq*Tk floats: it is both scratch and the attention map handed to callers. */
void attention(float *out, int out_stride, float *probs, const float *q, int q_stride, const float *k,
               int k_stride, const float *v, int v_stride, int Tq, int Tk, int H, int hd, float scale,
               int causal, int causal_offset);

#endif
