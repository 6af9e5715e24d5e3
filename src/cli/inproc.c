/* inproc.c — see inproc.h. */
#include "cli/inproc.h"

#include <string.h>

#define INPROC_EXPIRE_EVERY_MS 1000 /* the daemon's timer period */

int
inproc_open(struct inproc *ip, const char *config_file, bool override_map,
            const char *map, char *err)
{
    memset(ip, 0, sizeof(*ip));
    ip->cfg = override_map ? cp_config_load_map(config_file, map, err)
                           : cp_config_load(config_file, err);
    if (ip->cfg == NULL)
        return -1;
    ip->ms = memstore_new(1024);
    ip->ms->track_dirty = false; /* nothing is checkpointed */
    cp_engine_init(&ip->engine, ip->cfg, &ip->ms->base);
    return 0;
}

void
inproc_close(struct inproc *ip)
{
    if (ip->cfg == NULL)
        return;
    cp_engine_fini(&ip->engine);
    memstore_free(ip->ms);
    cp_config_free(ip->cfg);
    memset(ip, 0, sizeof(*ip));
}

static void
changed(struct inproc *ip, const struct cp_decision *d,
        const struct cp_event *ev, int64_t now_ms)
{
    if (d->state_changed && ip->on_change != NULL)
        ip->on_change(ip->change_arg, d, ev, now_ms);
}

void
inproc_decide(struct inproc *ip, const struct cp_event *ev,
              int64_t now_ms, struct cp_decision *d)
{
    if (now_ms - ip->expired_ms >= INPROC_EXPIRE_EVERY_MS) {
        cp_engine_expire(&ip->engine, now_ms);
        ip->expired_ms = now_ms;
    }
    cp_session_step(&ip->engine, &ip->session, ev, now_ms);
    cp_engine_decide(&ip->engine, ev, now_ms, d);
    changed(ip, d, ev, now_ms);
}

void
inproc_content(struct inproc *ip, const struct cp_event *ev,
               const struct cp_fp *fp, int64_t now_ms, struct cp_decision *d)
{
    cp_engine_content(&ip->engine, ev, fp, now_ms, d);
    changed(ip, d, ev, now_ms);
}

void
inproc_outcome(struct inproc *ip, const char *qid, size_t qlen,
               const char *rcpt, enum cp_outcome o, int64_t now_ms)
{
    struct cp_decision d;

    if (cp_engine_outcome(&ip->engine, qid, qlen, rcpt,
                          rcpt ? strlen(rcpt) : 0, o, now_ms, &d))
        changed(ip, &d, NULL, now_ms);
}

void
inproc_flush(struct inproc *ip, int64_t now_ms)
{
    cp_engine_expire(&ip->engine, now_ms);
    ip->expired_ms = now_ms;
}

void
inproc_learned(struct inproc *ip)
{
    memstore_learned(ip->ms);
    ip->engine.learning = false;
}
