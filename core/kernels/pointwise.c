/*
 * pointwise.c -- the layer kit's elementwise passes (rt_conv.h): fill and
 * relu, split into contiguous ranges over the kernels' worker pool
 * (parallel.h).  An element's result does not depend on the range it is
 * in, so any thread count gives the same bits.
 */
#include "rt_conv.h"

#include <math.h>
#include <string.h>

#include "parallel.h"
#include "vec.h"

/* Restrict parameters: gcc -O2 vectorises only what cannot alias. */
static void relu_into(float *restrict y, const float *restrict x, int64_t n)
{
    VLOOP(i, n, y[i] = x[i] > 0 ? x[i] : 0.0f;);
}

static void relu_mask(float *restrict d, const float *restrict y, int64_t n)
{
    VLOOP(i, n, d[i] = y[i] > 0 ? d[i] : 0.0f;);
}

static void fill_with(float *restrict x, int64_t n, float v)
{
    if (v == 0.0f && !signbit(v)) {
        memset(x, 0, (size_t)n * sizeof *x); /* all bits zero: +0.0f */
        return;
    }
    VLOOP(i, n, x[i] = v;);
}

typedef enum op { FILL, RELU_FWD, RELU_BWD } op;

typedef struct pw_job {
    op op;
    float *out;
    const float *in;
    float v;
    int64_t n, ntasks;
} pw_job;

static void pw_task(void *arg, int64_t task, int thread)
{
    const pw_job *j = arg;
    int64_t lo, hi;
    rt_par_range(j->n, j->ntasks, task, &lo, &hi);
    switch (j->op) {
    case FILL: fill_with(j->out + lo, hi - lo, j->v); break;
    case RELU_FWD: relu_into(j->out + lo, j->in + lo, hi - lo); break;
    case RELU_BWD: relu_mask(j->out + lo, j->in + lo, hi - lo); break;
    }
}

static void pw_run(pw_job *j)
{
    if (j->n <= 0) return;
    j->ntasks = rt_par_threads(j->n, j->n);
    rt_par_run(j->ntasks, j->n, pw_task, j);
}

void rt_fill(float *x, int64_t n, float v)
{
    pw_job j = {.op = FILL, .out = x, .v = v, .n = n};
    pw_run(&j);
}

void rt_relu_forward(const float *x, float *y, int64_t n)
{
    pw_job j = {.op = RELU_FWD, .out = y, .in = x, .n = n};
    pw_run(&j);
}

void rt_relu_backward(float *d, const float *y, int64_t n)
{
    pw_job j = {.op = RELU_BWD, .out = d, .in = y, .n = n};
    pw_run(&j);
}
