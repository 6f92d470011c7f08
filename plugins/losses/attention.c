/*
 * attention -- attention transfer (Zagoruyko and Komodakis, "Paying More
 * Attention to Attention", ICLR 2017), activation-based, p = 2, normalised:
 *
 *   Q(f)_j = mean over channels c of f_{c,j}^2        (j: spatial position)
 *   q(f)   = Q(f) / max(|Q(f)|_2, 1e-12)
 *   value  = sum over real samples n of  mean_j (q(s_n)_j - q(t_n)_j)^2  / norm
 *
 * exactly the authors' code (at(x) = F.normalize(x.pow(2).mean(1).view(N,
 * -1)); at_loss = (at(x) - at(y)).pow(2).mean()).  Their training uses it
 * with a weight beta/2 = 500 per pair of layers: put that in the term's
 * weight.  Features [N, C, H, W] (or [N, C, L]); the channel counts may
 * differ, the spatial sizes must agree.  An [N, D] feature is one channel
 * of D positions.  Gradients flow into the student feature; the loss has no
 * parameters and sends nothing into the logits.
 */
#include "feature_kit.h"

typedef struct at {
    fk_base b;
} at;

static const rt_option options[] = {
    FK_OPT_FEATURES("\"features.6\"", "\"features.6\""),
    RTK_OPT_END,
};
static const rtk_field fields[] = {FK_FIELDS(at)};

/* q [P] = the normalised attention map of f [C, P]; returns |Q|.  Q is
 * summed channel by channel over contiguous rows (8 lanes of positions). */
static double amap(const float *f, int64_t C, int64_t P, double *q)
{
    for (int64_t j = 0; j < P; j++) q[j] = 0;
    for (int64_t c = 0; c < C; c++) {
        const float *row = f + c * P;
        int64_t j = 0;
        for (; j + FK_LANES <= P; j += FK_LANES)
            for (int l = 0; l < FK_LANES; l++) q[j + l] += (double)row[j + l] * row[j + l];
        for (; j < P; j++) q[j] += (double)row[j] * row[j];
    }
    double nn = 0;
    for (int64_t j = 0; j < P; j++) {
        q[j] /= (double)C;
        nn += q[j] * q[j];
    }
    double n = fmax(sqrt(nn), 1e-12);
    for (int64_t j = 0; j < P; j++) q[j] /= n;
    return sqrt(nn);
}

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    (void)g;
    at *a = self;
    const int32_t *mask = NULL;
    fk_view s, t;
    if (fk_check(&a->b, ctx, in, &mask) || fk_same_positions(&a->b, ctx, in, &s, &t, 0)) return RT_STATUS_ERR_SHAPE;
    int64_t P = s.P;
    double *qs = api->scratch(ctx, sizeof(double) * (size_t)P * 3), *qt = qs ? qs + P : NULL, *dq = qs ? qs + 2 * P : NULL;
    if (!qs) return RT_STATUS_ERR_NOMEM;
    float *gs = value ? NULL : rt_f32(in->feature_grads[0]);
    double total = 0, k = in->norm ? (double)scale / in->norm : 0;
    for (int64_t n = 0; n < s.N; n++) {
        if (mask && !mask[n]) continue;
        const float *sn = s.x + n * s.C * P;
        double Qs = amap(sn, s.C, P, qs);
        amap(t.x + n * t.C * P, t.C, P, qt);
        double e = 0, qdq = 0;
        for (int64_t j = 0; j < P; j++) {
            double d = qs[j] - qt[j];
            e += d * d;
            dq[j] = 2 * d / (double)P;
            qdq += qs[j] * dq[j];
        }
        total += e / (double)P;
        if (!gs) continue;
        /* q = Q / |Q|: dQ = (dq - q (q . dq)) / |Q| (zero below the clamp,
         * where q = Q / 1e-12 is linear: dQ = dq / 1e-12 -- only for an
         * all-zero feature, whose Q has no gradient anyway) */
        if (!(Qs > 1e-12)) continue;
        for (int64_t j = 0; j < P; j++) {
            double dQ = (dq[j] - qs[j] * qdq) / Qs * k;
            for (int64_t c = 0; c < s.C; c++) gs[n * s.C * P + c * P + j] += (float)(dQ * 2 * sn[c * P + j] / (double)s.C);
        }
    }
    if (value) *value = rtk_value(in, total);
    return RT_STATUS_OK;
}

RTK_LOSS_DESC(at, "attention", "1.0.0", "attention transfer (Zagoruyko & Komodakis 2017): normalised p=2 maps, squared distance",
              0, rtk_destroy, .features = fk_features)
RT_PLUGIN_LIST(&rtk_desc)
