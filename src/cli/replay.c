/*
 * replay.c — `chokepoint replay MAILLOG`: run a real Postfix mail.log
 * through the engine, in shadow mode, on the log's own clock, and report
 * who would have been deferred, held or rejected, when and why.
 *
 *   chokepoint replay MAILLOG|- [--config FILE] [--json] [--no-map]
 *                    [--year YYYY] [--instance NAME]... [--list N]
 *
 * Reconstruction (doc/replay.md has the full rules):
 *   smtpd "QID: client=…, sasl_username=…"  a submission (in-flight table)
 *   qmgr  "QID: from=<…>, size=N, nrcpt=N"  it becomes a message; it waits
 *         in a reorder buffer (min-heap by qmgr time) for its recipients
 *   smtp/lmtp/… "QID: to=<…>, status=…"     its recipients
 *   qmgr  "QID: removed", all nrcpt seen, or REPLAY_REORDER_MS of log time
 *         → driven through the engine in time order: one RCPT per
 *         recipient (unknown ones padded), DATA, END-OF-MESSAGE, then
 *         its delivery outcomes (bounces, refusals) as evidence.
 * Mail that did not come through smtpd (pickup, bounce notifications,
 * content-filter re-injection) is skipped and counted.
 *
 * Memory does not grow with the log: the in-flight table holds at most
 * REPLAY_MAX_INFLIGHT queue ids (idle ones age out after
 * REPLAY_INFLIGHT_AGE_MS of log time), the reorder buffer at most
 * REPLAY_MAX_REORDER messages, each with at most REPLAY_MAX_RCPT_BYTES of
 * recipients; the report keeps at most --list decisions. What grows is one
 * entry per distinct account (the engine's store grows the same way).
 *
 * Trust: the log is operator input that carries client-controlled text;
 * it is only ever parsed (core/maillog.c) and shown escaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cli/cli.h"
#include "util/clock.h"
#include "cli/inproc.h"
#include "core/evidence.h"
#include "core/explain.h"
#include "core/lifecycle.h"
#include "core/maillog.h"
#include "store/sqlite.h"
#include "util/agemap.h"
#include "util/parse.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define REPLAY_DEFAULT_CONFIG "/etc/chokepoint/chokepoint.yaml"
#define REPLAY_MAX_INFLIGHT 100000     /* queue ids tracked at once */
#define REPLAY_INFLIGHT_AGE_MS 3600000 /* idle queue ids forgotten */
#define REPLAY_REORDER_MS 60000        /* wait for recipients */
#define REPLAY_MAX_REORDER 10000       /* messages waiting at once */
#define REPLAY_MAX_RCPT_BYTES 4096     /* recipients kept per message */
#define REPLAY_MAX_NRCPT 10000         /* RCPT requests per message */
#define REPLAY_MAX_FIELD 512           /* bytes of a login, sender... */
#define REPLAY_MAX_ACCOUNTS 1000000    /* then lumped together */
#define REPLAY_MAX_RULES 64            /* distinct rule names counted */
#define REPLAY_MAX_INSTANCES 8         /* --instance options */
#define REPLAY_DEFAULT_LIST 1000       /* decisions and accounts shown */
#define REPLAY_READ_BUF 65536
#define REPLAY_KEY_MAX (MAILLOG_MAX_LINE + 2) /* host instance qid */
#define REPLAY_OTHER_ACCOUNTS "(other accounts)"
#define REPLAY_MAX_CONNECTIONS 4096    /* smtpd processes tracked (TLS) */

/* Why a queue id is not a customer submission. */
enum rp_skip {
    SKIP_PICKUP,       /* sendmail/pickup: local submission */
    SKIP_NOTIFICATION, /* a bounce or delay notification */
    SKIP_REINJECTED,   /* came back from a content filter (orig_queue_id) */
    SKIP_INSTANCE,     /* an instance not selected with --instance */
    SKIP_NULL_SENDER,  /* from=<> without a submission: a bounce */
    SKIP_COUNT
};

static const char *const skip_names[SKIP_COUNT] = {
    "pickup", "notification", "reinjected", "other_instance", "null_sender"};

enum rp_state {
    RP_NEW,       /* just created by this line */
    RP_SUBMITTED, /* seen at smtpd, waiting for qmgr */
    RP_SKIPPED,   /* not a customer submission (skip_why) */
    RP_QUEUED,    /* in the reorder buffer */
    RP_DONE,      /* replayed, or unmatched: later lines are ignored */
};

struct rp_entry {
    /* key: host, service, queue id (REPLAY_KEY_MAX); t_ms: the log
     * clock at the last line that mentioned it */
    struct agemap_ent age;
    char *key;
    enum rp_state state;
    enum rp_skip skip_why;
    bool in_heap, removed;
    char qid[MAILLOG_MAX_QUEUE_ID + 1];
    char *login, *method, *client_addr, *client_name, *sender;
    char *tls_proto, *tls_cipher; /* NULL: plaintext, or not logged */
    int64_t queued_ms;
    uint64_t seq, size, nrcpt;
    char *rcpts; /* NUL-separated, at most REPLAY_MAX_RCPT_BYTES */
    size_t rlen, rcap;
    uint64_t nknown; /* distinct recipients seen (kept or not) */
    /* delivery outcomes seen: per line, the outcome (one byte) and the
     * recipient, NUL-terminated, within REPLAY_MAX_RCPT_BYTES; beyond,
     * counted without the recipient */
    char *outs;
    size_t olen;
    uint32_t fate[CP_OUT_DEFERRED_POLICY + 1];
};

/* An smtpd process's current connection: the TLS stack its client
 * negotiated (the submission's client= line comes from the same pid). */
struct rp_conn {
    struct agemap_ent age; /* key: host, service, pid, in buf */
    char proto[32], cipher[96]; /* "": plaintext */
    char buf[];
};

#define CONN(ent) agemap_entry((ent), struct rp_conn, age)

/* A state change of an account, with the evidence that made it. */
struct rp_transition {
    int64_t t_ms;
    uint8_t from, to;           /* enum cp_state */
    float score;
    float share[CP_SIG_COUNT];  /* each signal's share of the score */
    uint16_t times[CP_SIG_COUNT];
};

/* An account whose state the engine keeps: a login, or the client
 * network of mail without one (identity's dkey); its limits are its
 * customer's (limits_key). */
struct rp_account {
    char *key;
    size_t keylen;
    char *limits_key;
    const char *customer, *cls; /* in the config */
    char *login;                /* the first login seen, if any */
    uint64_t messages, recipients, would_total;
    uint64_t would[CP_ACT_COUNT];
    int64_t first_ms, last_ms; /* first and last would-be decision */
    uint8_t worst;             /* the worst state it reached */
    struct rp_transition *tr;
    size_t ntr;
};

struct rp_listed {
    int64_t t_ms;
    char qid[MAILLOG_MAX_QUEUE_ID + 1];
    char *key, *account, *login, *client, *sender, *text;
    uint8_t state; /* the account's state then (enum cp_state) */
    const char *customer;
    enum cp_stage stage;
    enum cp_action verdict;
    char rule[CP_RULE_NAME_MAX];
    double value, cost, limit, retry_s;
    uint64_t nrcpt, over;
};

struct rp_rulecount {
    char name[CP_RULE_NAME_MAX];
    uint64_t n;
};

struct rp_counts {
    uint64_t lines, too_long, kinds[MAILLOG_KIND_COUNT];
    uint64_t submissions, messages, recipients, padded, nrcpt_capped;
    uint64_t no_qmgr, qmgr_unmatched, evicted, deliveries_unmatched;
    uint64_t qmgr_repeat, rejects, rejected_by_postfix, no_identity;
    uint64_t skipped[SKIP_COUNT];
    uint64_t would_total, would[CP_ACT_COUNT], shadow_rule;
    uint64_t reorder_full;
};

#define REPLAY_MAX_FILES 256 /* logs on one command line */

struct rp_opts {
    const char *files[REPLAY_MAX_FILES]; /* oldest first (order_logs) */
    size_t nfiles;
    const char *file;   /* for the report: the first, or "N files" */
    const char *config, *map, *state;
    bool json, no_map;
    bool learn;         /* chokepoint learn: store habits, report little */
    int year;
    size_t list;
    const char *instances[REPLAY_MAX_INSTANCES];
    size_t ninstances;
};

struct replay {
    struct rp_opts o;
    struct inproc ip;
    struct maillog_ctx ctx;
    struct maillog_framer fr;
    struct agemap table; /* in flight: key → struct rp_entry, by age */
    struct rp_entry **heap;
    size_t nheap;
    uint64_t seq;
    bool have_clock;
    int64_t clock_ms, engine_ms, first_ms, last_ms;
    struct agemap conns;  /* host, service, pid → struct rp_conn */
    struct hmap accounts; /* key → struct rp_account */
    struct rp_account *other;
    struct rp_listed *listed;
    size_t nlisted;
    struct rp_rulecount rules[REPLAY_MAX_RULES + 1]; /* last: "(other)" */
    size_t nrules;
    struct rp_counts n;
    const char *cur_login; /* the login of the message being replayed */
    long state_accounts;   /* --state: accounts loaded */
    long learned;          /* learn: accounts stored */
    const char *state_path;
    char keybuf[REPLAY_KEY_MAX];
    double elapsed_s;
};

/* ---- small helpers ---- */

