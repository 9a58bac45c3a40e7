/* Which vector instructions the kernels may use: read once from CPUID (and from XGETBV, which
 * says whether the operating system saves the wide registers), optionally capped by the
 * environment variable XCAP_ISA=portable|avx2|avx512 or by nn_cpu_limit (tests run every
 * kernel family on one machine this way). Every family computes each output element with the
 * same sequence of fused multiply-adds, so the level changes speed, never results. */
#ifndef XCAP_NN_CPU_H
#define XCAP_NN_CPU_H

typedef enum {
    NN_ISA_PORTABLE = 0, /* plain C */
    NN_ISA_AVX2 = 1,     /* AVX2 + FMA (+ F16C for half weights) */
    NN_ISA_AVX512 = 2,   /* AVX-512 F, BW, DQ, VL (+ AVX2 level) */
} nn_isa;

/* The level the kernels use now: the best the CPU and OS support, capped as above. */
nn_isa nn_cpu_isa(void);

/* 1 when the CPU supports F16C (half <-> float conversion). */
int nn_cpu_has_f16c(void);

/* Caps the level (never raises it above what the machine supports); returns the level now in
 * use. Not thread-safe: call it before starting work. */
nn_isa nn_cpu_limit(nn_isa cap);

/* "portable", "avx2" or "avx512". */
const char *nn_isa_name(nn_isa isa);

#endif
