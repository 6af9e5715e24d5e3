/*
 * engine.c — decisions, two-phase accounting and account states; see
 * engine.h. The rest of the engine: queued.c (queued mail, delivery
 * outcomes, DNSBL answers), content.c (the milter's fingerprints, the
 * campaign table), reply.c (the words of the replies).
 *
 * Every request becomes at most one store operation (struct cp_meter_op),
 * so a fleet store can make each decision one atomic round trip. Pending
 * messages live in a hash table by `instance` and in a list by age; the
 * table is capped by accounting.max_pending (the oldest is released early
 * when it is full), so a client inventing instances cannot grow memory.
 */
#include "core/engine.h"

#include <stdlib.h>
#include <string.h>

#include "core/custmap.h"
#include "core/engine_int.h"
#include "core/evidence.h"
#include "core/lifecycle.h"
#include "core/reply.h"
#include "util/agemap.h"
#include "util/hmap.h"
#include "util/inet.h"
#include "util/xalloc.h"

struct cp_pending {
    struct agemap_ent age; /* key: the instance, in buf */
    char *key;             /* the account, in buf: one allocation */
    size_t keylen;
    double reserved[CP_METRIC_COUNT];
    char buf[];
};

#define PENDING(ent) agemap_entry((ent), struct cp_pending, age)


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
    tagset_fini(&e->forwards);
    memset(e, 0, sizeof(*e));
}

void
cp_engine_set_config(struct cp_engine *e, const struct cp_config *cfg)
{
    e->cfg = cfg;
    engine_campaign_settings(e);
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

/* Give the reservation back to the account (and, in fleet mode, to the
 * shared store unless `shared` already did) and forget the message. */
static void
pending_give_back(struct cp_engine *e, struct cp_pending *p, int64_t now_ms,
                  bool share)
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
    if (share && e->share_release != NULL)
        e->share_release(e->share_arg, &op);
    pending_unlink(e, p);
    pending_free(p);
}