static char *
dup_field(struct str s)
{
    if (s.p == NULL)
        return NULL;
    return xmemdup0(s.p, s.len < REPLAY_MAX_FIELD ? s.len : REPLAY_MAX_FIELD);
}

static bool
account_eq(const void *val, const void *key, size_t len)
{
    const struct rp_account *a = val;

    return a->keylen == len && memcmp(a->key, key, len) == 0;
}

static int64_t
now_realtime_ms(void)
{
    return clock_wall_ms();
}

static double
now_mono_s(void)
{
    return (double)clock_mono_us() / 1e6;
}

/* ---- the in-flight table: queue ids by (host, instance, qid) ---- */

/* "host instance qid" into r->keybuf; returns its length. */
static size_t
make_key(struct replay *r, const struct maillog_event *ev,
         struct str qid)
{
    struct str parts[3] = {ev->host, ev->instance, qid};
    size_t n = 0;

    for (size_t i = 0; i < 3; i++) {
        if (parts[i].len > REPLAY_KEY_MAX - 1 - n)
            break; /* cannot happen: the parts are in one bounded line */
        memcpy(r->keybuf + n, parts[i].p, parts[i].len);
        n += parts[i].len;
        if (i < 2 && n < REPLAY_KEY_MAX)
            r->keybuf[n++] = ' ';
    }
    return n;
}

#define ENTRY(ent) agemap_entry((ent), struct rp_entry, age)

static struct rp_entry *
table_get(struct replay *r, size_t keylen)
{
    struct agemap_ent *a = agemap_get(&r->table, r->keybuf, keylen);

    return a ? ENTRY(a) : NULL;
}

static struct rp_entry *
oldest(const struct replay *r)
{
    return r->table.oldest ? ENTRY(r->table.oldest) : NULL;
}

static void
entry_clear(struct rp_entry *e)
{
    free(e->login);
    free(e->method);
    free(e->client_addr);
    free(e->client_name);
    free(e->sender);
    free(e->tls_proto);
    free(e->tls_cipher);
    e->login = e->method = e->client_addr = e->client_name = NULL;
    e->sender = e->tls_proto = e->tls_cipher = NULL;
    free(e->rcpts);
    e->rcpts = NULL;
    e->rlen = e->rcap = 0;
    free(e->outs);
    e->outs = NULL;
    e->olen = 0;
    memset(e->fate, 0, sizeof(e->fate));
    e->nknown = 0;
    e->removed = false;
}

static void
entry_free(struct replay *r, struct rp_entry *e)
{
    agemap_del(&r->table, &e->age);
    entry_clear(e);
    free(e->key);
    free(e);
}

static void heap_drain_through(struct replay *r, struct rp_entry *e);

/* Forget `e`; a submission that never reached qmgr is incomplete. */
static void
forget(struct replay *r, struct rp_entry *e, bool evicted)
{
    if (e->in_heap)
        heap_drain_through(r, e);
    if (e->state == RP_SUBMITTED) {
        r->n.no_qmgr++;
        if (evicted)
            r->n.evicted++;
    }
    entry_free(r, e);
}

static struct rp_entry *
table_add(struct replay *r, size_t keylen, struct str qid)
{
    struct rp_entry *e;

    while (agemap_count(&r->table) >= REPLAY_MAX_INFLIGHT &&
           r->table.oldest != NULL)
        forget(r, oldest(r), true);
    e = xcalloc(1, sizeof(*e));
    e->key = xmemdup0(r->keybuf, keylen);
    e->age.key = e->key;
    e->age.klen = keylen;
    e->age.t_ms = r->clock_ms;
    memcpy(e->qid, qid.p, qid.len); /* <= MAILLOG_MAX_QUEUE_ID */
    agemap_put(&r->table, &e->age);
    return e;
}

/* The entry for the event's queue id, created (empty) if `create`. */
static struct rp_entry *
lookup(struct replay *r, const struct maillog_event *ev, struct str qid,
       bool create)
{
    size_t keylen = make_key(r, ev, qid);
    struct rp_entry *e = table_get(r, keylen);

    if (e != NULL) /* a line mentioned it: it is the newest again */
        agemap_touch(&r->table, &e->age, r->clock_ms);
    else if (create)
        e = table_add(r, keylen, qid);
    return e;
}

static void
age_table(struct replay *r)
{
    while (r->table.oldest != NULL &&
           r->clock_ms - r->table.oldest->t_ms >= REPLAY_INFLIGHT_AGE_MS)
        forget(r, oldest(r), false);
}

/* ---- the reorder buffer: a min-heap by (qmgr time, arrival) ---- */

static bool
heap_less(const struct rp_entry *a, const struct rp_entry *b)
{
    return a->queued_ms != b->queued_ms ? a->queued_ms < b->queued_ms
                                        : a->seq < b->seq;
}

static void
heap_swap(struct replay *r, size_t i, size_t j)
{
    struct rp_entry *t = r->heap[i];

    r->heap[i] = r->heap[j];
    r->heap[j] = t;
}

