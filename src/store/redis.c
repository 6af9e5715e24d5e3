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
#include "store/tlsrelay.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/evidence.h"
#include "core/lifecycle.h"
#include "redis_lua.h"
#include "util/msg.h"
#include "util/parse.h"
#include "util/ratelog.h"
#include "util/xalloc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* EVALSHA SHA 3 K KD KH, decide.lua's 8 fixed arguments, a release per
 * slot, 2 per rule (its slot, its numbers packed; room for 5 is kept), the
 * evidence's 9 and 4 per signal gained */
#define MAX_ARGS (23 + 2 * CP_MAX_SLOTS + 5 * CP_MAX_RULES + 4 * CP_SIG_COUNT)
/* "cp:{KEY}" twice, then LOGIN: each key < CP_KEY_MAX */
#define KEY_BUF (5 * CP_KEY_MAX + 32)

/*
 * hiredis on the libuv loop. Debian 12's adapter (hiredis/adapters/libuv.h)
 * drops a poll callback whose status is an error, and libuv reports a
 * socket error (a reset: Redis killed with replies unread) that way, not
 * as an event: the connection would go dead unnoticed. This one, written
 * along the same lines, hands an error to hiredis as a read, which then
 * fails and disconnects. And a node's connection does not poll for
 * writability to send a command: the commands of a loop iteration are
 * written at its end (on_flush), and only output that did not fit waits
 * for writability (two epoll_ctl calls less per loop iteration).
 */
struct cp_redis;

struct uvev {
    redisAsyncContext *ac;
    uv_poll_t h;
    int events;
    struct cp_redis *r; /* a node's (flushed by on_flush), else NULL */
};

static void uvev_defer_write(struct cp_redis *r);
static bool uvev_flushing(const struct cp_redis *r);

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
    int ev = (p->events | add) & ~del;

    if (ev == p->events)
        return;
    p->events = ev;
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
    struct uvev *p = priv;

    /* (connecting: writability says the connection is made) */
    if (p->r != NULL && !uvev_flushing(p->r) &&
        (p->ac->c.flags & REDIS_CONNECTED)) {
        uvev_defer_write(p->r); /* written at the iteration's end */
        return;
    }
    uvev_update(p, UV_WRITABLE, 0); /* what did not fit */
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
uvev_attach(redisAsyncContext *ac, uv_loop_t *loop, struct cp_redis *r)
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
    p->r = r;
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
    double cost[CP_MAX_RULES]; /* each rule's, as sent */
    uint32_t domain;           /* the rules whose cost is a new domain's */
    bool queued;
    int node;                         /* where it was sent */
    int redirects;                    /* MOVED/ASK followed */
    char *cmd;                        /* formatted, to send it again */
    size_t cmdlen;
    struct cp_redis_evans ev;         /* the answer's evidence */
};

#define MAX_NODES 64
#define NSLOTS 16384
#define NO_NODE 0xff
#define MAX_REDIRECTS 3

/* One Redis server: the only one, or a node of a Cluster. */
struct rnode {
    struct cp_redis *r;
    int idx;
    char host[REDIS_URL_MAX_HOST];
    int port;
    char path[REDIS_URL_MAX_PATH];
    char where[REDIS_URL_MAX_HOST + 16];
    redisAsyncContext *ac;
    bool ready;       /* connected, authenticated, scripts loaded */
    bool used;        /* serves slots (a Cluster), or is the server */
    bool was_up;      /* to log each outage once */
    int setup_left;   /* replies to come before ready */
    uint64_t attempt_ms, backoff_ms;
    uint64_t unreplied;      /* decisions sent, no reply read yet (also the
                                ones answered locally for being late) */
    uint64_t last_reply_ms;  /* uv_now() of the last reply, or of the
                                first unreplied send */
};

struct cp_redis {
    uv_loop_t *loop;
    struct redis_url url;     /* the server, or the first seed: the
                                 password of every node */
    bool cluster;
    struct redis_url seeds[CP_REDIS_MAX_SEEDS];
    size_t nseeds;
    bool sentinel;            /* the primary is found through Sentinel */
    struct redis_url sentinels[CP_REDIS_MAX_SEEDS];
    size_t nsentinels, sentinel_next;
    char master[128];
    bool resolved;            /* node[0] is the primary Sentinel named */
    redisAsyncContext *sentinel_ac; /* asking one, or NULL */
    uint64_t sentinel_ms;
    char where[CP_REDIS_WHERE_MAX];
    uint64_t timeout_ms, connect_timeout_ms;
    struct rnode node[MAX_NODES];
    int nnodes;
    uint8_t slot[NSLOTS];     /* Cluster: the node of each slot */
    bool mapped;              /* the slot map is loaded (always, alone) */
    bool want_map;            /* a MOVED said the map is stale */
    bool map_asked;           /* CLUSTER SLOTS sent, no answer yet */
    bool up;                  /* every used node ready: on_up was called */
    bool epoch_asked;
    bool closing;
    char sha_decide[41], sha_state[41], sha_campaign[41];
    struct tls_relay *tls; /* rediss://: every connection goes through it */
    void (*on_camp)(void *arg, uint32_t band, uint64_t sketch, uint32_t sent,
                    uint32_t bad, uint32_t acct, uint32_t copies,
                    uint32_t now_s);
    void *camp_arg;
    uv_timer_t timer; /* request deadlines, connecting, reconnecting */
    uv_check_t flush; /* writes this loop iteration's commands at its end */
    uv_idle_t wake;   /* ...without blocking in the poll before it */
    bool flushing;
    bool unflushed;
    int open_handles; /* freed when all three have closed */
    struct cp_redis_req *head, *tail;
    redisContext *sync; /* a person's commands */
    int sync_node;
    void (*on_up)(void *arg);
    void *up_arg;
    struct cp_redis_stats st;
    struct ratelog rl;
    bool emptied;     /* Redis lacks the fleet data this host saw before */
    char epoch[64];   /* the epoch seen last */
};

static void node_connect(struct rnode *n);

/* rediss://: the local socket that reaches host:port over TLS (the path
 * of n for a unix socket, else NULL: host:port itself). */
static const char *
tls_path(struct cp_redis *r, const char *host, int port, const char *path)
{
    char err[CP_ERR_MAX];
    const char *p;

    if (r->tls == NULL || path[0] != '\0')
        return path[0] != '\0' ? path : NULL;
    if ((p = tls_relay_path(r->tls, host, port, err)) == NULL &&
        ratelog_allow(&r->rl))
        msg_warn("%s", err);
    return p != NULL ? p : "/nonexistent/chokepoint-tls-relay";
}

static redisAsyncContext *
async_connect(struct cp_redis *r, const char *host, int port,
              const char *path)
{
    const char *p = tls_path(r, host, port, path);

    return p != NULL ? redisAsyncConnectUnix(p) : redisAsyncConnect(host, port);
}
static void on_flush(uv_check_t *h);
static void on_handle_closed(uv_handle_t *h);
static void arm(struct cp_redis *r);
static void check_up(struct cp_redis *r);
static void on_decide(redisAsyncContext *ac, void *reply, void *priv);
static void on_role(redisAsyncContext *ac, void *reply, void *priv);

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
        cb(q->arg, rem, rem != NULL ? &q->ev : NULL);
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

/* ---- the connections ---- */

/* The next attempt after a back-off; with Sentinel, after asking where
 * the primary is now. */
static void
node_backoff(struct rnode *n)
{
    n->backoff_ms = n->backoff_ms == 0 ? BACKOFF_MIN_MS : n->backoff_ms * 2;
    if (n->backoff_ms > BACKOFF_MAX_MS)
        n->backoff_ms = BACKOFF_MAX_MS;
    n->attempt_ms = uv_now(n->r->loop);
    if (n->r->sentinel)
        n->r->resolved = false;
}

