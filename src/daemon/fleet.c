/*
 * fleet.c — chokepointd in fleet mode (store.backend: redis): several
 * smarthosts share their customers' counters and states in one Redis.
 *
 * A policy request that meters is decided in two steps: the engine does
 * what it can locally (identity, detection on this host's evidence), the
 * shared store does the rest in one round trip (store/redis.c), and the
 * engine finishes with its answer (cp_engine_resume). Meanwhile conn.c
 * holds the reply and reads nothing more from that connection.
 *
 * Degraded mode: when Redis cannot be reached, or does not answer within
 * store.redis_timeout, the decision is made from the local copy (the
 * account table, which follows every shared answer), with the same
 * limits: Postfix never sees an error. What was charged locally while
 * Redis was down, and the state changes made meanwhile, are kept and
 * handed over when it is back (merge_owed, merge_changes): charges are
 * added to the shared counters (leaked for the time they waited), a
 * state change is applied if the shared state is still what it was, or
 * if it blocks where the shared state does not (a block is never lost).
 * A decision that only came late (Redis slow, not down) is not handed
 * over again: Redis has most likely applied it.
 *
 * Configurations: a decision that waits keeps pointers into the
 * configuration it started under; a reload while decisions wait keeps
 * the old one until the last of them is answered (fleet_retire).
 *
 * Evidence: each host detects on the mail it sees, and the suspicion
 * (score, each signal's share) is summed over the fleet in Redis, so an
 * account spread over N hosts is not detected N times slower. What an
 * account's evidence gained here (engine hook share_evidence) waits in
 * `gains` until it is worth telling (FLEET_EV_UP, FLEET_EV_DOWN, or the
 * account is suspicious here) and goes with the account's next decision;
 * the answer brings the fleet's sum back when it is at least half of
 * watch_at, and the local evidence takes it (cp_evidence_adopt). The
 * habits are exchanged (ev_request, ev_adopt); the history and the
 * campaign table are the fleet's (below). A gain whose decision was
 * answered locally because its connection was lost is not sent again
 * (the same rule as a late one).
 *
 * Limits: FLEET_MAX_OWED accounts with unshared charges, FLEET_MAX_CHANGES
 * unshared state changes (beyond them the newest are not handed over:
 * counted, logged once per outage); FLEET_MAX_GAINS accounts with
 * evidence not told (a gain waits FLEET_GAIN_AGE_MS at most, then counts
 * on this host only; beyond the cap new ones are not kept: counted);
 * FLEET_MAX_HISTORY rows of the fleet's history waiting for Redis (the
 * oldest go: counted).
 */
#include "daemon/fleet.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/evidence.h"
#include "core/lifecycle.h"
#include "daemon/daemon.h"
#include "store/memstore.h"
#include "store/redis.h"
#include "util/hmap.h"
#include "util/msg.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define FLEET_MAX_OWED 100000
#define FLEET_MAX_CHANGES 10000
#define FLEET_MAX_GAINS 100000
#define FLEET_GAIN_AGE_MS 600000 /* a gain waits 10 minutes at most */
#define FLEET_GAIN_SWEEP 4096
#define FLEET_MAX_HISTORY 1000 /* history rows waiting for Redis */

/* A row of the fleet's history that could not be added yet. */
struct hist_wait {
    struct cp_identity id;
    char *row;
    size_t len;
};
/* an account's evidence gain is told to the fleet once it raises the
 * score or a signal's share by FLEET_EV_UP, or lowers the score by
 * FLEET_EV_DOWN (an owner's credit, every message: it matters less
 * often, the score being floored), or at once when the account is
 * suspicious here */
#define FLEET_EV_UP 0.5
#define FLEET_EV_DOWN 2.0
/* an account's habits go with one decision in this many even without
 * news (to bring the other hosts') */
#define FLEET_HABITS_EVERY 16

/* What an account's evidence gained here, not told to the fleet yet. */
struct gain {
    struct cp_ev_delta d;
    size_t keylen;
    char key[];
};

/* Charges made while Redis was down: a leaky bucket per account. */
struct owed {
    struct cp_counters c;
    double rate[CP_MAX_SLOTS]; /* per ms, of the rule that used the slot */
    uint32_t used;             /* slots charged */
    double rel[CP_METRIC_COUNT]; /* reservations Redis still holds that
                                    were given back meanwhile */
    size_t keylen;
    char key[];
};

struct change {
    struct cp_identity id; /* key and dkey */
    uint8_t from, to;
    bool person;
};

struct held_cfg {
    struct cp_config *cfg;
    size_t n;
    struct held_cfg *next;
};

struct fleet {
    struct daemon *d;
    struct cp_redis *r;
    struct hmap owed;     /* key → struct owed */
    struct hmap gains;    /* dkey → struct gain */
    uint64_t owed_gen;    /* config generation the slots belong to */
    uint64_t rnd;         /* which decisions carry the habits */
    uint64_t gain_adds;   /* accounts added to `gains` */
    char host[300];       /* this host in the fleet's history */
    struct hist_wait *hq; /* rows for the fleet's history, waiting */
    size_t nhq;
    struct change *changes;
    size_t nchanges;
    size_t cur_held;      /* waiting decisions under d->cfg */
    struct held_cfg *retired;
    struct fleet_stats st;
};

