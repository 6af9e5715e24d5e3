/*
 * conn.c — one client connection: a policy client (read bytes, feed the
 * codec, decide each complete request in order, write the replies) or a
 * milter session (the same, with milter.c's packets).
 *
 * Peer errors (a limit exceeded, a malformed line, a client that does not
 * read its replies) are logged with the connection's peer and an escaped,
 * truncated excerpt, and the connection is closed; other connections are
 * not affected. Every such warning goes through one rate limit
 * (peer_warn): a peer cannot fill the log, whatever it sends.
 *
 * A caller must be trusted (trust.c) and within its share of
 * protocol.max_connections (protocol.max_connections_per_peer, by uid or
 * address); otherwise the connection is accepted and closed at once, so it
 * holds nothing. A connection is closed when no request has completed for
 * protocol.idle_timeout (a request trickled in byte by byte does not keep
 * it open), and a policy connection between requests once it is
 * protocol.max_lifetime old (Postfix reconnects).
 * Lifetime: a conn owns its stream and timer handles and is freed when both
 * close callbacks have run.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/explain.h"
#include "core/policy.h"
#include "daemon/daemon.h"
#include "daemon/fleet.h"
#include "util/msg.h"
#include "util/parse.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

union any_stream {
    uv_pipe_t pipe;
    uv_tcp_t tcp;
    uv_handle_t handle;
    uv_stream_t stream;
};

struct conn {
    union any_stream h;
    uv_timer_t idle;
    struct daemon *d;
    struct conn *prev, *next;
    struct policy_parser parser;
    struct milter_sess *milter; /* a milter connection; NULL: policy */
    struct strbuf out;
    char peer[sizeof(((struct peer *)0)->name)];
    struct share *share; /* the caller's connection count; NULL: none */
    uint64_t opened_ms; /* uv_now() */
    char rbuf[DAEMON_READ_BUF];
    int open_handles;
    bool listed; /* in d->conns (accepted and admitted) */
    bool closing;
    uint64_t requests;
    /* the transaction in progress (one smtpd serves one session at a
     * time: a request naming another instance, or the connection's end,
     * means it ended without END-OF-MESSAGE; cp_session_step) */
    struct cp_session session;
    int64_t last_ms; /* the engine's time of the last request */
    /* fleet mode: the request whose decision waits for the shared store;
     * meanwhile nothing more is read, and the bytes of rbuf after it
     * (rest_off, rest_len) wait too */
    struct fleet_wait *fw;
    bool waiting;
    bool read_stopped;        /* reading stopped while a decision waits */
    size_t rest_off, rest_len;
};

/* How many connections one caller holds (d->shares). */
struct share {
    uint64_t key;
    uint32_t n;
};

struct write_req {
    uv_write_t req;
    size_t len;
    char data[];
};

static void flush_out(struct conn *c);

void
peer_warn(struct daemon *d, const char *fmt, ...)
{
    va_list ap;

    if (!ratelog_allow(&d->peer_log))
        return;
    va_start(ap, fmt);
    msg_vlog(MSG_WARN, fmt, ap);
    va_end(ap);
}

static bool
share_eq(const void *val, const void *key, size_t len)
{
    (void)len;
    return ((const struct share *)val)->key == *(const uint64_t *)key;
}

/* Take one connection of the caller's share; NULL if it is full. */
static struct share *
share_take(struct daemon *d, uint64_t key)
{
    struct share *sh = hmap_get(&d->shares, key, &key, sizeof(key),
                                share_eq);

    if (sh == NULL) {
        sh = xcalloc(1, sizeof(*sh));
        sh->key = key;
        hmap_put(&d->shares, key, sh);
    }
    if (sh->n >= d->cfg->max_connections_per_peer)
        return NULL;
    sh->n++;
    return sh;
}

