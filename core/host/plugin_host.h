/*
 * plugin_host.h -- private to the core: loaded libraries and instances.
 */
#ifndef RT_PLUGIN_HOST_H
#define RT_PLUGIN_HOST_H
#include "retort.h"

/* A dlopen'd plugin file.  refcount: the registry's reference plus one per
 * live instance; dlclose happens at zero. */
typedef struct rt_lib {
    void *handle;
    char *path;
    int refcount;
} rt_lib;

void rt_lib_retain(rt_lib *l);
void rt_lib_release(rt_lib *l);
/* The library a registered descriptor came from (borrowed), or NULL. */
rt_lib *rt_registry_lib(const rt_registry *r, const rt_plugin_desc *d);

/* The register stage's checks of one descriptor (kind, name, vtable,
 * option schema).  RT_STATUS_ERR_PLUGIN with a message on failure. */
rt_status rt_check_desc(rt_ctx *ctx, const rt_plugin_desc *d);

/* Where the loader gets the table it hands to a plugin's init: instance.c
 * sets rt_host_api here when the library loads.  A pointer, not a call,
 * so that the registry (below the instances) calls nothing of instance.c:
 * no call cycle between the two (docs/architecture.md). */
void rt_registry_set_host_api(const rt_api *(*host_api)(void));

struct rt_instance {
    int refcount;
    const rt_plugin_desc *desc;
    rt_lib *lib;
    void *self;
    char *options; /* validated JSON with defaults */
    /* zero_grad's list of parameters when the plugin has no zero_grad of
     * its own: grown to the count once, so later steps allocate nothing. */
    rt_param *zg;
    int zg_cap;
    int zg_failed; /* the last zero_grad could not grow zg: backward refuses */
    int bound;     /* a loss's bind has run */
};

#endif
