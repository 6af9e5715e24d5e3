/*
 * redis.c — the fleet store's client; see redis.h for the contract.
 *
 * One asynchronous hiredis connection carries every decision (EVALSHA of
 * lua/decide.lua): hiredis queues the commands of one loop iteration and
 * writes them together, so the requests of many Postfix connections are
 * pipelined on it. Requests wait in a FIFO (replies come in order); one
 * timer answers the ones older than store.redis_timeout locally (their
 * late replies are then read and dropped), and a connection whose oldest
 * request has waited store.redis_connect_timeout is taken for dead and
 * reconnected.
 *
 * On connect: AUTH (if a password is set), SELECT (if a database is), and
 * SCRIPT LOAD of both scripts; the connection is ready when the last
 * reply is in. A NOSCRIPT reply (the server restarted or SCRIPT FLUSH
 * ran) answers that request locally and loads the scripts again.
 *
 * Trust: replies are checked for type and size before use; a reply that
 * does not fit is an error, logged (rate-limited) and answered locally.
 */
#include "store/redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/lifecycle.h"
#include "redis_lua.h"
#include "util/msg.h"
#include "util/ratelog.h"
#include "util/xalloc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define MAX_ARGS (10 + 2 * CP_MAX_SLOTS + 5 * CP_MAX_RULES)
#define KEY_BUF (2 * CP_KEY_MAX + 8)

/*
 * hiredis on the libuv loop. Debian 12's adapter (hiredis/adapters/libuv.h)
 * drops a poll callback whose status is an error, and libuv reports a
 * socket error (a reset: Redis killed with replies unread) that way, not
 * as an event: the connection would go dead unnoticed. This one, written
 * along the same lines, hands an error to hiredis as a read, which then
 * fails and disconnects.
 */
struct uvev {
    redisAsyncContext *ac;
    uv_poll_t h;
    int events;
};