static void
share_give(struct daemon *d, struct share *sh)
{
    if (sh == NULL || --sh->n > 0)
        return;
    hmap_del(&d->shares, sh->key, &sh->key, sizeof(sh->key), share_eq);
    free(sh);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (--c->open_handles > 0)
        return;
    policy_parser_fini(&c->parser);
    milter_sess_free(c->d, c->milter);
    sb_fini(&c->out);
    free(c);
}

static void
conn_close(struct conn *c)
{
    struct daemon *d = c->d;

    if (c->closing)
        return;
    c->closing = true;
    fleet_wait_free(c->fw); /* a waiting decision is dropped (first: its
                               END-OF-MESSAGE has given back the
                               reservation the session would) */
    c->fw = NULL;
    c->waiting = false;
    if (c->session.len > 0)
        cp_session_step(&d->engine, &c->session, NULL, c->last_ms);
    if (c->listed) {
        if (c->prev)
            c->prev->next = c->next;
        else
            d->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        d->nconns--;
    }
    share_give(d, c->share);
    c->share = NULL;
    uv_close(&c->h.handle, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->handle->data;

    (void)status;
    free(req);
    conn_close(c);
}

/* Send the replies already decided, then close (a protocol error after
 * good requests in the same read must not swallow their answers). */
static void
conn_close_flushed(struct conn *c)
{
    uv_shutdown_t *req;

    flush_out(c);
    if (c->closing)
        return;
    uv_read_stop(&c->h.stream);
    req = xmalloc(sizeof(*req));
    if (uv_shutdown(req, &c->h.stream, on_shutdown) < 0) {
        free(req);
        conn_close(c);
    }
}

/* In the middle of a request (a milter packet)? */
static bool
pending(struct conn *c)
{
    return c->milter ? milter_pending(c->milter)
                     : policy_parser_pending(&c->parser);
}

static void
on_idle(uv_timer_t *t)
{
    struct conn *c = t->data;

    c->d->stats.idle_timeouts++;
    if (pending(c))
        peer_warn(c->d, "%s: closing: no complete request for "
                        "protocol.idle_timeout (one is incomplete)",
                  c->peer);
    else
        msg_debug("%s: closing idle connection", c->peer);
    conn_close(c);
}

static void
on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = req->handle->data;

    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        peer_warn(c->d, "%s: write: %s", c->peer, uv_strerror(status));
        conn_close(c);
    }
    free(w);
}

static void
flush_out(struct conn *c)
{
    struct write_req *w;
    uv_buf_t buf;
    int rc;

    if (c->out.len == 0 || c->closing)
        return;
    buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    rc = uv_try_write(&c->h.stream, &buf, 1);
    if (rc == (int)c->out.len) {
        sb_reset(&c->out);
        return;
    }
    if (rc < 0 && rc != UV_EAGAIN) {
        peer_warn(c->d, "%s: write: %s", c->peer, uv_strerror(rc));
        conn_close(c);
        return;
    }
    if (rc < 0)
        rc = 0;
    if (uv_stream_get_write_queue_size(&c->h.stream) + c->out.len >
        DAEMON_MAX_WRITE_QUEUE) {
        peer_warn(c->d, "%s: closing: client does not read its replies",
                  c->peer);
        conn_close(c);
        return;
    }
    w = xmalloc(sizeof(*w) + c->out.len - (size_t)rc);
    w->len = c->out.len - (size_t)rc;
    memcpy(w->data, c->out.data + rc, w->len);
    sb_reset(&c->out);
    buf = uv_buf_init(w->data, (unsigned)w->len);
    if ((rc = uv_write(&w->req, &c->h.stream, &buf, 1, on_written)) < 0) {
        free(w);
        peer_warn(c->d, "%s: write: %s", c->peer, uv_strerror(rc));
        conn_close(c);
    }
}

/*
 * --sim-clock (simulation and tests only): the request's
 * chokepoint_sim_time attribute is the clock, and reservations expire on
 * that clock instead of the daemon's timer.
 */
