/*
 * simtruth.c — the ground truth of chokepoint's accounts: which simulated
 * logins an account key names, so that every state change the engine
 * makes (inproc's on_change) is recorded against the logins it
 * affects. A login's key names that login; a customer's key (the map
 * groups a business's logins) names all of them; the key of an address
 * names the customers who relay by it, or an unauth_relay zombie.
 *
 * Keys are computed with the engine's own identity code, so the table
 * follows whatever the engine keys its states by.
 */
#include "cli/simtruth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/evidence.h"
#include "core/identity.h"
#include "core/lifecycle.h"
#include "util/xalloc.h"

struct truth_key {
    char key[CP_KEY_MAX];
    size_t len;
    uint32_t first, n; /* senders [first, first + n), or a zombie */
    bool zombie;
};

static bool
key_eq(const void *val, const void *key, size_t len)
{
    const struct truth_key *k = val;

    return k->len == len && memcmp(k->key, key, len) == 0;
}

static void
add(struct sim_truth *t, const char *key, size_t len, uint32_t who,
    bool zombie)
{
    uint64_t h = hmap_hash(key, len);
    struct truth_key *k = hmap_get(&t->map, h, key, len, key_eq);

    if (k != NULL) {
        /* a customer's logins are consecutive senders */
        if (!zombie && !k->zombie && who == k->first + k->n)
            k->n++;
        return;
    }
    k = xcalloc(1, sizeof(*k));
    memcpy(k->key, key, len);
    k->len = len;
    k->first = who;
    k->n = 1;
    k->zombie = zombie;
    hmap_put(&t->map, h, k);
}

/* Every key the engine may keep a state under for this identity. */
static void
add_identity(struct sim_truth *t, const struct cp_identity *id, uint32_t who,
             bool zombie)
{
    add(t, id->key, id->keylen, who, zombie);
    if (id->dkeylen != id->keylen || memcmp(id->dkey, id->key, id->keylen))
        add(t, id->dkey, id->dkeylen, who, zombie);
}

void
sim_truth_init(struct sim_truth *t, struct sim *s,
               const struct cp_config *cfg)
{
    char name[64];
    struct cp_identity id;

    memset(t, 0, sizeof(*t));
    t->s = s;
    hmap_init(&t->map, s->nsenders + s->nzombies);
    for (uint32_t i = 0; i < s->nsenders; i++) {
        if (s->sc.cls[s->senders[i].cls].sasl)
            sim_login(s, name, sizeof(name), i);
        else
            sim_format_ip(name, sizeof(name), s->senders[i].ip);
        if (cp_identity_lookup(cfg, name, strlen(name), &id) == 0)
            add_identity(t, &id, i, false);
    }
    for (uint32_t z = 0; z < s->nzombies; z++) {
        if (s->sc.inf[s->zombies[z].inf].kind != SIM_UNAUTH)
            continue;
        sim_format_ip(name, sizeof(name), s->zombies[z].ip);
        if (cp_identity_lookup(cfg, name, strlen(name), &id) == 0)
            add_identity(t, &id, z, true);
    }
}

void
sim_truth_fini(struct sim_truth *t)
{
    if (t->map.ents == NULL)
        return;
    HMAP_FOREACH(&t->map, i)
    free(t->map.ents[i].val);
    hmap_fini(&t->map);
}

static void
raise(uint8_t *worst, uint8_t r)
{
    if (r > *worst)
        *worst = r;
}

/* Any of the logins [first, first + n) never infected? */
static bool
names_legit(const struct sim *s, uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n; i++)
        if (!(s->senders[i].flags & SIM_INFECTED))
            return true;
    return false;
}

static void
explain(struct sim_truth *t, const struct cp_decision *d, int64_t now_ms)
{
    struct cp_account_ref ref;
    char why[400] = "no evidence", ts[32], key[CP_KEY_MAX];

    if (t->store->ops->account(t->store, d->id.dkey, d->id.dkeylen, false,
                               false, &ref) &&
        ref.ev != NULL)
        cp_evidence_explain(ref.ev, cp_class_det(t->cfg, d->id.cls), now_ms,
                            why, sizeof(why));
    cp_format_time(ts, sizeof(ts), now_ms);
    snprintf(key, sizeof(key), "%.*s", (int)d->id.dkeylen, d->id.dkey);
    fprintf(t->explain, "%s %s (legitimate, %s): %s -> %s: %s\n", ts, key,
            t->cause ? t->cause : "?",
            cp_state_name((enum cp_state)d->prev_state),
            cp_state_name((enum cp_state)d->state), why);
}

void
sim_truth_transition(void *arg, const struct cp_decision *d,
                     const struct cp_event *ev, int64_t now_ms)
{
    struct sim_truth *t = arg;
    struct sim *s = t->s;
    const struct truth_key *k;
    uint8_t r = (uint8_t)cp_state_rank((enum cp_state)d->state);

    (void)ev;
    if (now_ms < s->sc.start_ms) /* the history of a warm start */
        return;
    k = hmap_get(&t->map, hmap_hash(d->id.dkey, d->id.dkeylen), d->id.dkey,
                 d->id.dkeylen, key_eq);
    if (k == NULL)
        return;
    if (k->zombie) {
        raise(&s->zombies[k->first].worst, r);
        return;
    }
    for (uint32_t i = k->first; i < k->first + k->n; i++)
        raise(&s->worst[i], r);
    if (t->explain != NULL && r >= SIM_RANK_THROTTLED &&
        names_legit(s, k->first, k->n))
        explain(t, d, now_ms);
}
