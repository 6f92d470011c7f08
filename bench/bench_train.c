/*
 * bench_train -- what a training step costs next to its GEMMs.
 *
 * The design's performance model: an MLP step is GEMM-bound, everything
 * else (bias, activation, loss, optimizer, gather) is a thin pass, so a step
 * should cost little more than its GEMMs.  This measures how much more, for
 * the teacher MLP 784-1200-1200-10 and the student MLP 784-128-10 (relu),
 * through the real `mlp` plugin loaded from the built-in folder, the `ce`
 * loss and Adam, with 1 and 2 BLAS threads:
 *
 *   step   median wall time of a training step: forward (train = 1), loss
 *          forward + backward (into a zeroed [N, C] gradient), backward
 *          (no grad_in), Adam step, zero_grad; over 60 steps after 10
 *          warm-up steps, on one fixed batch
 *   GEMM   median over iterations of the summed time of the rt_gemm calls
 *          that step makes, timed one by one in isolation, alternating with
 *          the steps; the shapes, transposes and leading dimensions of
 *          mlp.c (forward
 *          y = h W^T; backward gW = d^T h with beta 0, because zero_grad is
 *          lazy and the next backward overwrites; dx = d W for every layer
 *          but the first, whose dx nobody asks for)
 *   ratio  step / GEMM
 *   epoch  samples/s of one shuffled epoch of 60000 synthetic samples at
 *          batch 128, batch gather included (the last batch has 96 rows)
 *   infer  samples/s of forward only (train = 0) at batch 1000
 *
 * A benchmark reports; it never fails on a timing.  Exit status 1 means an
 * error (a plugin missing, an allocation failed), not slowness.
 *
 * Usage: bench_train [-v] [-q]
 *   -v  also the median of each GEMM call
 *   -q  quick: fewer steps and a 12800-sample epoch (smoke runs)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "retort.h"

#define MAX_LAYERS 8
#define MAX_CALLS (3 * MAX_LAYERS)
#define MAX_SAMPLES 256
#define INPUT 784
#define CLASSES 10
#define DATA_N 60000
#define INFER_BATCH 1000

static int steps_n = 60, warmup_n = 10, infer_n = 12;
static int64_t epoch_n = DATA_N;
static int verbose;

static rt_ctx *ctx;

/* A benchmark is a program: an error ends it with the core's message. */
static void die(const char *what)
{
    fprintf(stderr, "bench_train: %s: %s\n", what, rt_ctx_message(ctx));
    exit(1);
}

