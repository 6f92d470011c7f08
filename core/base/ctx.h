/*
 * ctx.h -- private to the core: the layout of rt_ctx.
 */
#ifndef RT_CTX_H
#define RT_CTX_H
#include "retort.h"

typedef struct scratch_block {
    struct scratch_block *next;
    size_t cap, used;
    unsigned char *data; /* 64-byte aligned, inside this allocation */
} scratch_block;

struct rt_ctx {
    rt_status status;
    char msg[1024];
    scratch_block *blocks; /* newest first */
    rt_rng rng;            /* the training stream (dropout, ...) */
    rt_registry *registry; /* for api->instance_create; borrowed */
    /* Bytes rt_tensor_new may still allocate, -1 = no bound: set while a
     * student or teacher is created (instance.c), and why, for the
     * message that refuses a tensor past it. */
    int64_t budget;
    char budget_why[256];
};

#endif
