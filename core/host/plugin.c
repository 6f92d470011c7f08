/*
 * plugin.c -- the plugin registry and loader.
 *
 * Loading a file goes through named stages, each failure naming the path
 * and the stage (Lua's loadlib.c, Redis's moduleLoad):
 *   open      dlopen(RTLD_NOW | RTLD_LOCAL): every symbol resolved now,
 *             none leaking into the next plugin.  Never RTLD_DEEPBIND.
 *   entry     dlsym("rt_plugin_init")
 *   init      the entry returns its descriptors, or NULL and a reason
 *   abi       each descriptor's ABI: another major, or a newer minor than
 *             this host, is refused with both versions in the message
 *   register  each descriptor is complete (kind, name, vtable functions,
 *             option schema with valid defaults) and its name is new
 * A failure at any stage registers nothing from that file and closes it.
 * Before open, a `permissions` stage refuses a file that another user could
 * have written (see trusted() below).
 *
 * dlopen runs the constructors of any shared object before the entry is
 * looked up: a file that turns out not to be a plugin has already run code.
 * Only files that export the entry symbol are kept, but only trusted
 * folders belong on the plugin path.
 *
 * Libraries are refcounted: the registry holds one reference, each live
 * instance another, so a library is never dlclose'd under an instance.
 */
#include "plugin_host.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctx.h"
#include "options.h"

typedef struct entry {
    const rt_plugin_desc *desc;
    rt_lib *lib;
} entry;

struct rt_registry {
    entry *e;
    int n, cap;
};

rt_registry *rt_registry_new(void) { return calloc(1, sizeof(rt_registry)); }

static const rt_api *(*host_api_fn)(void);
void rt_registry_set_host_api(const rt_api *(*host_api)(void)) { host_api_fn = host_api; }

void rt_lib_retain(rt_lib *l) { l->refcount++; }

void rt_lib_release(rt_lib *l)
{
    if (l && --l->refcount == 0) {
        dlclose(l->handle);
        free(l->path);
        free(l);
    }
}

void rt_registry_free(rt_registry *r)
{
    if (!r) return;
    /* Each library appears in consecutive entries; release it once. */
    for (int i = 0; i < r->n; i++)
        if (i == 0 || r->e[i].lib != r->e[i - 1].lib) rt_lib_release(r->e[i].lib);
    free(r->e);
    free(r);
}

static int valid_name(const char *s)
{
    if (!s || !*s || strlen(s) > 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
    return 1;
}

static const rt_plugin_desc *find(const rt_registry *r, rt_kind kind, const char *name, const char **path)
{
    for (int i = 0; i < r->n; i++)
        if (r->e[i].desc->kind == kind && !strcmp(r->e[i].desc->name, name)) {
            if (path) *path = r->e[i].lib->path;
            return r->e[i].desc;
        }
    return NULL;
}

/* The register stage's checks for one descriptor. */
rt_status rt_check_desc(rt_ctx *ctx, const rt_plugin_desc *d)
{
    const char *n = d->name ? d->name : "(null)";
    if (d->size < offsetof(rt_plugin_desc, extension) + sizeof(void *))
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "descriptor '%s' has size %u, smaller than ABI %d.0's", n,
                        d->size, RT_ABI_MAJOR);
    if (!valid_name(d->name))
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "name '%s' is not [a-z0-9_]+ (at most 64)", n);
    if (d->kind != RT_KIND_TEACHER && d->kind != RT_KIND_LOSS && d->kind != RT_KIND_STUDENT)
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "'%s' has an unknown kind %d", n, (int)d->kind);
    if (!d->version || !d->summary)
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "'%s' lacks a version or a summary", n);
    if (!d->create || !d->destroy)
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "'%s' lacks create or destroy", n);
    const char *missing = NULL;
    switch (d->kind) {
    case RT_KIND_STUDENT:
        if (!d->student) missing = "the student vtable";
        else if (d->student->size < offsetof(rt_student_vt, record) + sizeof(void *))
            missing = "a student vtable of ABI 2.0's size (set .size = sizeof(rt_student_vt))";
        else if (!d->student->forward) missing = "student.forward";
        else if (!d->student->backward) missing = "student.backward";
        else if (!d->student->parameters) missing = "student.parameters";
        else if (!d->student->input_spec) missing = "student.input_spec";
        else if (!d->student->features != !d->student->record) missing = "student.features and .record (both or neither)";
        break;
    case RT_KIND_TEACHER:
        if (!d->teacher) missing = "the teacher vtable";
        else if (d->teacher->size < offsetof(rt_teacher_vt, record) + sizeof(void *))
            missing = "a teacher vtable of ABI 2.0's size (set .size = sizeof(rt_teacher_vt))";
        else if (!d->teacher->forward) missing = "teacher.forward";
        break;
    case RT_KIND_LOSS:
        if (!d->loss) missing = "the loss vtable";
        else if (d->loss->size < offsetof(rt_loss_vt, zero_grad) + sizeof(void *))
            missing = "a loss vtable of ABI 2.0's size (set .size = sizeof(rt_loss_vt))";
        else if (!d->loss->forward) missing = "loss.forward";
        else if (!d->loss->backward) missing = "loss.backward";
        break;
    }
    if (missing) return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "%s '%s' lacks %s", rt_kind_name(d->kind), n, missing);
    for (const rt_option *o = d->options; o && o->name; o++)
        if (!valid_name(o->name))
            return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "'%s': option name '%s' is not [a-z0-9_]+", n, o->name);
    if (rt_options_check_schema(ctx, d)) return rt_error_prefix(ctx, "'%s'", n);
    return RT_STATUS_OK;
}

