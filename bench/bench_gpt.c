/*
 * bench_gpt -- how fast the GPT teacher and student of issue 11 train.
 *
 * The two networks of scripts/recipes/tiny_lm.lua through the real `gpt`
 * plugin (loaded from the built-in folder): teacher vocab 256, context 64,
 * 3 layers, 4 heads, width 128; student 2 layers, 4 heads, width 64; the
 * `ce` loss on the [N, T, V] logits with the next tokens, Adam (lr 1e-3);
 * batch 32 of [32, 64] i32 windows; with 1 and 2 BLAS threads:
 *
 *   step    median wall time of a training step on one fixed batch, over
 *           15 steps after 3 warm-up, and its pieces: forward (train = 1),
 *           loss forward + backward (into a zeroed [N, T, V] gradient),
 *           backward, Adam, zero_grad
 *   tok/s   training tokens per second, 32 * 64 / step
 *   GEMMs   median of the summed time of the same rt_gemm calls the step
 *           makes (shapes, transposes, leading dimensions as the plugin's;
 *           on separate buffers of the same sizes, one set per layer), timed
 *           alone, alternating with the steps (bench_lm's method):
 *             per layer forward: c_attn [M, D] x [3D, D]^T, per (sample,
 *             head) the scores q k^T [T, hs] x [T, hs]^T and P v [T, T] x
 *             [T, hs], attn.c_proj [M, D] x [D, D]^T, mlp.c_fc [M, D] x
 *             [4D, D]^T, mlp.c_proj [M, 4D] x [D, 4D]^T; then the tied head
 *             [M, D] x [V, D]^T (M = N * T);
 *             backward, each linear's weight gradient d^T x and input
 *             gradient d W (the head's too), and per (sample, head) the four
 *             of attention (dP = dO v^T, dv = P^T dO, dq = dP k, dk = dP^T q)
 *           NOT counted (the rest of the step): layer norms, the causal
 *           softmax and its backward, bias + gelu and their backward,
 *           residual adds and copies, the embedding gather and scatter, the
 *           ce loss, Adam, zero_grad
 *   share   GEMMs / step
 *   gen     teacher, 2 threads: tokens/s of greedy generation of 63 tokens
 *           after a 1-token prompt (rt_generate) with the key/value cache
 *           and without (a full forward over the prefix per token); each
 *           the fastest of 3 runs; whether both gave the same tokens
 *
 * Synthetic data: tokens uniform in [0, 256); the speed does not depend on
 * the values.  A benchmark reports; it never fails on a timing.  Exit
 * status 1 means an error (a plugin missing, an allocation failed).
 *
 * Usage: bench_gpt [-q]   (-q: 3 steps after 1 warm-up, for smoke runs)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "retort.h"
#include "rt_generate.h"

#define BATCH 32
#define CTX 64
#define VOCAB 256
#define MAX_PARAMS 64
#define MAX_STEPS 32
#define MAX_LAYERS 4

static int steps_n = 15, warmup_n = 3;
static rt_ctx *ctx;

static void die(const char *what)
{
    fprintf(stderr, "bench_gpt: %s: %s\n", what, rt_ctx_message(ctx));
    exit(1);
}

typedef struct model_cfg {
    const char *name;
    int64_t L, H, D;
} model_cfg;

typedef struct trainer {
    rt_instance *net, *loss;
    rt_optim *opt;
    rt_param params[MAX_PARAMS];
    int nparams;
    rt_tensor *grad;
} trainer;

typedef struct pieces {
    double fwd, loss, bwd, opt, zero, total;
} pieces;

static void trainer_init(trainer *t, rt_registry *reg, const model_cfg *m)
{
    memset(t, 0, sizeof *t);
    char opts[256];
    snprintf(opts, sizeof opts, "{\"vocab\":%d,\"context\":%d,\"layers\":%lld,\"heads\":%lld,\"width\":%lld,\"seed\":1}",
             VOCAB, CTX, (long long)m->L, (long long)m->H, (long long)m->D);
    if (rt_instance_create(reg, ctx, RT_KIND_STUDENT, "gpt", opts, &t->net)) die("student 'gpt'");
    if (rt_instance_create(reg, ctx, RT_KIND_LOSS, "ce", NULL, &t->loss)) die("loss 'ce'");
    rt_optim_cfg cfg = {.kind = RT_OPTIM_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    if (!(t->opt = rt_optim_new(ctx, &cfg))) die("adam");
    t->nparams = rt_instance_params(t->net, t->params, MAX_PARAMS);
    if (t->nparams > MAX_PARAMS) {
        fprintf(stderr, "bench_gpt: %d parameters, room for %d\n", t->nparams, MAX_PARAMS);
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

/* One step on x [N, T] ids, y [N, T] next ids, in a recipe's order. */
static void train_step(trainer *t, const rt_tensor *x, const rt_tensor *y, pieces *p)
{
    double t0 = bench_now();
    rt_tensor *out;
    if (rt_student_forward(t->net, ctx, x, 1, &out)) die("forward");
    double t1 = bench_now();
    int64_t gs[3] = {out->shape[0], out->shape[1], out->shape[2]};
    if (rt_tensor_ensure(ctx, &t->grad, RT_DTYPE_F32, 3, gs)) die("loss gradient");
    memset(t->grad->data, 0, sizeof(float) * (size_t)rt_numel(t->grad));
    rt_loss_in in = {.student = out, .target = y};
    double loss;
    if (rt_loss_forward(t->loss, ctx, &in, &loss)) die("loss forward");
    if (rt_loss_backward(t->loss, ctx, &in, 1.0f, t->grad)) die("loss backward");
    double t2 = bench_now();
    if (rt_student_backward(t->net, ctx, t->grad, NULL, 0, NULL)) die("backward");
    double t3 = bench_now();
    if (rt_optim_step(t->opt, ctx, t->params, t->nparams, 1e-3f)) die("adam step");
    double t4 = bench_now();
    rt_student_zero_grad(t->net);
    double t5 = bench_now();
    *p = (pieces){t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0};
}

