/* xalloc.c — see xalloc.h. */
#include "util/xalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/msg.h"

void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        msg_panic("out of memory allocating %zu bytes", n);
    return p;
}

void *
xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);

    if (p == NULL)
        msg_panic("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        msg_panic("out of memory reallocating %zu bytes", n);
    return q;
}

void *
xreallocarray(void *p, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        msg_panic("allocation overflow: %zu x %zu", count, size);
    return xrealloc(p, count * size);
}

char *
xstrdup(const char *s)
{
    return xmemdup0(s, strlen(s));
}

char *
xmemdup0(const char *s, size_t len)
{
    char *p;

    if (len == SIZE_MAX)
        msg_panic("allocation overflow");
    p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
