/*
 * bench.h -- the clock and the median every benchmark reports with.
 * Header-only, included by each benchmark program in bench/.
 */
#ifndef RT_BENCH_H
#define RT_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Samples a median may take: every benchmark repeats far fewer times. */
#define BENCH_MAX_SAMPLES 256

/* Monotonic wall time in seconds. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n), 0 < n <= BENCH_MAX_SAMPLES; v is left as it was. */
static inline double bench_median(const double *v, int n)
{
    double s[BENCH_MAX_SAMPLES];
    if (n <= 0 || n > BENCH_MAX_SAMPLES) {
        fprintf(stderr, "bench: median of %d samples (1..%d)\n", n, BENCH_MAX_SAMPLES);
        exit(1);
    }
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, bench_cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

#endif