static void
uvev_poll(uv_poll_t *h, int status, int events)
{
    struct uvev *p = h->data;

    if (status < 0)
        events = UV_READABLE; /* the read sees the error */
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void
uvev_update(struct uvev *p, int add, int del)
{
    p->events = (p->events | add) & ~del;
    if (p->events)
        uv_poll_start(&p->h, p->events, uvev_poll);
    else
        uv_poll_stop(&p->h);
}

static void
uvev_add_read(void *priv)
{
    uvev_update(priv, UV_READABLE, 0);
}

static void
uvev_del_read(void *priv)
{
    uvev_update(priv, 0, UV_READABLE);
}

static void
uvev_add_write(void *priv)
{
    uvev_update(priv, UV_WRITABLE, 0);
}

static void
uvev_del_write(void *priv)
{
    uvev_update(priv, 0, UV_WRITABLE);
}

static void
uvev_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
uvev_cleanup(void *priv)
{
    struct uvev *p = priv;

    p->ac = NULL;
    uv_close((uv_handle_t *)&p->h, uvev_closed);
}

static int
uvev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct uvev *p;

    if (ac->ev.data != NULL)
        return REDIS_ERR;
    p = xcalloc(1, sizeof(*p));
    if (uv_poll_init(loop, &p->h, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->ac = ac;
    p->h.data = p;
    ac->ev.addRead = uvev_add_read;
    ac->ev.delRead = uvev_del_read;
    ac->ev.addWrite = uvev_add_write;
    ac->ev.delWrite = uvev_del_write;
    ac->ev.cleanup = uvev_cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}

struct cp_redis_req {
    struct cp_redis *r;
    struct cp_redis_req *prev, *next; /* the FIFO, while awaiting */
    cp_redis_cb *cb;                  /* NULL: answered or cancelled */
    void *arg;
    uint64_t sent_ms;                 /* uv_now() */
    size_t nrules;
    bool queued;
};

struct cp_redis {
    uv_loop_t *loop;
    struct redis_url url;
    char where[REDIS_URL_MAX_HOST + 16];
    uint64_t timeout_ms, connect_timeout_ms;
    redisAsyncContext *ac;
    bool ready;       /* connected, authenticated, scripts loaded */
    bool closing;
    int setup_left;   /* replies to come before ready */
    char sha_decide[41], sha_state[41];
    uv_timer_t timer; /* request deadlines, connect timeout, reconnect */
    uv_check_t flush; /* writes this loop iteration's commands at its end */
    bool unflushed;
    int open_handles; /* freed when both have closed */
    uint64_t attempt_ms;
    uint64_t backoff_ms;
    struct cp_redis_req *head, *tail;
    uint64_t unreplied;      /* decisions sent, no reply read yet (also the
                                ones answered locally for being late) */
    uint64_t last_reply_ms;  /* uv_now() of the last reply, or of the
                                first unreplied send */
    redisContext *sync; /* a person's commands */
    void (*on_up)(void *arg);
    void *up_arg;
    struct cp_redis_stats st;
    struct ratelog rl;
    bool was_up;      /* to log each outage once */
    bool emptied;     /* this connection found Redis without the fleet
                         data this host saw before (see on_epoch_set) */
    char epoch[64];   /* the epoch seen last */
};

static void connect_now(struct cp_redis *r);
static void on_flush(uv_check_t *h);
static void on_handle_closed(uv_handle_t *h);
static void arm(struct cp_redis *r);

static void
fifo_del(struct cp_redis_req *q)
{
    struct cp_redis *r = q->r;

    if (!q->queued)
        return;
    if (q->prev)
        q->prev->next = q->next;
    else
        r->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        r->tail = q->prev;
    q->queued = false;
}

/* Answer q (with NULL: locally), once. */
static void
answer(struct cp_redis_req *q, const struct cp_remote *rem)
{
    cp_redis_cb *cb = q->cb;

    fifo_del(q);
    q->cb = NULL;
    if (cb != NULL)
        cb(q->arg, rem);
}

static void
warn_reply(struct cp_redis *r, const char *what, const redisReply *rep)
{
    r->st.errors++;
    if (ratelog_allow(&r->rl))
        msg_warn("fleet store %s: %s: %.*s", r->where, what,
                 rep && rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 18,
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str
                                                       : "unexpected reply");
}

/* ---- the connection ---- */

static void
go_down(struct cp_redis *r, const char *why)
{
    redisAsyncContext *ac = r->ac;

    r->ac = NULL;
    r->ready = false;
    r->unreplied = 0;
    if (r->was_up) {
        r->st.disconnects++;
        msg_warn("fleet store %s: %s; deciding from the local copy until it "
                 "is back",
                 r->where, why);
        r->was_up = false;
    } else if (ratelog_allow(&r->rl)) {
        msg_warn("fleet store %s: %s; deciding from the local copy", r->where,
                 why);
    }
    while (r->head != NULL) {
        r->st.failed++;
        answer(r->head, NULL);
    }
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac); /* calls each pending callback with NULL */
    }
    if (!r->closing) {
        r->backoff_ms = r->backoff_ms == 0 ? BACKOFF_MIN_MS
                                           : r->backoff_ms * 2;
        if (r->backoff_ms > BACKOFF_MAX_MS)
            r->backoff_ms = BACKOFF_MAX_MS;
        arm(r);
    }
}

static void
on_setup(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cp_redis *r = ac->data;
    redisReply *rep = reply;
    char *sha = priv;

    if (r == NULL || r->ac != ac)
        return;
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        char why[200];

        snprintf(why, sizeof(why), "set-up refused: %.*s",
                 rep ? (int)rep->len : 9, rep ? rep->str : "no answer");
        go_down(r, why);
        return;
    }
    if (sha != NULL) {
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
            go_down(r, "SCRIPT LOAD: unexpected reply");
            return;
        }
        memcpy(sha, rep->str, 40);
        sha[40] = '\0';
    }
    if (--r->setup_left > 0)
        return;
    r->ready = true;
    r->backoff_ms = 0;
    r->st.connects++;
    if (!r->was_up)
        msg_info("fleet store %s: connected; decisions are shared", r->where);
    r->was_up = true;
    arm(r);
    if (r->on_up)
        r->on_up(r->up_arg);
}

