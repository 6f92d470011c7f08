/*
 * fuzz_idx.c -- libFuzzer target for the IDX reader, from memory, as f32
 * and as i32, raw and gzip'd: an input starting 1f 8b goes through the
 * same inflate path as a .gz file (tests/fuzz/seeds/fuzz_idx has gzip'd
 * inputs to start from).  Built and run by `make fuzz`.
 * Any input must give OK or an error status with a message; a raw input
 * that parses must be exactly the size its header declares.
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
            if (!t || t->dtype != want || t->ndim < 1 || size < 4) abort();
            /* gzip (magic 1f 8b) expands: its size says nothing exact */
            if (data[0] == 0x1f && data[1] == 0x8b) {
                rt_tensor_release(t);
                rt_ctx_clear(ctx);
                continue;
            }
            /* exact size: header (4 + 4 ndims) + numel x element size */
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
