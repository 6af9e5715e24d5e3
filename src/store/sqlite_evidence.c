/*
 * sqlite_evidence.c — evidence (table evidence, cp_evidence_pack records):
 * read back into the loaded accounts at start-up, and written for every
 * account by `chokepoint learn` so that chokepointd starts warm. The
 * checkpoint writes and deletes evidence rows with the counters
 * (sqlite_accounts.c).
 *
 * Threads: cp_sqlite_load_evidence on the loop thread at start-up
 * (chokepointd's d->db; the CLI's replay); cp_sqlite_write_learned in the
 * CLI only.
 */
#include <sqlite3.h>
#include <string.h>

#include "core/evidence.h"
#include "store/sqlite_int.h"

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
