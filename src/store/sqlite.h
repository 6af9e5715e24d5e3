/*
 * sqlite.h — durable storage of the embedded store's counters in SQLite
 * (WAL mode, synchronous=NORMAL: a committed checkpoint survives a crash of
 * the process; see doc/design.md for the durability contract).
 *
 * Layout: meta(k, v) holds the slot names in blob order; accounts(key, t,
 * data) holds one row per account, data = levels (float32 per slot) +
 * recent-domain ring. Loading maps stored slots to the current ones by name,
 * so a changed limit or a reordered config keeps the history.
 *
 * Thread: a cp_sqlite handle is used by one thread at a time (it is opened
 * SQLITE_OPEN_NOMUTEX). chokepointd opens three: d->db (the loop thread at
 * start-up and shutdown, the checkpoint's libuv worker in between),
 * d->db_sync (the loop thread's, for state changes, their outbox rows and
 * history reads, while the loop runs: these calls block the loop thread)
 * and the outbox's (the outbox thread's, read at start-up by the loop
 * thread before that thread starts). Each function's thread is stated in
 * the file that implements it: sqlite.c (open, transactions, migration),
 * sqlite_accounts.c, sqlite_states.c, sqlite_evidence.c, sqlite_outbox.c,
 * sqlite_delivery.c.
 */
#ifndef CP_STORE_SQLITE_H
#define CP_STORE_SQLITE_H

#include <stdbool.h>

#include "core/config.h"
#include "store/memstore.h"
#include "util/tagset.h"

struct cp_sqlite;

/* Open or create the database. NULL and `err` (CP_ERR_MAX) on failure. */
struct cp_sqlite *cp_sqlite_open(const char *path, char *err);
void cp_sqlite_close(struct cp_sqlite *db);
/* Load every account into `ms`; returns the number or -1 with `err`.
 * *skipped (may be NULL) counts damaged records left out. */
long cp_sqlite_load(struct cp_sqlite *db, const struct cp_slot *slots,
                    size_t nslots, struct memstore *ms, long *skipped,
                    char *err);
/*
 * Give the loaded accounts their stored evidence. Returns how many, or -1
 * with `err`; *discarded counts records not read back (another format,
 * damaged, or of an account that is not in the store).
 */
long cp_sqlite_load_evidence(struct cp_sqlite *db, struct memstore *ms,
                             long *discarded, char *err);
/* Write a batch (sorted by key in place first, so rows land on
 * neighbouring pages). 0, or -1 with `err`. */
int cp_sqlite_write(struct cp_sqlite *db, struct ckpt_batch *b, char *err);

/*
 * Group the following writes of this connection (a state change and the
 * notification jobs of its incident) into one transaction, so that a
 * crash keeps both or neither. Not nested: a begin inside a begin is a
 * no-op. 0, or -1 with `err` (the writes then commit one by one).
 */
int cp_sqlite_begin(struct cp_sqlite *db, char *err);
int cp_sqlite_commit(struct cp_sqlite *db, char *err);

/*
 * Record a state change durably (one transaction: the current state and a
 * history row). Called on the loop thread, with its own connection, before
 * the reply that depends on the state. Returns the history row's id (> 0:
 * the incident number of a block), or -1 with `err`.
 */
int64_t cp_sqlite_transition(struct cp_sqlite *db, const char *key,
                             size_t keylen, const struct cp_counters *c,
                             const char *from, const char *to, int64_t t_ms,
                             const char *actor, const char *reason, char *err);
/* Apply the recorded states over the loaded counters (they may be newer
 * than the last checkpoint). Number of accounts, or -1 with `err` (also
 * for a state this version does not know: it is never served as NORMAL).
 * *skipped (may be NULL) counts rows with a damaged key. */
long cp_sqlite_load_states(struct cp_sqlite *db, struct memstore *ms,
                           long *skipped, char *err);

/* One state change. Its row id is the incident number notices and logs
 * give (the change that blocked an account, or released it). */
