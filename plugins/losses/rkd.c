/*
 * rkd -- relational knowledge distillation (Park, Kim, Lu and Cho,
 * "Relational Knowledge Distillation", CVPR 2019): the student's batch
 * should have the teacher's geometry, distances and angles between
 * samples, whatever the two features' widths.  With s_i, t_i the samples'
 * features flattened (any widths), over the N samples of the batch:
 *
 *   distance:  d_ij = |s_i - s_j| / mu,  mu = mean of the positive |s_i - s_j|
 *              (the same for t);  L_D = mean over the N^2 pairs of
 *              huber(d^s_ij - d^t_ij)
 *   angle:     e_ij = (s_j - s_i) / |s_j - s_i|  (0 for j = i);
 *              a_ijk = e_ij . e_ik;  L_A = mean over the N^3 triples of
 *              huber(a^s_ijk - a^t_ijk)
 *   value = distance_weight L_D + angle_weight L_A
 *
 * huber is PyTorch's smooth_l1 (beta 1).  Defaults: the paper's weights 25
 * and 50.  As the authors' code: the teacher's mean is a constant, the
 * student's is differentiated through.  A relation loss reads the whole
 * batch: with one process its value is the paper's mean; it is reported as
 * that mean times N / norm, so a sharded run gets the mean of the shards'
 * relations.  Masks are refused (every sample takes part in every pair).
 * Gradients flow into the student feature; nothing into the logits.  The
 * angle term costs N^3 D: use it on embeddings (the penultimate layer, the
 * default "classifier.1" of the default cnn), not on large feature maps.
 */
#include "feature_kit.h"

typedef struct rkd {
    fk_base b;
    double wd, wa;
} rkd;

static const rt_option options[] = {
    FK_OPT_FEATURES("\"classifier.1\"", "\"classifier.1\""),
    {"distance_weight", RT_OPT_NUMBER, "25", 0, 1e6, NULL, "weight of the distance term"},
    {"angle_weight", RT_OPT_NUMBER, "50", 0, 1e6, NULL, "weight of the angle term"},
    RTK_OPT_END,
};
static const rtk_field fields[] = {FK_FIELDS(rkd), RTK_F64(rkd, wd), RTK_F64(rkd, wa)};

static double huber(double x) { return fabs(x) < 1 ? 0.5 * x * x : fabs(x) - 0.5; }
static double huber_d(double x) { return fabs(x) < 1 ? x : (x > 0 ? 1 : -1); }

/* d [N, N] = pairwise distances of x [N, D] divided by their positive mean;
 * returns that mean (0 when every distance is 0). */
static double distances(const float *x, int64_t N, int64_t D, double *d)
{
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; j != i && k < D; k++) {
                double u = (double)x[i * D + k] - x[j * D + k];
                s += u * u;
            }
            d[i * N + j] = sqrt(s);
            if (d[i * N + j] > 0) sum += d[i * N + j], cnt++;
        }
    double mu = cnt ? sum / (double)cnt : 0;
    for (int64_t k = 0; k < N * N && mu > 0; k++) d[k] /= mu;
    return mu;
}

/* E [N, D] (float) = the unit vectors from x_i to every x_j (0 for j = i),
 * len [N] their lengths before normalising. */