static void
node_lost_log(struct rnode *n, const char *why)
{
    struct cp_redis *r = n->r;
    char tls[300] = "", why_tls[256] = "";

    if (r->tls != NULL && n->path[0] == '\0') /* why the relay failed */
        tls_relay_why(r->tls, n->host, n->port, why_tls, sizeof(why_tls));
    if (why_tls[0] != '\0')
        snprintf(tls, sizeof(tls), " (TLS: %s)", why_tls);
    if (n->was_up) {
        r->st.disconnects++;
        msg_warn("fleet store %s: %s%s; deciding from the local copy until "
                 "it is back",
                 n->where, why, tls);
        n->was_up = false;
    } else if (ratelog_allow(&r->rl)) {
        msg_warn("fleet store %s: %s%s; deciding from the local copy",
                 n->where, why, tls);
    }
}

/* Drop n's connection: its requests are answered locally. */
static void
node_down(struct rnode *n, const char *why)
{
    struct cp_redis *r = n->r;
    redisAsyncContext *ac = n->ac;
    struct cp_redis_req *q;

    n->ac = NULL;
    n->ready = false;
    n->unreplied = 0;
    /* a CLUSTER SLOTS or an epoch asked of it gets no answer now: ask
     * again (an answer that still comes is harmless) */
    r->map_asked = false;
    r->epoch_asked = false;
    node_lost_log(n, why);
    /* from the head again after each: an answer may start or cancel
     * other requests */
    for (q = r->head; q != NULL;) {
        if (q->node == n->idx) {
            r->st.failed++;
            answer(q, NULL);
            q = r->head;
        } else {
            q = q->next;
        }
    }
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac); /* calls each pending callback with NULL */
    }
    if (r->cluster)
        r->want_map = true; /* a failover moves its slots */
    if (!r->closing)
        node_backoff(n);
    check_up(r);
    arm(r);
}

static struct rnode *
ac_node(const redisAsyncContext *ac)
{
    struct rnode *n = ac->data;

    return n != NULL && n->ac == ac ? n : NULL;
}

static void
on_setup(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rnode *n = ac_node(ac);
    redisReply *rep = reply;
    char *sha = priv;

    if (n == NULL)
        return;
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        char why[200];

        snprintf(why, sizeof(why), "set-up refused: %.*s",
                 rep ? (int)rep->len : 9, rep ? rep->str : "no answer");
        node_down(n, why);
        return;
    }
    if (sha != NULL) {
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
            node_down(n, "SCRIPT LOAD: unexpected reply");
            return;
        }
        memcpy(sha, rep->str, 40);
        sha[40] = '\0';
    }
    if (--n->setup_left > 0)
        return;
    n->ready = true;
    n->backoff_ms = 0;
    n->r->st.connects++;
    if (!n->was_up)
        msg_info("fleet store %s: connected; decisions are shared",
                 n->where);
    n->was_up = true;
    check_up(n->r);
    arm(n->r);
}

/* Sentinel: the server named must be the primary still (a failed one
 * comes back as a replica). */
static void
on_role(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rnode *n = ac_node(ac);
    redisReply *rep = reply;

    if (n == NULL)
        return;
    if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
        rep->element[0]->type == REDIS_REPLY_STRING &&
        (rep->element[0]->len != 6 ||
         memcmp(rep->element[0]->str, "master", 6) != 0)) {
        node_down(n, "not the primary (ROLE): asking the Sentinels again");
        return;
    }
    on_setup(ac, reply, priv);
}

static void
load_scripts(struct rnode *n)
{
    n->setup_left += 3;
    redisAsyncCommand(n->ac, on_setup, n->r->sha_decide, "SCRIPT LOAD %s",
                      lua_decide);
    redisAsyncCommand(n->ac, on_setup, n->r->sha_state, "SCRIPT LOAD %s",
                      lua_state);
    redisAsyncCommand(n->ac, on_setup, n->r->sha_campaign, "SCRIPT LOAD %s",
                      lua_campaign);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct rnode *n = ac_node(ac);
    char why[200];

    if (n == NULL || status == REDIS_OK)
        return;
    snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
    ((redisAsyncContext *)ac)->data = NULL;
    n->ac = NULL; /* hiredis frees it after this callback */
    n->ready = false;
    node_lost_log(n, why);
    node_backoff(n);
    arm(n->r);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rnode *n = ac_node(ac);

    if (n == NULL)
        return;
    ((redisAsyncContext *)ac)->data = NULL;
    n->ac = NULL; /* hiredis frees it after this callback */
    node_down(n, status == REDIS_OK ? "connection closed" : "connection lost");
}

static void
node_connect(struct rnode *n)
{
    struct cp_redis *r = n->r;
    redisAsyncContext *ac;

    ac = async_connect(r, n->host, n->port, n->path);
    if (ac == NULL)
        msg_fatal("out of memory");
    n->attempt_ms = uv_now(r->loop);
    if (ac->err) {
        char why[200];

        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        redisAsyncFree(ac);
        node_lost_log(n, why);
        node_backoff(n);
        return;
    }
    ac->data = n;
    if (uvev_attach(ac, r->loop, r) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        node_lost_log(n, "cannot watch the connection on the loop");
        node_backoff(n);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    n->ac = ac;
    n->setup_left = 0;
    if (r->url.has_password) {
        n->setup_left++;
        if (r->url.user[0] != '\0')
            redisAsyncCommand(ac, on_setup, NULL, "AUTH %s %s", r->url.user,
                              r->url.password);
        else
            redisAsyncCommand(ac, on_setup, NULL, "AUTH %s", r->url.password);
    }
    if (r->url.db != 0 && !r->cluster) {
        n->setup_left++;
        redisAsyncCommand(ac, on_setup, NULL, "SELECT %u", r->url.db);
    }
    if (r->sentinel) {
        n->setup_left++;
        redisAsyncCommand(ac, on_role, NULL, "ROLE");
    }
    load_scripts(n);
}

static struct rnode *
node_add(struct cp_redis *r, const char *host, size_t hlen, int port)
{
    struct rnode *n;

    for (int i = 0; i < r->nnodes; i++)
        if (r->node[i].port == port && strlen(r->node[i].host) == hlen &&
            memcmp(r->node[i].host, host, hlen) == 0)
            return &r->node[i];
    if (r->nnodes >= MAX_NODES || hlen >= sizeof(n->host))
        return NULL;
    n = &r->node[r->nnodes];
    memset(n, 0, sizeof(*n));
    n->r = r;
    n->idx = r->nnodes++;
    memcpy(n->host, host, hlen);
    n->host[hlen] = '\0';
    n->port = port;
    snprintf(n->where, sizeof(n->where),
             strchr(n->host, ':') ? "[%s]:%d" : "%s:%d", n->host, port);
    return n;
}

/* ---- a Cluster's slot map ---- */

/* CRC16-CCITT (XMODEM), Redis Cluster's key hash. */
static uint16_t
crc16(const char *p, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                                 : (uint16_t)(crc << 1);
    }
    return crc;
}

/* The slot of a key: its hash tag's ({...}, non-empty), else the key's. */
static unsigned
key_slot(const char *k, size_t len)
{
    const char *open = memchr(k, '{', len), *close;

    if (open != NULL) {
        close = memchr(open + 1, '}', len - (size_t)(open + 1 - k));
        if (close != NULL && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) % NSLOTS;
    }
    return crc16(k, len) % NSLOTS;
}

static struct rnode *
slot_node(struct cp_redis *r, const char *k, size_t len)
{
    unsigned s;

    if (!r->cluster)
        return &r->node[0];
    s = key_slot(k, len);
    return r->slot[s] == NO_NODE ? NULL : &r->node[r->slot[s]];
}

