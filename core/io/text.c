/*
 * text.c -- text datasets for language models: the byte tokenizer, reading
 * a file, a folder or memory into train/validation token arrays, and the
 * window sampler.  See rt_text.h for the contracts.
 */
#include "rt_text.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ====================================================== byte tokenizer */

static const char *bytes_name(const void *self) { return "bytes"; }
static int64_t bytes_vocab(const void *self) { return 256; }

static rt_status bytes_encode(const void *self, rt_ctx *ctx, const char *text,
                              size_t len, int32_t *ids, int64_t cap, int64_t *n)
{
    const unsigned char *u = (const unsigned char *)text;
    int64_t m = (int64_t)len < cap ? (int64_t)len : cap;
    for (int64_t i = 0; i < m; i++) ids[i] = u[i];
    *n = (int64_t)len;
    return RT_STATUS_OK;
}

static rt_status bytes_decode(const void *self, rt_ctx *ctx, const int32_t *ids,
                              int64_t n, char *buf, size_t cap, size_t *len)
{
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] > 255)
            return rt_error(ctx, RT_STATUS_ERR_ARG,
                            "tokenizer 'bytes': id %d at index %lld is outside "
                            "the vocabulary [0, 256)",
                            (int)ids[i], (long long)i);
    for (int64_t i = 0; i < n && (size_t)i < cap; i++) buf[i] = (char)(unsigned char)ids[i];
    *len = (size_t)n;
    return RT_STATUS_OK;
}

static const rt_tokenizer bytes_tok = {NULL, bytes_name, bytes_vocab,
                                       bytes_encode, bytes_decode};

const rt_tokenizer *rt_tokenizer_bytes(void) { return &bytes_tok; }

/* =============================================================== dataset */

struct rt_text {
    const rt_tokenizer *tok;
    int32_t *ids[2]; /* train, val */
    int64_t n[2], cap[2];
    int64_t seen; /* tokens split so far */
    int files;
    int64_t bytes;
    double val_fraction;
};

void rt_text_free(rt_text *d)
{
    if (!d) return;
    free(d->ids[0]);
    free(d->ids[1]);
    free(d);
}

static rt_status append(rt_text *d, rt_ctx *ctx, int split, const int32_t *ids,
                        int64_t n)
{
    if (n <= 0) return RT_STATUS_OK;
    if (d->n[split] + n > d->cap[split]) {
        int64_t c = d->cap[split] ? d->cap[split] : 4096;
        while (c < d->n[split] + n) c *= 2;
        int32_t *p = realloc(d->ids[split], (size_t)c * sizeof *p);
        if (!p) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "text: out of memory for %lld tokens", (long long)c);
        d->ids[split] = p;
        d->cap[split] = c;
    }
    memcpy(d->ids[split] + d->n[split], ids, (size_t)n * sizeof *ids);
    d->n[split] += n;
    return RT_STATUS_OK;
}

