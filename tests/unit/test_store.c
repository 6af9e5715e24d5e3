/* test_store.c — the store's questions about an account's history:
 * which block a release ends, and whether its customer was told of it
 * (cp_sqlite_last_block, src/store/sqlite_states.c); the queue ids kept
 * across a restart, with what each message was, also in a database of an
 * earlier version (src/store/sqlite_delivery.c). A real SQLite file under
 * /tmp, removed at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "core/engine.h"
#include "store/sqlite.h"

#define KEY "u:vera@isp.example"

static struct cp_sqlite *
open_db(char *path, size_t n)
{
    char err[CP_ERR_MAX];
    struct cp_sqlite *db;
    int fd;

    snprintf(path, n, "/tmp/cp_test_store_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    db = cp_sqlite_open(path, err);
    assert_non_null(db);
    return db;
}

static void
close_db(struct cp_sqlite *db, const char *path)
{
    char p[300];

    cp_sqlite_close(db);
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

/* A state change of KEY: its number. */
static int64_t
change(struct cp_sqlite *db, const char *from, const char *to)
{
    struct cp_counters c;
    char err[CP_ERR_MAX];
    int64_t id;

    memset(&c, 0, sizeof(c));
    id = cp_sqlite_transition(db, KEY, strlen(KEY), &c, from, to, 1000,
                              "jane.doe (uid 0)", "note", err);
    assert_true(id > 0);
    return id;
}

/* A job of incident `incident`, pending, or done with `outcome`. */
static void
job(struct cp_sqlite *db, const char *what, int64_t incident,
    const char *outcome)
{
    struct cp_outbox_row r;
    char err[CP_ERR_MAX];
    int64_t id;

    memset(&r, 0, sizeof(r));
    r.what = what;
    r.account = KEY;
    r.incident = (uint64_t)incident;
    r.target = "/usr/sbin/sendmail";
    r.from = "abuse@isp.example";
    r.to = "owner@home.example";
    r.max_attempts = 3;
    id = cp_sqlite_outbox_add(db, &r, err);
    assert_true(id > 0);
    if (outcome != NULL)
        assert_int_equal(
            cp_sqlite_outbox_done(db, id, outcome, 1, false, 2000, err), 0);
}

static void
assert_block(struct cp_sqlite *db, int64_t release, int64_t want, bool told)
{
    int64_t block = -1;
    bool t = !told;

    assert_int_equal(cp_sqlite_last_block(db, KEY, strlen(KEY), KEY, release,
                                          &block, &t),
                     0);
    assert_int_equal(block, want);
    assert_int_equal(t, told);
}

static void
test_last_block(void **state)
{
    char path[64];
    struct cp_sqlite *db = open_db(path, sizeof(path));
    int64_t b1, r1, b2, h2, r2, b3, r3, b4, r4, r5;

    (void)state;
    assert_block(db, 0, 0, false); /* no history */

    /* a quiet block (no customer mail), then its release */
    b1 = change(db, "NORMAL", "MANUAL_HOLD");
    job(db, "webhook", b1, "sent");
    r1 = change(db, "MANUAL_HOLD", "PROBATION");
    assert_block(db, r1, b1, false);

    /* a told block: pending, then sent; a move to MANUAL_HOLD is not a
     * new block */
    b2 = change(db, "PROBATION", "BLOCKED");
    job(db, "customer mail", b2, NULL);
    h2 = change(db, "BLOCKED", "MANUAL_HOLD");
    r2 = change(db, "MANUAL_HOLD", "ALLOWED");
    assert_block(db, r2, b2, true);
    assert_true(h2 > b2);

    /* a block notice given up never reached the customer; a release
     * notice is no block notice */
    b3 = change(db, "ALLOWED", "MANUAL_HOLD");
    job(db, "customer mail", b3, "given up: 550 no such user");
    r3 = change(db, "MANUAL_HOLD", "PROBATION");
    job(db, "release notice", r3, "sent");
    assert_block(db, r3, b3, false);

    /* sent: told; the release not recorded (0) still finds it */
    b4 = change(db, "PROBATION", "BLOCKED");
    job(db, "customer mail", b4, "sent");
    assert_block(db, 0, b4, true);
    r4 = change(db, "BLOCKED", "PROBATION");
    assert_block(db, r4, b4, true);

    /* a release whose block's row is missing (not recorded): not the
     * older block an earlier release ended */
    r5 = change(db, "BLOCKED", "PROBATION");
    assert_block(db, r5, 0, false);
    close_db(db, path);
}

static void
collect_qid(void *arg, const char *qid, size_t qlen, const char *key,
            size_t klen, int64_t t_ms, unsigned how)
{
    char *out = arg;
    size_t n = strlen(out);

    snprintf(out + n, 256 - n, "%.*s=%.*s@%lld/%u ", (int)qlen, qid,
             (int)klen, key, (long long)t_ms, how);
}

/* Queue ids written at a checkpoint come back with what each message
 * was (a reply, another's mail); a database of an earlier version, whose
 * table has no such column, gets it when a writer upgrades it, and its
 * rows read as ordinary mail. */
static void
test_queue_ids_keep_what_the_message_was(void **state)
{
    char path[64], err[CP_ERR_MAX], got[256] = "";
    struct cp_sqlite_migration m;
    struct cp_qid_batch b;
    struct cp_sqlite *db = open_db(path, sizeof(path));
    sqlite3 *old;

    cp_qid_batch_init(&b);
    cp_qid_batch_add(&b, "Q1", 2, KEY, strlen(KEY), 1000, 0);
    cp_qid_batch_add(&b, "Q2", 2, KEY, strlen(KEY), 2000, CP_QUEUED_REPLY);
    cp_qid_batch_add(&b, "Q3", 2, KEY, strlen(KEY), 3000, CP_QUEUED_OTHERS);
    assert_int_equal(cp_sqlite_write_queued(db, &b, 100, 0, err), 0);
    assert_int_equal(cp_sqlite_load_queued(db, 100, 0, collect_qid, got, err),
                     3);
    assert_string_equal(got, "Q1=" KEY "@1000/0 Q2=" KEY "@2000/1 Q3=" KEY
                             "@3000/2 ");
    cp_qid_batch_fini(&b);
    close_db(db, path);

    /* the table as an earlier version made it, with a row */
    assert_int_equal(sqlite3_open(path, &old), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(old,
                     "CREATE TABLE queue_ids(id INTEGER PRIMARY KEY,"
                     " qid TEXT NOT NULL, key TEXT NOT NULL,"
                     " t INTEGER NOT NULL);"
                     "INSERT INTO queue_ids(qid,key,t) VALUES('Q9','" KEY
                     "',9000);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(old);
    db = cp_sqlite_open(path, err);
    assert_non_null(db);
    assert_int_equal(cp_sqlite_migrate(db, 10000, &m, err), 0);
    assert_int_equal(m.columns_added, 1);
    assert_int_equal(cp_sqlite_migrate(db, 10000, &m, err), 0);
    assert_int_equal(m.columns_added, 0);
    got[0] = '\0';
    assert_int_equal(cp_sqlite_load_queued(db, 100, 0, collect_qid, got, err),
                     1);
    assert_string_equal(got, "Q9=" KEY "@9000/0 ");
    close_db(db, path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_block),
        cmocka_unit_test(test_queue_ids_keep_what_the_message_was),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