/*
 * "cp:fleet" holds the epoch of a Redis's fleet data: a random value set
 * by the first host that finds it missing. A host that finds no epoch
 * (it set it: a new or emptied Redis), or another epoch than the one it
 * saw last (Redis lost its data since), hands it what it knows.
 */
static void
on_epoch_set(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cp_redis *r = ac->data;
    redisReply *rep = reply;

    (void)priv;
    if (r == NULL || r->ac != ac || rep == NULL)
        return;
    r->emptied = rep->type == REDIS_REPLY_STATUS; /* "OK": it was missing */
    on_setup(ac, reply, NULL);
}

static void
on_epoch_get(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cp_redis *r = ac->data;
    redisReply *rep = reply;

    (void)priv;
    if (r == NULL || r->ac != ac || rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_STRING && rep->len < sizeof(r->epoch)) {
        if (r->epoch[0] != '\0' && (strlen(r->epoch) != rep->len ||
                                    memcmp(r->epoch, rep->str, rep->len)))
            r->emptied = true;
        memcpy(r->epoch, rep->str, rep->len);
        r->epoch[rep->len] = '\0';
    }
    on_setup(ac, reply, NULL);
}

static void
load_scripts(struct cp_redis *r)
{
    r->setup_left += 2;
    redisAsyncCommand(r->ac, on_setup, r->sha_decide, "SCRIPT LOAD %s",
                      lua_decide);
    redisAsyncCommand(r->ac, on_setup, r->sha_state, "SCRIPT LOAD %s",
                      lua_state);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct cp_redis *r = ac->data;

    if (r == NULL || r->ac != ac)
        return;
    if (status != REDIS_OK) {
        char why[200];

        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        r->ac = NULL; /* hiredis frees it after this callback */
        r->ready = false;
        ((redisAsyncContext *)ac)->data = NULL;
        r->backoff_ms = r->backoff_ms == 0 ? BACKOFF_MIN_MS
                                           : r->backoff_ms * 2;
        if (r->backoff_ms > BACKOFF_MAX_MS)
            r->backoff_ms = BACKOFF_MAX_MS;
        if (r->was_up || ratelog_allow(&r->rl))
            msg_warn("fleet store %s: %s; deciding from the local copy",
                     r->where, why);
        if (r->was_up)
            r->st.disconnects++;
        r->was_up = false;
        arm(r);
    }
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    struct cp_redis *r = ac->data;

    if (r == NULL || r->ac != ac)
        return;
    ((redisAsyncContext *)ac)->data = NULL;
    r->ac = NULL; /* hiredis frees it after this callback */
    go_down(r, status == REDIS_OK ? "connection closed"
                                  : "connection lost");
}