static void directions(const float *x, int64_t N, int64_t D, int64_t i, float *E, double *len)
{
    for (int64_t j = 0; j < N; j++) {
        double s = 0;
        for (int64_t k = 0; k < D; k++) {
            double u = (double)x[j * D + k] - x[i * D + k];
            s += u * u;
        }
        len[j] = sqrt(s);
        double inv = 1 / fmax(len[j], 1e-12);
        for (int64_t k = 0; k < D; k++) E[j * D + k] = (float)(((double)x[j * D + k] - x[i * D + k]) * inv);
    }
}

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    (void)g;
    rkd *r = self;
    const int32_t *mask = NULL;
    if (fk_check(&r->b, ctx, in, &mask)) return RT_STATUS_ERR_SHAPE;
    const rt_tensor *sf = in->features[0], *tf = in->features[1];
    int64_t N = sf->shape[0], Ds = rt_row_size(sf), Dt = rt_row_size(tf);
    for (int64_t n = 0; mask && n < N; n++)
        if (!mask[n])
            return api->error(ctx, RT_STATUS_ERR_ARG, "sample %lld is masked: a relation loss needs every sample of the "
                              "batch (give no mask)", (long long)n);
    const float *s = rt_f32(sf), *t = rt_f32(tf);
    float *gs = value ? NULL : rt_f32(in->feature_grads[0]);
    int64_t D = Ds > Dt ? Ds : Dt;
    double *ds = api->scratch(ctx, sizeof(double) * (size_t)(3 * N * N + 2 * N));
    float *E = api->scratch(ctx, sizeof(float) * (size_t)(3 * N * D + 3 * N * N));
    if (!ds || !E) return RT_STATUS_ERR_NOMEM;
    double *dt = ds + N * N, *G = dt + N * N, *ls = G + N * N, *lt = ls + N;
    float *Et = E + N * D, *dE = Et + N * D, *As = dE + N * D, *At = As + N * N, *Gf = At + N * N;
    double N2 = (double)N * N, N3 = N2 * N, k = (in->norm ? (double)scale / in->norm : 0) * (double)N;
    double LD = 0, LA = 0;

    /* distance */
    double mus = distances(s, N, Ds, ds);
    distances(t, N, Dt, dt);
    double gd = 0; /* sum g_ij d_ij / mu, for the mean's share */
    int64_t M = 0;
    for (int64_t q = 0; q < N * N; q++) {
        double x = ds[q] - dt[q];
        LD += huber(x);
        G[q] = r->wd * huber_d(x) / N2;
        gd += G[q] * ds[q];
        M += ds[q] > 0;
    }
    LD /= N2;
    if (gs && r->wd > 0 && mus > 0)
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                double dij = ds[i * N + j] * mus; /* the raw distance */
                if (!(dij > 0)) continue;
                /* dL/d|s_i - s_j| = (G_ij - sum_kl G_kl d_kl / M) / mu */
                double c = (G[i * N + j] - gd / (double)M) / mus * k / dij;
                for (int64_t q = 0; q < Ds; q++) {
                    float u = (float)(c * ((double)s[i * Ds + q] - s[j * Ds + q]));
                    gs[i * Ds + q] += u;
                    gs[j * Ds + q] -= u;
                }
            }

    /* angle: per vertex i, A = E E^T (N x N) by gemm */
    for (int64_t i = 0; i < N && (r->wa > 0 || value); i++) {
        directions(s, N, Ds, i, E, ls);
        directions(t, N, Dt, i, Et, lt);
        api->gemm(0, 1, N, N, Ds, 1.0f, E, Ds, E, Ds, 0.0f, As, N);
        api->gemm(0, 1, N, N, Dt, 1.0f, Et, Dt, Et, Dt, 0.0f, At, N);
        for (int64_t q = 0; q < N * N; q++) {
            double x = (double)As[q] - At[q];
            LA += huber(x);
            Gf[q] = (float)(r->wa * huber_d(x) / N3);
        }
        if (!gs) continue;
        /* dE = (G + G^T) E */
        for (int64_t a = 0; a < N; a++)
            for (int64_t b = 0; b < a; b++) {
                float v = Gf[a * N + b] + Gf[b * N + a];
                Gf[a * N + b] = Gf[b * N + a] = v;
            }
        for (int64_t a = 0; a < N; a++) Gf[a * N + a] *= 2;
        api->gemm(0, 0, N, Ds, N, 1.0f, Gf, N, E, Ds, 0.0f, dE, Ds);
        for (int64_t j = 0; j < N; j++) {
            if (j == i || !(ls[j] > 1e-12)) continue;
            const float *e = E + j * Ds, *de = dE + j * Ds;
            double ed = 0;
            for (int64_t q = 0; q < Ds; q++) ed += (double)e[q] * de[q];
            for (int64_t q = 0; q < Ds; q++) {
                float u = (float)(((double)de[q] - e[q] * ed) / ls[j] * k);
                gs[j * Ds + q] += u; /* e_ij points from s_i to s_j */
                gs[i * Ds + q] -= u;
            }
        }
    }
    LA /= N3;
    if (value) *value = in->norm ? (r->wd * LD + r->wa * LA) * (double)N / in->norm : 0;
    return RT_STATUS_OK;
}

RTK_LOSS_DESC(rkd, "rkd", "1.0.0", "relational KD (Park et al. 2019): distance and angle relations of the batch",
              0, rtk_destroy, .features = fk_features)
RT_PLUGIN_LIST(&rtk_desc)
