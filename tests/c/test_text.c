/*
 * test_text.c -- text datasets (core/io/text.c): the byte tokenizer and the
 * tokenizer interface, reading a file, a folder and memory, the per-file
 * train/validation split, windows reproducible from (seed, epoch), the
 * errors, and the fortunes corpus when installed.
 */
#include "rt_text.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static void write_file(const char *name, const char *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, len, f);
    fclose(f);
}

static void path_of(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

/* The tokens of a split as a string (bytes tokenizer). */
static int split_is(const rt_text *d, int split, const char *want)
{
    int64_t n = rt_text_count(d, split);
    const int32_t *t = rt_text_tokens(d, split);
    if (n != (int64_t)strlen(want)) {
        fprintf(stderr, "  split %d: %lld tokens, want %zu\n", split, (long long)n, strlen(want));
        return 0;
    }
    for (int64_t i = 0; i < n; i++)
        if (t[i] != (unsigned char)want[i]) return 0;
    return 1;
}

/* ============================================================ tokenizers */

static void test_byte_tokenizer(void)
{
    const rt_tokenizer *tok = rt_tokenizer_bytes();
    CHECK(!strcmp(tok->name(tok->self), "bytes"));
    CHECK(tok->vocab_size(tok->self) == 256);
    const char text[] = "h\xc3\xa9\0\xff!"; /* UTF-8, a NUL, 0xff */
    size_t len = sizeof text - 1;
    int64_t n = -1;
    rt_ctx *ctx = rt_ctx_new();
    CHECK(tok->encode(tok->self, ctx, text, len, NULL, 0, &n) == RT_STATUS_OK);
    CHECK(n == 6);
    int32_t ids[6];
    CHECK(tok->encode(tok->self, ctx, text, len, ids, 6, &n) == RT_STATUS_OK);
    CHECK(ids[0] == 'h' && ids[1] == 0xc3 && ids[3] == 0 && ids[4] == 255);
    char back[8];
    size_t blen = 0;
    CHECK(tok->decode(tok->self, ctx, ids, 6, back, sizeof back, &blen) == RT_STATUS_OK);
    CHECK(blen == len && !memcmp(back, text, len));
    /* A short buffer: truncated, full length reported. */
    CHECK(tok->decode(tok->self, ctx, ids, 6, back, 2, &blen) == RT_STATUS_OK);
    CHECK(blen == 6 && back[0] == 'h');
    ids[2] = 256;
    CHECK(tok->decode(tok->self, ctx, ids, 6, back, sizeof back, &blen) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "id 256 at index 2");
    rt_ctx_free(ctx);
}

/* Another tokenizer through the same interface: lower-case letters 0..25,
 * anything else 26 (vocabulary 27); `bad` makes it emit an id outside. */
typedef struct letters {
    int bad;
} letters;
static const char *letters_name(const void *self) { return "letters"; }
static int64_t letters_vocab(const void *self) { return 27; }
static rt_status letters_encode(const void *self, rt_ctx *ctx, const char *text, size_t len, int32_t *ids,
                                int64_t cap, int64_t *n)
{
    const letters *l = self;
    for (size_t i = 0; i < len && (int64_t)i < cap; i++)
        ids[i] = l->bad && i == 3 ? 99 : (text[i] >= 'a' && text[i] <= 'z' ? text[i] - 'a' : 26);
    *n = (int64_t)len;
    return RT_STATUS_OK;
}
static rt_status letters_decode(const void *self, rt_ctx *ctx, const int32_t *ids, int64_t n, char *buf,
                                size_t cap, size_t *len)
{
    for (int64_t i = 0; i < n && (size_t)i < cap; i++) buf[i] = ids[i] < 26 ? (char)('a' + ids[i]) : ' ';
    *len = (size_t)n;
    return RT_STATUS_OK;
}

static void test_custom_tokenizer(void)
{
    letters self = {0};
    rt_tokenizer tok = {&self, letters_name, letters_vocab, letters_encode, letters_decode};
    rt_ctx *ctx = rt_ctx_new();
    rt_text *d = NULL;
    rt_text_opts o = {0, 0, NULL};
    CHECK(rt_text_from_memory(ctx, "ab Z", 4, "mem", &tok, &o, &d) == RT_STATUS_OK);
    if (d) {
        const int32_t *t = rt_text_tokens(d, RT_TEXT_TRAIN);
        CHECK(rt_text_count(d, RT_TEXT_TRAIN) == 4);
        CHECK(t[0] == 0 && t[1] == 1 && t[2] == 26 && t[3] == 26);
        CHECK(rt_text_tokenizer(d) == &tok);
        CHECK(rt_text_count(d, RT_TEXT_VAL) == 0 && rt_text_tokens(d, RT_TEXT_VAL) == NULL);
    }
    rt_text_free(d);
    /* A tokenizer that breaks its own contract is caught, not trusted. */
    self.bad = 1;
    d = NULL;
    CHECK(rt_text_from_memory(ctx, "abcdef", 6, "mem", &tok, &o, &d) == RT_STATUS_ERR_STATE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "tokenizer 'letters' gave id 99 at token 3");
    CHECK(d == NULL);
    rt_ctx_free(ctx);
}

/* ================================================================ reading */

static void test_folder_split(void)
{
    /* Sorted by name: a.txt before b.txt, whatever the creation order. */
    write_file("b.txt", "0123456789", 10);
    write_file("a.txt", "abcdefghijklmnopqrst", 20);
    write_file(".hidden", "HIDDEN", 6);
    write_file("a.txt.dat", "\x00\x01\x02", 3);
    char sub[512], link[512], target[512];
    path_of(sub, sizeof sub, "sub");
    CHECK(mkdir(sub, 0700) == 0);
    path_of(link, sizeof link, "link");
    path_of(target, sizeof target, "a.txt");
    CHECK(symlink(target, link) == 0);
    rt_ctx *ctx = rt_ctx_new();
    rt_text *d = NULL;
    rt_text_opts o = {0.25, 0, ".dat"};
    CHECK(rt_text_open(ctx, tmpdir, NULL, &o, &d) == RT_STATUS_OK);
    if (d) {
        CHECK(rt_text_files(d) == 2);
        CHECK(rt_text_bytes(d) == 30);
        /* Each file's last quarter (floor(0.25 n): 5 of 20, 2 of 10) goes
         * to validation. */
        CHECK(split_is(d, RT_TEXT_TRAIN, "abcdefghijklmno" "01234567"));
        CHECK(split_is(d, RT_TEXT_VAL, "pqrst" "89"));
        CHECK(!strcmp(rt_text_tokenizer(d)->name(NULL), "bytes"));
    }
    rt_text_free(d);
    /* Without the suffix skip the .dat file is read too. */
    o.skip_suffix = NULL;
    d = NULL;
    CHECK(rt_text_open(ctx, tmpdir, NULL, &o, &d) == RT_STATUS_OK);
    if (d) CHECK(rt_text_files(d) == 3);
    rt_text_free(d);
    /* One file, and the same bytes from memory, give the same tokens. */
    char a[512];
    path_of(a, sizeof a, "a.txt");
    rt_text *f = NULL, *m = NULL;
    o.skip_suffix = NULL;
    CHECK(rt_text_open(ctx, a, NULL, &o, &f) == RT_STATUS_OK);
    CHECK(rt_text_from_memory(ctx, "abcdefghijklmnopqrst", 20, NULL, NULL, &o, &m) == RT_STATUS_OK);
    if (f && m) {
        CHECK(split_is(f, RT_TEXT_TRAIN, "abcdefghijklmno"));
        CHECK(split_is(m, RT_TEXT_TRAIN, "abcdefghijklmno"));
        CHECK(split_is(m, RT_TEXT_VAL, "pqrst"));
        CHECK(rt_text_files(f) == 1);
    }
    rt_text_free(f);
    rt_text_free(m);
    /* Defaults (opts NULL): a tenth to validation. */
    f = NULL;
    CHECK(rt_text_open(ctx, a, NULL, NULL, &f) == RT_STATUS_OK);
    if (f) CHECK(rt_text_count(f, RT_TEXT_VAL) == 2);
    rt_text_free(f);
    rt_ctx_free(ctx);
    unlink(link);
    rmdir(sub);
}

static void test_read_errors(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_text *d = NULL;
    char p[512], empty[512];
    path_of(p, sizeof p, "missing");
    CHECK(rt_text_open(ctx, p, NULL, NULL, &d) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "missing");
    CHECK_CONTAINS(rt_ctx_message(ctx), "No such file");
    /* A folder with nothing to read. */
    path_of(empty, sizeof empty, "empty");
    CHECK(mkdir(empty, 0700) == 0);
    CHECK(rt_text_open(ctx, empty, NULL, NULL, &d) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "has no regular file");
    /* An empty file: no tokens. */
    write_file("empty/zero", "", 0);
    CHECK(rt_text_open(ctx, empty, NULL, NULL, &d) == RT_STATUS_ERR_FORMAT);
    CHECK_CONTAINS(rt_ctx_message(ctx), "empty");
    /* The size bound names the file that crosses it. */
    write_file("empty/one", "0123456789", 10);
    write_file("empty/two", "0123456789", 10);
    rt_text_opts o = {0.1, 15, NULL};
    CHECK(rt_text_open(ctx, empty, NULL, &o, &d) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "empty/two' (10 bytes)");
    CHECK_CONTAINS(rt_ctx_message(ctx), "bound of 15 bytes");
    o.max_bytes = 20;
    CHECK(rt_text_open(ctx, empty, NULL, &o, &d) == RT_STATUS_OK);
    rt_text_free(d);
    d = NULL;
    o.val_fraction = 1;
    CHECK(rt_text_open(ctx, empty, NULL, &o, &d) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "val_fraction 1 must be in [0, 1)");
    CHECK(d == NULL);
    rt_ctx_free(ctx);
    char z[512];
    path_of(z, sizeof z, "empty/zero");
    unlink(z);
    path_of(z, sizeof z, "empty/one");
    unlink(z);
    path_of(z, sizeof z, "empty/two");
    unlink(z);
    rmdir(empty);
}

/* Twenty files of 5 bytes at val_fraction 0.1: no file alone has a
 * nonzero floor(0.5), yet the corpus's tenth (10 tokens) goes to
 * validation, spread over the files; and a FIFO is refused, not waited on. */
static void test_small_files_split(void)
{
    char dir[512], name[64], p[600];
    path_of(dir, sizeof dir, "small");
    CHECK(mkdir(dir, 0700) == 0);
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "small/f%02d", i);
        write_file(name, "abcde", 5);
    }
    rt_ctx *ctx = rt_ctx_new();
    rt_text *d = NULL;
    rt_text_opts o = {0.1, 0, NULL};
    CHECK(rt_text_open(ctx, dir, NULL, &o, &d) == RT_STATUS_OK);
    if (d) {
        CHECK(rt_text_files(d) == 20);
        CHECK(rt_text_count(d, RT_TEXT_VAL) == 10);
        CHECK(rt_text_count(d, RT_TEXT_TRAIN) == 90);
        /* Tails: every validation token is the end of a file ('e'). */
        const int32_t *v = rt_text_tokens(d, RT_TEXT_VAL);
        int not_e = 0;
        for (int64_t i = 0; v && i < rt_text_count(d, RT_TEXT_VAL); i++) not_e += v[i] != 'e';
        CHECK(not_e == 0);
    }
    rt_text_free(d);
    for (int i = 0; i < 20; i++) {
        snprintf(p, sizeof p, "%s/f%02d", dir, i);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/fifo", dir);
    CHECK(mkfifo(p, 0600) == 0);
    d = NULL;
    CHECK(rt_text_open(ctx, p, NULL, &o, &d) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "neither a regular file nor a folder");
    /* In a folder, a FIFO is not a regular file: skipped, nothing left. */
    CHECK(rt_text_open(ctx, dir, NULL, &o, &d) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "has no regular file");
    unlink(p);
    rmdir(dir);
    rt_ctx_free(ctx);
}

