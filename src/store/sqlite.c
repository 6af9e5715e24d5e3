/* sqlite.c — see sqlite.h. */
#include "store/sqlite.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lifecycle.h"
#include "core/evidence.h"
#include "util/xalloc.h"

/* levels, domain ring, ring position; then state, repeat, state_since */
#define BLOB_LEN_V1 (CP_MAX_SLOTS * 4 + CP_DOM_RING * 4 + 1)
#define BLOB_LEN (BLOB_LEN_V1 + 6)

struct cp_sqlite {
    sqlite3 *db;
    sqlite3_stmt *upsert;
    sqlite3_stmt *ev_upsert, *ev_delete;
    bool in_tx; /* inside cp_sqlite_begin(): statements do not commit */
};

static int
db_fail(struct cp_sqlite *db, const char *what, char *err)
{
    snprintf(err, CP_ERR_MAX, "sqlite %s: %s", what, sqlite3_errmsg(db->db));
    return -1;
}

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    /* checkpoints rewrite the same rows: keep their pages cached, and fold
     * the WAL back into the database less often (each fold is an fsync) */
    "PRAGMA cache_size=-16384;"
    "PRAGMA wal_autocheckpoint=16384;"
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS accounts(key TEXT PRIMARY KEY,"
    " t INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS account_states(key TEXT PRIMARY KEY,"
    " state INTEGER NOT NULL, repeat INTEGER NOT NULL,"
    " since INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS history(id INTEGER PRIMARY KEY,"
    " key TEXT NOT NULL, t INTEGER NOT NULL, from_state TEXT NOT NULL,"
    " to_state TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS history_key ON history(key, t);"
    /* jobs of the outbox thread not yet done (src/daemon/outbox.c) */
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY,"
    " kind INTEGER NOT NULL, what TEXT NOT NULL, account TEXT NOT NULL,"
    " incident INTEGER NOT NULL, target TEXT NOT NULL, sender TEXT,"
    " rcpt TEXT, body BLOB NOT NULL, timeout INTEGER NOT NULL,"
    " retry INTEGER NOT NULL, attempts INTEGER NOT NULL,"
    " max_attempts INTEGER NOT NULL, due INTEGER NOT NULL);"
    /* queue ids of accepted mail → account (delivery outcomes, hold),
     * appended in time order; pruned by count and age, never by qid */
    "CREATE TABLE IF NOT EXISTS queue_ids(id INTEGER PRIMARY KEY,"
    " qid TEXT NOT NULL, key TEXT NOT NULL, t INTEGER NOT NULL);"
    /* evidence (cp_evidence_pack): of accounts mid-detection at every
     * checkpoint, of all at a clean shutdown */
    "CREATE TABLE IF NOT EXISTS evidence(key TEXT PRIMARY KEY,"
    " t INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;"
    /* named blobs: the engine's delivered-recipients table */
    "CREATE TABLE IF NOT EXISTS blobs(k TEXT PRIMARY KEY,"
    " t INTEGER NOT NULL, data BLOB NOT NULL);";

struct cp_sqlite *
cp_sqlite_open(const char *path, char *err)
{
    struct cp_sqlite *db = xcalloc(1, sizeof(*db));
    char *msg = NULL;

    if (sqlite3_open_v2(path, &db->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, CP_ERR_MAX, "%s: cannot open database: %s", path,
                 db->db ? sqlite3_errmsg(db->db) : "out of memory");
        cp_sqlite_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db->db, 5000);
    if (sqlite3_exec(db->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, CP_ERR_MAX, "%s: cannot set up database: %s", path,
                 msg ? msg : "?");
        sqlite3_free(msg);
        cp_sqlite_close(db);
        return NULL;
    }
    if (sqlite3_prepare_v2(db->db,
                           "INSERT INTO accounts(key,t,data) VALUES(?,?,?) "
                           "ON CONFLICT(key) DO UPDATE SET t=excluded.t, "
                           "data=excluded.data",
                           -1, &db->upsert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->db,
                           "INSERT INTO evidence(key,t,data) VALUES(?,?,?) "
                           "ON CONFLICT(key) DO UPDATE SET t=excluded.t, "
                           "data=excluded.data",
                           -1, &db->ev_upsert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->db, "DELETE FROM evidence WHERE key=?", -1,
                           &db->ev_delete, NULL) != SQLITE_OK) {
        db_fail(db, "prepare", err);
        cp_sqlite_close(db);
        return NULL;
    }
    return db;
}

void
cp_sqlite_close(struct cp_sqlite *db)
{
    if (db == NULL)
        return;
    sqlite3_finalize(db->upsert);
    sqlite3_finalize(db->ev_upsert);
    sqlite3_finalize(db->ev_delete);
    sqlite3_close(db->db);
    free(db);
}

static void
encode(unsigned char *out, const struct cp_counters *c)
{
    memcpy(out, c->level, CP_MAX_SLOTS * 4);
    memcpy(out + CP_MAX_SLOTS * 4, c->dom, CP_DOM_RING * 4);
    out[BLOB_LEN_V1 - 1] = c->dom_next;
    out[BLOB_LEN_V1] = c->state;
    out[BLOB_LEN_V1 + 1] = c->repeat;
    memcpy(out + BLOB_LEN_V1 + 2, &c->state_since_s, 4);
}

/* Map stored slot i to current slot map[i] (-1: dropped). */
static void
slot_map(const char *stored, const struct cp_slot *slots, size_t nslots,
         int map[CP_MAX_SLOTS])
{
    const char *p = stored;

    for (size_t i = 0; i < CP_MAX_SLOTS; i++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);

        map[i] = -1;
        for (size_t j = 0; len > 0 && j < nslots; j++)
            if (strlen(slots[j].name) == len &&
                memcmp(slots[j].name, p, len) == 0)
                map[i] = (int)j;
        if (end == NULL) {
            for (i++; i < CP_MAX_SLOTS; i++)
                map[i] = -1;
            break;
        }
        p = end + 1;
    }
}

