/*
 * sqlite_outbox.c — the outbox's jobs not yet done (table outbox), so a
 * restart or a crash resumes them (src/daemon/outbox.c).
 *
 * Threads: cp_sqlite_outbox_add on the loop thread, on chokepointd's
 * d->db_sync (inside the transaction of the state change that caused the
 * job, or at a checkpoint tick for a row not written before);
 * cp_sqlite_outbox_load (and cp_sqlite_outbox_done of a row this version
 * cannot run) on the loop thread at start-up, on the outbox's own
 * connection, before the outbox thread starts; cp_sqlite_outbox_retry and
 * cp_sqlite_outbox_done on the outbox thread, on that connection;
 * cp_sqlite_outbox_account on the loop thread (admin `show`), on
 * d->db_sync.
 */
#include <sqlite3.h>
#include <string.h>

#include "store/sqlite_int.h"

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


static const char *
col_text(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);

    return s ? s : "";
}

/* The row, moved to outbox_done with its outcome; the oldest finished
 * rows beyond OUTBOX_DONE_KEEP go. */
int
cp_sqlite_outbox_done(struct cp_sqlite *db, int64_t id, const char *outcome,
                      unsigned attempts, bool keep_body, int64_t t_ms,
                      char *err)
{
    sqlite3_stmt *st;
    bool ok;

    if (tx_begin(db, err) < 0)
        return -1;
    if (sqlite3_prepare_v2(db->db,
                           "INSERT INTO outbox_done(kind,what,account,"
                           "incident,target,rcpt,body,attempts,t,outcome) "
                           "SELECT kind,what,account,incident,target,rcpt,"
                           "CASE WHEN ?2 THEN body END,?5,?3,?4 "
                           "FROM outbox WHERE id=?1",
                           -1, &st, NULL) != SQLITE_OK) {
        db_fail(db, "prepare", err);
        return tx_end(db, false, err);
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, keep_body);
    sqlite3_bind_int64(st, 3, t_ms);
    sqlite3_bind_text(st, 4, outcome, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, (int)attempts);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    if (!ok) {
        db_fail(db, "outbox done", err);
    } else if (sqlite3_changes(db->db) != 1) {
        /* no such row (deleted by hand): nothing to record or prune */
        snprintf(err, CP_ERR_MAX, "outbox row %lld is gone",
                 (long long)id);
        return tx_end(db, false, err);
    }
    ok = ok && outbox_exec(db, "DELETE FROM outbox WHERE id=?1", id, 0, 0,
                           err) == 0;
    ok = ok && outbox_exec(db, "DELETE FROM outbox_done WHERE id <= ?1",
                           sqlite3_last_insert_rowid(db->db) -
                               OUTBOX_DONE_KEEP,
                           0, 0, err) == 0;
    return tx_end(db, ok, err);
}

/* One row of `sql` (columns as in cp_sqlite_outbox_account) per call. */
static int
account_rows(struct cp_sqlite *db, const char *sql, const char *account,
             uint64_t incident, int limit, bool pending,
             cp_outbox_done_fn fn, void *arg, char *err)
{
    sqlite3_stmt *st;
    int rc, n = 0;

    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit);
    sqlite3_bind_int64(st, 3, (int64_t)incident);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct cp_outbox_done_row r;

        memset(&r, 0, sizeof(r));
        r.pending = pending;
        r.what = col_text(st, 0);
        r.target = col_text(st, 1);
        r.to = (const char *)sqlite3_column_text(st, 2);
        r.incident = (uint64_t)sqlite3_column_int64(st, 3);
        r.attempts = (unsigned)sqlite3_column_int(st, 4);
        r.t_ms = sqlite3_column_int64(st, 5);
        r.outcome = col_text(st, 6);
        r.body = sqlite3_column_blob(st, 7);
        r.body_len = (size_t)sqlite3_column_bytes(st, 7);
        fn(arg, &r);
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : db_fail(db, "outbox rows", err);
}

int
cp_sqlite_outbox_account(struct cp_sqlite *db, const char *account,
                         uint64_t incident, int limit, cp_outbox_done_fn fn,
                         void *arg, char *err)
{
    int a, b;

    a = account_rows(db,
                     "SELECT what,target,rcpt,incident,attempts,due,"
                     "'pending',body FROM outbox WHERE account=?1 "
                     "AND (?3=0 OR incident=?3) ORDER BY id DESC LIMIT ?2",
                     account, incident, limit, true, fn, arg, err);
    if (a < 0)
        return -1;
    b = account_rows(db,
                     "SELECT what,target,rcpt,incident,attempts,t,outcome,"
                     "body FROM outbox_done WHERE account=?1 "
                     "AND (?3=0 OR incident=?3) ORDER BY id DESC LIMIT ?2",
                     account, incident, limit - a, false, fn, arg, err);
    return b < 0 ? -1 : a + b;
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
