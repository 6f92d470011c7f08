/*
 * ctx.c -- the call context: last error, scratch arena, training RNG.
 *
 * The scratch arena is a list of 64-byte aligned blocks; reset keeps the
 * largest block and frees the rest, so after the first step of a training
 * loop scratch requests are served without malloc.
 */
#include "ctx.h"

#include <stdlib.h>
#include <string.h>

rt_ctx *rt_ctx_new(void)
{
    rt_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    rt_rng_seed(&c->rng, 0, 0);
    c->budget = -1;
    return c;
}

static void free_blocks(rt_ctx *c, int keep_largest)
{
    scratch_block *keep = NULL;
    for (scratch_block *b = c->blocks; b; b = b->next)
        if (keep_largest && (!keep || b->cap > keep->cap)) keep = b;
    for (scratch_block *b = c->blocks, *next; b; b = next) {
        next = b->next;
        if (b != keep) free(b);
    }
    c->blocks = keep;
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
}

void rt_ctx_free(rt_ctx *c)
{
    if (!c) return;
    free_blocks(c, 0);
    free(c);
}

rt_status rt_verror(rt_ctx *c, rt_status code, const char *fmt, va_list ap)
{
    if (!c) return code;
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    c->status = code;
    return code;
}

rt_status rt_error(rt_ctx *c, rt_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rt_verror(c, code, fmt, ap);
    va_end(ap);
    return code;
}

rt_status rt_error_prefix(rt_ctx *c, const char *fmt, ...)
{
    if (!c) return RT_STATUS_OK;
    char pre[256], old[sizeof c->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    /* Truncation is intended: the message stays within its buffer. */
    memcpy(old, c->msg, sizeof old);
    size_t np = strlen(pre), no = strlen(old), cap = sizeof c->msg - 1;
    if (np > cap) np = cap;
    memcpy(c->msg, pre, np);
    size_t o = np;
    if (o + 2 <= cap) {
        memcpy(c->msg + o, ": ", 2);
        o += 2;
    }
    if (no > cap - o) no = cap - o;
    memcpy(c->msg + o, old, no);
    c->msg[o + no] = 0;
    return c->status;
}

const char *rt_ctx_message(const rt_ctx *c) { return c ? c->msg : ""; }
rt_status rt_ctx_status(const rt_ctx *c) { return c ? c->status : RT_STATUS_OK; }

void rt_ctx_clear(rt_ctx *c)
{
    if (!c) return;
    c->msg[0] = 0;
    c->status = RT_STATUS_OK;
}

rt_rng *rt_ctx_rng(rt_ctx *c) { return &c->rng; }

void *rt_scratch(rt_ctx *c, size_t bytes)
{
    size_t need = (bytes + 63) & ~(size_t)63;
    if (need < bytes) {
        rt_error(c, RT_STATUS_ERR_NOMEM, "scratch request of %zu bytes overflows", bytes);
        return NULL;
    }
    scratch_block *b = c->blocks;
    if (b && b->cap - b->used >= need) {
        void *p = b->data + b->used;
        b->used += need;
        return p;
    }
    size_t cap = need < (1u << 20) ? (1u << 20) : need;
    size_t total = sizeof(scratch_block) + 64 + cap;
    scratch_block *nb = malloc(total);
    if (!nb) {
        rt_error(c, RT_STATUS_ERR_NOMEM, "out of memory for %zu bytes of scratch", bytes);
        return NULL;
    }
    uintptr_t base = (uintptr_t)(nb + 1);
    nb->data = (unsigned char *)((base + 63) & ~(uintptr_t)63);
    nb->cap = cap;
    nb->used = need;
    nb->next = c->blocks;
    c->blocks = nb;
    return nb->data;
}

void rt_scratch_reset(rt_ctx *c)
{
    if (!c || !c->blocks) return;
    if (!c->blocks->next) {
        c->blocks->used = 0;
        return;
    }
    /* Several blocks were needed: replace them by one that holds them all,
     * so the next call of the same size needs a single block. */
    size_t total = 0;
    for (scratch_block *b = c->blocks; b; b = b->next) total += b->cap;
    free_blocks(c, 0);
    void *p = rt_scratch(c, total);
    if (p) c->blocks->used = 0;
}

const char *rt_status_name(rt_status s)
{
    switch (s) {
    case RT_STATUS_OK: return "ok";
    case RT_STATUS_ERR_ARG: return "bad argument";
    case RT_STATUS_ERR_SHAPE: return "shape mismatch";
    case RT_STATUS_ERR_NOMEM: return "out of memory";
    case RT_STATUS_ERR_IO: return "i/o error";
    case RT_STATUS_ERR_FORMAT: return "malformed file";
    case RT_STATUS_ERR_PLUGIN: return "plugin error";
    case RT_STATUS_ERR_NUMERIC: return "non-finite value";
    case RT_STATUS_ERR_STATE: return "out of order";
    }
    return "unknown status";
}

const char *rt_kind_name(rt_kind k)
{
    switch (k) {
    case RT_KIND_TEACHER: return "teacher";
    case RT_KIND_LOSS: return "loss";
    case RT_KIND_STUDENT: return "student";
    }
    return "unknown kind";
}

void rt_ctx_set_registry(rt_ctx *c, rt_registry *r) { c->registry = r; }
rt_registry *rt_ctx_registry(const rt_ctx *c) { return c->registry; }