static void
decode(const unsigned char *in, size_t len, const int map[CP_MAX_SLOTS],
       struct cp_counters *c)
{
    float lv[CP_MAX_SLOTS];

    memcpy(lv, in, sizeof(lv));
    for (size_t i = 0; i < CP_MAX_SLOTS; i++)
        if (map[i] >= 0 && lv[i] > 0 && lv[i] < 1e30f)
            c->level[map[i]] = lv[i];
    memcpy(c->dom, in + CP_MAX_SLOTS * 4, CP_DOM_RING * 4);
    c->dom_next = in[BLOB_LEN_V1 - 1] % CP_DOM_RING;
    if (len >= BLOB_LEN) {
        c->state = in[BLOB_LEN_V1];
        c->repeat = in[BLOB_LEN_V1 + 1];
        memcpy(&c->state_since_s, in + BLOB_LEN_V1 + 2, 4);
    }
}

static int
read_slots(struct cp_sqlite *db, char *out, size_t n, char *err)
{
    sqlite3_stmt *st;
    int rc;

    out[0] = '\0';
    if (sqlite3_prepare_v2(db->db, "SELECT v FROM meta WHERE k='slots'", -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_fail(db, "read", err);
}

long
cp_sqlite_load(struct cp_sqlite *db, const struct cp_slot *slots,
               size_t nslots, struct memstore *ms, long *skipped, char *err)
{
    char stored[CP_MAX_SLOTS * CP_RULE_NAME_MAX];
    int map[CP_MAX_SLOTS];
    sqlite3_stmt *st;
    long n = 0;
    int rc;

    if (read_slots(db, stored, sizeof(stored), err) < 0)
        return -1;
    slot_map(stored, slots, nslots, map);
    if (sqlite3_prepare_v2(db->db, "SELECT key, t, data FROM accounts", -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        int klen = sqlite3_column_bytes(st, 0);
        const void *blob = sqlite3_column_blob(st, 2);
        struct cp_counters c;

        int blen = sqlite3_column_bytes(st, 2);

        sqlite3_int64 t = sqlite3_column_int64(st, 1);

        /* damaged (a time outside 1970..year 37648 too: the meter
         * subtracts it from now): counted, the caller warns */
        if (key == NULL || klen <= 0 || klen >= CP_KEY_MAX || blob == NULL ||
            (blen != BLOB_LEN && blen != BLOB_LEN_V1) || t < 0 ||
            t > (sqlite3_int64)1 << 50) {
            if (skipped != NULL)
                (*skipped)++;
            continue;
        }
        memset(&c, 0, sizeof(c));
        c.t_ms = t;
        decode(blob, (size_t)blen, map, &c);
        memstore_restore(ms, key, (size_t)klen, &c);
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(db, "load", err);
    return n;
}

long
cp_sqlite_load_evidence(struct cp_sqlite *db, struct memstore *ms,
                        long *discarded, char *err)
{
    sqlite3_stmt *st;
    long n = 0;
    int rc;

    *discarded = 0;
    if (sqlite3_prepare_v2(db->db, "SELECT key, data FROM evidence", -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        int klen = sqlite3_column_bytes(st, 0);
        const void *blob = sqlite3_column_blob(st, 1);
        int blen = sqlite3_column_bytes(st, 1);
        struct cp_evidence ev;

        if (key == NULL || klen <= 0 || klen >= CP_KEY_MAX || blob == NULL ||
            !cp_evidence_unpack(&ev, blob, (size_t)blen) ||
            !memstore_restore_evidence(ms, key, (size_t)klen, &ev)) {
            (*discarded)++; /* another format, damaged, or no account */
            continue;
        }
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(db, "load evidence", err);
    return n;
}

/* Rows per transaction: bounds how long a checkpoint holds the write lock
 * that a state change on the loop thread may be waiting for. */
#define CKPT_ROWS_PER_TX 2000

/* The record's evidence: stored, or deleted. */
static int
write_evidence(struct cp_sqlite *db, const struct ckpt_batch *b,
               const struct ckpt_record *r, char *err)
{
    unsigned char blob[CP_EV_PACKED];
    sqlite3_stmt *st = r->ev >= 0 ? db->ev_upsert : db->ev_delete;

    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, b->keys.data + r->key_off, (int)r->keylen,
                      SQLITE_STATIC);
    if (r->ev >= 0) {
        cp_evidence_pack(&b->ev[r->ev], blob);
        sqlite3_bind_int64(st, 2, b->ev[r->ev].t_ms);
        sqlite3_bind_blob(st, 3, blob, (int)sizeof(blob), SQLITE_TRANSIENT);
    }
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(db, "write evidence", err);
    return 0;
}

/* An evicted account: its counters and (NORMAL) state rows. */
static int
delete_account(struct cp_sqlite *db, const char *key, size_t len, char *err)
{
    static const char *const sql[] = {
        "DELETE FROM accounts WHERE key=?",
        "DELETE FROM account_states WHERE key=? AND state=0",
    };

    for (size_t i = 0; i < 2; i++) {
        sqlite3_stmt *st;
        int rc;

        if (sqlite3_prepare_v2(db->db, sql[i], -1, &st, NULL) != SQLITE_OK)
            return db_fail(db, "prepare", err);
        sqlite3_bind_text(st, 1, key, (int)len, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return db_fail(db, "delete", err);
    }
    return 0;
}

static int
write_rows(struct cp_sqlite *db, const struct ckpt_batch *b, char *err)
{
    unsigned char blob[BLOB_LEN];

    for (size_t i = 0; i < b->n; i++) {
        const struct ckpt_record *r = &b->rec[i];

        if (i > 0 && i % CKPT_ROWS_PER_TX == 0 &&
            (sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK ||
             sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
                 SQLITE_OK))
            return db_fail(db, "commit", err);

        if (r->gone) {
            if (delete_account(db, b->keys.data + r->key_off, r->keylen,
                               err) < 0)
                return -1;
            continue;
        }
        encode(blob, &r->c);
        sqlite3_reset(db->upsert);
        sqlite3_bind_text(db->upsert, 1, b->keys.data + r->key_off,
                          (int)r->keylen, SQLITE_STATIC);
        sqlite3_bind_int64(db->upsert, 2, r->c.t_ms);
        sqlite3_bind_blob(db->upsert, 3, blob, BLOB_LEN, SQLITE_TRANSIENT);
        if (sqlite3_step(db->upsert) != SQLITE_DONE)
            return db_fail(db, "write", err);
        if ((r->ev >= 0 || r->ev_delete) && write_evidence(db, b, r, err) < 0)
            return -1;
    }
    return 0;
}

/* COMMIT, or ROLLBACK if that fails. 0, or -1 with `err`. */
static int
commit_or_rollback(struct cp_sqlite *db, char *err)
{
    if (sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    db_fail(db, "commit", err);
    sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int
rec_cmp(const void *x, const void *y, void *keys)
{
    const struct ckpt_record *a = x, *b = y;
    const char *k = keys;
    size_t n = a->keylen < b->keylen ? a->keylen : b->keylen;
    int c = memcmp(k + a->key_off, k + b->key_off, n);

    return c ? c : (a->keylen > b->keylen) - (a->keylen < b->keylen);
}

int
cp_sqlite_write(struct cp_sqlite *db, struct ckpt_batch *b, char *err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    /* in key order, rows land on neighbouring B-tree pages */
    qsort_r(b->rec, b->n, sizeof(*b->rec), rec_cmp, b->keys.data);
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(db, "begin", err);
    rc = sqlite3_prepare_v2(db->db,
                            "INSERT INTO meta(k,v) VALUES('slots',?) "
                            "ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, b->slots, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK || write_rows(db, b, err) < 0) {
        if (rc != SQLITE_OK)
            db_fail(db, "write meta", err);
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return commit_or_rollback(db, err);
}

/* BEGIN, unless inside cp_sqlite_begin() (the outer transaction holds). */
static int
tx_begin(struct cp_sqlite *db, char *err)
{
    if (db->in_tx)
        return 0;
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(db, "begin", err);
    return 0;
}

/* End what tx_begin() began: COMMIT if `ok`, else ROLLBACK (`err` is set
 * by the caller). Inside cp_sqlite_begin() the outer transaction decides. */
static int
tx_end(struct cp_sqlite *db, bool ok, char *err)
{
    if (db->in_tx)
        return ok ? 0 : -1;
    if (ok)
        return commit_or_rollback(db, err);
    sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int
cp_sqlite_begin(struct cp_sqlite *db, char *err)
{
    if (tx_begin(db, err) < 0)
        return -1;
    db->in_tx = true;
    return 0;
}

int
cp_sqlite_commit(struct cp_sqlite *db, char *err)
{
    if (!db->in_tx)
        return 0;
    db->in_tx = false;
    return commit_or_rollback(db, err);
}

int64_t
cp_sqlite_transition(struct cp_sqlite *db, const char *key, size_t keylen,
                     const struct cp_counters *c, const char *from,
                     const char *to, int64_t t_ms, const char *actor,
                     const char *reason, char *err)
{
    static const char *const sql[] = {
        "INSERT INTO account_states(key,state,repeat,since) VALUES(?,?,?,?) "
        "ON CONFLICT(key) DO UPDATE SET state=excluded.state,"
        " repeat=excluded.repeat, since=excluded.since",
        "INSERT INTO history(key,t,from_state,to_state,actor,reason) "
        "VALUES(?,?,?,?,?,?)"};
    sqlite3_stmt *st[2] = {NULL, NULL};
    int64_t row = 0;
    int ok;

    if (tx_begin(db, err) < 0)
        return -1;
    ok = sqlite3_prepare_v2(db->db, sql[0], -1, &st[0], NULL) == SQLITE_OK &&
         sqlite3_prepare_v2(db->db, sql[1], -1, &st[1], NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(st[0], 1, key, (int)keylen, SQLITE_STATIC);
        sqlite3_bind_int(st[0], 2, c->state);
        sqlite3_bind_int(st[0], 3, c->repeat);
        sqlite3_bind_int64(st[0], 4, c->state_since_s);
        sqlite3_bind_text(st[1], 1, key, (int)keylen, SQLITE_STATIC);
        sqlite3_bind_int64(st[1], 2, t_ms);
        sqlite3_bind_text(st[1], 3, from, -1, SQLITE_STATIC);
        sqlite3_bind_text(st[1], 4, to, -1, SQLITE_STATIC);
        sqlite3_bind_text(st[1], 5, actor, -1, SQLITE_STATIC);
        sqlite3_bind_text(st[1], 6, reason, -1, SQLITE_STATIC);
        ok = sqlite3_step(st[0]) == SQLITE_DONE &&
             sqlite3_step(st[1]) == SQLITE_DONE;
        row = sqlite3_last_insert_rowid(db->db);
    }
    sqlite3_finalize(st[0]);
    sqlite3_finalize(st[1]);
    if (!ok)
        db_fail(db, "state change", err);
    return tx_end(db, ok, err) < 0 ? -1 : row;
}

long
cp_sqlite_load_states(struct cp_sqlite *db, struct memstore *ms,
                      long *skipped, char *err)
{
    sqlite3_stmt *st;
    long n = 0;
    int rc;

    if (sqlite3_prepare_v2(db->db,
                           "SELECT key, state, repeat, since FROM "
                           "account_states",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        int klen = sqlite3_column_bytes(st, 0);
        struct cp_account_ref ref;

        sqlite3_int64 state = sqlite3_column_int64(st, 1);

        if (key == NULL || klen <= 0 || klen >= CP_KEY_MAX ||
            !ms->base.ops->account(&ms->base, key, (size_t)klen, true, false,
                                   &ref)) {
            if (skipped != NULL)
                (*skipped)++;
            continue;
        }
        if (state < 0 || state >= CP_ST_COUNT) {
            /* served as NORMAL it would free a blocked customer: refuse */
            snprintf(err, CP_ERR_MAX,
                     "account_states: account %.*s has state %lld, which "
                     "this version does not know (a damaged or newer "
                     "store): not starting; correct or delete that row",
                     klen > 200 ? 200 : klen, key, (long long)state);
            sqlite3_finalize(st);
            return -1;
        }
        ref.c->state = (uint8_t)state;
        ref.c->repeat = (uint8_t)sqlite3_column_int(st, 2);
        ref.c->state_since_s = (uint32_t)sqlite3_column_int64(st, 3);
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : db_fail(db, "load states", err);
}

int
cp_sqlite_history(struct cp_sqlite *db, const char *key, size_t keylen,
                  int limit, cp_history_fn fn, void *arg)
{
    sqlite3_stmt *st;
    int rc, n = 0;

    if (sqlite3_prepare_v2(db->db,
                           "SELECT t, from_state, to_state, actor, reason "
                           "FROM history WHERE key=? ORDER BY t DESC, id DESC "
                           "LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, (int)keylen, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fn(arg, sqlite3_column_int64(st, 0),
           (const char *)sqlite3_column_text(st, 1),
           (const char *)sqlite3_column_text(st, 2),
           (const char *)sqlite3_column_text(st, 3),
           (const char *)sqlite3_column_text(st, 4));
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : -1;
}

long
cp_sqlite_count_actor(struct cp_sqlite *db, const char *key, size_t keylen,
                      const char *actor_prefix, int64_t since_ms)
{
    sqlite3_stmt *st;
    long n = -1;

    if (sqlite3_prepare_v2(db->db,
                           "SELECT count(*) FROM history WHERE key=? AND t>=? "
                           "AND substr(actor,1,length(?3))=?3",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, (int)keylen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, since_ms);
    sqlite3_bind_text(st, 3, actor_prefix, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* ---- the outbox ---- */

int64_t
cp_sqlite_outbox_add(struct cp_sqlite *db, const struct cp_outbox_row *r,
                     char *err)
{
    sqlite3_stmt *st;
    int64_t id = -1;

    if (sqlite3_prepare_v2(db->db,
                           "INSERT INTO outbox(kind,what,account,incident,"
                           "target,sender,rcpt,body,timeout,retry,attempts,"
                           "max_attempts,due) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    sqlite3_bind_int(st, 1, r->kind);
    sqlite3_bind_text(st, 2, r->what, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->account, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)r->incident);
    sqlite3_bind_text(st, 5, r->target, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->from, -1, SQLITE_STATIC); /* NULL: none */
    sqlite3_bind_text(st, 7, r->to, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 8, r->body ? r->body : "", (int)r->body_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, (int64_t)r->timeout_ms);
    sqlite3_bind_int64(st, 10, (int64_t)r->retry_ms);
    sqlite3_bind_int(st, 11, (int)r->attempts);
    sqlite3_bind_int(st, 12, (int)r->max_attempts);
    sqlite3_bind_int64(st, 13, r->due_ms);
    if (sqlite3_step(st) == SQLITE_DONE)
        id = sqlite3_last_insert_rowid(db->db);
    else
        db_fail(db, "outbox insert", err);
    sqlite3_finalize(st);
    return id;
}

/* One statement on a row id (and maybe two integers). */
static int
outbox_exec(struct cp_sqlite *db, const char *sql, int64_t id, int64_t a,
            int64_t b, char *err)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_bind_parameter_count(st) == 3) {
        sqlite3_bind_int64(st, 2, a);
        sqlite3_bind_int64(st, 3, b);
    }
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_fail(db, "outbox", err);
    sqlite3_finalize(st);
    return rc;
}

int
cp_sqlite_outbox_retry(struct cp_sqlite *db, int64_t id, unsigned attempts,
                       int64_t due_ms, char *err)
{
    return outbox_exec(db, "UPDATE outbox SET attempts=?2, due=?3 WHERE id=?1",
                       id, attempts, due_ms, err);
}

int
cp_sqlite_outbox_done(struct cp_sqlite *db, int64_t id, char *err)
{
    return outbox_exec(db, "DELETE FROM outbox WHERE id=?1", id, 0, 0, err);
}

static const char *
col_text(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);

    return s ? s : "";
}

long
cp_sqlite_outbox_load(struct cp_sqlite *db, cp_outbox_fn fn, void *arg,
                      char *err)
{
    sqlite3_stmt *st;
    long n = 0;
    int rc;

    if (sqlite3_prepare_v2(db->db,
                           "SELECT id,kind,what,account,incident,target,"
                           "sender,rcpt,body,timeout,retry,attempts,"
                           "max_attempts,due FROM outbox ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct cp_outbox_row r;

        memset(&r, 0, sizeof(r));
        r.id = sqlite3_column_int64(st, 0);
        r.kind = sqlite3_column_int(st, 1);
        r.what = col_text(st, 2);
        r.account = col_text(st, 3);
        r.incident = (uint64_t)sqlite3_column_int64(st, 4);
        r.target = col_text(st, 5);
        r.from = (const char *)sqlite3_column_text(st, 6);
        r.to = (const char *)sqlite3_column_text(st, 7);
        r.body = sqlite3_column_blob(st, 8);
        r.body_len = (size_t)sqlite3_column_bytes(st, 8);
        r.timeout_ms = (uint64_t)sqlite3_column_int64(st, 9);
        r.retry_ms = (uint64_t)sqlite3_column_int64(st, 10);
        r.attempts = (unsigned)sqlite3_column_int(st, 11);
        r.max_attempts = (unsigned)sqlite3_column_int(st, 12);
        r.due_ms = sqlite3_column_int64(st, 13);
        fn(arg, &r);
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : db_fail(db, "outbox load", err);
}

/* ---- queue ids ---- */

void
cp_qid_batch_init(struct cp_qid_batch *b)
{
    memset(b, 0, sizeof(*b));
    sb_init(&b->add);
}

void
cp_qid_batch_fini(struct cp_qid_batch *b)
{
    sb_fini(&b->add);
}

void
cp_qid_batch_reset(struct cp_qid_batch *b)
{
    b->nadd = 0;
    sb_reset(&b->add);
}

/* A record: [u8 qlen][qid][u16 klen][key][i64 t] (lengths are checked by
 * the engine: qid <= 32, key < CP_KEY_MAX). */
void
cp_qid_batch_add(void *arg, const char *qid, size_t qlen, const char *key,
                 size_t klen, int64_t t_ms)
{
    struct cp_qid_batch *b = arg;
    uint8_t q = (uint8_t)qlen;
    uint16_t k = (uint16_t)klen;

    sb_append(&b->add, (const char *)&q, 1);
    sb_append(&b->add, qid, qlen);
    sb_append(&b->add, (const char *)&k, 2);
    sb_append(&b->add, key, klen);
    sb_append(&b->add, (const char *)&t_ms, 8);
    b->nadd++;
}

static int
qid_rows(struct cp_sqlite *db, const struct cp_qid_batch *b, char *err)
{
    sqlite3_stmt *ins = NULL;
    int ok;

    ok = sqlite3_prepare_v2(db->db,
                            "INSERT INTO queue_ids(qid,key,t) VALUES(?,?,?)",
                            -1, &ins, NULL) == SQLITE_OK;
    for (size_t i = 0; ok && i < b->add.len;) {
        const char *p = b->add.data + i;
        uint8_t q = (uint8_t)p[0];
        uint16_t k;
        int64_t t;

        memcpy(&k, p + 1 + q, 2);
        memcpy(&t, p + 3 + q + k, 8);
        sqlite3_reset(ins);
        sqlite3_bind_text(ins, 1, p + 1, q, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, p + 3 + q, k, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, t);
        ok = sqlite3_step(ins) == SQLITE_DONE;
        i += 11 + (size_t)q + k;
    }
    sqlite3_finalize(ins);
    return ok ? 0 : db_fail(db, "queue ids", err);
}

/* Keep the newest `keep` rows recorded at or after since_ms. */
static int
qid_prune(struct cp_sqlite *db, uint64_t keep, int64_t since_ms, char *err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(
            db->db,
            "DELETE FROM queue_ids WHERE id <= "
            "(SELECT max(id) FROM queue_ids) - ?1 OR id < coalesce("
            "(SELECT id FROM queue_ids WHERE t >= ?2 ORDER BY id LIMIT 1),"
            " (SELECT max(id) + 1 FROM queue_ids))",
            -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    sqlite3_bind_int64(st, 1, (int64_t)keep);
    sqlite3_bind_int64(st, 2, since_ms);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(db, "queue ids", err);
}

int
cp_sqlite_write_queued(struct cp_sqlite *db, const struct cp_qid_batch *b,
                       uint64_t keep, int64_t since_ms, char *err)
{
    if (tx_begin(db, err) < 0)
        return -1;
    return tx_end(db,
                  qid_rows(db, b, err) == 0 &&
                      qid_prune(db, keep, since_ms, err) == 0,
                  err);
}

long
cp_sqlite_load_queued(struct cp_sqlite *db, uint64_t keep, int64_t since_ms,
                      cp_qid_fn fn, void *arg, char *err)
{
    sqlite3_stmt *st = NULL;
    long n = 0;
    int rc;

    if (qid_prune(db, keep, since_ms, err) < 0)
        return -1;
    if (sqlite3_prepare_v2(db->db,
                           "SELECT qid,key,t FROM queue_ids ORDER BY id", -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fn(arg, (const char *)sqlite3_column_text(st, 0),
           (size_t)sqlite3_column_bytes(st, 0),
           (const char *)sqlite3_column_text(st, 1),
           (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_int64(st, 2));
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : db_fail(db, "load queue ids", err);
}

/* ---- chokepoint learn: habits stored for the daemon's start ---- */

struct learned_ctx {
    struct cp_sqlite *db;
    sqlite3_stmt *acct, *ev;
    long n;
    bool failed;
};

static void
write_learned_one(void *arg, const char *key, size_t keylen,
                  const struct cp_evidence *ev)
{
    struct learned_ctx *x = arg;
    unsigned char blob[CP_EV_PACKED], zero[BLOB_LEN];

    if (x->failed)
        return;
    memset(zero, 0, sizeof(zero));
    cp_evidence_pack(ev, blob);
    sqlite3_reset(x->acct);
    sqlite3_bind_text(x->acct, 1, key, (int)keylen, SQLITE_STATIC);
    sqlite3_bind_int64(x->acct, 2, ev->t_ms);
    sqlite3_bind_blob(x->acct, 3, zero, BLOB_LEN, SQLITE_TRANSIENT);
    sqlite3_reset(x->ev);
    sqlite3_bind_text(x->ev, 1, key, (int)keylen, SQLITE_STATIC);
    sqlite3_bind_int64(x->ev, 2, ev->t_ms);
    sqlite3_bind_blob(x->ev, 3, blob, (int)sizeof(blob), SQLITE_TRANSIENT);
    if (sqlite3_step(x->acct) != SQLITE_DONE ||
        sqlite3_step(x->ev) != SQLITE_DONE)
        x->failed = true;
    else
        x->n++;
}

long
cp_sqlite_write_learned(struct cp_sqlite *db, struct memstore *ms, char *err)
{
    struct learned_ctx x = {db, NULL, NULL, 0, false};
    long rc = -1;

    if (sqlite3_prepare_v2(db->db,
                           "INSERT OR IGNORE INTO accounts(key,t,data) "
                           "VALUES(?,?,?)",
                           -1, &x.acct, NULL) != SQLITE_OK) {
        db_fail(db, "prepare", err);
        return -1;
    }
    x.ev = db->ev_upsert;
    if (tx_begin(db, err) == 0) {
        memstore_each_evidence(ms, write_learned_one, &x);
        if (x.failed)
            db_fail(db, "write learned evidence", err);
        if (tx_end(db, !x.failed, err) == 0)
            rc = x.n;
    }
    sqlite3_finalize(x.acct);
    return rc;
}

int
cp_sqlite_put_blob(struct cp_sqlite *db, const char *name, const void *data,
                   size_t len, int64_t t_ms, char *err)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(db->db,
                           "INSERT INTO blobs(k,t,data) VALUES(?,?,?) "
                           "ON CONFLICT(k) DO UPDATE SET t=excluded.t, "
                           "data=excluded.data",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, t_ms);
    sqlite3_bind_blob64(st, 3, data, len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(db, "write blob", err);
}

long
cp_sqlite_get_blob(struct cp_sqlite *db, const char *name,
                   bool (*fn)(void *arg, const void *data, size_t len),
                   void *arg, char *err)
{
    sqlite3_stmt *st;
    long n = 0;
    int rc;

    if (sqlite3_prepare_v2(db->db, "SELECT data FROM blobs WHERE k=?", -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const void *data = sqlite3_column_blob(st, 0);
        int len = sqlite3_column_bytes(st, 0);

        n = data != NULL && len > 0 && fn(arg, data, (size_t)len) ? len : 0;
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : db_fail(db, "read blob", err);
}

/* ---- the stored format ---- */

#define STATE_FORMAT 2 /* 2: evidence and states per login (dkey) */
#define SET_FORMAT                                                            \
    "INSERT INTO meta(k,v) VALUES('format','2') ON CONFLICT(k) DO UPDATE "    \
    "SET v=excluded.v"

/* Does the database hold any account (an older one, not a new one)? */
static bool
has_rows(struct cp_sqlite *db)
{
    sqlite3_stmt *st;
    bool any = true; /* when in doubt, migrate */

    if (sqlite3_prepare_v2(db->db,
                           "SELECT EXISTS(SELECT 1 FROM accounts) OR "
                           "EXISTS(SELECT 1 FROM account_states)",
                           -1, &st, NULL) != SQLITE_OK)
        return any;
    if (sqlite3_step(st) == SQLITE_ROW)
        any = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    return any;
}

static int
exec_all(struct cp_sqlite *db, const char *sql, char *err)
{
    return sqlite3_exec(db->db, sql, NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : db_fail(db, "migrate", err);
}

static int
stored_format(struct cp_sqlite *db, char *err)
{
    sqlite3_stmt *st;
    int rc, fmt = 0;

    if (sqlite3_prepare_v2(db->db, "SELECT v FROM meta WHERE k='format'", -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        fmt = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? fmt
                                                 : db_fail(db, "read", err);
}

long
cp_sqlite_migrate(struct cp_sqlite *db, int64_t now_ms,
                  struct cp_sqlite_migration *m, char *err)
{
    static const char automatic[] = "(1, 2, 5)"; /* WATCH THROTTLED
                                                    PROBATION */
    char sql[1024];
    int fmt;

    memset(m, 0, sizeof(*m));
    if ((fmt = stored_format(db, err)) < 0)
        return -1;
    m->from = fmt;
    if (fmt >= STATE_FORMAT)
        return 0;
    if (tx_begin(db, err) < 0)
        return -1;
    if (fmt == 0 && !has_rows(db)) { /* a new database: this format */
        if (exec_all(db, SET_FORMAT, err) < 0)
            goto fail;
        return tx_end(db, true, err) < 0 ? -1 : 0;
    }
    /* a customer's automatic state came from evidence of all its logins
     * together; evidence is per login now, so it starts again there. A
     * person's MANUAL_HOLD, ALLOWED and a BLOCKED (a person releases it)
     * stay on the customer and cover all its logins. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO history(key,t,from_state,to_state,actor,reason) "
             "SELECT key, %lld, CASE state WHEN 1 THEN 'WATCH' WHEN 2 THEN "
             "'THROTTLED' ELSE 'PROBATION' END, 'NORMAL', 'upgrade', "
             "'evidence and states are kept per login now' FROM "
             "account_states WHERE key LIKE 'c:%%' AND state IN %s;"
             "UPDATE account_states SET state=0, since=%lld WHERE key LIKE "
             "'c:%%' AND state IN %s;",
             (long long)now_ms, automatic, (long long)(now_ms / 1000),
             automatic);
    if (exec_all(db, sql, err) < 0)
        goto fail;
    m->states_reset = sqlite3_changes(db->db);
    if (exec_all(db, "DELETE FROM evidence WHERE key LIKE 'c:%'", err) < 0)
        goto fail;
    m->evidence_dropped = sqlite3_changes(db->db);
    if (exec_all(db, SET_FORMAT, err) < 0)
        goto fail;
    if (tx_end(db, true, err) < 0)
        return -1;
    return 1;
fail:
    tx_end(db, false, err);
    return -1;
}

/* ---- the delivered-recipients table ---- */

#define DELIVERED_BLOB "delivered"

static bool
load_tags(void *arg, const void *data, size_t len)
{
    return tagset_load(arg, data, len);
}

long
cp_sqlite_load_delivered(struct cp_sqlite *db, struct tagset *t,
                         size_t slots, char *err)
{
    long n;

    if (slots == 0)
        return 0;
    if (t->slot == NULL)
        tagset_init(t, slots);
    n = cp_sqlite_get_blob(db, DELIVERED_BLOB, load_tags, t, err);
    return n <= 0 ? n : (long)t->used;
}

int
cp_sqlite_save_delivered(struct cp_sqlite *db, const struct tagset *t,
                         int64_t t_ms, char *err)
{
    if (t->slot == NULL)
        return 0;
    return cp_sqlite_put_blob(db, DELIVERED_BLOB, tagset_data(t),
                              tagset_bytes(t), t_ms, err);
}
