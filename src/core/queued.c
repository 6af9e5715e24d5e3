/*
 * queued.c — the engine's queued mail: which account each message in the
 * Postfix queue is from (queue id → account, recorded at END-OF-MESSAGE,
 * capped by delivery.max_queue_ids and forgotten after
 * delivery.queue_id_ttl), its journal for the daemon's checkpoints, and
 * the evidence that arrives after the replies: delivery outcomes from the
 * mail log and DNSBL answers. See engine.h.
 */
#include <stdlib.h>
#include <string.h>

#include "core/engine_int.h"
#include "core/lifecycle.h"
#include "util/agemap.h"
#include "util/hmap.h"
#include "util/xalloc.h"

void
engine_queued_del(struct cp_engine *e, struct cp_queued *q)
{
    agemap_del(&e->queued, &q->age);
    free(q);
}

/* Remember which account a queued message belongs to. */
void
engine_queued_add(struct cp_engine *e, struct str qid, const char *key,
                  size_t keylen, unsigned how, int64_t now_ms)
{
    struct cp_queued *q;
    struct agemap_ent *old;

    if (e->cfg->delivery.max_queue_ids == 0 || qid.p == NULL ||
        qid.len == 0 || qid.len > CP_QUEUE_ID_MAX)
        return;
    if ((old = agemap_get(&e->queued, qid.p, qid.len)) != NULL)
        engine_queued_del(e, QUEUED(old)); /* reused (long queue ids never are) */
    while (agemap_count(&e->queued) >= e->cfg->delivery.max_queue_ids)
        engine_queued_del(e, QUEUED(e->queued.oldest));
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
    q->how = (uint8_t)(how & (CP_QUEUED_REPLY | CP_QUEUED_OTHERS |
                              CP_QUEUED_FORWARD));
    agemap_put(&e->queued, &q->age);
}

/* The (account, recipient) pair's hash for the delivered table. */
uint64_t
engine_pair_hash(const char *key, size_t klen, const char *rcpt, size_t rlen)
{
    return (hmap_hash(key, klen) * 0x9e3779b97f4a7c15ULL) ^
           hmap_hash_lower(rcpt, rlen);
}

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
    struct cp_ev_delta mark;

    if (!e->cfg->det.enabled ||
        cp_identity_lookup(e->cfg, key, keylen, &d->id) < 0 ||
        !d->id.cls->detect ||
        !e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                true, &ref))
        return;
    det = cp_class_det(e->cfg, d->id.cls);
    d->state = d->prev_state = ref.c->state;
    d->detected = true;
    engine_ev_mark(e, ref.ev, &mark);
    d->score = l->msg ? cp_evidence_outcome(ref.ev, det, l->sig, l->scale,
                                            l->msg, now_ms, &d->fired)
                      : cp_evidence_listed(ref.ev, det, now_ms, &d->fired);
    engine_step(e, det, &ref, &mark, d->score, now_ms, d);
}

static void
pair_add(struct tagset *t, size_t slots, uint64_t h)
{
    if (t->slot == NULL)
        tagset_init(t, slots);
    tagset_add(t, h);
}

/* What the account's mail to this recipient did before: was it
 * delivered there (*delivered), did a forward go there (*forwarded)?
 * An accepted recipient is remembered; so is the address a forward was
 * delivered to or refused at for what it forwards (a table of its own:
 * it makes no recipient known). A reply remembers nothing: its recipient
 * is whoever wrote in. */
static void
mailed_before(struct cp_engine *e, const struct cp_queued *q, size_t qlen,
              const char *rcpt, size_t rlen, enum cp_outcome o,
              bool *delivered, bool *forwarded)
{
    size_t max = e->cfg->delivery.max_recipients;
    uint64_t h;

    *delivered = *forwarded = false;
    if (rcpt == NULL || rlen == 0 || max == 0)
        return;
    h = engine_pair_hash(q->buf + qlen, q->keylen, rcpt, rlen);
    *delivered = e->delivered.slot != NULL && tagset_has(&e->delivered, h);
    *forwarded = e->forwards.slot != NULL && tagset_has(&e->forwards, h);
    if (q->how & CP_QUEUED_REPLY)
        return;
    if (o == CP_OUT_DELIVERED && !*delivered)
        pair_add(&e->delivered, max, h);
    if ((q->how & CP_QUEUED_OTHERS) && !*forwarded &&
        (o == CP_OUT_DELIVERED || o == CP_OUT_REJECTED))
        pair_add(&e->forwards, max / 16 > 1024 ? max / 16 : 1024, h);
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
    bool delivered, forwarded;

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
    if (q->fp.words != 0 && e->camp != NULL) {
        bool bad = o == CP_OUT_BAD_RECIPIENT || o == CP_OUT_REJECTED;

        cp_campaigns_outcome(e->camp, &q->fp, bad);
        if (e->share_campaign != NULL)
            e->share_campaign(e->share_arg, &q->fp, 0, 0, 1, bad, now_ms);
    }
    l.sig = map[o].sig;
    l.scale = map[o].scale;
    mailed_before(e, q, qlen, rcpt, rlen, o, &delivered, &forwarded);
    if (delivered && o == CP_OUT_BAD_RECIPIENT &&
        !(q->how & CP_QUEUED_REPLY)) {
        l.sig = CP_SIG_STALE_RECIPIENT; /* it existed: a list gone stale */
        e->stats.outcomes_stale++;
    }
    /* a bounce or an automatic reply goes where the mail it answers came
     * from (the forged sender of spam, for a server's backscatter): the
     * recipient was chosen by whoever wrote in, and what becomes of it
     * is no evidence either way. A forward goes where its owner reads
     * mail, and is refused there for what it forwards: a quarter (the
     * same shape, another's sender to a known person, is also a bot's
     * mail to the owner's contacts) */
    if (q->how & CP_QUEUED_REPLY) {
        l.scale = 0;
        e->stats.outcomes_relayed++;
    } else if ((q->how & CP_QUEUED_OTHERS) && (delivered || forwarded)) {
        l.scale *= 0.25;
        e->stats.outcomes_relayed++;
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

void
cp_engine_dequeue(struct cp_engine *e, const char *qid, size_t qlen)
{
    struct agemap_ent *a = agemap_get(&e->queued, qid, qlen);

    if (a != NULL)
        engine_queued_del(e, QUEUED(a));
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

        add(arg, a->key, a->klen, q->buf + a->klen, q->keylen, a->t_ms,
            q->how);
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
                         unsigned how, int64_t now_ms)
{
    /* a stored time from before the ttl, or from the future (a damaged
     * row: also no overflow below), is skipped */
    if (klen == 0 || klen >= CP_KEY_MAX || t_ms > now_ms ||
        t_ms <= now_ms - (int64_t)e->cfg->delivery.queue_id_ttl_ms ||
        (e->queued.newest != NULL && t_ms < e->queued.newest->t_ms))
        return;
    engine_queued_add(e, (struct str){qid, qlen}, key, klen, how, t_ms);
    e->q_seq_written = e->q_seq; /* stored already */
}
