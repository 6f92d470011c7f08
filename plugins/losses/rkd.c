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
 * Gradients flow into the student feature; nothing into the logits.  Cost:
 * N^2 D for the distances and the Gram matrix, N^3 for the angles (from the
 * Gram matrix, not the N^3 D of a direction per pair and vertex); made for
 * embeddings (the penultimate layer, the default "classifier.1" of the
 * default cnn).
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

/* sum of x[q] y[q] in double, 8 lanes (vectorised). */
static inline double dot_d(const double *restrict x, const double *restrict y, int64_t n)
{
    double acc[FK_LANES] = {0}, e = 0;
    int64_t q = 0;
    for (; q + FK_LANES <= n; q += FK_LANES)
        for (int l = 0; l < FK_LANES; l++) acc[l] += x[q + l] * y[q + l];
    for (; q < n; q++) e += x[q] * y[q];
    for (int l = 0; l < FK_LANES; l++) e += acc[l];
    return e;
}

/* g += (float)(m x), n values. */
static inline void axpy_d(float *restrict g, double m, const double *restrict x, int64_t n)
{
    int64_t q = 0;
    for (; q + FK_LANES <= n; q += FK_LANES)
        for (int l = 0; l < FK_LANES; l++) g[q + l] += (float)(m * x[q + l]);
    for (; q < n; q++) g[q] += (float)(m * x[q]);
}

/* The batch's geometry from x [N, D]: len [N, N] the distances |x_i - x_j|
 * (from x itself, double sums of float differences), xc [N, D] x minus
 * its batch mean and G [N, N] = xc xc^T in double.  Angles and every
 * gradient go through G: <x_j - x_i, x_k - x_i> = G_jk - G_ij - G_ik +
 * G_ii, so the N^3 angles cost N^2 D + N^3 instead of N^3 D; centring
 * keeps that sum's cancellation small.  mean: D doubles of scratch. */
static void geometry(const float *x, int64_t N, int64_t D, double *xc, double *G, double *len, double *mean)
{
    for (int64_t q = 0; q < D; q++) mean[q] = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t q = 0; q < D; q++) mean[q] += x[i * D + q];
    for (int64_t q = 0; q < D; q++) mean[q] /= (double)N;
    for (int64_t i = 0; i < N; i++)
        for (int64_t q = 0; q < D; q++) xc[i * D + q] = x[i * D + q] - mean[q];
    for (int64_t i = 0; i < N; i++) {
        len[i * N + i] = 0;
        for (int64_t j = 0; j <= i; j++) {
            G[i * N + j] = G[j * N + i] = dot_d(xc + i * D, xc + j * D, D);
            if (j < i) len[i * N + j] = len[j * N + i] = sqrt(fk_sqdist(x + i * D, x + j * D, D));
        }
    }
}

/* The mean of the positive entries of len [N, N] (0 when there is none). */
static double positive_mean(const double *len, int64_t N)
{
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t q = 0; q < N * N; q++)
        if (len[q] > 0) sum += len[q], cnt++;
    return cnt ? sum / (double)cnt : 0;
}

/* The angles at vertex i, for k in [k0, k0 + n): row j of A_i is
 * (G_jk - G_ij - G_ik + G_ii) inv_j inv_k, inv_j = 1 / |x_j - x_i| (0 for
 * j = i and for a sample at distance 0 from x_i, whose direction is 0). */
static inline void angle_row(double *restrict a, const double *restrict Gj, const double *restrict Gi,
                             const double *restrict inv, double c, int64_t n)
{
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int l = 0; l < FK_LANES; l++) a[k + l] = (Gj[k + l] - Gi[k + l] + c) * inv[k + l];
    for (; k < n; k++) a[k] = (Gj[k] - Gi[k] + c) * inv[k];
}