/* Encodes one document and appends its head to train, its tail to val. */
static rt_status add_document(rt_text *d, rt_ctx *ctx, const char *text,
                              size_t len, const char *label)
{
    int64_t n = 0;
    rt_status st = d->tok->encode(d->tok->self, ctx, text, len, NULL, 0, &n);
    if (st) return rt_error_prefix(ctx, "text '%s'", label);
    if (n < 0) return rt_error(ctx, RT_STATUS_ERR_STATE, "text '%s': tokenizer '%s' gave a negative count", label, d->tok->name(d->tok->self));
    if (n == 0) return RT_STATUS_OK;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "text '%s': out of memory for %lld tokens", label, (long long)n);
    int64_t n2 = 0;
    st = d->tok->encode(d->tok->self, ctx, text, len, ids, n, &n2);
    if (!st && n2 != n)
        st = rt_error(ctx, RT_STATUS_ERR_STATE, "text '%s': tokenizer '%s' counted %lld tokens, then wrote %lld", label,
                      d->tok->name(d->tok->self), (long long)n, (long long)n2);
    else if (st) rt_error_prefix(ctx, "text '%s'", label);
    int64_t V = d->tok->vocab_size(d->tok->self);
    for (int64_t i = 0; !st && i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            st = rt_error(ctx, RT_STATUS_ERR_STATE, "text '%s': tokenizer '%s' gave id %d at token %lld, outside [0, %lld)",
                          label, d->tok->name(d->tok->self), (int)ids[i], (long long)i, (long long)V);
    /* The validation share of the corpus so far minus what earlier files
     * gave: every file gives its tail, and many small files still add up to
     * floor(val_fraction * total) (a per-file floor would give 0 each). */
    int64_t nval = (int64_t)(d->val_fraction * (double)(d->seen + n)) - (int64_t)(d->val_fraction * (double)d->seen);
    if (nval > n) nval = n;
    if (nval < 0) nval = 0;
    d->seen += n;
    if (!st) st = append(d, ctx, RT_TEXT_TRAIN, ids, n - nval);
    if (!st) st = append(d, ctx, RT_TEXT_VAL, ids + (n - nval), nval);
    free(ids);
    return st;
}

static rt_status check_opts(rt_ctx *ctx, const rt_text_opts *o, const char *label)
{
    if (!(o->val_fraction >= 0 && o->val_fraction < 1))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "text '%s': val_fraction %g must be in [0, 1)", label, o->val_fraction);
    if (o->max_bytes < 0)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "text '%s': max_bytes %lld must be >= 0 (0 = default)", label,
                        (long long)o->max_bytes);
    return RT_STATUS_OK;
}

static rt_text *text_new(rt_ctx *ctx, const rt_tokenizer *tok, const rt_text_opts *o)
{
    rt_text *d = calloc(1, sizeof *d);
    if (!d) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "text: out of memory");
        return NULL;
    }
    d->tok = tok ? tok : rt_tokenizer_bytes();
    d->val_fraction = o->val_fraction;
    return d;
}

static const rt_text_opts default_opts = {0.1, 0, NULL};

static rt_status finish(rt_text *d, rt_ctx *ctx, const char *label, rt_text **out)
{
    if (d->n[RT_TEXT_TRAIN] + d->n[RT_TEXT_VAL] == 0) {
        rt_text_free(d);
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "text '%s': the corpus is empty (no tokens)", label);
    }
    *out = d;
    return RT_STATUS_OK;
}

rt_status rt_text_from_memory(rt_ctx *ctx, const char *text, size_t len,
                              const char *label, const rt_tokenizer *tok,
                              const rt_text_opts *opts, rt_text **out)
{
    *out = NULL;
    const rt_text_opts *o = opts ? opts : &default_opts;
    if (!label) label = "memory";
    rt_status st = check_opts(ctx, o, label);
    if (st) return st;
    rt_text *d = text_new(ctx, tok, o);
    if (!d) return rt_ctx_status(ctx);
    d->files = 1;
    d->bytes = (int64_t)len;
    st = add_document(d, ctx, text, len, label);
    if (st) {
        rt_text_free(d);
        return st;
    }
    return finish(d, ctx, label, out);
}

/* Reads the whole regular file at path (size from fstat, at most `room`
 * bytes) into a new buffer. */
static rt_status read_file(rt_ctx *ctx, const char *path, int64_t room, int64_t max_bytes,
                           char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO swapped in after the listing must not hang us
     * (it is then refused as not regular); regular files ignore it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return rt_error(ctx, RT_STATUS_ERR_IO, "text: cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_IO, "text: cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_IO, "text: '%s' is not a regular file", path);
    }
    if ((int64_t)sb.st_size > room) {
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "text: '%s' (%lld bytes) takes the corpus past its bound of %lld bytes; "
                        "raise max_bytes or read fewer files",
                        path, (long long)sb.st_size, (long long)max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    char *p = malloc(n ? n : 1);
    if (!p) {
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "text: out of memory for '%s' (%zu bytes)", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(p);
            close(fd);
            return rt_error(ctx, RT_STATUS_ERR_IO, "text: read error in '%s' at byte %zu: %s", path, got, strerror(e));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(p);
        return rt_error(ctx, RT_STATUS_ERR_IO, "text: '%s' shrank while read (%zu of %zu bytes)", path, got, n);
    }
    *buf = p;
    *len = n;
    return RT_STATUS_OK;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return b <= a && !memcmp(s + a - b, suf, b);
}

