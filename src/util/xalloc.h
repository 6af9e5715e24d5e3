/*
 * xalloc.h — allocation that cannot fail: out of memory is fatal
 * (doc/design.md, "failure kinds"), so callers never test for NULL.
 */
#ifndef CP_UTIL_XALLOC_H
#define CP_UTIL_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
/* Overflow-checked xrealloc(p, count * size). */
void *xreallocarray(void *p, size_t count, size_t size);
char *xstrdup(const char *s);
/* Copy exactly `len` bytes of `s` and add a NUL. */
char *xmemdup0(const char *s, size_t len);

#endif