/* CLUSTER SLOTS: [[start, end, [host, port, ...], replicas...], ...] */
static void
on_slots(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rnode *from = ac_node(ac);
    struct cp_redis *r;
    redisReply *rep = reply;
    uint8_t map[NSLOTS];
    bool used[MAX_NODES] = {false};

    (void)priv;
    if (from == NULL)
        return;
    r = from->r;
    r->map_asked = false;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        warn_reply(r, "CLUSTER SLOTS", rep);
        return;
    }
    memset(map, NO_NODE, sizeof(map));
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i], *m;
        struct rnode *n;

        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            (m = e->element[2])->type != REDIS_REPLY_ARRAY ||
            m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[0]->integer < 0 || e->element[1]->integer >= NSLOTS ||
            e->element[0]->integer > e->element[1]->integer ||
            m->element[1]->integer <= 0 || m->element[1]->integer > 65535) {
            warn_reply(r, "CLUSTER SLOTS", NULL);
            return;
        }
        /* an empty host: the node we asked (Redis 7's unknown endpoint) */
        n = m->element[0]->len == 0
                ? from
                : node_add(r, m->element[0]->str, m->element[0]->len,
                           (int)m->element[1]->integer);
        if (n == NULL) {
            warn_reply(r, "CLUSTER SLOTS: too many nodes", NULL);
            return;
        }
        used[n->idx] = true;
        memset(map + e->element[0]->integer, n->idx,
               (size_t)(e->element[1]->integer - e->element[0]->integer + 1));
    }
    memcpy(r->slot, map, sizeof(map));
    for (int i = 0; i < r->nnodes; i++)
        r->node[i].used = used[i];
    if (!r->mapped)
        msg_info("fleet store: Redis Cluster of %d nodes mapped",
                 (int)rep->elements);
    r->mapped = true;
    r->want_map = false;
    for (int i = 0; i < r->nnodes; i++)
        if (r->node[i].used && r->node[i].ac == NULL &&
            r->node[i].backoff_ms == 0)
            node_connect(&r->node[i]);
    check_up(r);
    arm(r);
}

/* Ask a ready node for the slot map. */
static void
ask_map(struct cp_redis *r)
{
    for (int i = 0; i < r->nnodes && !r->map_asked; i++)
        if (r->node[i].ready) {
            redisAsyncCommand(r->node[i].ac, on_slots, NULL, "CLUSTER SLOTS");
            r->map_asked = true;
        }
}

/*
 * "cp:fleet" holds the epoch of a Redis's fleet data: a random value set
 * by the first host that finds it missing. A host that finds no epoch
 * (it set it: a new or emptied Redis), or another epoch than the one it
 * saw last (Redis lost its data since), hands it what it knows. Asked each
 * time the store comes up; on_up is called with the answer.
 */
static void
on_epoch(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rnode *n = ac_node(ac);
    struct cp_redis *r;
    redisReply *rep = reply, *set, *get;

    (void)priv;
    if (n == NULL)
        return;
    r = n->r;
    r->epoch_asked = false;
    /* MULTI/EXEC: [SET's answer, GET's] */
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        warn_reply(r, "the fleet epoch", rep);
        return;
    }
    set = rep->element[0];
    get = rep->element[1];
    r->emptied = set->type == REDIS_REPLY_STATUS; /* "OK": it was missing */
    if (get->type == REDIS_REPLY_STRING && get->len < sizeof(r->epoch)) {
        if (r->epoch[0] != '\0' && (strlen(r->epoch) != get->len ||
                                    memcmp(r->epoch, get->str, get->len)))
            r->emptied = true;
        memcpy(r->epoch, get->str, get->len);
        r->epoch[get->len] = '\0';
    }
    if (r->up && r->on_up)
        r->on_up(r->up_arg);
}

static void
ask_epoch(struct cp_redis *r)
{
    struct rnode *n = slot_node(r, "cp:fleet", 8);

    if (n == NULL || !n->ready || r->epoch_asked)
        return;
    redisAsyncCommand(n->ac, NULL, NULL, "MULTI");
    redisAsyncCommand(n->ac, NULL, NULL, "SET cp:fleet %llx-%x NX",
                      (unsigned long long)uv_hrtime(), (unsigned)getpid());
    redisAsyncCommand(n->ac, NULL, NULL, "GET cp:fleet");
    redisAsyncCommand(n->ac, on_epoch, NULL, "EXEC");
    r->epoch_asked = true;
}

/* Up: mapped, and every node that serves slots ready. On the way up the
 * epoch is asked (then on_up); on the way down, nothing (the nodes log). */
static void
check_up(struct cp_redis *r)
{
    bool up = r->mapped && !r->closing;

    for (int i = 0; up && i < r->nnodes; i++)
        if (r->node[i].used && !r->node[i].ready)
            up = false;
    if (up == r->up)
        return;
    r->up = up;
    if (up)
        ask_epoch(r);
}

/* ---- Sentinel: where the primary is ---- */

static void
on_sentinel(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cp_redis *r = ac->data;
    redisReply *rep = reply;
    struct rnode *n;
    uint64_t port;

    (void)priv;
    if (r == NULL || r->sentinel_ac != ac)
        return;
    r->sentinel_ac = NULL;
    ac->data = NULL;
    redisAsyncDisconnect(ac);
    n = &r->node[0];
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING ||
        rep->element[0]->len == 0 ||
        rep->element[0]->len >= sizeof(n->host) ||
        !parse_u64(rep->element[1]->str, rep->element[1]->len, &port) ||
        port == 0 || port > 65535) {
        if (ratelog_allow(&r->rl))
            msg_warn("fleet store: Sentinel %s:%d does not name the primary "
                     "'%s' (%s%.*s); trying the next",
                     r->sentinels[(r->sentinel_next - 1) % r->nsentinels].host,
                     r->sentinels[(r->sentinel_next - 1) % r->nsentinels].port,
                     r->master,
                     rep == NULL                       ? "no answer"
                     : rep->type == REDIS_REPLY_ERROR ? "it said: "
                     : rep->type == REDIS_REPLY_NIL   ? "it knows no "
                                                         "primary of that "
                                                         "name"
                                                       : "an answer of "
                                                         "another shape",
                     rep != NULL && rep->type == REDIS_REPLY_ERROR
                         ? (int)(rep->len > 200 ? 200 : rep->len)
                         : 0,
                     rep != NULL && rep->type == REDIS_REPLY_ERROR ? rep->str
                                                                   : "");
        node_backoff(n);
        return;
    }
    /* the node's back-off goes on until it answers (on_setup resets it) */
    memcpy(n->host, rep->element[0]->str, rep->element[0]->len);
    n->host[rep->element[0]->len] = '\0';
    n->port = (int)port;
    snprintf(n->where, sizeof(n->where),
             strchr(n->host, ':') ? "[%s]:%d (%s)" : "%s:%d (%s)", n->host,
             n->port, r->master);
    r->resolved = true;
    node_connect(n);
}

/* Ask the next Sentinel where the primary is; on_sentinel connects. */
static void
sentinel_ask(struct cp_redis *r)
{
    const struct redis_url *u =
        &r->sentinels[r->sentinel_next++ % r->nsentinels];
    redisAsyncContext *ac = async_connect(r, u->host, u->port, "");

    if (ac == NULL)
        msg_fatal("out of memory");
    r->sentinel_ms = uv_now(r->loop);
    if (ac->err || uvev_attach(ac, r->loop, NULL) != REDIS_OK) {
        redisAsyncFree(ac);
        node_backoff(&r->node[0]);
        return;
    }
    ac->data = r;
    r->sentinel_ac = ac;
    /* (a refused password: the question's answer says so, NOAUTH) */
    if (u->has_password && u->user[0] != '\0')
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", u->user, u->password);
    else if (u->has_password)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", u->password);
    redisAsyncCommand(ac, on_sentinel, NULL,
                      "SENTINEL get-master-addr-by-name %s", r->master);
}

