/*
 * vec.h -- private to the core: the loop form gcc's -O2 vectoriser accepts
 * (blocks of VW with a fixed-trip inner loop, then a scalar tail).
 */
#ifndef RT_VEC_H
#define RT_VEC_H
#include <stdint.h>

#define VW 8

/* for (int64_t i = 0; i < n; i++) { body } in blocks of VW. */
#define VLOOP(i, n, body)                                                      \
    do {                                                                       \
        int64_t i##_b = 0, i##_n = (n);                                        \
        for (; i##_b + VW <= i##_n; i##_b += VW)                               \
            for (int i##_k = 0; i##_k < VW; i##_k++) {                         \
                int64_t i = i##_b + i##_k;                                     \
                body                                                           \
            }                                                                  \
        for (int64_t i = i##_b; i < i##_n; i++) {                              \
            body                                                               \
        }                                                                      \
    } while (0)

#endif
