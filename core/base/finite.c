/*
 * finite.c -- finding NaN and +-inf where numbers enter: data, weights
 * read from files, teacher outputs, gradients.  The policy (README, "NaN")
 * is that a non-finite number is an error where it first appears, named
 * by what holds it and where, never something averaged away later.
 *
 * rt_check_finite is one vectorised pass: a value is non-finite exactly
 * when its eight exponent bits are all set, so each lane keeps the largest
 * (bits & 0x7f800000) it has seen and a block is clean when that is below
 * 0x7f800000.  Only a block that is not clean is scanned again to find the
 * first bad index.  Integer max is exact, so the fast and the reference
 * twin agree on every input.
 */
#include "retort.h"

#include <math.h>
#include <string.h>

#include "vec.h"

#define EXP_MASK 0x7f800000u
/* Elements per block: large enough that the per-block test is noise,
 * small enough that the rescan of a bad block is cheap. */
#define BLOCK 1024

static inline uint32_t expo(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & EXP_MASK;
}

int64_t rt_check_finite_ref(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* The largest masked exponent over x[0..n): a clean block gives less than
 * EXP_MASK.  VW lanes, fixed-trip inner loop (see vec.h). */
static uint32_t block_max(const float *restrict x, int64_t n)
{
    uint32_t acc[VW] = {0};
    int64_t i = 0;
    for (; i + VW <= n; i += VW)
        for (int k = 0; k < VW; k++) {
            uint32_t e = expo(x[i + k]);
            acc[k] = e > acc[k] ? e : acc[k];
        }
    uint32_t m = 0;
    for (; i < n; i++) {
        uint32_t e = expo(x[i]);
        m = e > m ? e : m;
    }
    for (int k = 0; k < VW; k++) m = acc[k] > m ? acc[k] : m;
    return m;
}

int64_t rt_check_finite(const float *x, int64_t n)
{
    for (int64_t b = 0; b < n; b += BLOCK) {
        int64_t len = n - b < BLOCK ? n - b : BLOCK;
        if (block_max(x + b, len) == EXP_MASK) return b + rt_check_finite_ref(x + b, len);
    }
    return -1;
}

const char *rt_nonfinite_name(float v)
{
    if (isnan(v)) return "nan";
    return v > 0 ? "inf" : "-inf";
}
