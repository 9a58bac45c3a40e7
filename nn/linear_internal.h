/* Shared between nn/linear.c (packing, fp32 and f16 kernels, the loops that split a product
 * into tiles and threads) and nn/linear_q8.c (the int8 path). Not a public interface. */
#ifndef XCAP_NN_LINEAR_INTERNAL_H
#define XCAP_NN_LINEAR_INTERNAL_H

#include "nn/cpu.h"
#include "nn/linear.h"

#include <stddef.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NN_HAVE_X86 1
#endif

/* Rows of x handled by one micro-tile (see the tiles in linear.c). */
#define TILE_ROWS 6
/* The most panels a kernel of any family handles at once (for scratch sizes). */
#define MAX_GROUP 8

/* A tile: the panels from column p on against `rows` rows of x (rows <= TILE_ROWS), written to
 * out (row stride out_stride). A row kernel: one row against its panels from column p on. For
 * NN_Q8, x is not fp32: it points at rows quantised by nn_q8_quantize, and x_stride counts
 * 4-byte units (nn_q8_row_floats). */
typedef void (*tile_fn)(float *out, size_t out_stride, const float *x, size_t x_stride, const nn_linear *w, int p,
                        int rows);
typedef void (*row_fn)(float *out, const float *x, const nn_linear *w, int p);

/* A kernel family for one weight type: a tile of `group` panels (group 1: tile1 itself) and a
 * single-row kernel over row_panels panels (NULL: single rows go through the tiles), with
 * row_short[n] for a last group of n < row_panels panels (NULL: tile1 panel by panel). */
typedef struct {
    tile_fn tile1, tile_group;
    int group;
    row_fn row;
    int row_panels;
    row_fn const *row_short;
    tile_fn tile_group_stream; /* tile_group with prefetching, for few rows; NULL: tile_group */
} kernels;

/* How far ahead (bytes) each weight stream of a matrix-vector product is prefetched. The
 * hardware prefetchers alone left the decoder well below the memory's speed on eight streams
 * per core (on the README's benchmark machine, a ViT-base/GPT-2 decoder step on 2 threads went
 * from 15.3 to about 11 ms in fp32 with these distances; 256 B to 4 KiB all did about as well,
 * within that machine's run-to-run noise). */
#define PREFETCH_BYTES(elem_size) ((elem_size) == 4 ? 512 : 1024)

/* ---- NN_Q8 (nn/linear_q8.c) ----
 * Packed layout: a panel holds, for each pair of k (2i, 2i+1), its 16 columns' two weights side
 * by side (32 bytes: column 0's q[2i], q[2i+1], column 1's, ...), so that one 16-bit pair of an
 * activation row multiplies a column's pair in one 32-bit lane (pmaddwd). K is padded with zero
 * weights to a whole number of activation blocks.
 * Panels are interleaved in groups of NN_Q8_GROUP (the last group holds the panels left over):
 * for each pair of k, the 32 bytes of each panel of the group side by side. A single row's
 * product over a group (a decoder step) then reads one sequential stream instead of one per
 * panel: on the README's benchmark machine eight separate 12 KiB streams per core read memory
 * at about 70% of the fp32 path's bytes per second, one interleaved stream at about the same
 * (a 768x768 product from memory, 2 threads: 31-36 against 39-52 GB/s). Every kernel's panels
 * lie in one group: groups of panels start at multiples of 4 or 8. f16 panels stay whole: the
 * same grouping, tried for f16, made its matrix-vector products 20-40% faster but its tiles
 * (encoder, beams) 7-18% slower, reading half of every group row down the whole of K. */
#define NN_Q8_BLOCK 32
#define NN_Q8_GROUP 8

static inline int nn_q8_k(int K) { return (K + NN_Q8_BLOCK - 1) / NN_Q8_BLOCK * NN_Q8_BLOCK; }

/* Panels in the group of the panel starting at column p, in a matrix of N columns. */
static inline int nn_q8_group_panels(int p, int N) {
    const int first = p / NN_PANEL / NN_Q8_GROUP * NN_Q8_GROUP, n_panels = (N + NN_PANEL - 1) / NN_PANEL;
    return n_panels - first < NN_Q8_GROUP ? n_panels - first : NN_Q8_GROUP;
}

/* Bytes from the start of a q8 matrix (kq rows of k) to that of the panel starting at column p. */
static inline size_t nn_q8_panel_offset(int p, int kq) {
    const int panel = p / NN_PANEL;
    return (size_t)(panel / NN_Q8_GROUP) * NN_Q8_GROUP * NN_PANEL * kq + (size_t)(panel % NN_Q8_GROUP) * 2 * NN_PANEL;
}

/* Bytes from a panel's start to weight (k, column j), in a group of group_panels panels. */
static inline size_t nn_q8_index(int k, int j, int group_panels) {
    return (size_t)(k >> 1) * group_panels * 2 * NN_PANEL + (size_t)j * 2 + (size_t)(k & 1);
}

/* 4-byte units of one quantised activation row: nn_q8_k(K) int16 values, then one float scale
 * per block. */
size_t nn_q8_row_floats(int K);

/* Quantises T rows of x (x_stride floats apart) into dst, nn_q8_row_floats(K) units per row. */
void nn_q8_quantize(float *dst, const float *x, size_t x_stride, int T, int K);

/* The q8 kernels for an instruction-set level. */
kernels nn_q8_kernels(nn_isa isa);

#endif