static void
heap_push(struct replay *r, struct rp_entry *e)
{
    size_t i = r->nheap++;

    r->heap[i] = e;
    e->in_heap = true;
    while (i > 0 && heap_less(r->heap[i], r->heap[(i - 1) / 2])) {
        heap_swap(r, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static struct rp_entry *
heap_pop(struct replay *r)
{
    struct rp_entry *top = r->heap[0];
    size_t i = 0;

    r->heap[0] = r->heap[--r->nheap];
    for (;;) {
        size_t l = 2 * i + 1, m = i;

        if (l < r->nheap && heap_less(r->heap[l], r->heap[m]))
            m = l;
        if (l + 1 < r->nheap && heap_less(r->heap[l + 1], r->heap[m]))
            m = l + 1;
        if (m == i)
            break;
        heap_swap(r, i, m);
        i = m;
    }
    top->in_heap = false;
    return top;
}

static bool
ready(const struct replay *r, const struct rp_entry *e)
{
    return e->removed || (e->nrcpt > 0 && e->nknown >= e->nrcpt) ||
           r->clock_ms - e->queued_ms >= REPLAY_REORDER_MS;
}

static void drive(struct replay *r, struct rp_entry *e);

/* Replay the oldest waiting message; free it if Postfix removed it. */
static void
heap_drive_top(struct replay *r)
{
    struct rp_entry *e = heap_pop(r);

    drive(r, e);
    e->state = RP_DONE;
    if (e->removed)
        entry_free(r, e);
}

static void
heap_drain_ready(struct replay *r)
{
    while (r->nheap > 0 && ready(r, r->heap[0]))
        heap_drive_top(r);
}

/* Replay waiting messages in order until `e` has been replayed (it is
 * about to be forgotten or reused). */
static void
heap_drain_through(struct replay *r, struct rp_entry *e)
{
    bool keep = !e->removed;

    e->removed = false; /* heap_drive_top must not free it */
    while (e->in_heap)
        heap_drive_top(r);
    e->removed = !keep;
}

/* ---- the report's accumulators ---- */

static struct rp_account *
account_get(struct replay *r, const struct cp_identity *id, const char *login)
{
    uint64_t h = hmap_hash(id->dkey, id->dkeylen);
    struct rp_account *a =
        hmap_get(&r->accounts, h, id->dkey, id->dkeylen, account_eq);

    if (a != NULL)
        return a;
    if (r->accounts.count >= REPLAY_MAX_ACCOUNTS) {
        if (r->other == NULL) {
            r->other = xcalloc(1, sizeof(*r->other));
            r->other->key = xstrdup(REPLAY_OTHER_ACCOUNTS);
            r->other->keylen = strlen(REPLAY_OTHER_ACCOUNTS);
        }
        return r->other;
    }
    a = xcalloc(1, sizeof(*a));
    a->key = xmemdup0(id->dkey, id->dkeylen);
    a->keylen = id->dkeylen;
    a->limits_key = xmemdup0(id->key, id->keylen);
    a->customer = id->cust ? id->cust->id : NULL;
    a->cls = id->cls ? id->cls->name : NULL;
    a->login = login ? xstrdup(login) : NULL;
    hmap_put(&r->accounts, h, a);
    return a;
}

static void
count_rule(struct replay *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->nrules; i++)
        if (strcmp(r->rules[i].name, name) == 0)
            break;
    if (i == r->nrules) {
        if (r->nrules < REPLAY_MAX_RULES) {
            snprintf(r->rules[i].name, CP_RULE_NAME_MAX, "%s", name);
            r->nrules++;
        } else {
            i = REPLAY_MAX_RULES;
            snprintf(r->rules[i].name, CP_RULE_NAME_MAX, "(other)");
        }
    }
    r->rules[i].n++;
}

/* ---- driving the engine ---- */

/* How bad a would-be verdict is: the one a message is reported under. */
static int
severity(enum cp_action a)
{
    static const int s[CP_ACT_COUNT] = {0, 3, 4, 2, 1, 1, 1};

    return a < CP_ACT_COUNT ? s[a] : 0;
}

/* The rule of a would-be decision, or "state" for one the account's state
 * made (THROTTLED, BLOCKED). */
static const char *
would_rule(const struct cp_decision *d)
{
    return d->has_rule ? d->rule.name : "state";
}

/* What one message would have met: its worst decision. */
struct rp_outcome {
    struct cp_decision worst;
    bool any, shadow_rule;
    uint64_t over; /* requests with a would-be verdict */
};

static void
note(struct rp_outcome *o, const struct cp_decision *d)
{
    if (d->by_state && (d->verdict == CP_ACT_DEFER ||
                        d->verdict == CP_ACT_REJECT ||
                        d->verdict == CP_ACT_HOLD)) {
        /* the account's state (THROTTLED, BLOCKED) would refuse it */
        o->over++;
        if (!o->any || severity(d->verdict) > severity(o->worst.verdict))
            o->worst = *d;
        o->any = true;
        return;
    }
    if (!d->has_rule || d->verdict == CP_ACT_DUNNO)
        return;
    if (d->rule.shadow) {
        o->shadow_rule = true; /* would not act even when enforced */
        return;
    }
    o->over++;
    if (!o->any || severity(d->verdict) > severity(o->worst.verdict))
        o->worst = *d;
    o->any = true;
}

static void
ask(struct replay *r, struct cp_event *ev, enum cp_stage stage,
    struct rp_outcome *o)
{
    struct cp_decision d;

    ev->stage = stage;
    inproc_decide(&r->ip, ev, r->engine_ms, &d);
    note(o, &d);
}

/* The i-th recipient kept for `e`, or NULL. */
static const char *
nth_rcpt(const struct rp_entry *e, size_t *off)
{
    const char *s;

    if (e->rcpts == NULL || *off >= e->rlen)
        return NULL;
    s = e->rcpts + *off;
    *off += strlen(s) + 1;
    return s;
}

/* The message's events as the policy service would have seen them. */
static void
fill_event(const struct rp_entry *e, const char *instance,
           struct cp_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->client_address = str_c(e->client_addr);
    ev->sasl_username = str_c(e->login);
    ev->tls_protocol = str_c(e->tls_proto);
    ev->tls_cipher = str_c(e->tls_cipher);
    ev->sender = str_c(e->sender ? e->sender : "");
    ev->queue_id = str_c(e->qid);
    ev->instance = str_c(instance);
    ev->size = e->size;
    ev->recipient_count = e->nrcpt;
}

/* RCPT per recipient (unknown ones padded), DATA, END-OF-MESSAGE. */
static void
run_message(struct replay *r, const struct rp_entry *e,
            struct cp_event *ev, struct rp_outcome *o)
{
    uint64_t n = e->nrcpt < REPLAY_MAX_NRCPT ? e->nrcpt : REPLAY_MAX_NRCPT;
    char pad[64];
    size_t off = 0;

    if (n < e->nrcpt)
        r->n.nrcpt_capped++;
    for (uint64_t i = 0; i < n; i++) {
        const char *rcpt = nth_rcpt(e, &off);

        if (rcpt == NULL) {
            snprintf(pad, sizeof(pad), "unknown-%llu@recipient.invalid",
                     (unsigned long long)i + 1);
            rcpt = pad;
            r->n.padded++;
        }
        ev->recipient = str_c(rcpt);
        ask(r, ev, CP_STAGE_RCPT, o);
    }
    ev->recipient = str_c(NULL);
    ask(r, ev, CP_STAGE_DATA, o);
    ask(r, ev, CP_STAGE_EOM, o);
    /* what the log said became of it: evidence, as the daemon's mail-log
     * follower would report it (after the message, by queue id) */
    for (size_t at = 0; at < e->olen; at += strlen(e->outs + at + 1) + 2)
        inproc_outcome(&r->ip, e->qid, strlen(e->qid), e->outs + at + 1,
                       (enum cp_outcome)e->outs[at], r->engine_ms);
    for (int k = CP_OUT_DELIVERED; k <= CP_OUT_DEFERRED_POLICY; k++)
        for (uint32_t i = 0; i < e->fate[k]; i++)
            inproc_outcome(&r->ip, e->qid, strlen(e->qid), NULL,
                           (enum cp_outcome)k, r->engine_ms);
}

static void
list_decision(struct replay *r, const struct rp_entry *e,
              const struct rp_outcome *o)
{
    struct rp_listed *l;
    const struct cp_decision *d = &o->worst;
    char text[CP_TEXT_MAX];

    if (r->nlisted >= r->o.list)
        return;
    l = &r->listed[r->nlisted++];
    l->t_ms = r->engine_ms;
    memcpy(l->qid, e->qid, sizeof(l->qid));
    l->key = xmemdup0(d->id.key, d->id.keylen);
    l->customer = d->id.cust ? d->id.cust->id : NULL;
    l->login = e->login ? xstrdup(e->login) : NULL;
    l->client = e->client_addr ? xstrdup(e->client_addr) : NULL;
    l->sender = e->sender ? xstrdup(e->sender) : NULL;
    l->text = xstrdup(cp_reply_text(d, text, sizeof(text)));
    l->stage = d->stage;
    l->verdict = d->verdict;
    snprintf(l->rule, sizeof(l->rule), "%s", would_rule(d));
    l->account = xmemdup0(d->id.dkey, d->id.dkeylen);
    l->state = (uint8_t)cp_decision_state(d);
    l->value = d->value;
    l->cost = d->cost;
    l->limit = d->limit;
    l->retry_s = d->retry_s;
    l->nrcpt = e->nrcpt;
    l->over = o->over;
}

/*
 * An account's state changed (inproc's on_change; in shadow mode states
 * are kept and changed as when enforcing). Recorded with the evidence,
 * for the report.
 */
static void
on_change(void *arg, const struct cp_decision *d, const struct cp_event *ev,
          int64_t now_ms)
{
    struct replay *r = arg;
    struct rp_account *a;
    struct rp_transition *t;
    struct cp_account_ref ref;
    const char *login = NULL;

    if (ev != NULL && str_set(ev->sasl_username))
        login = r->cur_login;
    a = account_get(r, &d->id, login);
    if (cp_state_rank((enum cp_state)d->state) > a->worst)
        a->worst = (uint8_t)cp_state_rank((enum cp_state)d->state);
    a->tr = xreallocarray(a->tr, a->ntr + 1, sizeof(*a->tr));
    t = &a->tr[a->ntr++];
    memset(t, 0, sizeof(*t));
    t->t_ms = now_ms;
    t->from = d->prev_state;
    t->to = d->state;
    t->score = (float)d->score;
    if (r->ip.ms->base.ops->account(&r->ip.ms->base, d->id.dkey, d->id.dkeylen,
                                    false, false, &ref) &&
        ref.ev != NULL) {
        double f = exp2(-(double)(now_ms - ref.ev->t_ms) /
                        (double)cp_class_det(r->ip.cfg, d->id.cls)->half_life_ms);

        t->score = (float)cp_evidence_score(ref.ev,
                                            cp_class_det(r->ip.cfg, d->id.cls),
                                            now_ms);
        for (int i = 0; i < CP_SIG_COUNT; i++) {
            t->share[i] = (float)(ref.ev->sig[i] * (f < 1 ? f : 1));
            t->times[i] = ref.ev->fired[i];
        }
    }
}

static void
account_message(struct replay *r, const struct cp_identity *id,
                const struct rp_entry *e, const struct rp_outcome *o)
{
    struct rp_account *a = account_get(r, id, e->login);

    a->messages++;
    a->recipients += e->nrcpt;
    if (!o->any)
        return;
    if (a->would_total == 0)
        a->first_ms = r->engine_ms;
    a->last_ms = r->engine_ms;
    a->would_total++;
    a->would[o->worst.verdict]++;
}

/* Replay one message at its qmgr time. */
static void
drive(struct replay *r, struct rp_entry *e)
{
    struct cp_event ev;
    struct cp_identity id;
    struct rp_outcome o;
    char inst[MAILLOG_MAX_QUEUE_ID + 24];

    snprintf(inst, sizeof(inst), "%s.%llu", e->qid, (unsigned long long)e->seq);
    fill_event(e, inst, &ev);
    if (cp_identity_resolve(r->ip.cfg, &ev, &id) < 0) {
        r->n.no_identity++; /* the daemon would answer DUNNO */
        return;
    }
    if (e->queued_ms > r->engine_ms)
        r->engine_ms = e->queued_ms; /* the engine's clock never goes back */
    memset(&o, 0, sizeof(o));
    r->cur_login = e->login;
    run_message(r, e, &ev, &o);
    r->cur_login = NULL;
    r->n.messages++;
    r->n.recipients += e->nrcpt;
    r->n.shadow_rule += o.shadow_rule;
    account_message(r, &id, e, &o);
    if (!o.any)
        return;
    r->n.would_total++;
    r->n.would[o.worst.verdict]++;
    count_rule(r, would_rule(&o.worst));
    list_decision(r, e, &o);
}

/* ---- events ---- */

static bool
instance_selected(const struct replay *r, struct str inst)
{
    if (r->o.ninstances == 0)
        return true;
    for (size_t i = 0; i < r->o.ninstances; i++)
        if (strlen(r->o.instances[i]) == inst.len &&
            memcmp(r->o.instances[i], inst.p, inst.len) == 0)
            return true;
    return false;
}

static void
skip_entry(struct rp_entry *e, enum rp_skip why)
{
    entry_clear(e);
    e->state = RP_SKIPPED;
    e->skip_why = why;
}

static void conn_tls(struct replay *r, const struct maillog_event *ev,
                     struct rp_entry *e);

static void
on_client(struct replay *r, const struct maillog_event *ev)
{
    struct rp_entry *e = lookup(r, ev, ev->queue_id, true);

    if (e->in_heap)
        heap_drain_through(r, e); /* queue id reused: finish the old one */
    if (e->state == RP_SUBMITTED)
        r->n.no_qmgr++; /* a second client= before any qmgr */
    if (ev->orig_queue_id.p != NULL) {
        skip_entry(e, SKIP_REINJECTED);
        return;
    }
    if (!instance_selected(r, ev->instance)) {
        skip_entry(e, SKIP_INSTANCE);
        return;
    }
    entry_clear(e);
    e->state = RP_SUBMITTED;
    conn_tls(r, ev, e);
    e->client_addr = dup_field(ev->client_addr);
    e->client_name = dup_field(ev->client_name);
    e->login = dup_field(ev->sasl_username);
    e->method = dup_field(ev->sasl_method);
    r->n.submissions++;
}

/* The smtpd process of a line: host, service and pid as a key (in
 * r->keybuf); false without a pid. */
static bool
conn_key(struct replay *r, const struct maillog_event *ev, size_t *len)
{
    int n;

    if (ev->pid.len == 0)
        return false;
    n = snprintf(r->keybuf, sizeof(r->keybuf), "%.*s %.*s %.*s",
                 (int)ev->host.len, ev->host.p, (int)ev->service.len,
                 ev->service.p, (int)ev->pid.len, ev->pid.p);
    *len = n < 0 ? 0 : (size_t)n < sizeof(r->keybuf) ? (size_t)n
                                                       : sizeof(r->keybuf) - 1;
    return *len > 0;
}

static void
conn_free(struct replay *r, struct rp_conn *c)
{
    agemap_del(&r->conns, &c->age);
    free(c);
}

/* "connect from": a new connection of that process, plaintext so far;
 * "TLS connection established": its stack. */
static void
on_connection(struct replay *r, const struct maillog_event *ev)
{
    struct agemap_ent *a;
    struct rp_conn *c;
    size_t len;

    if (!conn_key(r, ev, &len))
        return;
    if ((a = agemap_get(&r->conns, r->keybuf, len)) != NULL) {
        c = CONN(a);
        if (ev->kind == MAILLOG_SMTPD_CONNECT)
            conn_free(r, c); /* a new connection starts over */
        else {
            snprintf(c->proto, sizeof(c->proto), "%.*s",
                     (int)ev->tls_protocol.len, ev->tls_protocol.p);
            snprintf(c->cipher, sizeof(c->cipher), "%.*s",
                     (int)ev->tls_cipher.len, ev->tls_cipher.p);
            return;
        }
    }
    while (agemap_count(&r->conns) >= REPLAY_MAX_CONNECTIONS)
        conn_free(r, CONN(r->conns.oldest));
    c = xcalloc(1, sizeof(*c) + len);
    memcpy(c->buf, r->keybuf, len);
    c->age.key = c->buf;
    c->age.klen = len;
    c->age.t_ms = r->clock_ms;
    if (ev->kind == MAILLOG_SMTPD_TLS) {
        snprintf(c->proto, sizeof(c->proto), "%.*s",
                 (int)ev->tls_protocol.len, ev->tls_protocol.p);
        snprintf(c->cipher, sizeof(c->cipher), "%.*s",
                 (int)ev->tls_cipher.len, ev->tls_cipher.p);
    }
    agemap_put(&r->conns, &c->age);
}

/* The submission's TLS stack: its smtpd process's connection's. */
static void
conn_tls(struct replay *r, const struct maillog_event *ev, struct rp_entry *e)
{
    struct agemap_ent *a;
    size_t len;

    if (!conn_key(r, ev, &len) ||
        (a = agemap_get(&r->conns, r->keybuf, len)) == NULL ||
        CONN(a)->proto[0] == '\0')
        return;
    e->tls_proto = xstrdup(CONN(a)->proto);
    e->tls_cipher = xstrdup(CONN(a)->cipher);
}

static void
on_local(struct replay *r, const struct maillog_event *ev,
         struct str qid, enum rp_skip why)
{
    struct rp_entry *e = lookup(r, ev, qid, true);

    if (e->state == RP_NEW)
        skip_entry(e, why);
}

static void
on_qmgr(struct replay *r, const struct maillog_event *ev)
{
    struct rp_entry *e = lookup(r, ev, ev->queue_id, false);

    if (e == NULL) {
        e = lookup(r, ev, ev->queue_id, true);
        e->state = RP_DONE; /* later lines about it are not news */
        if (ev->from.len == 0)
            r->n.skipped[SKIP_NULL_SENDER]++;
        else
            r->n.qmgr_unmatched++; /* submitted before the log starts */
        return;
    }
    if (e->state == RP_SKIPPED) {
        r->n.skipped[e->skip_why]++;
        e->state = RP_DONE;
        return;
    }
    if (e->state != RP_SUBMITTED) {
        r->n.qmgr_repeat++; /* a deferred message back in the active queue */
        return;
    }
    if (r->nheap >= REPLAY_MAX_REORDER) {
        r->n.reorder_full++;
        heap_drive_top(r);
    }
    e->state = RP_QUEUED;
    e->sender = dup_field(ev->from);
    e->size = ev->size;
    e->nrcpt = ev->nrcpt;
    e->queued_ms = ev->ts_ms;
    e->seq = ++r->seq;
    heap_push(r, e);
}

static bool
rcpt_known(const struct rp_entry *e, struct str to)
{
    size_t off = 0;
    const char *s;

    while ((s = nth_rcpt(e, &off)) != NULL)
        if (strlen(s) == to.len && memcmp(s, to.p, to.len) == 0)
            return true;
    return false;
}

/* Append a recipient if it fits in REPLAY_MAX_RCPT_BYTES. */
static void
keep_rcpt(struct rp_entry *e, struct str to)
{
    size_t need = e->rlen + to.len + 1;

    if (need > REPLAY_MAX_RCPT_BYTES)
        return; /* padded when replayed */
    if (need > e->rcap) {
        e->rcap = need < 256 ? 256 : REPLAY_MAX_RCPT_BYTES;
        e->rcpts = xrealloc(e->rcpts, e->rcap);
    }
    memcpy(e->rcpts + e->rlen, to.p, to.len);
    e->rcpts[e->rlen + to.len] = '\0';
    e->rlen = need;
}

/* One delivery line's outcome, with its recipient if it fits. */
static void
keep_outcome(struct rp_entry *e, enum cp_outcome o, struct str to)
{
    size_t need = e->olen + to.len + 2;

    if (to.len == 0 || need > REPLAY_MAX_RCPT_BYTES) {
        if (e->fate[o] < UINT32_MAX)
            e->fate[o]++;
        return;
    }
    e->outs = xrealloc(e->outs, need);
    e->outs[e->olen] = (char)o;
    memcpy(e->outs + e->olen + 1, to.p, to.len);
    e->outs[need - 1] = '\0';
    e->olen = need;
}

static void
on_delivery(struct replay *r, const struct maillog_event *ev)
{
    struct rp_entry *e = lookup(r, ev, ev->queue_id, false);

    if (e == NULL) {
        r->n.deliveries_unmatched++;
        return;
    }
    if (e->in_heap) {
        enum cp_outcome o = cp_outcome_of(ev->status.p, ev->status.len,
                                          ev->dsn.p, ev->dsn.len);

        if (o != CP_OUT_NONE)
            keep_outcome(e, o, ev->to);
    }
    if (!e->in_heap || ev->to.len == 0 || rcpt_known(e, ev->to))
        return;
    e->nknown++;
    keep_rcpt(e, ev->to);
}

static void
on_removed(struct replay *r, const struct maillog_event *ev)
{
    struct rp_entry *e = lookup(r, ev, ev->queue_id, false);

    if (e == NULL)
        return;
    if (e->in_heap)
        e->removed = true; /* replayed (and freed) in turn */
    else
        forget(r, e, false);
}

/* A reject with a queue id that ends the whole message (cleanup header or
 * body checks, milters, smtpd at DATA or END-OF-MESSAGE) — not a single
 * recipient rejected at RCPT. */
static void
on_reject(struct replay *r, const struct maillog_event *ev)
{
    struct rp_entry *e;

    r->n.rejects++;
    if (ev->queue_id.p == NULL)
        return;
    if (str_eq(ev->program, "smtpd") && str_eq(ev->reject_stage, "RCPT"))
        return;
    e = lookup(r, ev, ev->queue_id, false);
    if (e == NULL || e->state != RP_SUBMITTED)
        return;
    r->n.rejected_by_postfix++;
    entry_free(r, e);
}

static void
on_event(struct replay *r, const struct maillog_event *ev)
{
    switch (ev->kind) {
    case MAILLOG_SMTPD_CLIENT:
        on_client(r, ev);
        break;
    case MAILLOG_PICKUP:
        on_local(r, ev, ev->queue_id, SKIP_PICKUP);
        break;
    case MAILLOG_NOTIFICATION:
        on_local(r, ev, ev->new_queue_id, SKIP_NOTIFICATION);
        break;
    case MAILLOG_QMGR_FROM:
        on_qmgr(r, ev);
        break;
    case MAILLOG_DELIVERY:
        on_delivery(r, ev);
        break;
    case MAILLOG_QMGR_REMOVED:
        on_removed(r, ev);
        break;
    case MAILLOG_REJECT:
        on_reject(r, ev);
        break;
    case MAILLOG_SMTPD_CONNECT:
    case MAILLOG_SMTPD_TLS:
        on_connection(r, ev);
        break;
    default:
        break;
    }
}

/* ---- the line loop ---- */

static void
advance_clock(struct replay *r, int64_t ts)
{
    if (!r->have_clock) {
        r->have_clock = true;
        r->clock_ms = r->first_ms = r->last_ms = ts;
        return;
    }
    if (ts < r->first_ms)
        r->first_ms = ts;
    if (ts > r->last_ms)
        r->last_ms = ts;
    if (ts > r->clock_ms)
        r->clock_ms = ts; /* the log clock never goes back */
}

static void
handle_line(struct replay *r, const char *line, size_t len)
{
    struct maillog_event ev;

    r->n.lines++;
    r->n.kinds[maillog_parse(&r->ctx, line, len, &ev)]++;
    if (!ev.has_time)
        return;
    advance_clock(r, ev.ts_ms);
    on_event(r, &ev);
    heap_drain_ready(r);
    age_table(r);
}

static void
feed_bytes(struct replay *r, const char *buf, size_t len)
{
    size_t off = 0, used, n;
    const char *line;

    while (off < len) {
        enum maillog_frame st =
            maillog_framer_feed(&r->fr, buf + off, len - off, &used, &line, &n);

        off += used;
        if (st == MAILLOG_LINE) {
            handle_line(r, line, n);
        } else if (st == MAILLOG_TOO_LONG) {
            r->n.lines++;
            r->n.too_long++;
        }
    }
}

static const char *
cmd_name(const struct replay *r)
{
    return r->o.learn ? "learn" : "replay";
}

/* Read one whole log file (plain or gzip-compressed: zlib reads either);
 * returns 0 or -1 (error, reported). */
static int
read_log(struct replay *r, const char *file)
{
    char *buf;
    const char *line;
    size_t n;
    int rc = 0, fd = strcmp(file, "-") == 0 ? dup(0)
                                             : open(file, O_RDONLY | O_CLOEXEC);
    gzFile gz;

    if (fd < 0 || (gz = gzdopen(fd, "r")) == NULL) {
        fprintf(stderr, "chokepoint %s: %s: %s\n", cmd_name(r), file,
                fd < 0 ? strerror(errno) : "out of memory");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    gzbuffer(gz, REPLAY_READ_BUF);
    buf = xmalloc(REPLAY_READ_BUF);
    for (;;) {
        int got = gzread(gz, buf, REPLAY_READ_BUF);

        if (got < 0) {
            int e;
            const char *msg = gzerror(gz, &e);

            fprintf(stderr, "chokepoint %s: %s: %s\n", cmd_name(r), file,
                    e == Z_ERRNO ? strerror(errno) : msg);
            rc = -1;
            break;
        }
        if (got == 0)
            break;
        feed_bytes(r, buf, (size_t)got);
    }
    if (maillog_framer_finish(&r->fr, &line, &n) == MAILLOG_LINE)
        handle_line(r, line, n);
    free(buf);
    gzclose(gz);
    return rc;
}

/* End of log: replay what waits, count what never reached qmgr. */
static void
finish_log(struct replay *r)
{
    while (r->nheap > 0)
        heap_drive_top(r);
    while (r->table.oldest != NULL)
        forget(r, oldest(r), false);
}

/* ---- the report ---- */

static int
account_cmp(const void *a, const void *b)
{
    const struct rp_account *x = *(struct rp_account *const *)a;
    const struct rp_account *y = *(struct rp_account *const *)b;

    if (x->worst != y->worst)
        return x->worst > y->worst ? -1 : 1;
    if (x->would_total != y->would_total)
        return x->would_total > y->would_total ? -1 : 1;
    if (x->messages != y->messages)
        return x->messages > y->messages ? -1 : 1;
    return strcmp(x->key, y->key);
}

/* Every account, worst first; the caller frees the array. */
static struct rp_account **
sorted_accounts(struct replay *r, size_t *n)
{
    struct rp_account **v = xcalloc(r->accounts.count + 1, sizeof(*v));
    size_t k = 0;

    HMAP_FOREACH(&r->accounts, i)
    {
        v[k++] = r->accounts.ents[i].val;
    }
    if (r->other != NULL)
        v[k++] = r->other;
    qsort(v, k, sizeof(*v), account_cmp);
    *n = k;
    return v;
}

static uint64_t
incomplete(const struct replay *r)
{
    return r->n.no_qmgr + r->n.qmgr_unmatched;
}

static uint64_t
skipped_total(const struct replay *r)
{
    uint64_t t = 0;

    for (size_t i = 0; i < SKIP_COUNT; i++)
        t += r->n.skipped[i];
    return t;
}

static uint64_t
parsed_lines(const struct replay *r)
{
    return r->n.lines - r->n.too_long - r->n.kinds[MAILLOG_UNKNOWN];
}

static double
lines_per_s(const struct replay *r)
{
    return r->elapsed_s > 0 ? (double)r->n.lines / r->elapsed_s : 0;
}

/* JSON: "name":"time" or null */
static void
json_time(struct strbuf *sb, const char *name, bool have, int64_t ms)
{
    char ts[40];

    sb_printf(sb, "\"%s\":", name);
    if (!have) {
        sb_puts(sb, "null");
        return;
    }
    cp_format_time(ts, sizeof(ts), ms);
    sb_printf(sb, "\"%s\"", ts);
}

static void
json_lines(struct strbuf *sb, const struct replay *r)
{
    sb_puts(sb, "\"lines\":{");
    sb_json_ku64(sb, "read", r->n.lines, true);
    sb_json_ku64(sb, "parsed", parsed_lines(r), false);
    sb_json_ku64(sb, "unknown", r->n.kinds[MAILLOG_UNKNOWN], false);
    sb_json_ku64(sb, "too_long", r->n.too_long, false);
    sb_puts(sb, ",\"by_kind\":{");
    for (int k = 0; k < MAILLOG_KIND_COUNT; k++)
        sb_json_ku64(sb, maillog_kind_name((enum maillog_kind)k),
                     r->n.kinds[k], k == 0);
    sb_puts(sb, "}}");
    sb_json_knum(sb, "elapsed_s", r->elapsed_s, false);
    sb_json_knum(sb, "lines_per_s", lines_per_s(r), false);
    sb_puts(sb, ",\"log_span\":{");
    json_time(sb, "first", r->have_clock, r->first_ms);
    sb_puts(sb, ",");
    json_time(sb, "last", r->have_clock, r->last_ms);
    sb_json_knum(sb, "seconds",
             r->have_clock ? (double)(r->last_ms - r->first_ms) / 1000 : 0,
             false);
    sb_puts(sb, "},");
}

static void
json_messages(struct strbuf *sb, const struct replay *r)
{
    sb_json_ku64(sb, "submissions", r->n.submissions, true);
    sb_json_ku64(sb, "messages", r->n.messages, false);
    sb_json_ku64(sb, "recipients", r->n.recipients, false);
    sb_json_ku64(sb, "recipients_padded", r->n.padded, false);
    sb_json_ku64(sb, "nrcpt_capped", r->n.nrcpt_capped, false);
    sb_puts(sb, ",\"incomplete\":{");
    sb_json_ku64(sb, "total", incomplete(r), true);
    sb_json_ku64(sb, "no_qmgr", r->n.no_qmgr, false);
    sb_json_ku64(sb, "qmgr_without_submission", r->n.qmgr_unmatched, false);
    sb_json_ku64(sb, "evicted", r->n.evicted, false);
    sb_puts(sb, "}");
    sb_json_ku64(sb, "deliveries_unmatched", r->n.deliveries_unmatched, false);
    sb_json_ku64(sb, "qmgr_repeats", r->n.qmgr_repeat, false);
    sb_puts(sb, ",\"not_submissions\":{");
    sb_json_ku64(sb, "total", skipped_total(r), true);
    for (size_t i = 0; i < SKIP_COUNT; i++)
        sb_json_ku64(sb, skip_names[i], r->n.skipped[i], false);
    sb_puts(sb, "}");
    sb_json_ku64(sb, "postfix_reject_lines", r->n.rejects, false);
    sb_json_ku64(sb, "rejected_by_postfix", r->n.rejected_by_postfix, false);
    sb_json_ku64(sb, "no_identity", r->n.no_identity, false);
    sb_json_ku64(sb, "reorder_overflow", r->n.reorder_full, false);
}

static void
json_would(struct strbuf *sb, const struct replay *r)
{
    bool first = true;

    sb_puts(sb, ",\"would\":{");
    sb_json_ku64(sb, "messages", r->n.would_total, true);
    sb_puts(sb, ",\"by_verdict\":{");
    for (int a = 1; a < CP_ACT_COUNT; a++) {
        if (r->n.would[a] == 0)
            continue;
        sb_json_ku64(sb, cp_action_word((enum cp_action)a), r->n.would[a],
                     first);
        first = false;
    }
    sb_puts(sb, "},\"by_rule\":{");
    for (size_t i = 0; i <= REPLAY_MAX_RULES; i++) {
        if (r->rules[i].n == 0)
            continue;
        sb_printf(sb, "%s", i > 0 ? "," : "");
        sb_json_str(sb, r->rules[i].name, strlen(r->rules[i].name));
        sb_printf(sb, ":%llu", (unsigned long long)r->rules[i].n);
    }
    sb_puts(sb, "}");
    sb_json_ku64(sb, "shadow_rule_breaches", r->n.shadow_rule, false);
    sb_puts(sb, "}");
}

static void
json_decision(struct strbuf *sb, const struct rp_listed *l)
{
    sb_puts(sb, "{");
    json_time(sb, "time", true, l->t_ms);
    sb_json_kcstr(sb, "queue_id", l->qid, false);
    sb_json_kcstr(sb, "key", l->key, false);
    sb_json_kcstr(sb, "account", l->account, false);
    sb_json_kcstr(sb, "customer", l->customer, false);
    sb_json_kcstr(sb, "login", l->login, false);
    sb_json_kcstr(sb, "client", l->client, false);
    sb_json_kcstr(sb, "sender", l->sender, false);
    sb_json_ku64(sb, "recipients", l->nrcpt, false);
    sb_json_kcstr(sb, "stage", cp_stage_name(l->stage), false);
    sb_json_kcstr(sb, "rule", l->rule, false);
    sb_json_kcstr(sb, "verdict", cp_action_word(l->verdict), false);
    sb_json_kcstr(sb, "state", cp_state_name((enum cp_state)l->state), false);
    sb_json_knum(sb, "value", l->value, false);
    sb_json_knum(sb, "cost", l->cost, false);
    sb_json_knum(sb, "limit", l->limit, false);
    sb_json_knum(sb, "retry_s", l->retry_s, false);
    sb_json_ku64(sb, "requests_over", l->over, false);
    sb_json_kcstr(sb, "text", l->text, false);
    sb_puts(sb, "}");
}

/* The signals behind a state change, largest share first: JSON members
 * of {signal, share, times}, or "networks +9.7 (5x), ..." for text. */
static void
transition_signals(struct strbuf *sb, const struct rp_transition *t,
                   bool json)
{
    uint8_t order[CP_SIG_COUNT];
    size_t n = cp_signals_ranked(t->share, t->times, order);

    for (size_t k = 0; k < n; k++) {
        int s = order[k];

        if (json) {
            sb_printf(sb, "%s{\"signal\":\"%s\",\"share\":", k ? "," : "",
                      cp_signal_name((enum cp_signal)s));
            sb_json_num(sb, round(t->share[s] * 100) / 100);
            sb_printf(sb, ",\"times\":%u}", t->times[s]);
        } else {
            sb_printf(sb, "%s%s %+.1f (%ux)", k ? ", " : "",
                      cp_signal_name((enum cp_signal)s), t->share[s],
                      t->times[s]);
        }
    }
}

static void
json_transitions(struct strbuf *sb, const struct rp_account *a)
{
    sb_puts(sb, ",\"transitions\":[");
    for (size_t i = 0; i < a->ntr; i++) {
        const struct rp_transition *t = &a->tr[i];

        sb_puts(sb, i ? ",{" : "{");
        json_time(sb, "time", true, t->t_ms);
        sb_json_kcstr(sb, "from", cp_state_name((enum cp_state)t->from),
                      false);
        sb_json_kcstr(sb, "to", cp_state_name((enum cp_state)t->to), false);
        sb_puts(sb, ",\"score\":");
        sb_json_num(sb, round(t->score * 100) / 100);
        sb_puts(sb, ",\"signals\":[");
        transition_signals(sb, t, true);
        sb_puts(sb, "]}");
    }
    sb_puts(sb, "]");
}

/* The state a rank stands for in the report (the worst state reached). */
static const char *
rank_name(int rank)
{
    static const char *const n[] = {"NORMAL", "WATCH", "THROTTLED",
                                    "BLOCKED"};

    return rank >= 0 && rank < 4 ? n[rank] : "?";
}

static void
json_account(struct strbuf *sb, const struct rp_account *a)
{
    sb_puts(sb, "{");
    sb_json_kcstr(sb, "key", a->key, true);
    sb_json_kcstr(sb, "limits_key", a->limits_key, false);
    sb_json_kcstr(sb, "customer", a->customer, false);
    sb_json_kcstr(sb, "class", a->cls, false);
    sb_json_kcstr(sb, "login", a->login, false);
    sb_json_ku64(sb, "messages", a->messages, false);
    sb_json_ku64(sb, "recipients", a->recipients, false);
    sb_json_ku64(sb, "would", a->would_total, false);
    sb_json_ku64(sb, "would_defer", a->would[CP_ACT_DEFER], false);
    sb_json_ku64(sb, "would_reject", a->would[CP_ACT_REJECT], false);
    sb_json_ku64(sb, "would_hold", a->would[CP_ACT_HOLD], false);
    sb_json_ku64(sb, "would_warn",
                 a->would[CP_ACT_WARN] + a->would[CP_ACT_PREPEND], false);
    sb_puts(sb, ",");
    json_time(sb, "first_would", a->would_total > 0, a->first_ms);
    sb_puts(sb, ",");
    json_time(sb, "last_would", a->would_total > 0, a->last_ms);
    sb_json_kcstr(sb, "worst_state", rank_name(a->worst), false);
    json_transitions(sb, a);
    sb_puts(sb, "}");
}

/* Accounts (logins, and client networks of mail without one) by the
 * worst state they reached. */
static void
count_by_worst(const struct replay *r, uint64_t by[4])
{
    memset(by, 0, 4 * sizeof(*by));
    HMAP_FOREACH(&r->accounts, i)
    {
        const struct rp_account *a = r->accounts.ents[i].val;

        by[a->worst < 4 ? a->worst : 3]++;
    }
}

static void
json_worst(struct strbuf *sb, const struct replay *r)
{
    uint64_t by[4];

    count_by_worst(r, by);
    sb_puts(sb, ",\"logins_by_worst_state\":{");
    for (int i = 0; i < 4; i++)
        sb_json_ku64(sb, rank_name(i), by[i], i == 0);
    sb_puts(sb, "}");
}

static void
report_json(struct replay *r, struct strbuf *sb)
{
    struct rp_account **acc;
    size_t nacc, shown;

    sb_json_open(sb, CP_JSON_REPLAY);
    sb_json_kcstr(sb, "file", r->o.file, false);
    sb_json_kcstr(sb, "config", r->o.config, false);
    sb_puts(sb, ",");
    json_lines(sb, r);
    json_messages(sb, r);
    json_would(sb, r);
    json_worst(sb, r);
    sb_puts(sb, ",\"decisions\":[");
    for (size_t i = 0; i < r->nlisted; i++) {
        sb_puts(sb, i ? "," : "");
        json_decision(sb, &r->listed[i]);
    }
    sb_printf(sb, "],\"decisions_truncated\":%s,\"accounts\":[",
              r->n.would_total > r->nlisted ? "true" : "false");
    acc = sorted_accounts(r, &nacc);
    shown = nacc < r->o.list ? nacc : r->o.list;
    for (size_t i = 0; i < shown; i++) {
        sb_puts(sb, i ? "," : "");
        json_account(sb, acc[i]);
    }
    sb_printf(sb, "],\"accounts_total\":%zu,\"accounts_truncated\":%s}\n", nacc,
              shown < nacc ? "true" : "false");
    free(acc);
}

/* Untrusted text for the text report: escaped, cut at 64 bytes. */
static const char *
esc(char *out, size_t n, const char *s)
{
    if (s == NULL)
        return "-";
    return str_escape(out, n, s, strlen(s), 64);
}

static void
text_summary(struct replay *r, struct strbuf *sb)
{
    char a[40], b[40];

    sb_printf(sb, "replay of %s with %s\n", r->o.file, r->o.config);
    sb_printf(sb,
              "lines:       %llu read, %llu parsed, %llu unknown, %llu too "
              "long (%.0f lines/s, %.2f s)\n",
              (unsigned long long)r->n.lines,
              (unsigned long long)parsed_lines(r),
              (unsigned long long)r->n.kinds[MAILLOG_UNKNOWN],
              (unsigned long long)r->n.too_long, lines_per_s(r), r->elapsed_s);
    if (r->have_clock) {
        cp_format_time(a, sizeof(a), r->first_ms);
        cp_format_time(b, sizeof(b), r->last_ms);
        sb_printf(sb, "log span:    %s .. %s (%.1f h)\n", a, b,
                  (double)(r->last_ms - r->first_ms) / 3600000.0);
    }
    sb_printf(
        sb,
        "submissions: %llu at smtpd; %llu messages replayed "
        "(%llu recipients, %llu padded)\n",
        (unsigned long long)r->n.submissions, (unsigned long long)r->n.messages,
        (unsigned long long)r->n.recipients, (unsigned long long)r->n.padded);
    sb_printf(sb,
              "incomplete:  %llu (%llu never reached qmgr, %llu qmgr without "
              "submission)\n",
              (unsigned long long)incomplete(r),
              (unsigned long long)r->n.no_qmgr,
              (unsigned long long)r->n.qmgr_unmatched);
    sb_printf(sb, "skipped:     %llu not customer submissions (",
              (unsigned long long)skipped_total(r));
    for (size_t i = 0; i < SKIP_COUNT; i++)
        sb_printf(sb, "%s%s %llu", i ? ", " : "", skip_names[i],
                  (unsigned long long)r->n.skipped[i]);
    sb_printf(sb, "); %llu rejected by Postfix\n",
              (unsigned long long)r->n.rejected_by_postfix);
    {
        uint64_t by[4];

        count_by_worst(r, by);
        sb_printf(sb, "logins:      %zu (and client networks), by the worst "
                      "state reached: NORMAL %llu, WATCH %llu, THROTTLED "
                      "%llu, BLOCKED %llu\n",
                  r->accounts.count, (unsigned long long)by[0],
                  (unsigned long long)by[1], (unsigned long long)by[2],
                  (unsigned long long)by[3]);
    }
}

static void
text_would(struct replay *r, struct strbuf *sb)
{
    char ts[40], k[80], l[80], c[80];

    sb_printf(sb, "would-be:    %llu messages",
              (unsigned long long)r->n.would_total);
    for (int a = 1; a < CP_ACT_COUNT; a++)
        if (r->n.would[a] > 0)
            sb_printf(sb, ", %s %llu", cp_action_word((enum cp_action)a),
                      (unsigned long long)r->n.would[a]);
    for (size_t i = 0; i <= REPLAY_MAX_RULES; i++)
        if (r->rules[i].n > 0)
            sb_printf(sb, "%s%s %llu",
                      i ? ", " : "; by rule: ", r->rules[i].name,
                      (unsigned long long)r->rules[i].n);
    sb_puts(sb, "\n");
    if (r->nlisted > 0)
        sb_printf(sb, "\ndecisions%s:\n",
                  r->n.would_total > r->nlisted ? " (first ones)" : "");
    for (size_t i = 0; i < r->nlisted; i++) {
        const struct rp_listed *d = &r->listed[i];

        cp_format_time(ts, sizeof(ts), d->t_ms);
        sb_printf(sb, "  %s %s %s %s %s %.2f/%.0f login=%s client=%s: %s\n", ts,
                  d->qid, esc(k, sizeof(k), d->key), cp_action_word(d->verdict),
                  d->rule, d->value, d->limit, esc(l, sizeof(l), d->login),
                  esc(c, sizeof(c), d->client), d->text);
    }
}

static void
text_accounts(struct replay *r, struct strbuf *sb)
{
    struct rp_account **acc;
    size_t nacc, shown;
    char k[80], cu[80], a[40], b[40];

    acc = sorted_accounts(r, &nacc);
    shown = nacc < r->o.list ? nacc : r->o.list;
    sb_printf(sb, "\naccounts (%zu%s):\n", nacc,
              shown < nacc ? ", worst shown" : "");
    sb_printf(sb, "  %-32s %-16s %-9s %8s %8s %6s %6s %6s  %s\n", "key",
              "customer", "worst", "messages", "rcpts", "defer", "reject",
              "hold", "first .. last");
    for (size_t i = 0; i < shown; i++) {
        const struct rp_account *x = acc[i];

        a[0] = b[0] = '\0';
        if (x->would_total > 0) {
            cp_format_time(a, sizeof(a), x->first_ms);
            cp_format_time(b, sizeof(b), x->last_ms);
        }
        sb_printf(sb, "  %-32s %-16s %-9s %8llu %8llu %6llu %6llu %6llu  "
                      "%s%s%s\n",
                  esc(k, sizeof(k), x->key), esc(cu, sizeof(cu), x->customer),
                  rank_name(x->worst),
                  (unsigned long long)x->messages,
                  (unsigned long long)x->recipients,
                  (unsigned long long)x->would[CP_ACT_DEFER],
                  (unsigned long long)x->would[CP_ACT_REJECT],
                  (unsigned long long)x->would[CP_ACT_HOLD], a,
                  x->would_total ? " .. " : "", b);
    }
    free(acc);
}

/* Every state change of the accounts listed, with its evidence. */
static void
text_transitions(struct replay *r, struct strbuf *sb)
{
    struct rp_account **acc;
    size_t nacc, shown;
    char k[80], cu[80], ts[40];

    acc = sorted_accounts(r, &nacc);
    shown = nacc < r->o.list ? nacc : r->o.list;
    if (shown > 0 && acc[0]->ntr > 0)
        sb_puts(sb, "\nstate changes (the evidence at the time):\n");
    for (size_t i = 0; i < shown && acc[i]->ntr > 0; i++) {
        const struct rp_account *a = acc[i];

        sb_printf(sb, "  %s (customer %s), worst %s:\n",
                  esc(k, sizeof(k), a->key), esc(cu, sizeof(cu), a->customer),
                  rank_name(a->worst));
        for (size_t j = 0; j < a->ntr; j++) {
            const struct rp_transition *t = &a->tr[j];

            cp_format_time(ts, sizeof(ts), t->t_ms);
            sb_printf(sb, "    %s %s -> %s score %.1f: ", ts,
                      cp_state_name((enum cp_state)t->from),
                      cp_state_name((enum cp_state)t->to), t->score);
            transition_signals(sb, t, false);
            sb_puts(sb, "\n");
        }
    }
    free(acc);
}

static void
report_text(struct replay *r, struct strbuf *sb)
{
    text_summary(r, sb);
    text_would(r, sb);
    text_transitions(r, sb);
    text_accounts(r, sb);
}

/* ---- set-up and tear-down ---- */

static int
usage(FILE *fp, int rc, bool learn)
{
    if (learn)
        fprintf(fp,
                "usage: chokepoint learn MAILLOG... [options]\n"
                "Learn every login's habits (senders, recipients, networks,\n"
                "devices, hours, rates, sizes, delivery outcomes) from past\n"
                "Postfix mail logs and store them in the state database, so\n"
                "that chokepointd starts warm. Stop chokepointd first.\n"
                "Logs may be gzip-compressed; they are read oldest first\n"
                "(mail.log.N.gz ... mail.log.1, mail.log).\n");
    else
        fprintf(fp,
                "usage: chokepoint replay MAILLOG...|- [options]\n"
                "Replay Postfix mail logs through the engine in shadow mode and\n"
                "report who would have been deferred, held or rejected, and\n"
                "every account's state changes. Logs may be gzip-compressed;\n"
                "they are read oldest first (mail.log.N.gz ... mail.log).\n");
    fprintf(fp,
            "options:\n"
            "  --config FILE    configuration (default %s)\n"
            "  --no-map         ignore the configuration's customer map\n"
            "  --map FILE       use this customer map instead\n"
            "  --state FILE     %s\n"
            "  --json           one JSON object instead of text\n"
            "  --year YYYY      year of the first classic syslog timestamp\n"
            "                   (default: this year, or last year if the log\n"
            "                   would otherwise start in the future)\n"
            "  --instance NAME  only submissions of this Postfix instance\n"
            "                   (syslog_name prefix, e.g. postfix); may be\n"
            "                   repeated\n"
            "  --list N         decisions and accounts listed (default %d)\n",
            REPLAY_DEFAULT_CONFIG,
            learn ? "state database to store into (default: the config's\n"
                    "                   store.path)"
                  : "start from this state database (what chokepoint learn\n"
                    "                   stored, or chokepointd's): read only",
            REPLAY_DEFAULT_LIST);
    return rc;
}

/* The option's value: "--opt=VALUE" or the next argument. */
static const char *
opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);

    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0' || *i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static bool
number_opt(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    return parse_u64(v, strlen(v), out) && *out >= lo && *out <= hi;
}

/* A rotated log's number: mail.log.3.gz → 3, mail.log.1 → 1; 0 for the
 * current one (no number). */
static unsigned long
rotation(const char *file)
{
    const char *base = strrchr(file, '/'), *dot, *end;
    size_t n = strlen(file);
    unsigned long v = 0;

    base = base ? base + 1 : file;
    end = file + n;
    if (n > 3 && strcmp(end - 3, ".gz") == 0)
        end -= 3;
    for (dot = end; dot > base && dot[-1] >= '0' && dot[-1] <= '9'; dot--)
        ;
    if (dot == end || dot == base || dot[-1] != '.')
        return 0;
    for (const char *p = dot; p < end && v < 1000000; p++)
        v = v * 10 + (unsigned long)(*p - '0');
    return v;
}

/* Oldest first: the highest rotation number first, current logs last;
 * otherwise in the order given (a stable insertion sort). */
static void
order_logs(const char **f, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        const char *x = f[i];
        size_t j = i;

        for (; j > 0 && rotation(f[j - 1]) < rotation(x); j--)
            f[j] = f[j - 1];
        f[j] = x;
    }
}

/* Returns 0 (options in *o), -1 (help printed) or 2 (usage error). */
static int
parse_opts(int argc, char **argv, struct rp_opts *o)
{
    uint64_t v;
    const char *s;

    o->learn = strcmp(argv[0], "learn") == 0;
    o->config = REPLAY_DEFAULT_CONFIG;
    o->list = REPLAY_DEFAULT_LIST;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, 0, o->learn);
            return -1; /* done, successfully */
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--no-map") == 0) {
            o->no_map = true;
        } else if ((s = opt_value(argc, argv, &i, "--config")) ||
                   (s = opt_value(argc, argv, &i, "-c"))) {
            o->config = s;
        } else if ((s = opt_value(argc, argv, &i, "--map"))) {
            o->map = s;
        } else if ((s = opt_value(argc, argv, &i, "--state"))) {
            o->state = s;
        } else if ((s = opt_value(argc, argv, &i, "--year"))) {
            if (!number_opt(s, 1970, 9999, &v))
                return usage(stderr, 2, o->learn);
            o->year = (int)v;
        } else if ((s = opt_value(argc, argv, &i, "--list"))) {
            if (!number_opt(s, 0, 100000000, &v))
                return usage(stderr, 2, o->learn);
            o->list = (size_t)v;
        } else if ((s = opt_value(argc, argv, &i, "--instance"))) {
            if (o->ninstances >= REPLAY_MAX_INSTANCES)
                return usage(stderr, 2, o->learn);
            o->instances[o->ninstances++] = s;
        } else if ((a[0] != '-' || strcmp(a, "-") == 0) &&
                   o->nfiles < REPLAY_MAX_FILES) {
            o->files[o->nfiles++] = a;
        } else {
            fprintf(stderr, "chokepoint %s: bad argument: %s\n",
                    o->learn ? "learn" : "replay", a);
            return usage(stderr, 2, o->learn);
        }
    }
    if (o->nfiles == 0 || (o->map && o->no_map))
        return usage(stderr, 2, o->learn);
    order_logs(o->files, o->nfiles);
    o->file = o->files[0];
    return 0;
}

