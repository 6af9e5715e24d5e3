/* hmap.c — see hmap.h. */
#include "util/hmap.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "util/msg.h"
#include "util/xalloc.h"

uint64_t
hmap_hash(const void *key, size_t len)
{
    return XXH3_64bits(key, len);
}

uint64_t
hmap_hash_lower(const char *s, size_t len)
{
    char buf[256];
    size_t n = len < sizeof(buf) ? len : sizeof(buf);

    for (size_t i = 0; i < n; i++)
        buf[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    return XXH3_64bits(buf, n);
}

uint32_t
hmap_hash_lower32(const char *s, size_t len)
{
    uint32_t h = (uint32_t)hmap_hash_lower(s, len);

    return h ? h : 1;
}

void
hmap_init(struct hmap *m, size_t expected)
{
    size_t cap = 16;

    while (cap < expected + expected / 3 + 1)
        cap *= 2;
    m->ents = xcalloc(cap, sizeof(*m->ents));
    m->cap = cap;
    m->count = 0;
}

void
hmap_fini(struct hmap *m)
{
    free(m->ents);
    memset(m, 0, sizeof(*m));
}

void *
hmap_get(const struct hmap *m, uint64_t h, const void *key, size_t len,
         hmap_eq_fn eq)
{
    size_t mask = m->cap - 1, i;

    for (i = h & mask; m->ents[i].val != NULL; i = (i + 1) & mask) {
        if (m->ents[i].hash == h && eq(m->ents[i].val, key, len))
            return m->ents[i].val;
    }
    return NULL;
}

static void
hmap_insert(struct hmap_ent *ents, size_t cap, uint64_t h, void *val)
{
    size_t mask = cap - 1, i;

    for (i = h & mask; ents[i].val != NULL; i = (i + 1) & mask)
        ;
    ents[i].hash = h;
    ents[i].val = val;
}

static void
hmap_grow(struct hmap *m)
{
    size_t ncap = m->cap * 2, i;
    struct hmap_ent *n;

    if (ncap < m->cap)
        msg_panic("hmap: table too large");
    n = xcalloc(ncap, sizeof(*n));
    for (i = 0; i < m->cap; i++)
        if (m->ents[i].val != NULL)
            hmap_insert(n, ncap, m->ents[i].hash, m->ents[i].val);
    free(m->ents);
    m->ents = n;
    m->cap = ncap;
}

void
hmap_put(struct hmap *m, uint64_t h, void *val)
{
    if (val == NULL)
        msg_panic("hmap_put: NULL value");
    if ((m->count + 1) * 4 > m->cap * 3)
        hmap_grow(m);
    hmap_insert(m->ents, m->cap, h, val);
    m->count++;
}

void *
hmap_del(struct hmap *m, uint64_t h, const void *key, size_t len,
         hmap_eq_fn eq)
{
    size_t mask = m->cap - 1, i, j;
    void *val;

    for (i = h & mask; m->ents[i].val != NULL; i = (i + 1) & mask)
        if (m->ents[i].hash == h && eq(m->ents[i].val, key, len))
            break;
    val = m->ents[i].val;
    if (val == NULL)
        return NULL;
    /* Backward-shift: move later members of the probe run into the hole. */
    for (j = (i + 1) & mask; m->ents[j].val != NULL; j = (j + 1) & mask) {
        size_t home = m->ents[j].hash & mask;

        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->ents[i] = m->ents[j];
            i = j;
        }
    }
    m->ents[i].val = NULL;
    m->count--;
    return val;
}

size_t
hmap_bytes(const struct hmap *m)
{
    return m->cap * sizeof(*m->ents);
}
