/* memstore.c — see memstore.h. */
#include "store/memstore.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/evidence.h"
#include "core/lifecycle.h"
#include "util/msg.h"
#include "util/xalloc.h"

#define DIRTY 1     /* changed since the last collect */
#define EV_STORED 2 /* the store has evidence of it (to delete when gone) */

struct acct {
    struct cp_counters c;
    struct cp_evidence *ev; /* allocated while the account is active */
    uint8_t dirty;          /* DIRTY | EV_STORED */
    uint8_t keylen;
    char key[]; /* not NUL-terminated */
};

/* Remember that `a` changed since the last checkpoint. */
static void
mark_dirty(struct memstore *ms, struct acct *a)
{
    if ((a->dirty & DIRTY) || !ms->track_dirty)
        return;
    if (ms->dirty == ms->dirty_cap) {
        ms->dirty_cap = ms->dirty_cap ? ms->dirty_cap * 2 : 1024;
        ms->dirty_list = xreallocarray(ms->dirty_list, ms->dirty_cap,
                                       sizeof(*ms->dirty_list));
    }
    ms->dirty_list[ms->dirty++] = a;
    a->dirty |= DIRTY;
}

static bool
acct_eq(const void *val, const void *key, size_t len)
{
    const struct acct *a = val;

    return a->keylen == len && memcmp(a->key, key, len) == 0;
}

static struct acct *
acct_get(struct memstore *ms, const char *key, size_t len, bool create,
         bool *created)
{
    uint64_t h;
    struct acct *a = ms->last;

    *created = false;
    /* A decision looks its account up twice (state, then meter): the
     * second finds it here. Accounts are never freed while the store
     * lives, so the pointer stays valid. */
    if (a != NULL && acct_eq(a, key, len))
        return a;
    h = hmap_hash(key, len);
    a = hmap_get(&ms->accts, h, key, len, acct_eq);
    if (a != NULL || !create) {
        if (a != NULL)
            ms->last = a;
        return a;
    }
    if (len == 0 || len >= CP_KEY_MAX)
        msg_panic("memstore: bad key length %zu", len);
    a = xcalloc(1, sizeof(*a) + len);
    a->keylen = (uint8_t)len;
    memcpy(a->key, key, len);
    hmap_put(&ms->accts, h, a);
    ms->key_bytes += len;
    *created = true;
    ms->last = a;
    return a;
}

static void
ms_meter(struct cp_store *st, const struct cp_meter_op *op,
         struct cp_meter_result *res)
{
    struct memstore *ms = (struct memstore *)st;
    bool created;
    struct acct *a = acct_get(ms, op->key, op->keylen, op->nrules > 0,
                              &created);

    if (a == NULL) { /* a release for an account that is gone */
        memset(res, 0, sizeof(*res));
        res->denied = -1;
        return;
    }
    cp_meter_apply(&a->c, op, res);
    res->created = created;
    mark_dirty(ms, a);
}

static bool
ms_peek(struct cp_store *st, const char *key, size_t len,
        struct cp_counters *out)
{
    struct memstore *ms = (struct memstore *)st;
    bool created;
    struct acct *a = acct_get(ms, key, len, false, &created);

    if (a == NULL)
        return false;
    *out = a->c;
    return true;
}

static bool
ms_account(struct cp_store *st, const char *key, size_t len, bool create,
           bool evidence, struct cp_account_ref *out)
{
    struct memstore *ms = (struct memstore *)st;
    bool created;
    struct acct *a = acct_get(ms, key, len, create, &created);

    if (a == NULL)
        return false;
    if (evidence && a->ev == NULL) {
        a->ev = xcalloc(1, sizeof(*a->ev));
        ms->evidence++;
    }
    if (create || evidence)
        mark_dirty(ms, a);
    out->c = &a->c;
    out->ev = a->ev;
    return true;
}

static size_t
ms_count(struct cp_store *st)
{
    return ((struct memstore *)st)->accts.count;
}

static size_t
ms_bytes(struct cp_store *st)
{
    struct memstore *ms = (struct memstore *)st;

    /* malloc rounds each allocation up to 16 bytes plus an 8-byte header */
    return hmap_bytes(&ms->accts) +
           ms->accts.count * (((sizeof(struct acct) + 8 + 15) / 16) * 16) +
           ms->key_bytes +
           ms->evidence * (((sizeof(struct cp_evidence) + 8 + 15) / 16) * 16);
}

