/*
 * fuzz_restore.c — libFuzzer target for what chokepointd reads back from
 * its store at start-up: the input is a list of rows the fuzzer writes
 * into a fresh (in-memory) database — counters, states, evidence, queue
 * ids, the delivered-recipients blob and meta rows (the stored format and
 * slot names) with plain SQL, into a database file under /dev/shm — and
 * the daemon's restore then runs on it: the format
 * upgrade, the counters, the states, the evidence, the delivered table
 * and the queue ids, then a few decisions on the restored accounts. A
 * damaged or hostile store must be refused or skipped, never crash.
 *
 * Input: records of [table][key length][key][8-byte t][2-byte length]
 * [value], table byte modulo 6 (0 accounts, 1 account_states, 2 evidence,
 * 3 queue_ids, 4 blobs, 5 meta).
 * Not covered: outbox rows (turned into mail and commands by the
 * daemon's outbox.c, which needs the daemon around it).
 */
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/policy.h"
#include "store/memstore.h"
#include "store/sqlite.h"
#include "util/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char config_text[] =
    "daemon:\n  listen: [unix:/nonexistent/policy.sock]\n"
    "store:\n  path: /nonexistent/state.db\n"
    "delivery:\n  max_queue_ids: 64\n  max_recipients: 1024\n"
    "classes:\n  residential:\n    limits:\n"
    "      - { metric: messages, window: 1h, max: 20 }\n"
    "      - { metric: recipients, window: 10m, max: 30 }\n"
    "  unauthenticated:\n    limits:\n"
    "      - { metric: messages, window: 1h, max: 5 }\n";

static struct cp_config *cfg;
static char dbpath[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[] = "/tmp/fuzz-restore-XXXXXX", err[CP_ERR_MAX];
    int fd;

    (void)argc;
    (void)argv;
    msg_init("fuzz_restore", false, MSG_ERROR);
    if ((fd = mkstemp(path)) < 0 ||
        write(fd, config_text, sizeof(config_text) - 1) !=
            (ssize_t)(sizeof(config_text) - 1))
        abort();
    close(fd);
    cfg = cp_config_load(path, err);
    unlink(path);
    snprintf(dbpath, sizeof(dbpath), "/dev/shm/fuzz-restore-%ld.db",
             (long)getpid());
    if (cfg == NULL) {
        fprintf(stderr, "fuzz_restore: %s\n", err);
        abort();
    }
    return 0;
}

static const char *const inserts[] = {
    "INSERT OR REPLACE INTO accounts(key,t,data) VALUES(?1,?2,?3)",
    "INSERT OR REPLACE INTO account_states(key,state,repeat,since) "
    "VALUES(?1,?2,?2 & 255,?2 >> 8)",
    "INSERT OR REPLACE INTO evidence(key,t,data) VALUES(?1,?2,?3)",
    "INSERT INTO queue_ids(qid,key,t,how) VALUES(?3,?1,?2,?2 & 255)",
    "INSERT OR REPLACE INTO blobs(k,t,data) VALUES(?1,?2,?3)",
    "INSERT OR REPLACE INTO meta(k,v) VALUES(?1,CAST(?3 AS TEXT))",
};

static void
load_rows(sqlite3 *db, const uint8_t *p, size_t n)
{
    size_t off = 0;

    while (off + 2 <= n) {
        unsigned table = p[off] % 6, klen = p[off + 1];
        int64_t t = 0;
        uint16_t vlen = 0;
        sqlite3_stmt *st;

        off += 2;
        if (off + klen + 10 > n)
            break;
        const char *key = (const char *)p + off;
        off += klen;
        memcpy(&t, p + off, 8);
        memcpy(&vlen, p + off + 8, 2);
        off += 10;
        if (vlen > n - off)
            vlen = (uint16_t)(n - off);
        if (sqlite3_prepare_v2(db, inserts[table], -1, &st, NULL) != SQLITE_OK)
            abort();
        sqlite3_bind_text(st, 1, key, (int)klen, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, t);
        sqlite3_bind_blob(st, 3, p + off, vlen, SQLITE_STATIC);
        (void)sqlite3_step(st); /* NOT NULL, duplicates: just skipped */
        sqlite3_finalize(st);
        off += vlen;
    }
}

static void
restore_qid(void *arg, const char *qid, size_t qlen, const char *key,
            size_t klen, int64_t t_ms, unsigned how)
{
    cp_engine_queued_restore(arg, qid, qlen, key, klen, t_ms, how,
                             1800000000000LL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[CP_ERR_MAX];
    struct cp_sqlite *db;
    struct cp_sqlite_migration m;
    struct memstore *ms;
    struct cp_engine e;
    sqlite3 *raw;
    long skipped = 0, dropped = 0;
    int64_t now = 1800000000000LL;

    unlink(dbpath);
    /* the schema as the daemon makes it, then the fuzzer's rows */
    if ((db = cp_sqlite_open(dbpath, err)) == NULL)
        abort();
    cp_sqlite_close(db);
    if (sqlite3_open(dbpath, &raw) != SQLITE_OK)
        abort();
    sqlite3_exec(raw, "BEGIN", NULL, NULL, NULL);
    load_rows(raw, data, size);
    sqlite3_exec(raw, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(raw);
    if ((db = cp_sqlite_open(dbpath, err)) == NULL)
        abort();
    ms = memstore_new(64);
    ms->track_dirty = false;
    if (cp_sqlite_migrate(db, now, &m, err) >= 0 &&
        cp_sqlite_load(db, cfg->slots, cfg->nslots, ms, &skipped, err) >= 0 &&
        cp_sqlite_load_states(db, ms, &skipped, err) >= 0 &&
        cp_sqlite_load_evidence(db, ms, &dropped, err) >= 0) {
        cp_engine_init(&e, cfg, &ms->base);
        if (cp_sqlite_load_delivered(db, &e.delivered,
                                     cfg->delivery.max_recipients, err) >= 0 &&
            cp_sqlite_load_queued(db, cfg->delivery.max_queue_ids, 0,
                                  restore_qid, &e, err) >= 0) {
            static const char *const logins[] = {"x", "u:x", "a@b", ""};

            for (size_t i = 0; i < 4; i++) {
                struct cp_event r;
                struct cp_decision d;

                memset(&r, 0, sizeof(r));
                r.stage = CP_STAGE_RCPT;
                r.sasl_username =
                    (struct str){logins[i], strlen(logins[i])};
                r.client_address = (struct str){"192.0.2.1", 9};
                r.recipient = (struct str){"r@example.com", 13};
                r.sender = (struct str){"x@example.com", 13};
                r.instance = (struct str){"i", 1};
                cp_engine_decide(&e, &r, now, &d);
            }
        }
        cp_engine_fini(&e);
    }
    memstore_free(ms);
    cp_sqlite_close(db);
    return 0;
}
