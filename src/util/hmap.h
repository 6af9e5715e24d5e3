/*
 * hmap.h — open-addressing hash table of (64-bit hash, value pointer).
 *
 * The table does not own keys or values: the value holds its own key and the
 * caller supplies an equality callback. 16 bytes per slot, load factor kept
 * under 3/4 (linear probing, backward-shift deletion, no tombstones), so it
 * stays compact with millions of entries. Growing rehashes everything at
 * once: O(n) on the calling thread, amortised O(1).
 * Not thread-safe: one owner (the loop thread).
 */
#ifndef CP_UTIL_HMAP_H
#define CP_UTIL_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hmap_ent {
    uint64_t hash;
    void *val; /* NULL: empty slot */
};

struct hmap {
    struct hmap_ent *ents;
    size_t cap; /* power of two */
    size_t count;
};

typedef bool (*hmap_eq_fn)(const void *val, const void *key, size_t keylen);

uint64_t hmap_hash(const void *key, size_t len);
/* Case-insensitive (ASCII) 32-bit hash of at most the first 256 bytes,
 * never 0 (0 means "none" to callers). */
uint32_t hmap_hash_lower32(const char *s, size_t len);
/* The same, 64 bits (0 possible). */
uint64_t hmap_hash_lower(const char *s, size_t len);
void hmap_init(struct hmap *m, size_t expected);
/* Frees the table only; values belong to the caller. */
void hmap_fini(struct hmap *m);
void *hmap_get(const struct hmap *m, uint64_t h, const void *key, size_t len,
               hmap_eq_fn eq);
/* Insert; the caller guarantees the key is not present. */
void hmap_put(struct hmap *m, uint64_t h, void *val);
/* Remove and return the value, or NULL. */
void *hmap_del(struct hmap *m, uint64_t h, const void *key, size_t len,
               hmap_eq_fn eq);
/* Memory used by the table itself, for accounting. */
size_t hmap_bytes(const struct hmap *m);

#define HMAP_FOREACH(m, i)                                                     \
    for (size_t i = 0; i < (m)->cap; i++)                                     \
        if ((m)->ents[i].val != NULL)

#endif