/* The sorted names of the regular files of dir to read (new array of new
 * strings; *n of them). */
static rt_status list_folder(rt_ctx *ctx, const char *dir, const char *skip, char ***names, int *n)
{
    *names = NULL;
    *n = 0;
    DIR *dp = opendir(dir);
    if (!dp) return rt_error(ctx, RT_STATUS_ERR_IO, "text: cannot open folder '%s': %s", dir, strerror(errno));
    char **v = NULL;
    int cnt = 0, cap = 0;
    rt_status st = RT_STATUS_OK;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        if (skip && *skip && ends_with(e->d_name, skip)) continue;
        struct stat sb;
        if (fstatat(dirfd(dp), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (cnt == cap) {
            int c = cap ? cap * 2 : 16;
            char **p = realloc(v, (size_t)c * sizeof *p);
            if (!p) {
                st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "text: out of memory listing '%s'", dir);
                break;
            }
            v = p;
            cap = c;
        }
        if (!(v[cnt] = strdup(e->d_name))) {
            st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "text: out of memory listing '%s'", dir);
            break;
        }
        cnt++;
    }
    closedir(dp);
    if (!st && cnt == 0)
        st = rt_error(ctx, RT_STATUS_ERR_IO, "text: folder '%s' has no regular file to read%s%s%s", dir,
                      skip && *skip ? " (names ending in '" : "", skip && *skip ? skip : "",
                      skip && *skip ? "' skipped)" : "");
    if (st) {
        for (int i = 0; i < cnt; i++) free(v[i]);
        free(v);
        return st;
    }
    qsort(v, (size_t)cnt, sizeof *v, cmp_names);
    *names = v;
    *n = cnt;
    return RT_STATUS_OK;
}

rt_status rt_text_open(rt_ctx *ctx, const char *path, const rt_tokenizer *tok,
                       const rt_text_opts *opts, rt_text **out)
{
    *out = NULL;
    const rt_text_opts *o = opts ? opts : &default_opts;
    if (!path || !*path) return rt_error(ctx, RT_STATUS_ERR_ARG, "text: no path given");
    rt_status st = check_opts(ctx, o, path);
    if (st) return st;
    int64_t max_bytes = o->max_bytes ? o->max_bytes : RT_TEXT_MAX_BYTES_DEFAULT;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return rt_error(ctx, RT_STATUS_ERR_IO, "text: cannot read '%s': %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode))
        return rt_error(ctx, RT_STATUS_ERR_IO, "text: '%s' is neither a regular file nor a folder", path);
    rt_text *d = text_new(ctx, tok, o);
    if (!d) return rt_ctx_status(ctx);
    char *buf = NULL;
    size_t len = 0;
    if (!S_ISDIR(sb.st_mode)) {
        st = read_file(ctx, path, max_bytes, max_bytes, &buf, &len);
        if (!st) {
            d->files = 1;
            d->bytes = (int64_t)len;
            st = add_document(d, ctx, buf, len, path);
        }
        free(buf);
    } else {
        char **names = NULL;
        int n = 0;
        st = list_folder(ctx, path, o->skip_suffix, &names, &n);
        for (int i = 0; !st && i < n; i++) {
            size_t pl = strlen(path) + strlen(names[i]) + 2;
            char *full = malloc(pl);
            if (!full) {
                st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "text: out of memory");
                break;
            }
            snprintf(full, pl, "%s/%s", path, names[i]);
            st = read_file(ctx, full, max_bytes - d->bytes, max_bytes, &buf, &len);
            if (!st) {
                d->files++;
                d->bytes += (int64_t)len;
                st = add_document(d, ctx, buf, len, full);
            }
            free(buf);
            buf = NULL;
            free(full);
        }
        for (int i = 0; i < n; i++) free(names[i]);
        free(names);
    }
    if (st) {
        rt_text_free(d);
        return st;
    }
    return finish(d, ctx, path, out);
}

