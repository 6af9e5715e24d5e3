/*
 * redis.h — the fleet store: the accounts several chokepointd share in one
 * Redis server (store.backend: redis). Each decision is one EVALSHA of
 * lua/decide.lua, asynchronous on the daemon's libuv loop (hiredis and its
 * libuv adapter); a person's command reads or sets a state over a second,
 * blocking connection with a timeout (lua/state.lua).
 *
 * What this module promises its caller (daemon/fleet.c):
 * - cp_redis_decide() either returns NULL (not connected: decide from the
 *   local copy now) or calls `cb` exactly once, with the answer, or with
 *   NULL when no answer came within store.redis_timeout, the reply was an
 *   error, or the connection was lost; unless cp_redis_cancel() was called
 *   first, after which it never calls it.
 * - Replies come in the order requests were sent (one connection).
 * - While the connection is down it reconnects, with a back-off from
 *   100 ms to 2 s, and calls `on_up` when it is ready again.
 *
 * Keys: "cp:{KEY}" holds an account's counters and its own state;
 * "cp:{KEY}LOGIN" the state of a login of a mapped customer KEY. The hash
 * tag is the customer, so what one decision touches is in one Cluster
 * slot. Not yet: Redis Cluster redirections (MOVED/ASK), Sentinel, TLS
 * (the hiredis of Debian 12 has none of these); see doc/design.md.
 *
 * Thread: the loop thread only.
 */
#ifndef CP_STORE_REDIS_H
#define CP_STORE_REDIS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/evidence.h"

struct cp_redis;
struct cp_redis_req;

/* What came back of the login's evidence with a decision. */
struct cp_redis_evans {
    bool has_ver;
    uint32_t ver;             /* the fleet's version of the suspicion, when
                                 it was at least the score asked for */
    bool has_sum;
    struct cp_ev_shared sum;  /* the fleet's suspicion (has_sum: it was at
                                 least the score asked for) */
    size_t habits_len;        /* 0, or CP_EV_PACKED: the record the habits
                                 given replaced, to merge */
    unsigned char habits[CP_EV_PACKED];
};

/* A decision's answer: r NULL when it is to be made locally (ev NULL
 * then too). */
typedef void cp_redis_cb(void *arg, const struct cp_remote *r,
                         const struct cp_redis_evans *ev);

/* The evidence part of a decision: this host's gain to add to the fleet's
 * sum (NULL: none), the score from which that sum comes back, and the
 * habits this host knows (a packed record, or NULL). */
struct cp_redis_ev {
    const struct cp_detection *det; /* NULL: the class detects nothing */
    const struct cp_ev_delta *gain;
    double want;
    const unsigned char *habits;    /* CP_EV_PACKED bytes */
    uint32_t ver;                   /* the version of the fleet's suspicion
                                       the host has (its sum comes back only
                                       if Redis has another) */
    uint32_t net;                   /* the request's network (0: none): a
                                       `networks` gain for a network another
                                       host counted this hour is not added */
};

struct cp_redis_stats {
    uint64_t sent;        /* decisions sent */
    uint64_t answered;    /* ... answered in time */
    uint64_t late;        /* ... answered locally: no answer in time */
    uint64_t failed;      /* ... answered locally: error or lost connection */
    uint64_t errors;      /* error or malformed replies (all commands) */
    uint64_t noscript;    /* NOSCRIPT: the server lost the scripts */
    uint64_t connects;    /* times the connection became ready */
    uint64_t disconnects; /* times it was lost */
    uint64_t shares;      /* reservations given back, merges (no answer
                             awaited) */
    uint64_t redirects;   /* Cluster: MOVED and ASK followed */
    uint64_t campaign;    /* bands of the campaign table sent */
    uint64_t campaign_back; /* ... whose answer came back */
};

/* Nothing connects before cp_redis_start(). */
struct cp_redis *cp_redis_new(uv_loop_t *loop, const struct cp_config *cfg,
                              void (*on_up)(void *arg), void *arg);
/* Timeouts and the server address (a new address: reconnect). */
void cp_redis_set_config(struct cp_redis *r, const struct cp_config *cfg);
void cp_redis_start(struct cp_redis *r);
/* Closes the connections and frees r once its handles have closed (the
 * loop must run); pending callbacks are called with NULL first. */
