/*
 * test_runfolder.c -- core/io/runfolder.c and the bounded hash: the run lock
 * (a second holder refused with the first's pid; free again after
 * release), the removal of dead writers' temp files only, appends that
 * refuse what is not a regular file, and sha256 refusing special files
 * and honouring its bounds.
 */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "retort.h"
#include "t.h"

static char dir[64];

static void path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static void touch(const char *name, const char *text)
{
    char p[256];
    path(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int exists(const char *name)
{
    char p[256];
    struct stat sb;
    path(p, sizeof p, name);
    return stat(p, &sb) == 0;
}

/* The pid of a process that has exited and been reaped. */
static long dead_pid(void)
{
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    return (long)pid;
}

static void test_lock_one_holder(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_runlock *a = NULL, *b = NULL;
    CHECK(rt_runlock_acquire(ctx, dir, &a) == RT_STATUS_OK && a);
    /* flock belongs to the open file: a second open in this process is
     * a second writer, refused as another process would be */
    CHECK(rt_runlock_acquire(ctx, dir, &b) != RT_STATUS_OK && !b);
    char want[64];
    snprintf(want, sizeof want, "(pid %ld holds ", (long)getpid());
    CHECK_CONTAINS(rt_ctx_message(ctx), want);
    CHECK_CONTAINS(rt_ctx_message(ctx), "is in use by another run");
    rt_runlock_release(a);
    CHECK(rt_runlock_acquire(ctx, dir, &b) == RT_STATUS_OK && b);
    rt_runlock_release(b);
    rt_runlock_release(NULL);
    rt_ctx_free(ctx);
}

static void test_clean_temps(void)
{
    rt_ctx *ctx = rt_ctx_new();
    char dead[64], live[64], mine[64];
    long d = dead_pid();
    snprintf(dead, sizeof dead, "last.safetensors.tmp.%ld", d);
    snprintf(live, sizeof live, "best.safetensors.tmp.%ld", (long)getppid()); /* alive: our parent */
    snprintf(mine, sizeof mine, "manifest.json.tmp.%ld", (long)getpid());
    touch(dead, "x");
    touch(live, "x");
    touch(mine, "x");
    touch("notes.tmp.12ab", "x"); /* not a pid */
    touch("data.tmp.", "x");
    touch("plain.txt", "x");
    int n = -1;
    CHECK(rt_run_clean_temps(ctx, dir, &n) == RT_STATUS_OK);
    CHECK(n == 1);
    CHECK(!exists(dead));
    CHECK(exists(live) && exists(mine) && exists("notes.tmp.12ab") && exists("data.tmp.") && exists("plain.txt"));
    rt_ctx_free(ctx);
}

static void test_append(void)
{
    rt_ctx *ctx = rt_ctx_new();
    char p[256];
    path(p, sizeof p, "m.jsonl");
    CHECK(rt_append_file(ctx, p, "{\"a\":1}\n", 8) == RT_STATUS_OK);
    CHECK(rt_append_file(ctx, p, "{\"b\":2}\n", 8) == RT_STATUS_OK);
    char buf[64] = {0};
    FILE *f = fopen(p, "r");
    size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    CHECK(got == 16 && strcmp(buf, "{\"a\":1}\n{\"b\":2}\n") == 0);
    char fifo[256];
    path(fifo, sizeof fifo, "fifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK(rt_append_file(ctx, fifo, "x\n", 2) != RT_STATUS_OK); /* no reader: must not block */
    CHECK_CONTAINS(rt_ctx_message(ctx), "fifo");
    rt_ctx_free(ctx);
}

static void test_sha256_bounds(void)
{
    rt_ctx *ctx = rt_ctx_new();
    char out[65], p[256], fifo[256];
    path(p, sizeof p, "plain.txt"); /* "x" */
    CHECK(rt_sha256_file(ctx, p, out) == RT_STATUS_OK);
    CHECK(strcmp(out, "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881") == 0);
    CHECK(rt_sha256_file_bounded(ctx, p, 1, 0, out) == RT_STATUS_OK); /* exactly at the bound */
    touch("two.txt", "xy");
    path(p, sizeof p, "two.txt");
    CHECK(rt_sha256_file_bounded(ctx, p, 1, 0, out) != RT_STATUS_OK && out[0] == 0);
    CHECK_CONTAINS(rt_ctx_message(ctx), "more than the hashing limit of 1");
    CHECK(rt_sha256_file(ctx, "/dev/zero", out) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(ctx), "/dev/zero: not a regular file (a character device)");
    path(fifo, sizeof fifo, "fifo");
    CHECK(rt_sha256_file(ctx, fifo, out) != RT_STATUS_OK); /* open must not wait for a writer */
    CHECK_CONTAINS(rt_ctx_message(ctx), "not a regular file (a FIFO)");
    CHECK(rt_sha256_file(ctx, dir, out) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(ctx), "(a folder)");
    rt_ctx_free(ctx);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/rt_runfolder_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    /* a hang is a failure, not a stuck suite */
    alarm(60);
    RUN(test_lock_one_holder);
    RUN(test_clean_temps);
    RUN(test_append);
    RUN(test_sha256_bounds);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_summary("runfolder");
}