static void
connect_now(struct cp_redis *r)
{
    redisAsyncContext *ac;

    if (r->url.path[0] != '\0')
        ac = redisAsyncConnectUnix(r->url.path);
    else
        ac = redisAsyncConnect(r->url.host, r->url.port);
    if (ac == NULL)
        msg_fatal("out of memory");
    r->attempt_ms = uv_now(r->loop);
    if (ac->err) {
        char why[200];

        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        redisAsyncFree(ac);
        go_down(r, why);
        return;
    }
    ac->data = r;
    if (uvev_attach(ac, r->loop) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        go_down(r, "cannot watch the connection on the loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->setup_left = 0;
    if (r->url.has_password) {
        r->setup_left++;
        if (r->url.user[0] != '\0')
            redisAsyncCommand(ac, on_setup, NULL, "AUTH %s %s", r->url.user,
                              r->url.password);
        else
            redisAsyncCommand(ac, on_setup, NULL, "AUTH %s", r->url.password);
    }
    if (r->url.db != 0) {
        r->setup_left++;
        redisAsyncCommand(ac, on_setup, NULL, "SELECT %u", r->url.db);
    }
    r->setup_left += 2;
    redisAsyncCommand(ac, on_epoch_set, NULL, "SET cp:fleet %llx-%x NX",
                      (unsigned long long)uv_hrtime(), (unsigned)getpid());
    redisAsyncCommand(ac, on_epoch_get, NULL, "GET cp:fleet");
    load_scripts(r);
    arm(r);
}

/* The one timer: reconnect after the back-off; a connection attempt that
 * takes too long; the oldest request's deadline. */
static void
on_timer(uv_timer_t *t)
{
    struct cp_redis *r = t->data;
    uint64_t now = uv_now(r->loop);

    if (r->closing)
        return;
    if (r->ac == NULL) {
        connect_now(r);
        return;
    }
    if (!r->ready && now - r->attempt_ms >= r->connect_timeout_ms) {
        go_down(r, "no answer to the connection's set-up in time");
        return;
    }
    if (r->unreplied > 0 && now - r->last_reply_ms >= r->connect_timeout_ms) {
        go_down(r, "no reply for store.redis_connect_timeout");
        return;
    }
    while (r->head != NULL && now - r->head->sent_ms >= r->timeout_ms) {
        r->st.late++;
        answer(r->head, NULL); /* its reply is read and dropped */
    }
    arm(r);
}

static void
arm(struct cp_redis *r)
{
    uint64_t now = uv_now(r->loop), due;

    if (r->closing)
        return;
    if (r->ac == NULL)
        due = r->backoff_ms;
    else if (!r->ready)
        due = r->attempt_ms + r->connect_timeout_ms - now;
    else if (r->head != NULL)
        due = r->head->sent_ms + r->timeout_ms > now
                  ? r->head->sent_ms + r->timeout_ms - now
                  : 0;
    else if (r->unreplied > 0) /* late ones only: is it still alive? */
        due = r->last_reply_ms + r->connect_timeout_ms > now
                  ? r->last_reply_ms + r->connect_timeout_ms - now
                  : 0;
    else
        due = 0;
    if (r->ac != NULL && r->ready && r->head == NULL && r->unreplied == 0) {
        uv_timer_stop(&r->timer);
        return;
    }
    uv_timer_start(&r->timer, on_timer, due, 0);
}

/* ---- arguments ---- */

struct args {
    int n;
    const char *v[MAX_ARGS];
    size_t len[MAX_ARGS];
    char buf[MAX_ARGS * 32];
    size_t used;
};

static void
arg_mem(struct args *a, const char *p, size_t len)
{
    if (a->n >= MAX_ARGS)
        msg_panic("redis: too many arguments");
    a->v[a->n] = p;
    a->len[a->n++] = len;
}

static void
arg_fmt(struct args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
arg_fmt(struct args *a, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(a->buf + a->used, sizeof(a->buf) - a->used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(a->buf) - a->used)
        msg_panic("redis: argument buffer too small");
    arg_mem(a, a->buf + a->used, (size_t)n);
    a->used += (size_t)n + 1;
}

/* "cp:{KEY}" and the state's record: the same, or "cp:{KEY}LOGIN". */
static void
keys(struct args *a, char *kb, const char *key, size_t keylen,
     const char *dkey, size_t dkeylen)
{
    size_t n = 0;

    memcpy(kb, "cp:{", 4);
    memcpy(kb + 4, key, keylen);
    kb[4 + keylen] = '}';
    n = 5 + keylen;
    arg_mem(a, kb, n);
    if (dkey == NULL || (dkeylen == keylen && memcmp(dkey, key, keylen) == 0)) {
        arg_mem(a, kb, n);
        return;
    }
    memcpy(kb + n, kb, n);
    memcpy(kb + 2 * n, dkey, dkeylen);
    arg_mem(a, kb + n, n + dkeylen);
}

/* How long an idle NORMAL record is kept: twice the longest window, at
 * least an hour (its levels have drained by then). */
static uint64_t
idle_ttl(const struct cp_meter_op *op)
{
    uint64_t w = 3600000;

    for (size_t s = 0; s < op->nslots; s++)
        if (op->slots[s].window_ms * 2 > w)
            w = op->slots[s].window_ms * 2;
    return w;
}

/* ARGV of lua/decide.lua from an operation. */
static void
op_args(struct args *a, const struct cp_meter_op *op, const struct cp_await *aw,
        const struct cp_decision *d)
{
    size_t nrel = 0;

    arg_fmt(a, "%zu", op->nrules);
    arg_fmt(a, "%u", aw ? aw->refuse_states : 0);
    arg_fmt(a, "%u", aw ? aw->scale_states : 0);
    arg_fmt(a, "%.17g", aw ? aw->watch_factor : 1.0);
    arg_fmt(a, "%u", op->domain_hash);
    if (d != NULL && d->state_changed)
        arg_fmt(a, "%u,%u", d->prev_state, d->state);
    else
        arg_mem(a, "", 0);
    arg_fmt(a, "%llu", (unsigned long long)idle_ttl(op));
    for (size_t s = 0; s < op->nslots && s < CP_MAX_SLOTS; s++)
        nrel += op->release[op->slots[s].metric] > 0;
    arg_fmt(a, "%zu", nrel);
    for (size_t s = 0; s < op->nslots && s < CP_MAX_SLOTS; s++) {
        double v = op->release[op->slots[s].metric];

        if (v > 0) {
            arg_mem(a, op->slots[s].name, strlen(op->slots[s].name));
            arg_fmt(a, "%.17g", v);
        }
    }
    for (size_t i = 0; i < op->nrules; i++) {
        const struct cp_meter_rule *m = &op->rule[i];
        const char *nm = op->slots[m->slot].name;

        arg_mem(a, nm, strlen(nm));
        arg_fmt(a, "%.17g", m->cap);
        arg_fmt(a, "%.17g", m->rate);
        arg_fmt(a, "%.17g", m->cost);
        arg_fmt(a, "%d", (m->enforce ? 1 : 0) | (m->domain ? 2 : 0) |
                             (m->nocheck ? 4 : 0));
    }
}

/* ---- replies ---- */

static bool
rep_int(const redisReply *e, long long lo, long long hi, long long *out)
{
    if (e->type != REDIS_REPLY_INTEGER || e->integer < lo || e->integer > hi)
        return false;
    *out = e->integer;
    return true;
}

static bool
rep_reals(const redisReply *e, size_t n, double *out)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        const redisReply *x = e->element[i];
        char buf[64], *end;

        if (x->type != REDIS_REPLY_STRING || x->len == 0 ||
            x->len >= sizeof(buf))
            return false;
        memcpy(buf, x->str, x->len);
        buf[x->len] = '\0';
        out[i] = strtod(buf, &end);
        if (*end != '\0' || !isfinite(out[i]))
            return false;
    }
    return true;
}

/* The head of both scripts' replies: own, cust, repeat, since, lost. */
static bool
rep_states(const redisReply *rep, size_t n, struct cp_remote *out)
{
    long long v[5];

    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != n)
        return false;
    if (!rep_int(rep->element[0], 0, CP_ST_COUNT - 1, &v[0]) ||
        !rep_int(rep->element[1], 0, CP_ST_COUNT - 1, &v[1]) ||
        !rep_int(rep->element[2], 0, 255, &v[2]) ||
        !rep_int(rep->element[3], 0, UINT32_MAX, &v[3]) ||
        !rep_int(rep->element[4], 0, 1, &v[4]))
        return false;
    out->own = (uint8_t)v[0];
    out->cust = (uint8_t)v[1];
    out->own_repeat = (uint8_t)v[2];
    out->own_since_s = (uint32_t)v[3];
    out->change_refused = v[4] != 0;
    return true;
}

