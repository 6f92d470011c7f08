/*
 * test_abi2.c -- ABI 2.0's surfaces, through the fixtures of
 * tests/fixtures/fx_abi2.c and the built-in plugins: an i32-input student
 * checked against its input spec, features and taps, a buffer parameter
 * (i64, saved, not trained), a teacher that reads sample ids, a loss that
 * reads a feature and owns a parameter (gradient-checked), masked
 * [N, T, C] losses and the norm (a sharded batch sums to the whole), the
 * checked calls offered to plugins, tensor views.
 */
#include <unistd.h>

#include "retort.h"
#include "t.h"

static rt_ctx *ctx;
static rt_registry *reg;

static rt_instance *make(rt_kind kind, const char *name, const char *opts)
{
    rt_instance *i = NULL;
    if (rt_instance_create(reg, ctx, kind, name, opts, &i)) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    return i;
}

static rt_tensor *ids_tensor(int64_t N, int64_t T, const int32_t *v)
{
    int64_t s[2] = {N, T};
    return rt_tensor_from(ctx, RT_DTYPE_I32, 2, s, v);
}

static void test_i32_input_spec(void)
{
    rt_instance *s = make(RT_KIND_STUDENT, "fx_tok", "{\"vocab\":7}");
    CHECK(s != NULL);
    if (!s) return;
    rt_spec sp;
    CHECK(rt_instance_input_spec(s, &sp) == 1);
    CHECK(sp.dtype == RT_DTYPE_I32 && sp.ndim == 1 && sp.shape[0] == 0 && sp.vocab == 7);
    static const int32_t v[6] = {0, 1, 2, 3, 4, 6};
    rt_tensor *x = ids_tensor(2, 3, v), *out = NULL;
    CHECK(rt_student_forward(s, ctx, x, 0, &out) == RT_STATUS_OK);
    CHECK(out && out->ndim == 3 && out->shape[0] == 2 && out->shape[1] == 3 && out->shape[2] == 5);
    /* f32 input: refused with both dtypes named */
    int64_t fs[2] = {2, 3};
    rt_tensor *xf = rt_tensor_new(ctx, RT_DTYPE_F32, 2, fs);
    CHECK(rt_student_forward(s, ctx, xf, 0, &out) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "student 'fx_tok': input must be i32, got f32 [2, 3]");
    /* an id outside the vocabulary */
    static const int32_t bad[2] = {1, 7};
    rt_tensor *xb = ids_tensor(1, 2, bad);
    CHECK(rt_student_forward(s, ctx, xb, 0, &out) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "input id 7 at flat index 1 is outside [0, 7)");
    /* a 1-D input where [N, T] is asked */
    int64_t one = 3;
    rt_tensor *x1 = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &one);
    CHECK(rt_student_forward(s, ctx, x1, 0, &out) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "does not fit the student's i32 [N, any]");
    /* gradcheck builds token ids from the spec */
    rt_gradcheck_result res;
    CHECK(rt_gradcheck_student(s, ctx, 2, NULL, 0, 1, 0, &res) == RT_STATUS_OK);
    CHECK(res.checked > 0 && res.max_rel_err <= 1e-3);
    rt_tensor_release(x);
    rt_tensor_release(xf);
    rt_tensor_release(xb);
    rt_tensor_release(x1);
    rt_instance_release(s);
}

