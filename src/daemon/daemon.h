/*
 * daemon.h — chokepointd's process state: one struct owned by the loop
 * thread, holding the running configuration, the engine, the store and the
 * sockets. Modules (src/daemon/):
 *   main.c        start-up, signals, reload, shutdown
 *   server.c      listeners (policy and milter sockets), accept budget
 *   conn.c        one connection: policy requests → cp_event → engine →
 *                 reply; the milter's bytes go to milter.c
 *   milter.c      the content service: a milter session, fingerprints,
 *                 cp_engine_content at end of message
 *   trust.c       who is calling, and may they speak for customers
 *   sockdiag.c    the kernel's sock_diag questions (TCP owner, listen queue)
 *   privs.c       descriptor limit, directories, the store's lock,
 *                 privilege drop
 *   incident.c    what a decision leads to: a state change and its
 *                 incident's outbox jobs in one SQLite transaction, the
 *                 log and the decision log (incident_apply,
 *                 daemon_log_decision)
 *   checkpoint.c  durability: batches of changed accounts to SQLite on a
 *                 libuv worker, queue ids, eviction, unrecorded history
 *   outbox.c      notices, webhooks and hold/release commands, on the
 *                 outbox thread, resumed after a restart
 *   spawn.c       run a configured command without a shell (outbox thread)
 *   dnsbl.c       DNSBL look-ups of client addresses with c-ares
 *   recent.c      the last notable decisions, for `chokepoint show`
 *   seen.c        logins, client addresses and HELOs of accounts under
 *                 suspicion, for `chokepoint show`
 *   logfollow.c   follow the Postfix mail log for delivery outcomes
 *   admin.c       the admin socket: status, show, block, release, ...
 *   sdnotify.c    systemd's readiness protocol (Type=notify)
 */
#ifndef CP_DAEMON_DAEMON_H
#define CP_DAEMON_DAEMON_H

#include <stdio.h>
#include <uv.h>

#include "core/config.h"
#include "core/engine.h"
#include "store/memstore.h"
#include "store/sqlite.h"
#include "util/hmap.h"
#include "util/inet.h"
#include "util/ratelog.h"

#define DAEMON_READ_BUF 4096          /* bytes read per uv read callback */
#define DAEMON_MAX_WRITE_QUEUE 262144 /* unsent reply bytes per connection */

struct conn;
struct listener;
struct logfollow;
struct outbox;
struct dnsbl;
struct cp_incident;
struct sockdiag;

struct dstats {
    uint64_t conns_accepted, conns_refused, conns_closed_error;
    uint64_t protocol_errors, idle_timeouts, bad_requests;
    uint64_t conns_untrusted;  /* refused: not a trusted caller */
    uint64_t conns_peer_share; /* refused: the caller's share was full */
    uint64_t accept_errors;    /* accept(2) failed (e.g. out of fds) */
    uint64_t lifetime_closes;  /* closed at protocol.max_lifetime */
    uint64_t listen_full;      /* a listener's queue found full */
    uint64_t ckpt_runs, ckpt_errors, ckpt_rows;
    int64_t ckpt_last_ms;
    uint64_t ckpt_last_us;
};

struct daemon {
    uv_loop_t *loop;
    struct cp_config *cfg;
    struct memstore *ms;
    struct cp_sqlite *db;      /* checkpoint worker's connection */
    struct cp_sqlite *db_sync; /* loop thread's: state changes */
    char hostname[256];        /* notify.reporting_mta, or gethostname() */
    struct cp_engine engine;
    FILE *decision_log;

    struct listener *listeners;  /* daemon.listen, then content.milter */
    size_t nlisteners;
    uv_prepare_t accept_prep;    /* accepts per loop iteration (server.c) */
    uv_check_t accept_check;
    unsigned accept_budget;
    uv_pipe_t admin;
    char *admin_path; /* as bound at start (the config may be reloaded) */
    bool admin_open;
    struct cp_group admin_readers; /* daemon.admin_read_group, as bound */

    struct conn *conns; /* doubly-linked list of policy connections */
    size_t nconns;
    struct sockdiag *diag;
    struct hmap shares; /* peer share key -> struct share (conn.c) */
    int lock_fd;        /* the state directory's lock (main.c) */
    size_t milter_buffered; /* bytes of milter partial packets (milter.c) */

