/*
 * engine.c — decisions and two-phase accounting; see engine.h.
 *
 * Every request becomes at most one store operation (struct cp_meter_op),
 * so a fleet store can make each decision one atomic round trip. Pending
 * messages live in a hash table by `instance` and in a list by age; the
 * table is capped by accounting.max_pending (the oldest is released early
 * when it is full), so a client inventing instances cannot grow memory.
 */
#include "core/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/evidence.h"
#include "core/lifecycle.h"
#include "core/reply.h"
#include "util/agemap.h"
#include "util/hmap.h"
#include "util/inet.h"
#include "util/parse.h"
#include "util/xalloc.h"

struct cp_pending {
    struct agemap_ent age; /* key: the instance, in buf */
    char *key;             /* the account, in buf: one allocation */
    size_t keylen;
    double reserved[CP_METRIC_COUNT];
    char buf[];
};

#define PENDING(ent) agemap_entry((ent), struct cp_pending, age)

/* A message in the Postfix queue, by queue id (delivery outcomes). */
struct cp_queued {
    struct agemap_ent age; /* key: the queue id, in buf */
    float ev;              /* its delivery evidence so far (not stored) */
    struct cp_fp fp;       /* its text (campaign table); words 0: none */
    uint64_t seq;          /* journal: order of recording */
    uint16_t keylen;       /* the account, after the queue id in buf */
    char buf[];
};

#define QUEUED(ent) agemap_entry((ent), struct cp_queued, age)

void
cp_engine_init(struct cp_engine *e, const struct cp_config *cfg,
               struct cp_store *store)
{
    memset(e, 0, sizeof(*e));
    e->cfg = cfg;
    e->store = store;
    agemap_init(&e->pending, 1024);
    agemap_init(&e->queued, 1024);
}

static void
pending_free(struct cp_pending *p)
{
    free(p);
}

void
cp_engine_fini(struct cp_engine *e)
{
    struct agemap_ent *a, *next;

    for (a = e->pending.oldest; a != NULL; a = next) {
        next = a->newer;
        pending_free(PENDING(a));
    }
    agemap_fini(&e->pending);
    for (a = e->queued.oldest; a != NULL; a = next) {
        next = a->newer;
        free(QUEUED(a));
    }
    agemap_fini(&e->queued);
    if (e->camp != NULL) {
        cp_campaigns_fini(e->camp);
        free(e->camp);
    }
    tagset_fini(&e->delivered);
    memset(e, 0, sizeof(*e));
}

/* The campaign table's settings from the config (a reload changes them;
 * its size only at the next start). */
static void
campaign_settings(struct cp_engine *e)
{
    const struct cp_content *ct = &e->cfg->content;

    if (e->camp == NULL)
        return;
    e->camp->window_s = (uint32_t)(ct->window_ms / 1000);
    e->camp->repeat = ct->repeat;
    e->camp->min_bad = ct->min_bad;
    e->camp->bad_share = ct->bad_share;
}

void
cp_engine_set_config(struct cp_engine *e, const struct cp_config *cfg)
{
    e->cfg = cfg;
    campaign_settings(e);
}

size_t
cp_engine_pending(const struct cp_engine *e)
{
    return agemap_count(&e->pending);
}

const char *
cp_action_word(enum cp_action a)
{
    static const char *const w[] = {"DUNNO", "DEFER_IF_PERMIT", "REJECT",
                                    "HOLD",  "WARN",            "PREPEND",
                                    "FILTER"};

    return a < CP_ACT_COUNT ? w[a] : "DUNNO";
}

const char *
cp_stage_name(enum cp_stage s)
{
    static const char *const n[] = {"RCPT", "DATA", "END-OF-MESSAGE",
                                    "OTHER", "CONTENT"};

    return n[s];
}

void
cp_engine_rate(const struct cp_rule *r, double *rate)
{
    *rate = (double)r->max / (double)r->window_ms;
}

/* ---- pending messages ---- */

static void
pending_unlink(struct cp_engine *e, struct cp_pending *p)
{
    agemap_del(&e->pending, &p->age);
}

static struct cp_pending *
pending_get(const struct cp_engine *e, struct str inst)
{
    struct agemap_ent *a = agemap_get(&e->pending, inst.p, inst.len);

    return a ? PENDING(a) : NULL;
}

/* Is p a message of the account id? */
static bool
pending_of(const struct cp_pending *p, const struct cp_identity *id)
{
    return p->keylen == id->keylen && memcmp(p->key, id->key, p->keylen) == 0;
}

/* Give the reservation back to the account and forget the message. */
static void
pending_release(struct cp_engine *e, struct cp_pending *p, int64_t now_ms)
{
    struct cp_meter_op op;
    struct cp_meter_result res;

    memset(&op, 0, sizeof(op));
    op.key = p->key;
    op.keylen = p->keylen;
    op.now_ms = now_ms;
    memcpy(op.release, p->reserved, sizeof(op.release));
    op.slots = e->cfg->slots;
    op.nslots = e->cfg->nslots;
    e->store->ops->meter(e->store, &op, &res);
    pending_unlink(e, p);
    pending_free(p);
}

