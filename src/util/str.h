/*
 * str.h — a borrowed string: `len` bytes at `p`, not NUL-terminated as far
 * as the contract goes; `p` is NULL when the value is absent (an empty
 * value is p != NULL, len 0). The one string view of the parsers (policy
 * codec, milter, mail log) and of the engine's input (core/event.h): they
 * point into a peer's bytes, so nothing may assume a terminator.
 */
#ifndef CP_UTIL_STR_H
#define CP_UTIL_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct str {
    const char *p;
    size_t len;
};

/* A str over a C string (NULL stays absent). */
static inline struct str
str_c(const char *s)
{
    struct str r = {s, s ? strlen(s) : 0};

    return r;
}

/* s is present and equal to the C string lit. */
static inline bool
str_eq(struct str s, const char *lit)
{
    size_t n = strlen(lit);

    return s.p != NULL && s.len == n && memcmp(s.p, lit, n) == 0;
}

/* s is present and not empty. */
static inline bool
str_set(struct str s)
{
    return s.p != NULL && s.len > 0;
}

/* a and b have the same bytes but for ASCII case (absent equals empty). */
static inline bool
str_eq_ci(struct str a, struct str b)
{
    return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

/* The domain of address a (after its last '@'; may be empty), or absent
 * if a has no '@'. (memrchr: _GNU_SOURCE, as the build defines.) */
static inline struct str
str_domain(struct str a)
{
    const char *at = a.p ? (const char *)memrchr(a.p, '@', a.len) : NULL;
    struct str r = {NULL, 0};

    if (at != NULL) {
        r.p = at + 1;
        r.len = a.len - (size_t)(at + 1 - a.p);
    }
    return r;
}

#endif
