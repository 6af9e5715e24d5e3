/*
 * fleet.h — chokepointd's fleet mode (see fleet.c): decisions shared
 * through Redis, degraded mode, hand-over when Redis is back.
 * Thread: the loop thread only.
 */
#ifndef CP_DAEMON_FLEET_H
#define CP_DAEMON_FLEET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/engine.h"
#include "store/sqlite.h"

struct daemon;
struct fleet;
struct fleet_wait;
struct cp_config;
struct cp_redis_stats;

struct fleet_stats {
    uint64_t local;           /* decisions made from the local copy */
    uint64_t merged;          /* accounts whose local charges were added */
    uint64_t merged_changes;  /* state changes handed over */
    uint64_t owed_dropped;    /* charges not kept: FLEET_MAX_OWED */
    uint64_t changes_dropped; /* changes not kept: FLEET_MAX_CHANGES */
    uint64_t gains_dropped;   /* evidence gains not kept: FLEET_MAX_GAINS */
    uint64_t ev_adopted;      /* times the fleet's evidence was taken */
    uint64_t settled;         /* END-OF-MESSAGEs settled here */
    uint64_t history_unshared; /* state changes not in the fleet's history */
    uint64_t owed, changes;   /* waiting for Redis now */
    uint64_t gains;           /* accounts with evidence not told yet */
};

typedef void fleet_done_fn(void *arg);

struct fleet *fleet_start(struct daemon *d);
void fleet_reload(struct fleet *f);
/* A reload replaced `old`: true if waiting decisions still use it (the
 * fleet frees it after the last), false if the caller frees it now. */
bool fleet_retire(struct fleet *f, struct cp_config *old);
void fleet_stop(struct fleet *f); /* closes the connections */
void fleet_free(struct fleet *f); /* after the loop has stopped */

/* One connection's request slot: the decision and its event live here
 * while the shared store decides. */
struct fleet_wait *fleet_wait_new(struct fleet *f);
/* Cancels a waiting decision (its callback never comes). */
void fleet_wait_free(struct fleet_wait *w);
struct cp_decision *fleet_decision(struct fleet_wait *w);
const struct cp_event *fleet_event(struct fleet_wait *w);

/*
 * Decide `ev` (copied; its strings must stay until the decision is made).
 * Returns CP_DECIDE_AWAIT: `done(arg)` is called once the decision
 * (fleet_decision) is made; else the decision is made now, and the return
 * is cp_engine_decide()'s.
 */
int fleet_decide(struct fleet_wait *w, const struct cp_event *ev, int64_t now,
                 fleet_done_fn *done, void *arg);

/*
 * A state change not made through the shared store's decision (a
 * person's command, delivery evidence, a DNSBL answer, a decision made
 * locally): hand it to Redis now, or when it is back. False if another
 * host changed the account's state first and the shared state stands
 * (the local copy then has it; the change did not happen).
 */
bool fleet_change(struct fleet *f, const struct cp_decision *dec, bool person);

/* Make the local copy of an account's state the shared one (before a
 * person's command reads or changes it). -1 with err if Redis is not
 * reachable (the local copy stays). */
int fleet_refresh(struct fleet *f, const struct cp_identity *id, char *err);

void fleet_status(const struct fleet *f, struct fleet_stats *out, bool *up,
                  struct cp_redis_stats *rs);

/* The fleet's history of accounts: a state change this host recorded
 * (incident: its number here) goes into it; a person's `history` reads
 * it, with the host of each row (-1 and err: Redis unreachable). */
void fleet_history_add(struct fleet *f, const struct cp_decision *dec,
                       int64_t now_ms, const char *actor, const char *reason,
                       uint64_t incident);
struct fleet_history_row {
    struct cp_history_row row;
    const char *host;
};
typedef void fleet_history_fn(void *arg, const struct fleet_history_row *r);
int fleet_history(struct fleet *f, const struct cp_identity *id, int limit,
                  fleet_history_fn *fn, void *arg, char *err);

#endif
