/*
 * meter.c — the leaky-bucket arithmetic of one metering operation.
 *
 * Each counter slot holds a level in units (messages, recipients, bytes,
 * new domains). A rule with `max` M over `window` W drains the level at M/W
 * per unit of time and admits a cost c when level + c <= M. From idle, M
 * units pass at once; sustained, M per W (GCRA-equivalent; doc/design.md).
 * Levels are limit-free, so a changed limit keeps the account's history.
 */
#include "core/store.h"

#include <string.h>

double
cp_meter_level_now(const struct cp_counters *c, unsigned slot, double rate,
                   int64_t now_ms)
{
    double dt = (double)(now_ms - c->t_ms);
    double l = (double)c->level[slot] - (dt > 0 ? dt * rate : 0);

    return l > 0 ? l : 0;
}

static void
release(struct cp_counters *c, const struct cp_meter_op *op)
{
    for (size_t s = 0; s < op->nslots && s < CP_MAX_SLOTS; s++) {
        double r = op->release[op->slots[s].metric];

        if (r > 0)
            c->level[s] = c->level[s] > r ? (float)(c->level[s] - r) : 0.0f;
    }
}

static bool
domain_known(const struct cp_counters *c, uint32_t h)
{
    for (size_t i = 0; i < CP_DOM_RING; i++)
        if (c->dom[i] == h)
            return true;
    return false;
}

void
cp_meter_apply(struct cp_counters *c, const struct cp_meter_op *op,
               struct cp_meter_result *res)
{
    float lv[CP_MAX_SLOTS];
    uint32_t used = 0;

    memset(res, 0, sizeof(*res));
    res->denied = -1;
    release(c, op);
    if (op->nrules == 0)
        return;
    res->new_domain = op->domain_hash != 0 && !domain_known(c, op->domain_hash);
    for (size_t i = 0; i < op->nrules; i++) {
        const struct cp_meter_rule *r = &op->rule[i];

        res->level[i] = cp_meter_level_now(c, r->slot, r->rate, op->now_ms);
        res->cost[i] = r->domain ? (res->new_domain ? 1 : 0) : r->cost;
        lv[r->slot] = (float)res->level[i];
        used |= 1u << r->slot;
        if (!r->nocheck && res->cost[i] > 0 &&
            res->level[i] + res->cost[i] > r->cap + 1e-6) {
            res->over |= 1u << i;
            if (r->enforce && res->denied < 0)
                res->denied = (int)i;
        }
    }
    for (size_t s = 0; s < CP_MAX_SLOTS; s++)
        c->level[s] = (used & (1u << s)) ? lv[s] : 0.0f;
    c->t_ms = op->now_ms;
    if (res->denied >= 0)
        return;
    for (size_t i = 0; i < op->nrules; i++)
        c->level[op->rule[i].slot] += (float)res->cost[i];
    if (res->new_domain) {
        c->dom[c->dom_next] = op->domain_hash;
        c->dom_next = (uint8_t)((c->dom_next + 1) % CP_DOM_RING);
    }
}
