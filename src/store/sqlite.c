/*
 * sqlite.c — the SQLite store's connection: open (schema, pragmas, the
 * statements the checkpoint reuses), close, grouping writes into one
 * transaction (cp_sqlite_begin/commit), and bringing an older format up to
 * date (cp_sqlite_migrate). The tables are read and written by the other
 * sqlite_*.c files (list in sqlite_int.h).
 *
 * Threads (chokepointd has three connections, each used by one thread at
 * a time; SQLITE_OPEN_NOMUTEX):
 *   d->db       open, migrate, the restore and close on the loop thread
 *               (start-up, shutdown); in between only the checkpoint's
 *               libuv worker writes on it (checkpoint.c).
 *   d->db_sync  the loop thread's, always: state changes with
 *               cp_sqlite_begin/commit around them and their outbox rows
 *               (incident.c incident_apply, checkpoint.c retry_unrecorded),
 *               history reads of admin commands (admin.c). These block the
 *               loop for the write (busy_timeout up to 5 s if a
 *               checkpoint holds the lock).
 *   outbox      opened, read and closed on the loop thread (outbox_start,
 *               outbox_stop); the outbox thread updates and deletes rows.
 * The CLI (chokepoint replay, learn) opens one connection on its only
 * thread.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/sqlite_int.h"
#include "util/xalloc.h"

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
    /* jobs the outbox finished (sent, given up, dropped), for `chokepoint
     * show`: the notices an account's incidents sent and the queue ids
     * they held; body kept for commands only (the queue ids); the newest
     * OUTBOX_DONE_KEEP rows are kept */
    "CREATE TABLE IF NOT EXISTS outbox_done(id INTEGER PRIMARY KEY,"
    " kind INTEGER NOT NULL, what TEXT NOT NULL, account TEXT NOT NULL,"
    " incident INTEGER NOT NULL, target TEXT NOT NULL, rcpt TEXT,"
    " body BLOB, attempts INTEGER NOT NULL, t INTEGER NOT NULL,"
    " outcome TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS outbox_done_account ON"
    " outbox_done(account, id);"
    /* queue ids of accepted mail → account (delivery outcomes, hold),
     * appended in time order; pruned by count and age, never by qid;
     * how: CP_QUEUED_* (a reply, another's mail to one recipient) */
    "CREATE TABLE IF NOT EXISTS queue_ids(id INTEGER PRIMARY KEY,"
    " qid TEXT NOT NULL, key TEXT NOT NULL, t INTEGER NOT NULL,"
    " how INTEGER NOT NULL DEFAULT 0);"
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

static bool
has_column(struct cp_sqlite *db, const char *table, const char *column)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    bool has;

    snprintf(sql, sizeof(sql), "SELECT %s FROM %s LIMIT 0", column, table);
    has = sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) == SQLITE_OK;
    sqlite3_finalize(st);
    return has;
}

/* Columns a database of an earlier version lacks, added (its rows get the
 * default) in one IMMEDIATE transaction, so that two processes upgrading
 * one file at once do not both add them. An earlier version still writes
 * the tables: it names its columns. Only writers upgrade (the daemon,
 * learn): a replay reads a copy as it is. */
static int
add_columns(struct cp_sqlite *db, int *added, char *err)
{
    bool ok = true;

    if (has_column(db, "queue_ids", "how"))
        return 0;
    if (tx_begin(db, err) < 0)
        return -1;
    if (!has_column(db, "queue_ids", "how")) {
        ok = exec_all(db, "ALTER TABLE queue_ids ADD COLUMN how INTEGER NOT "
                          "NULL DEFAULT 0",
                      err) == 0;
        *added += ok;
    }
    return tx_end(db, ok, err);
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
    if (add_columns(db, &m->columns_added, err) < 0 ||
        (fmt = stored_format(db, err)) < 0)
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