static const struct cp_store_ops memstore_ops = {
    .meter = ms_meter,
    .peek = ms_peek,
    .account = ms_account,
    .count = ms_count,
    .bytes = ms_bytes,
};

struct memstore *
memstore_new(size_t expected)
{
    struct memstore *ms = xcalloc(1, sizeof(*ms));

    ms->base.ops = &memstore_ops;
    ms->track_dirty = true;
    hmap_init(&ms->accts, expected);
    sb_init(&ms->gone);
    return ms;
}

void
memstore_free(struct memstore *ms)
{
    if (ms == NULL)
        return;
    HMAP_FOREACH(&ms->accts, i)
    {
        struct acct *a = ms->accts.ents[i].val;

        free(a->ev);
        free(a);
    }
    hmap_fini(&ms->accts);
    free(ms->dirty_list);
    sb_fini(&ms->gone);
    free(ms);
}

void
memstore_restore(struct memstore *ms, const char *key, size_t len,
                 const struct cp_counters *c)
{
    bool created;
    struct acct *a = acct_get(ms, key, len, true, &created);

    a->c = *c;
}

/* Does `a`'s evidence go with this checkpoint? */
static bool
evidence_wanted(const struct acct *a, const struct ckpt_ev_policy *p)
{
    if (a->ev == NULL)
        return false;
    if (p->all || a->c.state != 0)
        return true;
    /* fading only brings a score towards 0: most accounts are below
     * before it, and need no exp2 per checkpoint */
    if (p->min_score > 0 && a->ev->score < p->min_score)
        return false;
    return cp_evidence_score(a->ev, p->det, p->now_ms) >= p->min_score;
}

static void
batch_add(struct ckpt_batch *b, struct acct *a, const struct ckpt_ev_policy *p)
{
    struct ckpt_record *r;

    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 1024;
        b->rec = xreallocarray(b->rec, b->cap, sizeof(*b->rec));
    }
    r = &b->rec[b->n++];
    r->key_off = b->keys.len;
    r->keylen = a->keylen;
    r->c = a->c;
    r->ev = -1;
    r->ev_delete = false;
    r->gone = false;
    sb_append(&b->keys, a->key, a->keylen);
    if (p == NULL || p->det == NULL)
        return;
    if (evidence_wanted(a, p)) {
        if (b->nev == b->capev) {
            b->capev = b->capev ? b->capev * 2 : 64;
            b->ev = xreallocarray(b->ev, b->capev, sizeof(*b->ev));
        }
        b->ev[b->nev] = *a->ev;
        r->ev = (int32_t)b->nev++;
        a->dirty |= EV_STORED;
    } else if (a->dirty & EV_STORED) {
        /* faded, released or swept: the stored copy must not come back */
        r->ev_delete = true;
        a->dirty &= (uint8_t)~EV_STORED;
    }
}

void
memstore_collect_dirty(struct memstore *ms, struct ckpt_batch *b,
                       const struct ckpt_ev_policy *p, size_t max)
{
    b->n = 0;
    b->nev = 0;
    sb_reset(&b->keys);
    /* evicted accounts first: their rows go */
    for (size_t off = 0; off < ms->gone.len;) {
        size_t len = (unsigned char)ms->gone.data[off];
        struct ckpt_record *r;

        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 1024;
            b->rec = xreallocarray(b->rec, b->cap, sizeof(*b->rec));
        }
        r = &b->rec[b->n++];
        memset(r, 0, sizeof(*r));
        r->key_off = b->keys.len;
        r->keylen = len;
        r->ev = -1;
        r->gone = true;
        sb_append(&b->keys, ms->gone.data + off + 1, len);
        off += 1 + len;
    }
    sb_reset(&ms->gone);
    ms->ngone = 0;
    /* from the end: what is left stays a prefix of the list */
    while (ms->dirty > 0 && b->n < max) {
        struct acct *a = ms->dirty_list[--ms->dirty];

        batch_add(b, a, p);
        a->dirty &= (uint8_t)~DIRTY;
    }
}

