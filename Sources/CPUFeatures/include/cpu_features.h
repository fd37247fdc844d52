#ifndef ATTENTION_CPU_FEATURES_H
#define ATTENTION_CPU_FEATURES_H

/// The highest x86-64 micro-architecture level this CPU and its operating system support:
/// 0 for baseline (or any other architecture), 3 for x86-64-v3 (AVX2, FMA, BMI1/2, F16C, LZCNT,
/// MOVBE, with the OS saving AVX state), 4 for x86-64-v4 (v3 plus AVX-512 F/BW/CD/DQ/VL, with
/// the OS saving opmask and ZMM state). Levels 1 and 2 are reported as 0.
int attention_cpu_level(void);

#endif