/* A tap on "embed" adds exactly its gradient to embed.weight's rows. */
static void test_features_and_taps(void)
{
    rt_instance *s = make(RT_KIND_STUDENT, "fx_tok", NULL);
    CHECK(s != NULL);
    if (!s) return;
    const char *names[4];
    CHECK(rt_instance_features(s, names, 4) == 2);
    CHECK(!strcmp(names[0], "embed") && !strcmp(names[1], "logits"));
    CHECK(rt_instance_record(s, ctx, "embed", 1) == RT_STATUS_OK);
    CHECK(rt_instance_record(s, ctx, "nope", 1) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "(it has: embed, logits)");
    static const int32_t v[4] = {2, 2, 5, 0};
    rt_tensor *x = ids_tensor(2, 2, v), *out = NULL;
    CHECK(rt_student_forward(s, ctx, x, 1, &out) == RT_STATUS_OK);
    rt_tensor *emb = rt_instance_feature(s, "embed");
    CHECK(emb && emb->ndim == 3 && emb->shape[2] == 3);
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 3, out->shape);
    rt_tensor *tg = rt_tensor_new(ctx, RT_DTYPE_F32, 3, emb->shape);
    for (int64_t k = 0; k < rt_numel(tg); k++) rt_f32(tg)[k] = (float)(k + 1);
    rt_student_zero_grad(s);
    rt_tap tap = {"embed", tg};
    CHECK(rt_student_backward(s, ctx, g, &tap, 1, NULL) == RT_STATUS_OK);
    int n = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    CHECK(p && n == 4 && !strcmp(p[0].name, "embed.weight"));
    /* row 2 got positions 0 and 1 of the tap, row 5 position 2, row 0 position 3 */
    const float *ge = rt_f32(p[0].grad);
    CHECK(ge[2 * 3 + 0] == 1 + 4 && ge[2 * 3 + 2] == 3 + 6);
    CHECK(ge[5 * 3 + 1] == 8 && ge[0 * 3 + 2] == 12 && ge[1 * 3 + 0] == 0);
    /* an unknown tap and a wrong-shaped one */
    rt_tap bad = {"layers.9", tg};
    CHECK(rt_student_backward(s, ctx, g, &bad, 1, NULL) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "no feature 'layers.9' to tap");
    free(p);
    rt_tensor_release(x);
    rt_tensor_release(g);
    rt_tensor_release(tg);
    rt_instance_release(s);
}

/* num_batches_tracked: i64, a buffer; the optimizer leaves it, a save and
 * a load carry it. */
static void test_buffer_parameter(void)
{
    rt_instance *s = make(RT_KIND_STUDENT, "fx_tok", NULL), *s2 = make(RT_KIND_STUDENT, "fx_tok", NULL);
    CHECK(s && s2);
    if (!s || !s2) return;
    static const int32_t v[2] = {1, 2};
    rt_tensor *x = ids_tensor(1, 2, v), *out = NULL;
    for (int k = 0; k < 3; k++) CHECK(rt_student_forward(s, ctx, x, 1, &out) == RT_STATUS_OK);
    CHECK(rt_student_forward(s, ctx, x, 0, &out) == RT_STATUS_OK); /* eval: not counted */
    int n = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    CHECK(p && n == 4);
    if (!p || n != 4) return;
    CHECK(!strcmp(p[3].name, "num_batches_tracked") && p[3].role == RT_ROLE_BUFFER && !p[3].grad);
    CHECK(p[3].value->dtype == RT_DTYPE_I64 && p[3].value->ndim == 0 && rt_i64(p[3].value)[0] == 3);
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 3, out->shape);
    for (int64_t k = 0; k < rt_numel(g); k++) rt_f32(g)[k] = 1;
    rt_student_zero_grad(s);
    CHECK(rt_student_backward(s, ctx, g, NULL, 0, NULL) == RT_STATUS_OK);
    rt_optim_cfg cfg = {.kind = RT_OPTIM_ADAM, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    rt_optim *o = rt_optim_new(ctx, &cfg);
    n = rt_instance_params(s, p, n);
    CHECK(o && rt_optim_step(o, ctx, p, n, 0.1f) == RT_STATUS_OK);
    CHECK(rt_i64(p[3].value)[0] == 3);
    CHECK(rt_optim_state_count(o) == 2 * 3); /* moments for the three trainable ones only */
    char path[256];
    snprintf(path, sizeof path, "/tmp/rt_abi2_%d.safetensors", (int)getpid());
    CHECK(rt_instance_save(s, ctx, path, 0, NULL, NULL) == RT_STATUS_OK);
    CHECK(rt_instance_load(s2, ctx, path) == RT_STATUS_OK);
    int n2 = 0;
    rt_param *q = rt_instance_params_all(s2, ctx, &n2);
    CHECK(q && n2 == 4 && rt_i64(q[3].value)[0] == 3);
    CHECK(q && rt_f32(q[0].value)[0] == rt_f32(p[0].value)[0]);
    remove(path);
    free(q);
    free(p);
    rt_optim_free(o);
    rt_tensor_release(x);
    rt_tensor_release(g);
    rt_instance_release(s);
    rt_instance_release(s2);
}