/* lua/decide.lua's reply (see its header). */
static bool
parse_decide(const redisReply *rep, size_t nrules, struct cp_remote *out)
{
    long long denied, over, newdom, created;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (!rep_states(rep, 11, out) ||
        !rep_int(rep->element[5], -1, (long long)nrules - 1, &denied) ||
        !rep_int(rep->element[6], 0, (1LL << CP_MAX_RULES) - 1, &over) ||
        !rep_int(rep->element[7], 0, 1, &newdom) ||
        !rep_int(rep->element[8], 0, 1, &created))
        return false;
    n = rep->element[9]->type == REDIS_REPLY_ARRAY
            ? rep->element[9]->elements
            : SIZE_MAX;
    if (n != 0 && n != nrules)
        return false;
    if (!rep_reals(rep->element[9], n, out->res.level) ||
        !rep_reals(rep->element[10], n, out->res.cost))
        return false;
    out->res.denied = (int)denied;
    out->res.over = (uint32_t)over;
    out->res.new_domain = newdom != 0;
    out->res.created = created != 0;
    return true;
}

static void
on_decide(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cp_redis_req *q = priv;
    struct cp_redis *r = q->r;
    redisReply *rep = reply;
    struct cp_remote rem;

    if (ac->data == r && r->unreplied > 0) {
        r->unreplied--;
        r->last_reply_ms = uv_now(r->loop);
    }
    if (rep != NULL && q->cb != NULL) {
        if (parse_decide(rep, q->nrules, &rem)) {
            r->st.answered++;
            answer(q, &rem);
        } else {
            if (rep->type == REDIS_REPLY_ERROR &&
                strncmp(rep->str, "NOSCRIPT", 8) == 0) {
                r->st.noscript++;
                if (ac->data == r && r->ready)
                    load_scripts(r); /* ready stays: the next ones queue
                                        after the load */
            }
            warn_reply(r, "a decision", rep);
            r->st.failed++;
            answer(q, NULL);
        }
    } else if (q->cb != NULL) {
        r->st.failed++;
        answer(q, NULL);
    }
    fifo_del(q);
    free(q);
    if (ac->data == r && !r->closing)
        arm(r);
}