struct cp_history_row {
    int64_t id;
    const char *key; /* the account */
    int64_t t_ms;
    const char *from, *to, *actor, *reason;
};
typedef void (*cp_history_fn)(void *arg, const struct cp_history_row *r);
/* History rows of an account since `since_ms` whose actor starts with
 * `actor_prefix` (self-service releases per period; "" and 0: does the
 * account have a history at all); -1 on error. */
long cp_sqlite_count_actor(struct cp_sqlite *db, const char *key,
                           size_t keylen, const char *actor_prefix,
                           int64_t since_ms);
/* The account's latest `limit` state changes, newest first: their number,
 * or -1 on error. */
int cp_sqlite_history(struct cp_sqlite *db, const char *key, size_t keylen,
                      int limit, cp_history_fn fn, void *arg);
/* State change number `id` (an incident): 1 and fn called, 0 if there is
 * none, -1 on error. */
int cp_sqlite_incident(struct cp_sqlite *db, int64_t id, cp_history_fn fn,
                       void *arg);
/*
 * The block release number `release` (0: not recorded) ends: the
 * account's latest change before it from a state that lets mail through
 * into BLOCKED or MANUAL_HOLD, unless a release came between them (its
 * row lost: the block is not known); its number in *block, 0 if the
 * history has none. And whether its customer was told
 * (*told): a "customer mail" job of that incident, under `account` (the
 * key as the outbox names it: escaped), is pending in `outbox` or was
 * sent (`outbox_done`). Loop thread, d->db_sync. Returns 0, or -1 on
 * error (*block 0, *told false).
 */
int cp_sqlite_last_block(struct cp_sqlite *db, const char *key,
                         size_t keylen, const char *account,
                         int64_t release, int64_t *block, bool *told);

/*
 * The outbox: notifications and hold commands not yet done, so that a
 * restart (or a crash) resumes them instead of losing them. Rows are
 * added on the loop thread (its connection, possibly inside the state
 * change's transaction) and retried or deleted by the outbox thread (its
 * own connection). Strings are NUL-terminated; `from`/`to` may be NULL.
 */
struct cp_outbox_row {
    int64_t id;
    int kind;
    const char *what, *account, *target, *from, *to;
    const void *body;
    size_t body_len;
    uint64_t incident, timeout_ms, retry_ms;
    unsigned attempts, max_attempts;
    int64_t due_ms; /* wall clock */
};
typedef void (*cp_outbox_fn)(void *arg, const struct cp_outbox_row *r);

/* The new row's id (> 0), or -1 with `err`. */
int64_t cp_sqlite_outbox_add(struct cp_sqlite *db,
                             const struct cp_outbox_row *r, char *err);
int cp_sqlite_outbox_retry(struct cp_sqlite *db, int64_t id,
                           unsigned attempts, int64_t due_ms, char *err);
/* The job is finished: its row moves to the table of finished jobs with
 * `outcome` ("sent", "given up: ..."), its attempts and the time; its body is kept if
 * `keep_body` (a command's queue ids), not otherwise (a message). */
int cp_sqlite_outbox_done(struct cp_sqlite *db, int64_t id,
                          const char *outcome, unsigned attempts,
                          bool keep_body, int64_t t_ms, char *err);
#define OUTBOX_DONE_KEEP 100000 /* finished jobs remembered (all accounts) */
/* An account's jobs (`account` as the outbox row names it), of one
 * incident (0: all), pending ones first, then the finished, newest first,
 * at most `limit` in all. */
struct cp_outbox_done_row {
    bool pending;
    const char *what, *target, *to, *outcome;
    const void *body; /* NULL unless kept */
    size_t body_len;
    uint64_t incident;
    unsigned attempts;
    int64_t t_ms; /* finished, or (pending) due; wall clock */
};
typedef void (*cp_outbox_done_fn)(void *arg,
                                  const struct cp_outbox_done_row *r);
int cp_sqlite_outbox_account(struct cp_sqlite *db, const char *account,
                             uint64_t incident, int limit,
                             cp_outbox_done_fn fn, void *arg, char *err);
/* Every row, oldest first; their number, or -1 with `err`. */
long cp_sqlite_outbox_load(struct cp_sqlite *db, cp_outbox_fn fn, void *arg,
                           char *err);

