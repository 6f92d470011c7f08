/*
 * parallel.c -- the kernels' worker pool (parallel.h states the contract).
 *
 * One job at a time: `busy` is held by the caller for the whole job, `mu`
 * guards the job description and the counters.  A worker sleeps on `wake`
 * until the generation changes, runs its tasks if its index is below the
 * job's T, and the last one to finish signals `done`.
 */
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include "retort.h"

static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int nworkers;                        /* started: indices 1..nworkers */
static pthread_t threads[RT_PAR_MAX];       /* the workers, by index */
static int last_cpu = -1;                   /* the caller's CPU the workers avoid, or -1 */
static uint64_t generation;                 /* bumped by each parallel job */
static uint64_t start_gen[RT_PAR_MAX];      /* the generation a worker starts after */
static int pending;                         /* workers still running the job */
static struct {
    rt_par_fn fn;
    void *arg;
    int64_t ntasks;
    int T;
    int64_t next; /* the next task to claim (atomic) */
} job;

/* A threaded job's tasks are claimed one by one by whichever thread is
 * free: a worker's wake-up (tens of microseconds) then delays it without
 * holding back the others. */
static void claim_tasks(rt_par_fn fn, void *arg, int64_t ntasks, int thread)
{
    for (;;) {
        int64_t t = __atomic_fetch_add(&job.next, 1, __ATOMIC_RELAXED);
        if (t >= ntasks) return;
        fn(arg, t, thread);
    }
}

static void run_serial(rt_par_fn fn, void *arg, int64_t ntasks)
{
    for (int64_t t = 0; t < ntasks; t++) fn(arg, t, 0);
}

static void *worker(void *p)
{
    int id = (int)(intptr_t)p;
    pthread_mutex_lock(&mu);
    uint64_t seen = start_gen[id];
    for (;;) {
        while (generation == seen) pthread_cond_wait(&wake, &mu);
        seen = generation;
        if (id >= job.T) continue;
        rt_par_fn fn = job.fn;
        void *arg = job.arg;
        int64_t ntasks = job.ntasks;
        pthread_mutex_unlock(&mu);
        claim_tasks(fn, arg, ntasks, id);
        pthread_mutex_lock(&mu);
        if (--pending == 0) pthread_cond_signal(&done);
    }
    return NULL;
}

/* A forked child has the caller's thread only: it starts a pool of its own. */
static void after_fork_child(void)
{
    nworkers = 0;
    last_cpu = -1;
    pending = 0;
    pthread_mutex_init(&busy, NULL);
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&done, NULL);
}

static void register_fork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

/* Starts workers up to index want - 1 (mu held); returns how many run. */
static int start_workers(int want)
{
    sigset_t all, old;
    sigfillset(&all);
    /* Workers block every signal: a handler (Ctrl-C) runs on the caller. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (nworkers < want - 1) {
        pthread_t th;
        pthread_attr_t at;
        int id = nworkers + 1;
        start_gen[id] = generation;
        if (pthread_attr_init(&at)) break;
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int err = pthread_create(&th, &at, worker, (void *)(intptr_t)id);
        pthread_attr_destroy(&at);
        if (err) break;
        threads[id] = th;
        nworkers++;
        last_cpu = -1; /* the new one runs anywhere until placed */
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return nworkers;
}

/* OpenBLAS's idle threads spin (sched_yield) for about 0.1 s after each
 * threaded GEMM, and the scheduler counts them as busy.  With as many job
 * threads as CPUs it then put a worker on the caller's CPU now and then,
 * and the two took turns while the spinner held the other CPU: a CNN step
 * at two threads took 30 or 50 ms at random.  So when a job's threads fill
 * the CPUs the process may use, the workers are kept off the caller's
 * current CPU (set again only when the caller has moved).  mu held. */
static void place_workers(int T)
{
    static int ncpu = -1;
    static cpu_set_t allowed;
    if (ncpu < 0) ncpu = sched_getaffinity(0, sizeof allowed, &allowed) ? 0 : CPU_COUNT(&allowed);
    int cpu = sched_getcpu();
    if (ncpu < 2 || T < ncpu || cpu < 0 || cpu == last_cpu || !CPU_ISSET(cpu, &allowed)) return;
    cpu_set_t others = allowed;
    CPU_CLR(cpu, &others);
    for (int i = 1; i <= nworkers; i++) pthread_setaffinity_np(threads[i], sizeof others, &others);
    last_cpu = cpu;
}

static int64_t grain = RT_PAR_GRAIN;

int64_t rt_par_set_grain(int64_t floats)
{
    int64_t old = grain;
    grain = floats < 0 ? 0 : floats;
    return old;
}

int rt_par_threads(int64_t ntasks, int64_t work)
{
    if (ntasks < 2 || work < grain) return 1;
    int T = rt_get_threads();
    if (T > RT_PAR_MAX) T = RT_PAR_MAX;
    if (T > ntasks) T = (int)ntasks;
    return T < 1 ? 1 : T;
}

void rt_par_run(int64_t ntasks, int64_t work, rt_par_fn fn, void *arg)
{
    int T = rt_par_threads(ntasks, work);
    if (T <= 1 || pthread_mutex_trylock(&busy)) {
        run_serial(fn, arg, ntasks);
        return;
    }
    pthread_once(&once, register_fork);
    pthread_mutex_lock(&mu);
    int have = start_workers(T);
    if (T > have + 1) T = have + 1;
    place_workers(T);
    if (T <= 1) {
        pthread_mutex_unlock(&mu);
        pthread_mutex_unlock(&busy);
        run_serial(fn, arg, ntasks);
        return;
    }
    /* One BLAS thread per task thread, set before any worker can start a GEMM. */
    int blas = rt_get_threads();
    if (blas > 1) rt_set_threads(1);
    job.fn = fn;
    job.arg = arg;
    job.ntasks = ntasks;
    job.T = T;
    job.next = 0;
    pending = T - 1;
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
    claim_tasks(fn, arg, ntasks, 0);
    pthread_mutex_lock(&mu);
    while (pending) pthread_cond_wait(&done, &mu);
    pthread_mutex_unlock(&mu);
    if (blas > 1) rt_set_threads(blas);
    pthread_mutex_unlock(&busy);
}