struct cp_redis_req *
cp_redis_decide(struct cp_redis *r, const struct cp_decision *d,
                const struct cp_await *aw, cp_redis_cb *cb, void *arg)
{
    struct args a;
    char kb[KEY_BUF];
    struct cp_redis_req *q;

    if (!r->ready)
        return NULL;
    a.n = 0;
    a.used = 0;
    arg_mem(&a, "EVALSHA", 7);
    arg_mem(&a, r->sha_decide, 40);
    arg_mem(&a, "2", 1);
    keys(&a, kb, d->id.key, d->id.keylen, d->id.dkey, d->id.dkeylen);
    op_args(&a, &aw->op, aw, d);
    q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->nrules = aw->op.nrules;
    q->sent_ms = uv_now(r->loop);
    if (redisAsyncCommandArgv(r->ac, on_decide, q, a.n, a.v, a.len) !=
        REDIS_OK) {
        msg_debug("fleet store %s: not sent (flags %#x, err %d %s)", r->where,
                  r->ac->c.flags, r->ac->err, r->ac->errstr);
        free(q);
        return NULL;
    }
    if (r->unreplied++ == 0)
        r->last_reply_ms = q->sent_ms;
    q->queued = true;
    q->prev = r->tail;
    if (r->tail)
        r->tail->next = q;
    else
        r->head = q;
    r->tail = q;
    r->st.sent++;
    r->unflushed = true;
    if (q == r->head)
        arm(r);
    return q;
}