static void
pending_release(struct cp_engine *e, struct cp_pending *p, int64_t now_ms)
{
    pending_give_back(e, p, now_ms, true);
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

size_t
cp_engine_expire(struct cp_engine *e, int64_t now_ms)
{
    size_t n = 0;

    while (e->queued.oldest != NULL &&
           now_ms - e->queued.oldest->t_ms >=
               (int64_t)e->cfg->delivery.queue_id_ttl_ms)
        engine_queued_del(e, QUEUED(e->queued.oldest));
    while (e->pending.oldest != NULL &&
           now_ms - e->pending.oldest->t_ms >=
               (int64_t)e->cfg->reservation_timeout_ms) {
        pending_release(e, PENDING(e->pending.oldest), now_ms);
        e->stats.pending_expired++;
        n++;
    }
    return n;
}

/* Give back the reservation of a transaction that has ended. */
static void
abandon(struct cp_engine *e, struct str inst, int64_t now_ms)
{
    struct cp_pending *p = pending_get(e, inst);

    if (p == NULL)
        return;
    pending_release(e, p, now_ms);
    e->stats.pending_abandoned++;
}

void
cp_session_step(struct cp_engine *e, struct cp_session *s,
                const struct cp_event *ev, int64_t now_ms)
{
    struct str inst = ev ? ev->instance : (struct str){NULL, 0};
    bool trusted = ev ? s->eom : e->eom_seen;

    if (s->len > 0 &&
        (inst.len != s->len || memcmp(inst.p, s->inst, s->len) != 0)) {
        if (trusted)
            abandon(e, (struct str){s->inst, s->len}, now_ms);
        s->len = 0;
    }
    if (!str_set(inst) || inst.len > sizeof(s->inst))
        return;
    if (ev->stage == CP_STAGE_EOM) { /* settled, or refused: over */
        s->len = 0;
        s->eom = true;
        return;
    }
    memcpy(s->inst, inst.p, inst.len);
    s->len = inst.len;
}

/* ---- building the operation ---- */

static uint32_t
domain_hash(struct str rcpt)
{
    struct str d = str_domain(rcpt);

    return d.len == 0 ? 0 : hmap_hash_lower32(d.p, d.len);
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
    /* the limit applied (WATCH and PROBATION scale it), and when the
     * bucket has drained enough for this request at the applied rate */
    d->limit = op->rule[pick].cap;
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

/* ---- compromise detection and account states ---- */

int
cp_state_deciding(int own, int customer)
{
    switch (customer) {
    case CP_ST_MANUAL_HOLD:
    case CP_ST_BLOCKED:
        return customer;
    case CP_ST_ALLOWED:
        return own == CP_ST_MANUAL_HOLD ? own : CP_ST_ALLOWED;
    default:
        return own;
    }
}

int
cp_decision_state(const struct cp_decision *d)
{
    return cp_state_deciding(d->state, d->cust_state);
}

double
cp_limit_scale(const struct cp_config *cfg, int state)
{
    return state == CP_ST_WATCH || state == CP_ST_PROBATION
               ? cfg->det.watch_factor
               : 1.0;
}

static double
limit_scale(const struct cp_engine *e, const struct cp_decision *d)
{
    return cp_limit_scale(e->cfg, cp_decision_state(d));
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
struct cp_evidence *
engine_customer_record(struct cp_engine *e, struct cp_decision *d, bool evidence)
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

void
engine_ev_mark(const struct cp_engine *e, const struct cp_evidence *ev,
               struct cp_ev_delta *m)
{
    if (e->share_evidence != NULL && ev != NULL)
        cp_evidence_mark(ev, m);
}

/* The account's state after new evidence (score): moved if it says so. */
void
engine_step(struct cp_engine *e, const struct cp_detection *det,
            const struct cp_account_ref *ref, const struct cp_ev_delta *m,
            double score, int64_t now_ms, struct cp_decision *d)
{
    int next;

    if (e->share_evidence != NULL) {
        struct cp_ev_delta gain;

        memset(&gain, 0, sizeof(gain));
        if (cp_evidence_gained(m, ref->ev, det, &gain))
            e->share_evidence(e->share_arg, d->id.dkey, d->id.dkeylen, det,
                              &gain);
    }
    if (e->learning)
        return;
    next = cp_lifecycle_step(det, ref->c->state, ref->c->repeat,
                             ref->c->state_since_s, score,
                             cp_evidence_block_signals(ref->ev, det), now_ms);
    if (next != ref->c->state)
        transition(ref->c, next, now_ms, d);
}

/*
 * A blocked account (BLOCKED, MANUAL_HOLD) keeps trying, often thousands
 * of times an hour, and each refused attempt is the same evidence again:
 * it is looked at once an hour at most (evidence last updated less than
 * CP_HELD_EVIDENCE_MS ago: this attempt adds nothing). A THROTTLED
 * account's attempts still count: they are how it comes to be blocked.
 */
#define CP_HELD_EVIDENCE_MS 3600000

static bool
heard_lately(int st, const struct cp_evidence *ev, int64_t now_ms)
{
    return (st == CP_ST_BLOCKED || st == CP_ST_MANUAL_HOLD) && ev != NULL &&
           now_ms - ev->t_ms < CP_HELD_EVIDENCE_MS;
}

static void
detect(struct cp_engine *e, const struct cp_event *ev, bool new_msg,
       int64_t now_ms, struct cp_decision *d)
{
    const struct cp_detection *det = cp_class_det(e->cfg, d->id.cls);
    bool evidence = det->enabled && d->id.cls->detect;
    struct cp_evidence *shared = engine_customer_record(e, d, evidence);
    struct cp_account_ref ref;
    struct cp_ev_delta mark;
    struct cp_ev_input in;
    struct inet_addr client;
    bool refused;
    int st;

    if (!e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, true,
                                evidence, &ref))
        return;
    d->state = d->prev_state = ref.c->state;
    /* mail the account's state refuses (not learning, not shadowed) */
    st = cp_decision_state(d);
    refused = refuses(st) && !e->learning &&
              !cp_config_state_shadow(e->cfg, d->id.cls);
    if (!evidence || (refused && heard_lately(st, ref.ev, now_ms)))
        return;
    memset(&in, 0, sizeof(in));
    in.cust = d->id.cust;
    in.shared = shared;
    in.host_bit = e->host_bit;
    if (e->delivered.used > 0 && ev->recipient.len > 0)
        in.rcpt_seen = tagset_has(&e->delivered,
                                  engine_pair_hash(d->id.dkey, d->id.dkeylen,
                                            ev->recipient.p,
                                            ev->recipient.len))
                           ? CP_RCPT_DELIVERED
                           : CP_RCPT_NEW;
    if (e->forwards.used > 0 && ev->recipient.len > 0)
        in.rcpt_forwarded = tagset_has(
            &e->forwards, engine_pair_hash(d->id.dkey, d->id.dkeylen,
                                           ev->recipient.p,
                                           ev->recipient.len));
    in.now_ms = now_ms;
    in.new_message = new_msg;
    in.sasl = d->id.kind == CP_ID_SASL;
    in.login = ev->sasl_username;
    in.sender = ev->sender;
    in.recipient = ev->recipient;
    in.helo = ev->helo_name;
    in.tls_protocol = ev->tls_protocol;
    in.tls_cipher = ev->tls_cipher;
    in.refused = refused;
    if (ev->client_address.p &&
        inet_parse(ev->client_address.p, ev->client_address.len, &client))
        in.client = &client;
    d->detected = true;
    engine_ev_mark(e, ref.ev, &mark);
    d->score = cp_evidence_rcpt(ref.ev, det, &in, &d->fired);
    engine_step(e, det, &ref, &mark, d->score, now_ms, d);
}

/* The account's state decides the reply (blocked, throttled)? */
bool
engine_state_verdict(struct cp_engine *e, struct cp_decision *d)
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

/* What the shared store needs besides the operation (fleet mode). */
static void
await_fill(struct cp_engine *e, const struct cp_decision *d,
           const struct costs *c, bool two_phase, struct cp_await *aw)
{
    memcpy(aw->cost, c->v, sizeof(aw->cost));
    aw->watch_factor = e->cfg->det.watch_factor;
    aw->scale_states = (1u << CP_ST_WATCH) | (1u << CP_ST_PROBATION);
    aw->refuse_states = cp_config_state_shadow(e->cfg, d->id.cls)
                            ? 0
                            : (1u << CP_ST_THROTTLED) | (1u << CP_ST_BLOCKED) |
                                  (1u << CP_ST_MANUAL_HOLD);
    aw->two_phase = two_phase;
}

/* An operation built unscaled, scaled to the account's state now. */
static void
op_scale(struct cp_meter_op *op, double scale)
{
    for (size_t i = 0; i < op->nrules; i++) {
        op->rule[i].cap *= scale;
        op->rule[i].rate *= scale;
    }
}

/* Fleet mode: the local copy of the account's counters follows the shared
 * store's answer (it is what degraded mode counts on). */
static void
mirror_levels(struct cp_engine *e, const struct cp_meter_op *op,
              const struct cp_meter_result *res)
{
    struct cp_account_ref ref;
    float lv[CP_MAX_SLOTS];
    uint32_t used = 0;

    if (!e->store->ops->account(e->store, op->key, op->keylen, true, false,
                                &ref))
        return;
    for (size_t i = 0; i < op->nrules; i++) {
        double v = res->level[i] + (res->denied >= 0 ? 0 : res->cost[i]);

        lv[op->rule[i].slot] = (float)v;
        used |= 1u << op->rule[i].slot;
    }
    for (size_t s = 0; s < CP_MAX_SLOTS; s++)
        ref.c->level[s] = (used & (1u << s)) ? lv[s] : 0.0f;
    ref.c->t_ms = op->now_ms;
}

/* The store's answer becomes the decision: the rules, the reputation
 * pool, the reservation of a two-phase message. */
static void
rcpt_tail(struct cp_engine *e, const struct cp_event *ev, int64_t now_ms,
          struct cp_decision *d, const struct cp_meter_op *op,
          const struct cp_meter_result *res, const double *cost,
          bool two_phase)
{
    struct cp_pending *p;

    if (!d->by_state)
        finish(e, op, res, d);
    pool_route(e, d);
    if (res->denied >= 0 || !two_phase)
        return;
    p = pending_get(e, ev->instance);
    if (p != NULL && !pending_of(p, &d->id))
        return; /* taken by another account meanwhile (fleet mode) */
    if (p == NULL)
        p = pending_add(e, &ev->instance, &d->id, now_ms);
    p->reserved[CP_METRIC_MESSAGES] += cost[CP_METRIC_MESSAGES];
    p->reserved[CP_METRIC_RECIPIENTS] += 1;
    p->reserved[CP_METRIC_BYTES] += cost[CP_METRIC_BYTES];
    p->reserved[CP_METRIC_DOMAINS] += res->new_domain ? 1 : 0;
}

static int
decide_rcpt(struct cp_engine *e, const struct cp_event *ev,
            int64_t now_ms, struct cp_decision *d, struct cp_await *aw)
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
        return 0;
    }
    memset(&c, 0, sizeof(c));
    c.v[CP_METRIC_MESSAGES] = p ? 0 : 1;
    c.v[CP_METRIC_RECIPIENTS] = 1;
    c.v[CP_METRIC_BYTES] = p ? 0 : (double)ev->size;
    c.v[CP_METRIC_DOMAINS] = 1;
    if (aw != NULL) { /* the shared store decides the rest */
        memset(aw, 0, sizeof(*aw));
        build_op(e, &d->id, &c, now_ms, 1.0, &aw->op);
        aw->op.domain_hash = domain_hash(ev->recipient);
        await_fill(e, d, &c, two_phase, aw);
        return CP_DECIDE_AWAIT;
    }
    if (engine_state_verdict(e, d))
        return 0; /* blocked or throttled: nothing reserved */
    memset(&op, 0, sizeof(op));
    build_op(e, &d->id, &c, now_ms, limit_scale(e, d), &op);
    op.domain_hash = domain_hash(ev->recipient);
    e->store->ops->meter(e->store, &op, &res);
    rcpt_tail(e, ev, now_ms, d, &op, &res, c.v, two_phase);
    return 0;
}

