/*
 * content.c — the milter's part of the engine: a message's fingerprint
 * goes into the campaign table (core/fingerprint.h); a text sent by many
 * accounts is evidence against each, and past content.refuse_accounts it
 * is refused outright. See cp_engine_content() in engine.h.
 */
#include <stdlib.h>
#include <string.h>

#include "core/engine_int.h"
#include "core/fingerprint.h"
#include "util/hmap.h"
#include "util/xalloc.h"

/* The campaign table's settings from the config (a reload changes them;
 * its size only at the next start). */
void
engine_campaign_settings(struct cp_engine *e)
{
    const struct cp_content *ct = &e->cfg->content;

    if (e->camp == NULL)
        return;
    e->camp->window_s = (uint32_t)(ct->window_ms / 1000);
    e->camp->repeat = ct->repeat;
    e->camp->min_bad = ct->min_bad;
    e->camp->bad_share = ct->bad_share;
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
    struct cp_ev_delta mark;
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
    engine_customer_record(e, d, false);
    /* a bounce or an automatic reply carries or answers another's text,
     * a forward is another's (servers bouncing or forwarding a spam run
     * they received): not the account's, and no copy of a campaign; as
     * too short a text, the state decides */
    if (a != NULL ? (QUEUED(a)->how & (CP_QUEUED_REPLY | CP_QUEUED_FORWARD))
                  : ev->sender.len == 0)
        fp = NULL;
    if (fp == NULL) { /* too short to tell: the account's state decides */
        if (e->store->ops->account(e->store, d->id.dkey, d->id.dkeylen, false,
                                   false, &ref)) {
            d->state = d->prev_state = ref.c->state;
            engine_state_verdict(e, d);
        }
        return 0;
    }
    if (e->camp == NULL) {
        e->camp = xmalloc(sizeof(*e->camp));
        cp_campaigns_init(e->camp, ct->max_fingerprints, 0, 1, 0, 0);
        engine_campaign_settings(e);
    }
    h = hmap_hash(d->id.dkey, d->id.dkeylen);
    acct = (uint32_t)(h ^ h >> 32);
    /* a campaign: several accounts sending one text again and again, and
     * its copies bounce or are refused as spam */
    cp_campaigns_add(e->camp, fp, acct, (uint32_t)(now_ms / 1000), &ci);
    if (e->share_campaign != NULL)
        e->share_campaign(e->share_arg, fp, ci.bit, acct, 0, 0, now_ms);
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
        engine_ev_mark(e, ref.ev, &mark);
        d->score = cp_evidence_content(ref.ev, det, campaign, now_ms,
                                       &d->fired);
        engine_step(e, det, &ref, &mark, d->score, now_ms, d);
        if (engine_state_verdict(e, d) || d->by_state)
            return 0; /* refused (or, in shadow mode, would be) by it */
    }
    if (refuse)
        campaign_verdict(e, ci.spam_accounts, d);
    return 0;
}