/* ================================================================ batches */

/* A corpus whose byte i is i mod 251: a window's start is its first byte. */
static rt_text *ramp(rt_ctx *ctx, int64_t n, double val)
{
    char *buf = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) buf[i] = (char)(unsigned char)(i % 251);
    rt_text *d = NULL;
    rt_text_opts o = {val, 0, NULL};
    rt_text_from_memory(ctx, buf, (size_t)n, "ramp", NULL, &o, &d);
    free(buf);
    return d;
}

static void test_batches_reproducible(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_text *d = ramp(ctx, 200, 0);
    CHECK(d != NULL);
    if (!d) return;
    int64_t N = 16, T = 8;
    int32_t a[16 * 9], b[16 * 9], c[16 * 9], a2[16 * 9];
    rt_rng r1, r2, r3;
    rt_text_epoch_rng(&r1, 42, 3);
    rt_text_epoch_rng(&r2, 42, 3);
    rt_text_epoch_rng(&r3, 42, 4);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, N, T, &r1, a) == RT_STATUS_OK);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, N, T, &r1, a2) == RT_STATUS_OK);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, N, T, &r2, b) == RT_STATUS_OK);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, N, T, &r3, c) == RT_STATUS_OK);
    CHECK(!memcmp(a, b, sizeof a));  /* same (seed, epoch): same batch */
    CHECK(memcmp(a, c, sizeof a));   /* another epoch: another batch */
    CHECK(memcmp(a, a2, sizeof a));  /* the next batch of the epoch differs */
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, N, T, &r2, b) == RT_STATUS_OK);
    CHECK(!memcmp(a2, b, sizeof a)); /* and is reproducible too */
    /* Each row is T + 1 consecutive tokens: targets are inputs shifted. */
    int bad = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = 0; t < T; t++)
            if (a[n * (T + 1) + t + 1] != (a[n * (T + 1) + t] + 1) % 251) bad++;
    CHECK(bad == 0);
    rt_text_free(d);
    /* Every start is drawn, both ends included: 3 possible starts. */
    d = ramp(ctx, 11, 0);
    int seen[3] = {0}, out_of_range = 0;
    rt_rng r;
    rt_text_epoch_rng(&r, 1, 0);
    for (int i = 0; i < 60; i++) {
        int32_t w[9];
        CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, 1, 8, &r, w) == RT_STATUS_OK);
        if (w[0] < 0 || w[0] > 2) out_of_range++;
        else seen[w[0]]++;
    }
    CHECK(out_of_range == 0);
    CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    rt_text_free(d);
    rt_ctx_free(ctx);
}

