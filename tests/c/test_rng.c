/*
 * test_rng.c -- xoshiro256** against the published reference outputs,
 * reproducibility of (seed, stream), distributions, permutations and the
 * hex state format.
 */
#include "retort.h"
#include "t.h"

#include <stdlib.h>

/* The reference implementation's first outputs from the state {1, 2, 3, 4}
 * (as used by the test suites of other ports, e.g. rand_xoshiro). */
static void test_known_answer(void)
{
    static const uint64_t want[] = {11520ULL, 0ULL, 1509978240ULL, 1215971899390074240ULL,
                                    1216172134540287360ULL, 607988272756665600ULL,
                                    16172922978634559625ULL, 8476171486693032832ULL,
                                    10595114339597558777ULL, 2904607092377533576ULL};
    rt_rng r;
    CHECK(rt_rng_from_hex(&r, "0000000000000001000000000000000200000000000000030000000000000004") == 0);
    CHECK(r.s[0] == 1 && r.s[1] == 2 && r.s[2] == 3 && r.s[3] == 4);
    for (int i = 0; i < 10; i++) CHECK(rt_rng_u64(&r) == want[i]);
}

static void test_reproducible(void)
{
    rt_rng a, b;
    rt_rng_seed(&a, 42, 7);
    rt_rng_seed(&b, 42, 7);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= rt_rng_u64(&a) == rt_rng_u64(&b);
    CHECK(same);
    rt_rng_seed(&a, 42, 7);
    rt_rng_seed(&b, 42, 7);
    for (int i = 0; i < 100; i++) {
        CHECK(rt_rng_uniform(&a) == rt_rng_uniform(&b));
        CHECK(rt_rng_normal(&a) == rt_rng_normal(&b));
        CHECK(rt_rng_below(&a, 1000) == rt_rng_below(&b, 1000));
    }
}

/* Nearby seeds and streams start from distinct states and share no outputs
 * over a run (a collision among 2^64 values would be a defect). */
static void test_streams_differ(void)
{
    enum { S = 4, R = 256 };
    uint64_t *out = malloc(sizeof(uint64_t) * S * S * R);
    rt_rng r;
    int n = 0;
    for (uint64_t seed = 0; seed < S; seed++)
        for (uint64_t stream = 0; stream < S; stream++) {
            rt_rng_seed(&r, seed, stream);
            CHECK(r.s[0] | r.s[1] | r.s[2] | r.s[3]);
            for (int i = 0; i < R; i++) out[n++] = rt_rng_u64(&r);
        }
    int dup = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) dup += out[i] == out[j];
    CHECK(dup == 0);
    free(out);
    /* Streams are not shifted copies of each other either: bit agreement
     * between stream 0 and stream 1, position by position, is about half. */
    rt_rng a, b;
    rt_rng_seed(&a, 1, 0);
    rt_rng_seed(&b, 1, 1);
    long agree = 0;
    for (int i = 0; i < 10000; i++) agree += 64 - __builtin_popcountll(rt_rng_u64(&a) ^ rt_rng_u64(&b));
    CHECK(fabs(agree / (64.0 * 10000) - 0.5) < 0.01);
}

static void test_uniform(void)
{
    enum { N = 100000 };
    rt_rng r;
    rt_rng_seed(&r, 3, 0);
    double s = 0, s2 = 0;
    int in_range = 1, buckets[10] = {0};
    for (int i = 0; i < N; i++) {
        float u = rt_rng_uniform(&r);
        in_range &= u >= 0.0f && u < 1.0f;
        s += u;
        s2 += (double)u * u;
        buckets[(int)(u * 10)]++;
    }
    CHECK(in_range);
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK(fabs(mean - 0.5) < 0.01);
    CHECK(fabs(var - 1.0 / 12) < 0.005);
    for (int k = 0; k < 10; k++) CHECK(abs(buckets[k] - N / 10) < N / 100);
}

static void test_normal(void)
{
    enum { N = 100000 };
    rt_rng r;
    rt_rng_seed(&r, 4, 2);
    double s = 0, s2 = 0, s4 = 0;
    int finite = 1, within1 = 0;
    for (int i = 0; i < N; i++) {
        double z = rt_rng_normal(&r);
        finite &= isfinite(z) != 0;
        s += z;
        s2 += z * z;
        s4 += z * z * z * z;
        within1 += fabs(z) < 1;
    }
    CHECK(finite);
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK(fabs(mean) < 0.02);
    CHECK(fabs(var - 1) < 0.03);
    CHECK(fabs(s4 / N - 3) < 0.15);                /* kurtosis of a normal */
    CHECK(fabs((double)within1 / N - 0.6827) < 0.01); /* P(|z| < 1) */
}

