/*
 * agemap.c — see agemap.h.
 */
#include "util/agemap.h"

#include <string.h>

static bool
ent_eq(const void *val, const void *key, size_t len)
{
    const struct agemap_ent *e = val;

    return e->klen == len && memcmp(e->key, key, len) == 0;
}

void
agemap_init(struct agemap *m, size_t expected)
{
    memset(m, 0, sizeof(*m));
    hmap_init(&m->h, expected);
}

void
agemap_fini(struct agemap *m)
{
    hmap_fini(&m->h);
    memset(m, 0, sizeof(*m));
}

struct agemap_ent *
agemap_get(const struct agemap *m, const char *key, size_t klen)
{
    return hmap_get(&m->h, hmap_hash(key, klen), key, klen, ent_eq);
}

void
agemap_put(struct agemap *m, struct agemap_ent *e)
{
    e->newer = NULL;
    e->older = m->newest;
    if (m->newest)
        m->newest->newer = e;
    else
        m->oldest = e;
    m->newest = e;
    hmap_put(&m->h, hmap_hash(e->key, e->klen), e);
}

static void
unlink_ent(struct agemap *m, struct agemap_ent *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        m->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        m->newest = e->older;
}

void
agemap_del(struct agemap *m, struct agemap_ent *e)
{
    unlink_ent(m, e);
    hmap_del(&m->h, hmap_hash(e->key, e->klen), e->key, e->klen, ent_eq);
}

void
agemap_touch(struct agemap *m, struct agemap_ent *e, int64_t t_ms)
{
    e->t_ms = t_ms;
    if (m->newest == e)
        return;
    unlink_ent(m, e);
    e->newer = NULL;
    e->older = m->newest;
    m->newest->newer = e; /* not NULL: e was in the list, and not newest */
    m->newest = e;
}

size_t
agemap_count(const struct agemap *m)
{
    return m->h.count;
}

size_t
agemap_bytes(const struct agemap *m)
{
    return hmap_bytes(&m->h);
}
