/*
 * tagset.h — a fixed-size set of 64-bit hashes, each kept as a 32-bit tag
 * in a two-way table: `tagset_has` says "probably" (a false positive per
 * look-up about 2 / 2^32), and once the table is full an insert takes over
 * one of the two slots (chosen by the hash), so old members are forgotten
 * first only on average. No allocation after tagset_init; 4 bytes a slot.
 *
 * Used for (account, recipient) pairs the next hop accepted (the
 * delivery evidence's memory of addresses that existed, doc/detection.md).
 * Not thread-safe: one owner.
 */
#ifndef CP_UTIL_TAGSET_H
#define CP_UTIL_TAGSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tagset {
    uint32_t *slot; /* 0: empty */
    size_t mask;    /* slots - 1; slots a power of two >= 2 */
    size_t used;
};

/* At least `slots` slots (rounded up to a power of two, >= 2). */
void tagset_init(struct tagset *t, size_t slots);
void tagset_fini(struct tagset *t);
void tagset_add(struct tagset *t, uint64_t h);
bool tagset_has(const struct tagset *t, uint64_t h);
/* The table as bytes (tags in host byte order), for storing it; and back: false
 * if `len` does not match the table's size (it is left as it was). */
size_t tagset_bytes(const struct tagset *t);
const void *tagset_data(const struct tagset *t);
bool tagset_load(struct tagset *t, const void *data, size_t len);

#endif