static void test_batch_errors_and_windows(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_text *d = ramp(ctx, 100, 0.2); /* 80 train, 20 validation */
    CHECK(d != NULL);
    if (!d) return;
    rt_rng r;
    rt_text_epoch_rng(&r, 7, 0);
    int32_t *buf = malloc(sizeof(int32_t) * 4 * 81);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_VAL, 4, 64, &r, buf) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "validation split has 20 tokens, fewer than a window of T + 1 = 65");
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, 4, 80, &r, buf) == RT_STATUS_ERR_SHAPE);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, 4, 79, &r, buf) == RT_STATUS_OK); /* exactly T + 1 */
    CHECK(buf[0] == 0 && buf[79] == 79);
    CHECK(rt_text_batch(d, ctx, 2, 4, 8, &r, buf) == RT_STATUS_ERR_ARG);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_TRAIN, 0, 8, &r, buf) == RT_STATUS_ERR_ARG);
    /* Evaluation windows: starts 0, T, 2T...; the validation split begins
     * at byte 80 of the ramp. */
    CHECK(rt_text_windows_count(d, RT_TEXT_VAL, 6) == 3); /* (20 - 1) / 6 */
    int32_t w[4 * 7];
    CHECK(rt_text_windows(d, ctx, RT_TEXT_VAL, 0, 4, 6, w) == 3);
    CHECK(w[0] == 80 && w[6] == 86 && w[7] == 86 && w[2 * 7 + 6] == 98);
    CHECK(rt_text_windows(d, ctx, RT_TEXT_VAL, 2, 4, 6, w) == 1);
    CHECK(rt_text_windows(d, ctx, RT_TEXT_VAL, 3, 4, 6, w) == 0);
    CHECK(rt_text_windows(d, ctx, RT_TEXT_VAL, 0, 1, 64, w) == -1);
    free(buf);
    rt_text_free(d);
    rt_ctx_free(ctx);
}

