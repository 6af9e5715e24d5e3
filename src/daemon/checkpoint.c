/*
 * checkpoint.c — make the embedded store durable: every
 * store.checkpoint_interval the loop thread copies the accounts changed
 * since the last checkpoint into a batch (cheap: a scan and a memcpy per
 * changed account) and a libuv worker thread writes the batch to SQLite in
 * one transaction. One checkpoint runs at a time; if the previous one is
 * still writing, the tick is skipped and the changes wait for the next.
 * A failed write is logged and its accounts are marked dirty again.
 *
 * Evidence rides along for the accounts in the middle of detection (a
 * state other than NORMAL, or a score of at least half of watch_at), so a
 * crash does not give a half-detected zombie a clean start; the final
 * checkpoint of a clean stop stores all of it, in chunks. A stored copy
 * that is no longer wanted (faded, released, swept) is deleted.
 *
 * The queue-id table rides along: the ids the engine recorded since the
 * last checkpoint (its journal) are appended in a transaction of their
 * own, and the table pruned to delivery.max_queue_ids within
 * delivery.queue_id_ttl; after a failed write the next checkpoint writes
 * them again.
 *
 * A state change whose history row could not be written (disk full, a
 * locked or damaged store) is kept in memory and written again at every
 * tick until it is (ckpt_unrecorded_*): the audit trail is never dropped
 * while the daemon runs, and `status` shows how many wait.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"
#include "util/clock.h"
#include "util/msg.h"
#include "util/xalloc.h"

struct unrecorded {
    struct unrecorded *next;
    struct cp_counters c;
    int64_t t_ms;
    unsigned tries;
    char from[16], to[16];
    char *actor, *reason;
    size_t keylen;
    char key[];
};

void
ckpt_unrecorded_add(struct daemon *d, const char *key, size_t keylen,
                    const struct cp_counters *c, const char *from,
                    const char *to, int64_t t_ms, const char *actor,
                    const char *reason)
{
    struct unrecorded *u = xcalloc(1, sizeof(*u) + keylen + 1);
    struct unrecorded **tail = &d->unrecorded;

    memcpy(u->key, key, keylen);
    u->keylen = keylen;
    u->c = *c;
    u->t_ms = t_ms;
    snprintf(u->from, sizeof(u->from), "%s", from);
    snprintf(u->to, sizeof(u->to), "%s", to);
    u->actor = xstrdup(actor);
    u->reason = xstrdup(reason);
    while (*tail != NULL) /* in order: the history reads right */
        tail = &(*tail)->next;
    *tail = u;
    d->nunrecorded++;
}

static void
unrecorded_free(struct unrecorded *u)
{
    free(u->actor);
    free(u->reason);
    free(u);
}

/* Write what waits, oldest first; stop at the first failure. */
static void
retry_unrecorded(struct daemon *d)
{
    char err[CP_ERR_MAX], key[CP_KEY_MAX * 4 + 4];

    while (d->unrecorded != NULL) {
        struct unrecorded *u = d->unrecorded;

        if (cp_sqlite_begin(d->db_sync, err) < 0 ||
            cp_sqlite_transition(d->db_sync, u->key, u->keylen, &u->c,
                                 u->from, u->to, u->t_ms, u->actor, u->reason,
                                 err) < 0 ||
            cp_sqlite_commit(d->db_sync, err) < 0) {
            (void)cp_sqlite_commit(d->db_sync, err);
            if (++u->tries % 60 == 1)
                msg_error("%zu state changes still not recorded: %s",
                          d->nunrecorded, err);
            return;
        }
        str_escape(key, sizeof(key), u->key, u->keylen, CP_KEY_MAX);
        msg_warn("account %s: state change %s -> %s recorded after %u "
                 "retries",
                 key, u->from, u->to, u->tries + 1);
        d->unrecorded = u->next;
        d->nunrecorded--;
        unrecorded_free(u);
    }
}


/* Accounts per batch of the final checkpoint: bounds the copy (each may
 * carry 336 bytes of evidence). */