static struct cp_pending *
pending_add(struct cp_engine *e, const struct str *inst,
            const struct cp_identity *id, int64_t now_ms)
{
    struct cp_pending *p;

    while (agemap_count(&e->pending) >= e->cfg->max_pending &&
           e->pending.oldest != NULL) {
        e->stats.pending_evicted++;
        pending_release(e, PENDING(e->pending.oldest), now_ms);
    }
    /* instance ≤ protocol.max_line, key < CP_KEY_MAX: no overflow */
    p = xmalloc(sizeof(*p) + inst->len + id->keylen);
    memset(p, 0, sizeof(*p));
    memcpy(p->buf, inst->p, inst->len);
    p->age.key = p->buf;
    p->age.klen = inst->len;
    p->age.t_ms = now_ms;
    p->key = p->buf + inst->len;
    memcpy(p->key, id->key, id->keylen);
    p->keylen = id->keylen;
    agemap_put(&e->pending, &p->age);
    return p;
}

static void
queued_del(struct cp_engine *e, struct cp_queued *q)
{
    agemap_del(&e->queued, &q->age);
    free(q);
}

size_t
cp_engine_expire(struct cp_engine *e, int64_t now_ms)
{
    size_t n = 0;

    while (e->queued.oldest != NULL &&
           now_ms - e->queued.oldest->t_ms >=
               (int64_t)e->cfg->delivery.queue_id_ttl_ms)
        queued_del(e, QUEUED(e->queued.oldest));
    while (e->pending.oldest != NULL &&
           now_ms - e->pending.oldest->t_ms >=
               (int64_t)e->cfg->reservation_timeout_ms) {
        pending_release(e, PENDING(e->pending.oldest), now_ms);
        e->stats.pending_expired++;
        n++;
    }
    return n;
}

/* ---- building the operation ---- */

static uint32_t
domain_hash(struct str rcpt)
{
    const char *at;
    size_t n;

    if (rcpt.p == NULL || (at = memrchr(rcpt.p, '@', rcpt.len)) == NULL)
        return 0;
    n = rcpt.len - (size_t)(at + 1 - rcpt.p);
    return n == 0 ? 0 : hmap_hash_lower32(at + 1, n);
}

/* Per-metric costs of this request. */
struct costs {
    double v[CP_METRIC_COUNT]; /* domains: 1 means "count if new" */
};

static void
build_op(const struct cp_engine *e, const struct cp_identity *id,
         const struct costs *c, int64_t now_ms, double scale,
         struct cp_meter_op *op)
{
    op->key = id->key;
    op->keylen = id->keylen;
    op->now_ms = now_ms;
    op->slots = e->cfg->slots;
    op->nslots = e->cfg->nslots;
    op->nrules = id->rules->n;
    for (size_t i = 0; i < id->rules->n; i++) {
        const struct cp_rule *r = &id->rules->rule[i];
        struct cp_meter_rule *m = &op->rule[i];

        m->slot = r->slot;
        m->enforce = !r->shadow && !e->cfg->shadow &&
                     (r->action == CP_ACT_DEFER || r->action == CP_ACT_REJECT);
        m->domain = r->metric == CP_METRIC_DOMAINS;
        m->cap = (double)r->max * scale;
        cp_engine_rate(r, &m->rate);
        m->rate *= scale;
        m->cost = m->domain ? 0 : c->v[r->metric];
        if (m->domain && c->v[CP_METRIC_DOMAINS] == 0)
            m->domain = false; /* no recipient in this request */
    }
}

/* Turn the store's answer into the decision. */
static void
finish(struct cp_engine *e, const struct cp_meter_op *op,
       const struct cp_meter_result *res, struct cp_decision *d)
{
    const struct cp_ruleset *rs = d->id.rules;
    int pick = res->denied;
    bool shadow = false;

    /* Enforced denial first; else a non-blocking action that is not
     * shadowed (hold, prepend, warn); else the first shadowed breach. */
    for (size_t i = 0; pick < 0 && i < op->nrules; i++)
        if ((res->over & (1u << i)) && !rs->rule[i].shadow && !e->cfg->shadow)
            pick = (int)i;
    /* shadowed breaches: prefer a rule that would block if enforced */
    for (int pass = 0; pass < 2 && pick < 0; pass++)
        for (size_t i = 0; pick < 0 && i < op->nrules; i++) {
            const struct cp_rule *r = &rs->rule[i];
            bool blocking = !r->shadow && (r->action == CP_ACT_DEFER ||
                                           r->action == CP_ACT_REJECT);

            if ((res->over & (1u << i)) && (pass == 1 || blocking)) {
                pick = (int)i;
                shadow = true;
            }
        }
    if (pick < 0)
        return;
    d->has_rule = true;
    d->rule = rs->rule[pick];
    d->value = res->level[pick];
    d->cost = res->cost[pick];
    d->limit = (double)d->rule.max;
    d->retry_s = (d->value + d->cost - d->limit) / op->rule[pick].rate / 1000;
    if (d->retry_s < 0)
        d->retry_s = 0;
    d->verdict = d->rule.action;
    d->shadow = shadow || e->cfg->shadow;
    /* Shadow rules on a non-blocking breach still answer DUNNO. */
    d->action = d->shadow ? CP_ACT_DUNNO : d->verdict;
    cp_reply_limit(d);
    if (d->shadow)
        e->stats.shadow_would[d->verdict]++;
}