struct fleet_wait {
    struct fleet *f;
    struct cp_await aw;
    struct cp_event ev;
    struct cp_decision dec;
    int64_t now;
    struct cp_config *cfg;
    struct cp_redis_req *q;
    fleet_done_fn *done;
    void *arg;
    struct cp_ev_delta gain; /* sent with the decision */
    unsigned char habits[CP_EV_PACKED]; /* likewise */
};

static bool
owed_eq(const void *val, const void *key, size_t len)
{
    const struct owed *o = val;

    return o->keylen == len && memcmp(o->key, key, len) == 0;
}

static bool
gain_eq(const void *val, const void *key, size_t len)
{
    const struct gain *g = val;

    return g->keylen == len && memcmp(g->key, key, len) == 0;
}

/* Forget what an account gained here and did not tell (it was released:
 * the evidence before is spent). */
static void
gain_drop(struct fleet *f, const char *dkey, size_t dkeylen)
{
    free(hmap_del(&f->gains, hmap_hash(dkey, dkeylen), dkey, dkeylen,
                  gain_eq));
}

/* The local copy takes an account's shared state (cp_engine_mirror_state);
 * a release made elsewhere spends what was gained here too. */
static void
mirror(struct fleet *f, const struct cp_identity *id,
       const struct cp_remote *rem)
{
    struct cp_store *st = f->d->engine.store;
    struct cp_account_ref ref;

    if (rem->own == CP_ST_PROBATION &&
        (!st->ops->account(st, id->dkey, id->dkeylen, false, false, &ref) ||
         ref.c->state != CP_ST_PROBATION ||
         ref.c->state_since_s != rem->own_since_s))
        gain_drop(f, id->dkey, id->dkeylen);
    cp_engine_mirror_state(&f->d->engine, id->dkey, id->dkeylen, rem->own,
                           rem->own_since_s, rem->own_repeat);
}

/* Forget every unshared charge. */
static void
owed_clear(struct fleet *f)
{
    HMAP_FOREACH(&f->owed, i)
        free(f->owed.ents[i].val);
    hmap_fini(&f->owed);
    hmap_init(&f->owed, 64);
}

/* ---- configurations held by waiting decisions ---- */

static void
hold(struct fleet *f, struct fleet_wait *w)
{
    w->cfg = f->d->cfg;
    f->cur_held++;
}

/* A waiting decision that held `cfg` is done with it. */
static void
unhold_cfg(struct fleet *f, const struct cp_config *cfg)
{
    struct held_cfg **pp;

    if (cfg == f->d->cfg) {
        f->cur_held--;
        return;
    }
    for (pp = &f->retired; *pp != NULL; pp = &(*pp)->next) {
        struct held_cfg *h = *pp;

        if (h->cfg != cfg)
            continue;
        if (--h->n == 0) {
            *pp = h->next;
            cp_config_free(h->cfg);
            free(h);
        }
        break;
    }
}

static void
unhold(struct fleet *f, struct fleet_wait *w)
{
    unhold_cfg(f, w->cfg);
    w->cfg = NULL;
}

bool
fleet_retire(struct fleet *f, struct cp_config *old)
{
    struct held_cfg *h;

    /* the slots of unshared charges are the old configuration's */
    if (f->owed.count > 0)
        msg_warn("fleet: reload: %zu accounts' charges made while Redis was "
                 "unreachable are not handed over",
                 f->owed.count);
    owed_clear(f);
    if (f->cur_held == 0)
        return false;
    h = xcalloc(1, sizeof(*h));
    h->cfg = old;
    h->n = f->cur_held;
    h->next = f->retired;
    f->retired = h;
    f->cur_held = 0;
    return true;
}

/* ---- what degraded mode owes the shared store ---- */

/* The account's unshared charges, made if `create` (NULL: none, or the
 * table is full). */
static struct owed *
owed_get(struct fleet *f, const char *key, size_t keylen, int64_t now_ms)
{
    uint64_t h = hmap_hash(key, keylen);
    struct owed *o = hmap_get(&f->owed, h, key, keylen, owed_eq);

    if (o != NULL)
        return o;
    if (f->owed.count >= FLEET_MAX_OWED) {
        f->st.owed_dropped++;
        return NULL;
    }
    o = xcalloc(1, sizeof(*o) + keylen);
    memcpy(o->key, key, keylen);
    o->keylen = keylen;
    o->c.t_ms = now_ms;
    hmap_put(&f->owed, h, o);
    return o;
}

/*
 * A reservation given back while Redis could not be told: taken from
 * this host's unshared charges as far as they go (a message reserved and
 * settled while Redis was down), the rest owed to Redis (a reservation
 * made in Redis before it went away).
 */
static void
owe_release(struct owed *o, const struct cp_meter_op *op)
{
    for (int m = 0; m < CP_METRIC_COUNT; m++) {
        double r = op->release[m], left = r;

        if (r <= 0)
            continue;
        for (size_t s = 0; s < op->nslots && s < CP_MAX_SLOTS; s++) {
            double have;

            if (op->slots[s].metric != (enum cp_metric)m ||
                !(o->used & (1u << s)))
                continue;
            have = o->c.level[s];
            o->c.level[s] = have > r ? (float)(have - r) : 0.0f;
            if (r - have < left)
                left = r - have > 0 ? r - have : 0;
        }
        o->rel[m] += left;
    }
}

