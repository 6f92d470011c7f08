/*
 * fuzz_safetensors.c -- libFuzzer target for the safetensors reader, from
 * memory.  Built by `make fuzz` with the whole core (see docs/reliability.md),
 * which runs it as:
 *   ./fuzz_safetensors -malloc_limit_mb=512 -timeout=2 -max_total_time=60
 * Any input must give OK or an error status with a message; a parsed file
 * must be internally consistent.
 */
#include "retort.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return 0;
    rt_st *f = NULL;
    rt_status st = rt_st_read_mem(ctx, data, size, "fuzz", &f);
    if (st == RT_STATUS_OK) {
        /* Every tensor's bytes lie inside the input it came from. */
        size_t total = 0;
        for (int i = 0; i < rt_st_count(f); i++) {
            const rt_tensor *t = rt_st_tensor(f, i);
            if (!t || !rt_st_name(f, i) || rt_st_find(f, rt_st_name(f, i)) != t) abort();
            total += rt_tensor_nbytes(t);
        }
        if (total > size) abort();
        for (int i = 0; i < rt_st_meta_count(f); i++)
            if (rt_st_meta_get(f, rt_st_meta_key(f, i)) != rt_st_meta_value(f, i)) abort();
        rt_st_free(f);
    } else if (f || rt_ctx_message(ctx)[0] == 0) {
        abort();
    }
    rt_ctx_free(ctx);
    return 0;
}