/*
 * Queue ids (the engine's queue id → account table), appended with each
 * checkpoint from the engine's journal (cp_engine_queued_journal, with
 * cp_qid_batch_add as its callback), so that mail queued before a restart
 * is still attributed and held. At most a checkpoint interval of recorded
 * ids is lost in a crash. The table is pruned to the newest `keep` rows
 * recorded at or after `since_ms` (delivery.max_queue_ids,
 * delivery.queue_id_ttl); ids are never deleted one by one.
 */
struct cp_qid_batch {
    struct strbuf add; /* encoded records (sqlite_delivery.c) */
    size_t nadd;
};
void cp_qid_batch_init(struct cp_qid_batch *b);
void cp_qid_batch_fini(struct cp_qid_batch *b);
void cp_qid_batch_reset(struct cp_qid_batch *b);
void cp_qid_batch_add(void *arg, const char *qid, size_t qlen,
                      const char *key, size_t klen, int64_t t_ms,
                      unsigned how);
/* One transaction: append, then prune. 0, or -1 with `err` (nothing
 * written). */
int cp_sqlite_write_queued(struct cp_sqlite *db, const struct cp_qid_batch *b,
                           uint64_t keep, int64_t since_ms, char *err);
typedef void (*cp_qid_fn)(void *arg, const char *qid, size_t qlen,
                          const char *key, size_t klen, int64_t t_ms,
                          unsigned how);
/* Prune as above, then call fn for each stored id, oldest first. Their
 * number, or -1 with `err`. */
long cp_sqlite_load_queued(struct cp_sqlite *db, uint64_t keep,
                           int64_t since_ms, cp_qid_fn fn, void *arg,
                           char *err);

/*
 * chokepoint learn: store the habits learned of every account of `ms`
 * that has evidence (its evidence row is replaced; an account row with
 * empty counters is created where there is none, an existing one is
 * kept, with its counters and state), so that chokepointd starts warm.
 * Number of accounts written, or -1 with `err` (nothing written).
 */
long cp_sqlite_write_learned(struct cp_sqlite *db, struct memstore *ms,
                             char *err);
/* A named blob (the engine's table of delivered recipients): stored, and
 * read back through fn (its answer: the blob was used). The blob's
 * length if used, 0 if none or refused, -1 with `err`. */
int cp_sqlite_put_blob(struct cp_sqlite *db, const char *name,
                       const void *data, size_t len, int64_t t_ms,
                       char *err);
long cp_sqlite_get_blob(struct cp_sqlite *db, const char *name,
                        bool (*fn)(void *arg, const void *data, size_t len),
                        void *arg, char *err);

/*
 * The engine's table of (account, recipient) pairs delivered to
 * (delivery evidence: a bounce to one of them is a list gone stale),
 * kept across restarts and written by chokepoint learn. Load: `t` is
 * set up with `slots` (delivery.max_recipients) if it is not yet, and
 * filled from the stored table if that has the same size (else it
 * starts empty). Returns the entries loaded, 0 if none, -1 with `err`.
 */
long cp_sqlite_load_delivered(struct cp_sqlite *db, struct tagset *t,
                              size_t slots, char *err);
int cp_sqlite_save_delivered(struct cp_sqlite *db, const struct tagset *t,
                             int64_t t_ms, char *err);

/*
 * Bring a database of an older format up to this one, once, at start:
 * format 1 (no meta 'format': before evidence and states were kept per
 * login) → 2: a customer's automatic state (WATCH, THROTTLED, PROBATION)
 * goes back to NORMAL (with a history row, actor "upgrade"), its
 * evidence is dropped; BLOCKED, MANUAL_HOLD and ALLOWED stay and cover
 * all its logins. Returns 1 if migrated, 0 if already current, -1 with
 * `err` (nothing changed). `m` says what was done.
 */
struct cp_sqlite_migration {
    int from;               /* the stored format */
    long states_reset;      /* customers' automatic states reset */
    long evidence_dropped;  /* customers' evidence records dropped */
    int columns_added;      /* columns an earlier version lacked */
};
long cp_sqlite_migrate(struct cp_sqlite *db, int64_t now_ms,
                       struct cp_sqlite_migration *m, char *err);

#endif