/* ------------------------------------------------- the step's GEMMs alone */

/* One layer's weights, weight gradients and activations, sized as the
 * plugin's (contents garbage: only the time counts). */
typedef struct layer_bufs {
    float *wqkv, *wo, *wfc, *wp, *gqkv, *go, *gfc, *gp;
    float *h1, *qkv, *att, *a, *x1, *h2, *u, *y;
    float *d, *du, *dh, *da, *dqkv, *dP;
} layer_bufs;

typedef struct gemm_bufs {
    int64_t N, T, D, H, V, L;
    layer_bufs l[MAX_LAYERS];
    float *wte, *gwte, *hf, *logits, *dlogits, *dhf;
} gemm_bufs;

static float *fill(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)n);
    if (!p) {
        fprintf(stderr, "bench_gpt: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) p[i] = 0.01f * (float)((i * 7919) % 201 - 100);
    return p;
}

static void gemm_bufs_init(gemm_bufs *b, const model_cfg *m)
{
    int64_t N = BATCH, T = CTX, D = m->D, H = m->H, M = N * T, F = 4 * D;
    *b = (gemm_bufs){.N = N, .T = T, .D = D, .H = H, .V = VOCAB, .L = m->L};
    for (int64_t l = 0; l < m->L; l++) {
        layer_bufs *p = &b->l[l];
        *p = (layer_bufs){fill(3 * D * D), fill(D * D), fill(F * D), fill(D * F), fill(3 * D * D), fill(D * D),
                          fill(F * D), fill(D * F), fill(M * D), fill(M * 3 * D), fill(N * H * T * T), fill(M * D),
                          fill(M * D), fill(M * D), fill(M * F), fill(M * D), fill(M * D), fill(M * F), fill(M * D),
                          fill(M * D), fill(M * 3 * D), fill(T * T)};
    }
    b->wte = fill(VOCAB * D), b->gwte = fill(VOCAB * D), b->hf = fill(M * D);
    b->logits = fill(M * VOCAB), b->dlogits = fill(M * VOCAB), b->dhf = fill(M * D);
}

static void gemm_bufs_free(gemm_bufs *b)
{
    for (int64_t l = 0; l < b->L; l++) {
        layer_bufs *p = &b->l[l];
        float *fs[] = {p->wqkv, p->wo,  p->wfc, p->wp, p->gqkv, p->go, p->gfc, p->gp, p->h1, p->qkv, p->att,
                       p->a,    p->x1,  p->h2,  p->u,  p->y,    p->d,  p->du,  p->dh, p->da, p->dqkv, p->dP};
        for (size_t k = 0; k < sizeof fs / sizeof *fs; k++) free(fs[k]);
    }
    free(b->wte), free(b->gwte), free(b->hf), free(b->logits), free(b->dlogits), free(b->dhf);
}

/* The rt_gemm calls of the gpt plugin's forward and backward, in their
 * order (rt_nn.h linears, core/kernels/attention.c, rt_tied_logits). */
static void step_gemms(gemm_bufs *b)
{
    int64_t N = b->N, T = b->T, D = b->D, H = b->H, V = b->V, M = N * T, F = 4 * D, hs = D / H, C3 = 3 * D;
    float sc = 1.0f / sqrtf((float)hs);
    for (int64_t l = 0; l < b->L; l++) {
        layer_bufs *p = &b->l[l];
        rt_gemm(0, 1, M, C3, D, 1.0f, p->h1, D, p->wqkv, D, 0.0f, p->qkv, C3);
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) {
                const float *q = p->qkv + n * T * C3 + h * hs;
                float *P = p->att + (n * H + h) * T * T;
                rt_gemm(0, 1, T, T, hs, sc, q, C3, q + D, C3, 0.0f, P, T);
                rt_gemm(0, 0, T, hs, T, 1.0f, P, T, q + 2 * D, C3, 0.0f, p->a + n * T * D + h * hs, D);
            }
        rt_gemm(0, 1, M, D, D, 1.0f, p->a, D, p->wo, D, 0.0f, p->x1, D);
        rt_gemm(0, 1, M, F, D, 1.0f, p->h2, D, p->wfc, D, 0.0f, p->u, F);
        rt_gemm(0, 1, M, D, F, 1.0f, p->u, F, p->wp, F, 0.0f, p->y, D);
    }
    rt_gemm(0, 1, M, V, D, 1.0f, b->hf, D, b->wte, D, 0.0f, b->logits, V);
    rt_gemm(1, 0, V, D, M, 1.0f, b->dlogits, V, b->hf, D, 1.0f, b->gwte, D);
    rt_gemm(0, 0, M, D, V, 1.0f, b->dlogits, V, b->wte, D, 0.0f, b->dhf, D);
    for (int64_t l = b->L - 1; l >= 0; l--) {
        layer_bufs *p = &b->l[l];
        rt_gemm(1, 0, D, F, M, 1.0f, p->d, D, p->u, F, 1.0f, p->gp, F);
        rt_gemm(0, 0, M, F, D, 1.0f, p->d, D, p->wp, F, 0.0f, p->du, F);
        rt_gemm(1, 0, F, D, M, 1.0f, p->du, F, p->h2, D, 1.0f, p->gfc, D);
        rt_gemm(0, 0, M, D, F, 1.0f, p->du, F, p->wfc, D, 0.0f, p->dh, D);
        rt_gemm(1, 0, D, D, M, 1.0f, p->d, D, p->a, D, 1.0f, p->go, D);
        rt_gemm(0, 0, M, D, D, 1.0f, p->d, D, p->wo, D, 0.0f, p->da, D);
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) {
                const float *q = p->qkv + n * T * C3 + h * hs;
                float *dq = p->dqkv + n * T * C3 + h * hs;
                const float *P = p->att + (n * H + h) * T * T;
                const float *dO = p->da + n * T * D + h * hs;
                rt_gemm(0, 1, T, T, hs, 1.0f, dO, D, q + 2 * D, C3, 0.0f, p->dP, T);
                rt_gemm(1, 0, T, hs, T, 1.0f, P, T, dO, D, 0.0f, dq + 2 * D, C3);
                rt_gemm(0, 0, T, hs, T, sc, p->dP, T, q + D, C3, 0.0f, dq, C3);
                rt_gemm(1, 0, T, hs, T, sc, p->dP, T, q, C3, 0.0f, dq + D, C3);
            }
        rt_gemm(1, 0, C3, D, M, 1.0f, p->dqkv, C3, p->h1, D, 1.0f, p->gqkv, D);
        rt_gemm(0, 0, M, D, C3, 1.0f, p->dqkv, C3, p->wqkv, D, 0.0f, p->dh, D);
    }
}