/* The (account, recipient) pair's hash for the delivered table. */
static uint64_t
pair_hash(const char *key, size_t klen, const char *rcpt, size_t rlen)
{
    return (hmap_hash(key, klen) * 0x9e3779b97f4a7c15ULL) ^
           hmap_hash_lower(rcpt, rlen);
}

/* ---- compromise detection and account states ---- */

int
cp_decision_state(const struct cp_decision *d)
{
    switch (d->cust_state) {
    case CP_ST_MANUAL_HOLD:
    case CP_ST_BLOCKED:
        return d->cust_state;
    case CP_ST_ALLOWED:
        return d->state == CP_ST_MANUAL_HOLD ? d->state : CP_ST_ALLOWED;
    default:
        return d->state;
    }
}

static double
limit_scale(const struct cp_engine *e, const struct cp_decision *d)
{
    int st = cp_decision_state(d);

    return st == CP_ST_WATCH || st == CP_ST_PROBATION ? e->cfg->det.watch_factor
                                                      : 1.0;
}

static bool
refuses(int st)
{
    return st == CP_ST_THROTTLED || st == CP_ST_BLOCKED ||
           st == CP_ST_MANUAL_HOLD;
}

/*
 * The customer's own record, when it is not the state's record (a mapped
 * login or address): its state (d->cust_state), and its evidence, whose
 * learned senders all its logins share (NULL: none, or not wanted).
 */
static struct cp_evidence *
customer_record(struct cp_engine *e, struct cp_decision *d, bool evidence)
{
    struct cp_account_ref ref;

    d->cust_state = CP_ST_NORMAL;
    if (cp_identity_one_record(&d->id) ||
        !e->store->ops->account(e->store, d->id.key, d->id.keylen, true,
                                evidence, &ref))
        return NULL;
    d->cust_state = ref.c->state;
    return ref.ev;
}

/* The account's state moves: the decision says so (state_changed,
 * prev_state, state) and the caller makes it durable before it answers. */
static void
transition(struct cp_counters *c, int to, int64_t now_ms,
           struct cp_decision *d)
{
    d->prev_state = c->state;
    d->state = (uint8_t)to;
    d->state_changed = true;
    c->state = (uint8_t)to;
    c->state_since_s = (uint32_t)(now_ms / 1000);
    if (to == CP_ST_BLOCKED && c->repeat < 255)
        c->repeat++;
}

/* Gather this RCPT's evidence and move the account's state. */
/* The account's state after new evidence (score): moved if it says so. */
static void
step(struct cp_engine *e, const struct cp_detection *det,
     const struct cp_account_ref *ref, double score, int64_t now_ms,
     struct cp_decision *d)
{
    int next;

    if (e->learning)
        return;
    next = cp_lifecycle_step(det, ref->c->state, ref->c->repeat,
                             ref->c->state_since_s, score,
                             cp_evidence_block_signals(ref->ev, det), now_ms);
    if (next != ref->c->state)
        transition(ref->c, next, now_ms, d);
}

static void
detect(struct cp_engine *e, const struct cp_event *ev, bool new_msg,
       int64_t now_ms, struct cp_decision *d)
{
    const struct cp_detection *det = cp_class_det(e->cfg, d->id.cls);
    bool evidence = det->enabled && d->id.cls->detect;
    struct cp_evidence *shared = customer_record(e, d, evidence);
    struct cp_account_ref ref;
    struct cp_ev_input in;
    struct inet_addr client;

    if (!e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, true,
                                evidence, &ref))
        return;
    d->state = d->prev_state = ref.c->state;
    if (!evidence)
        return;
    memset(&in, 0, sizeof(in));
    in.cust = d->id.cust;
    in.shared = shared;
    if (e->delivered.used > 0 && ev->recipient.len > 0)
        in.rcpt_seen = tagset_has(&e->delivered,
                                  pair_hash(d->id.dkey, d->id.dkeylen,
                                            ev->recipient.p,
                                            ev->recipient.len))
                           ? CP_RCPT_DELIVERED
                           : CP_RCPT_NEW;
    in.now_ms = now_ms;
    in.new_message = new_msg;
    in.sasl = d->id.kind == CP_ID_SASL;
    in.login = ev->sasl_username;
    in.sender = ev->sender;
    in.recipient = ev->recipient;
    in.helo = ev->helo_name;
    in.tls_protocol = ev->tls_protocol;
    in.tls_cipher = ev->tls_cipher;
    in.refused = refuses(cp_decision_state(d)) && !e->learning &&
                 !cp_config_state_shadow(e->cfg, d->id.cls);
    if (ev->client_address.p &&
        inet_parse(ev->client_address.p, ev->client_address.len, &client))
        in.client = &client;
    d->detected = true;
    d->score = cp_evidence_rcpt(ref.ev, det, &in, &d->fired);
    step(e, det, &ref, d->score, now_ms, d);
}