static void *xalloc(size_t bytes)
{
    /* 64-byte aligned like tensor storage, so the GEMMs see the same
     * alignment in isolation as in the step. */
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench_train: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------ the models */

typedef struct model {
    const char *name;
    int nsizes;
    int64_t sizes[MAX_LAYERS + 1];
} model;

static const model models[] = {
    {"teacher", 4, {INPUT, 1200, 1200, CLASSES}},
    {"student", 3, {INPUT, 128, CLASSES}},
};

/* ------------------------------------------------------- a training step */

typedef struct trainer {
    rt_instance *net, *loss;
    rt_optim *opt;
    rt_param params[2 * MAX_LAYERS];
    int nparams;
    rt_tensor *grad; /* [N, C] loss gradient, reused across steps */
    double last_loss;
} trainer;

/* Seconds spent in each piece of one step. */
typedef struct pieces {
    double fwd, loss, bwd, opt, zero, total;
    double best; /* fastest step (measure only) */
} pieces;

static void trainer_init(trainer *t, rt_registry *reg, const model *m)
{
    memset(t, 0, sizeof *t);
    char opts[256];
    int k = snprintf(opts, sizeof opts, "{\"activation\":\"relu\",\"seed\":1,\"sizes\":[");
    for (int i = 0; i < m->nsizes; i++)
        k += snprintf(opts + k, sizeof opts - (size_t)k, "%s%lld", i ? "," : "", (long long)m->sizes[i]);
    snprintf(opts + k, sizeof opts - (size_t)k, "]}");
    if (rt_instance_create(reg, ctx, RT_KIND_STUDENT, "mlp", opts, &t->net)) die("student 'mlp'");
    if (rt_instance_create(reg, ctx, RT_KIND_LOSS, "ce", NULL, &t->loss)) die("loss 'ce'");
    rt_optim_cfg cfg = {.kind = RT_OPTIM_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    if (!(t->opt = rt_optim_new(ctx, &cfg))) die("adam");
    /* Once: the list and its tensors live as long as the instance, and
     * asking again after zero_grad would force the lazy zeroing. */
    t->nparams = rt_instance_params(t->net, t->params, 2 * MAX_LAYERS);
    if (t->nparams > 2 * MAX_LAYERS) {
        fprintf(stderr, "bench_train: %d parameters, room for %d\n", t->nparams, 2 * MAX_LAYERS);
        exit(1);
    }
}

static void trainer_free(trainer *t)
{
    rt_tensor_release(t->grad);
    rt_optim_free(t->opt);
    rt_instance_release(t->loss);
    rt_instance_release(t->net);
}

/* One step on x [N, 784], y [N]: the loop a recipe runs, in its order. */
static void train_step(trainer *t, const rt_tensor *x, const rt_tensor *y, pieces *p)
{
    double t0 = bench_now();
    rt_tensor *out;
    if (rt_student_forward(t->net, ctx, x, 1, &out)) die("forward");
    double t1 = bench_now();
    int64_t gs[2] = {out->shape[0], out->shape[1]};
    if (rt_tensor_ensure(ctx, &t->grad, RT_DTYPE_F32, 2, gs)) die("loss gradient");
    memset(t->grad->data, 0, sizeof(float) * (size_t)rt_numel(t->grad));
    rt_loss_in in = {.student = out, .target = y};
    if (rt_loss_forward(t->loss, ctx, &in, &t->last_loss)) die("loss forward");
    if (rt_loss_backward(t->loss, ctx, &in, 1.0f, t->grad)) die("loss backward");
    double t2 = bench_now();
    if (rt_student_backward(t->net, ctx, t->grad, NULL, 0, NULL)) die("backward");
    double t3 = bench_now();
    if (rt_optim_step(t->opt, ctx, t->params, t->nparams, 1e-3f)) die("adam step");
    double t4 = bench_now();
    rt_student_zero_grad(t->net);
    double t5 = bench_now();
    *p = (pieces){.fwd = t1 - t0, .loss = t2 - t1, .bwd = t3 - t2, .opt = t4 - t3, .zero = t5 - t4, .total = t5 - t0};
}

/* ------------------------------------------------- the GEMMs in isolation */

/* Buffers shaped as mlp.c's for one batch size: x [N, in0], act[i] [N, out_i],
 * w/gw[i] [out_i, in_i], dout [N, C], dx[i] [N, in_i] (i >= 1). */
typedef struct gemms {
    int nl;
    int64_t N, in[MAX_LAYERS], out[MAX_LAYERS];
    const float *x;
    float *act[MAX_LAYERS], *w[MAX_LAYERS], *gw[MAX_LAYERS], *dx[MAX_LAYERS], *dout;
    int ncalls;
    char label[MAX_CALLS][48];
    double flops[MAX_CALLS];
} gemms;

static float *random_buf(rt_rng *r, int64_t n)
{
    /* Small values in (-0.05, 0.05): no overflow, no denormals. */
    float *p = xalloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = 0.1f * (rt_rng_uniform(r) - 0.5f);
    return p;
}

static void gemms_init(gemms *g, const model *m, int64_t N, const float *x)
{
    memset(g, 0, sizeof *g);
    rt_rng r;
    rt_rng_seed(&r, 7, 0);
    g->nl = m->nsizes - 1;
    g->N = N;
    g->x = x;
    for (int i = 0; i < g->nl; i++) {
        g->in[i] = m->sizes[i];
        g->out[i] = m->sizes[i + 1];
        g->act[i] = random_buf(&r, N * g->out[i]);
        g->w[i] = random_buf(&r, g->out[i] * g->in[i]);
        g->gw[i] = random_buf(&r, g->out[i] * g->in[i]);
        if (i) g->dx[i] = random_buf(&r, N * g->in[i]);
    }
    g->dout = random_buf(&r, N * g->out[g->nl - 1]);
}

static void gemms_free(gemms *g)
{
    for (int i = 0; i < g->nl; i++) {
        free(g->act[i]);
        free(g->w[i]);
        free(g->gw[i]);
        free(g->dx[i]);
    }
    free(g->dout);
}

/* Runs one step's GEMMs in mlp.c's order, timing each call into dt[];
 * returns their sum.  Records labels and flop counts on the first call. */
static double gemms_run(gemms *g, double *dt)
{
    int k = 0;
    double sum = 0, t0;
    int64_t N = g->N;
#define TIMED(lbl, layer, M_, N_, K_, call)                                                              \
    do {                                                                                           \
        t0 = bench_now();                                                                                \
        call;                                                                                      \
        dt[k] = bench_now() - t0;                                                                        \
        sum += dt[k];                                                                              \
        snprintf(g->label[k], sizeof g->label[k], "%s l%d M,N,K=%lld,%lld,%lld", lbl, layer,            \
                 (long long)(M_), (long long)(N_), (long long)(K_));                               \
        g->flops[k] = 2.0 * (double)(M_) * (double)(N_) * (double)(K_);                            \
        k++;                                                                                       \
    } while (0)
    const float *h = g->x;
    for (int i = 0; i < g->nl; i++) {
        int64_t in = g->in[i], out = g->out[i];
        /* forward: y[N,out] = h[N,in] W[out,in]^T */
        TIMED("fwd y=hW^T", i, N, out, in,
              rt_gemm(0, 1, N, out, in, 1.0f, h, in, g->w[i], in, 0.0f, g->act[i], out));
        h = g->act[i];
    }
    const float *d = g->dout;
    for (int i = g->nl - 1; i >= 0; i--) {
        int64_t in = g->in[i], out = g->out[i];
        const float *hin = i ? g->act[i - 1] : g->x;
        /* gW[out,in] = d[N,out]^T h[N,in] */
        TIMED("bwd gW=d^T h", i, out, in, N,
              rt_gemm(1, 0, out, in, N, 1.0f, d, out, hin, in, 0.0f, g->gw[i], in));
        if (i == 0) break;
        /* dx[N,in] = d[N,out] W[out,in] */
        TIMED("bwd dx=dW", i, N, in, out, rt_gemm(0, 0, N, in, out, 1.0f, d, out, g->w[i], in, 0.0f, g->dx[i], in));
        d = g->dx[i];
    }
#undef TIMED
    g->ncalls = k;
    return sum;
}

typedef struct gemm_result {
    double total;            /* median of the per-iteration sums */
    double best;             /* smallest per-iteration sum */
    double call[MAX_CALLS];  /* median of each call */
    double fwd, bwd;         /* sums of the call medians, forward/backward */
    double flops;            /* of one step */
} gemm_result;

/* The step on x [N, 784], y [N] and its GEMMs in isolation, alternating
 * (a step, then the GEMM sequence, steps_n times after warmup_n), so that
 * both see the same machine: the CPUs are shared, and a neighbour's burst
 * then slows both sides of the ratio instead of one.  Medians of each
 * piece, of each GEMM call and of the per-iteration sums. */
static void measure(trainer *t, const model *m, const rt_tensor *x, const rt_tensor *y, pieces *step,
                    gemm_result *gemm)
{
    gemms g;
    gemms_init(&g, m, x->shape[0], rt_f32(x));
    pieces p;
    double dt[MAX_CALLS], sums[MAX_SAMPLES], calls[MAX_CALLS][MAX_SAMPLES], v[6][MAX_SAMPLES];
    for (int i = 0; i < warmup_n; i++) {
        train_step(t, x, y, &p);
        gemms_run(&g, dt);
    }
    for (int i = 0; i < steps_n; i++) {
        train_step(t, x, y, &p);
        v[0][i] = p.fwd, v[1][i] = p.loss, v[2][i] = p.bwd;
        v[3][i] = p.opt, v[4][i] = p.zero, v[5][i] = p.total;
        sums[i] = gemms_run(&g, dt);
        for (int c = 0; c < g.ncalls; c++) calls[c][i] = dt[c];
    }
    *step = (pieces){.fwd = bench_median(v[0], steps_n), .loss = bench_median(v[1], steps_n), .bwd = bench_median(v[2], steps_n),
                     .opt = bench_median(v[3], steps_n), .zero = bench_median(v[4], steps_n), .total = bench_median(v[5], steps_n),
                     .best = v[5][0]};
    gemm_result r = {.total = bench_median(sums, steps_n), .best = sums[0]};
    for (int i = 1; i < steps_n; i++) {
        if (v[5][i] < step->best) step->best = v[5][i];
        if (sums[i] < r.best) r.best = sums[i];
    }
    for (int c = 0; c < g.ncalls; c++) {
        r.call[c] = bench_median(calls[c], steps_n);
        r.flops += g.flops[c];
        /* gemms_run makes the nl forward calls first */
        if (c < g.nl) r.fwd += r.call[c];
        else r.bwd += r.call[c];
    }
    if (verbose)
        for (int c = 0; c < g.ncalls; c++)
            printf("    %-34s %8.3f ms %7.1f GFLOP/s\n", g.label[c], 1e3 * r.call[c],
                   1e-9 * g.flops[c] / r.call[c]);
    *gemm = r;
    gemms_free(&g);
}

/* ------------------------------------------------- epoch and inference */

/* One shuffled epoch over the first n samples at this batch size, the
 * gather included.  Returns samples/s. */
static double run_epoch(trainer *t, rt_dataset *d, int64_t batch, int64_t n)
{
    int64_t *perm = xalloc(sizeof(int64_t) * (size_t)rt_dataset_size(d));
    int64_t rem = n % batch;
    int64_t xs[2] = {batch, INPUT}, xr[2] = {rem, INPUT};
    rt_tensor *xb = rt_tensor_new(ctx, RT_DTYPE_F32, 2, xs), *yb = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &batch);
    rt_tensor *xl = rem ? rt_tensor_new(ctx, RT_DTYPE_F32, 2, xr) : NULL;
    rt_tensor *yl = rem ? rt_tensor_new(ctx, RT_DTYPE_I32, 1, &rem) : NULL;
    if (!xb || !yb || (rem && (!xl || !yl))) die("epoch batch");
    rt_rng r;
    rt_rng_seed(&r, 1, 1);
    pieces p;
    double t0 = bench_now();
    rt_rng_permutation(&r, perm, rt_dataset_size(d));
    for (int64_t start = 0; start < n; start += batch) {
        int64_t b = n - start < batch ? n - start : batch;
        rt_tensor *x = b == batch ? xb : xl, *y = b == batch ? yb : yl;
        if (rt_dataset_gather(d, ctx, perm + start, b, x, y)) die("gather");
        train_step(t, x, y, &p);
    }
    double sps = (double)n / (bench_now() - t0);
    rt_tensor_release(xb);
    rt_tensor_release(yb);
    rt_tensor_release(xl);
    rt_tensor_release(yl);
    free(perm);
    return sps;
}

/* Forward only (train = 0) on successive batches of x_all; samples/s from
 * the median batch time. */
static double measure_infer(rt_instance *net, rt_tensor *x_all, int64_t batch)
{
    double v[MAX_SAMPLES];
    int64_t nb = x_all->shape[0] / batch;
    for (int i = -2; i < infer_n; i++) {
        rt_tensor *x = rt_tensor_narrow(ctx, x_all, 0, ((i + 2) % nb) * batch, batch), *out;
        if (!x) die("inference batch");
        double t0 = bench_now();
        if (rt_student_forward(net, ctx, x, 0, &out)) die("inference forward");
        if (i >= 0) v[i] = bench_now() - t0;
        rt_tensor_release(x);
    }
    return (double)batch / bench_median(v, infer_n);
}

/* ------------------------------------------------------------------ main */

typedef struct row {
    const char *model;
    int64_t batch;
    int threads;
    pieces step;
    gemm_result gemm;
    double epoch_sps, infer_sps; /* 0 = not measured for this row */
} row;

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-v")) verbose = 1;
        else if (!strcmp(argv[i], "-q")) steps_n = 20, warmup_n = 3, infer_n = 5, epoch_n = 12800;
        else {
            fprintf(stderr, "usage: bench_train [-v] [-q]\n");
            return 1;
        }
    }
    ctx = rt_ctx_new();
    rt_registry *reg = rt_registry_new();
    if (!ctx || !reg) {
        fprintf(stderr, "bench_train: out of memory\n");
        return 1;
    }
    /* keep_going: a broken unrelated plugin should not stop the bench;
     * a missing mlp or ce still does, at instance creation. */
    int nfailed = 0;
    if (rt_registry_load_dir(reg, ctx, rt_builtin_plugin_dir(), 1, &nfailed) && nfailed == 0)
        die(rt_builtin_plugin_dir());
    if (nfailed) fprintf(stderr, "bench_train: warning: %d plugin file(s) failed: %s\n", nfailed, rt_ctx_message(ctx));

    /* Synthetic data: pixels uniform in [0, 1), labels uniform in [0, 10). */
    int64_t xs[2] = {DATA_N, INPUT}, ys = DATA_N;
    rt_tensor *x_all = rt_tensor_new(ctx, RT_DTYPE_F32, 2, xs), *y_all = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &ys);
    if (!x_all || !y_all) die("synthetic data");
    rt_rng r;
    rt_rng_seed(&r, 1, 0);
    for (int64_t i = 0; i < DATA_N * INPUT; i++) rt_f32(x_all)[i] = rt_rng_uniform(&r);
    for (int64_t i = 0; i < DATA_N; i++) rt_i32(y_all)[i] = (int32_t)rt_rng_below(&r, CLASSES);
    rt_dataset *data = rt_dataset_new(ctx, x_all, y_all);
    if (!data) die("dataset");

    /* The load average says whether neighbours shared the CPUs. */
    double load = -1;
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf", &load) != 1) load = -1;
        fclose(la);
    }
    printf("bench_train: OpenBLAS core %s, %ld CPUs online, load average %.2f at start; step and GEMM times are "
           "medians of %d after %d warm-up; epoch %lld samples at batch 128; inference batch %d\n",
           rt_blas_core(), sysconf(_SC_NPROCESSORS_ONLN), load, steps_n, warmup_n, (long long)epoch_n, INFER_BATCH);

    const int threads[] = {1, 2};
    const int64_t batches[] = {128, 256};
    row rows[8];
    int nrows = 0;
    double t_start = bench_now();
    for (int ti = 0; ti < 2; ti++) {
        rt_set_threads(threads[ti]);
        for (int mi = 0; mi < 2; mi++) {
            const model *m = &models[mi];
            trainer t;
            trainer_init(&t, reg, m);
            for (int bi = 0; bi < 2; bi++) {
                int64_t B = batches[bi];
                rt_tensor *x = rt_tensor_narrow(ctx, x_all, 0, 0, B), *y = rt_tensor_narrow(ctx, y_all, 0, 0, B);
                if (!x || !y) die("batch view");
                row *w = &rows[nrows++];
                *w = (row){.model = m->name, .batch = B, .threads = rt_get_threads()};
                if (verbose) printf("  %s batch %lld, %d thread(s), GEMMs in isolation:\n", m->name, (long long)B, w->threads);
                measure(&t, m, x, y, &w->step, &w->gemm);
                if (B == 128) {
                    w->epoch_sps = run_epoch(&t, data, B, epoch_n);
                    w->infer_sps = measure_infer(t.net, x_all, INFER_BATCH);
                }
                if (verbose) printf("    last loss %.4f\n", t.last_loss);
                rt_tensor_release(x);
                rt_tensor_release(y);
            }
            trainer_free(&t);
        }
    }

    printf("\n%-8s %5s %3s | %8s %8s %9s %8s | %7s %7s %7s %7s %7s | %7s | %9s %9s\n", "model", "batch", "thr",
           "step ms", "GEMM ms", "step/GEMM", "(best)", "fwd", "loss", "bwd", "adam", "zero", "GFLOP/s", "epoch/s",
           "infer/s");
    for (int i = 0; i < nrows; i++) {
        const row *w = &rows[i];
        char ep[32] = "-", inf[32] = "-";
        if (w->epoch_sps > 0) snprintf(ep, sizeof ep, "%.0f", w->epoch_sps);
        if (w->infer_sps > 0) snprintf(inf, sizeof inf, "%.0f", w->infer_sps);
        printf("%-8s %5lld %3d | %8.3f %8.3f %8.3fx %7.3fx | %7.3f %7.3f %7.3f %7.3f %7.3f | %7.1f | %9s %9s\n",
               w->model, (long long)w->batch, w->threads, 1e3 * w->step.total, 1e3 * w->gemm.total,
               w->step.total / w->gemm.total, w->step.best / w->gemm.best, 1e3 * w->step.fwd, 1e3 * w->step.loss, 1e3 * w->step.bwd,
               1e3 * w->step.opt, 1e3 * w->step.zero, 1e-9 * w->gemm.flops / w->gemm.total, ep, inf);
    }
    printf("(step, GEMM: medians; best: fastest step / fastest GEMM sequence, less sensitive to neighbours;\n"
           " fwd..zero: median ms of each piece of the step; GFLOP/s: the GEMMs in isolation;\n"
           " epoch/s, infer/s: samples per second)\n\n");
    for (int i = 0; i < nrows; i++) {
        const row *w = &rows[i];
        double ratio = w->step.total / w->gemm.total;
        /* Where the time beyond the GEMMs goes: forward and backward
         * minus their GEMMs (bias, activation, copies, checks), and the
         * pieces that have no GEMM at all. */
        printf("step/GEMM %-7s batch %3lld, %d thread%s: %.3f  extra %.3f ms ~ fwd %.3f + loss %.3f + bwd %.3f"
               " + adam %.3f + zero %.3f%s\n",
               w->model, (long long)w->batch, w->threads, w->threads > 1 ? "s" : " ", ratio,
               1e3 * (w->step.total - w->gemm.total), 1e3 * (w->step.fwd - w->gemm.fwd), 1e3 * w->step.loss,
               1e3 * (w->step.bwd - w->gemm.bwd), 1e3 * w->step.opt, 1e3 * w->step.zero,
               ratio > 1.25 ? "  (above 1.25)" : "");
    }
    /* Thread scaling, from the same run. */
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < nrows; j++)
            if (rows[i].threads == 1 && rows[j].threads == 2 && rows[i].batch == rows[j].batch &&
                !strcmp(rows[i].model, rows[j].model))
                printf("2 vs 1 thread %-7s batch %3lld: step %.2fx faster, GEMMs %.2fx\n", rows[i].model,
                       (long long)rows[i].batch, rows[i].step.total / rows[j].step.total,
                       rows[i].gemm.total / rows[j].gemm.total);
    printf("total %.1f s\n", bench_now() - t_start);

    rt_dataset_free(data);
    rt_tensor_release(x_all);
    rt_tensor_release(y_all);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return 0;
}