void cp_redis_close(struct cp_redis *r);

bool cp_redis_up(const struct cp_redis *r);
/* Ready, and Redis had no fleet data when this connection began (a new
 * Redis, or one restarted without persistence): the states the hosts
 * know must be handed to it again. */
bool cp_redis_emptied(const struct cp_redis *r);
const struct cp_redis_stats *cp_redis_stats(const struct cp_redis *r);
/* "HOST:PORT" or "unix:PATH". */
const char *cp_redis_where(const struct cp_redis *r);

struct cp_redis_req *cp_redis_decide(struct cp_redis *r,
                                     const struct cp_decision *d,
                                     const struct cp_await *aw,
                                     const struct cp_redis_ev *ev,
                                     cp_redis_cb *cb, void *arg);
void cp_redis_cancel(struct cp_redis_req *q);

/* Apply an operation with no answer awaited: a reservation given back,
 * or charges made while the server was unreachable (false: not sent). */
bool cp_redis_share(struct cp_redis *r, const struct cp_meter_op *op);

/*
 * The campaign table (src/store/lua/campaign.lua): the bands of a
 * fingerprinted message from an account (its sketch bit 0-63; -1: not
 * counted), or of a delivery outcome (sent 1, bad 0/1); the window keeps
 * a band while it is not quiet. One script for them all on one server, a
 * script per band in a Cluster. No decision waits for it: the fleet's
 * bands come back to the function of cp_redis_on_campaign, with now_s
 * (the engine's clock when they were sent). False if not (all) sent
 * (Redis unreachable: the bands stay this host's).
 */
#define CP_REDIS_MAX_BANDS 16
struct cp_redis_camp {
    int bit;          /* the sender's bit (0-63), -1: an outcome */
    uint32_t acct;    /* the sender (an account's hash) */
    unsigned repeat;  /* the copies from which a sender counts */
    unsigned sent, bad;
    uint64_t window_ms;
    uint32_t now_s;
};
bool cp_redis_campaign(struct cp_redis *r, const uint32_t *bands, size_t nb,
                       const struct cp_redis_camp *cm);
/* with the sender's copies over the fleet (0: an outcome) */
void cp_redis_on_campaign(struct cp_redis *r,
                          void (*fn)(void *arg, uint32_t band,
                                     uint64_t sketch, uint32_t sent,
                                     uint32_t bad, uint32_t acct,
                                     uint32_t copies, uint32_t now_s),
                          void *arg);
/* Add delta[i] to counter slot[i] of an account, if its record is there
 * (lua/settle.lua; no answer awaited): an END-OF-MESSAGE settled within
 * its reservation, its difference from the reservation. False: not
 * sent. */
bool cp_redis_settle(struct cp_redis *r, const char *key, size_t keylen,
                     const char *const *slot, const double *delta, size_t n);

/*
 * A state, over the blocking connection: mode "get", "set" (a person's
 * command) or "merge" (a change made while Redis was unreachable; see
 * lua/state.lua). `out` gets own, cust, own_repeat, own_since_s,
 * change_refused (for "merge": not applied) and unknown (the fleet has
 * no record of the account); `counters` (for "get", may be NULL) the
 * account's counters in Redis. Returns 0, or -1 with err.
 */
struct cp_redis_counters {
    size_t n;
    char name[CP_MAX_SLOTS][CP_RULE_NAME_MAX]; /* slot names, as stored */
    double level[CP_MAX_SLOTS];
    int64_t t_ms;      /* when they were leaked to (Redis's clock) */
};

/*
 * The fleet's history of an account (its state changes, each recorded by
 * the host that made it): add one row (no answer awaited; false: not
 * sent), or read the newest `limit` rows over the blocking connection
 * (fn for each, newest first; their number, or -1 with err).
 */
bool cp_redis_history_add(struct cp_redis *r, const struct cp_identity *id,
                          const char *row, size_t len);
int cp_redis_history(struct cp_redis *r, const struct cp_identity *id,
                     int limit,
                     void (*fn)(void *arg, const char *row, size_t len),
                     void *arg, char *err);

int cp_redis_state(struct cp_redis *r, const struct cp_identity *id,
                   const char *mode, int to, int from, struct cp_remote *out,
                   struct cp_redis_counters *counters, char *err);

#endif