static struct replay *
replay_new(const struct rp_opts *o)
{
    struct replay *r = xcalloc(1, sizeof(*r));

    r->o = *o;
    maillog_ctx_init(&r->ctx, o->year, now_realtime_ms());
    maillog_framer_init(&r->fr);
    agemap_init(&r->table, 1024);
    agemap_init(&r->conns, 256);
    hmap_init(&r->accounts, 1024);
    r->heap = xcalloc(REPLAY_MAX_REORDER, sizeof(*r->heap));
    r->listed = xcalloc(o->list ? o->list : 1, sizeof(*r->listed));
    return r;
}

static void
account_free(struct rp_account *a)
{
    free(a->key);
    free(a->limits_key);
    free(a->login);
    free(a->tr);
    free(a);
}

static void
replay_free(struct replay *r)
{
    while (r->table.oldest != NULL)
        entry_free(r, oldest(r));
    agemap_fini(&r->table);
    while (r->conns.oldest != NULL)
        conn_free(r, CONN(r->conns.oldest));
    agemap_fini(&r->conns);
    HMAP_FOREACH(&r->accounts, i)
    {
        account_free(r->accounts.ents[i].val);
    }
    hmap_fini(&r->accounts);
    if (r->other != NULL)
        account_free(r->other);
    for (size_t i = 0; i < r->nlisted; i++) {
        struct rp_listed *l = &r->listed[i];

        free(l->key);
        free(l->account);
        free(l->login);
        free(l->client);
        free(l->sender);
        free(l->text);
    }
    free(r->listed);
    free(r->heap);
    inproc_close(&r->ip);
    free(r);
}