/* Charges (cost[i] of op's rule i) made here: a bucket of this host's
 * charges, the same rules checking nothing. */
static void
owe_charges(struct owed *o, const struct cp_meter_op *op, const double *cost)
{
    struct cp_meter_op add;
    struct cp_meter_result r2;

    add = *op;
    memset(add.release, 0, sizeof(add.release));
    add.domain_hash = 0;
    for (size_t i = 0; i < add.nrules; i++) {
        add.rule[i].enforce = false;
        add.rule[i].nocheck = true;
        add.rule[i].domain = false;
        add.rule[i].cost = cost[i];
        o->rate[add.rule[i].slot] = add.rule[i].rate;
        o->used |= 1u << add.rule[i].slot;
    }
    cp_meter_apply(&o->c, &add, &r2);
}

/* A decision made while Redis was down: what it gave back and charged. */
static void
owe(struct fleet *f, const struct cp_await *aw,
    const struct cp_meter_result *res)
{
    const struct cp_meter_op *op = &aw->op;
    struct owed *o = owed_get(f, op->key, op->keylen, op->now_ms);

    if (o == NULL)
        return;
    owe_release(o, op);
    if (res->denied >= 0)
        return; /* nothing was charged */
    owe_charges(o, op, res->cost);
}

/* Redis is back: add what was charged meanwhile, leaked to now. */
static void
merge_owed(struct fleet *f, int64_t now_ms)
{
    const struct cp_config *cfg = f->d->cfg;
    size_t n = 0;

    HMAP_FOREACH(&f->owed, i) {
        struct owed *o = f->owed.ents[i].val;
        struct cp_meter_op op;

        memset(&op, 0, sizeof(op));
        op.key = o->key;
        op.keylen = o->keylen;
        op.now_ms = now_ms;
        op.slots = cfg->slots;
        op.nslots = cfg->nslots;
        for (unsigned s = 0; s < CP_MAX_SLOTS && s < cfg->nslots; s++) {
            struct cp_meter_rule *m;
            double v;

            if (!(o->used & (1u << s)))
                continue;
            v = cp_meter_level_now(&o->c, s, o->rate[s], now_ms);
            m = &op.rule[op.nrules++];
            m->slot = (uint8_t)s;
            m->nocheck = true;
            m->cap = 1e300;
            m->rate = o->rate[s];
            m->cost = v;
        }
        memcpy(op.release, o->rel, sizeof(op.release));
        if (cp_redis_share(f->r, &op))
            n++;
    }
    owed_clear(f);
    if (n > 0) {
        f->st.merged += n;
        msg_info("fleet: the charges of %zu accounts made while Redis was "
                 "unreachable are added to the shared counters",
                 n);
    }
}

static void
change_add(struct fleet *f, const struct cp_identity *id, int from, int to,
           bool person)
{
    struct change *c;

    for (size_t i = 0; i < f->nchanges; i++) {
        c = &f->changes[i];
        if (c->id.dkeylen == id->dkeylen &&
            memcmp(c->id.dkey, id->dkey, id->dkeylen) == 0) {
            c->to = (uint8_t)to; /* the first `from`, the last `to` */
            c->person |= person;
            return;
        }
    }
    if (f->nchanges >= FLEET_MAX_CHANGES) {
        f->st.changes_dropped++;
        return;
    }
    if (f->changes == NULL)
        f->changes = xcalloc(FLEET_MAX_CHANGES, sizeof(*f->changes));
    c = &f->changes[f->nchanges++];
    c->id = *id;
    c->from = (uint8_t)from;
    c->to = (uint8_t)to;
    c->person = person;
}

/* Redis is back: hand over the state changes made meanwhile. */
static void
merge_changes(struct fleet *f)
{
    size_t i;

    for (i = 0; i < f->nchanges; i++) {
        struct change *c = &f->changes[i];
        struct cp_remote rem;
        char err[CP_ERR_MAX], key[CP_KEY_MAX * 4 + 4];

        str_escape(key, sizeof(key), c->id.dkey, c->id.dkeylen, CP_KEY_MAX);
        if (cp_redis_state(f->r, &c->id, c->person ? "set" : "merge", c->to,
                           c->from, &rem, NULL, err) < 0) {
            msg_warn("fleet: %s; %zu state changes wait for the next "
                     "connection",
                     err, f->nchanges - i);
            memmove(f->changes, f->changes + i,
                    (f->nchanges - i) * sizeof(*f->changes));
            f->nchanges -= i;
            return;
        }
        f->st.merged_changes++;
        if (rem.change_refused && rem.own != c->to)
            msg_warn("fleet: account %s: its change to %s made while Redis "
                     "was unreachable gives way to the shared state %s",
                     key, cp_state_name((enum cp_state)c->to),
                     cp_state_name((enum cp_state)rem.own));
        mirror(f, &c->id, &rem);
    }
    f->nchanges = 0;
}