/* The account's state decides the reply (blocked, throttled)? */
static bool
state_verdict(struct cp_engine *e, struct cp_decision *d)
{
    const struct cp_detection *det = &e->cfg->det;
    const struct cp_class *k = d->id.cls;
    int block = k && k->block_action >= 0 ? k->block_action
                                          : det->block_action;

    if (e->learning)
        return false;
    switch (cp_decision_state(d)) {
    case CP_ST_BLOCKED:
    case CP_ST_MANUAL_HOLD:
        d->verdict = block == CP_BLOCK_HOLD ? CP_ACT_HOLD : CP_ACT_REJECT;
        cp_reply_blocked(d, det);
        break;
    case CP_ST_THROTTLED:
        d->verdict = CP_ACT_DEFER;
        cp_reply_throttled(d, det);
        break;
    default:
        return false;
    }
    d->by_state = true;
    d->shadow = cp_config_state_shadow(e->cfg, k);
    d->action = d->shadow ? CP_ACT_DUNNO : d->verdict;
    if (d->shadow) {
        e->stats.shadow_would[d->verdict]++;
        return false; /* the mail would be accepted: count it */
    }
    return true;
}

/*
 * Reputation pool: mail of an account under suspicion (WATCH, PROBATION)
 * that would be accepted as it is is sent through the separate transport
 * instead (Postfix: FILTER transport:nexthop, a master.cf service with its
 * own source address), so what slips through does not spoil the addresses
 * that carry everyone else's mail. A rule's WARN or PREPEND answer keeps
 * precedence (one action per reply).
 */
static void
pool_route(struct cp_engine *e, struct cp_decision *d)
{
    const char *t = e->cfg->contain.suspect_transport;

    int st = cp_decision_state(d);

    if (t[0] == '\0' || d->action != CP_ACT_DUNNO ||
        d->verdict != CP_ACT_DUNNO || e->learning ||
        (st != CP_ST_WATCH && st != CP_ST_PROBATION))
        return;
    d->verdict = CP_ACT_FILTER;
    d->by_state = true;
    cp_reply_pool(d, t);
    d->shadow = cp_config_state_shadow(e->cfg, d->id.cls);
    if (d->shadow)
        e->stats.shadow_would[CP_ACT_FILTER]++;
    else
        d->action = CP_ACT_FILTER;
}

static void
decide_rcpt(struct cp_engine *e, const struct cp_event *ev,
            int64_t now_ms, struct cp_decision *d)
{
    bool two_phase = e->cfg->acct_mode == CP_ACCT_TWO_PHASE &&
                     ev->instance.p != NULL && ev->instance.len > 0;
    struct cp_pending *p = NULL;
    struct cp_meter_op op;
    struct cp_meter_result res;
    struct costs c;

    if (two_phase)
        p = pending_get(e, ev->instance);
    if (p != NULL && !pending_of(p, &d->id)) {
        /* instance reused by another account (Postfix never does): the
         * first message's reservation goes back to its account, and this
         * one is new (two entries under one instance would corrupt the
         * table) */
        pending_release(e, p, now_ms);
        p = NULL;
    }
    detect(e, ev, p == NULL, now_ms, d);
    if (e->learning) { /* evidence only; the instance, to know the next
                          RCPT is of the same message (nothing reserved) */
        if (two_phase && p == NULL)
            pending_add(e, &ev->instance, &d->id, now_ms);
        return;
    }
    if (state_verdict(e, d))
        return; /* blocked or throttled: nothing reserved */
    memset(&c, 0, sizeof(c));
    c.v[CP_METRIC_MESSAGES] = p ? 0 : 1;
    c.v[CP_METRIC_RECIPIENTS] = 1;
    c.v[CP_METRIC_BYTES] = p ? 0 : (double)ev->size;
    c.v[CP_METRIC_DOMAINS] = 1;
    memset(&op, 0, sizeof(op));
    build_op(e, &d->id, &c, now_ms, limit_scale(e, d), &op);
    op.domain_hash = domain_hash(ev->recipient);
    e->store->ops->meter(e->store, &op, &res);
    if (!d->by_state)
        finish(e, &op, &res, d);
    pool_route(e, d);
    if (res.denied >= 0 || !two_phase)
        return;
    if (p == NULL)
        p = pending_add(e, &ev->instance, &d->id, now_ms);
    p->reserved[CP_METRIC_MESSAGES] += c.v[CP_METRIC_MESSAGES];
    p->reserved[CP_METRIC_RECIPIENTS] += 1;
    p->reserved[CP_METRIC_BYTES] += c.v[CP_METRIC_BYTES];
    p->reserved[CP_METRIC_DOMAINS] += res.new_domain ? 1 : 0;
}