/* Refuses what another user could have written: a file or folder writable
 * by group or others, or owned by a user other than root and the caller.
 * A plugin file's folder is checked too (with the sticky bit, as /tmp has,
 * others cannot replace the file, so that folder may be writable); a
 * folder on the plugin path may not be writable at all by others, since
 * every .so in it is loaded.  what is "plugin" or "plugin folder"; the
 * message names the path, the reason and the fix. */
static rt_status trusted(rt_ctx *ctx, const char *what, const char *path, int allow_sticky)
{
    struct stat st;
    if (stat(path, &st)) return RT_STATUS_OK; /* nothing there: open (or opendir) says so */
    unsigned mode = (unsigned)st.st_mode & 07777;
    int others_write = (mode & (S_IWGRP | S_IWOTH)) && !(allow_sticky && (mode & S_ISVTX));
    if (others_write)
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN,
                        "%s %s: permissions: writable by %s (mode %04o), refused: other users could put code "
                        "there (chmod go-w %s)",
                        what, path, (mode & S_IWGRP) && (mode & S_IWOTH) ? "group and others" : mode & S_IWGRP ? "group" : "others",
                        mode, path);
    uid_t me = geteuid();
    if (st.st_uid != 0 && st.st_uid != me)
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN,
                        "%s %s: permissions: owned by uid %u, neither you (uid %u) nor root, refused: only load "
                        "plugins you or root own",
                        what, path, (unsigned)st.st_uid, (unsigned)me);
    return RT_STATUS_OK;
}

/* trusted() for a plugin file and the folder it is in. */
static rt_status trusted_file(rt_ctx *ctx, const char *path)
{
    if (trusted(ctx, "plugin", path, 0)) return rt_ctx_status(ctx);
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    char what[PATH_MAX + 32];
    snprintf(what, sizeof what, "plugin %s: its folder", path);
    return trusted(ctx, what, dir, 1);
}

