/*
 * sqlite_int.h — private to src/store/sqlite*.c (never included outside
 * src/store): the connection handle and the transaction helpers that the
 * pieces of the SQLite store share. The public API is store/sqlite.h.
 *
 * The pieces, by concern (each file says which thread calls what):
 *   sqlite.c           open, schema, transactions, format migration
 *   sqlite_accounts.c  counters: start-up load, checkpoint write (table
 *                      accounts, with the evidence rows of the batch)
 *   sqlite_states.c    account states and their history
 *   sqlite_evidence.c  evidence load at start-up, chokepoint learn
 *   sqlite_outbox.c    the outbox's jobs
 *   sqlite_delivery.c  queue ids, named blobs, delivered recipients
 */
#ifndef CP_STORE_SQLITE_INT_H
#define CP_STORE_SQLITE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>

#include "store/sqlite.h"

/* accounts.data: levels, domain ring, ring position; then state, repeat,
 * state_since (format 1 rows end before those) */
#define BLOB_LEN_V1 (CP_MAX_SLOTS * 4 + CP_DOM_RING * 4 + 1)
#define BLOB_LEN (BLOB_LEN_V1 + 6)

struct cp_sqlite {
    sqlite3 *db;
    sqlite3_stmt *upsert;
    sqlite3_stmt *ev_upsert, *ev_delete;
    bool in_tx; /* inside cp_sqlite_begin(): statements do not commit */
};

/* `err` = what failed and SQLite's message; returns -1. */
static inline int
db_fail(struct cp_sqlite *db, const char *what, char *err)
{
    snprintf(err, CP_ERR_MAX, "sqlite %s: %s", what, sqlite3_errmsg(db->db));
    return -1;
}

/* COMMIT, or ROLLBACK if that fails. 0, or -1 with `err`. */
static inline int
commit_or_rollback(struct cp_sqlite *db, char *err)
{
    if (sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    db_fail(db, "commit", err);
    sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* BEGIN, unless inside cp_sqlite_begin() (the outer transaction holds). */
static inline int
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
static inline int
tx_end(struct cp_sqlite *db, bool ok, char *err)
{
    if (db->in_tx)
        return ok ? 0 : -1;
    if (ok)
        return commit_or_rollback(db, err);
    sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

#endif