static void test_teacher_sample_ids(void)
{
    rt_instance *t = make(RT_KIND_TEACHER, "fx_lookup", "{\"classes\":3}");
    CHECK(t != NULL);
    if (!t) return;
    int64_t xs[2] = {2, 4}, n = 2;
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 2, xs);
    static const int64_t rows[2] = {41, 7};
    rt_tensor *ids = rt_tensor_from(ctx, RT_DTYPE_I64, 1, &n, rows);
    rt_signal sig;
    CHECK(rt_teacher_forward_ids(t, ctx, x, ids, &sig) == RT_STATUS_OK);
    CHECK(sig.logits && rt_f32(sig.logits)[0] == 410 && rt_f32(sig.logits)[5] == 72);
    CHECK(rt_teacher_forward(t, ctx, x, &sig) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "teacher 'fx_lookup': needs sample ids");
    int64_t three = 3;
    rt_tensor *ids3 = rt_tensor_new(ctx, RT_DTYPE_I64, 1, &three);
    CHECK(rt_teacher_forward_ids(t, ctx, x, ids3, &sig) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "sample ids [3] vs input [2, 4]");
    rt_tensor_release(x);
    rt_tensor_release(ids);
    rt_tensor_release(ids3);
    rt_instance_release(t);
}

static void fill(rt_tensor *t, uint64_t seed)
{
    rt_rng r;
    rt_rng_seed(&r, seed, 0);
    for (int64_t k = 0; k < rt_numel(t); k++) rt_f32(t)[k] = 2 * rt_rng_normal(&r);
}

/* fx_hint: reads feature "embed", owns a regressor sized at bind; the
 * gradient checker covers the feature and the parameter; masked positions
 * give nothing. */
static void test_feature_loss_with_parameter(void)
{
    rt_instance *l = make(RT_KIND_LOSS, "fx_hint", NULL);
    CHECK(l != NULL);
    if (!l) return;
    rt_feature_req req[2];
    CHECK(rt_loss_features(l, req, 2) == 1 && !strcmp(req[0].name, "embed") && req[0].from == RT_FROM_STUDENT);
    CHECK(rt_instance_param_count(l) == 0 && !rt_loss_bound(l));
    int64_t ls[3] = {2, 3, 4}, fs[3] = {2, 3, 5}, ms[2] = {2, 3};
    rt_tensor *s = rt_tensor_new(ctx, RT_DTYPE_F32, 3, ls), *t = rt_tensor_new(ctx, RT_DTYPE_F32, 3, ls);
    rt_tensor *f = rt_tensor_new(ctx, RT_DTYPE_F32, 3, fs), *m = rt_tensor_new(ctx, RT_DTYPE_I32, 2, ms);
    fill(s, 1);
    fill(t, 2);
    fill(f, 3);
    for (int k = 0; k < 6; k++) rt_i32(m)[k] = k != 4;
    rt_signal sig = {.logits = t};
    const rt_tensor *feats[1] = {f};
    rt_loss_in in = {.student = s, .teacher = &sig, .mask = m, .features = feats, .nfeatures = 1};
    rt_gradcheck_result res;
    CHECK(rt_gradcheck_loss_at(l, ctx, &in, 0, &res) == RT_STATUS_OK);
    CHECK(rt_loss_bound(l) && rt_instance_param_count(l) == 1);
    CHECK(res.max_rel_err <= 1e-3);
    int seen_feature = 0, seen_param = 0;
    for (int k = 0; k < res.ninputs; k++) {
        seen_feature |= !strcmp(res.inputs[k].name, "feature embed") && res.inputs[k].checked > 0;
        seen_param |= !strcmp(res.inputs[k].name, "regressor.weight") && res.inputs[k].checked > 0;
    }
    CHECK(seen_feature && seen_param);
    /* the masked position: no gradient into its feature row */
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 3, ls), *fg = rt_tensor_new(ctx, RT_DTYPE_F32, 3, fs);
    rt_tensor *fgs[1] = {fg};
    in.feature_grads = fgs;
    CHECK(rt_loss_backward(l, ctx, &in, 1.0f, g) == RT_STATUS_OK);
    for (int j = 0; j < 5; j++) CHECK(rt_f32(fg)[4 * 5 + j] == 0);
    CHECK(rt_f32(fg)[0] != 0);
    /* no feature given: refused, naming the count */
    rt_loss_in none = {.student = s, .teacher = &sig};
    double v;
    CHECK(rt_loss_forward(l, ctx, &none, &v) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "declares 1 feature and was given 0");
    rt_tensor *ts[] = {s, t, f, m, g, fg};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) rt_tensor_release(ts[k]);
    rt_instance_release(l);
}

