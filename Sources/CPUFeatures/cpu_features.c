// Compiled without any -m flag: it only asks, with cpuid and xgetbv, what the CPU can do.
#include "cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static int has(unsigned int reg, int bit) { return (reg >> bit) & 1u; }

static unsigned long long xcr0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

int attention_cpu_level(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    unsigned int ecx1 = ecx;
    // x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT (CMPXCHG16B, LAHF assumed with them).
    int v2 = has(ecx1, 0) && has(ecx1, 9) && has(ecx1, 19) && has(ecx1, 20) && has(ecx1, 23);
    // AVX needs the OS to save XMM and YMM state (OSXSAVE, then XCR0 bits 1 and 2).
    int osxsave = has(ecx1, 27);
    unsigned long long xcr = osxsave ? xcr0() : 0;
    int avxState = (xcr & 0x6) == 0x6;
    int avx = has(ecx1, 28) && avxState;
    int fma = has(ecx1, 12), movbe = has(ecx1, 22), f16c = has(ecx1, 29);

    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    unsigned int ebx7 = ebx;
    int avx2 = has(ebx7, 5), bmi1 = has(ebx7, 3), bmi2 = has(ebx7, 8);

    int lzcnt = 0;
    if (__get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx)) lzcnt = has(ecx, 5);

    int v3 = v2 && avx && avx2 && fma && bmi1 && bmi2 && f16c && lzcnt && movbe;
    if (!v3) return 0;

    // x86-64-v4: AVX512F (16), DQ (17), CD (28), BW (30), VL (31), and the OS saving opmask,
    // ZMM_Hi256 and Hi16_ZMM state (XCR0 bits 5, 6, 7).
    int zmmState = (xcr & 0xE0) == 0xE0;
    int v4 = zmmState && has(ebx7, 16) && has(ebx7, 17) && has(ebx7, 28) && has(ebx7, 30) && has(ebx7, 31);
    return v4 ? 4 : 3;
}

#else
int attention_cpu_level(void) { return 0; }
#endif
