/* CPU feature detection; see cpu.h. CPUID leaves and bits: Intel SDM vol. 2A, "CPUID", and the
 * XCR0 state bits in vol. 1, 13.1 (XSAVE-supported features). */
#include "nn/cpu.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(nn_isa *isa, int *f16c) {
    unsigned a, b, c, d;
    *isa = NN_ISA_PORTABLE;
    *f16c = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return;
    const unsigned long long xcr = xcr0();
    if ((xcr & 0x6) != 0x6) return; /* the OS does not save the YMM state */
    *f16c = (c >> 29) & 1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    const int avx2 = (b >> 5) & 1;
    if (!avx2 || !fma) return;
    *isa = NN_ISA_AVX2;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (f && dq && bw && vl && (xcr & 0xe0) == 0xe0 && *f16c) *isa = NN_ISA_AVX512; /* opmask, ZMM state */
}
#else
static void detect(nn_isa *isa, int *f16c) {
    *isa = NN_ISA_PORTABLE;
    *f16c = 0;
}
#endif

static int detected;
static nn_isa machine_isa, current_isa;
static int machine_f16c;

static void init(void) {
    if (detected) return;
    detect(&machine_isa, &machine_f16c);
    current_isa = machine_isa;
    const char *cap = getenv("XCAP_ISA");
    if (cap) {
        if (!strcmp(cap, "portable")) current_isa = NN_ISA_PORTABLE;
        else if (!strcmp(cap, "avx2") && current_isa > NN_ISA_AVX2) current_isa = NN_ISA_AVX2;
    }
    detected = 1;
}

nn_isa nn_cpu_isa(void) {
    init();
    return current_isa;
}

int nn_cpu_has_f16c(void) {
    init();
    return machine_f16c && current_isa >= NN_ISA_AVX2;
}

nn_isa nn_cpu_limit(nn_isa cap) {
    init();
    current_isa = cap < machine_isa ? cap : machine_isa;
    return current_isa;
}

const char *nn_isa_name(nn_isa isa) {
    return isa == NN_ISA_AVX512 ? "avx512" : isa == NN_ISA_AVX2 ? "avx2" : "portable";
}
