/*
 * sqlite_states.c — account states (table account_states: the state,
 * repeat count and since of every account not NORMAL, or once not) and
 * their audit trail (table history: one row per change; its id is an
 * incident's number).
 *
 * Threads: cp_sqlite_transition, cp_sqlite_history and
 * cp_sqlite_count_actor on the loop thread, on chokepointd's d->db_sync,
 * while the loop runs: a state change is written before the reply that
 * depends on it (incident.c incident_apply, checkpoint.c retry_unrecorded at
 * every tick and at the stop), history is read for `chokepoint show` and a
 * self-service release (admin.c), and the block a release ends
 * (cp_sqlite_last_block, incident.c). cp_sqlite_load_states on the loop
 * thread at start-up (d->db; the CLI's replay).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "core/lifecycle.h"
#include "store/sqlite_int.h"

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

/* Call fn for each row of a prepared "SELECT id, key, t, from_state,
 * to_state, actor, reason": their number, or -1 on error. */
static int
history_rows(sqlite3_stmt *st, cp_history_fn fn, void *arg)
{
    int rc, n = 0;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct cp_history_row r = {
            .id = sqlite3_column_int64(st, 0),
            .key = (const char *)sqlite3_column_text(st, 1),
            .t_ms = sqlite3_column_int64(st, 2),
            .from = (const char *)sqlite3_column_text(st, 3),
            .to = (const char *)sqlite3_column_text(st, 4),
            .actor = (const char *)sqlite3_column_text(st, 5),
            .reason = (const char *)sqlite3_column_text(st, 6),
        };

        fn(arg, &r);
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : -1;
}

int
cp_sqlite_history(struct cp_sqlite *db, const char *key, size_t keylen,
                  int limit, cp_history_fn fn, void *arg)
{
    sqlite3_stmt *st;

    if (sqlite3_prepare_v2(db->db,
                           "SELECT id, key, t, from_state, to_state, actor, "
                           "reason FROM history WHERE key=? "
                           "ORDER BY t DESC, id DESC LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, (int)keylen, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit);
    return history_rows(st, fn, arg);
}

int
cp_sqlite_incident(struct cp_sqlite *db, int64_t id, cp_history_fn fn,
                   void *arg)
{
    sqlite3_stmt *st;

    if (sqlite3_prepare_v2(db->db,
                           "SELECT id, key, t, from_state, to_state, actor, "
                           "reason FROM history WHERE id=?",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    return history_rows(st, fn, arg);
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

int
cp_sqlite_last_block(struct cp_sqlite *db, const char *key, size_t keylen,
                     const char *account, int64_t release, int64_t *block,
                     bool *told)
{
    /* a told customer: the block notice is pending or was sent (one given
     * up or dropped never reached them) */
    static const char sql[] =
        "SELECT h.id, EXISTS(SELECT 1 FROM outbox WHERE account=?2 AND "
        " incident=h.id AND what='customer mail') OR "
        " EXISTS(SELECT 1 FROM outbox_done WHERE account=?2 AND "
        " incident=h.id AND what='customer mail' AND outcome='sent') "
        "FROM history h WHERE h.key=?1 AND h.id<?3 "
        " AND h.to_state IN ('BLOCKED','MANUAL_HOLD') "
        " AND h.from_state NOT IN ('BLOCKED','MANUAL_HOLD') "
        /* a block whose own row is missing is not an older, ended one */
        " AND NOT EXISTS(SELECT 1 FROM history x WHERE x.key=?1 "
        "  AND x.id>h.id AND x.id<?3 "
        "  AND x.from_state IN ('BLOCKED','MANUAL_HOLD') "
        "  AND x.to_state NOT IN ('BLOCKED','MANUAL_HOLD')) "
        "ORDER BY h.id DESC LIMIT 1";
    sqlite3_stmt *st;
    int rc;

    *block = 0;
    *told = false;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, (int)keylen, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, account, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, release > 0 ? release : INT64_MAX);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *block = sqlite3_column_int64(st, 0);
        *told = sqlite3_column_int(st, 1) != 0;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}
