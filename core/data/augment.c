/*
 * augment.c -- image augmentation for the data pipeline: random crop with
 * zero padding and horizontal flip (the CIFAR / Fashion-MNIST recipe of
 * torchvision's RandomCrop(size, padding) and RandomHorizontalFlip()).
 * Reproducible: every draw comes from the caller's RNG in sample order.
 */
#include <string.h>

#include "retort.h"

rt_status rt_augment_crop_flip(rt_ctx *ctx, float *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t pad,
                               int flip, rt_rng *rng)
{
    if (C < 1 || H < 1 || W < 1 || pad < 0 || pad > H || pad > W)
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "augment: image %lld x %lld x %lld with padding %lld: sizes must be >= 1 and the padding "
                        "between 0 and the image's height and width",
                        (long long)C, (long long)H, (long long)W, (long long)pad);
    float row[4096];
    if (W > (int64_t)(sizeof row / sizeof *row))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "augment: images wider than %d pixels are not supported",
                        (int)(sizeof row / sizeof *row));
    for (int64_t n = 0; n < N; n++) {
        /* the crop's top-left corner in the padded image, in [0, 2 pad] */
        int64_t dy = pad ? (int64_t)rt_rng_below(rng, (uint64_t)(2 * pad + 1)) - pad : 0;
        int64_t dx = pad ? (int64_t)rt_rng_below(rng, (uint64_t)(2 * pad + 1)) - pad : 0;
        int mirror = flip && rt_rng_below(rng, 2);
        for (int64_t c = 0; c < C; c++) {
            float *img = x + (n * C + c) * H * W;
            /* out(i, j) = in(i + dy, j + dx), 0 outside; rows copied in the
             * order that never reads a row already overwritten */
            for (int64_t k = 0; k < H; k++) {
                int64_t i = dy > 0 ? k : H - 1 - k, si = i + dy;
                if (si < 0 || si >= H) {
                    memset(img + i * W, 0, sizeof(float) * (size_t)W);
                    continue;
                }
                for (int64_t j = 0; j < W; j++) {
                    int64_t sj = j + dx;
                    row[j] = sj >= 0 && sj < W ? img[si * W + sj] : 0.0f;
                }
                for (int64_t j = 0; j < W; j++) img[i * W + j] = mirror ? row[W - 1 - j] : row[j];
            }
        }
    }
    return RT_STATUS_OK;
}
