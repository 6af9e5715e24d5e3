/* tagset.c — see tagset.h. */
#include "util/tagset.h"

#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

void
tagset_init(struct tagset *t, size_t slots)
{
    size_t n = 2;

    while (n < slots)
        n <<= 1;
    t->slot = xcalloc(n, sizeof(*t->slot));
    t->mask = n - 1;
    t->used = 0;
}

void
tagset_fini(struct tagset *t)
{
    free(t->slot);
    memset(t, 0, sizeof(*t));
}

static uint32_t
tag_of(uint64_t h)
{
    uint32_t tag = (uint32_t)(h >> 32);

    return tag ? tag : 1;
}

void
tagset_add(struct tagset *t, uint64_t h)
{
    size_t i = (size_t)h & t->mask & ~(size_t)1;
    uint32_t tag = tag_of(h);

    if (t->slot[i] == tag || t->slot[i + 1] == tag)
        return;
    for (size_t k = 0; k < 2; k++) {
        if (t->slot[i + k] == 0) {
            t->slot[i + k] = tag;
            t->used++;
            return;
        }
    }
    t->slot[i + (tag & 1)] = tag; /* full: one of the two goes */
}

bool
tagset_has(const struct tagset *t, uint64_t h)
{
    size_t i = (size_t)h & t->mask & ~(size_t)1;
    uint32_t tag = tag_of(h);

    return t->slot != NULL && (t->slot[i] == tag || t->slot[i + 1] == tag);
}

size_t
tagset_bytes(const struct tagset *t)
{
    return t->slot ? (t->mask + 1) * sizeof(*t->slot) : 0;
}

const void *
tagset_data(const struct tagset *t)
{
    return t->slot;
}

bool
tagset_load(struct tagset *t, const void *data, size_t len)
{
    if (t->slot == NULL || len != tagset_bytes(t))
        return false;
    memcpy(t->slot, data, len);
    t->used = 0;
    for (size_t i = 0; i <= t->mask; i++)
        t->used += t->slot[i] != 0;
    return true;
}