#define CKPT_FINAL_CHUNK 65536

/* Worker: append the batch, prune by the limits copied with it. */
static int
write_queued(struct daemon *d)
{
    return cp_sqlite_write_queued(d->db, &d->qid_batch, d->qid_keep,
                                  d->qid_since, d->qid_err);
}

static void
work(uv_work_t *w)
{
    struct daemon *d = w->data;

    d->ckpt_rc = d->ckpt_batch.n == 0
                     ? 0
                     : cp_sqlite_write(d->db, &d->ckpt_batch, d->ckpt_err);
    d->qid_rc = d->qid_batch.nadd == 0 ? 0 : write_queued(d);
}

/* Loop thread: the ids recorded since the last stored batch, and the
 * limits the worker prunes by (the config may be reloaded meanwhile). */
static void
collect_queued(struct daemon *d)
{
    cp_qid_batch_reset(&d->qid_batch);
    d->qid_mark = cp_engine_queued_journal(&d->engine, cp_qid_batch_add,
                                           &d->qid_batch);
    d->qid_keep = d->cfg->delivery.max_queue_ids;
    d->qid_since = ckpt_queued_since(d);
}

int64_t
ckpt_queued_since(const struct daemon *d)
{
    return daemon_now_ms() - (int64_t)d->cfg->delivery.queue_id_ttl_ms;
}

static void
after_work(uv_work_t *w, int status)
{
    struct daemon *d = w->data;

    d->ckpt_running = false;
    d->stats.ckpt_last_us = clock_mono_us() - d->stats.ckpt_last_us;
    if (status < 0 || d->qid_rc < 0)
        msg_error("checkpoint of %zu queue ids failed: %s; will retry",
                  d->qid_batch.nadd,
                  status < 0 ? uv_strerror(status) : d->qid_err);
    else
        cp_engine_queued_stored(&d->engine, d->qid_mark);
    if (status < 0 || d->ckpt_rc < 0) {
        d->stats.ckpt_errors++;
        msg_error("checkpoint of %zu accounts failed: %s; will retry",
                  d->ckpt_batch.n,
                  status < 0 ? uv_strerror(status) : d->ckpt_err);
        memstore_mark_dirty(d->ms, &d->ckpt_batch);
        return;
    }
    d->stats.ckpt_runs++;
    d->stats.ckpt_rows += d->ckpt_batch.n;
    d->stats.ckpt_last_ms = daemon_now_ms();
    msg_debug("checkpoint: %zu accounts written in %llu us", d->ckpt_batch.n,
              (unsigned long long)d->stats.ckpt_last_us);
}

/*
 * Over store.max_accounts: evict idle, clean accounts down to 90 % of it
 * (memstore_evict: NORMAL, no evidence, unused for the longest limit
 * window, so their counters have drained). A scan walks every account, so
 * it runs at most once a minute unless the count grew by 1 % of the cap.
 */
static void
maybe_evict(struct daemon *d)
{
    size_t cap = d->cfg->max_accounts, n = d->ms->accts.count, got;
    int64_t now = daemon_now_ms();
    uint64_t idle = 0;

    if (n <= cap || (now - d->evict_ms < 60000 && n < d->evict_n + cap / 100))
        return;
    for (size_t i = 0; i < d->cfg->nslots; i++)
        if (d->cfg->slots[i].window_ms > idle)
            idle = d->cfg->slots[i].window_ms;
    got = memstore_evict(d->ms, &d->cfg->det, cap - cap / 10, now,
                         (int64_t)idle);
    d->evict_ms = now;
    d->evict_n = d->ms->accts.count;
    if (d->evict_n > cap)
        msg_warn("%zu accounts tracked, over store.max_accounts (%zu): %zu "
                 "idle ones evicted, the others are in use, hold a state or "
                 "evidence (about 220 bytes each)",
                 d->evict_n, cap, got);
    else
        msg_info("evicted %zu idle accounts (store.max_accounts %zu)", got,
                 cap);
}