/* END-OF-MESSAGE evidence (the final size) and maybe a state change, which
 * then decides this message too. */
static void
detect_eom(struct cp_engine *e, const struct cp_event *ev,
           int64_t now_ms, struct cp_decision *d)
{
    const struct cp_detection *det = cp_class_det(e->cfg, d->id.cls);
    struct cp_account_ref ref;
    uint32_t fired;
    double score;

    if (!det->enabled || !d->id.cls->detect ||
        !e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                true, &ref))
        return;
    score = cp_evidence_eom(ref.ev, det, ev->size, now_ms, &fired);
    if (fired == 0)
        return;
    d->detected = true;
    d->score = score;
    d->fired = fired;
    d->state = d->prev_state = ref.c->state;
    step(e, det, &ref, score, now_ms, d);
}

/*
 * An account blocked or throttled while its message was in DATA: refuse it
 * at END-OF-MESSAGE too. (In shadow mode the state was reported at RCPT.)
 */
static bool
eom_blocked(struct cp_engine *e, struct cp_decision *d)
{
    struct cp_account_ref ref;

    customer_record(e, d, false);
    if (!e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                false, &ref))
        return false;
    if (!d->state_changed) /* else detect_eom() has set both */
        d->state = d->prev_state = ref.c->state;
    if (cp_config_state_shadow(e->cfg, d->id.cls))
        return false;
    return state_verdict(e, d);
}

/* Remember which account a queued message belongs to. */
static void
queued_add(struct cp_engine *e, struct str qid, const char *key,
           size_t keylen, int64_t now_ms)
{
    struct cp_queued *q;
    struct agemap_ent *old;

    if (e->cfg->delivery.max_queue_ids == 0 || qid.p == NULL ||
        qid.len == 0 || qid.len > CP_QUEUE_ID_MAX)
        return;
    if ((old = agemap_get(&e->queued, qid.p, qid.len)) != NULL)
        queued_del(e, QUEUED(old)); /* reused (long queue ids never are) */
    while (agemap_count(&e->queued) >= e->cfg->delivery.max_queue_ids)
        queued_del(e, QUEUED(e->queued.oldest));
    q = xmalloc(sizeof(*q) + qid.len + keylen);
    memcpy(q->buf, qid.p, qid.len);
    memcpy(q->buf + qid.len, key, keylen);
    q->age.key = q->buf;
    q->age.klen = qid.len;
    q->age.t_ms = now_ms;
    q->ev = 0;
    q->fp.words = 0;
    q->seq = ++e->q_seq;
    q->keylen = (uint16_t)keylen; /* < CP_KEY_MAX */
    agemap_put(&e->queued, &q->age);
}

static void
decide_eom(struct cp_engine *e, const struct cp_event *ev,
           int64_t now_ms, struct cp_decision *d)
{
    struct cp_pending *p = NULL;
    struct cp_meter_op op;
    struct cp_meter_result res;
    struct costs c;

    if (e->cfg->acct_mode != CP_ACCT_TWO_PHASE)
        return;
    if (ev->instance.p != NULL)
        p = pending_get(e, ev->instance);
    if (p != NULL && !pending_of(p, &d->id))
        p = NULL; /* another account's: it is not this message's to settle */
    detect_eom(e, ev, now_ms, d);
    if (e->learning) { /* its delivery outcomes are evidence too */
        if (p != NULL) {
            pending_unlink(e, p);
            pending_free(p);
        }
        queued_add(e, ev->queue_id, d->id.dkey, d->id.dkeylen, now_ms);
        return;
    }
    if (eom_blocked(e, d)) {
        if (p != NULL)
            pending_release(e, p, now_ms);
        if (d->action == CP_ACT_HOLD) /* held: a release frees it */
            queued_add(e, ev->queue_id, d->id.dkey, d->id.dkeylen, now_ms);
        return;
    }
    memset(&c, 0, sizeof(c));
    c.v[CP_METRIC_MESSAGES] = 1;
    c.v[CP_METRIC_RECIPIENTS] = (double)ev->recipient_count;
    c.v[CP_METRIC_BYTES] = (double)ev->size;
    memset(&op, 0, sizeof(op));
    build_op(e, &d->id, &c, now_ms, limit_scale(e, d), &op);
    if (p != NULL) {
        memcpy(op.release, p->reserved, sizeof(op.release));
        /* Domains were counted at RCPT; keep them (see design.md). */
        op.release[CP_METRIC_DOMAINS] = 0;
        /* What was reserved was checked at RCPT (and, in shadow mode,
         * reported there): only a cost above the reservation is news. */
        for (size_t i = 0; i < op.nrules; i++) {
            enum cp_metric m = d->id.rules->rule[i].metric;

            op.rule[i].nocheck = c.v[m] <= p->reserved[m];
        }
    }
    e->store->ops->meter(e->store, &op, &res);
    finish(e, &op, &res, d);
    pool_route(e, d);
    if (p != NULL) {
        pending_unlink(e, p);
        pending_free(p);
    }
    e->stats.settled++;
    if (d->action == CP_ACT_DUNNO || d->action == CP_ACT_WARN ||
        d->action == CP_ACT_PREPEND || d->action == CP_ACT_HOLD ||
        d->action == CP_ACT_FILTER)
        queued_add(e, ev->queue_id, d->id.dkey, d->id.dkeylen, now_ms);
}

