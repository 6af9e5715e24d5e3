/*
 * sqlite_accounts.c — every account's counters (table accounts, one row
 * per account, data = BLOB_LEN bytes, meta.slots naming the slot order):
 * loaded at start-up (stored slots mapped to the current ones by name) and
 * written by the checkpoint, with the evidence rows of the batch, in
 * transactions of CKPT_ROWS_PER_TX rows.
 *
 * Threads: cp_sqlite_load on the loop thread at start-up (chokepointd's
 * d->db; the CLI's replay); cp_sqlite_write on the checkpoint's libuv
 * worker (d->db) while the loop runs, and on the loop thread for the final
 * checkpoint after the loop has stopped.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/evidence.h"
#include "store/sqlite_int.h"

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