rt_status rt_registry_load(rt_registry *r, rt_ctx *ctx, const char *path)
{
    if (trusted_file(ctx, path)) return rt_ctx_status(ctx);
    /* A name without '/' is a file here, as trusted_file took it, not a
     * library for dlopen to look for on the system's search path. */
    char local[PATH_MAX];
    if (!strchr(path, '/')) snprintf(local, sizeof local, "./%s", path);
    void *h = dlopen(strchr(path, '/') ? path : local, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "plugin %s: open: %s", path, e ? e : "dlopen failed");
    }
    rt_plugin_init_fn init;
    *(void **)&init = dlsym(h, RT_PLUGIN_ENTRY_NAME);
    if (!init) {
        dlclose(h);
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "plugin %s: entry: no symbol '%s' (is it a retort plugin?)", path,
                        RT_PLUGIN_ENTRY_NAME);
    }
    char err[512] = "";
    if (!host_api_fn) {
        dlclose(h);
        return rt_error(ctx, RT_STATUS_ERR_STATE, "plugin %s: init: no host function table (instance.c not linked)",
                        path);
    }
    const rt_plugin_desc *const *list = init(host_api_fn(), err, sizeof err);
    if (!list) {
        dlclose(h);
        err[sizeof err - 1] = 0;
        return rt_error(ctx, RT_STATUS_ERR_PLUGIN, "plugin %s: init: %s", path, *err ? err : "failed without a reason");
    }
    int count = 0;
    rt_status st = RT_STATUS_OK;
    for (; list[count] && !st; count++) {
        const rt_plugin_desc *d = list[count];
        if (d->abi_major != RT_ABI_MAJOR || d->abi_minor > RT_ABI_MINOR)
            st = rt_error(ctx, RT_STATUS_ERR_PLUGIN,
                          "plugin %s: abi: '%s' was built for ABI %u.%u, this host has ABI %d.%d (%s)", path,
                          d->name ? d->name : "?", d->abi_major, d->abi_minor, RT_ABI_MAJOR, RT_ABI_MINOR,
                          d->abi_major != RT_ABI_MAJOR ? "another major version: rebuild the plugin"
                                                       : "the plugin needs a newer retort");
    }
    for (int i = 0; i < count && !st; i++) {
        const rt_plugin_desc *d = list[i];
        const char *other = NULL;
        if (rt_check_desc(ctx, d)) st = rt_error_prefix(ctx, "plugin %s: register", path);
        else if (find(r, d->kind, d->name, &other))
            st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "plugin %s: register: duplicate %s '%s' (already loaded from %s)",
                          path, rt_kind_name(d->kind), d->name, other);
        for (int j = 0; j < i && !st; j++)
            if (list[j]->kind == d->kind && !strcmp(list[j]->name, d->name))
                st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "plugin %s: register: duplicate %s '%s' in the same file",
                              path, rt_kind_name(d->kind), d->name);
    }
    if (!st && count == 0) st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "plugin %s: init: no plugins in the list", path);
    rt_lib *lib = NULL;
    if (!st) {
        lib = calloc(1, sizeof *lib);
        char *p = strdup(path);
        entry *grown = r->n + count > r->cap ? realloc(r->e, sizeof(entry) * (size_t)(r->cap + count + 16)) : r->e;
        if (!lib || !p || !grown) {
            free(lib);
            free(p);
            if (grown) r->e = grown;
            st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "plugin %s: register: out of memory", path);
        } else {
            if (grown != r->e || r->n + count > r->cap) r->cap += count + 16;
            r->e = grown;
            lib->handle = h;
            lib->path = p;
            lib->refcount = 1;
        }
    }
    if (st) {
        dlclose(h);
        return st;
    }
    for (int i = 0; i < count; i++) r->e[r->n++] = (entry){list[i], lib};
    return RT_STATUS_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