/* A state this host knows, for a Redis that has none. */
static void
add_known(void *arg, const char *key, size_t keylen,
          const struct cp_counters *c)
{
    struct fleet *f = arg;
    struct cp_identity id;

    if (cp_identity_lookup(f->d->cfg, key, keylen, &id) < 0 ||
        id.dkeylen != keylen || memcmp(id.dkey, key, keylen) != 0)
        return; /* not an account an operator could name: skip */
    change_add(f, &id, CP_ST_NORMAL, c->state, false);
}

static void history_flush(struct fleet *f);

static void
on_up(void *arg)
{
    struct fleet *f = arg;

    if (cp_redis_emptied(f->r)) {
        size_t before = f->nchanges;

        /* Redis lost its data (or is new): what this host knows of
         * blocks and holds goes back, so no block is lost with it */
        memstore_each_state(f->d->ms, add_known, f);
        if (f->nchanges > before)
            msg_warn("fleet: Redis has no fleet data (new, or restarted "
                     "without persistence): handing it the %zu account "
                     "states this host knows",
                     f->nchanges - before);
    }
    merge_owed(f, daemon_now_ms());
    if (f->nchanges > 0)
        merge_changes(f);
    history_flush(f);
}

/* ---- the evidence summed over the fleet ---- */

/*
 * Gains that waited FLEET_GAIN_AGE_MS for a decision of their account are
 * forgotten (small news of an account that stopped sending here, or what
 * came after its last message: delivery outcomes, which then count on
 * this host only). Run every FLEET_GAIN_SWEEP additions, and when full.
 */
static void
gains_sweep(struct fleet *f, int64_t now_ms)
{
    struct gain **old;
    size_t n = 0;

    old = xcalloc(f->gains.count + 1, sizeof(*old));
    HMAP_FOREACH(&f->gains, i) {
        struct gain *g = f->gains.ents[i].val;

        if (now_ms - g->d.t_ms > FLEET_GAIN_AGE_MS)
            old[n++] = g;
    }
    for (size_t i = 0; i < n; i++)
        gain_drop(f, old[i]->key, old[i]->keylen);
    free(old);
}

/* Engine hook: what an account's evidence gained in an update. */
static void
share_evidence(void *arg, const char *dkey, size_t dkeylen,
               const struct cp_detection *det, const struct cp_ev_delta *gain)
{
    struct fleet *f = arg;
    uint64_t h = hmap_hash(dkey, dkeylen);
    struct gain *g = hmap_get(&f->gains, h, dkey, dkeylen, gain_eq);

    if (g == NULL) {
        if (++f->gain_adds % FLEET_GAIN_SWEEP == 0 ||
            f->gains.count >= FLEET_MAX_GAINS)
            gains_sweep(f, gain->t_ms);
        if (f->gains.count >= FLEET_MAX_GAINS) {
            f->st.gains_dropped++;
            return;
        }
        g = xcalloc(1, sizeof(*g) + dkeylen);
        memcpy(g->key, dkey, dkeylen);
        g->keylen = dkeylen;
        g->d = *gain;
        hmap_put(&f->gains, h, g);
        return;
    }
    cp_ev_delta_add(&g->d, gain, det);
}

/* The detection of the decision's class, if it detects. */
static const struct cp_detection *
decision_det(const struct cp_config *cfg, const struct cp_decision *dec)
{
    const struct cp_detection *det;

    if (dec->id.cls == NULL || !dec->id.cls->detect)
        return NULL;
    det = cp_class_det(cfg, dec->id.cls);
    return det->enabled ? det : NULL;
}

/*
 * The evidence part of w's decision: the fleet's sum comes back from half
 * of watch_at (where the score starts to matter); this host's gain goes
 * with it once it is news (FLEET_EV_UP, FLEET_EV_DOWN), or the account is suspicious
 * here, or its state changed (taken out of `gains` into w). The habits
 * go with it when they have news since this host last gave them (a habit
 * learned here, or merged from another host's), and with one decision in
 * FLEET_HABITS_EVERY anyway (at random), which brings the other hosts'.
 */
static void
ev_request(struct fleet *f, struct fleet_wait *w, struct cp_redis_ev *rev)
{
    const struct cp_decision *dec = &w->dec;
    struct cp_store *st = f->d->engine.store;
    const struct cp_detection *det;
    struct cp_account_ref ref;
    struct inet_addr ca;
    bool suspect;
    struct gain *g;
    uint32_t sig;
    uint64_t h;

    memset(rev, 0, sizeof(*rev));
    if ((det = decision_det(w->cfg, dec)) == NULL ||
        !st->ops->account(st, dec->id.dkey, dec->id.dkeylen, false, true,
                          &ref) ||
        ref.ev == NULL)
        return;
    rev->det = det;
    rev->want = rev->det->watch_at / 2;
    rev->ver = ref.ev->fleet_ver;
    if (w->ev.client_address.p != NULL &&
        inet_parse(w->ev.client_address.p, w->ev.client_address.len, &ca))
        rev->net = cp_evidence_net(&ca);
    suspect = cp_evidence_score(ref.ev, rev->det, w->now) >= rev->want;
    sig = cp_evidence_habits_sig(ref.ev);
    if (sig != ref.ev->fleet_sig ||
        ((f->rnd = f->rnd * 6364136223846793005ULL + 1442695040888963407ULL) >>
         33) % FLEET_HABITS_EVERY == 0) {
        ref.ev->fleet_sig = sig;
        cp_evidence_pack(ref.ev, w->habits);
        rev->habits = w->habits;
    }
    h = hmap_hash(dec->id.dkey, dec->id.dkeylen);
    g = hmap_get(&f->gains, h, dec->id.dkey, dec->id.dkeylen, gain_eq);
    if (g == NULL || (!cp_ev_delta_news(&g->d, FLEET_EV_UP, FLEET_EV_DOWN) &&
                      !dec->state_changed && !suspect))
        return; /* nothing, or small news: it waits for more */
    w->gain = g->d;
    cp_ev_delta_fade(&w->gain, det, w->now); /* as of this decision */
    rev->gain = &w->gain;
    hmap_del(&f->gains, h, dec->id.dkey, dec->id.dkeylen, gain_eq);
    free(g);
}

