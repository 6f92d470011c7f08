/*
 * json_check.h -- private to the core: strict checks cJSON does not make.
 */
#ifndef RT_JSON_CHECK_H
#define RT_JSON_CHECK_H
#include <stddef.h>

/* Offset of the first thing in JSON text s[0..n) that cJSON would decode
 * silently wrong (a NUL byte; inside a string an invalid escape, \u
 * without four hex digits, \u0000, a broken surrogate pair), or n if there
 * is none; *why is a short reason (static) or NULL. */
size_t rt_json_check(const char *s, size_t n, const char **why);

#endif
