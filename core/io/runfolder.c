/*
 * runfolder.c -- what keeps a run folder whole when several processes or a
 * kill -9 are about: one writer at a time (an flock on DIR/.lock, which
 * holds the writer's pid for the message the next one sees), the removal of
 * the temp files a killed writer left behind, and appends to metrics.jsonl
 * that either add a whole line or report an error and add nothing.
 */
#include "retort.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct rt_runlock {
    int fd;
};

#define LOCK_NAME ".lock"

/* "DIR/name", malloc'd; NULL on OOM. */
static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* The pid the holder wrote into the lock file, or 0.  The holder writes it
 * right after it gets the lock, so an empty file is retried for a moment. */
static long holder_pid(int fd)
{
    for (int tries = 0; tries < 20; tries++) {
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = 0;
            long pid = strtol(buf, NULL, 10);
            if (pid > 0) return pid;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

rt_status rt_runlock_acquire(rt_ctx *ctx, const char *dir, rt_runlock **out)
{
    *out = NULL;
    char *path = join(dir, LOCK_NAME);
    rt_runlock *l = malloc(sizeof *l);
    rt_status st = RT_STATUS_OK;
    if (!path || !l) {
        st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory for the run lock", dir);
        goto fail;
    }
    /* O_NONBLOCK: a FIFO planted under the name must not hang the open. */
    l->fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
    if (l->fd < 0) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: cannot open the run lock %s: %s", dir, path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(l->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: the run lock %s is not a regular file; remove it", dir, path);
        goto fail_fd;
    }
    if (flock(l->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            long pid = holder_pid(l->fd);
            if (pid > 0)
                st = rt_error(ctx, RT_STATUS_ERR_IO,
                              "%s is in use by another run (pid %ld holds %s): one writer per run folder; "
                              "wait for it to end or give another out",
                              dir, pid, path);
            else
                st = rt_error(ctx, RT_STATUS_ERR_IO,
                              "%s is in use by another run (a process holds %s): one writer per run folder; "
                              "wait for it to end or give another out",
                              dir, path);
        } else {
            st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: cannot lock %s: %s", dir, path, strerror(errno));
        }
        goto fail_fd;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(l->fd, 0) != 0 || pwrite(l->fd, pid, (size_t)n, 0) != n) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: write of the pid into %s: %s", dir, path, strerror(errno));
        goto fail_fd; /* closing the descriptor releases the lock */
    }
    free(path);
    *out = l;
    return RT_STATUS_OK;
fail_fd:
    close(l->fd);
fail:
    free(path);
    free(l);
    return st;
}

/* The file stays: removing it while another process waits on it would let
 * two processes hold locks on two different files of the same name. */
void rt_runlock_release(rt_runlock *l)
{
    if (!l) return;
    /* Clears the pid; if that fails, the next holder overwrites it. */
    (void)!ftruncate(l->fd, 0);
    close(l->fd);
    free(l);
}

/* The pid of an atomic write's temp file "<name>.tmp.<pid>" (see
 * write_atomic in safetensors.c), or 0 when name is not one. */
static long temp_pid(const char *name)
{
    const char *p = NULL;
    for (const char *s = strstr(name, ".tmp."); s; s = strstr(s + 1, ".tmp.")) p = s;
    if (!p || p == name) return 0;
    p += 5;
    if (!*p) return 0;
    long pid = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || pid > 100000000) return 0;
        pid = pid * 10 + (*p - '0');
    }
    return pid;
}

rt_status rt_run_clean_temps(rt_ctx *ctx, const char *dir, int *removed)
{
    *removed = 0;
    DIR *d = opendir(dir);
    if (!d) return rt_error(ctx, RT_STATUS_ERR_IO, "%s: cannot list the run folder: %s", dir, strerror(errno));
    struct dirent *e;
    rt_status st = RT_STATUS_OK;
    while ((e = readdir(d))) {
        long pid = temp_pid(e->d_name);
        if (pid <= 0 || pid == (long)getpid()) continue;
        /* A live writer (another user's pid gives EPERM) keeps its file. */
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0) {
            st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: cannot remove the stale temp file %s: %s", dir, e->d_name,
                          strerror(errno));
            break;
        }
        (*removed)++;
    }
    closedir(d);
    return st;
}

rt_status rt_append_file(rt_ctx *ctx, const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
    if (fd < 0) return rt_error(ctx, RT_STATUS_ERR_IO, "%s: open for append: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_IO, "%s: not a regular file; not appended to", path);
    }
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;
            /* Take back a partial line, so the file holds whole lines only. */
            int undone = ftruncate(fd, sb.st_size) == 0;
            close(fd);
            return rt_error(ctx, RT_STATUS_ERR_IO, "%s: write at offset %lld: %s (%s)", path,
                            (long long)sb.st_size + (long long)done, strerror(err),
                            undone ? "nothing was added" : "a partial line may remain");
        }
        done += (size_t)n;
    }
    if (close(fd) != 0) return rt_error(ctx, RT_STATUS_ERR_IO, "%s: close after append: %s", path, strerror(errno));
    return RT_STATUS_OK;
}