/* The gain and the habits of a decision that was not sent wait for the
 * next one. */
static void
ev_unsent(struct fleet *f, struct fleet_wait *w, const struct cp_redis_ev *rev)
{
    struct cp_store *st = f->d->engine.store;
    struct cp_account_ref ref;

    if (rev->habits != NULL &&
        st->ops->account(st, w->dec.id.dkey, w->dec.id.dkeylen, false, true,
                         &ref) &&
        ref.ev != NULL)
        ref.ev->fleet_sig = 0;
    if (rev->gain != NULL)
        share_evidence(f, w->dec.id.dkey, w->dec.id.dkeylen, rev->det,
                       rev->gain);
}

/* The fleet's evidence of the account came back: the local copy takes the
 * suspicion, with what was gained here since the decision was sent, and
 * the habits another host knew. */
static void
ev_adopt(struct fleet *f, struct fleet_wait *w,
         const struct cp_redis_evans *ev)
{
    const struct cp_decision *dec = &w->dec;
    const struct cp_detection *det = decision_det(w->cfg, dec);
    struct cp_account_ref ref;
    struct gain *g;

    if (!ev->has_ver && !ev->has_sum && ev->habits_len == 0)
        return; /* (most answers: no lookup) */
    if (det == NULL ||
        !f->d->engine.store->ops->account(f->d->engine.store, dec->id.dkey,
                                          dec->id.dkeylen, false, true,
                                          &ref) ||
        ref.ev == NULL)
        return;
    if (ev->habits_len > 0) {
        struct cp_evidence o;

        if (cp_evidence_unpack(&o, ev->habits, ev->habits_len))
            cp_evidence_merge_habits(ref.ev, &o);
    }
    if (ev->has_ver)
        ref.ev->fleet_ver = ev->ver;
    if (!ev->has_sum)
        return;
    g = hmap_get(&f->gains, hmap_hash(dec->id.dkey, dec->id.dkeylen),
                 dec->id.dkey, dec->id.dkeylen, gain_eq);
    cp_evidence_adopt(ref.ev, det, &ev->sum, g ? &g->d : NULL, w->now);
    f->st.ev_adopted++;
}

/* ---- decisions ---- */

static void
on_answer(void *arg, const struct cp_remote *rem,
          const struct cp_redis_evans *ev)
{
    struct fleet_wait *w = arg;
    struct fleet *f = w->f;
    struct daemon *d = f->d;
    const struct cp_config *cfg = w->cfg;

    w->q = NULL;
    if (rem == NULL)
        f->st.local++;
    cp_engine_resume(&d->engine, &w->ev, w->now, &w->dec, &w->aw, rem, NULL);
    if (w->dec.fleet_moved && w->dec.state == CP_ST_PROBATION)
        gain_drop(f, w->dec.id.dkey, w->dec.id.dkeylen); /* released there */
    if (ev != NULL)
        ev_adopt(f, w, ev);
    incident_follow(d, &w->dec);
    /* the decision points into its configuration until it is answered
     * and logged (done may start the next decision on w) */
    w->cfg = NULL;
    w->done(w->arg);
    unhold_cfg(f, cfg);
}

struct fleet_wait *
fleet_wait_new(struct fleet *f)
{
    struct fleet_wait *w = xcalloc(1, sizeof(*w));

    w->f = f;
    return w;
}

void
fleet_wait_free(struct fleet_wait *w)
{
    if (w == NULL)
        return;
    if (w->q != NULL) {
        cp_redis_cancel(w->q);
        w->q = NULL;
        /* an END-OF-MESSAGE sent gives its reservation back in Redis: not
         * again when the connection's transaction is abandoned */
        if (w->aw.eom)
            cp_engine_drop_pending(&w->f->d->engine, w->ev.instance, w->now);
        unhold(w->f, w);
    }
    free(w);
}

struct cp_decision *
fleet_decision(struct fleet_wait *w)
{
    return &w->dec;
}

const struct cp_event *
fleet_event(struct fleet_wait *w)
{
    return &w->ev;
}