/* ---- delivery outcomes ---- */

static bool
starts(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);

    return len >= n && memcmp(s, lit, n) == 0;
}

enum cp_outcome
cp_outcome_of(const char *status, size_t slen, const char *dsn, size_t dlen)
{
    if (status == NULL)
        return CP_OUT_NONE;
    if (slen == 4 && memcmp(status, "sent", 4) == 0)
        return CP_OUT_DELIVERED;
    if (dsn == NULL)
        return CP_OUT_NONE;
    if (slen == 7 && memcmp(status, "bounced", 7) == 0) {
        if (starts(dsn, dlen, "5.1."))
            return CP_OUT_BAD_RECIPIENT;
        if (starts(dsn, dlen, "5.7."))
            return CP_OUT_REJECTED;
    } else if (slen == 8 && memcmp(status, "deferred", 8) == 0 &&
               starts(dsn, dlen, "4.7.")) {
        return CP_OUT_DEFERRED_POLICY;
    }
    return CP_OUT_NONE;
}

/* Evidence that arrives after the replies (the mail log, a DNSBL answer):
 * apply it to the account `key` and move its state. */
struct late {
    enum cp_signal sig;
    double scale;
    float *msg; /* delivery: the message's evidence so far; NULL: dnsbl */
};

static void
late_evidence(struct cp_engine *e, const char *key, size_t keylen,
              const struct late *l, int64_t now_ms, struct cp_decision *d)
{
    const struct cp_detection *det;
    struct cp_account_ref ref;

    if (!e->cfg->det.enabled ||
        cp_identity_lookup(e->cfg, key, keylen, &d->id) < 0 ||
        !d->id.cls->detect ||
        !e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                true, &ref))
        return;
    det = cp_class_det(e->cfg, d->id.cls);
    d->state = d->prev_state = ref.c->state;
    d->detected = true;
    d->score = l->msg ? cp_evidence_outcome(ref.ev, det, l->sig, l->scale,
                                            l->msg, now_ms, &d->fired)
                      : cp_evidence_listed(ref.ev, det, now_ms, &d->fired);
    step(e, det, &ref, d->score, now_ms, d);
}

/* Remember an accepted recipient, or is a bounced one stale (accepted
 * before)? */
static bool
delivered_before(struct cp_engine *e, const struct cp_queued *q, size_t qlen,
                 const char *rcpt, size_t rlen, enum cp_outcome o)
{
    uint64_t h;

    if (rcpt == NULL || rlen == 0 || e->cfg->delivery.max_recipients == 0)
        return false;
    h = pair_hash(q->buf + qlen, q->keylen, rcpt, rlen);
    if (o == CP_OUT_DELIVERED) {
        if (e->delivered.slot == NULL)
            tagset_init(&e->delivered, e->cfg->delivery.max_recipients);
        tagset_add(&e->delivered, h);
        return false;
    }
    return o == CP_OUT_BAD_RECIPIENT && tagset_has(&e->delivered, h);
}

int
cp_engine_outcome(struct cp_engine *e, const char *qid, size_t qlen,
                  const char *rcpt, size_t rlen, enum cp_outcome o,
                  int64_t now_ms, struct cp_decision *d)
{
    static const struct {
        enum cp_signal sig;
        double scale;
    } map[] = {
        [CP_OUT_DELIVERED] = {CP_SIG_DELIVERED, 1},
        [CP_OUT_BAD_RECIPIENT] = {CP_SIG_BAD_RECIPIENT, 1},
        [CP_OUT_REJECTED] = {CP_SIG_REMOTE_REJECT, 1},
        [CP_OUT_DEFERRED_POLICY] = {CP_SIG_REMOTE_REJECT, 0.25},
    };
    struct agemap_ent *a = agemap_get(&e->queued, qid, qlen);
    struct cp_queued *q;
    struct late l;

    memset(d, 0, sizeof(*d));
    d->stage = CP_STAGE_OTHER;
    if (a == NULL) {
        e->stats.outcomes_unknown++;
        return 0;
    }
    q = QUEUED(a);
    e->stats.outcomes++;
    if (o == CP_OUT_NONE)
        return 1;
    if (q->fp.words != 0 && e->camp != NULL)
        cp_campaigns_outcome(e->camp, &q->fp,
                             o == CP_OUT_BAD_RECIPIENT || o == CP_OUT_REJECTED);
    l.sig = map[o].sig;
    l.scale = map[o].scale;
    if (delivered_before(e, q, qlen, rcpt, rlen, o)) {
        l.sig = CP_SIG_STALE_RECIPIENT; /* it existed: a list gone stale */
        e->stats.outcomes_stale++;
    }
    l.msg = &q->ev;
    late_evidence(e, q->buf + qlen, q->keylen, &l, now_ms, d);
    return 1;
}

