/*
 * rng.c -- xoshiro256** (Blackman and Vigna), seeded through splitmix64.
 *
 * Every value derives from the 256-bit state alone, computed in integers
 * or double precision with fixed formulas, so a (seed, stream) pair gives
 * the same numbers on every run and machine, and a state saved as hex
 * resumes the sequence exactly.
 */
#include "retort.h"

#include <math.h>

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The stream is hashed before it is mixed into the seed, so nearby
 * (seed, stream) pairs start from unrelated splitmix64 states. */
void rt_rng_seed(rt_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t h = stream ^ 0x6a09e667f3bcc909ULL;
    uint64_t x = seed ^ splitmix64(&h);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    /* All-zero is xoshiro's one fixed point. */
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1;
}

uint64_t rt_rng_u64(rt_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float rt_rng_uniform(rt_rng *r) { return (float)(rt_rng_u64(r) >> 40) * 0x1p-24f; }

/* Box-Muller; the second value is dropped so that each call consumes exactly
 * two u64 and the sequence does not depend on a hidden cache. */
float rt_rng_normal(rt_rng *r)
{
    double u1 = (double)((rt_rng_u64(r) >> 11) + 1) * 0x1p-53; /* (0, 1] */
    double u2 = (double)(rt_rng_u64(r) >> 11) * 0x1p-53;       /* [0, 1) */
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Lemire's multiply-shift with rejection of the biased low products. */
uint64_t rt_rng_below(rt_rng *r, uint64_t n)
{
    if (n == 0) return 0;
    unsigned __int128 m = (unsigned __int128)rt_rng_u64(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t threshold = (0 - n) % n; /* 2^64 mod n */
        while (lo < threshold) {
            m = (unsigned __int128)rt_rng_u64(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

void rt_rng_permutation(rt_rng *r, int64_t *perm, int64_t n)
{
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rt_rng_below(r, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void rt_rng_to_hex(const rt_rng *r, char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int w = 0; w < 4; w++)
        for (int d = 0; d < 16; d++)
            out[w * 16 + d] = digits[(r->s[w] >> (60 - 4 * d)) & 15];
    out[64] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Exactly 64 hex digits and nothing after them; an all-zero state is
 * refused (xoshiro would emit zeros forever).  r is untouched on failure. */
int rt_rng_from_hex(rt_rng *r, const char *hex)
{
    if (!hex) return -1;
    uint64_t s[4] = {0, 0, 0, 0};
    for (int i = 0; i < 64; i++) {
        int v = hexval(hex[i]); /* a NUL stops here, before reading past it */
        if (v < 0) return -1;
        s[i / 16] = (s[i / 16] << 4) | (uint64_t)v;
    }
    if (hex[64] != 0) return -1;
    if (!(s[0] | s[1] | s[2] | s[3])) return -1;
    for (int i = 0; i < 4; i++) r->s[i] = s[i];
    return 0;
}
