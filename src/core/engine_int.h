/*
 * engine_int.h — what the engine's files share (not an API): engine.c
 * (decisions and two-phase accounting, states), queued.c (the queue-id
 * table, delivery outcomes and DNSBL answers), content.c (the milter's
 * fingerprints and the campaign table), reply.c (the words).
 */
#ifndef CP_CORE_ENGINE_INT_H
#define CP_CORE_ENGINE_INT_H

#include "core/engine.h"
#include "core/evidence.h"

/* A message in the Postfix queue, by queue id (delivery outcomes). */
struct cp_queued {
    struct agemap_ent age; /* key: the queue id, in buf */
    float ev;              /* its delivery evidence so far (not stored) */
    struct cp_fp fp;       /* its text (campaign table); words 0: none */
    uint64_t seq;          /* journal: order of recording */
    uint16_t keylen;       /* the account, after the queue id in buf */
    uint8_t how;           /* CP_QUEUED_*: a reply, another's mail */
    char buf[];
};

#define QUEUED(ent) agemap_entry((ent), struct cp_queued, age)

/* engine.c: the state-record of d's customer (d->cust_state), and its
 * evidence when `evidence` (NULL: none or not wanted) */
struct cp_evidence *engine_customer_record(struct cp_engine *e,
                                           struct cp_decision *d,
                                           bool evidence);
/* engine.c: fleet mode: mark the evidence before an update (*m is
 * engine_step's; untouched without a shared store) */
void engine_ev_mark(const struct cp_engine *e, const struct cp_evidence *ev,
                    struct cp_ev_delta *m);
/* engine.c: move the account's state after new evidence (d says so); in
 * fleet mode, what the evidence gained since mark m goes to the fleet */
void engine_step(struct cp_engine *e, const struct cp_detection *det,
                 const struct cp_account_ref *ref,
                 const struct cp_ev_delta *m, double score, int64_t now_ms,
                 struct cp_decision *d);
/* engine.c: the account's state decides the reply (blocked, throttled)? */
bool engine_state_verdict(struct cp_engine *e, struct cp_decision *d);

/* queued.c: remember / forget which account a queued message is from */
void engine_queued_add(struct cp_engine *e, struct str qid, const char *key,
                       size_t keylen, unsigned how, int64_t now_ms);
void engine_queued_del(struct cp_engine *e, struct cp_queued *q);
/* queued.c: an (account, recipient) pair's hash for the delivered table */
uint64_t engine_pair_hash(const char *key, size_t klen, const char *rcpt,
                          size_t rlen);

/* content.c: the campaign table's settings from the config */
void engine_campaign_settings(struct cp_engine *e);

#endif