static void
on_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;

    retry_unrecorded(d);
    outbox_rewrite(d->outbox);
    maybe_evict(d);
    if (d->ckpt_running ||
        (d->ms->dirty == 0 && d->ms->ngone == 0 &&
         !cp_engine_queued_dirty(&d->engine)))
        return;
    ckpt_batch_set_slots(&d->ckpt_batch, d->cfg->slots, d->cfg->nslots);
    memstore_collect_dirty(d->ms, &d->ckpt_batch,
                           &(struct ckpt_ev_policy){
                               .det = &d->cfg->det,
                               .min_score = d->cfg->det.watch_at / 2,
                               .now_ms = daemon_now_ms()},
                           SIZE_MAX);
    collect_queued(d);
    d->ckpt_running = true;
    d->ckpt_work.data = d;
    d->stats.ckpt_last_us = clock_mono_us();
    if (uv_queue_work(d->loop, &d->ckpt_work, work, after_work) < 0) {
        d->ckpt_running = false;
        memstore_mark_dirty(d->ms, &d->ckpt_batch);
    }
}

void
ckpt_start(struct daemon *d)
{
    ckpt_batch_init(&d->ckpt_batch);
    cp_qid_batch_init(&d->qid_batch);
    uv_timer_init(d->loop, &d->ckpt_timer);
    d->ckpt_timer.data = d;
    uv_timer_start(&d->ckpt_timer, on_tick, d->cfg->checkpoint_ms,
                   d->cfg->checkpoint_ms);
}

void
ckpt_stop(struct daemon *d)
{
    uv_timer_stop(&d->ckpt_timer);
    uv_close((uv_handle_t *)&d->ckpt_timer, NULL);
}

void
ckpt_final(struct daemon *d)
{
    if (d->ckpt_running)
        msg_panic("ckpt_final with a checkpoint running");
    struct ckpt_ev_policy all = {.det = &d->cfg->det, .all = true,
                                 .now_ms = daemon_now_ms()};
    size_t n = 0, nev = 0;
    uint64_t t0 = clock_mono_us();
    int rc = 0;

    retry_unrecorded(d);
    if (d->nunrecorded > 0)
        msg_error("stopping with %zu state changes not recorded in the "
                  "history (their states are in the final checkpoint)",
                  d->nunrecorded);
    while (d->unrecorded != NULL) {
        struct unrecorded *u = d->unrecorded;

        d->unrecorded = u->next;
        unrecorded_free(u);
    }
    ckpt_batch_set_slots(&d->ckpt_batch, d->cfg->slots, d->cfg->nslots);
    /* a clean stop keeps all evidence: the next start goes on from it */
    memstore_mark_evidence_dirty(d->ms);
    while (rc == 0 && d->ms->dirty > 0) {
        memstore_collect_dirty(d->ms, &d->ckpt_batch, &all,
                               CKPT_FINAL_CHUNK);
        rc = cp_sqlite_write(d->db, &d->ckpt_batch, d->ckpt_err);
        n += d->ckpt_batch.n;
        nev += d->ckpt_batch.nev;
    }
    if (rc < 0)
        msg_error("final checkpoint failed: %s", d->ckpt_err);
    else
        msg_info("final checkpoint: %zu accounts written (%zu with "
                 "evidence) in %.0f ms",
                 n, nev, (double)(clock_mono_us() - t0) / 1e3);
    collect_queued(d);
    if (d->qid_batch.nadd > 0 && write_queued(d) < 0)
        msg_error("final checkpoint of queue ids failed: %s", d->qid_err);
    if (cp_sqlite_save_delivered(d->db, &d->engine.delivered,
                                 daemon_now_ms(), d->ckpt_err) < 0)
        msg_error("final checkpoint of delivered recipients failed: %s",
                  d->ckpt_err);
    ckpt_batch_fini(&d->ckpt_batch);
    cp_qid_batch_fini(&d->qid_batch);
}
