/*
 * parallel.h -- private to the core: the worker pool the conv, batch norm
 * and pooling kernels spread their work over, so that what runs between
 * two GEMMs uses every core the BLAS threads may use (rt_set_threads).
 *
 * A job is ntasks tasks, numbered 0..ntasks-1; task t runs on thread
 * t % T (T = the threads taking part, thread 0 the caller), each thread
 * its tasks in increasing order.  A kernel that sums partial results over
 * its tasks fixes ntasks from the shapes only, never from T, so its result
 * is the same bit for bit with any thread count (the reduction is done by
 * the caller in task order after the job).
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
 * the task (for per-thread scratch: at most min(ntasks, RT_PAR_MAX) of them). */
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
