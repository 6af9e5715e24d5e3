/*
 * agemap.h — entries keyed by bytes, kept in a hash table and in a list by
 * age (oldest first), for tables that expire or evict their oldest entry:
 * pending messages (core/engine.c), queue ids (core/queued.c), and
 * replay's messages in flight and SMTP sessions (cli/replay.c).
 *
 * Intrusive: the caller embeds struct agemap_ent in its own struct, sets
 * key/klen/t_ms (the key bytes belong to the caller's struct and must not
 * move), and frees its struct after agemap_del(). Not thread-safe.
 */
#ifndef CP_UTIL_AGEMAP_H
#define CP_UTIL_AGEMAP_H

#include <stddef.h>
#include <stdint.h>

#include "util/hmap.h"

struct agemap_ent {
    const char *key;
    size_t klen;
    int64_t t_ms; /* creation (or last touch) time; the list is in its order */
    struct agemap_ent *older, *newer;
};

struct agemap {
    struct hmap h;
    struct agemap_ent *oldest, *newest;
};

#define agemap_entry(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

void agemap_init(struct agemap *m, size_t expected);
/* Frees the table only: the caller frees its entries first (walk from
 * m->oldest). */
void agemap_fini(struct agemap *m);
struct agemap_ent *agemap_get(const struct agemap *m, const char *key,
                              size_t klen);
/* Append as the newest entry; the key must not be present. */
void agemap_put(struct agemap *m, struct agemap_ent *e);
void agemap_del(struct agemap *m, struct agemap_ent *e);
/* `e` was used at t_ms (not before its last time): it is the newest. */
void agemap_touch(struct agemap *m, struct agemap_ent *e, int64_t t_ms);
size_t agemap_count(const struct agemap *m);
size_t agemap_bytes(const struct agemap *m);

#endif
