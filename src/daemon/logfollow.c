/*
 * logfollow.c — the mail-log follower: reads the Postfix log named by
 * delivery.log as it grows and reports what became of each queued message
 * (cp_engine_outcome), so bounces and policy rejections at the next hop
 * become evidence against the account that sent the message.
 *
 * Polling, not inotify: one fstat/stat and a read per delivery.poll tick
 * works the same on every file system, for rotated, copied-and-truncated
 * and re-created logs. Rules:
 *   - at start (and when delivery.log changes on reload) reading begins at
 *     the end of the file: old lines were written before the queue ids
 *     were recorded;
 *   - rotation (the path now names another inode): the old file is read to
 *     its end, then the new one from its start;
 *   - truncation (the file is shorter than what was read): from the start;
 *   - at most LOGFOLLOW_MAX_TICK bytes per tick, so a burst of log lines
 *     cannot stall policy replies; the rest waits for the next tick.
 * Reads of a local regular file do not block for long; they run on the
 * loop thread (doc/design.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/lifecycle.h"
#include "core/maillog.h"
#include "daemon.h"
#include "util/msg.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define LOGFOLLOW_CHUNK 65536
#define LOGFOLLOW_MAX_TICK (4 * 1024 * 1024)

struct logfollow {
    uv_timer_t timer;
    struct daemon *d;
    char path[sizeof(((struct cp_delivery *)0)->log)];
    int fd;
    dev_t dev;
    ino_t ino;
    off_t off;
    bool warned; /* "cannot open" logged once until it opens */
    struct maillog_framer framer;
    struct maillog_ctx ctx;
    char buf[LOGFOLLOW_CHUNK];
};

static void
lf_close(struct logfollow *lf)
{
    if (lf->fd >= 0)
        close(lf->fd);
    lf->fd = -1;
    maillog_framer_init(&lf->framer);
}