int
fleet_decide(struct fleet_wait *w, const struct cp_event *ev, int64_t now,
             fleet_done_fn *done, void *arg)
{
    struct fleet *f = w->f;
    struct daemon *d = f->d;
    struct cp_meter_result res;
    struct cp_redis_ev rev;
    int rc;

    w->ev = *ev;
    w->now = now;
    rc = cp_engine_decide_async(&d->engine, &w->ev, now, &w->dec, &w->aw);
    if (rc != CP_DECIDE_AWAIT)
        return rc;
    w->done = done;
    w->arg = arg;
    hold(f, w);
    ev_request(f, w, &rev);
    w->q = cp_redis_decide(f->r, &w->dec, &w->aw, &rev, on_answer, w);
    if (w->q != NULL)
        return CP_DECIDE_AWAIT;
    /* down: from the local copy, and what it charges is owed */
    ev_unsent(f, w, &rev);
    unhold(f, w);
    f->st.local++;
    if (cp_engine_resume(&d->engine, &w->ev, now, &w->dec, &w->aw, NULL,
                         &res))
        owe(f, &w->aw, &res);
    return 0; /* a state change is handed over by fleet_change() */
}

/* ---- state changes outside a decision, and a person's commands ---- */

bool
fleet_change(struct fleet *f, const struct cp_decision *dec, bool person)
{
    struct cp_remote rem;
    char err[CP_ERR_MAX];

    if (!dec->state_changed || dec->shared)
        return true;
    if (person && dec->state == CP_ST_PROBATION) /* a release: the */
        gain_drop(f, dec->id.dkey, dec->id.dkeylen); /* evidence is spent */
    /* a person's is set (and waits for a connection); detection's is
     * merged, at once only if Redis is up */
    if (person || cp_redis_up(f->r)) {
        if (cp_redis_state(f->r, &dec->id, person ? "set" : "merge",
                           dec->state, dec->prev_state, &rem, NULL,
                           err) == 0) {
            if (person || !rem.change_refused || rem.own == dec->state)
                return true;
            /* another host changed it first: the shared state stands */
            mirror(f, &dec->id, &rem);
            return false;
        }
        msg_warn("fleet: %s; the change is handed over when Redis is back",
                 err);
    }
    change_add(f, &dec->id, dec->prev_state, dec->state, person);
    return true;
}

/* The shared counters become this host's copy (what show shows). */
static void
mirror_counters(const struct cp_config *cfg, struct cp_counters *c,
                const struct cp_redis_counters *cnt)
{
    if (cnt->n == 0)
        return;
    for (size_t s = 0; s < cfg->nslots && s < CP_MAX_SLOTS; s++) {
        c->level[s] = 0.0f;
        for (size_t i = 0; i < cnt->n; i++)
            if (strcmp(cnt->name[i], cfg->slots[s].name) == 0)
                c->level[s] = (float)cnt->level[i];
    }
    c->t_ms = cnt->t_ms;
}

int
fleet_refresh(struct fleet *f, const struct cp_identity *id, char *err)
{
    struct cp_remote rem;
    struct cp_account_ref ref;
    struct cp_counters c;
    struct cp_redis_counters cnt;

    if (!cp_redis_up(f->r)) {
        snprintf(err, CP_ERR_MAX, "fleet store %s unreachable: the state "
                                  "shown is this host's copy",
                 cp_redis_where(f->r));
        return -1;
    }
    if (cp_redis_state(f->r, id, "get", 0, 0, &rem, &cnt, err) < 0)
        return -1;
    if (rem.unknown &&
        !f->d->ms->base.ops->peek(&f->d->ms->base, id->dkey, id->dkeylen,
                                  &c))
        return 0; /* unknown to the fleet and here: not made up */
    mirror(f, id, &rem);
    if (!f->d->ms->base.ops->account(&f->d->ms->base, id->key, id->keylen,
                                     true, false, &ref))
        return 0;
    if (!cp_identity_one_record(id))
        ref.c->state = rem.cust;
    mirror_counters(f->d->cfg, ref.c, &cnt);
    return 0;
}

/* ---- the fleet's history ---- */

/* A row Redis could not take yet: added when it is back (the oldest go
 * beyond FLEET_MAX_HISTORY: counted, and in this host's history only). */
static void
history_wait(struct fleet *f, const struct cp_identity *id,
             const struct strbuf *b)
{
    struct hist_wait *h;

    if (f->hq == NULL)
        f->hq = xcalloc(FLEET_MAX_HISTORY, sizeof(*f->hq));
    if (f->nhq == FLEET_MAX_HISTORY) {
        free(f->hq[0].row);
        memmove(f->hq, f->hq + 1, (f->nhq - 1) * sizeof(*f->hq));
        f->nhq--;
        f->st.history_unshared++;
    }
    h = &f->hq[f->nhq++];
    h->id = *id;
    h->row = xmalloc(b->len);
    memcpy(h->row, b->data, b->len);
    h->len = b->len;
}

/* Redis is back: the rows that waited. */
static void
history_flush(struct fleet *f)
{
    size_t i;

    if (f->nhq == 0)
        return;
    for (i = 0; i < f->nhq; i++) {
        if (!cp_redis_history_add(f->r, &f->hq[i].id, f->hq[i].row,
                                  f->hq[i].len))
            break;
        free(f->hq[i].row);
    }
    memmove(f->hq, f->hq + i, (f->nhq - i) * sizeof(*f->hq));
    f->nhq -= i;
}

