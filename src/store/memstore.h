/*
 * memstore.h — the embedded counter store: every account's counters in one
 * hash table in memory, owned by the loop thread, made durable by
 * checkpoints of the accounts changed since the last one
 * (src/store/sqlite_accounts.c writes them on a worker thread).
 *
 * Memory: one allocation per account (struct cp_counters + key, about
 * 100 + key bytes) plus 16 bytes of table slot at ≤ 3/4 load; see
 * doc/performance.md for the measured figure.
 */
#ifndef CP_STORE_MEMSTORE_H
#define CP_STORE_MEMSTORE_H

#include <stddef.h>

#include "core/store.h"
#include "util/hmap.h"
#include "util/strbuf.h"

struct acct;

struct memstore {
    struct cp_store base; /* first: a memstore is a cp_store */
    struct hmap accts;
    size_t key_bytes;
    size_t dirty;          /* entries in dirty_list */
    struct acct **dirty_list; /* accounts changed since the last collect */
    size_t dirty_cap;
    bool track_dirty;      /* false: no checkpoints (simulation) */
    size_t evidence;       /* accounts with evidence allocated */
    struct acct *last;     /* the account looked up last */
    struct strbuf gone;    /* evicted keys not yet deleted from the store:
                              [length byte][key]... */
    size_t ngone;
    uint64_t evicted;      /* accounts evicted, ever */
};

/* A copy of changed accounts, handed to the checkpoint worker. */
struct ckpt_record {
    size_t key_off;
    size_t keylen;
    struct cp_counters c;
    int32_t ev;       /* its evidence: index in ckpt_batch.ev, or -1 */
    bool ev_delete;   /* no evidence to keep: delete the stored one */
    bool gone;        /* evicted: delete its rows */
};

struct cp_evidence;

struct ckpt_batch {
    struct strbuf keys;
    struct ckpt_record *rec;
    size_t n, cap;
    struct cp_evidence *ev; /* copies of the evidence that goes along */
    size_t nev, capev;
    char slots[CP_MAX_SLOTS * CP_RULE_NAME_MAX]; /* "name,name,..." */
};

/*
 * Which evidence a checkpoint stores: all of it (`all`: the final
 * checkpoint, a clean shutdown), or only that of accounts in the middle of
 * detection — a state other than NORMAL, or a score of at least
 * `min_score` — so that a crash does not give a half-detected zombie a
 * clean start, while the checkpoints under load copy little. det NULL:
 * none (the stored evidence is left alone).
 */
struct ckpt_ev_policy {
    const struct cp_detection *det;
    bool all;
    double min_score;
    int64_t now_ms;
};

struct memstore *memstore_new(size_t expected);
void memstore_free(struct memstore *ms);
/* Insert or overwrite one account without marking it dirty (loading). */
void memstore_restore(struct memstore *ms, const char *key, size_t len,
                      const struct cp_counters *c);
/* Move up to `max` changed accounts into `b` (cleared first), with the
 * evidence `p` asks for, and mark them clean. */
void memstore_collect_dirty(struct memstore *ms, struct ckpt_batch *b,
                            const struct ckpt_ev_policy *p, size_t max);
/*
 * Evict accounts that hold nothing worth keeping until at most `target`
 * are left: NORMAL, not waiting for a checkpoint, unused for `idle_ms`
 * (the longest limit window: their counters have drained), and with no
 * stored evidence and none in memory that scores beyond ±0.5 (habits
 * only: relearnt). Their rows are deleted by the next checkpoint.
 * Returns how many were evicted.
 */
size_t memstore_evict(struct memstore *ms, const struct cp_detection *det,
                      size_t target, int64_t now_ms, int64_t idle_ms);
/* Mark every account with evidence changed (before a final checkpoint
 * that stores all evidence). */
void memstore_mark_evidence_dirty(struct memstore *ms);
/* Give an account its stored evidence (loading); false if the account
 * does not exist. */
bool memstore_restore_evidence(struct memstore *ms, const char *key,
                               size_t len, const struct cp_evidence *ev);
/* Mark the accounts of a failed batch dirty again. */
void memstore_mark_dirty(struct memstore *ms, const struct ckpt_batch *b);
/*
 * After a reload changed the slot table: move every account's levels from
 * slot positions named in `from` to those in `to` (by name; dropped slots
 * are discarded).
 */
void memstore_remap(struct memstore *ms, const struct cp_slot *from,
                    size_t nfrom, const struct cp_slot *to, size_t nto);

/*
 * Free the evidence of accounts idle for `idle_ms` whose score has faded to
 * about zero (their state and counters stay). Returns how many.
 */
size_t memstore_sweep(struct memstore *ms, const struct cp_detection *det,
                      int64_t now_ms, int64_t idle_ms);

/*
 * The end of learning (store/memstore.c's caller: chokepoint learn, a
 * simulated warm start): every account keeps its evidence's habits
 * (cp_evidence_habits_only) and forgets its counters and state.
 */
void memstore_learned(struct memstore *ms);

/* Call fn for every account that has evidence (in no particular order). */
void memstore_each_evidence(struct memstore *ms,
                            void (*fn)(void *arg, const char *key,
                                       size_t keylen,
                                       const struct cp_evidence *ev),
                            void *arg);

/* Call fn for every account whose state is not NORMAL. */
void memstore_each_state(struct memstore *ms,
                         void (*fn)(void *arg, const char *key, size_t keylen,
                                    const struct cp_counters *c),
                         void *arg);

/* One account of memstore_top(). */
struct memstore_top_row {
    char key[CP_KEY_MAX];
    size_t keylen;
    double score;
    uint8_t state;
};

/*
 * The `n` accounts with the highest current evidence score, or in a state
 * other than NORMAL, highest first (`rows` has room for n). Returns how
 * many were found. O(accounts): for the admin socket, not the hot path.
 */
size_t memstore_top(struct memstore *ms, const struct cp_detection *det,
                    int64_t now_ms, struct memstore_top_row *rows, size_t n);

void ckpt_batch_init(struct ckpt_batch *b);
void ckpt_batch_fini(struct ckpt_batch *b);
void ckpt_batch_set_slots(struct ckpt_batch *b, const struct cp_slot *slots,
                          size_t n);

#endif