static int64_t
sim_time(struct conn *c, int64_t now)
{
    struct daemon *d = c->d;
    uint64_t v;

    for (size_t i = 0; i < c->parser.nattrs; i++) {
        const struct policy_attr *a = &c->parser.attrs[i];

        if (str_eq(a->name, "chokepoint_sim_time") &&
            parse_u64(a->value.p, a->value.len, &v) && v < INT64_MAX) {
            now = (int64_t)v;
            break;
        }
    }
    if (now - d->sim_expired_ms >= 1000) {
        cp_engine_expire(&d->engine, now);
        d->sim_expired_ms = now;
    }
    return now;
}

/* The decision made: logged, its incident applied, answered. */
static void
answer(struct conn *c, const struct cp_event *ev, struct cp_decision *dec,
       int rc, int64_t now)
{
    struct daemon *d = c->d;
    char err[CP_ERR_MAX], text[CP_TEXT_MAX];

    if (rc < 0) {
        d->stats.bad_requests++;
        peer_warn(d, "%s: request has neither sasl_username nor a valid "
                     "client_address; answering DUNNO",
                  c->peer);
    }
    daemon_log_decision(d, dec, ev, incident_apply(d, dec, ev, NULL, now, err),
                        now);
    if (dec->detected)
        dnsbl_check(d->dnsbl, dec, ev);
    /* the text explains a verdict; DUNNO (also shadow mode) goes bare */
    policy_format_reply(&c->out, cp_action_word(dec->action),
                        dec->action == CP_ACT_DUNNO
                            ? NULL
                            : cp_reply_text(dec, text, sizeof(text)));
}

static void on_decided(void *arg);

static void
handle_request(struct conn *c)
{
    struct daemon *d = c->d;
    struct policy_request req;
    struct cp_event ev;
    struct cp_decision dec;
    struct str v = {NULL, 0};
    const char *bad;
    int64_t now = daemon_now_ms();

    if (d->sim_clock)
        now = sim_time(c, now);
    c->requests++;
    policy_request_get(&c->parser, &req);
    if (!str_eq(req.request, "smtpd_access_policy")) {
        char esc[80];

        d->stats.bad_requests++;
        peer_warn(d, "%s: request type '%s' is not smtpd_access_policy; "
                     "answering DUNNO",
                  c->peer,
                 str_escape(esc, sizeof(esc), req.request.p ? req.request.p
                                                            : "",
                            req.request.len, 40));
        policy_format_reply(&c->out, "DUNNO", NULL);
        return;
    }
    if ((bad = policy_event(&req, &ev, &v)) != NULL) {
        char esc[80];

        /* not decided, not charged: the configured answer */
        d->stats.bad_requests++;
        peer_warn(d, "%s: %s='%s' is not a number in range; answering %s "
                     "(protocol.malformed)",
                  c->peer, bad,
                  str_escape(esc, sizeof(esc), v.p ? v.p : "", v.len, 40),
                  d->cfg->malformed_defer ? "DEFER_IF_PERMIT" : "DUNNO");
        if (d->cfg->malformed_defer)
            policy_format_reply(&c->out, "DEFER_IF_PERMIT",
                                "4.3.0 Policy service: malformed request");
        else
            policy_format_reply(&c->out, "DUNNO", NULL);
        return;
    }
    cp_session_step(&d->engine, &c->session, &ev, now);
    c->last_ms = now;
    if (d->fleet != NULL) {
        int rc;

        if (c->fw == NULL)
            c->fw = fleet_wait_new(d->fleet);
        rc = fleet_decide(c->fw, &ev, now, on_decided, c);
        if (rc == CP_DECIDE_AWAIT) {
            c->waiting = true;
            return;
        }
        answer(c, fleet_event(c->fw), fleet_decision(c->fw), rc, now);
        return;
    }
    answer(c, &ev, &dec, cp_engine_decide(&d->engine, &ev, now, &dec), now);
}