/* Open the path; at_end: skip what is already there. */
static void
lf_open(struct logfollow *lf, bool at_end)
{
    struct stat st;

    lf->fd = open(lf->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (lf->fd < 0) {
        if (!lf->warned)
            msg_warn("delivery.log %s: %s (retrying every tick)", lf->path,
                     strerror(errno));
        lf->warned = true;
        return;
    }
    if (fstat(lf->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (!lf->warned)
            msg_warn("delivery.log %s: not a regular file", lf->path);
        lf->warned = true;
        lf_close(lf);
        return;
    }
    if (lf->warned)
        msg_info("delivery.log %s: following", lf->path);
    lf->warned = false;
    lf->dev = st.st_dev;
    lf->ino = st.st_ino;
    lf->off = at_end ? st.st_size : 0;
    maillog_framer_init(&lf->framer);
}

static void
lf_event(struct logfollow *lf, const struct maillog_event *ev)
{
    struct daemon *d = lf->d;
    struct cp_decision dec;
    enum cp_outcome o;
    char err[CP_ERR_MAX];

    if (ev->queue_id.p == NULL || ev->queue_id.len > CP_QUEUE_ID_MAX)
        return;
    if (ev->kind == MAILLOG_QMGR_REMOVED) {
        cp_engine_dequeue(&d->engine, ev->queue_id.p, ev->queue_id.len);
        return;
    }
    if (ev->kind != MAILLOG_DELIVERY)
        return;
    o = cp_outcome_of(ev->status.p, ev->status.len, ev->dsn.p, ev->dsn.len);
    if (!cp_engine_outcome(&d->engine, ev->queue_id.p, ev->queue_id.len,
                           ev->to.p, ev->to.len, o, daemon_now_ms(), &dec))
        return;
    incident_apply(d, &dec, NULL, NULL, daemon_now_ms(), err);
    if (dec.detected && msg_enabled(MSG_DEBUG)) {
        char key[CP_KEY_MAX * 4 + 4];

        str_escape(key, sizeof(key), dec.id.dkey, dec.id.dkeylen, CP_KEY_MAX);
        msg_debug("delivery %.*s: account %s status=%.*s dsn=%.*s score %.1f",
                  (int)ev->queue_id.len, ev->queue_id.p, key,
                  (int)ev->status.len, ev->status.p, (int)ev->dsn.len,
                  ev->dsn.p, dec.score);
    }
}

static void
lf_lines(struct logfollow *lf, const char *data, size_t len)
{
    while (len > 0) {
        struct maillog_event ev;
        const char *line;
        size_t used, ll;

        if (maillog_framer_feed(&lf->framer, data, len, &used, &line, &ll) ==
                MAILLOG_LINE &&
            maillog_parse(&lf->ctx, line, ll, &ev) != MAILLOG_UNKNOWN)
            lf_event(lf, &ev);
        data += used;
        len -= used;
    }
}

/* Read what was appended, up to budget bytes; returns bytes read. */
static size_t
lf_read(struct logfollow *lf, size_t budget)
{
    size_t total = 0;

    while (total < budget) {
        ssize_t n = pread(lf->fd, lf->buf, sizeof(lf->buf), lf->off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        lf->off += n;
        total += (size_t)n;
        lf_lines(lf, lf->buf, (size_t)n);
    }
    return total;
}

static void
on_tick(uv_timer_t *t)
{
    logfollow_tick(t->data);
}

void
logfollow_tick(struct logfollow *lf)
{
    const char *want = lf->d->cfg->delivery.log;
    struct stat st, cur;
    size_t used;

    if (strcmp(want, lf->path) != 0) { /* changed by a reload */
        lf_close(lf);
        snprintf(lf->path, sizeof(lf->path), "%s", want);
        lf->warned = false;
        if (lf->path[0] != '\0')
            lf_open(lf, true);
        return;
    }
    if (lf->path[0] == '\0')
        return;
    if (lf->fd < 0) {
        lf_open(lf, false); /* appeared (again): everything is new */
        if (lf->fd < 0)
            return;
    }
    if (fstat(lf->fd, &cur) == 0 && cur.st_size < lf->off) {
        msg_info("delivery.log %s: truncated; reading from the start",
                 lf->path);
        lf->off = 0;
        maillog_framer_init(&lf->framer);
    }
    used = lf_read(lf, LOGFOLLOW_MAX_TICK);
    if (used >= LOGFOLLOW_MAX_TICK)
        return; /* more next tick */
    if (stat(lf->path, &st) < 0 || st.st_dev != lf->dev ||
        st.st_ino != lf->ino) {
        /* rotated: the old file has been read to its end above */
        msg_info("delivery.log %s: rotated; following the new file",
                 lf->path);
        lf_close(lf);
        lf_open(lf, false);
        if (lf->fd >= 0)
            lf_read(lf, LOGFOLLOW_MAX_TICK);
    }
}

struct logfollow *
logfollow_start(struct daemon *d)
{
    struct logfollow *lf = xcalloc(1, sizeof(*lf));

    lf->d = d;
    lf->fd = -1;
    maillog_ctx_init(&lf->ctx, 0, daemon_now_ms());
    maillog_framer_init(&lf->framer);
    snprintf(lf->path, sizeof(lf->path), "%s", d->cfg->delivery.log);
    if (lf->path[0] != '\0')
        lf_open(lf, true);
    uv_timer_init(d->loop, &lf->timer);
    lf->timer.data = lf;
    uv_timer_start(&lf->timer, on_tick, d->cfg->delivery.poll_ms,
                   d->cfg->delivery.poll_ms);
    return lf;
}

void
logfollow_set_interval(struct logfollow *lf, uint64_t ms)
{
    if (lf != NULL)
        uv_timer_start(&lf->timer, on_tick, ms, ms);
}

static void
on_closed(uv_handle_t *h)
{
    free(h->data);
}

void
logfollow_stop(struct logfollow *lf)
{
    if (lf == NULL)
        return;
    lf_close(lf);
    uv_timer_stop(&lf->timer);
    uv_close((uv_handle_t *)&lf->timer, on_closed);
}