/* Every built-in loss on [N, T, C] logits with a mask: the value is the
 * per-token [R, C] value over the real tokens only, the masked tokens get
 * no gradient, the backward matches finite differences, and two shards
 * with the global norm sum to the whole. */
static void test_masked_sequence_losses(void)
{
    static const char *const losses[] = {"ce", "kd", "dkd", "jsd", "tvd", "soft_ce", "skew_kl", "reverse_kl",
                                         "mse_logits"};
    int64_t N = 2, T = 3, C = 4, ls[3] = {2, 3, 4}, ps[2] = {2, 3};
    rt_tensor *s = rt_tensor_new(ctx, RT_DTYPE_F32, 3, ls), *t = rt_tensor_new(ctx, RT_DTYPE_F32, 3, ls);
    rt_tensor *y = rt_tensor_new(ctx, RT_DTYPE_I32, 2, ps), *m = rt_tensor_new(ctx, RT_DTYPE_I32, 2, ps);
    fill(s, 4);
    fill(t, 5);
    static const int32_t mask[6] = {1, 1, 0, 1, 0, 1};
    for (int k = 0; k < 6; k++) {
        rt_i32(y)[k] = k % 4;
        rt_i32(m)[k] = mask[k];
    }
    rt_i32(y)[2] = -100; /* a padded label (PyTorch's ignore_index): masked, so allowed */
    /* the real tokens as a flat [4, C] batch */
    int64_t rs[2] = {4, C}, rn = 4;
    rt_tensor *s4 = rt_tensor_new(ctx, RT_DTYPE_F32, 2, rs), *t4 = rt_tensor_new(ctx, RT_DTYPE_F32, 2, rs);
    rt_tensor *y4 = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &rn);
    for (int k = 0, r = 0; k < 6; k++)
        if (mask[k]) {
            memcpy(rt_f32(s4) + r * C, rt_f32(s) + k * C, sizeof(float) * (size_t)C);
            memcpy(rt_f32(t4) + r * C, rt_f32(t) + k * C, sizeof(float) * (size_t)C);
            rt_i32(y4)[r++] = rt_i32(y)[k];
        }
    for (size_t i = 0; i < sizeof losses / sizeof *losses; i++) {
        rt_instance *l = make(RT_KIND_LOSS, losses[i], NULL);
        CHECK(l != NULL);
        if (!l) continue;
        rt_signal sig = {.logits = t}, sig4 = {.logits = t4};
        rt_loss_in in = {.student = s, .teacher = &sig, .target = y, .mask = m};
        rt_loss_in in4 = {.student = s4, .teacher = &sig4, .target = y4};
        double v = 0, v4 = 1;
        CHECK(rt_loss_forward(l, ctx, &in, &v) == RT_STATUS_OK);
        CHECK(rt_loss_forward(l, ctx, &in4, &v4) == RT_STATUS_OK);
        CHECK_REL(v, v4);
        rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 3, ls);
        CHECK(rt_loss_backward(l, ctx, &in, 1.0f, g) == RT_STATUS_OK);
        for (int64_t c = 0; c < C; c++) CHECK(rt_f32(g)[2 * C + c] == 0 && rt_f32(g)[4 * C + c] == 0);
        rt_gradcheck_result res;
        CHECK(rt_gradcheck_loss_at(l, ctx, &in, 0, &res) == RT_STATUS_OK);
        CHECK(res.max_rel_err <= 1e-3);
        if (res.max_rel_err > 1e-3) fprintf(stderr, "  %s: %s\n", losses[i], res.worst);
        /* shards: sample 0 and sample 1, each with the global norm (4) */
        double half[2];
        for (int k = 0; k < 2; k++) {
            rt_tensor *sv = rt_tensor_narrow(ctx, s, 0, k, 1), *tv = rt_tensor_narrow(ctx, t, 0, k, 1);
            rt_tensor *yv = rt_tensor_narrow(ctx, y, 0, k, 1), *mv = rt_tensor_narrow(ctx, m, 0, k, 1);
            rt_signal sv_sig = {.logits = tv};
            rt_loss_in part = {.student = sv, .teacher = &sv_sig, .target = yv, .mask = mv, .norm = 4};
            CHECK(rt_loss_forward(l, ctx, &part, &half[k]) == RT_STATUS_OK);
            rt_tensor_release(sv);
            rt_tensor_release(tv);
            rt_tensor_release(yv);
            rt_tensor_release(mv);
        }
        CHECK_REL(half[0] + half[1], v);
        (void)N;
        (void)T;
        rt_tensor_release(g);
        rt_instance_release(l);
    }
    rt_tensor *ts[] = {s, t, y, m, s4, t4, y4};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) rt_tensor_release(ts[k]);
}