int64_t rt_text_count(const rt_text *d, int split)
{
    return split == RT_TEXT_TRAIN || split == RT_TEXT_VAL ? d->n[split] : -1;
}

const int32_t *rt_text_tokens(const rt_text *d, int split)
{
    return (split == RT_TEXT_TRAIN || split == RT_TEXT_VAL) && d->n[split] ? d->ids[split] : NULL;
}

int rt_text_files(const rt_text *d) { return d->files; }
int64_t rt_text_bytes(const rt_text *d) { return d->bytes; }
const rt_tokenizer *rt_text_tokenizer(const rt_text *d) { return d->tok; }

/* ================================================================ batches */

void rt_text_epoch_rng(rt_rng *r, uint64_t seed, uint64_t epoch)
{
    /* "text" in the high 32 bits keeps these streams apart from the small
     * stream numbers the trainer uses with the same seed. */
    rt_rng_seed(r, seed, 0x7465787400000000ULL ^ epoch);
}

static const char *split_name(int split) { return split == RT_TEXT_VAL ? "validation" : "train"; }

static rt_status check_windows(const rt_text *d, rt_ctx *ctx, int split, int64_t N, int64_t T)
{
    if (split != RT_TEXT_TRAIN && split != RT_TEXT_VAL)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "text batch: split %d is neither train (0) nor validation (1)", split);
    if (N < 1 || T < 1)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "text batch: N %lld and T %lld must be >= 1", (long long)N,
                        (long long)T);
    if (d->n[split] < T + 1)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "text batch: the %s split has %lld tokens, fewer than a window of T + 1 = %lld; "
                        "use a shorter context, a larger corpus%s",
                        split_name(split), (long long)d->n[split], (long long)(T + 1),
                        split == RT_TEXT_VAL ? " or a larger val_fraction" : " or a smaller val_fraction");
    return RT_STATUS_OK;
}

rt_status rt_text_batch(const rt_text *d, rt_ctx *ctx, int split, int64_t N,
                        int64_t T, rt_rng *r, int32_t *batch)
{
    rt_status st = check_windows(d, ctx, split, N, T);
    if (st) return st;
    uint64_t starts = (uint64_t)(d->n[split] - T); /* offsets 0 .. n - T - 1 */
    for (int64_t i = 0; i < N; i++) {
        uint64_t off = rt_rng_below(r, starts);
        memcpy(batch + i * (T + 1), d->ids[split] + off, (size_t)(T + 1) * sizeof *batch);
    }
    return RT_STATUS_OK;
}

int64_t rt_text_windows_count(const rt_text *d, int split, int64_t T)
{
    if ((split != RT_TEXT_TRAIN && split != RT_TEXT_VAL) || T < 1 || d->n[split] < T + 1) return 0;
    return (d->n[split] - 1) / T;
}

int64_t rt_text_windows(const rt_text *d, rt_ctx *ctx, int split,
                        int64_t first, int64_t N, int64_t T, int32_t *batch)
{
    if (check_windows(d, ctx, split, N, T)) return -1;
    if (first < 0) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "text windows: first %lld must be >= 0", (long long)first);
        return -1;
    }
    int64_t total = rt_text_windows_count(d, split, T), k = 0;
    for (; k < N && first + k < total; k++)
        memcpy(batch + k * (T + 1), d->ids[split] + (first + k) * T, (size_t)(T + 1) * sizeof *batch);
    return k;
}
