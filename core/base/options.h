/*
 * options.h -- private to the core: validated options and their getters.
 */
#ifndef RT_OPTIONS_H
#define RT_OPTIONS_H
#include "retort.h"

/* Parses JSON text that rt_options_validate produced.  NULL on OOM. */
rt_opts *rt_opts_parse(const char *validated_json);
void rt_opts_free(rt_opts *o);

/* The getters behind rt_api.opt_*. */
double rt_opts_number(const rt_opts *o, const char *name);
int64_t rt_opts_int(const rt_opts *o, const char *name);
int rt_opts_bool(const rt_opts *o, const char *name);
const char *rt_opts_string(const rt_opts *o, const char *name);
int rt_opts_int_list(const rt_opts *o, const char *name, int64_t *out, int max);
const char *rt_opts_json(const rt_opts *o, const char *name);

/* The register stage's schema check: known types, unique names, defaults
 * that pass their own option's checks.  RT_STATUS_ERR_PLUGIN on failure. */
rt_status rt_options_check_schema(rt_ctx *ctx, const rt_plugin_desc *d);

/* Checks a number given to a loss's set() against the schema. */
rt_status rt_option_check_number(rt_ctx *ctx, const rt_plugin_desc *d, const char *name, double v);


#endif