/* Text of the history with its tabs and line ends as spaces. */
static void
row_put(struct strbuf *b, const char *s)
{
    for (; *s != '\0'; s++)
        sb_append(b, *s == '\t' || *s == '\n' || *s == '\r' ? " " : s, 1);
}

void
fleet_history_add(struct fleet *f, const struct cp_decision *dec,
                  int64_t now_ms, const char *actor, const char *reason,
                  uint64_t incident)
{
    struct strbuf b;

    sb_init(&b);
    sb_printf(&b, "%lld\t%s\t%llu\t%s\t%s\t", (long long)now_ms, f->host,
              (unsigned long long)incident,
              cp_state_name((enum cp_state)dec->prev_state),
              cp_state_name((enum cp_state)dec->state));
    row_put(&b, actor);
    sb_append(&b, "\t", 1);
    row_put(&b, reason);
    if (f->nhq > 0 || !cp_redis_history_add(f->r, &dec->id, b.data, b.len))
        history_wait(f, &dec->id, &b);
    sb_fini(&b);
}

struct hrow_ctx {
    fleet_history_fn *fn;
    void *arg;
    int n;      /* rows given to fn */
};

/* "T\tHOST\tINCIDENT\tFROM\tTO\tACTOR\tREASON" */
static void
hrow(void *arg, const char *row, size_t len)
{
    struct hrow_ctx *c = arg;
    char buf[2048], *f[7], *p = buf;
    struct fleet_history_row r;
    int n = 0;

    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, row, len);
    buf[len] = '\0';
    f[n++] = p;
    while (n < 7 && (p = strchr(p, '\t')) != NULL) {
        *p++ = '\0';
        f[n++] = p;
    }
    if (n < 7 || !isdigit((unsigned char)f[0][0]) ||
        !isdigit((unsigned char)f[2][0]))
        return; /* not a row this version writes */
    memset(&r, 0, sizeof(r));
    r.row.t_ms = strtoll(f[0], NULL, 10);
    if (r.row.t_ms < 0 || r.row.t_ms > (int64_t)1 << 50)
        return;
    r.host = f[1];
    r.row.id = strtoll(f[2], NULL, 10);
    if (r.row.id < 0)
        return;
    r.row.from = f[3];
    r.row.to = f[4];
    r.row.actor = f[5];
    r.row.reason = f[6];
    c->fn(c->arg, &r);
    c->n++;
}

int
fleet_history(struct fleet *f, const struct cp_identity *id, int limit,
              fleet_history_fn *fn, void *arg, char *err)
{
    struct hrow_ctx c = {fn, arg, 0};

    if (cp_redis_history(f->r, id, limit, hrow, &c, err) < 0)
        return -1;
    return c.n;
}

/* ---- life ---- */

/* A reservation given back outside a decision (the transaction ended,
 * expired, was evicted): in Redis, or owed to it. */
static void
share_release(void *arg, const struct cp_meter_op *op)
{
    struct fleet *f = arg;
    struct owed *o;

    if (cp_redis_share(f->r, op))
        return;
    if ((o = owed_get(f, op->key, op->keylen, op->now_ms)) != NULL)
        owe_release(o, op);
}

/* This host's bit: store.fleet_host, or one from its name. */
static uint8_t
host_bit(const struct cp_config *cfg)
{
    char name[256] = "";

    if (cfg->fleet_host > 0)
        return (uint8_t)(1u << (cfg->fleet_host - 1));
    if (gethostname(name, sizeof(name) - 1) < 0)
        name[0] = '\0';
    return (uint8_t)(1u << (hmap_hash(name, strlen(name)) % 8));
}

/*
 * An END-OF-MESSAGE settled here within its reservation: in Redis, each
 * counter moves by the message's final cost less what was reserved (as
 * decide.lua would give back and charge, with no check: the level was
 * written when the reservation was, and the next decision leaks it from
 * there; lua/settle.lua, in a record that is there), or it is owed to
 * Redis.
 */
static void
share_settle(void *arg, const struct cp_meter_op *op)
{
    struct fleet *f = arg;
    const char *slot[CP_MAX_SLOTS];
    double delta[CP_MAX_SLOTS];
    size_t n = 0;
    struct owed *o;

    f->st.settled++;
    for (size_t s = 0; s < op->nslots && s < CP_MAX_SLOTS; s++) {
        double v = -op->release[op->slots[s].metric];
        bool used = v != 0;

        for (size_t i = 0; i < op->nrules; i++)
            if (op->rule[i].slot == s) {
                v += op->rule[i].cost;
                used = true;
            }
        if (used && v != 0) {
            slot[n] = op->slots[s].name;
            delta[n++] = v;
        }
    }
    if (cp_redis_up(f->r) &&
        cp_redis_settle(f->r, op->key, op->keylen, slot, delta, n))
        return;
    if ((o = owed_get(f, op->key, op->keylen, op->now_ms)) != NULL) {
        double cost[CP_MAX_RULES];

        owe_release(o, op);
        for (size_t i = 0; i < op->nrules; i++)
            cost[i] = op->rule[i].cost;
        owe_charges(o, op, cost);
    }
}