void
cp_redis_cancel(struct cp_redis_req *q)
{
    q->cb = NULL; /* the reply frees it */
}

static void
on_share(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cp_redis *r = ac->data;
    redisReply *rep = reply;

    (void)priv;
    if (r != NULL && rep != NULL && rep->type == REDIS_REPLY_ERROR)
        warn_reply(r, "a reservation given back", rep);
}

bool
cp_redis_share(struct cp_redis *r, const struct cp_meter_op *op)
{
    struct args a;
    char kb[KEY_BUF];

    if (!r->ready)
        return false;
    a.n = 0;
    a.used = 0;
    arg_mem(&a, "EVALSHA", 7);
    arg_mem(&a, r->sha_decide, 40);
    arg_mem(&a, "2", 1);
    keys(&a, kb, op->key, op->keylen, NULL, 0);
    op_args(&a, op, NULL, NULL);
    if (redisAsyncCommandArgv(r->ac, on_share, NULL, a.n, a.v, a.len) !=
        REDIS_OK)
        return false;
    r->st.shares++;
    r->unflushed = true;
    return true;
}

/* ---- a person's commands: the blocking connection ---- */

static void
sync_drop(struct cp_redis *r)
{
    if (r->sync != NULL)
        redisFree(r->sync);
    r->sync = NULL;
}

static int
sync_open(struct cp_redis *r, char *err)
{
    struct timeval tv = {(time_t)(r->connect_timeout_ms / 1000),
                         (suseconds_t)(r->connect_timeout_ms % 1000) * 1000};
    redisReply *rep = NULL;

    if (r->sync != NULL)
        return 0;
    r->sync = r->url.path[0] ? redisConnectUnixWithTimeout(r->url.path, tv)
                             : redisConnectWithTimeout(r->url.host,
                                                       r->url.port, tv);
    if (r->sync == NULL || r->sync->err) {
        snprintf(err, CP_ERR_MAX, "fleet store %s: cannot connect: %s",
                 r->where, r->sync ? r->sync->errstr : "out of memory");
        sync_drop(r);
        return -1;
    }
    redisSetTimeout(r->sync, tv);
    if (r->url.has_password)
        rep = r->url.user[0]
                  ? redisCommand(r->sync, "AUTH %s %s", r->url.user,
                                 r->url.password)
                  : redisCommand(r->sync, "AUTH %s", r->url.password);
    if (rep == NULL && r->url.db != 0)
        rep = redisCommand(r->sync, "SELECT %u", r->url.db);
    else if (rep != NULL && rep->type != REDIS_REPLY_ERROR && r->url.db != 0) {
        freeReplyObject(rep);
        rep = redisCommand(r->sync, "SELECT %u", r->url.db);
    }
    if ((r->url.has_password || r->url.db != 0) &&
        (rep == NULL || rep->type == REDIS_REPLY_ERROR)) {
        snprintf(err, CP_ERR_MAX, "fleet store %s: set-up refused: %.*s",
                 r->where, rep ? (int)rep->len : 10,
                 rep ? rep->str : "no answer");
        if (rep)
            freeReplyObject(rep);
        sync_drop(r);
        return -1;
    }
    if (rep)
        freeReplyObject(rep);
    return 0;
}

