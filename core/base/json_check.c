/*
 * json_check.c -- what cJSON accepts and retort must not: the one check run
 * on every JSON text that comes from a file or a user before cJSON parses
 * it (safetensors headers, plugin options).
 *
 * cJSON decodes an escape \uXXXX whose digits are not hex (\uZZZZ) as code
 * point 0, and cuts the string there: "a\uZZZZb" silently becomes "a".  A
 * raw NUL byte ends the text early.  Either would let two different files
 * (or option tables) mean the same name, or a name differ from what a
 * person reads.  So: no NUL byte anywhere, and inside strings every escape
 * is one of \" \\ \/ \b \f \n \r \t or \u with four hex digits that is not
 * \u0000 and not half of a surrogate pair.
 */
#include "json_check.h"
#include "retort.h"

static int hex4(const char *s, size_t n, size_t i, unsigned *v)
{
    if (i + 4 > n) return 0;
    unsigned x = 0;
    for (size_t k = 0; k < 4; k++) {
        char c = s[i + k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return 0;
        x = x << 4 | (unsigned)d;
    }
    *v = x;
    return 1;
}

size_t rt_json_check(const char *s, size_t n, const char **why)
{
    int in = 0;
    *why = NULL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == 0) {
            *why = "NUL byte";
            return i;
        }
        if (c == '"') {
            in = !in;
            continue;
        }
        if (!in || c != '\\') continue;
        if (i + 1 >= n) {
            *why = "backslash at the end of the text";
            return i;
        }
        char e = s[i + 1];
        if (e != 'u') {
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't') {
                *why = "invalid escape";
                return i;
            }
            i++;
            continue;
        }
        unsigned u, lo;
        if (!hex4(s, n, i + 2, &u)) {
            *why = "\\u escape without four hex digits";
            return i;
        }
        if (u == 0) {
            *why = "\\u0000 escape";
            return i;
        }
        if (u >= 0xDC00 && u <= 0xDFFF) {
            *why = "lone low surrogate escape";
            return i;
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (!(i + 7 < n && s[i + 6] == '\\' && s[i + 7] == 'u' && hex4(s, n, i + 8, &lo) && lo >= 0xDC00 &&
                  lo <= 0xDFFF)) {
                *why = "high surrogate escape without its low half";
                return i;
            }
            i += 6;
        }
        i += 5;
    }
    return n;
}
