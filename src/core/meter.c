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

/*
 * Recipient domains: CP_DOM_RING entries of a 28-bit hash and a 4-bit
 * use count. A new domain takes the least used entry (the oldest of
 * equals, by dom_next), so the domains an account mails again and again
 * (the big mailbox providers of a newsletter's list) stay known while
 * one-off ones come and go: "new" estimates distinct domains far better
 * than a ring of the most recent ones, in the same 32 bytes.
 */
#define DOM_COUNT 0xfu

static int
domain_find(const struct cp_counters *c, uint32_t h)
{
    for (int i = 0; i < CP_DOM_RING; i++)
        if (c->dom[i] != 0 && (c->dom[i] & ~DOM_COUNT) == (h & ~DOM_COUNT))
            return i;
    return -1;
}

static void
domain_use(struct cp_counters *c, uint32_t h, int at)
{
    int low = c->dom_next % CP_DOM_RING;

    if (at >= 0) {
        if ((c->dom[at] & DOM_COUNT) == DOM_COUNT) /* age all: halve */
            for (int i = 0; i < CP_DOM_RING; i++)
                c->dom[i] = (c->dom[i] & ~DOM_COUNT) |
                            ((c->dom[i] & DOM_COUNT) >> 1);
        c->dom[at]++;
        return;
    }
    for (int k = 1; k < CP_DOM_RING; k++) {
        int i = (c->dom_next + k) % CP_DOM_RING;

        if ((c->dom[i] & DOM_COUNT) < (c->dom[low] & DOM_COUNT))
            low = i;
    }
    c->dom[low] = (h & ~DOM_COUNT) | 1;
    c->dom_next = (uint8_t)((low + 1) % CP_DOM_RING);
}

void
cp_meter_apply(struct cp_counters *c, const struct cp_meter_op *op,
               struct cp_meter_result *res)
{
    float lv[CP_MAX_SLOTS];
    uint32_t used = 0;
    int dom;

    memset(res, 0, sizeof(*res));
    res->denied = -1;
    release(c, op);
    if (op->nrules == 0)
        return;
    dom = op->domain_hash != 0 ? domain_find(c, op->domain_hash) : -1;
    res->new_domain = op->domain_hash != 0 && dom < 0;
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
    if (op->domain_hash != 0)
        domain_use(c, op->domain_hash, dom);
}