/* END-OF-MESSAGE evidence (the final size) and maybe a state change, which
 * then decides this message too. */
static void
detect_eom(struct cp_engine *e, const struct cp_event *ev,
           int64_t now_ms, struct cp_decision *d)
{
    const struct cp_detection *det = cp_class_det(e->cfg, d->id.cls);
    struct cp_account_ref ref;
    struct cp_ev_delta mark;
    uint32_t fired;
    double score;

    if (!det->enabled || !d->id.cls->detect ||
        !e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                true, &ref))
        return;
    engine_ev_mark(e, ref.ev, &mark);
    score = cp_evidence_eom(ref.ev, det, ev->size, now_ms, &fired);
    if (fired == 0)
        return;
    d->detected = true;
    d->score = score;
    d->fired = fired;
    d->state = d->prev_state = ref.c->state;
    engine_step(e, det, &ref, &mark, score, now_ms, d);
}

/*
 * An account blocked or throttled while its message was in DATA: refuse it
 * at END-OF-MESSAGE too. (In shadow mode the state was reported at RCPT.)
 */
static bool
eom_blocked(struct cp_engine *e, struct cp_decision *d)
{
    struct cp_account_ref ref;

    engine_customer_record(e, d, false);
    if (!e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                false, &ref))
        return false;
    if (!d->state_changed) /* else detect_eom() has set both */
        d->state = d->prev_state = ref.c->state;
    if (cp_config_state_shadow(e->cfg, d->id.cls))
        return false;
    return engine_state_verdict(e, d);
}