static void
sentinel_drop(struct cp_redis *r)
{
    redisAsyncContext *ac = r->sentinel_ac;

    if (ac == NULL)
        return;
    r->sentinel_ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* The one timer, every TICK_MS while anything waits: connections to make
 * (after their back-off) or that take too long, nodes that stopped
 * answering, requests past store.redis_timeout, a slot map to fetch. */
#define TICK_MS 10

static void
on_timer(uv_timer_t *t)
{
    struct cp_redis *r = t->data;
    uint64_t now = uv_now(r->loop);

    if (r->closing)
        return;
    for (int i = 0; i < r->nnodes; i++) {
        struct rnode *n = &r->node[i];

        if (!n->used)
            continue;
        if (r->sentinel && !r->resolved) {
            if (r->sentinel_ac != NULL &&
                now - r->sentinel_ms >= r->connect_timeout_ms)
                sentinel_drop(r); /* and the next one, below */
            if (r->sentinel_ac == NULL &&
                now - n->attempt_ms >= n->backoff_ms)
                sentinel_ask(r);
        } else if (n->ac == NULL && now - n->attempt_ms >= n->backoff_ms) {
            node_connect(n);
        }
        if (n->ac != NULL && !n->ready &&
            now - n->attempt_ms >= r->connect_timeout_ms)
            node_down(n, "no answer to the connection's set-up in time");
        else if (n->ready && n->unreplied > 0 &&
                 now - n->last_reply_ms >= r->connect_timeout_ms)
            node_down(n, "no reply for store.redis_connect_timeout");
    }
    while (r->head != NULL && now - r->head->sent_ms >= r->timeout_ms) {
        r->st.late++;
        answer(r->head, NULL); /* its reply is read and dropped */
    }
    if (r->cluster && (!r->mapped || r->want_map))
        ask_map(r);
    arm(r);
}

/* Keep the timer running while something waits; stop it when all is
 * quiet. */
static void
arm(struct cp_redis *r)
{
    bool busy = r->head != NULL || (r->cluster && (!r->mapped || r->want_map));

    if (r->closing)
        return;
    for (int i = 0; !busy && i < r->nnodes; i++) {
        const struct rnode *n = &r->node[i];

        busy = n->used && (!n->ready || n->unreplied > 0);
    }
    if (!busy) {
        uv_timer_stop(&r->timer);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&r->timer))
        uv_timer_start(&r->timer, on_timer, TICK_MS, TICK_MS);
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

/* A rule's numbers for decide.lua as struct.unpack("<dddB") reads them:
 * cap, rate and cost as little-endian IEEE doubles, then the flags (no
 * number made a string and read back: exact, and cheaper on both
 * sides). */
static void
arg_rule(struct args *a, const double v[3], unsigned flags)
{
    unsigned char *p = (unsigned char *)a->buf + a->used;

    if (sizeof(a->buf) - a->used < 25)
        msg_panic("redis: argument buffer too small");
    for (int i = 0; i < 3; i++) {
        uint64_t u;

        memcpy(&u, &v[i], sizeof(u));
        for (int b = 0; b < 8; b++)
            p[8 * i + b] = (unsigned char)(u >> (8 * b));
    }
    p[24] = (unsigned char)flags;
    arg_mem(a, (const char *)p, 25);
    a->used += 25;
}

/* An account's key: PREFIX{KEY}, then LOGIN when the record is a login's
 * other than the customer's own (dkey NULL: the customer's); its length. */
static size_t
acct_key(char *out, const char *prefix, const char *key, size_t keylen,
         const char *dkey, size_t dkeylen)
{
    size_t n = strlen(prefix);

    if (keylen >= CP_KEY_MAX || dkeylen >= CP_KEY_MAX)
        msg_panic("redis: a key of %zu bytes", keylen > dkeylen ? keylen
                                                                : dkeylen);
    if (dkey == NULL || (dkeylen == keylen && memcmp(dkey, key, keylen) == 0))
        dkeylen = 0;
    memcpy(out, prefix, n);
    out[n++] = '{';
    memcpy(out + n, key, keylen);
    n += keylen;
    out[n++] = '}';
    if (dkeylen > 0)
        memcpy(out + n, dkey, dkeylen);
    return n + dkeylen;
}

/* "cp:{KEY}", the state's record: the same, or "cp:{KEY}LOGIN", and the
 * login's habits (a string of their own, so that the records stay small
 * hashes): "cph:{KEY}" or "cph:{KEY}LOGIN". */
static void
keys(struct args *a, char *kb, const char *key, size_t keylen,
     const char *dkey, size_t dkeylen)
{
    size_t n = acct_key(kb, "cp:", key, keylen, NULL, 0), dn;

    arg_mem(a, kb, n);
    dn = acct_key(kb + n, "cp:", key, keylen, dkey, dkeylen);
    arg_mem(a, kb + n, dn);
    arg_mem(a, kb + n + dn,
            acct_key(kb + n + dn, "cph:", key, keylen, dkey, dkeylen));
}

/* "CMD SCRIPT 2 KEY DKEY" in a fresh a (kb holds the keys). */
static void
script_args(struct args *a, char *kb, const char *cmd, const char *script,
            size_t scriptlen, const char *key, size_t keylen,
            const char *dkey, size_t dkeylen)
{
    a->n = 0;
    a->used = 0;
    arg_mem(a, cmd, strlen(cmd));
    arg_mem(a, script, scriptlen);
    arg_mem(a, "3", 1);
    keys(a, kb, key, keylen, dkey, dkeylen);
}

/* "EVAL SCRIPT 1 KEY" in a fresh a: a script sent as its text (one
 * whose answer no one awaits, or rare: a NOSCRIPT cannot lose it). */
static void
eval_args(struct args *a, const char *script, const char *key,
          size_t keylen)
{
    a->n = 0;
    a->used = 0;
    arg_mem(a, "EVAL", 4);
    arg_mem(a, script, strlen(script));
    arg_mem(a, "1", 1);
    arg_mem(a, key, keylen);
}

/* The start of decide.lua's EVALSHA for an account, and the node that
 * takes it; NULL if that node is not ready (or the script not loaded). */
static struct rnode *
decide_node(struct cp_redis *r, struct args *a, char *kb, const char *key,
            size_t keylen, const char *dkey, size_t dkeylen)
{
    struct rnode *n;

    if (r->sha_decide[0] == '\0')
        return NULL;
    script_args(a, kb, "EVALSHA", r->sha_decide, 40, key, keylen, dkey,
                dkeylen);
    n = slot_node(r, a->v[3], a->len[3]);
    return n != NULL && n->ready ? n : NULL;
}

/* How long an idle NORMAL record is kept: twice the longest window (its
 * levels have drained by then), at least a week (it keeps the account's
 * block count). */
static uint64_t
idle_ttl(const struct cp_meter_op *op)
{
    uint64_t w = 7ULL * 86400000;

    for (size_t s = 0; s < op->nslots; s++)
        if (op->slots[s].window_ms * 2 > w)
            w = op->slots[s].window_ms * 2;
    return w;
}

/* decide.lua's evidence arguments: the score from which the fleet's
 * evidence comes back, half-life, floor, signals, and the gain. */
static void
ev_args(struct args *a, const struct cp_redis_ev *ev)
{
    const struct cp_ev_delta *g = ev ? ev->gain : NULL;
    size_t ng = 0;

    if (ev == NULL || ev->det == NULL) {
        arg_mem(a, "1e308", 5); /* never */
        arg_mem(a, "1", 1);
        arg_mem(a, "0", 1);
        arg_mem(a, "0", 1);
        arg_fmt(a, "%d", CP_SIG_COUNT);
        arg_mem(a, "0", 1);
        arg_mem(a, "0", 1);
        arg_mem(a, "0", 1);
        arg_mem(a, "", 0);
        return;
    }
    arg_fmt(a, "%.17g", ev->want);
    arg_fmt(a, "%llu", (unsigned long long)ev->det->half_life_ms);
    arg_fmt(a, "%.17g", ev->det->floor);
    arg_fmt(a, "%u", ev->ver);
    arg_fmt(a, "%d", CP_SIG_COUNT);
    arg_fmt(a, "%d", CP_SIG_NETWORKS);
    arg_fmt(a, "%u", ev->net);
    for (int i = 0; g != NULL && i < CP_SIG_COUNT; i++)
        ng += g->sig[i] != 0 || g->fired[i] != 0;
    arg_fmt(a, "%zu", ng);
    for (int i = 0; ng > 0 && i < CP_SIG_COUNT; i++) {
        if (g->sig[i] == 0 && g->fired[i] == 0)
            continue;
        if (!isfinite(g->sig[i])) { /* (never made): sent as nothing */
            arg_mem(a, "0", 1);
            arg_mem(a, "0", 1);
            arg_mem(a, "0", 1);
            arg_mem(a, "0", 1);
            continue;
        }
        arg_fmt(a, "%d", i);
        arg_fmt(a, "%.9g", g->sig[i]);
        arg_fmt(a, "%u", g->fired[i]);
        arg_fmt(a, "%u", g->last_s[i]);
    }
    if (ev->habits != NULL)
        arg_mem(a, (const char *)ev->habits, CP_EV_PACKED);
    else
        arg_mem(a, "", 0);
}

/* ARGV of lua/decide.lua from an operation. */
static void
op_args(struct args *a, const struct cp_meter_op *op, const struct cp_await *aw,
        const struct cp_decision *d, const struct cp_redis_ev *ev)
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
        arg_rule(a, (const double[3]){m->cap, m->rate, m->cost},
                 (m->enforce ? 1 : 0) | (m->domain ? 2 : 0) |
                     (m->nocheck ? 4 : 0));
    }
    ev_args(a, ev);
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

