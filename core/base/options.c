/*
 * options.c -- a plugin's options: validated against its schema before
 * create, defaults filled in, and the getters plugins use (through rt_api).
 *
 * Options travel as JSON text (the Lua table is converted in core/lua/).
 * cJSON is lenient where we must not be (rules in docs/reliability.md): keys are
 * looked up case-sensitively, duplicate keys are refused, trailing bytes
 * after the JSON are refused.
 */
#include "options.h"
#include "json_check.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Optimal-string-alignment distance: insertions, deletions, substitutions
 * and swaps of neighbours ("mpl" is one edit from "mlp"). */
int rt_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 1000; /* names are short; no allocation */
    int d[65][65];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

static size_t common_prefix(const char *a, const char *b)
{
    size_t n = 0;
    while (a[n] && a[n] == b[n]) n++;
    return n;
}

const char *rt_closest_name(const char *name, const char *const *names, int n)
{
    const char *best = NULL;
    int bd = 1000;
    size_t bp = 0;
    size_t len = strlen(name);
    int limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
    for (int i = 0; i < n; i++) {
        /* Ties go to the longer common prefix: typos are rarer at the start
         * ("kdd" means kd, not dkd). */
        int d = rt_edit_distance(name, names[i]);
        size_t p = common_prefix(name, names[i]);
        if (d < bd || (d == bd && p > bp)) {
            bd = d;
            bp = p;
            best = names[i];
        }
    }
    return bd <= limit ? best : NULL;
}

static const char *type_name(rt_opt_type t)
{
    switch (t) {
    case RT_OPT_NUMBER: return "number";
    case RT_OPT_INT: return "integer";
    case RT_OPT_BOOL: return "boolean";
    case RT_OPT_STRING: return "string";
    case RT_OPT_INT_LIST: return "list of integers";
    case RT_OPT_OBJECT: return "table";
    }
    return "?";
}

static int bounded(const rt_option *o) { return o->min <= o->max; }

static int is_int(double v) { return isfinite(v) && v == floor(v) && fabs(v) <= 9007199254740992.0; }

/* Checks one item against a number/int option's range; error in ctx. */
static rt_status check_range(rt_ctx *ctx, const rt_option *o, double v, const char *what)
{
    if (bounded(o) && (v < o->min || v > o->max))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s'%s = %g is out of range [%g, %g]", o->name, what, v,
                        o->min, o->max);
    return RT_STATUS_OK;
}

static int in_choices(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, s, n)) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

/* Checks value v (not NULL) against option o. */
static rt_status check_value(rt_ctx *ctx, const rt_option *o, const cJSON *v)
{
    switch (o->type) {
    case RT_OPT_NUMBER:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) break;
        return check_range(ctx, o, v->valuedouble, "");
    case RT_OPT_INT:
        if (!cJSON_IsNumber(v) || !is_int(v->valuedouble)) break;
        return check_range(ctx, o, v->valuedouble, "");
    case RT_OPT_BOOL:
        if (!cJSON_IsBool(v)) break;
        return RT_STATUS_OK;
    case RT_OPT_STRING:
        if (!cJSON_IsString(v)) break;
        if (o->choices && !in_choices(o->choices, v->valuestring))
            return rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s' = \"%s\" is not one of %s", o->name,
                            v->valuestring, o->choices);
        return RT_STATUS_OK;
    case RT_OPT_INT_LIST: {
        if (!cJSON_IsArray(v)) break;
        int i = 0;
        for (const cJSON *it = v->child; it; it = it->next, i++) {
            if (!cJSON_IsNumber(it) || !is_int(it->valuedouble))
                return rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s'[%d] must be an integer", o->name, i + 1);
            char what[32];
            snprintf(what, sizeof what, "[%d]", i + 1);
            if (check_range(ctx, o, it->valuedouble, what)) return rt_ctx_status(ctx);
        }
        return RT_STATUS_OK;
    }
    case RT_OPT_OBJECT:
        if (!cJSON_IsObject(v)) break;
        return RT_STATUS_OK;
    }
    const char *got = cJSON_IsNumber(v) ? (isfinite(v->valuedouble) ? "a number" : "a non-finite number")
                      : cJSON_IsString(v) ? "a string"
                      : cJSON_IsBool(v)   ? "a boolean"
                      : cJSON_IsArray(v)  ? "a list"
                      : cJSON_IsObject(v) ? "a table"
                                          : "null";
    if (o->type == RT_OPT_INT && cJSON_IsNumber(v) && isfinite(v->valuedouble)) got = "a fractional number";
    return rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s' must be %s %s, got %s", o->name,
                    o->type == RT_OPT_INT ? "an" : "a", type_name(o->type), got);
}