/* What the message is, for the weight of its delivery outcomes
 * (CP_QUEUED_*): to one recipient, from the null sender (a bounce, an
 * automatic reply) or from another's address (not at the login's domain,
 * not at one of the customer's, not one the login or its customer uses
 * as its own, learned: a forward, once the account's mail went to that
 * recipient, which its RCPT saw). */
static unsigned
queued_how(struct cp_engine *e, const struct cp_event *ev,
           struct cp_decision *d)
{
    struct str s = str_domain(ev->sender), l;
    struct cp_evidence *shared;
    struct cp_account_ref ref;

    if (ev->recipient_count != 1)
        return 0;
    if (ev->sender.len == 0)
        return CP_QUEUED_REPLY;
    l = d->id.kind == CP_ID_SASL ? str_domain(ev->sasl_username)
                                 : (struct str){NULL, 0};
    if (s.len == 0 || str_eq_ci(l, s) ||
        cp_customer_owns(d->id.cust, ev->sender.p, ev->sender.len))
        return 0;
    shared = engine_customer_record(e, d, true);
    if (!e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                true, &ref) ||
        ref.ev == NULL)
        return CP_QUEUED_OTHERS; /* no evidence kept: nothing learned */
    if (cp_evidence_knows_sender(ref.ev, shared, ev->sender))
        return 0;
    return CP_QUEUED_OTHERS | ((ref.ev->msg_flags & CP_EV_MSG_KNOWN_ONE)
                                   ? CP_QUEUED_FORWARD
                                   : 0);
}