static void inverse_lengths(const double *len, int64_t N, int64_t i, double *inv)
{
    for (int64_t j = 0; j < N; j++) inv[j] = j != i && len[i * N + j] > 1e-12 ? 1 / len[i * N + j] : 0;
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
    float *gs = value ? NULL : rt_f32(in->feature_grads[0]);
    int64_t D = Ds > Dt ? Ds : Dt;
    /* per feature: xc [N, D], G and len [N, N]; then dG [N, N], rows
     * As, At, dP [N], inverses, sums [N] */
    double *w = api->scratch(ctx, sizeof(double) * (size_t)(2 * N * D + 5 * N * N + 7 * N + D));
    if (!w) return RT_STATUS_ERR_NOMEM;
    double *xs = w, *xt = xs + N * D, *Gs = xt + N * D, *Gt = Gs + N * N, *ls = Gt + N * N, *lt = ls + N * N,
           *dG = lt + N * N, *As = dG + N * N, *At = As + N, *is = At + N, *it = is + N, *row = it + N,
           *col = row + N, *acc = col + N, *mean = acc + N;
    geometry(rt_f32(sf), N, Ds, xs, Gs, ls, mean);
    geometry(rt_f32(tf), N, Dt, xt, Gt, lt, mean);
    double N2 = (double)N * N, N3 = N2 * N, k = (in->norm ? (double)scale / in->norm : 0) * (double)N;
    double LD = 0, LA = 0;
    if (gs)
        for (int64_t q = 0; q < N * N; q++) dG[q] = 0;

    /* distance: d_ij = len_ij / mu */
    double mus = positive_mean(ls, N), mut = positive_mean(lt, N), gd = 0;
    int64_t M = 0;
    for (int64_t q = 0; q < N * N; q++) {
        double ds = mus > 0 ? ls[q] / mus : 0, x = ds - (mut > 0 ? lt[q] / mut : 0);
        LD += huber(x);
        gd += r->wd * huber_d(x) / N2 * ds;
        M += ds > 0;
    }
    LD /= N2;
    if (gs && r->wd > 0 && mus > 0)
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                double lij = ls[i * N + j];
                if (!(lij > 0)) continue;
                double x = lij / mus - (mut > 0 ? lt[i * N + j] / mut : 0);
                /* dL/dlen_ij = (G_ij - sum_kl G_kl d_kl / M) / mu, G = wd huber'(x) / N^2; len^2 =
                 * G_ii + G_jj - G_ij - G_ji, so h = dL/d(len^2) goes to those four entries */
                double h = (r->wd * huber_d(x) / N2 - gd / (double)M) / mus * k / (2 * lij);
                dG[i * N + i] += h, dG[j * N + j] += h, dG[i * N + j] -= h, dG[j * N + i] -= h;
            }

    /* angle: per vertex i, a_ijk = P_ijk inv_j inv_k with P from G */
    for (int64_t i = 0; i < N && (r->wa > 0 || value); i++) {
        inverse_lengths(ls, N, i, is);
        inverse_lengths(lt, N, i, it);
        double tot = 0;
        if (gs)
            for (int64_t j = 0; j < N; j++) row[j] = col[j] = acc[j] = 0;
        for (int64_t j = 0; j < N; j++) {
            if (is[j] == 0 && it[j] == 0) continue; /* both rows 0: nothing to compare */
            /* P_ijk = G_jk - G_ik + (G_ii - G_ij) */
            angle_row(As, Gs + j * N, Gs + i * N, is, Gs[i * N + i] - Gs[i * N + j], N);
            angle_row(At, Gt + j * N, Gt + i * N, it, Gt[i * N + i] - Gt[i * N + j], N);
            double sj = is[j], tj = it[j], la = 0;
            for (int64_t q = 0; q < N; q++) {
                double x = As[q] * sj - At[q] * tj;
                la += huber(x);
                if (!gs) continue;
                /* g = dL/da; a = P inv_j inv_k: dP = g inv_j inv_k, and
                 * through the lengths, dL/dlen_j += -g a inv_j (and k) */
                double gq = r->wa * huber_d(x) / N3 * k, a = As[q] * sj;
                double dP = gq * sj * is[q];
                dG[j * N + q] += dP;
                row[j] += dP, col[q] += dP;
                acc[j] += gq * a, acc[q] += gq * a;
            }
            LA += la;
        }
        if (!gs) continue;
        /* len_j^2 = P_ijj: dL/dP_ijj += dL/dlen_j / (2 len_j) = -acc_j inv_j^2 / 2 */
        for (int64_t j = 0; j < N; j++) {
            double e = -acc[j] * is[j] * is[j] / 2;
            dG[j * N + j] += e, row[j] += e, col[j] += e;
        }
        /* P_ijk = G_jk - G_ij - G_ik + G_ii */
        for (int64_t j = 0; j < N; j++) {
            dG[i * N + j] -= row[j] + col[j];
            tot += row[j];
        }
        dG[i * N + i] += tot;
    }
    LA /= N3;
    if (gs) /* d/dx_a = sum_b (dG_ab + dG_ba) xc_b: rows of dG + dG^T sum to 0, so the mean drops out */
        for (int64_t a = 0; a < N; a++) {
            float *ga = gs + a * Ds;
            for (int64_t b = 0; b < N; b++) {
                double m = dG[a * N + b] + dG[b * N + a];
                if (m != 0) axpy_d(ga, m, xs + b * Ds, Ds);
            }
        }
    if (value) *value = in->norm ? (r->wd * LD + r->wa * LA) * (double)N / in->norm : 0;
    return RT_STATUS_OK;
}

RTK_LOSS_DESC(rkd, "rkd", "1.0.0", "relational KD (Park et al. 2019): distance and angle relations of the batch",
              0, rtk_destroy, .features = fk_features)
RT_PLUGIN_LIST(&rtk_desc)