static rt_status unknown_key(rt_ctx *ctx, const rt_plugin_desc *d, const char *key)
{
    const char *names[128] = {0};
    int n = 0;
    for (const rt_option *o = d->options; o && o->name && n < 128; o++) names[n++] = o->name;
    const char *best = rt_closest_name(key, names, n);
    char list[512] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof list - 1; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    if (best)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "unknown option '%s' (did you mean '%s'?)", key, best);
    if (n == 0) return rt_error(ctx, RT_STATUS_ERR_ARG, "unknown option '%s' (this plugin takes no options)", key);
    return rt_error(ctx, RT_STATUS_ERR_ARG, "unknown option '%s' (options: %s)", key, list);
}

static const rt_option *find_option(const rt_plugin_desc *d, const char *name)
{
    for (const rt_option *o = d->options; o && o->name; o++)
        if (!strcmp(o->name, name)) return o;
    return NULL;
}

rt_status rt_options_validate(rt_ctx *ctx, const rt_plugin_desc *d, const char *json, char **out)
{
    *out = NULL;
    cJSON *in = NULL;
    if (json && *json) {
        const char *end = NULL, *why;
        size_t n = strlen(json), bad = rt_json_check(json, n, &why);
        if (bad < n) return rt_error(ctx, RT_STATUS_ERR_ARG, "options: %s at byte %zu", why, bad);
        in = cJSON_ParseWithOpts(json, &end, 1);
        if (!in)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "options are not valid JSON (at byte %ld)",
                            end ? (long)(end - json) : -1L);
        if (!cJSON_IsObject(in)) {
            cJSON_Delete(in);
            return rt_error(ctx, RT_STATUS_ERR_ARG, "options must be a table of name = value");
        }
    }
    rt_status st = RT_STATUS_OK;
    cJSON *res = cJSON_CreateObject();
    if (!res) {
        cJSON_Delete(in);
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory validating options");
    }
    /* Unknown and duplicate keys first: they are the likeliest typos. */
    for (const cJSON *k = in ? in->child : NULL; k && !st; k = k->next) {
        if (!find_option(d, k->string)) st = unknown_key(ctx, d, k->string);
        for (const cJSON *j = k->next; j && !st; j = j->next)
            if (!strcmp(j->string, k->string))
                st = rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s' is given twice", k->string);
    }
    for (const rt_option *o = d->options; o && o->name && !st; o++) {
        cJSON *v = in ? cJSON_GetObjectItemCaseSensitive(in, o->name) : NULL;
        cJSON *def = NULL;
        if (!v) {
            if (!o->def) {
                st = rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s' is required (%s)", o->name,
                              o->help ? o->help : type_name(o->type));
                break;
            }
            def = cJSON_Parse(o->def);
            if (!def) {
                st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "option '%s': the plugin's default '%s' is not JSON",
                              o->name, o->def);
                break;
            }
            v = def;
        }
        st = check_value(ctx, o, v);
        if (st && def) rt_error_prefix(ctx, "the plugin's default is invalid");
        cJSON *copy = st ? NULL : cJSON_Duplicate(v, 1);
        cJSON_Delete(def);
        if (!st && (!copy || !cJSON_AddItemToObject(res, o->name, copy))) {
            cJSON_Delete(copy);
            st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory validating options");
        }
    }
    if (!st) {
        *out = cJSON_PrintUnformatted(res);
        if (!*out) st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory validating options");
    }
    cJSON_Delete(res);
    cJSON_Delete(in);
    return st;
}