/* A message refused at END-OF-MESSAGE by its account's state: its
 * reservation goes back (already in the shared store when `shared`); a
 * held one is remembered, for a release frees it. */
static void
eom_refused(struct cp_engine *e, const struct cp_event *ev, int64_t now_ms,
            struct cp_decision *d, struct cp_pending *p, bool shared)
{
    if (p != NULL)
        pending_give_back(e, p, now_ms, !shared);
    if (d->action == CP_ACT_HOLD) /* held: a release frees it */
        engine_queued_add(e, ev->queue_id, d->id.dkey, d->id.dkeylen,
                          queued_how(e, ev, d), now_ms);
}

/* The settled message's operation: its final costs, its reservation given
 * back, and what was reserved not checked again. */
static void
eom_op(struct cp_engine *e, const struct cp_decision *d,
       const struct cp_pending *p, const struct costs *c, int64_t now_ms,
       double scale, struct cp_meter_op *op)
{
    memset(op, 0, sizeof(*op));
    build_op(e, &d->id, c, now_ms, scale, op);
    if (p == NULL)
        return;
    memcpy(op->release, p->reserved, sizeof(op->release));
    /* Domains were counted at RCPT; keep them (see design.md). */
    op->release[CP_METRIC_DOMAINS] = 0;
    /* What was reserved was checked at RCPT (and, in shadow mode,
     * reported there): only a cost above the reservation is news. */
    for (size_t i = 0; i < op->nrules; i++) {
        enum cp_metric m = d->id.rules->rule[i].metric;

        op->rule[i].nocheck = c->v[m] <= p->reserved[m];
    }
}

static void
eom_tail(struct cp_engine *e, const struct cp_event *ev, int64_t now_ms,
         struct cp_decision *d, const struct cp_meter_op *op,
         const struct cp_meter_result *res, struct cp_pending *p)
{
    finish(e, op, res, d);
    pool_route(e, d);
    if (p != NULL) {
        pending_unlink(e, p);
        pending_free(p);
    }
    e->stats.settled++;
    if (d->action == CP_ACT_DUNNO || d->action == CP_ACT_WARN ||
        d->action == CP_ACT_PREPEND || d->action == CP_ACT_HOLD ||
        d->action == CP_ACT_FILTER)
        engine_queued_add(e, ev->queue_id, d->id.dkey, d->id.dkeylen,
                          queued_how(e, ev, d), now_ms);
}

/* This message's reservation, if it is this account's. */
static struct cp_pending *
eom_pending(struct cp_engine *e, const struct cp_event *ev,
            const struct cp_decision *d)
{
    struct cp_pending *p = NULL;

    if (ev->instance.p != NULL)
        p = pending_get(e, ev->instance);
    if (p != NULL && !pending_of(p, &d->id))
        p = NULL; /* another account's: it is not this message's to settle */
    return p;
}

