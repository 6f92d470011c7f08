/*
 * fuzz_idx.c -- libFuzzer target for the IDX reader, from memory, as f32
 * and as i32.  Build as fuzz_safetensors.c (with core/idx.c, -lz):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *     -Icore tests/fuzz/fuzz_idx.c core/idx.c core/ctx.c core/tensor.c \
 *     core/rng.c -lz -lm -o fuzz_idx
 *   ./fuzz_idx -malloc_limit_mb=512 -timeout=2 -max_total_time=60
 */
#include "retort.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return 0;
    for (int k = 0; k < 2; k++) {
        rt_tensor *t = NULL;
        rt_dtype want = k ? RT_DTYPE_I32 : RT_DTYPE_F32;
        rt_status st = rt_idx_read_mem(ctx, data, size, "fuzz", want, 1.0f / 255, &t);
        if (st == RT_STATUS_OK) {
            /* exact size: header (4 + 4 ndims) + numel x element size */
            if (!t || t->dtype != want || t->ndim < 1 || size < 4) abort();
            static const int esize[16] = {[8] = 1, [9] = 1, [11] = 2, [12] = 4, [13] = 4, [14] = 8};
            if ((size_t)(4 + 4 * t->ndim) + (size_t)rt_numel(t) * (size_t)esize[data[2] & 15] != size) abort();
            rt_tensor_release(t);
        } else if (t || rt_ctx_message(ctx)[0] == 0) {
            abort();
        }
        rt_ctx_clear(ctx);
    }
    rt_ctx_free(ctx);
    return 0;
}
