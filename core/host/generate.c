/*
 * generate.c -- autoregressive generation (rt_generate.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt_generate.h"
#include "rt_lm.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sorts ids by probability, largest first (ties: smaller id first). */
static const float *sort_p;
static int by_p(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_p[i] != sort_p[j]) return sort_p[i] > sort_p[j] ? -1 : 1;
    return (i > j) - (i < j);
}

int32_t rt_gen_sample(const float *logits, int64_t V, float temperature, int64_t top_k, float top_p, rt_rng *r,
                      float *work)
{
    if (temperature <= 0 || !(top_p < 1.0f)) return rt_lm_sample(logits, V, temperature, top_k, r, work);
    /* top-k and temperature first, as rt_lm_sample: probabilities p of the
     * kept ids (0 elsewhere). */
    float *p = work;
    int32_t *ids = (int32_t *)(work + V);
    float mx = -INFINITY;
    for (int64_t v = 0; v < V; v++)
        if (logits[v] > mx) mx = logits[v];
    if (!isfinite(mx)) return rt_lm_sample(logits, V, 0, 0, NULL, work);
    float kth = -INFINITY;
    if (top_k > 0 && top_k < V) {
        float *tmp = work + 2 * V;
        memcpy(tmp, logits, sizeof(float) * (size_t)V);
        /* k-th largest by partial selection (V is small: a simple pass per k) */
        for (int64_t k = 0; k < top_k; k++) {
            int64_t best = -1;
            for (int64_t v = 0; v < V; v++)
                if (!isnan(tmp[v]) && (best < 0 || tmp[v] > tmp[best])) best = v;
            if (best < 0) break;
            kth = tmp[best];
            tmp[best] = NAN;
        }
    }
    double s = 0;
    for (int64_t v = 0; v < V; v++) {
        p[v] = (isnan(logits[v]) || logits[v] < kth) ? 0.0f : expf((logits[v] - mx) / temperature);
        s += p[v];
        ids[v] = (int32_t)v;
    }
    for (int64_t v = 0; v < V; v++) p[v] = (float)(p[v] / s);
    sort_p = p;
    qsort(ids, (size_t)V, sizeof *ids, by_p);
    /* the nucleus: the first ids whose mass reaches top_p */
    double c = 0;
    int64_t n = 0;
    while (n < V && p[ids[n]] > 0) {
        c += p[ids[n++]];
        if (c >= top_p) break;
    }
    double u = (double)rt_rng_uniform(r) * c, a = 0;
    for (int64_t k = 0; k < n; k++) {
        a += p[ids[k]];
        if (u < a) return ids[k];
    }
    return ids[n ? n - 1 : 0];
}

/* Logits [V] of the position after seq[0..len) by a full forward over its
 * last min(len, T) tokens. */
static rt_status full_next(rt_instance *s, rt_ctx *ctx, const int32_t *seq, int64_t len, int64_t maxT, int64_t V,
                           float *logits)
{
    int64_t T = len < maxT ? len : maxT, shape[2] = {1, T};
    rt_tensor *x = rt_tensor_from(ctx, RT_DTYPE_I32, 2, shape, seq + len - T), *out = NULL;
    if (!x) return rt_ctx_status(ctx);
    rt_status st = rt_student_forward(s, ctx, x, 0, &out);
    if (!st && (out->ndim != 3 || out->shape[2] != V || !rt_is_contiguous(out)))
        st = rt_error(ctx, RT_STATUS_ERR_SHAPE, "generate: student '%s' gives %dD outputs; a language model gives [N, T, V]",
                      rt_instance_desc(s)->name, out->ndim);
    if (!st) memcpy(logits, rt_f32(out) + (T - 1) * V, sizeof(float) * (size_t)V);
    rt_tensor_release(x);
    return st;
}

rt_status rt_generate(rt_instance *s, rt_ctx *ctx, const int32_t *prompt, int64_t np, const rt_gen_opts *o,
                      int32_t *out, rt_gen_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    double t0 = now();
    if (rt_instance_desc(s)->kind != RT_KIND_STUDENT)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "generate: needs a student (a language model)");
    if (np < 1) return rt_error(ctx, RT_STATUS_ERR_ARG, "generate: the prompt is empty (give at least one token)");
    if (o->max_tokens < 0 || o->max_tokens > (1 << 24))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "generate: max_tokens %lld is outside [0, 16777216]",
                        (long long)o->max_tokens);
    if (!(o->top_p > 0 && o->top_p <= 1))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "generate: top_p %g is outside (0, 1]", (double)o->top_p);
    if (!isfinite(o->temperature)) return rt_error(ctx, RT_STATUS_ERR_ARG, "generate: temperature is not finite");
    rt_spec sp;
    rt_instance_input_spec(s, &sp);
    const rt_lm_step_ext *ext = rt_instance_extension(s, RT_LM_STEP_EXT);
    if (ext && ext->size < sizeof *ext) ext = NULL;
    int64_t V = sp.vocab, maxT = ext ? ext->context(rt_instance_self(s)) : 0;
    if (sp.dtype != RT_DTYPE_I32 || V < 1)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "generate: student '%s' does not take token ids (its input spec is not i32 with a vocabulary)",
                        rt_instance_desc(s)->name);
    if (!maxT) maxT = 1 << 20; /* no extension: the student's own check bounds T */
    for (int64_t i = 0; i < np; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "generate: prompt token %lld is %d, outside the vocabulary [0, %lld)",
                            (long long)i, prompt[i], (long long)V);
    int64_t total = np + o->max_tokens;
    int32_t *seq = malloc(sizeof *seq * (size_t)total);
    float *logits = malloc(sizeof(float) * (size_t)V * 4);
    if (!seq || !logits) {
        free(seq);
        free(logits);
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "generate: out of memory");
    }
    float *work = logits + V;
    memcpy(seq, prompt, sizeof *seq * (size_t)np);
    rt_rng r;
    rt_rng_seed(&r, o->seed, RT_GEN_STREAM);
    int cached = ext && !o->no_cache;
    void *self = rt_instance_self(s);
    rt_status st = RT_STATUS_OK;
    int64_t len = np, pos = 0; /* cached: positions 0..pos-1 are in the cache, for seq[base..] */
    int64_t base = 0;
    if (cached) st = ext->reset(self, ctx, 1);
    while (!st && len < total) {
        if (cached) {
            if (len - base > maxT) { /* the window moved: rebuild the cache from its last maxT tokens */
                base = len - maxT;
                pos = 0;
            }
            while (!st && base + pos < len) {
                st = ext->step(self, ctx, &seq[base + pos], pos, logits);
                pos++;
            }
        } else {
            st = full_next(s, ctx, seq, len, maxT, V, logits);
        }
        if (st) break;
        seq[len++] = rt_gen_sample(logits, V, o->temperature, o->top_k, o->top_p, &r, work);
    }
    if (!st) memcpy(out, seq + np, sizeof *out * (size_t)o->max_tokens);
    stats->generated = st ? 0 : o->max_tokens;
    stats->cached = cached;
    stats->seconds = now() - t0;
    free(seq);
    free(logits);
    return st ? rt_error_prefix(ctx, "generate") : RT_STATUS_OK;
}