rt_status rt_registry_load_dir(rt_registry *r, rt_ctx *ctx, const char *dir, int keep_going, int *nfailed)
{
    if (nfailed) *nfailed = 0;
    if (trusted(ctx, "plugin folder", dir, 0)) {
        if (nfailed) *nfailed = 1;
        return rt_ctx_status(ctx);
    }
    DIR *d = opendir(dir);
    if (!d) return rt_error(ctx, RT_STATUS_ERR_IO, "plugin folder %s: cannot open it", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    rt_status st = RT_STATUS_OK;
    for (struct dirent *de; (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 3, ".so")) continue;
        if (n == cap) {
            char **g = realloc(names, sizeof *names * (cap = cap ? cap * 2 : 16));
            if (!g) {
                st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "plugin folder %s: out of memory", dir);
                break;
            }
            names = g;
        }
        if (!(names[n] = strdup(de->d_name))) {
            st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "plugin folder %s: out of memory", dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (!st) qsort(names, n, sizeof *names, cmp_str);
    rt_status first = RT_STATUS_OK;
    char firstmsg[1024] = "";
    for (size_t i = 0; i < n && !st; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rt_status s = rt_registry_load(r, ctx, path);
        if (s) {
            if (nfailed) (*nfailed)++;
            if (!first) {
                first = s;
                snprintf(firstmsg, sizeof firstmsg, "%s", rt_ctx_message(ctx));
            }
            if (!keep_going) st = s;
        }
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (st) return st;
    if (first) return rt_error(ctx, first, "%s", firstmsg);
    return RT_STATUS_OK;
}

const char *rt_builtin_plugin_dir(void)
{
    static char dir[PATH_MAX];
    if (dir[0]) return dir;
    Dl_info info;
    if (dladdr((void *)&rt_builtin_plugin_dir, &info) && info.dli_fname) {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", info.dli_fname);
        char *slash = strrchr(tmp, '/');
        if (slash) *slash = 0;
        else snprintf(tmp, sizeof tmp, ".");
        char real[PATH_MAX];
        if (!realpath(tmp, real)) snprintf(real, sizeof real, "%s", tmp);
        snprintf(dir, sizeof dir, "%.*s/retort/plugins", (int)(sizeof dir - 20), real);
    }
    return dir;
}

rt_status rt_registry_load_default(rt_registry *r, rt_ctx *ctx)
{
    char msgs[1024] = "";
    size_t used = 0;
    rt_status st = RT_STATUS_OK;
    int failed;
    /* Collects failures but keeps loading: one broken plugin folder must not
     * hide the others.  The message lists them all. */
#define NOTE_FAILURE(s)                                                                        \
    do {                                                                                       \
        if (!st) st = (s);                                                                     \
        if (used < sizeof msgs - 1)                                                            \
            used += (size_t)snprintf(msgs + used, sizeof msgs - used, "%s%s", used ? "; " : "", \
                                     rt_ctx_message(ctx));                                     \
    } while (0)
    rt_status s = rt_registry_load_dir(r, ctx, rt_builtin_plugin_dir(), 1, &failed);
    if (s) NOTE_FAILURE(s);
    const char *env = getenv("RETORT_PLUGIN_PATH");
    if (env && *env) {
        char *copy = strdup(env);
        if (!copy) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory reading RETORT_PLUGIN_PATH");
        for (char *save = NULL, *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
            /* A relative entry would name another folder in every working
             * directory: refused. */
            if (p[0] != '/')
                s = rt_error(ctx, RT_STATUS_ERR_PLUGIN,
                             "RETORT_PLUGIN_PATH entry '%s' is not an absolute path: skipped (write it from /)", p);
            else
                s = rt_registry_load_dir(r, ctx, p, 1, &failed);
            if (s) NOTE_FAILURE(s);
        }
        free(copy);
    }
#undef NOTE_FAILURE
    if (st) return rt_error(ctx, st, "%s", msgs);
    rt_ctx_clear(ctx);
    return RT_STATUS_OK;
}

int rt_registry_count(const rt_registry *r) { return r->n; }
const rt_plugin_desc *rt_registry_at(const rt_registry *r, int i) { return i >= 0 && i < r->n ? r->e[i].desc : NULL; }
const char *rt_registry_path_at(const rt_registry *r, int i) { return i >= 0 && i < r->n ? r->e[i].lib->path : NULL; }

rt_lib *rt_registry_lib(const rt_registry *r, const rt_plugin_desc *d)
{
    for (int i = 0; i < r->n; i++)
        if (r->e[i].desc == d) return r->e[i].lib;
    return NULL;
}

const rt_plugin_desc *rt_registry_find(const rt_registry *r, rt_ctx *ctx, rt_kind kind, const char *name)
{
    const rt_plugin_desc *d = find(r, kind, name, NULL);
    if (d || !ctx) return d;
    const char *names[256] = {0};
    int n = 0;
    char list[512] = "";
    size_t used = 0;
    for (int i = 0; i < r->n && n < 256; i++)
        if (r->e[i].desc->kind == kind) {
            names[n++] = r->e[i].desc->name;
            if (used < sizeof list - 1)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", r->e[i].desc->name);
        }
    const char *best = rt_closest_name(name, names, n);
    if (best)
        rt_error(ctx, RT_STATUS_ERR_ARG, "no %s plugin '%s' (did you mean '%s'?)", rt_kind_name(kind), name, best);
    else
        rt_error(ctx, RT_STATUS_ERR_ARG, "no %s plugin '%s' (there are: %s)", rt_kind_name(kind), name,
                 n ? list : "none; is the plugin folder or RETORT_PLUGIN_PATH right?");
    return NULL;
}
