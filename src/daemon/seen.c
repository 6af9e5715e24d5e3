/*
 * seen.c — for the accounts under suspicion, the logins, client addresses
 * and HELO names their mail came with (each with a count and the first and
 * last time), so that `chokepoint show ACCOUNT` can tell the abuse desk
 * which computers and which passwords to look at. An account is noted when
 * a decision about it is notable (see daemon_log_decision), has evidence,
 * or its state is not NORMAL; the SEEN_ACCOUNTS most recently noted are
 * kept (oldest evicted), SEEN_PER values of each kind per account (the
 * least recently seen replaced, and counted as "more"). In memory only: it
 * starts empty at every start, like the ring of recent decisions.
 *
 * Thread: the loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"
#include "util/agemap.h"
#include "util/xalloc.h"

struct seen_acct {
    struct agemap_ent ent;
    char key[CP_KEY_MAX];
    struct seen_list lists[SEEN_KINDS];
};

struct seen {
    struct agemap m;
};

struct seen *
seen_new(void)
{
    struct seen *s = xcalloc(1, sizeof(*s));

    agemap_init(&s->m, 1024);
    return s;
}

void
seen_free(struct seen *s)
{
    if (s == NULL)
        return;
    while (s->m.oldest != NULL) {
        struct agemap_ent *e = s->m.oldest;

        agemap_del(&s->m, e);
        free(agemap_entry(e, struct seen_acct, ent));
    }
    agemap_fini(&s->m);
    free(s);
}

/* One value (cut to SEEN_LEN - 1 bytes) seen once more at now_ms. */
static void
note(struct seen_list *l, struct str v, int64_t now_ms)
{
    size_t n = v.len < SEEN_LEN - 1 ? v.len : SEEN_LEN - 1;
    struct seen_item *it = NULL;

    if (v.p == NULL || v.len == 0)
        return;
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->v[i].s) == n && memcmp(l->v[i].s, v.p, n) == 0) {
            it = &l->v[i];
            break;
        }
    if (it == NULL) {
        if (l->n < SEEN_PER) {
            it = &l->v[l->n++];
        } else { /* replace the least recently seen */
            it = &l->v[0];
            for (size_t i = 1; i < l->n; i++)
                if (l->v[i].last_ms < it->last_ms)
                    it = &l->v[i];
            l->more++;
        }
        memset(it, 0, sizeof(*it));
        memcpy(it->s, v.p, n);
        it->first_ms = now_ms;
    }
    it->count++;
    it->last_ms = now_ms;
}

void
seen_note(struct seen *s, const char *key, size_t klen,
          const struct cp_event *ev, int64_t now_ms)
{
    struct agemap_ent *e;
    struct seen_acct *a;
    /* the list is in time order: a clock step back must not break it */
    int64_t t = s->m.newest && s->m.newest->t_ms > now_ms ? s->m.newest->t_ms
                                                          : now_ms;

    if (klen == 0 || klen >= CP_KEY_MAX)
        return;
    e = agemap_get(&s->m, key, klen);
    if (e != NULL) {
        a = agemap_entry(e, struct seen_acct, ent);
        agemap_touch(&s->m, e, t);
    } else {
        if (agemap_count(&s->m) >= SEEN_ACCOUNTS) {
            e = s->m.oldest;
            agemap_del(&s->m, e);
            a = agemap_entry(e, struct seen_acct, ent);
        } else {
            a = xmalloc(sizeof(*a));
        }
        memset(a, 0, sizeof(*a));
        memcpy(a->key, key, klen);
        a->ent.key = a->key;
        a->ent.klen = klen;
        a->ent.t_ms = t;
        agemap_put(&s->m, &a->ent);
    }
    note(&a->lists[SEEN_LOGIN], ev->sasl_username, now_ms);
    note(&a->lists[SEEN_CLIENT], ev->client_address, now_ms);
    note(&a->lists[SEEN_HELO], ev->helo_name, now_ms);
}

const struct seen_list *
seen_get(const struct seen *s, const char *key, size_t klen,
         enum seen_kind kind)
{
    struct agemap_ent *e = agemap_get(&s->m, key, klen);

    return e ? &agemap_entry(e, struct seen_acct, ent)->lists[kind] : NULL;
}