/* For [N, C] without a mask the ABI 2.0 host computes norm = N, and the
 * losses' arithmetic is ABI 1's: an explicit norm = N gives the same bits
 * as leaving it 0; a mask of all ones too. */
static void test_unmasked_norm_is_batch(void)
{
    int64_t ls[2] = {5, 7}, n = 5;
    rt_tensor *s = rt_tensor_new(ctx, RT_DTYPE_F32, 2, ls), *t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, ls);
    rt_tensor *m = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &n);
    fill(s, 6);
    fill(t, 7);
    for (int k = 0; k < 5; k++) rt_i32(m)[k] = 1;
    rt_instance *l = make(RT_KIND_LOSS, "kd", NULL);
    CHECK(l != NULL);
    if (!l) return;
    rt_signal sig = {.logits = t};
    rt_loss_in a = {.student = s, .teacher = &sig}, b = a, c = a;
    b.norm = 5;
    c.mask = m;
    double va = 0, vb = 1, vc = 2;
    CHECK(!rt_loss_forward(l, ctx, &a, &va) && !rt_loss_forward(l, ctx, &b, &vb) && !rt_loss_forward(l, ctx, &c, &vc));
    CHECK(va == vb && va == vc);
    rt_tensor *ga = rt_tensor_new(ctx, RT_DTYPE_F32, 2, ls), *gc = rt_tensor_new(ctx, RT_DTYPE_F32, 2, ls);
    CHECK(!rt_loss_backward(l, ctx, &a, 0.7f, ga) && !rt_loss_backward(l, ctx, &c, 0.7f, gc));
    CHECK(!memcmp(ga->data, gc->data, rt_tensor_nbytes(ga)));
    /* a norm below this batch's own count cannot be a global one */
    b.norm = 4;
    CHECK(rt_loss_forward(l, ctx, &b, &vb) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "norm 4 is less than the 5 real positions of this batch");
    /* a mask value other than 0 or 1 */
    rt_i32(m)[3] = 2;
    CHECK(rt_loss_forward(l, ctx, &c, &vc) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "mask value 2 at position 3 is not 0 or 1");
    rt_tensor *ts[] = {s, t, m, ga, gc};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) rt_tensor_release(ts[k]);
    rt_instance_release(l);
}