static void
protocol_error(struct conn *c, enum policy_status st, const char *data,
               size_t len)
{
    char esc[160];
    const char *line;
    size_t llen;

    policy_parser_excerpt(&c->parser, &line, &llen);
    if (llen > 0) {
        data = line;
        len = llen;
    }
    c->d->stats.protocol_errors++;
    peer_warn(c->d, "%s: closing: %s (after %llu requests) near \"%s\"",
              c->peer, policy_status_str(st), (unsigned long long)c->requests,
              str_escape(esc, sizeof(esc), data, len, 32));
    conn_close_flushed(c);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void
read_stop(struct conn *c)
{
    uv_read_stop(&c->h.stream);
    c->read_stopped = true;
}

/* Decide the policy requests in p[0..n); *completed is set once one is
 * complete. -1 after a protocol error (the connection closes). */
static int
feed_policy(struct conn *c, const char *p, size_t n, bool *completed)
{
    size_t off = 0;

    while (off < n && !c->closing) {
        size_t used = 0;
        enum policy_status st = policy_feed(&c->parser, p + off, n - off,
                                            &used);

        if (st == POLICY_REQUEST && c->parser.nattrs == 0) {
            /* a bare empty line: Postfix never sends one, and answering
             * each would let a peer make a reply (and a warning) per
             * byte it sends */
            c->d->stats.protocol_errors++;
            peer_warn(c->d, "%s: closing: empty request (after %llu "
                            "requests)",
                      c->peer, (unsigned long long)c->requests);
            conn_close_flushed(c);
            return -1;
        }
        if (st == POLICY_REQUEST) {
            handle_request(c);
            *completed = true;
        } else if (st != POLICY_NEED_MORE) {
            protocol_error(c, st, p + off + used, n - off - used);
            return -1;
        }
        off += used;
        if (c->waiting) {
            /* the rest waits for the decision: reading stops if there is
             * one (a client that sends before its answer), else goes on
             * (Postfix sends nothing before its answer: stopping and
             * starting again would cost two system calls a request) */
            c->rest_off = (size_t)(p + off - c->rbuf);
            c->rest_len = n - off;
            if (c->rest_len > 0)
                read_stop(c);
            return 0;
        }
    }
    return 0;
}

/* Replies written; the idle timer and the connection's lifetime. */
static void
after_requests(struct conn *c, bool completed)
{
    flush_out(c);
    if (c->closing || !completed || c->waiting)
        return;
    /* The idle timer restarts when a request completes, not on every byte:
     * trickling a request, or a header a second, does not keep a
     * connection. A policy connection is closed between requests once it
     * is max_lifetime old. */
    if (c->milter == NULL && !pending(c) &&
        uv_now(c->d->loop) - c->opened_ms >= c->d->cfg->max_lifetime_ms) {
        c->d->stats.lifetime_closes++;
        msg_debug("%s: closing at protocol.max_lifetime", c->peer);
        conn_close_flushed(c);
        return;
    }
    uv_timer_again(&c->idle);
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    bool completed = false;

    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            peer_warn(c->d, "%s: read: %s", c->peer,
                      uv_strerror((int)nread));
        else if (pending(c))
            peer_warn(c->d, "%s: client closed in the middle of a request",
                      c->peer);
        conn_close(c);
        return;
    }
    if (nread == 0)
        return; /* (EAGAIN) */
    if (c->waiting) { /* sent before its answer: it waits (in rbuf) */
        c->rest_off = (size_t)(buf->base - c->rbuf);
        c->rest_len = (size_t)nread;
        read_stop(c);
        return;
    }
    if (c->milter != NULL) {
        int rc = milter_feed(c->d, c->milter, c->peer, buf->base,
                             (size_t)nread, &c->out);

        if (rc < 0)
            c->d->stats.protocol_errors++;
        if (rc != 0) {
            conn_close_flushed(c);
            return;
        }
        completed = !pending(c);
    } else if (feed_policy(c, buf->base, (size_t)nread, &completed) < 0) {
        return;
    }
    after_requests(c, completed);
}

