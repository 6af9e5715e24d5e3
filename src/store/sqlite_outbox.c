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
 * cp_sqlite_outbox_done on the outbox thread, on that connection.
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
