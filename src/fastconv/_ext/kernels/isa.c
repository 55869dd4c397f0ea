/* Which micro-kernels this CPU can run: cpuid for the instructions, xgetbv for the operating
 * system's support of the vector registers (a CPU with AVX-512 under an OS that does not save
 * the zmm registers on a context switch must not use them). */
#include "kernels.h"

#if defined(__APPLE__)
#include <sys/sysctl.h>
#elif defined(__unix__)
#include <unistd.h>
#endif

extern const fc_isa_kernels fc_kernels__generic;

size_t fc_cache_bytes(int level)
{
#if defined(__APPLE__)
    long long value = 0;
    size_t size = sizeof(value);
    if (sysctlbyname(level == 1 ? "hw.l1dcachesize" : "hw.l2cachesize", &value, &size, 0, 0) != 0)
        return 0;
    return value > 0 ? (size_t)value : 0;
#elif defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    long value = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE);
    return value > 0 ? (size_t)value : 0;
#else
    (void)level;
    return 0;
#endif
}

#if defined(__x86_64__) || defined(_M_X64)
extern const fc_isa_kernels fc_kernels__avx2;
extern const fc_isa_kernels fc_kernels__avx512;

#if defined(_MSC_VER)
#include <intrin.h>
#include <immintrin.h>
static void fc_cpuid(int leaf, int subleaf, unsigned int regs[4])
{
    int r[4];
    __cpuidex(r, leaf, subleaf);
    regs[0] = (unsigned int)r[0]; regs[1] = (unsigned int)r[1];
    regs[2] = (unsigned int)r[2]; regs[3] = (unsigned int)r[3];
}
static unsigned long long fc_xgetbv0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void fc_cpuid(int leaf, int subleaf, unsigned int regs[4])
{
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}
static unsigned long long fc_xgetbv0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

int fc_cpu_isa(void)
{
    unsigned int r[4];
    unsigned long long xcr0;
    int fma, avx2, avx512f;
    fc_cpuid(0, 0, r);
    if (r[0] < 7) return FC_ISA_GENERIC;
    fc_cpuid(1, 0, r);
    fma = (r[2] >> 12) & 1;
    if (!((r[2] >> 27) & 1) || !((r[2] >> 28) & 1)) return FC_ISA_GENERIC;  /* OSXSAVE, AVX */
    xcr0 = fc_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return FC_ISA_GENERIC;                        /* xmm, ymm state */
    fc_cpuid(7, 0, r);
    avx2 = (r[1] >> 5) & 1;
    avx512f = (r[1] >> 16) & 1;
    if (avx512f && avx2 && fma && (xcr0 & 0xe0) == 0xe0) return FC_ISA_AVX512;  /* opmask, zmm */
    if (avx2 && fma) return FC_ISA_AVX2;
    return FC_ISA_GENERIC;
}

const fc_isa_kernels *fc_isa_kernels_for(int isa)
{
    switch (isa) {
    case FC_ISA_AVX512: return &fc_kernels__avx512;
    case FC_ISA_AVX2: return &fc_kernels__avx2;
    case FC_ISA_GENERIC: return &fc_kernels__generic;
    default: return 0;
    }
}
#else
int fc_cpu_isa(void) { return FC_ISA_GENERIC; }

const fc_isa_kernels *fc_isa_kernels_for(int isa)
{
    return isa == FC_ISA_GENERIC ? &fc_kernels__generic : 0;
}
#endif