int
cp_redis_state(struct cp_redis *r, const struct cp_identity *id,
               const char *mode, int to, int from, struct cp_remote *out,
               char *err)
{
    struct args a;
    char kb[KEY_BUF];
    redisReply *rep;
    bool ok, reused;

    reused = r->sync != NULL;
    if (sync_open(r, err) < 0)
        return -1;
    a.n = 0;
    a.used = 0;
    arg_mem(&a, "EVAL", 4);
    arg_mem(&a, lua_state, strlen(lua_state));
    arg_mem(&a, "2", 1);
    keys(&a, kb, id->key, id->keylen, id->dkey, id->dkeylen);
    arg_mem(&a, mode, strlen(mode));
    arg_fmt(&a, "%d", to);
    arg_fmt(&a, "%d", from);
    arg_fmt(&a, "%llu", 7ULL * 86400000); /* an idle NORMAL state's */
    rep = redisCommandArgv(r->sync, a.n, a.v, a.len);
    if (rep == NULL && reused) {
        /* kept from an earlier command: Redis may have restarted since */
        sync_drop(r);
        if (sync_open(r, err) < 0)
            return -1;
        rep = redisCommandArgv(r->sync, a.n, a.v, a.len);
    }
    if (rep == NULL) {
        snprintf(err, CP_ERR_MAX, "fleet store %s: %s", r->where,
                 r->sync->errstr[0] ? r->sync->errstr : "no answer");
        sync_drop(r);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    ok = rep_states(rep, 6, out) &&
         rep->element[5]->type == REDIS_REPLY_INTEGER;
    if (ok)
        out->res.created = rep->element[5]->integer == 0; /* unknown */
    if (!ok)
        snprintf(err, CP_ERR_MAX, "fleet store %s: %.*s", r->where,
                 rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 16,
                 rep->type == REDIS_REPLY_ERROR ? rep->str
                                                : "unexpected reply");
    else
        out->change_refused = !out->change_refused; /* "applied" → lost */
    freeReplyObject(rep);
    return ok ? 0 : -1;
}

/* ---- life ---- */

struct cp_redis *
cp_redis_new(uv_loop_t *loop, const struct cp_config *cfg,
             void (*on_up)(void *arg), void *arg)
{
    struct cp_redis *r = xcalloc(1, sizeof(*r));

    r->loop = loop;
    r->on_up = on_up;
    r->up_arg = arg;
    ratelog_init(&r->rl, "fleet store warnings", 1, 10);
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_check_init(loop, &r->flush);
    r->flush.data = r;
    uv_check_start(&r->flush, on_flush);
    r->open_handles = 2;
    cp_redis_set_config(r, cfg);
    return r;
}

void
cp_redis_set_config(struct cp_redis *r, const struct cp_config *cfg)
{
    bool moved = memcmp(&r->url, &cfg->redis, sizeof(r->url)) != 0;

    r->url = cfg->redis;
    r->timeout_ms = cfg->redis_timeout_ms;
    r->connect_timeout_ms = cfg->redis_connect_timeout_ms;
    redis_url_where(&r->url, r->where, sizeof(r->where));
    if (moved && r->ac != NULL) {
        sync_drop(r);
        go_down(r, "store.redis changed");
    }
}

void
cp_redis_start(struct cp_redis *r)
{
    connect_now(r);
}

bool
cp_redis_up(const struct cp_redis *r)
{
    return r->ready;
}

bool
cp_redis_emptied(const struct cp_redis *r)
{
    return r->ready && r->emptied;
}

const struct cp_redis_stats *
cp_redis_stats(const struct cp_redis *r)
{
    return &r->st;
}

const char *
cp_redis_where(const struct cp_redis *r)
{
    return r->where;
}

/*
 * After the loop iteration's callbacks: write the commands they queued,
 * in one write, now, instead of at the next iteration's poll for
 * writability (a round of epoll less on every decision's latency).
 */
static void
on_flush(uv_check_t *h)
{
    struct cp_redis *r = h->data;

    if (!r->unflushed)
        return;
    r->unflushed = false;
    if (r->ac != NULL && !r->closing)
        redisAsyncHandleWrite(r->ac);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct cp_redis *r = h->data;

    if (--r->open_handles > 0)
        return;
    explicit_bzero(&r->url, sizeof(r->url));
    free(r);
}

void
cp_redis_close(struct cp_redis *r)
{
    redisAsyncContext *ac = r->ac;

    r->closing = true;
    r->ready = false;
    r->ac = NULL;
    while (r->head != NULL)
        answer(r->head, NULL);
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    sync_drop(r);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->flush, on_handle_closed);
}