/* Fleet mode: can this END-OF-MESSAGE be settled here? Its reservation
 * covers every final cost (nothing to check) and detection did not move
 * the account's state (a change goes through the shared store). */
static bool
settles_here(const struct cp_engine *e, const struct cp_decision *d,
             const struct cp_pending *p, const struct costs *c)
{
    if (e->share_settle == NULL || p == NULL || d->state_changed)
        return false;
    for (int m = 0; m < CP_METRIC_COUNT; m++)
        if (c->v[m] > p->reserved[m])
            return false;
    return true;
}

static int
decide_eom(struct cp_engine *e, const struct cp_event *ev,
           int64_t now_ms, struct cp_decision *d, struct cp_await *aw)
{
    struct cp_pending *p;
    struct cp_meter_op op;
    struct cp_meter_result res;
    struct costs c;

    if (e->cfg->acct_mode != CP_ACCT_TWO_PHASE)
        return 0;
    p = eom_pending(e, ev, d);
    detect_eom(e, ev, now_ms, d);
    if (e->learning) { /* its delivery outcomes are evidence too */
        if (p != NULL) {
            pending_unlink(e, p);
            pending_free(p);
        }
        engine_queued_add(e, ev->queue_id, d->id.dkey, d->id.dkeylen,
                          queued_how(e, ev, d), now_ms);
        return 0;
    }
    memset(&c, 0, sizeof(c));
    c.v[CP_METRIC_MESSAGES] = 1;
    c.v[CP_METRIC_RECIPIENTS] = (double)ev->recipient_count;
    c.v[CP_METRIC_BYTES] = (double)ev->size;
    if (aw != NULL && !settles_here(e, d, p, &c)) {
        /* the shared store decides the rest */
        memset(aw, 0, sizeof(*aw));
        eom_op(e, d, p, &c, now_ms, 1.0, &aw->op);
        await_fill(e, d, &c, true, aw);
        aw->eom = true;
        return CP_DECIDE_AWAIT;
    }
    if (eom_blocked(e, d)) {
        eom_refused(e, ev, now_ms, d, p, false);
        return 0;
    }
    eom_op(e, d, p, &c, now_ms, limit_scale(e, d), &op);
    e->store->ops->meter(e->store, &op, &res);
    if (aw != NULL)
        e->share_settle(e->share_arg, &op);
    eom_tail(e, ev, now_ms, d, &op, &res, p);
    return 0;
}

/* ---- fleet mode: the shared store's answer ---- */

void
cp_engine_drop_pending(struct cp_engine *e, struct str instance,
                       int64_t now_ms)
{
    struct cp_pending *p;

    if (instance.p != NULL && (p = pending_get(e, instance)) != NULL)
        pending_give_back(e, p, now_ms, false);
}

static void
set_state(struct cp_counters *c, int state, uint32_t since_s, int repeat)
{
    c->state = (uint8_t)state;
    c->state_since_s = since_s;
    c->repeat = (uint8_t)repeat;
}

/* An account's local copy takes the shared state. A release made on
 * another host (to PROBATION) spends this host's suspicion too, as
 * cp_engine_set_state() did where it was made: else the evidence that
 * led to the block would block it again here at its next message. */
static void
take_state(struct cp_engine *e, const char *key, size_t len,
           struct cp_counters *c, int state, uint32_t since_s, int repeat)
{
    struct cp_account_ref ref;

    if (state == CP_ST_PROBATION &&
        (c->state != CP_ST_PROBATION || c->state_since_s != since_s) &&
        e->store->ops->account(e->store, key, len, false, true, &ref)) {
        c = ref.c; /* (the store's pointers last until its next call) */
        if (ref.ev != NULL) {
            ref.ev->score = 0;
            memset(ref.ev->sig, 0, sizeof(ref.ev->sig));
        }
    }
    set_state(c, state, since_s, repeat);
}

void
cp_engine_mirror_state(struct cp_engine *e, const char *key, size_t len,
                       int state, uint32_t since_s, int repeat)
{
    struct cp_account_ref ref;

    if (e->store->ops->account(e->store, key, len, true, false, &ref))
        take_state(e, key, len, ref.c, state, since_s, repeat);
}