static void
write_report(struct replay *r)
{
    struct strbuf sb;

    sb_init(&sb);
    if (r->o.json)
        report_json(r, &sb);
    else
        report_text(r, &sb);
    fwrite(sb.data, 1, sb.len, stdout);
    fflush(stdout);
    sb_fini(&sb);
}

/* Is chokepointd running on this state (its admin socket answers)? */
static bool
daemon_running(const struct cp_config *cfg)
{
    struct sockaddr_un sa;
    int fd;
    bool up;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(cfg->admin_socket) >= sizeof(sa.sun_path) ||
        (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return false;
    memcpy(sa.sun_path, cfg->admin_socket, strlen(cfg->admin_socket));
    up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return up;
}

/*
 * replay --state: start from a state database (what chokepoint learn
 * stored, or a copy of chokepointd's), read only: accounts, states,
 * evidence and the delivered-recipients table, as the daemon starts.
 */
static int
load_state(struct replay *r, const char *path)
{
    struct cp_sqlite *db;
    char err[CP_ERR_MAX];
    long n, dropped;

    if (access(path, R_OK) != 0) {
        fprintf(stderr, "chokepoint replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if ((db = cp_sqlite_open(path, err)) == NULL ||
        (n = cp_sqlite_load(db, r->ip.cfg->slots, r->ip.cfg->nslots,
                            r->ip.ms, NULL, err)) < 0 ||
        cp_sqlite_load_states(db, r->ip.ms, NULL, err) < 0 ||
        cp_sqlite_load_evidence(db, r->ip.ms, &dropped, err) < 0 ||
        cp_sqlite_load_delivered(db, &r->ip.engine.delivered,
                                 r->ip.cfg->delivery.max_recipients,
                                 err) < 0) {
        fprintf(stderr, "chokepoint replay: %s\n", err);
        cp_sqlite_close(db);
        return -1;
    }
    cp_sqlite_close(db);
    r->state_accounts = n;
    return 0;
}

/* chokepoint learn: the habits, without the suspicion, into the state
 * database (store/sqlite.h: cp_sqlite_write_learned). */
static int
store_learned(struct replay *r)
{
    const char *path = r->o.state ? r->o.state : r->ip.cfg->store_path;
    struct cp_sqlite *db;
    char err[CP_ERR_MAX];
    struct cp_sqlite_migration m;
    long n;

    memstore_learned(r->ip.ms);
    if ((db = cp_sqlite_open(path, err)) == NULL ||
        cp_sqlite_migrate(db, r->engine_ms, &m, err) < 0 ||
        (n = cp_sqlite_write_learned(db, r->ip.ms, err)) < 0 ||
        cp_sqlite_save_delivered(db, &r->ip.engine.delivered, r->engine_ms,
                                 err) < 0) {
        fprintf(stderr, "chokepoint learn: %s: %s\n", path, err);
        cp_sqlite_close(db);
        return -1;
    }
    cp_sqlite_close(db);
    r->learned = n;
    r->state_path = path;
    return 0;
}

static void
report_learned(struct replay *r)
{
    char a[40] = "-", b[40] = "-";

    if (r->have_clock) {
        cp_format_time(a, sizeof(a), r->first_ms);
        cp_format_time(b, sizeof(b), r->last_ms);
    }
    if (r->o.json) {
        struct strbuf sb;

        sb_init(&sb);
        sb_json_open(&sb, CP_JSON_LEARN);
        sb_json_ku64(&sb, "files", r->o.nfiles, false);
        sb_json_ku64(&sb, "lines", r->n.lines, false);
        sb_json_ku64(&sb, "messages", r->n.messages, false);
        sb_json_ku64(&sb, "accounts", (uint64_t)r->learned, false);
        sb_puts(&sb, ",");
        json_time(&sb, "first", r->have_clock, r->first_ms);
        sb_puts(&sb, ",");
        json_time(&sb, "last", r->have_clock, r->last_ms);
        sb_json_ku64(&sb, "delivered_recipients", r->ip.engine.delivered.used,
                     false);
        sb_json_kcstr(&sb, "state", r->state_path, false);
        sb_puts(&sb, "}\n");
        fputs(sb.data, stdout);
        sb_fini(&sb);
        return;
    }
    printf("learned the habits of %ld accounts (logins, and client networks "
           "of mail without one) from %llu messages in %zu log%s, %s .. %s; "
           "%zu recipients delivered to; stored in %s\n",
           r->learned, (unsigned long long)r->n.messages, r->o.nfiles,
           r->o.nfiles == 1 ? "" : "s", a, b, r->ip.engine.delivered.used,
           r->state_path);
}

/*
 * chokepoint replay / learn: load the config (replay: shadow forced on:
 * the mail was delivered, the report says what would have happened;
 * learn: the engine only learns), stream the logs oldest first, print the
 * report or store the habits. Exit status 0, 1 (config, log or state
 * unreadable, or the daemon running for learn), 2 (usage).
 */
int
replay_main(int argc, char **argv)
{
    struct rp_opts o;
    struct replay *r;
    char err[CP_ERR_MAX];
    int rc = 0, prc;
    double t0;

    memset(&o, 0, sizeof(o));
    if ((prc = parse_opts(argc, argv, &o)) != 0)
        return prc < 0 ? 0 : prc;
    r = replay_new(&o);
    if (inproc_open(&r->ip, o.config, o.no_map || o.map, o.map, err) < 0) {
        fprintf(stderr, "chokepoint %s: %s\n", cmd_name(r), err);
        replay_free(r);
        return 1;
    }
    r->ip.cfg->shadow = true;
    r->ip.on_change = on_change;
    r->ip.change_arg = r;
    r->ip.engine.learning = o.learn;
    if (o.learn && o.state == NULL && daemon_running(r->ip.cfg)) {
        fprintf(stderr, "chokepoint learn: chokepointd is running (%s "
                        "answers): stop it first, or its next checkpoint "
                        "overwrites what is learned\n",
                r->ip.cfg->admin_socket);
        replay_free(r);
        return 1;
    }
    if (!o.learn && o.state != NULL && load_state(r, o.state) < 0) {
        replay_free(r);
        return 1;
    }
    t0 = now_mono_s();
    for (size_t i = 0; rc == 0 && i < o.nfiles; i++)
        rc = read_log(r, o.files[i]);
    finish_log(r);
    r->elapsed_s = now_mono_s() - t0;
    if (rc == 0 && o.learn)
        rc = store_learned(r);
    if (rc == 0 && o.learn)
        report_learned(r);
    else if (rc == 0)
        write_report(r);
    replay_free(r);
    return rc == 0 ? 0 : 1;
}