void
cp_engine_listed(struct cp_engine *e, const char *key, size_t keylen,
                 int64_t now_ms, struct cp_decision *d)
{
    struct late l = {CP_SIG_DNSBL, 1, NULL};

    memset(d, 0, sizeof(*d));
    d->stage = CP_STAGE_OTHER;
    late_evidence(e, key, keylen, &l, now_ms, d);
}

/* The message is part of a campaign big enough to refuse it outright. */
static void
campaign_verdict(struct cp_engine *e, uint32_t accounts, struct cp_decision *d)
{
    d->verdict = CP_ACT_DEFER;
    cp_reply_campaign(d, accounts, &e->cfg->det);
    d->shadow = cp_config_state_shadow(e->cfg, d->id.cls);
    d->action = d->shadow ? CP_ACT_DUNNO : d->verdict;
    if (d->shadow)
        e->stats.shadow_would[d->verdict]++;
}

int
cp_engine_content(struct cp_engine *e, const struct cp_event *ev,
                  const struct cp_fp *fp, int64_t now_ms,
                  struct cp_decision *d)
{
    const struct cp_content *ct = &e->cfg->content;
    struct agemap_ent *a = NULL;
    const struct cp_detection *det;
    struct cp_account_ref ref;
    struct cp_camp_info ci;
    uint64_t h;
    uint32_t acct;
    bool spam, refuse, campaign;

    memset(d, 0, sizeof(*d));
    d->stage = CP_STAGE_CONTENT;
    if (ev->queue_id.p != NULL && ev->queue_id.len > 0)
        a = agemap_get(&e->queued, ev->queue_id.p, ev->queue_id.len);
    /* the policy service's account for the queue id; else (not recorded,
     * or a customer gone at a reload) the request's identity */
    if (a == NULL || cp_identity_lookup(e->cfg, QUEUED(a)->buf + a->klen,
                                        QUEUED(a)->keylen, &d->id) < 0) {
        if (cp_identity_resolve(e->cfg, ev, &d->id) < 0) {
            e->stats.identity_errors++;
            return -1;
        }
    }
    customer_record(e, d, false);
    if (fp == NULL) { /* too short to tell: the account's state decides */
        if (e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                   false, &ref)) {
            d->state = d->prev_state = ref.c->state;
            state_verdict(e, d);
        }
        return 0;
    }
    if (e->camp == NULL) {
        e->camp = xmalloc(sizeof(*e->camp));
        cp_campaigns_init(e->camp, ct->max_fingerprints, 0, 1, 0, 0);
        campaign_settings(e);
    }
    h = hmap_hash(d->id.dkey, d->id.dkeylen);
    acct = (uint32_t)(h ^ h >> 32);
    /* a campaign: several accounts sending one text again and again, and
     * its copies bounce or are refused as spam */
    cp_campaigns_add(e->camp, fp, acct, (uint32_t)(now_ms / 1000), &ci);
    if (a != NULL) { /* its delivery outcomes will tell about it */
        QUEUED(a)->fp = *fp;
        QUEUED(a)->fp.words = fp->words > 0 ? fp->words : 1;
    }
    spam = ci.spam_accounts >= ct->campaign_accounts;
    refuse = ct->refuse_accounts != 0 && ci.spam_accounts >= ct->refuse_accounts;
    d->value = ci.accounts;
    e->stats.content++;
    e->stats.campaign += spam;
    e->stats.campaign_refused += refuse;
    /* this account is one of the campaign's senders; not for a copy this
     * answer refuses: its retry (the same message again) would count as
     * another copy, and a person whose message was deferred would earn
     * evidence by trying again */
    campaign = spam && ci.copies >= ct->repeat && !refuse;
    det = cp_class_det(e->cfg, d->id.cls);
    if (det->enabled && d->id.cls->detect &&
        e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, true,
                               true, &ref)) {
        d->state = d->prev_state = ref.c->state;
        d->detected = true;
        d->score = cp_evidence_content(ref.ev, det, campaign, now_ms,
                                       &d->fired);
        step(e, det, &ref, d->score, now_ms, d);
        if (state_verdict(e, d) || d->by_state)
            return 0; /* refused (or, in shadow mode, would be) by it */
    }
    if (refuse)
        campaign_verdict(e, ci.spam_accounts, d);
    return 0;
}

void
cp_engine_dequeue(struct cp_engine *e, const char *qid, size_t qlen)
{
    struct agemap_ent *a = agemap_get(&e->queued, qid, qlen);

    if (a != NULL)
        queued_del(e, QUEUED(a));
}