void
memstore_mark_evidence_dirty(struct memstore *ms)
{
    HMAP_FOREACH(&ms->accts, i)
    {
        struct acct *a = ms->accts.ents[i].val;

        if (a->ev != NULL || (a->dirty & EV_STORED))
            mark_dirty(ms, a);
    }
}

bool
memstore_restore_evidence(struct memstore *ms, const char *key, size_t len,
                          const struct cp_evidence *ev)
{
    bool created;
    struct acct *a = acct_get(ms, key, len, false, &created);

    if (a == NULL)
        return false;
    if (a->ev == NULL) {
        a->ev = xmalloc(sizeof(*a->ev));
        ms->evidence++;
    }
    *a->ev = *ev;
    a->dirty |= EV_STORED;
    return true;
}

void
memstore_mark_dirty(struct memstore *ms, const struct ckpt_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        bool created;
        struct acct *a = acct_get(ms, b->keys.data + b->rec[i].key_off,
                                  b->rec[i].keylen, false, &created);

        if (b->rec[i].gone && a == NULL) { /* its rows: next time */
            unsigned char len = (unsigned char)b->rec[i].keylen;

            sb_append(&ms->gone, (const char *)&len, 1);
            sb_append(&ms->gone, b->keys.data + b->rec[i].key_off, len);
            ms->ngone++;
            continue;
        }
        if (a == NULL || b->rec[i].gone)
            continue;
        mark_dirty(ms, a);
        if (b->rec[i].ev_delete)
            a->dirty |= EV_STORED; /* still there: delete it next time */
    }
}

void
memstore_remap(struct memstore *ms, const struct cp_slot *from, size_t nfrom,
               const struct cp_slot *to, size_t nto)
{
    int map[CP_MAX_SLOTS];

    for (size_t j = 0; j < nto; j++) {
        map[j] = -1;
        for (size_t i = 0; i < nfrom; i++)
            if (strcmp(from[i].name, to[j].name) == 0)
                map[j] = (int)i;
    }
    HMAP_FOREACH(&ms->accts, k)
    {
        struct acct *a = ms->accts.ents[k].val;
        float old[CP_MAX_SLOTS];

        memcpy(old, a->c.level, sizeof(old));
        memset(a->c.level, 0, sizeof(a->c.level));
        for (size_t j = 0; j < nto; j++)
            if (map[j] >= 0)
                a->c.level[j] = old[map[j]];
        mark_dirty(ms, a);
    }
}

size_t
memstore_sweep(struct memstore *ms, const struct cp_detection *det,
               int64_t now_ms, int64_t idle_ms)
{
    size_t n = 0;

    HMAP_FOREACH(&ms->accts, i)
    {
        struct acct *a = ms->accts.ents[i].val;

        if (a->ev == NULL || now_ms - a->ev->t_ms < idle_ms ||
            fabs(cp_evidence_score(a->ev, det, now_ms)) > 0.5)
            continue;
        free(a->ev);
        a->ev = NULL;
        ms->evidence--;
        if (a->dirty & EV_STORED)
            mark_dirty(ms, a); /* the next checkpoint deletes its copy */
        n++;
    }
    return n;
}

static bool
evictable(const struct memstore *ms, const struct acct *a,
          const struct cp_detection *det, int64_t now_ms, int64_t idle_ms)
{
    if (a == ms->last || a->c.state != 0 ||
        (a->dirty & (DIRTY | EV_STORED)) != 0 ||
        now_ms - a->c.t_ms < idle_ms)
        return false;
    /* evidence that says nothing either way: only habits, relearnt */
    return a->ev == NULL ||
           (now_ms - a->ev->t_ms >= idle_ms &&
            fabs(cp_evidence_score(a->ev, det, now_ms)) <= 0.5);
}