/* ============================================================== fortunes */

static void test_fortunes_corpus(void)
{
    const char *dir = "/usr/share/games/fortunes";
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        printf("  note: %s absent (Debian package fortunes): test_fortunes_corpus skipped\n", dir);
        return;
    }
    rt_ctx *ctx = rt_ctx_new();
    rt_text *d = NULL;
    rt_text_opts o = {0.1, 0, ".dat"}; /* the .u8 names are symlinks: skipped */
    CHECK(rt_text_open(ctx, dir, NULL, &o, &d) == RT_STATUS_OK);
    if (!d) {
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
        rt_ctx_free(ctx);
        return;
    }
    int64_t ntr = rt_text_count(d, RT_TEXT_TRAIN), nva = rt_text_count(d, RT_TEXT_VAL);
    printf("  fortunes: %d files, %lld bytes, %lld train + %lld validation tokens\n", rt_text_files(d),
           (long long)rt_text_bytes(d), (long long)ntr, (long long)nva);
    CHECK(rt_text_files(d) >= 10);
    CHECK(ntr + nva == rt_text_bytes(d));
    CHECK(nva > ntr / 20 && nva < ntr / 5);
    /* Text, not the binary index: fortunes are separated by "%" lines and
     * there is no NUL. */
    const int32_t *t = rt_text_tokens(d, RT_TEXT_TRAIN);
    int64_t seps = 0, nul = 0;
    for (int64_t i = 0; i + 2 < ntr; i++) {
        seps += t[i] == '\n' && t[i + 1] == '%' && t[i + 2] == '\n';
        nul += t[i] == 0;
    }
    CHECK(seps > 1000);
    CHECK(nul == 0);
    int32_t *b = malloc(sizeof(int32_t) * 8 * 129);
    rt_rng r;
    rt_text_epoch_rng(&r, 0, 0);
    CHECK(rt_text_batch(d, ctx, RT_TEXT_VAL, 8, 128, &r, b) == RT_STATUS_OK);
    free(b);
    rt_text_free(d);
    rt_ctx_free(ctx);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/retort_text_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_byte_tokenizer);
    RUN(test_custom_tokenizer);
    RUN(test_folder_split);
    RUN(test_read_errors);
    RUN(test_small_files_split);
    RUN(test_batches_reproducible);
    RUN(test_batch_errors_and_windows);
    RUN(test_fortunes_corpus);
    const char *names[] = {"a.txt", "b.txt", ".hidden", "a.txt.dat"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char p[512];
        path_of(p, sizeof p, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
    return t_summary("test_text");
}