rt_status rt_options_check_schema(rt_ctx *ctx, const rt_plugin_desc *d)
{
    for (const rt_option *o = d->options; o && o->name; o++) {
        if (o->type < RT_OPT_NUMBER || o->type > RT_OPT_OBJECT)
            return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "option '%s' has an unknown type %d", o->name, (int)o->type);
        for (const rt_option *p = d->options; p != o; p++)
            if (!strcmp(p->name, o->name))
                return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "option '%s' is declared twice", o->name);
        if (!o->def) continue;
        cJSON *def = cJSON_Parse(o->def);
        if (!def) return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "option '%s': default '%s' is not JSON", o->name, o->def);
        rt_status st = check_value(ctx, o, def);
        cJSON_Delete(def);
        if (st) {
            char msg[768];
            snprintf(msg, sizeof msg, "%s", rt_ctx_message(ctx));
            return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "bad default: %s", msg);
        }
    }
    return RT_STATUS_OK;
}

rt_status rt_option_check_number(rt_ctx *ctx, const rt_plugin_desc *d, const char *name, double v)
{
    const rt_option *o = find_option(d, name);
    if (!o) return unknown_key(ctx, d, name);
    if (o->type != RT_OPT_NUMBER && o->type != RT_OPT_INT)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s' is a %s, not a number", name, type_name(o->type));
    if (!isfinite(v) || (o->type == RT_OPT_INT && !is_int(v)))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s' must be %s, got %g", name,
                        o->type == RT_OPT_INT ? "an integer" : "a finite number", v);
    return check_range(ctx, o, v, "");
}

/* ------------------------------------------------------------- the getters */

struct rt_opts {
    cJSON *obj;
};

rt_opts *rt_opts_parse(const char *validated_json)
{
    rt_opts *o = malloc(sizeof *o);
    if (!o) return NULL;
    o->obj = cJSON_Parse(validated_json);
    if (!o->obj) {
        free(o);
        return NULL;
    }
    return o;
}

void rt_opts_free(rt_opts *o)
{
    if (!o) return;
    cJSON_Delete(o->obj);
    free(o);
}

static const cJSON *get(const rt_opts *o, const char *name)
{
    return o ? cJSON_GetObjectItemCaseSensitive(o->obj, name) : NULL;
}

double rt_opts_number(const rt_opts *o, const char *name)
{
    const cJSON *v = get(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int64_t rt_opts_int(const rt_opts *o, const char *name)
{
    const cJSON *v = get(o, name);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

int rt_opts_bool(const rt_opts *o, const char *name) { return cJSON_IsTrue(get(o, name)); }

const char *rt_opts_string(const rt_opts *o, const char *name)
{
    const cJSON *v = get(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int rt_opts_int_list(const rt_opts *o, const char *name, int64_t *out, int max)
{
    const cJSON *v = get(o, name);
    if (!cJSON_IsArray(v)) return 0;
    int n = 0;
    for (const cJSON *it = v->child; it; it = it->next, n++)
        if (n < max) out[n] = (int64_t)it->valuedouble;
    return n;
}

const char *rt_opts_json(const rt_opts *o, const char *name)
{
    /* The text is cached on the item (valuestring is unused for objects)
     * so the borrowed pointer lives as long as the options. */
    cJSON *v = (cJSON *)get(o, name);
    if (!cJSON_IsObject(v)) return NULL;
    if (!v->valuestring) v->valuestring = cJSON_PrintUnformatted(v);
    return v->valuestring;
}

/* --------------------------------------------------------------- the help */

void rt_options_print_help(const rt_plugin_desc *d, FILE *f)
{
    fprintf(f, "%s %s (%s %s, ABI %u.%u)\n  %s\n", rt_kind_name(d->kind), d->name, d->name,
            d->version ? d->version : "?", d->abi_major, d->abi_minor, d->summary ? d->summary : "");
    if (!d->options || !d->options->name) {
        fprintf(f, "  no options\n");
        return;
    }
    fprintf(f, "  options:\n");
    for (const rt_option *o = d->options; o->name; o++) {
        char range[96] = "";
        if (o->choices) snprintf(range, sizeof range, "one of %s", o->choices);
        else if (bounded(o)) snprintf(range, sizeof range, "in [%g, %g]", o->min, o->max);
        fprintf(f, "    %-16s %-16s default %-12s %s%s%s\n", o->name, type_name(o->type), o->def ? o->def : "(required)",
                o->help ? o->help : "", *range ? "; " : "", range);
    }
}