/* Fleet mode: the waiting decision is made; answer it, then go on with
 * what was read after it, then read again. */
static void
on_decided(void *arg)
{
    struct conn *c = arg;
    bool completed = true;

    c->waiting = false;
    answer(c, fleet_event(c->fw), fleet_decision(c->fw), 0, c->last_ms);
    if (c->rest_len > 0) {
        size_t off = c->rest_off, len = c->rest_len;

        c->rest_len = 0;
        if (feed_policy(c, c->rbuf + off, len, &completed) < 0)
            return;
    }
    if (!c->waiting && !c->closing && c->read_stopped) {
        c->read_stopped = false;
        if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0) {
            conn_close(c);
            return;
        }
    }
    after_requests(c, completed);
}

/* A connection accepted only to be closed at once (the caller gets a
 * clean EOF and holds nothing). `why`, when given, is logged through the
 * peer-warning limit. */
static void
refuse(struct conn *c, uint64_t *counter, const char *why)
{
    (*counter)++;
    if (why != NULL)
        peer_warn(c->d, "%s: refused: %s", c->peer, why);
    conn_close(c);
}

void
conn_start(struct daemon *d, uv_stream_t *server, bool milter)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    struct peer p;
    const char *why;
    char reason[128];
    int rc;

    c->d = d;
    if (server->type == UV_TCP) {
        uv_tcp_init(d->loop, &c->h.tcp);
        uv_tcp_nodelay(&c->h.tcp, 1);
    } else {
        uv_pipe_init(d->loop, &c->h.pipe, 0);
    }
    uv_timer_init(d->loop, &c->idle);
    c->h.handle.data = c;
    c->idle.data = c;
    c->open_handles = 2;
    policy_parser_init(&c->parser, &d->cfg->proto);
    sb_init(&c->out);
    if ((rc = uv_accept(server, &c->h.stream)) < 0) {
        d->stats.accept_errors++;
        peer_warn(d, "accept: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    why = trust_check(d->diag, d->cfg, &c->h.stream,
                      d->stats.conns_accepted + d->stats.conns_untrusted, &p);
    memcpy(c->peer, p.name, sizeof(c->peer));
    if (why != NULL) {
        snprintf(reason, sizeof(reason), "not a trusted caller: %s", why);
        refuse(c, &d->stats.conns_untrusted, reason);
        return;
    }
    if (d->stopping) {
        refuse(c, &d->stats.conns_refused, NULL);
        return;
    }
    if (d->nconns >= d->cfg->max_connections) {
        int64_t now = daemon_now_ms();

        /* one line per 10 s: a flood's count, not a line per connection */
        d->refused_since_log++;
        if (now - d->refuse_logged_ms >= 10000) {
            msg_warn("refused %llu connections: protocol.max_connections "
                     "(%u) reached",
                     (unsigned long long)d->refused_since_log,
                     d->cfg->max_connections);
            d->refuse_logged_ms = now;
            d->refused_since_log = 0;
        }
        refuse(c, &d->stats.conns_refused, NULL);
        return;
    }
    if ((c->share = share_take(d, p.share)) == NULL) {
        snprintf(reason, sizeof(reason),
                 "this caller holds protocol.max_connections_per_peer (%u)",
                 d->cfg->max_connections_per_peer);
        refuse(c, &d->stats.conns_peer_share, reason);
        return;
    }
    if (milter)
        c->milter = milter_sess_new();
    d->stats.conns_accepted++;
    c->listed = true;
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->nconns++;
    c->opened_ms = uv_now(d->loop); /* the loop's clock: no syscall */
    msg_debug("%s: connected%s", c->peer, milter ? " (milter)" : "");
    uv_timer_start(&c->idle, on_idle, d->cfg->idle_timeout_ms,
                   d->cfg->idle_timeout_ms);
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

void
conn_close_all(struct daemon *d)
{
    while (d->conns != NULL)
        conn_close(d->conns);
}
