/*
 * parallel.h -- private to the core: the worker pool the conv, batch norm
 * and pooling kernels spread their work over, so that what runs between
 * two GEMMs uses every core the BLAS threads may use (rt_set_threads).
 *
 * A job is ntasks tasks, numbered 0..ntasks-1, each run once, by
 * whichever of the T threads taking part (thread 0 the caller) claims it
 * next; on one thread, in order.  So a task's result must not depend on
 * the thread that runs it (a thread index is given for per-thread
 * scratch) nor on the order of the tasks: the kernels give every task its
 * own outputs, and sums over the batch stay in one task, so their results
 * are the same bits with any thread count.
 *
 * While a job runs on more than one thread, OpenBLAS is held at one thread
 * (a GEMM inside a task runs on its caller, as one of T) and restored
 * after.  The pool serves one job at a time: a job started while another
 * runs (a second user thread, or a task starting a job) runs all its tasks
 * on its caller.  Workers are created on first use and sleep between jobs
 * (no spinning: the BLAS's own threads spin).  If a worker cannot be
 * created, the job runs on fewer threads; nothing fails.
 */
#ifndef RT_PARALLEL_H
#define RT_PARALLEL_H

#include <stdint.h>

/* At most this many threads take part in a job. */
#define RT_PAR_MAX 16

/* Work below this (a kernel's estimate of the floats it touches) is done
 * on the caller: waking a worker costs tens of microseconds. */
#define RT_PAR_GRAIN 32768

/* fn(arg, task, thread): thread in [0, T), the index of the thread running
 * the task (for per-thread scratch: T <= min(ntasks, RT_PAR_MAX)). */
typedef void (*rt_par_fn)(void *arg, int64_t task, int thread);

/* The threads a job of ntasks tasks and `work` floats would run on:
 * min(ntasks, rt_get_threads(), RT_PAR_MAX), or 1 when work is below the
 * grain (RT_PAR_GRAIN). */
int rt_par_threads(int64_t ntasks, int64_t work);

/* Sets the grain (>= 0), returns the previous one.  For tests: grain 0
 * sends the smallest shapes through the threaded path. */
int64_t rt_par_set_grain(int64_t floats);

/* Runs the job and returns when every task has returned. */
void rt_par_run(int64_t ntasks, int64_t work, rt_par_fn fn, void *arg);

/* Task t of n's share [*lo, *hi) of [0, total): contiguous, sizes differing
 * by at most one, in order. */
static inline void rt_par_range(int64_t total, int64_t n, int64_t t, int64_t *lo, int64_t *hi)
{
    *lo = total * t / n;
    *hi = total * (t + 1) / n;
}

#endif