static void test_below(void)
{
    rt_rng r;
    rt_rng_seed(&r, 5, 0);
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= rt_rng_below(&r, 1) == 0;
    CHECK(ok);
    enum { N = 70000, K = 7 };
    int counts[K] = {0};
    for (int i = 0; i < N; i++) {
        uint64_t v = rt_rng_below(&r, K);
        if (v >= K) {
            ok = 0;
            break;
        }
        counts[v]++;
    }
    CHECK(ok);
    for (int k = 0; k < K; k++) CHECK(abs(counts[k] - N / K) < N / K / 20);
    /* Huge bounds: in range, and both halves of [0, n) are reached. */
    uint64_t big = (1ULL << 63) + 1;
    int high = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = rt_rng_below(&r, big);
        ok &= v < big;
        high += v >= big / 2;
    }
    CHECK(ok);
    CHECK(high > 400 && high < 600);
    for (int i = 0; i < 100; i++) ok &= rt_rng_below(&r, UINT64_MAX) < UINT64_MAX;
    CHECK(ok);
    CHECK(rt_rng_below(&r, 0) == 0); /* out of contract, but defined */
}

static int is_permutation(const int64_t *p, int64_t n)
{
    char *seen = calloc((size_t)n + 1, 1);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_permutation(void)
{
    enum { N = 1000 };
    int64_t p[N], q[N];
    rt_rng a, b;
    rt_rng_seed(&a, 6, 0);
    rt_rng_seed(&b, 6, 0);
    rt_rng_permutation(&a, p, N);
    rt_rng_permutation(&b, q, N);
    CHECK(is_permutation(p, N));
    CHECK(!memcmp(p, q, sizeof p));
    int fixed = 0;
    for (int i = 0; i < N; i++) fixed += p[i] == i;
    CHECK(fixed < 10); /* expected 1 fixed point */
    rt_rng_permutation(&a, q, N);
    CHECK(is_permutation(q, N));
    CHECK(memcmp(p, q, sizeof p) != 0);
    int64_t one = 99;
    rt_rng_permutation(&a, &one, 1);
    CHECK(one == 0);
    rt_rng_permutation(&a, NULL, 0);
    /* Every permutation of 3 appears, about equally often. */
    int counts[6] = {0};
    for (int t = 0; t < 60000; t++) {
        int64_t s[3];
        rt_rng_permutation(&a, s, 3);
        counts[s[0] * 2 + (s[1] > s[2])]++;
    }
    for (int k = 0; k < 6; k++) CHECK(abs(counts[k] - 10000) < 500);
}

static void test_hex(void)
{
    rt_rng a, b;
    rt_rng_seed(&a, 77, 3);
    for (int i = 0; i < 5; i++) rt_rng_u64(&a);
    char hex[65];
    rt_rng_to_hex(&a, hex);
    CHECK(strlen(hex) == 64);
    CHECK(strspn(hex, "0123456789abcdef") == 64);
    memset(&b, 0, sizeof b);
    CHECK(rt_rng_from_hex(&b, hex) == 0);
    CHECK(!memcmp(&a, &b, sizeof a));
    int same = 1;
    for (int i = 0; i < 100; i++) same &= rt_rng_u64(&a) == rt_rng_u64(&b);
    CHECK(same);
    /* Big-endian words: the first word's top nibble comes first. */
    rt_rng c = {{0x0123456789abcdefULL, 1, 0xfedcba9876543210ULL, 0}};
    rt_rng_to_hex(&c, hex);
    CHECK(!strcmp(hex, "0123456789abcdef0000000000000001fedcba98765432100000000000000000"));
    CHECK(rt_rng_from_hex(&b, "0123456789ABCDEF0000000000000001FEDCBA98765432100000000000000000") == 0);
    CHECK(!memcmp(&b, &c, sizeof b));

    rt_rng keep = b;
    char bad[80];
    CHECK(rt_rng_from_hex(&b, NULL) == -1);
    CHECK(rt_rng_from_hex(&b, "") == -1);
    memcpy(bad, hex, 65);
    bad[63] = 0; /* 63 digits */
    CHECK(rt_rng_from_hex(&b, bad) == -1);
    memcpy(bad, hex, 64);
    strcpy(bad + 64, "0"); /* 65 digits */
    CHECK(rt_rng_from_hex(&b, bad) == -1);
    memcpy(bad, hex, 65);
    bad[10] = 'g';
    CHECK(rt_rng_from_hex(&b, bad) == -1);
    bad[10] = ' ';
    CHECK(rt_rng_from_hex(&b, bad) == -1);
    memcpy(bad, hex, 65);
    bad[0] = '-';
    CHECK(rt_rng_from_hex(&b, bad) == -1);
    memcpy(bad, hex, 64);
    strcpy(bad + 64, "\n");
    CHECK(rt_rng_from_hex(&b, bad) == -1);
    memset(bad, '0', 64);
    bad[64] = 0; /* the all-zero state is xoshiro's fixed point */
    CHECK(rt_rng_from_hex(&b, bad) == -1);
    CHECK(!memcmp(&b, &keep, sizeof b));
}

int main(void)
{
    RUN(test_known_answer);
    RUN(test_reproducible);
    RUN(test_streams_differ);
    RUN(test_uniform);
    RUN(test_normal);
    RUN(test_below);
    RUN(test_permutation);
    RUN(test_hex);
    return t_summary("rng");
}
