/*
 * t.h -- the C test harness.  A test is a function; CHECK* record failures
 * with file:line and keep going; a test passes when none of its checks
 * failed.  main() runs tests with RUN() and returns t_summary(), which
 * prints "N passed, N failed" (tests/run.sh adds these up).
 */
#ifndef T_H
#define T_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_passed, t_failed, t_cur_failed;
static const char *t_cur = "";

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "  FAIL %s:%d [%s]: %s\n", __FILE__, __LINE__,  \
                    t_cur, #cond);                                           \
            t_cur_failed++;                                                  \
        }                                                                    \
    } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                \
    do {                                                                     \
        double t_a_ = (double)(a), t_b_ = (double)(b);                       \
        double t_s_ = fabs(t_b_) > 1 ? fabs(t_b_) : 1;                       \
        if (!(fabs(t_a_ - t_b_) <= (tol) * t_s_)) {                          \
            fprintf(stderr, "  FAIL %s:%d [%s]: %s = %.9g, want %s = %.9g\n", \
                    __FILE__, __LINE__, t_cur, #a, t_a_, #b, t_b_);          \
            t_cur_failed++;                                                  \
        }                                                                    \
    } while (0)

/* s contains sub (error messages). */
#define CHECK_CONTAINS(s, sub)                                               \
    do {                                                                     \
        const char *t_s_ = (s);                                              \
        if (!t_s_ || !strstr(t_s_, (sub))) {                                 \
            fprintf(stderr, "  FAIL %s:%d [%s]: \"%s\" lacks \"%s\"\n",      \
                    __FILE__, __LINE__, t_cur, t_s_ ? t_s_ : "(null)", (sub)); \
            t_cur_failed++;                                                  \
        }                                                                    \
    } while (0)

/* |a - b| <= 1e-5 |b| + 1e-7: golden values of losses. */
#define CHECK_REL(a, b)                                                                          \
    do {                                                                                         \
        double a_ = (a), b_ = (b);                                                               \
        if (!(fabs(a_ - b_) <= 1e-5 * fabs(b_) + 1e-7)) {                                        \
            fprintf(stderr, "  FAIL %s:%d [%s]: %s = %.10g, want %.10g\n", __FILE__, __LINE__, t_cur, \
                    #a, a_, b_);                                                                 \
            t_cur_failed++;                                                                      \
        }                                                                                        \
    } while (0)

/* buf = "$RETORT_TEST_BUILD/rel" (the build folder, default "build"). */
static inline const char *t_build_path(char *buf, size_t len, const char *rel)
{
    const char *b = getenv("RETORT_TEST_BUILD");
    snprintf(buf, len, "%s/%s", b && *b ? b : "build", rel);
    return buf;
}

#define RUN(fn)                                                              \
    do {                                                                     \
        t_cur = #fn;                                                         \
        t_cur_failed = 0;                                                    \
        fn();                                                                \
        if (t_cur_failed) {                                                  \
            t_failed++;                                                      \
            fprintf(stderr, "FAIL %s\n", #fn);                               \
        } else {                                                             \
            t_passed++;                                                      \
        }                                                                    \
    } while (0)

static inline int t_summary(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, t_passed, t_failed);
    return t_failed ? 1 : 0;
}
#endif