/* The shared states become the local copy's and the decision's; a state
 * change detection made here that lost to another host's is undone. */
static void
mirror_states(struct cp_engine *e, struct cp_decision *d,
              const struct cp_remote *r)
{
    struct cp_account_ref ref;

    if (d->state_changed && r->change_refused)
        d->state_changed = false;
    d->shared = d->state_changed;
    if (!d->state_changed)
        d->state = d->prev_state = r->own;
    if (e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, true,
                               false, &ref)) {
        if (!d->state_changed && ref.c->state != r->own) {
            d->fleet_moved = true;
            d->fleet_from = ref.c->state;
        }
        take_state(e, d->id.dkey, d->id.dkeylen, ref.c, r->own,
                   r->own_since_s, r->own_repeat);
    }
    d->cust_state = CP_ST_NORMAL;
    if (!cp_identity_one_record(&d->id) &&
        e->store->ops->account(e->store, d->id.key, d->id.keylen, true, false,
                               &ref)) {
        ref.c->state = r->cust;
        d->cust_state = r->cust;
    }
}

bool
cp_engine_resume(struct cp_engine *e, const struct cp_event *ev,
                 int64_t now_ms, struct cp_decision *d,
                 const struct cp_await *aw, const struct cp_remote *r,
                 struct cp_meter_result *out)
{
    struct cp_meter_op op = aw->op;
    struct cp_meter_result res;
    struct cp_pending *p = NULL;
    bool local = false;

    if (r != NULL)
        mirror_states(e, d, r);
    else if (!aw->eom) /* (eom_blocked reads it itself) */
        engine_customer_record(e, d, false);
    if (aw->eom) {
        p = eom_pending(e, ev, d);
        if (eom_blocked(e, d)) {
            eom_refused(e, ev, now_ms, d, p, r != NULL);
            goto out;
        }
        if (r == NULL && p == NULL) /* given back meanwhile */
            memset(op.release, 0, sizeof(op.release));
    } else if (engine_state_verdict(e, d)) {
        goto out; /* blocked or throttled: nothing reserved */
    }
    op_scale(&op, limit_scale(e, d));
    if (r != NULL) {
        res = r->res;
        mirror_levels(e, &op, &res);
    } else {
        e->store->ops->meter(e->store, &op, &res);
        local = true;
        if (out != NULL)
            *out = res;
    }
    if (aw->eom)
        eom_tail(e, ev, now_ms, d, &op, &res, p);
    else
        rcpt_tail(e, ev, now_ms, d, &op, &res, aw->cost, aw->two_phase);
out:
    e->stats.by_action[d->action]++;
    return local;
}

/* ---- a person's decision ---- */

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
cp_engine_decide_async(struct cp_engine *e, const struct cp_event *ev,
                       int64_t now_ms, struct cp_decision *d,
                       struct cp_await *aw)
{
    int rc = 0;

    memset(d, 0, sizeof(*d));
    d->stage = ev->stage;
    d->action = d->verdict = CP_ACT_DUNNO;
    e->stats.requests++;
    if (cp_identity_resolve(e->cfg, ev, &d->id) < 0) {
        e->stats.identity_errors++;
        e->stats.by_action[CP_ACT_DUNNO]++;
        return CP_DECIDE_NO_IDENTITY;
    }
    if (d->stage == CP_STAGE_RCPT) {
        rc = decide_rcpt(e, ev, now_ms, d, aw);
    } else if (d->stage == CP_STAGE_EOM) {
        e->eom_seen = true;
        rc = decide_eom(e, ev, now_ms, d, aw);
    }
    if (rc != CP_DECIDE_AWAIT)
        e->stats.by_action[d->action]++;
    return rc;
}

int
cp_engine_decide(struct cp_engine *e, const struct cp_event *ev,
                 int64_t now_ms, struct cp_decision *d)
{
    return cp_engine_decide_async(e, ev, now_ms, d, NULL);
}