    uv_signal_t sig_hup, sig_usr1, sig_term, sig_int;
    uv_timer_t expire_timer, ckpt_timer, sweep_timer;
    uv_work_t ckpt_work;
    bool ckpt_running;
    struct ckpt_batch ckpt_batch;
    struct cp_qid_batch qid_batch;
    uint64_t qid_mark, qid_keep; /* journal position; rows to keep */
    int64_t qid_since;           /* rows recorded before are pruned */
    char ckpt_err[CP_ERR_MAX], qid_err[CP_ERR_MAX];
    int ckpt_rc, qid_rc;

    int64_t evict_ms; /* checkpoint.c: the last eviction scan */
    size_t evict_n;   /* accounts after it */
    struct unrecorded *unrecorded; /* checkpoint.c: history to write */
    size_t nunrecorded;

    struct logfollow *logfollow;
    struct outbox *outbox;
    struct dnsbl *dnsbl;
    struct recent *recent;
    struct seen *seen;
    struct fleet *fleet;      /* fleet mode (store.backend: redis); NULL:
                                 the embedded store alone */

    bool sim_clock;          /* --sim-clock: time from the request */
    int64_t sim_expired_ms;  /* virtual time of the last expiry pass */
    int64_t started_ms;
    int64_t refuse_logged_ms;   /* max_connections refusals (conn.c) */
    uint64_t refused_since_log;
    struct ratelog refusal_log; /* see daemon_log_decision() */
    struct ratelog peer_log;    /* every warning a peer can cause */
    bool stopping;
    struct dstats stats;
};

int64_t daemon_now_ms(void);

/* trust.c: who is calling, and may they speak for customers? */
struct peer {
    char name[96]; /* for logs: "unix#7 uid=108 pid=4242", "tcp:A:P uid=0" */
    bool tcp, has_uid;
    uid_t uid;
    struct inet_addr addr; /* tcp */
    uint16_t port;
    uint64_t share; /* key of the caller's connection share */
};
/* Identify the caller of a just-accepted stream (seq numbers unix
 * callers in logs). NULL if it may speak for customers, else why not. */
const char *trust_check(struct sockdiag *t, const struct cp_config *cfg,
                        uv_stream_t *s, uint64_t seq, struct peer *p);

/* sockdiag.c: the kernel's sock_diag interface */
struct sockaddr_storage;
struct sockdiag *sockdiag_open(void);
void sockdiag_close(struct sockdiag *t);
/* The owner of the TCP socket at `peer` connected to us at `local`: 1 and
 * *uid when it is a socket on this host, 0 when it is not (a remote
 * caller), -1 when the kernel could not be asked. */
int sockdiag_tcp_uid(struct sockdiag *t, const struct sockaddr_storage *peer,
                     const struct sockaddr_storage *local, uid_t *uid);
/* A listener's accept queue: connections waiting, and its limit. 0 or -1. */
int sockdiag_listen_queue(struct sockdiag *t, uv_stream_t *s,
                          uint32_t *queued, uint32_t *max);

/* privs.c: the process around the daemon (see there for the order) */
/* daemon.user/.group looked up: 0, or -1 with the reason in err. */
int privs_resolve(const struct cp_config *cfg, char *err, size_t errsz);
void privs_fd_limit(const struct cp_config *cfg);
/* The store's lock (fd; -1 for an in-memory store); exits when another
 * chokepointd holds it, or when the store was lost (unless new_store). */
int privs_lock(const struct cp_config *cfg, bool new_store);
void privs_prepare(const struct cp_config *cfg);
void privs_drop(const struct cp_config *cfg);