/* The model teacher runs its student through the host's checked calls: a
 * wrong input is the student's spec error, prefixed by both. */
static void test_checked_calls_for_plugins(void)
{
    rt_instance *t = make(RT_KIND_TEACHER, "model", "{\"arch\":\"mlp\",\"options\":{\"sizes\":[4,3]},\"random_init\":true}");
    CHECK(t != NULL);
    if (!t) return;
    int64_t xs[2] = {2, 5};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 2, xs);
    rt_signal sig;
    CHECK(rt_teacher_forward(t, ctx, x, &sig) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "teacher 'model': student 'mlp': input [2, 5] has 5 values per sample");
    int n = 0;
    rt_param *p = rt_instance_params_all(t, ctx, &n);
    CHECK(p && n == 2 && p[0].role == RT_ROLE_FROZEN && !p[0].grad);
    const char *names[4];
    CHECK(rt_instance_features(t, names, 4) == 1 && !strcmp(names[0], "logits"));
    free(p);
    rt_tensor_release(x);
    rt_instance_release(t);
}

/* Views through the plugin table share storage. */
static void test_views_for_plugins(void)
{
    const rt_api *api = rt_host_api();
    CHECK(api->abi_major == 2 && api->size == sizeof(rt_api));
    int64_t s[2] = {3, 4}, r[1] = {12};
    rt_tensor *t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s);
    rt_tensor *row = api->tensor_narrow(ctx, t, 0, 1, 1), *flat = api->tensor_reshape(ctx, t, 1, r);
    CHECK(row && flat);
    if (row && flat) {
        rt_f32(row)[2] = 5;
        CHECK(rt_f32(flat)[6] == 5);
    }
    CHECK(api->tensor_narrow(ctx, t, 0, 2, 5) == NULL);
    /* optional capabilities by name */
    rt_instance *st = make(RT_KIND_STUDENT, "fx_tok", NULL), *m = make(RT_KIND_STUDENT, "mlp", NULL);
    const struct {
        uint32_t size;
        const char *greeting;
    } *hello = st ? api->instance_extension(st, "fx.hello") : NULL;
    CHECK(hello && hello->size >= sizeof *hello && !strcmp(hello->greeting, "hello from fx_tok"));
    CHECK(st && rt_instance_extension(st, "fx.other") == NULL);
    CHECK(m && rt_instance_extension(m, "fx.hello") == NULL); /* no extension function at all */
    rt_instance_release(st);
    rt_instance_release(m);
    rt_tensor_release(row);
    rt_tensor_release(flat);
    rt_tensor_release(t);
}

int main(void)
{
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    char dir[600], fx[600];
    if (!ctx || !reg || rt_registry_load_dir(reg, ctx, t_build_path(dir, sizeof dir, "lib/retort/plugins"), 0, NULL) ||
        rt_registry_load(reg, ctx, t_build_path(fx, sizeof fx, "tests/fixtures/fx_abi2.so"))) {
        fprintf(stderr, "setup: %s\n", ctx ? rt_ctx_message(ctx) : "no context");
        return 1;
    }
    RUN(test_i32_input_spec);
    RUN(test_features_and_taps);
    RUN(test_buffer_parameter);
    RUN(test_teacher_sample_ids);
    RUN(test_feature_loss_with_parameter);
    RUN(test_masked_sequence_losses);
    RUN(test_unmasked_norm_is_batch);
    RUN(test_checked_calls_for_plugins);
    RUN(test_views_for_plugins);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_abi2");
}