/* Steps and the GEMM replay alternate, so both see the same machine load. */
static void measure(trainer *t, gemm_bufs *b, const rt_tensor *x, const rt_tensor *y, pieces *med, double *gemm)
{
    double v[6][MAX_STEPS], g[MAX_STEPS];
    pieces p;
    for (int i = -warmup_n; i < steps_n; i++) {
        train_step(t, x, y, &p);
        double t0 = bench_now();
        step_gemms(b);
        double t1 = bench_now();
        if (i < 0) continue;
        v[0][i] = p.fwd, v[1][i] = p.loss, v[2][i] = p.bwd, v[3][i] = p.opt, v[4][i] = p.zero;
        v[5][i] = p.total, g[i] = t1 - t0;
    }
    *med = (pieces){bench_median(v[0], steps_n), bench_median(v[1], steps_n), bench_median(v[2], steps_n),
                    bench_median(v[3], steps_n), bench_median(v[4], steps_n), bench_median(v[5], steps_n)};
    *gemm = bench_median(g, steps_n);
}

/* Fastest of 3 greedy generations of 63 tokens; tokens/s; out the tokens. */
static double gen_rate(rt_instance *s, int no_cache, int32_t *out, int *cached)
{
    int32_t prompt[1] = {'T'};
    rt_gen_opts o = {.max_tokens = CTX - 1, .temperature = 0, .top_k = 0, .top_p = 1, .seed = 1, .no_cache = no_cache};
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        rt_gen_stats st;
        double t0 = bench_now();
        if (rt_generate(s, ctx, prompt, 1, &o, out, &st)) die("generate");
        double dt = bench_now() - t0;
        best = dt < best ? dt : best;
        *cached = st.cached;
    }
    return (double)(CTX - 1) / best;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q")) steps_n = 3, warmup_n = 1;
        else {
            fprintf(stderr, "usage: bench_gpt [-q]\n");
            return 1;
        }
    }
    ctx = rt_ctx_new();
    rt_registry *reg = rt_registry_new();
    if (!ctx || !reg) {
        fprintf(stderr, "bench_gpt: out of memory\n");
        return 1;
    }
    int nfailed = 0;
    if (rt_registry_load_dir(reg, ctx, rt_builtin_plugin_dir(), 1, &nfailed) && nfailed == 0)
        die(rt_builtin_plugin_dir());
    if (nfailed) fprintf(stderr, "bench_gpt: warning: %d plugin file(s) failed: %s\n", nfailed, rt_ctx_message(ctx));

    /* Windows of CTX + 1 uniform bytes: x the first CTX, y the last CTX. */
    int64_t xs[2] = {BATCH, CTX};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_I32, 2, xs), *y = rt_tensor_new(ctx, RT_DTYPE_I32, 2, xs);
    if (!x || !y) die("synthetic data");
    rt_rng r;
    rt_rng_seed(&r, 1, 0);
    for (int64_t n = 0; n < BATCH; n++) {
        int32_t w[CTX + 1];
        for (int k = 0; k <= CTX; k++) w[k] = (int32_t)rt_rng_below(&r, VOCAB);
        memcpy(rt_i32(x) + n * CTX, w, sizeof(int32_t) * CTX);
        memcpy(rt_i32(y) + n * CTX, w + 1, sizeof(int32_t) * CTX);
    }

    double load = -1;
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf", &load) != 1) load = -1;
        fclose(la);
    }
    printf("bench_gpt: the tiny_lm.lua networks, ce, Adam, batch %d x %d tokens; OpenBLAS core %s, %ld CPUs online, "
           "load average %.2f at start; medians of %d steps after %d warm-up\n",
           BATCH, CTX, rt_blas_core(), sysconf(_SC_NPROCESSORS_ONLN), load, steps_n, warmup_n);
    printf("  %-7s %-7s | %8s %7s %7s %7s %7s %7s | %8s %6s | %9s\n", "model", "threads", "step ms", "fwd", "loss",
           "bwd", "adam", "zero", "GEMMs ms", "share", "tokens/s");
    const model_cfg models[2] = {{"teacher", 3, 4, 128}, {"student", 2, 4, 64}};
    const int threads[] = {1, 2};
    double tps[2][2] = {{0}}, share[2][2] = {{0}}, t_start = bench_now();
    int saved = rt_get_threads();
    for (int mi = 0; mi < 2; mi++) {
        gemm_bufs b;
        gemm_bufs_init(&b, &models[mi]);
        for (int ti = 0; ti < 2; ti++) {
            rt_set_threads(threads[ti]);
            trainer t;
            trainer_init(&t, reg, &models[mi]);
            pieces p;
            double g;
            measure(&t, &b, x, y, &p, &g);
            tps[mi][ti] = (double)(BATCH * CTX) / p.total;
            share[mi][ti] = g / p.total;
            printf("  %-7s %-7d | %8.2f %7.2f %7.2f %7.2f %7.2f %7.2f | %8.2f %5.0f%% | %9.0f\n", models[mi].name,
                   threads[ti], 1e3 * p.total, 1e3 * p.fwd, 1e3 * p.loss, 1e3 * p.bwd, 1e3 * p.opt, 1e3 * p.zero,
                   1e3 * g, 100 * share[mi][ti], tps[mi][ti]);
            trainer_free(&t);
        }
        gemm_bufs_free(&b);
    }

    /* Generation by the (untrained) teacher at 2 threads. */
    rt_set_threads(2);
    trainer t;
    trainer_init(&t, reg, &models[0]);
    int32_t with[CTX], without[CTX];
    int c1 = 0, c2 = 0;
    double g_cached = gen_rate(t.net, 0, with, &c1), g_full = gen_rate(t.net, 1, without, &c2);
    int same = !memcmp(with, without, sizeof(int32_t) * (CTX - 1));
    printf("  generation, teacher, 2 threads, greedy, %d tokens: cached %.0f tokens/s (cache used: %s), "
           "uncached %.0f tokens/s, x%.1f; same tokens: %s\n",
           CTX - 1, g_cached, c1 ? "yes" : "no", g_full, g_cached / g_full, same ? "yes" : "NO");
    trainer_free(&t);
    rt_set_threads(saved);

    printf("bench_gpt: training tokens/s at 1 / 2 threads: teacher %.0f / %.0f (GEMMs %.0f%% / %.0f%% of the step), "
           "student %.0f / %.0f (GEMMs %.0f%% / %.0f%%); teacher generation %.0f tokens/s cached, %.0f uncached; "
           "%.1f s\n",
           tps[0][0], tps[0][1], 100 * share[0][0], 100 * share[0][1], tps[1][0], tps[1][1], 100 * share[1][0],
           100 * share[1][1], g_cached, g_full, bench_now() - t_start);

    rt_tensor_release(x);
    rt_tensor_release(y);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return 0;
}