/* conn.c: log a warning a peer caused, through d->peer_log */
void peer_warn(struct daemon *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* server.c */
int server_listen(struct daemon *d);
/* Bind a unix socket at `path` (a stale socket there is removed) and chmod
 * it to `mode`. 0, or -1 after logging. */
int server_unix_bind(uv_loop_t *loop, uv_pipe_t *p, const char *path,
                     int mode);
void server_close(struct daemon *d);

/* conn.c: a policy connection, or (milter) a milter session */
void conn_start(struct daemon *d, uv_stream_t *server, bool milter);
void conn_close_all(struct daemon *d);

/* admin.c */
int admin_listen(struct daemon *d);
void admin_close(struct daemon *d);
/* how many of a mapped customer's logins are THROTTLED or BLOCKED */
size_t admin_logins_compromised(struct daemon *d, const struct cp_customer *cu);

/* checkpoint.c */
void ckpt_start(struct daemon *d);
void ckpt_stop(struct daemon *d);
/* Queue ids recorded before this are past delivery.queue_id_ttl. */
int64_t ckpt_queued_since(const struct daemon *d);
/* A state change whose history row failed: kept and written again at
 * every tick until it is. */
void ckpt_unrecorded_add(struct daemon *d, const char *key, size_t keylen,
                         const struct cp_counters *c, const char *from,
                         const char *to, int64_t t_ms, const char *actor,
                         const char *reason);
/* Final checkpoint after the loop has stopped (synchronous). */
void ckpt_final(struct daemon *d);

/* logfollow.c: follow delivery.log (always started: a reload may set it) */
struct logfollow *logfollow_start(struct daemon *d);
void logfollow_stop(struct logfollow *lf);
void logfollow_set_interval(struct logfollow *lf, uint64_t ms); /* reload */
void logfollow_tick(struct logfollow *lf); /* what each poll does */

/* outbox.c: notifications and hold/release commands, on a worker thread */
struct outbox_stats {
    uint64_t sent, retried, failed, dropped, suppressed;
    size_t queued;
};
/* Resumes the jobs left in the store's outbox table (store_path: the
 * worker opens its own connection; NULL: memory only) and starts the
 * worker, with cfg's webhook key (outbox_set_key) already set; new jobs are
 * written through loop_db (borrowed, loop thread). */
struct outbox *outbox_start(const struct cp_config *cfg,
                            const char *store_path, struct cp_sqlite *loop_db);
/* The webhook's HMAC key from cfg (NULL or none: unsigned), copied; at
 * start and after every reload. */
void outbox_set_key(struct outbox *ob, const struct cp_config *cfg);
/* Stops the worker (after its current job); what is left stays in the
 * outbox table for the next start. */
void outbox_stop(struct outbox *ob);
void outbox_stats(struct outbox *ob, struct outbox_stats *out);
/* The jobs submitted between these two calls were written in one store
 * transaction that was rolled back: their rows are written again by
 * outbox_rewrite() (every checkpoint tick) until they are. */
void outbox_tx_begin(struct outbox *ob);
void outbox_tx_rolled_back(struct outbox *ob);
void outbox_rewrite(struct outbox *ob);
size_t outbox_unwritten(struct outbox *ob); /* jobs without their row */
/* Queue the notifications of an incident (per notify:, rate-limited): a
 * block's customer mail (if `customer`), ARF report and webhook; a
 * release's (in->released) customer mail (if `customer`) and webhook. */
void outbox_incident(struct outbox *ob, const struct cp_config *cfg,
                     const struct cp_incident *in, bool customer,
                     int64_t now_ms);
/* Queue a command with `input` on its stdin (retried like a mail), for
 * `incident` (the state change's history row). */
void outbox_command(struct outbox *ob, const struct cp_config *cfg,
                    const char *what, const char *command, const char *account,
                    uint64_t incident, const char *input, size_t len);

/* dnsbl.c: infected-host list look-ups of client addresses (c-ares) */
struct dnsbl_stats {
    uint64_t queries, answers, failures, listed, charged;
    size_t cached;
};
struct dnsbl *dnsbl_start(struct daemon *d);
void dnsbl_reload(struct dnsbl *b);
void dnsbl_stop(struct dnsbl *b);
/* After a decision with evidence: look up (or reuse) the client address. */
void dnsbl_check(struct dnsbl *b, const struct cp_decision *dec,
                 const struct cp_event *ev);
void dnsbl_stats(const struct dnsbl *b, struct dnsbl_stats *out);

/* spawn.c: run `cmdline` (split at blanks, no shell) + `extra` (NULL-
 * terminated, may be NULL) with `input` on stdin; blocking (outbox thread).
 * 0 if it exited 0; else -1 with its output and status (exit status,
 * signal, timeout, or why it could not be run or watched) in out. The
 * child is always reaped before the return. */
int spawn_run(const char *cmdline, const char *const *extra, const char *input,
              size_t inlen, uint64_t timeout_ms, char *out, size_t outsz);

/* recent.c: the last notable decisions, for `chokepoint show` */
#define RECENT_MAX 10000 /* decisions kept (all accounts) */
#define RECENT_TEXT 96   /* bytes of a reply text kept */
struct recent_entry {
    int64_t t_ms;
    uint64_t key_hash;  /* the counters' account (id.key) */
    uint64_t dkey_hash; /* the state's (id.dkey) */
    uint8_t stage, action, verdict, state;
    bool shadow;
    char rule[CP_RULE_NAME_MAX]; /* "" none, "state": the account's state */
    char text[RECENT_TEXT];      /* reply text, cut */
};
typedef void (*recent_fn)(void *arg, const struct recent_entry *e);
struct recent *recent_new(size_t cap);
void recent_free(struct recent *r);
void recent_add(struct recent *r, const struct cp_decision *d, int64_t now_ms);
/* The account's entries, newest first, at most `limit`; how many. */
size_t recent_each(const struct recent *r, const char *key, size_t klen,
                   size_t limit, recent_fn fn, void *arg);

/* seen.c: logins, client addresses and HELOs of accounts under
 * suspicion, for `chokepoint show` */
#define SEEN_ACCOUNTS 4096 /* accounts kept (the most recently noted) */
#define SEEN_PER 6         /* values of each kind per account */
#define SEEN_LEN 64        /* bytes of a value kept (with its NUL) */
enum seen_kind { SEEN_LOGIN, SEEN_CLIENT, SEEN_HELO, SEEN_KINDS };
struct seen_item {
    char s[SEEN_LEN];
    uint32_t count;
    int64_t first_ms, last_ms;
};
struct seen_list {
    struct seen_item v[SEEN_PER];
    size_t n;
    uint32_t more; /* other values seen, replaced since */
};
struct seen *seen_new(void);
void seen_free(struct seen *s);
/* The account `key` (the state's: id.dkey) used what `ev` says at now_ms. */
void seen_note(struct seen *s, const char *key, size_t klen,
               const struct cp_event *ev, int64_t now_ms);
/* Its values of one kind, or NULL if it was not noted (or was evicted). */
const struct seen_list *seen_get(const struct seen *s, const char *key,
                                 size_t klen, enum seen_kind kind);

/* milter.c: the content service's session, one per milter connection */
struct milter_sess;
struct milter_sess *milter_sess_new(void);
void milter_sess_free(struct daemon *d, struct milter_sess *m); /* NULL: ok */
/* Feed bytes from the MTA; replies are appended to out. 0, or -1 after a
 * protocol error was logged, or 1 when the MTA quit: then close the
 * connection once out is sent. */
int milter_feed(struct daemon *d, struct milter_sess *m, const char *peer,
                const char *data, size_t n, struct strbuf *out);
/* In the middle of a packet? */
bool milter_pending(const struct milter_sess *m);

/* main.c: start-up (everything before the loop runs; exits on an error),
 * an orderly stop (as SIGTERM: the loop then ends), and what follows the
 * loop (the final checkpoint; everything freed). */
void daemon_open(struct daemon *d, const char *file, bool sim_clock,
                 bool new_store);
void daemon_stop(struct daemon *d);
/* main.c: reload the configuration and the customer map (SIGHUP, `chokepoint
 * reload`): 0, or -1 with why in err (CP_ERR_MAX) and the old one kept. */
int daemon_reload(struct daemon *d, char *err);
void daemon_close(struct daemon *d);

/* sdnotify.c: a state line for systemd (Type=notify): "READY=1",
 * "RELOADING=1", "STOPPING=1", "STATUS=..." (nothing without
 * $NOTIFY_SOCKET). */
void sd_state(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* incident.c: what a decision leads to. Log one decision (text line,
 * JSON line in the decision log) with the number of the incident it
 * opened or closed (incident_apply's; <= 0: none). */
void daemon_log_decision(struct daemon *d, const struct cp_decision *dec,
                         const struct cp_event *ev, int64_t incident,
                         int64_t now_ms);
/* (Re)open the decision log (start-up, reload). */
void incident_open_log(struct daemon *d);
/* A person's decision (chokepoint block, release, allow). */
#define ADMIN_TELL_MAX 512 /* bytes of what the desk tells the customer */
struct incident_by {
    const char *who; /* "alice (uid 0)", "uid 0", "self-service (uid 0)" */
    const char *why; /* the internal note they gave (--note) */
    bool quiet;      /* --no-notify: no mail to the customer (the abuse
                        desk's report and the webhook still go) */
    const char *tell; /* what the customer is told (--tell), or NULL */
};
/*
 * Apply the state change a decision reports (none: returns 0): durable in
 * one transaction with its incident's jobs, logged, notified. `ev`: the
 * event that caused it (NULL: a delivery outcome, a DNSBL answer, a
 * person); `by`: the person who decided (NULL: the evidence). The
 * incident's number (the history row's, > 0); or -1 with err (CP_ERR_MAX
 * bytes) if the write failed: the change is in force and written again
 * every checkpoint, under a number of its own then.
 */
int64_t incident_apply(struct daemon *d, const struct cp_decision *dec,
                   const struct cp_event *ev, const struct incident_by *by,
                   int64_t now_ms, char *err);
/* Fleet mode: a state another host changed (dec->fleet_moved) reached
 * this one: its queued mail here is held or released, and it is logged. */
void incident_follow(struct daemon *d, const struct cp_decision *dec);

#endif
