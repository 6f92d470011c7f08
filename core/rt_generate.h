/*
 * rt_generate.h -- text generation from a language-model student (issue
 * 11): autoregressive sampling with temperature, top-k and top-p, through
 * the student's key/value-cache step (rt_lm_step_ext) when it has one, or
 * full forwards over the last `context` tokens when it has not (or when
 * asked: the uncached path is the reference the cached one must equal).
 */
#ifndef RT_GENERATE_H
#define RT_GENERATE_H

#include "retort.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rt_gen_opts {
    int64_t max_tokens; /* tokens to generate (>= 0) */
    float temperature;  /* <= 0: greedy */
    int64_t top_k;      /* <= 0: all */
    float top_p;        /* (0, 1]; 1: all */
    uint64_t seed;      /* the sampler's stream: rt_rng_seed(seed, RT_GEN_STREAM) */
    int no_cache;       /* 1: full forwards even when the student can step */
} rt_gen_opts;

#define RT_GEN_STREAM 0x67656eu /* "gen" */

typedef struct rt_gen_stats {
    int64_t generated; /* tokens written to out */
    int cached;        /* 1 when the key/value cache was used */
    double seconds;    /* wall time of the generation (prompt included) */
} rt_gen_stats;

/* out[0..max_tokens) = tokens following prompt[0..np) (np >= 1), drawn
 * from student s ([N=1, T] i32 in, [1, T, V] out).  Deterministic for a
 * given seed; the cached and uncached paths give the same tokens (to the
 * float rounding of their logits).  Past the context, the model sees the
 * last `context` tokens (the cache is rebuilt from them at each token).
 * Errors: prompt ids outside the vocabulary, an empty prompt, options out
 * of range, a student that is not a language model ([1, T, V] output). */
rt_status rt_generate(rt_instance *s, rt_ctx *ctx, const int32_t *prompt, int64_t np, const rt_gen_opts *o,
                      int32_t *out, rt_gen_stats *stats);

/* The next token from logits [V]: temperature, then top-k, then top-p
 * (the smallest set of most probable ids whose probability reaches
 * top_p), one uniform draw from r.  temperature <= 0: the argmax (r
 * unused).  work: 3V floats. */
int32_t rt_gen_sample(const float *logits, int64_t V, float temperature, int64_t top_k, float top_p, rt_rng *r,
                      float *work);

#ifdef __cplusplus
}
#endif
#endif /* RT_GENERATE_H */
