/*
 * sqlite.h — durable storage of the embedded store's counters in SQLite
 * (WAL mode, synchronous=NORMAL: a committed checkpoint survives a crash of
 * the process; see doc/design.md for the durability contract).
 *
 * Layout: meta(k, v) holds the slot names in blob order; accounts(key, t,
 * data) holds one row per account, data = levels (float32 per slot) +
 * recent-domain ring. Loading maps stored slots to the current ones by name,
 * so a changed limit or a reordered config keeps the history.
 *
 * Thread: a cp_sqlite handle is used by one thread at a time: the loop
 * thread at start-up and shutdown, the checkpoint worker in between.
 */
#ifndef CP_STORE_SQLITE_H
#define CP_STORE_SQLITE_H

#include "core/config.h"
#include "store/memstore.h"

struct cp_sqlite;

/* Open or create the database. NULL and `err` (CP_ERR_MAX) on failure. */
struct cp_sqlite *cp_sqlite_open(const char *path, char *err);
void cp_sqlite_close(struct cp_sqlite *db);
/* Load every account into `ms`; returns the number or -1 with `err`. */
long cp_sqlite_load(struct cp_sqlite *db, const struct cp_slot *slots,
                    size_t nslots, struct memstore *ms, char *err);
/* Write a batch in one transaction. 0, or -1 with `err`. */
int cp_sqlite_write(struct cp_sqlite *db, const struct ckpt_batch *b,
                    char *err);

#endif
