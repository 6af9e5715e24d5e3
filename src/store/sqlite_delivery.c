/*
 * sqlite_delivery.c — what delivery outcomes need across a restart: the
 * queue ids of accepted mail (table queue_ids, appended with each
 * checkpoint, pruned by count and age), and the engine's table of
 * recipients delivered to (a row of the named blobs, table blobs).
 *
 * Threads: cp_sqlite_load_queued and cp_sqlite_load_delivered on the loop
 * thread at start-up (chokepointd's d->db; the CLI's replay loads the
 * delivered table); cp_sqlite_write_queued on the checkpoint's libuv
 * worker (d->db) while the loop runs, and on the loop thread at the stop;
 * cp_sqlite_save_delivered on the loop thread at the stop, and in the CLI
 * (learn). A cp_qid_batch is filled on the loop thread and read by the
 * worker while the checkpoint runs (checkpoint.c).
 */
#include <sqlite3.h>
#include <string.h>

#include "store/sqlite_int.h"

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

/* A record: [u8 qlen][qid][u16 klen][key][i64 t][u8 how] (lengths are
 * checked by the engine: qid <= 32, key < CP_KEY_MAX). */
void
cp_qid_batch_add(void *arg, const char *qid, size_t qlen, const char *key,
                 size_t klen, int64_t t_ms, unsigned how)
{
    struct cp_qid_batch *b = arg;
    uint8_t q = (uint8_t)qlen, h = (uint8_t)how;
    uint16_t k = (uint16_t)klen;

    sb_append(&b->add, (const char *)&q, 1);
    sb_append(&b->add, qid, qlen);
    sb_append(&b->add, (const char *)&k, 2);
    sb_append(&b->add, key, klen);
    sb_append(&b->add, (const char *)&t_ms, 8);
    sb_append(&b->add, (const char *)&h, 1);
    b->nadd++;
}

static int
qid_rows(struct cp_sqlite *db, const struct cp_qid_batch *b, char *err)
{
    sqlite3_stmt *ins = NULL;
    int ok;

    ok = sqlite3_prepare_v2(db->db,
                            "INSERT INTO queue_ids(qid,key,t,how) "
                            "VALUES(?,?,?,?)",
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
        sqlite3_bind_int(ins, 4, (uint8_t)p[11 + q + k]);
        ok = sqlite3_step(ins) == SQLITE_DONE;
        i += 12 + (size_t)q + k;
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
                           "SELECT qid,key,t,how FROM queue_ids ORDER BY id",
                           -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", err);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fn(arg, (const char *)sqlite3_column_text(st, 0),
           (size_t)sqlite3_column_bytes(st, 0),
           (const char *)sqlite3_column_text(st, 1),
           (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_int64(st, 2),
           (unsigned)sqlite3_column_int(st, 3));
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : db_fail(db, "load queue ids", err);
}

/* ---- named blobs ---- */

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