size_t
memstore_evict(struct memstore *ms, const struct cp_detection *det,
               size_t target, int64_t now_ms, int64_t idle_ms)
{
    struct acct **out;
    size_t n = 0, want;

    if (ms->accts.count <= target)
        return 0;
    want = ms->accts.count - target;
    out = xreallocarray(NULL, want, sizeof(*out));
    /* collect first: deleting moves entries under the iteration */
    HMAP_FOREACH(&ms->accts, i)
    {
        struct acct *a = ms->accts.ents[i].val;

        if (n < want && evictable(ms, a, det, now_ms, idle_ms))
            out[n++] = a;
    }
    for (size_t i = 0; i < n; i++) {
        struct acct *a = out[i];
        unsigned char len = a->keylen;

        hmap_del(&ms->accts, hmap_hash(a->key, a->keylen), a->key, a->keylen,
                 acct_eq);
        ms->key_bytes -= a->keylen;
        if (ms->track_dirty) {
            sb_append(&ms->gone, (const char *)&len, 1);
            sb_append(&ms->gone, a->key, len);
            ms->ngone++;
        }
        if (a->ev != NULL) {
            free(a->ev);
            ms->evidence--;
        }
        free(a);
    }
    free(out);
    ms->evicted += n;
    return n;
}

static double
top_rank(int state, double score)
{
    return cp_state_urgency((enum cp_state)state) * 1e9 + score;
}

size_t
memstore_top(struct memstore *ms, const struct cp_detection *det,
             int64_t now_ms, struct memstore_top_row *rows, size_t n)
{
    size_t found = 0;

    if (n == 0)
        return 0;
    HMAP_FOREACH(&ms->accts, i)
    {
        struct acct *a = ms->accts.ents[i].val;
        double score = a->ev ? cp_evidence_score(a->ev, det, now_ms) : 0;
        /* rank: by how urgent the state is, then by score */
        double rank = top_rank(a->c.state, score);
        size_t at;

        /* NORMAL and no evidence either way (a customer's record of the
         * habits its logins share, a quiet account): nothing to look at */
        if (a->c.state == 0 && (a->ev == NULL || fabs(score) < 0.05))
            continue;
        if (found == n &&
            rank <= top_rank(rows[n - 1].state, rows[n - 1].score))
            continue;
        at = found < n ? found++ : n - 1;
        while (at > 0 &&
               rank > top_rank(rows[at - 1].state, rows[at - 1].score)) {
            rows[at] = rows[at - 1];
            at--;
        }
        memcpy(rows[at].key, a->key, a->keylen);
        rows[at].keylen = a->keylen;
        rows[at].score = score;
        rows[at].state = a->c.state;
    }
    return found;
}

void
ckpt_batch_init(struct ckpt_batch *b)
{
    memset(b, 0, sizeof(*b));
    sb_init(&b->keys);
}

void
ckpt_batch_fini(struct ckpt_batch *b)
{
    sb_fini(&b->keys);
    free(b->rec);
    free(b->ev);
    memset(b, 0, sizeof(*b));
}

void
ckpt_batch_set_slots(struct ckpt_batch *b, const struct cp_slot *slots,
                     size_t n)
{
    size_t off = 0;

    b->slots[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(slots[i].name);

        if (off + l + 2 > sizeof(b->slots))
            msg_panic("slot names too long");
        if (i > 0)
            b->slots[off++] = ',';
        memcpy(b->slots + off, slots[i].name, l + 1);
        off += l;
    }
}

void
memstore_learned(struct memstore *ms)
{
    HMAP_FOREACH(&ms->accts, i)
    {
        struct acct *a = ms->accts.ents[i].val;

        memset(&a->c, 0, sizeof(a->c));
        if (a->ev != NULL)
            cp_evidence_habits_only(a->ev);
        mark_dirty(ms, a);
    }
}

void
memstore_each_evidence(struct memstore *ms,
                       void (*fn)(void *arg, const char *key, size_t keylen,
                                  const struct cp_evidence *ev),
                       void *arg)
{
    HMAP_FOREACH(&ms->accts, i)
    {
        const struct acct *a = ms->accts.ents[i].val;

        if (a->ev != NULL)
            fn(arg, a->key, a->keylen, a->ev);
    }
}

void
memstore_each_state(struct memstore *ms,
                    void (*fn)(void *arg, const char *key, size_t keylen,
                               const struct cp_counters *c),
                    void *arg)
{
    HMAP_FOREACH(&ms->accts, i)
    {
        const struct acct *a = ms->accts.ents[i].val;

        if (a->c.state != 0)
            fn(arg, a->key, a->keylen, &a->c);
    }
}