/* A finite number written as text. */
static bool
rep_real(const redisReply *x, double *out)
{
    char buf[64], *end;

    if (x->type != REDIS_REPLY_STRING || x->len == 0 || x->len >= sizeof(buf))
        return false;
    memcpy(buf, x->str, x->len);
    buf[x->len] = '\0';
    *out = strtod(buf, &end);
    return *end == '\0' && isfinite(*out);
}

static bool
rep_reals(const redisReply *e, size_t n, double *out)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!rep_real(e->element[i], &out[i]))
            return false;
    return true;
}

/* decide.lua's levels: n integers, fixed point in 2^-20 units (a number
 * made a string costs the script more than a step; see the script), or
 * for a level too large for that, its text */
static bool
rep_levels(const redisReply *e, size_t n, double *out)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        const redisReply *x = e->element[i];
        long long v;

        if (x->type == REDIS_REPLY_STRING) {
            if (!rep_real(x, &out[i]) || out[i] < 0)
                return false;
        } else if (rep_int(x, 0, LLONG_MAX, &v)) {
            out[i] = (double)v / 1048576.0;
        } else {
            return false;
        }
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

/* decide.lua's evidence: "" (none), "VERSION", or "VERSION SCORE TIME
 * share times last ..." for each of CP_SIG_COUNT signals. */
static bool
parse_ev(const redisReply *x, struct cp_redis_evans *ev)
{
    char buf[64 * (2 + 3 * CP_SIG_COUNT)], *p, *end;
    double v[3 + 3 * CP_SIG_COUNT];
    size_t n = 0;

    ev->has_ver = ev->has_sum = false;
    if (x->type != REDIS_REPLY_STRING || x->len >= sizeof(buf))
        return false;
    if (x->len == 0)
        return true;
    memcpy(buf, x->str, x->len);
    buf[x->len] = '\0';
    for (p = buf; *p != '\0' && n < sizeof(v) / sizeof(v[0]); n++) {
        v[n] = strtod(p, &end);
        if (end == p || !isfinite(v[n]) || (*end != ' ' && *end != '\0'))
            return false;
        p = end;
    }
    if (*p != '\0' || (n != 1 && n != sizeof(v) / sizeof(v[0])) ||
        v[0] < 0 || v[0] > UINT32_MAX)
        return false;
    /* shares and the score as the evidence bounds them (cp_evidence_unpack
     * refuses beyond 1e7): what Redis holds may have been written by
     * anyone */
    if (n > 1 && fabs(v[1]) > 1e7)
        return false;
    for (int i = 0; n > 1 && i < CP_SIG_COUNT; i++)
        if (fabs(v[3 + 3 * i]) > 1e7)
            return false;
    ev->has_ver = true;
    ev->ver = (uint32_t)v[0];
    if (n == 1)
        return true;
    if (v[2] < 0 || v[2] > 1e15)
        return false;
    ev->sum.score = v[1];
    ev->sum.t_ms = (int64_t)v[2];
    for (int i = 0; i < CP_SIG_COUNT; i++) {
        double t = v[4 + 3 * i], l = v[5 + 3 * i];

        ev->sum.sig[i] = (float)v[3 + 3 * i];
        ev->sum.fired[i] = t < 0           ? 0
                           : t > UINT32_MAX ? UINT32_MAX
                                            : (uint32_t)t;
        ev->sum.last_s[i] = l < 0           ? 0
                            : l > UINT32_MAX ? UINT32_MAX
                                             : (uint32_t)l;
    }
    ev->has_sum = true;
    return true;
}

/* lua/decide.lua's reply (see its header) to q. */
static bool
parse_decide(const redisReply *rep, const struct cp_redis_req *q,
             struct cp_remote *out, struct cp_redis_evans *ev)
{
    long long denied, over, newdom, created;
    const redisReply *hab;
    size_t n, nrules = q->nrules;

