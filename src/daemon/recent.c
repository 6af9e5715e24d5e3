/*
 * recent.c — the last RECENT_MAX notable decisions (deferrals, refusals,
 * holds, tags, shadow "would have", state changes) of all accounts, in a
 * ring in memory, so that `chokepoint show ACCOUNT` can list an account's
 * recent decisions without a per-account cost. Entries name their account
 * by a 64-bit hash of its key (a collision would show another account's
 * line: about one in 10^15 for the ring's size). The decision log is the
 * durable record; the ring starts empty at every start.
 *
 * Thread: the loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"
#include "util/hmap.h"
#include "util/xalloc.h"

struct recent {
    struct recent_entry *e;
    size_t cap, next, n;
};

struct recent *
recent_new(size_t cap)
{
    struct recent *r = xcalloc(1, sizeof(*r));

    r->e = xcalloc(cap, sizeof(*r->e));
    r->cap = cap;
    return r;
}

void
recent_free(struct recent *r)
{
    if (r == NULL)
        return;
    free(r->e);
    free(r);
}

void
recent_add(struct recent *r, const struct cp_decision *d, int64_t now_ms)
{
    struct recent_entry *e = &r->e[r->next];
    char text[CP_TEXT_MAX];

    memset(e, 0, sizeof(*e));
    e->t_ms = now_ms;
    e->key_hash = hmap_hash(d->id.key, d->id.keylen);
    e->dkey_hash = hmap_hash(d->id.dkey, d->id.dkeylen);
    e->stage = (uint8_t)d->stage;
    e->action = (uint8_t)d->action;
    e->verdict = (uint8_t)d->verdict;
    e->shadow = d->shadow;
    e->state = d->state;
    if (d->has_rule)
        memcpy(e->rule, d->rule.name, sizeof(e->rule));
    else if (d->by_state)
        memcpy(e->rule, "state", sizeof("state"));
    cp_reply_text(d, text, sizeof(text));
    if (strlen(text) < sizeof(e->text)) {
        memcpy(e->text, text, strlen(text) + 1);
    } else { /* cut at a word, and say so */
        size_t n = sizeof(e->text) - 4;

        while (n > 0 && text[n] != ' ')
            n--;
        if (n == 0)
            n = sizeof(e->text) - 4;
        memcpy(e->text, text, n);
        memcpy(e->text + n, "...", 4);
    }
    r->next = (r->next + 1) % r->cap;
    if (r->n < r->cap)
        r->n++;
}

size_t
recent_each(const struct recent *r, const char *key, size_t klen,
            size_t limit, recent_fn fn, void *arg)
{
    uint64_t h = hmap_hash(key, klen);
    size_t found = 0;

    for (size_t i = 1; i <= r->n && found < limit; i++) {
        const struct recent_entry *e = &r->e[(r->next + r->cap - i) % r->cap];

        if (e->dkey_hash == h || e->key_hash == h) {
            fn(arg, e);
            found++;
        }
    }
    return found;
}