/*
 * The campaign table is the fleet's: each band of a fingerprinted message
 * (with its sender, whose copies Redis counts over the fleet: it is one
 * of the text's senders from its `repeat`-th) and of a delivery outcome
 * of one goes to Redis, which ORs the senders and adds the outcomes; what
 * comes back joins this host's band and the sender's count of copies
 * (on_campaign). No decision waits for it: this host's next message of
 * the text sees the other hosts' senders and copies. While Redis is
 * unreachable the bands are this host's, and what they gained here is
 * not told later.
 */
_Static_assert(CP_FP_BANDS <= CP_REDIS_MAX_BANDS, "a fingerprint's bands");

static void
share_campaign(void *arg, const struct cp_fp *fp, uint64_t bit, uint32_t acct,
               unsigned sent, unsigned bad, int64_t now_ms)
{
    struct fleet *f = arg;
    const struct cp_content *ct = &f->d->engine.cfg->content;
    struct cp_redis_camp cm = {
        .bit = bit != 0 ? __builtin_ctzll(bit) : -1,
        .acct = acct,
        .repeat = ct->repeat,
        .sent = sent,
        .bad = bad,
        .window_ms = ct->window_ms,
        .now_s = (uint32_t)(now_ms / 1000),
    };

    if (cp_redis_up(f->r))
        cp_redis_campaign(f->r, fp->band, CP_FP_BANDS, &cm);
}

static void
on_campaign(void *arg, uint32_t band, uint64_t sketch, uint32_t sent,
            uint32_t bad, uint32_t acct, uint32_t copies, uint32_t now_s)
{
    struct fleet *f = arg;

    if (f->d->engine.camp != NULL)
        cp_campaigns_merge(f->d->engine.camp, band, sketch, sent, bad, acct,
                           copies, now_s);
}

/* The name this host's changes carry in the fleet's history: the host
 * name, and its number when store.fleet_host gives one. */
static void
host_name(struct fleet *f)
{
    char name[256] = "";

    if (gethostname(name, sizeof(name) - 1) < 0 || name[0] == '\0')
        snprintf(name, sizeof(name), "unknown");
    for (char *p = name; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            *p = '?';
    if (f->d->cfg->fleet_host > 0)
        snprintf(f->host, sizeof(f->host), "%s/%u", name,
                 f->d->cfg->fleet_host);
    else
        snprintf(f->host, sizeof(f->host), "%s", name);
}

struct fleet *
fleet_start(struct daemon *d)
{
    struct fleet *f = xcalloc(1, sizeof(*f));

    f->d = d;
    host_name(f);
    hmap_init(&f->owed, 64);
    hmap_init(&f->gains, 64);
    f->r = cp_redis_new(d->loop, d->cfg, on_up, f);
    d->engine.share_release = share_release;
    d->engine.share_evidence = share_evidence;
    d->engine.share_settle = share_settle;
    d->engine.share_campaign = share_campaign;
    cp_redis_on_campaign(f->r, on_campaign, f);
    d->engine.host_bit = host_bit(d->cfg);
    d->engine.share_arg = f;
    msg_info("fleet mode: accounts are shared in Redis at %s",
             cp_redis_where(f->r));
    if (d->cfg->fleet_host == 0)
        msg_warn("fleet mode: store.fleet_host is not set: this host is "
                 "number %d of the fleet by its name (%s); give each host "
                 "its own, or two hosts with one number learn habits as one "
                 "host would",
                 __builtin_ctz(d->engine.host_bit) + 1, f->host);
    cp_redis_start(f->r);
    return f;
}

void
fleet_reload(struct fleet *f)
{
    cp_redis_set_config(f->r, f->d->cfg);
    f->d->engine.host_bit = host_bit(f->d->cfg);
    host_name(f);
}

void
fleet_stop(struct fleet *f)
{
    if (f == NULL)
        return;
    f->d->engine.share_release = NULL;
    f->d->engine.share_evidence = NULL;
    f->d->engine.share_settle = NULL;
    f->d->engine.share_campaign = NULL;
    cp_redis_close(f->r);
    f->r = NULL;
}

void
fleet_free(struct fleet *f)
{
    if (f == NULL)
        return;
    owed_clear(f);
    hmap_fini(&f->owed);
    HMAP_FOREACH(&f->gains, i)
        free(f->gains.ents[i].val);
    hmap_fini(&f->gains);
    while (f->retired != NULL) {
        struct held_cfg *h = f->retired;

        f->retired = h->next;
        cp_config_free(h->cfg);
        free(h);
    }
    free(f->changes);
    for (size_t i = 0; i < f->nhq; i++)
        free(f->hq[i].row);
    free(f->hq);
    free(f);
}

void
fleet_status(const struct fleet *f, struct fleet_stats *out, bool *up,
             struct cp_redis_stats *rs)
{
    *out = f->st;
    out->owed = f->owed.count;
    out->gains = f->gains.count;
    out->changes = f->nchanges;
    *up = f->r != NULL && cp_redis_up(f->r);
    if (f->r != NULL)
        *rs = *cp_redis_stats(f->r);
    else
        memset(rs, 0, sizeof(*rs));
}
