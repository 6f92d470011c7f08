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
};

#endif
