/*
 * inproc.h — the engine hosted in the command-line process, on a virtual
 * clock, for `chokepoint sim` and `chokepoint replay`: the same config
 * loader, identity, engine and memory store as chokepointd, without
 * sockets, threads or disk. Decisions are therefore the daemon's decisions.
 */
#ifndef CP_CLI_INPROC_H
#define CP_CLI_INPROC_H

#include <stdint.h>

#include "core/config.h"
#include "core/engine.h"
#include "store/memstore.h"

/* An account changed state (d says how; ev: the event that caused it,
 * NULL for a delivery outcome): what the daemon's incident.c would do,
 * the simulator and replay record. */
typedef void (*inproc_change_fn)(void *arg, const struct cp_decision *d,
                                 const struct cp_event *ev, int64_t now_ms);

struct inproc {
    struct cp_config *cfg;
    struct memstore *ms;
    struct cp_engine engine;
    int64_t expired_ms; /* virtual time of the last expiry pass */
    inproc_change_fn on_change; /* may be NULL */
    void *change_arg;
    /* one smtpd's policy connection: requests come one transaction after
     * another, as over chokepointd's socket (a transaction left without
     * END-OF-MESSAGE gives its reservation back at the next one) */
    struct cp_session session;
};

/*
 * Load `config_file` (with identity.customer_map replaced by `map` when
 * `override_map` is true). Returns 0, or -1 with `err` (CP_ERR_MAX).
 */
int inproc_open(struct inproc *ip, const char *config_file,
                bool override_map, const char *map, char *err);
void inproc_close(struct inproc *ip);
/* Decide at virtual time `now_ms` (non-decreasing); reservations older
 * than the timeout are released first, as the daemon's timer would. */
void inproc_decide(struct inproc *ip, const struct cp_event *ev,
                   int64_t now_ms, struct cp_decision *d);
/* A message's content (what the daemon's milter asks; fp as for
 * cp_engine_content). */
void inproc_content(struct inproc *ip, const struct cp_event *ev,
                    const struct cp_fp *fp, int64_t now_ms,
                    struct cp_decision *d);
/* A delivery outcome for queue id `qid` at `now_ms` (what the daemon's
 * mail-log follower reports). */
void inproc_outcome(struct inproc *ip, const char *qid, size_t qlen,
                    const char *rcpt, enum cp_outcome o, int64_t now_ms);
/*
 * The end of learning (a warm start, chokepoint learn): every account
 * keeps the habits its evidence learned and forgets the rest — the score
 * and what made it, its state, its counters — as the daemon starts from
 * what `chokepoint learn` stored. The engine leaves learning mode.
 */
void inproc_learned(struct inproc *ip);
/* Release every reservation due by `now_ms` (end of a run). */
void inproc_flush(struct inproc *ip, int64_t now_ms);

#endif