/* Is the queued message's account `key` — or, for a customer's key, one
 * of its logins or addresses? */
static bool
queued_of(const struct cp_engine *e, const struct cp_queued *q, size_t qlen,
          const char *key, size_t keylen)
{
    struct cp_identity id;

    if (q->keylen == keylen && memcmp(q->buf + qlen, key, keylen) == 0)
        return true;
    return keylen > 2 && memcmp(key, "c:", 2) == 0 &&
           cp_identity_lookup(e->cfg, q->buf + qlen, q->keylen, &id) == 0 &&
           id.keylen == keylen && memcmp(id.key, key, keylen) == 0;
}

size_t
cp_engine_queued(const struct cp_engine *e, const char *key, size_t keylen,
                 void (*fn)(void *arg, const char *qid, size_t qlen),
                 void *arg)
{
    size_t n = 0;

    /* A linear walk: only when an account is blocked or released. */
    for (const struct agemap_ent *a = e->queued.oldest; a; a = a->newer) {
        if (queued_of(e, QUEUED(a), a->klen, key, keylen)) {
            fn(arg, a->key, a->klen);
            n++;
        }
    }
    return n;
}

size_t
cp_engine_queued_count(const struct cp_engine *e)
{
    return agemap_count(&e->queued);
}

bool
cp_engine_queued_dirty(const struct cp_engine *e)
{
    return e->q_journal && e->q_seq != e->q_seq_written;
}

uint64_t
cp_engine_queued_journal(const struct cp_engine *e, cp_qid_add_fn add,
                         void *arg)
{
    const struct agemap_ent *a = e->queued.newest;

    /* ids are appended in order: the new ones are the newest */
    while (a != NULL && QUEUED(a)->seq > e->q_seq_written)
        a = a->older;
    for (a = a ? a->newer : e->queued.oldest; a != NULL; a = a->newer) {
        const struct cp_queued *q = QUEUED(a);

        add(arg, a->key, a->klen, q->buf + a->klen, q->keylen, a->t_ms);
    }
    return e->q_seq;
}

void
cp_engine_queued_stored(struct cp_engine *e, uint64_t mark)
{
    e->q_seq_written = mark;
}

void
cp_engine_queued_restore(struct cp_engine *e, const char *qid, size_t qlen,
                         const char *key, size_t klen, int64_t t_ms,
                         int64_t now_ms)
{
    /* a stored time from before the ttl, or from the future (a damaged
     * row: also no overflow below), is skipped */
    if (klen == 0 || klen >= CP_KEY_MAX || t_ms > now_ms ||
        t_ms <= now_ms - (int64_t)e->cfg->delivery.queue_id_ttl_ms ||
        (e->queued.newest != NULL && t_ms < e->queued.newest->t_ms))
        return;
    queued_add(e, (struct str){qid, qlen}, key, klen, t_ms);
    e->q_seq_written = e->q_seq; /* stored already */
}

int
cp_engine_set_state(struct cp_engine *e, const struct cp_identity *id,
                    int to, int64_t now_ms, struct cp_decision *d)
{
    struct cp_account_ref ref;
    int from;

    memset(d, 0, sizeof(*d));
    d->id = *id;
    d->stage = CP_STAGE_OTHER;
    if (!e->store->ops->account(e->store, id->dkey, id->dkeylen, true, false,
                                &ref))
        return -1;
    from = ref.c->state;
    d->state = d->prev_state = (uint8_t)from;
    if (to == CP_ST_PROBATION && from == CP_ST_NORMAL)
        return -1; /* nothing to release */
    if (to == CP_ST_PROBATION && from == CP_ST_ALLOWED)
        to = CP_ST_NORMAL; /* the allowance is withdrawn */
    if (to == from ||
        (to != CP_ST_PROBATION && to != CP_ST_MANUAL_HOLD &&
         to != CP_ST_ALLOWED && to != CP_ST_NORMAL))
        return -1;
    if (to == CP_ST_PROBATION && ref.ev != NULL) {
        /* a fresh start: the evidence that led to the block is spent */
        ref.ev->score = 0;
        memset(ref.ev->sig, 0, sizeof(ref.ev->sig));
    }
    transition(ref.c, to, now_ms, d);
    return 0;
}

int
cp_engine_decide(struct cp_engine *e, const struct cp_event *ev,
                 int64_t now_ms, struct cp_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->stage = ev->stage;
    d->action = d->verdict = CP_ACT_DUNNO;
    e->stats.requests++;
    if (cp_identity_resolve(e->cfg, ev, &d->id) < 0) {
        e->stats.identity_errors++;
        e->stats.by_action[CP_ACT_DUNNO]++;
        return CP_DECIDE_NO_IDENTITY;
    }
    if (d->stage == CP_STAGE_RCPT)
        decide_rcpt(e, ev, now_ms, d);
    else if (d->stage == CP_STAGE_EOM)
        decide_eom(e, ev, now_ms, d);
    e->stats.by_action[d->action]++;
    return 0;
}