    memset(out, 0, sizeof(*out));
    if (!rep_states(rep, 12, out) ||
        !parse_ev(rep->element[10], ev) ||
        (hab = rep->element[11])->type != REDIS_REPLY_STRING ||
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
    if (!rep_levels(rep->element[9], n, out->res.level))
        return false;
    for (size_t i = 0; i < n; i++)
        out->res.cost[i] = (q->domain >> i & 1) ? (double)newdom : q->cost[i];
    out->res.denied = (int)denied;
    out->res.over = (uint32_t)over;
    out->res.new_domain = newdom != 0;
    out->res.created = created != 0;
    /* a record of another size is another version's: not merged */
    ev->habits_len = hab->len == CP_EV_PACKED ? CP_EV_PACKED : 0;
    memcpy(ev->habits, hab->str, ev->habits_len);
    return true;
}

/* "MOVED 3999 127.0.0.1:6381" or "ASK ...": the node to ask instead. */
static struct rnode *
redirected(struct cp_redis *r, const redisReply *rep, bool *ask)
{
    const char *p = rep->str, *end = rep->str + rep->len, *sp, *colon;
    uint64_t slot, port;

    *ask = rep->len > 4 && memcmp(p, "ASK ", 4) == 0;
    if (!*ask && !(rep->len > 6 && memcmp(p, "MOVED ", 6) == 0))
        return NULL;
    p += *ask ? 4 : 6;
    if ((sp = memchr(p, ' ', (size_t)(end - p))) == NULL ||
        !parse_u64(p, (size_t)(sp - p), &slot) || slot >= NSLOTS)
        return NULL;
    p = sp + 1;
    if ((colon = memrchr(p, ':', (size_t)(end - p))) == NULL ||
        !parse_u64(colon + 1, (size_t)(end - colon - 1), &port) ||
        port == 0 || port > 65535)
        return NULL;
    {
        struct rnode *n = node_add(r, p, (size_t)(colon - p), (int)port);

        if (n == NULL)
            return NULL;
        n->used = true; /* connected by the timer if it is not */
        if (!*ask) {
            r->slot[slot] = (uint8_t)n->idx; /* and the rest, by a refresh */
            r->want_map = true;
        }
        return n;
    }
}

static void
req_free(struct cp_redis_req *q)
{
    fifo_del(q);
    if (q->cmd != NULL)
        redisFreeCommand(q->cmd);
    free(q);
}

/* q was written to n: its reply is awaited there. */
static void
req_sent(struct cp_redis_req *q, struct rnode *n)
{
    q->node = n->idx;
    if (n->unreplied++ == 0)
        n->last_reply_ms = uv_now(q->r->loop);
}

/* Send q's kept command to n again (a redirection). False if n is not
 * ready. */
static bool
req_send(struct cp_redis_req *q, struct rnode *n, bool asking)
{
    if (n == NULL || !n->ready)
        return false;
    if (asking)
        redisAsyncCommand(n->ac, NULL, NULL, "ASKING");
    if (redisAsyncFormattedCommand(n->ac, on_decide, q, q->cmd, q->cmdlen) !=
        REDIS_OK)
        return false;
    req_sent(q, n);
    return true;
}

/* Send q (the arguments in a) to n the first time. A Cluster's command is
 * kept, to send it again where a MOVED or ASK says; a single server never
 * redirects, and hiredis formats it straight into its buffer. */
static bool
req_send_first(struct cp_redis_req *q, struct rnode *n, struct args *a)
{
    int len;

    if (!q->r->cluster) {
        if (redisAsyncCommandArgv(n->ac, on_decide, q, a->n, a->v, a->len) !=
            REDIS_OK)
            return false;
        req_sent(q, n);
        return true;
    }
    if ((len = redisFormatCommandArgv(&q->cmd, a->n, a->v, a->len)) < 0)
        msg_fatal("out of memory");
    q->cmdlen = (size_t)len;
    return req_send(q, n, false);
}

static void
fifo_add(struct cp_redis_req *q)
{
    struct cp_redis *r = q->r;

    q->queued = true;
    q->next = NULL;
    q->prev = r->tail;
    if (r->tail)
        r->tail->next = q;
    else
        r->head = q;
    r->tail = q;
}

static void
on_decide(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cp_redis_req *q = priv;
    struct cp_redis *r = q->r;
    struct rnode *n = ac_node(ac);
    redisReply *rep = reply;
    struct cp_remote rem;
    bool ask;

    if (n != NULL && n->unreplied > 0) {
        n->unreplied--;
        n->last_reply_ms = uv_now(r->loop);
    }
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && r->cluster &&
        q->redirects < MAX_REDIRECTS) {
        struct rnode *to = redirected(r, rep, &ask);

        if (to != NULL) {
            r->st.redirects++;
            q->redirects++;
            if (q->cb != NULL && req_send(q, to, ask))
                return; /* its answer comes from there */
            arm(r); /* (to is connected for the next ones) */
        }
    }
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && n != NULL &&
        strncmp(rep->str, "READONLY", 8) == 0) {
        /* a failed-over primary that came back as a replica */
        if (q->cb != NULL) {
            r->st.failed++;
            answer(q, NULL);
        }
        req_free(q);
        node_down(n, "READONLY: the server is a replica now");
        return;
    }
    if (rep != NULL && q->cb != NULL) {
        if (parse_decide(rep, q, &rem, &q->ev)) {
            r->st.answered++;
            answer(q, &rem);
        } else {
            if (rep->type == REDIS_REPLY_ERROR &&
                strncmp(rep->str, "NOSCRIPT", 8) == 0) {
                r->st.noscript++;
                if (n != NULL && n->ready)
                    load_scripts(n); /* ready stays: the next ones queue
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
    req_free(q);
    if (!r->closing)
        arm(r);
}

struct cp_redis_req *
cp_redis_decide(struct cp_redis *r, const struct cp_decision *d,
                const struct cp_await *aw, const struct cp_redis_ev *ev,
                cp_redis_cb *cb, void *arg)
{
    struct args a;
    char kb[KEY_BUF];
    struct cp_redis_req *q;
    struct rnode *n;

    n = decide_node(r, &a, kb, d->id.key, d->id.keylen, d->id.dkey,
                    d->id.dkeylen);
    if (n == NULL)
        return NULL;
    op_args(&a, &aw->op, aw, d, ev);
    q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->nrules = aw->op.nrules;
    for (size_t i = 0; i < q->nrules && i < CP_MAX_RULES; i++) {
        q->cost[i] = aw->op.rule[i].cost;
        q->domain |= (uint32_t)aw->op.rule[i].domain << i;
    }
    q->sent_ms = uv_now(r->loop);
    if (!req_send_first(q, n, &a)) {
        req_free(q);
        return NULL;
    }
    fifo_add(q);
    r->st.sent++;
    arm(r);
    return q;
}

void
cp_redis_cancel(struct cp_redis_req *q)
{
    fifo_del(q);
    q->cb = NULL; /* the reply frees it */
}

static void
on_share(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rnode *n = ac_node(ac);
    redisReply *rep = reply;

    (void)priv;
    if (n != NULL && rep != NULL && rep->type == REDIS_REPLY_ERROR)
        warn_reply(n->r, "a reservation given back", rep);
}

bool
cp_redis_share(struct cp_redis *r, const struct cp_meter_op *op)
{
    struct args a;
    char kb[KEY_BUF];
    struct rnode *n;

    if ((n = decide_node(r, &a, kb, op->key, op->keylen, NULL, 0)) == NULL)
        return false;
    op_args(&a, op, NULL, NULL, NULL);
    if (redisAsyncCommandArgv(n->ac, on_share, NULL, a.n, a.v, a.len) !=
        REDIS_OK)
        return false;
    r->st.shares++;
    return true;
}

bool
cp_redis_settle(struct cp_redis *r, const char *key, size_t keylen,
                const char *const *slot, const double *delta, size_t n)
{
    struct args a;
    char kb[KEY_BUF];
    struct rnode *n_;

    if (n == 0)
        return true;
    /* "EVAL settle.lua 1 cp:{KEY}" (the account's record), then (slot,
     * units) pairs */
    eval_args(&a, lua_settle, kb, acct_key(kb, "cp:", key, keylen, NULL, 0));
    if ((n_ = slot_node(r, kb, a.len[3])) == NULL || !n_->ready)
        return false;
    for (size_t i = 0; i < n; i++) {
        arg_mem(&a, slot[i], strlen(slot[i]));
        arg_fmt(&a, "%.17g", delta[i]);
    }
    if (redisAsyncCommandArgv(n_->ac, on_share, NULL, a.n, a.v, a.len) !=
        REDIS_OK)
        return false; /* nothing sent: the caller owes it all */
    r->st.shares++;
    return true;
}

/* ---- the campaign table ---- */

void
cp_redis_on_campaign(struct cp_redis *r,
                     void (*fn)(void *arg, uint32_t band, uint64_t sketch,
                                uint32_t sent, uint32_t bad, uint32_t acct,
                                uint32_t copies, uint32_t now_s),
                     void *arg)
{
    r->on_camp = fn;
    r->camp_arg = arg;
}

/* An integer element of a reply, 0 to max; false if it is not one. */
static bool
reply_uint(const redisReply *rep, long long max, uint64_t *v)
{
    if (rep->type != REDIS_REPLY_INTEGER || rep->integer < 0 ||
        rep->integer > max)
        return false;
    *v = (uint64_t)rep->integer;
    return true;
}

/* the bands of one campaign.lua call, for its reply */
struct camp_call {
    size_t n;
    uint32_t acct, now_s;
    uint32_t band[CP_REDIS_MAX_BANDS];
};

/* campaign.lua's {sketch low, high, sent, refused, copies} per band of
 * priv. */
static void
on_campaign(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rnode *n = ac_node(ac);
    redisReply *rep = reply;
    struct camp_call *c = priv;
    uint64_t v[5];

    if (n == NULL || rep == NULL) {
        free(c); /* (the connection went: the bands stay this host's) */
        return;
    }
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 5 * c->n) {
        size_t i;

        for (i = 0; i < c->n; i++) {
            redisReply **e = rep->element + 5 * i;

            if (!reply_uint(e[0], UINT32_MAX, &v[0]) ||
                !reply_uint(e[1], UINT32_MAX, &v[1]) ||
                !reply_uint(e[2], UINT16_MAX, &v[2]) ||
                !reply_uint(e[3], UINT16_MAX, &v[3]) ||
                !reply_uint(e[4], 1000000, &v[4]))
                break;
            n->r->st.campaign_back++;
            if (n->r->on_camp != NULL)
                n->r->on_camp(n->r->camp_arg, c->band[i], v[1] << 32 | v[0],
                              (uint32_t)v[2], (uint32_t)v[3], c->acct,
                              (uint32_t)v[4], c->now_s);
        }
        if (i == c->n) {
            free(c);
            return;
        }
    } else if (rep->type == REDIS_REPLY_ERROR) {
        if (strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            n->r->st.noscript++;
            if (n->ready)
                load_scripts(n);
        } else if (strncmp(rep->str, "MOVED", 5) == 0 ||
                   strncmp(rep->str, "ASK", 3) == 0) {
            n->r->want_map = true; /* (these bands stay this host's) */
            arm(n->r);
        }
    }
    free(c);
    warn_reply(n->r, "bands of the campaign table", rep);
}

/* One campaign.lua call for bands[0..nb), on the node of the first. */
static bool
campaign_call(struct cp_redis *r, const uint32_t *bands, size_t nb,
              const struct cp_redis_camp *cm)
{
    char keys[CP_REDIS_MAX_BANDS][16];
    struct camp_call *c;
    struct rnode *n;
    struct args a;

    a.n = 0;
    a.used = 0;
    arg_mem(&a, "EVALSHA", 7);
    arg_mem(&a, r->sha_campaign, 40);
    arg_fmt(&a, "%zu", nb);
    for (size_t i = 0; i < nb; i++)
        arg_mem(&a, keys[i], (size_t)snprintf(keys[i], sizeof(keys[i]),
                                              "cpc:{%08x}", bands[i]));
    arg_fmt(&a, "%d", cm->bit);
    arg_fmt(&a, "%u", cm->sent);
    arg_fmt(&a, "%u", cm->bad);
    arg_fmt(&a, "%llu",
            (unsigned long long)(cm->window_ms > 0 ? cm->window_ms : 1));
    arg_fmt(&a, "%08x", cm->acct);
    arg_fmt(&a, "%u", cm->repeat);
    n = slot_node(r, a.v[3], a.len[3]);
    if (n == NULL || !n->ready)
        return false;
    c = xmalloc(sizeof(*c));
    c->n = nb;
    c->acct = cm->acct;
    c->now_s = cm->now_s;
    memcpy(c->band, bands, nb * sizeof(*bands));
    if (redisAsyncCommandArgv(n->ac, on_campaign, c, a.n, a.v, a.len) !=
        REDIS_OK) {
        free(c);
        return false;
    }
    r->st.campaign += nb;
    return true;
}

bool
cp_redis_campaign(struct cp_redis *r, const uint32_t *bands, size_t nb,
                  const struct cp_redis_camp *cm)
{
    if (r->sha_campaign[0] == '\0' || nb == 0 || nb > CP_REDIS_MAX_BANDS)
        return false;
    if (!r->cluster) /* one server: all together */
        return campaign_call(r, bands, nb, cm);
    for (size_t i = 0; i < nb; i++) /* a Cluster: a slot each */
        if (!campaign_call(r, bands + i, 1, cm))
            return false;
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

/* A blocking connection to node n (the one kept, if it is n's). */
static int
sync_open(struct cp_redis *r, const struct rnode *n, char *err)
{
    struct timeval tv = {(time_t)(r->connect_timeout_ms / 1000),
                         (suseconds_t)(r->connect_timeout_ms % 1000) * 1000};
    redisReply *rep = NULL;
    const char *p;

    if (r->sync != NULL && r->sync_node == n->idx)
        return 0;
    sync_drop(r);
    r->sync_node = n->idx;
    p = tls_path(r, n->host, n->port, n->path);
    r->sync = p != NULL ? redisConnectUnixWithTimeout(p, tv)
                        : redisConnectWithTimeout(n->host, n->port, tv);
    if (r->sync == NULL || r->sync->err) {
        snprintf(err, CP_ERR_MAX, "fleet store %s: cannot connect: %s",
                 n->where, r->sync ? r->sync->errstr : "out of memory");
        sync_drop(r);
        return -1;
    }
    redisSetTimeout(r->sync, tv);
    if (r->url.has_password)
        rep = r->url.user[0]
                  ? redisCommand(r->sync, "AUTH %s %s", r->url.user,
                                 r->url.password)
                  : redisCommand(r->sync, "AUTH %s", r->url.password);
    if (r->url.db != 0 && !r->cluster &&
        (rep == NULL || rep->type != REDIS_REPLY_ERROR)) {
        if (rep)
            freeReplyObject(rep);
        rep = redisCommand(r->sync, "SELECT %u", r->url.db);
    }
    if ((r->url.has_password || (r->url.db != 0 && !r->cluster)) &&
        (rep == NULL || rep->type == REDIS_REPLY_ERROR)) {
        snprintf(err, CP_ERR_MAX, "fleet store %s: set-up refused: %.*s",
                 n->where, rep ? (int)rep->len : 10,
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

/* One command over the blocking connection to the node of a.v[3]: a
 * connection kept from before is made again once (Redis may have
 * restarted), a redirection followed once. */
static redisReply *
sync_command(struct cp_redis *r, struct args *a, char *err)
{
    struct rnode *n = slot_node(r, a->v[3], a->len[3]);
    redisReply *rep = NULL;
    bool ask = false;

    for (int tries = 0; tries < 3; tries++) {
        bool reused;

        if (n == NULL) {
            snprintf(err, CP_ERR_MAX, "fleet store %s: no node serves the "
                                      "account's slot yet",
                     r->where);
            return NULL;
        }
        reused = r->sync != NULL && r->sync_node == n->idx;
        if (sync_open(r, n, err) < 0)
            return NULL;
        if (ask) {
            rep = redisCommand(r->sync, "ASKING");
            if (rep)
                freeReplyObject(rep);
        }
        rep = redisCommandArgv(r->sync, a->n, a->v, a->len);
        if (rep == NULL && reused) {
            sync_drop(r);
            continue;
        }
        if (rep == NULL) {
            snprintf(err, CP_ERR_MAX, "fleet store %s: %s", n->where,
                     r->sync->errstr[0] ? r->sync->errstr : "no answer");
            sync_drop(r);
            return NULL;
        }
        if (rep->type == REDIS_REPLY_ERROR && r->cluster) {
            struct rnode *to = redirected(r, rep, &ask);

            if (to != NULL) {
                freeReplyObject(rep);
                rep = NULL;
                n = to;
                arm(r);
                continue;
            }
        }
        return rep;
    }
    if (rep == NULL)
        snprintf(err, CP_ERR_MAX, "fleet store %s: no answer", r->where);
    return rep;
}

/* {slot, level, ...} and the time, as state.lua returns them; what does
 * not fit or parse is skipped. */
static void
read_counters(const redisReply *levels, const redisReply *t,
              struct cp_redis_counters *c)
{
    double v[1];
    uint64_t ms;

    memset(c, 0, sizeof(*c));
    if (parse_u64(t->str, t->len, &ms) && ms <= INT64_MAX)
        c->t_ms = (int64_t)ms;
    for (size_t i = 0; i + 1 < levels->elements && c->n < CP_MAX_SLOTS;
         i += 2) {
        const redisReply *name = levels->element[i];
        redisReply one = {.type = REDIS_REPLY_ARRAY, .elements = 1,
                          .element = &levels->element[i + 1]};

        if (name->type != REDIS_REPLY_STRING || name->len == 0 ||
            name->len >= CP_RULE_NAME_MAX || !rep_reals(&one, 1, v))
            continue;
        memcpy(c->name[c->n], name->str, name->len);
        c->name[c->n][name->len] = '\0';
        c->level[c->n++] = v[0];
    }
}

int
cp_redis_state(struct cp_redis *r, const struct cp_identity *id,
               const char *mode, int to, int from, struct cp_remote *out,
               struct cp_redis_counters *counters, char *err)
{
    struct args a;
    char kb[KEY_BUF];
    redisReply *rep;
    bool ok;

    script_args(&a, kb, "EVAL", lua_state, strlen(lua_state), id->key,
                id->keylen, id->dkey, id->dkeylen);
    arg_mem(&a, mode, strlen(mode));
    arg_fmt(&a, "%d", to);
    arg_fmt(&a, "%d", from);
    arg_fmt(&a, "%llu", 7ULL * 86400000); /* an idle NORMAL state's */
    if ((rep = sync_command(r, &a, err)) == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    ok = rep_states(rep, 8, out) &&
         rep->element[5]->type == REDIS_REPLY_INTEGER &&
         rep->element[6]->type == REDIS_REPLY_ARRAY &&
         rep->element[6]->elements % 2 == 0 &&
         rep->element[7]->type == REDIS_REPLY_STRING;
    if (ok)
        out->unknown = rep->element[5]->integer == 0;
    if (ok && counters != NULL)
        read_counters(rep->element[6], rep->element[7], counters);
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

/* ---- the fleet's history ---- */

#define HISTORY_ROWS 100                     /* kept per account */
#define HISTORY_TTL_MS (400ULL * 86400000)   /* a year and a bit */

/* "EVAL history.lua 1 cpx:{KEY}LOGIN MODE" in a fresh a. */
static void
history_args(struct args *a, char *kb, const struct cp_identity *id,
             const char *mode)
{
    eval_args(a, lua_history, kb,
              acct_key(kb, "cpx:", id->key, id->keylen, id->dkey,
                       id->dkeylen));
    arg_mem(a, mode, strlen(mode));
}

bool
cp_redis_history_add(struct cp_redis *r, const struct cp_identity *id,
                     const char *row, size_t len)
{
    struct args a;
    char kb[KEY_BUF];
    struct rnode *n;

    history_args(&a, kb, id, "add");
    arg_mem(&a, row, len);
    arg_fmt(&a, "%d", HISTORY_ROWS);
    arg_fmt(&a, "%llu", HISTORY_TTL_MS);
    n = slot_node(r, a.v[3], a.len[3]);
    if (n == NULL || !n->ready ||
        redisAsyncCommandArgv(n->ac, on_share, NULL, a.n, a.v, a.len) !=
            REDIS_OK)
        return false;
    return true;
}

int
cp_redis_history(struct cp_redis *r, const struct cp_identity *id, int limit,
                 void (*fn)(void *arg, const char *row, size_t len),
                 void *arg, char *err)
{
    struct args a;
    char kb[KEY_BUF];
    redisReply *rep;
    int n = 0;

    history_args(&a, kb, id, "get");
    arg_fmt(&a, "%d", limit);
    if ((rep = sync_command(r, &a, err)) == NULL)
        return -1;
    if (rep->type != REDIS_REPLY_ARRAY) {
        snprintf(err, CP_ERR_MAX, "fleet store %s: %.*s", r->where,
                 rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 16,
                 rep->type == REDIS_REPLY_ERROR ? rep->str
                                                : "unexpected reply");
        freeReplyObject(rep);
        return -1;
    }
    for (size_t i = 0; i < rep->elements; i++)
        if (rep->element[i]->type == REDIS_REPLY_STRING) {
            fn(arg, rep->element[i]->str, rep->element[i]->len);
            n++;
        }
    freeReplyObject(rep);
    return n;
}

/* ---- life ---- */

/* The server (alone), or the seeds (a Cluster), as the configuration
 * names them; the connections and the map start over. */
static void
set_servers(struct cp_redis *r, const struct cp_config *cfg)
{
    for (int i = 0; i < r->nnodes; i++)
        if (r->node[i].ac != NULL)
            node_down(&r->node[i], "store.redis changed");
    sync_drop(r);
    r->nnodes = 0;
    sentinel_drop(r);
    r->cluster = cfg->nredis_seeds > 0;
    r->nseeds = cfg->nredis_seeds;
    memcpy(r->seeds, cfg->redis_seeds, sizeof(r->seeds));
    r->sentinel = cfg->nredis_sentinels > 0;
    r->nsentinels = cfg->nredis_sentinels;
    memcpy(r->sentinels, cfg->redis_sentinels, sizeof(r->sentinels));
    snprintf(r->master, sizeof(r->master), "%s", cfg->redis_master);
    r->resolved = false;
    r->url = cfg->redis;
    memset(r->slot, NO_NODE, sizeof(r->slot));
    r->mapped = !r->cluster;
    r->up = false;
    r->map_asked = false;
    r->epoch_asked = false;
    cp_config_redis_where(cfg, r->where, sizeof(r->where));
    if (!r->cluster) {
        struct rnode *n = &r->node[r->nnodes++];

        memset(n, 0, sizeof(*n));
        n->r = r;
        n->used = true;
        snprintf(n->host, sizeof(n->host), "%s", r->url.host);
        n->port = r->url.port;
        snprintf(n->path, sizeof(n->path), "%s", r->url.path);
        if (r->sentinel) /* until a Sentinel names it */
            snprintf(n->where, sizeof(n->where), "(%s)", r->master);
        else
            redis_url_where(&r->url, n->where, sizeof(n->where));
        return;
    }
    for (size_t i = 0; i < r->nseeds; i++) {
        struct rnode *n = node_add(r, r->seeds[i].host,
                                   strlen(r->seeds[i].host),
                                   r->seeds[i].port);

        if (n != NULL)
            n->used = true; /* until the map says which serve slots */
    }
}

struct cp_redis *
cp_redis_new(uv_loop_t *loop, const struct cp_config *cfg,
             void (*on_up)(void *arg), void *arg)
{
    struct cp_redis *r = xcalloc(1, sizeof(*r));

    r->loop = loop;
    r->on_up = on_up;
    r->up_arg = arg;
    r->sync_node = -1;
    ratelog_init(&r->rl, "fleet store warnings", 1, 10);
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_check_init(loop, &r->flush);
    r->flush.data = r;
    uv_check_start(&r->flush, on_flush);
    r->open_handles = 3;
    uv_idle_init(loop, &r->wake);
    r->wake.data = r;
    r->timeout_ms = cfg->redis_timeout_ms;
    r->connect_timeout_ms = cfg->redis_connect_timeout_ms;
    if (cfg->redis_tls) {
        char err[CP_ERR_MAX];

        if ((r->tls = tls_relay_new(cfg, err)) == NULL)
            msg_fatal("%s", err);
    }
    set_servers(r, cfg);
    return r;
}

void
cp_redis_set_config(struct cp_redis *r, const struct cp_config *cfg)
{
    bool moved = memcmp(&r->url, &cfg->redis, sizeof(r->url)) != 0 ||
                 r->nseeds != cfg->nredis_seeds ||
                 memcmp(r->seeds, cfg->redis_seeds, sizeof(r->seeds)) != 0 ||
                 r->nsentinels != cfg->nredis_sentinels ||
                 memcmp(r->sentinels, cfg->redis_sentinels,
                        sizeof(r->sentinels)) != 0 ||
                 strcmp(r->master, cfg->redis_master) != 0;

    r->timeout_ms = cfg->redis_timeout_ms;
    r->connect_timeout_ms = cfg->redis_connect_timeout_ms;
    if (!moved)
        return;
    if (cfg->redis_tls != (r->tls != NULL)) {
        msg_warn("reload: the fleet store's servers changed to or from TLS "
                 "(rediss://); restart to apply it");
        return;
    }
    set_servers(r, cfg);
    cp_redis_start(r);
}

void
cp_redis_start(struct cp_redis *r)
{
    if (r->sentinel)
        sentinel_ask(r);
    else
        for (int i = 0; i < r->nnodes; i++)
            if (r->node[i].used && r->node[i].ac == NULL)
                node_connect(&r->node[i]);
    arm(r);
}

bool
cp_redis_up(const struct cp_redis *r)
{
    return r->up;
}

bool
cp_redis_emptied(const struct cp_redis *r)
{
    return r->up && r->emptied;
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
 * in one write per node, now, instead of at the next iteration's poll for
 * writability (a round of epoll less on every decision's latency).
 */
static void
on_flush(uv_check_t *h)
{
    struct cp_redis *r = h->data;

    uv_idle_stop(&r->wake);
    if (!r->unflushed || r->closing)
        return;
    r->unflushed = false;
    r->flushing = true;
    for (int i = 0; i < r->nnodes; i++)
        if (r->node[i].ac != NULL &&
            (r->node[i].ac->c.flags & REDIS_CONNECTED))
            redisAsyncHandleWrite(r->node[i].ac);
    r->flushing = false;
}

static void
on_wake(uv_idle_t *h)
{
    (void)h; /* (it only keeps the poll from blocking) */
}

/* A command to send was buffered: on_flush writes it at the end of this
 * loop iteration, which must not block in its poll meanwhile. */
static void
uvev_defer_write(struct cp_redis *r)
{
    r->unflushed = true;
    if (!r->closing)
        uv_idle_start(&r->wake, on_wake);
}

static bool
uvev_flushing(const struct cp_redis *r)
{
    return r->flushing;
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct cp_redis *r = h->data;

    if (--r->open_handles > 0)
        return;
    explicit_bzero(&r->url, sizeof(r->url));
    explicit_bzero(r->seeds, sizeof(r->seeds));
    explicit_bzero(r->sentinels, sizeof(r->sentinels));
    free(r);
}

void
cp_redis_close(struct cp_redis *r)
{
    r->closing = true;
    r->up = false;
    while (r->head != NULL)
        answer(r->head, NULL);
    for (int i = 0; i < r->nnodes; i++) {
        redisAsyncContext *ac = r->node[i].ac;

        r->node[i].ac = NULL;
        r->node[i].ready = false;
        if (ac != NULL) {
            ac->data = NULL;
            redisAsyncFree(ac);
        }
    }
    sync_drop(r);
    sentinel_drop(r);
    tls_relay_free(r->tls); /* (its connections' other ends are closed) */
    r->tls = NULL;
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->flush, on_handle_closed);
    uv_close((uv_handle_t *)&r->wake, on_handle_closed);
}
