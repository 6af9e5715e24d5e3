/*
 * store.h — the counter store interface, and the metering operation that is
 * its unit of atomicity.
 *
 * The engine never touches counters directly: for every decision it builds
 * one struct cp_meter_op ("release these reservations, then check these
 * costs against these caps and add them if allowed") and hands it to the
 * store. The embedded store (src/store/memstore.c) applies it in memory with
 * cp_meter_apply(); a fleet store can run the same operation as one atomic
 * server-side script (Redis EVALSHA with the rules as arguments), which is
 * why limits travel in the operation and are never part of the stored key.
 *
 * Thread: stores are owned by the loop thread.
 */
#ifndef CP_CORE_STORE_H
#define CP_CORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#define CP_DOM_RING 8     /* recent recipient domains remembered per account */
#define CP_KEY_MAX 256    /* account key bytes, "u:", "c:" or "ip:" prefixed */

/* The stored state of one account. */
struct cp_counters {
    int64_t t_ms;                  /* time the levels were last leaked to */
    float level[CP_MAX_SLOTS];     /* units in the bucket, per slot */
    uint32_t dom[CP_DOM_RING];     /* hashes of recent recipient domains */
    uint8_t dom_next;
    uint8_t state;                 /* enum cp_state (core/lifecycle.h) */
    uint8_t repeat;                /* times the account was blocked */
    uint32_t state_since_s;        /* when the state began */
};

struct cp_evidence;

/* The live record of an account (embedded store: valid until the next
 * store call). */
struct cp_account_ref {
    struct cp_counters *c;
    struct cp_evidence *ev;        /* NULL unless asked for */
};

struct cp_meter_rule {
    uint8_t slot;
    bool enforce;    /* over cap denies the whole operation */
    bool domain;     /* cost is 1 if the recipient domain is new, else 0 */
    bool nocheck;    /* add the cost, never report a breach (already
                        checked when it was reserved) */
    double cap;      /* units (the rule's max) */
    double rate;     /* units leaked per ms: max / window */
    double cost;     /* units to add (ignored when domain) */
};

struct cp_meter_op {
    const char *key;
    size_t keylen;
    int64_t now_ms;
    /* Step 1: release earlier reservations, per metric, from every slot of
     * that metric (clamped at zero; needs no leak, see doc/design.md). */
    double release[CP_METRIC_COUNT];
    const struct cp_slot *slots; /* slot table, for the metric of a slot */
    size_t nslots;
    /* Step 2 (if nrules > 0): leak the rules' slots to now_ms (others are
     * reset: they belong to rules the account no longer has), check, add. */
    size_t nrules;
    struct cp_meter_rule rule[CP_MAX_RULES];
    uint32_t domain_hash; /* recipient domain of this RCPT, 0: none */
};

struct cp_meter_result {
    int denied;                  /* first enforced rule over cap, or -1 */
    uint32_t over;               /* bit i: rule i would exceed its cap */
    double level[CP_MAX_RULES];  /* level before this op's cost */
    double cost[CP_MAX_RULES];   /* the cost checked (domains resolved) */
    bool new_domain;
    bool created;                /* the account did not exist before */
};

/*
 * Apply `op` to `c` (pure; the reference semantics every store follows).
 * Costs are added only when no enforced rule would exceed its cap.
 */
void cp_meter_apply(struct cp_counters *c, const struct cp_meter_op *op,
                    struct cp_meter_result *res);

/* Level of slot `slot` as of now (leak applied, not stored). */
double cp_meter_level_now(const struct cp_counters *c, unsigned slot,
                          double rate, int64_t now_ms);

struct cp_store;

struct cp_store_ops {
    /* Apply one operation atomically. */
    void (*meter)(struct cp_store *st, const struct cp_meter_op *op,
                  struct cp_meter_result *res);
    /* Copy an account's counters; false if it is not tracked. */
    bool (*peek)(struct cp_store *st, const char *key, size_t len,
                 struct cp_counters *out);
    /*
     * The live record of an account, created if `create`; with `evidence`
     * its evidence is allocated on first use. False if absent. Not yet: a
     * networked (fleet) store will need an operation-shaped equivalent.
     */
    bool (*account)(struct cp_store *st, const char *key, size_t len,
                    bool create, bool evidence, struct cp_account_ref *out);
    size_t (*count)(struct cp_store *st);
    size_t (*bytes)(struct cp_store *st); /* memory used, approximately */
};

struct cp_store {
    const struct cp_store_ops *ops;
};

#endif
