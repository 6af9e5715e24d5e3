/*
 * dnsbl.c — look the client address up in infected-host lists (dnsbl.zones,
 * XBL/CBL-type) with c-ares on the loop, and report a listing as evidence
 * against the account that sent from it (cp_engine_listed).
 *
 * Never in the reply's path: the first request from an address starts the
 * look-ups and is answered at once; the answer (a few ms later) counts for
 * the account, and for later requests from the address while it is cached
 * (dnsbl.cache_ttl, at most dnsbl.max_cache addresses, oldest first out).
 * Answers listed in dnsbl.ignore (PBL-type "dynamic range" codes, expected
 * on a submission port) and failed look-ups are not evidence. Private,
 * loopback and link-local addresses are never looked up.
 *
 * c-ares runs on the loop: its sockets are watched with uv_poll, its
 * timeouts with one uv_timer (the pattern of c-ares' sock_state_cb).
 * Thread: the loop thread only.
 */
#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "util/agemap.h"
#include "util/inet.h"
#include "util/msg.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define DNSBL_MAX_SOCKS 16

enum { ADDR_PENDING, ADDR_CLEAN, ADDR_LISTED };

struct addr {              /* one client address, cached */
    struct agemap_ent age; /* key: the inet_addr bytes (17) */
    struct inet_addr a;
    uint8_t status;
    uint8_t outstanding;   /* look-ups not yet answered */
    uint8_t zone;          /* where it was found (index in dnsbl.zone) */
};

struct query {
    struct dnsbl *b;
    struct inet_addr a;
    uint32_t zone;
    uint64_t gen;          /* cache generation: stale after a reload */
    char key[CP_KEY_MAX];  /* the account that asked */
    size_t keylen;
};

struct sock {
    uv_poll_t poll;
    struct dnsbl *b;
    ares_socket_t fd;
    bool used;
};

struct dnsbl {
    struct daemon *d;
    ares_channel ch;
    bool ch_ok;
    uv_timer_t timer;
    struct sock socks[DNSBL_MAX_SOCKS];
    struct agemap cache;
    uint64_t gen;
    struct dnsbl_stats st;
};

#define ADDR(ent) agemap_entry((ent), struct addr, age)

static bool
private_addr(const struct inet_addr *a)
{
    const uint8_t *b = a->bytes;

    if (a->family == 4)
        return b[0] == 10 || b[0] == 127 || b[0] == 0 ||
               (b[0] == 172 && (b[1] & 0xf0) == 16) ||
               (b[0] == 192 && b[1] == 168) || (b[0] == 169 && b[1] == 254) ||
               (b[0] == 100 && (b[1] & 0xc0) == 64); /* CGNAT 100.64/10 */
    return (b[0] & 0xfe) == 0xfc ||                  /* fc00::/7 */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 */
           (memcmp(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 15) == 0 && b[15] <= 1);
}

/* "4.3.2.1.zone" or the IPv6 nibbles reversed. */
static void
query_name(const struct inet_addr *a, const char *zone, char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t off = 0;

    if (a->family == 4) {
        snprintf(out, n, "%u.%u.%u.%u.%s", a->bytes[3], a->bytes[2],
                 a->bytes[1], a->bytes[0], zone);
        return;
    }
    for (int i = 15; i >= 0 && off + 4 < n; i--) {
        out[off++] = hex[a->bytes[i] & 15];
        out[off++] = '.';
        out[off++] = hex[a->bytes[i] >> 4];
        out[off++] = '.';
    }
    snprintf(out + off, n - off, "%s", zone);
}

static void
charge(struct dnsbl *b, const char *key, size_t keylen, const char *zone)
{
    struct cp_decision dec;
    char k[CP_KEY_MAX * 4 + 4], err[CP_ERR_MAX];
    int64_t now = daemon_now_ms();

    cp_engine_listed(&b->d->engine, key, keylen, now, &dec);
    incident_apply(b->d, &dec, NULL, NULL, now, err);
    if (dec.fired) {
        b->st.charged++;
        str_escape(k, sizeof(k), key, keylen, CP_KEY_MAX);
        msg_info("account %s: client address listed in %s: dnsbl evidence, "
                 "score %.1f",
                 k, zone, dec.score);
    }
}

static bool
ignored(const struct cp_dnsbl *c, const struct in_addr *ia)
{
    uint32_t v = ntohl(ia->s_addr);

    for (uint32_t i = 0; i < c->nignore; i++)
        if (c->ignore[i] == v)
            return true;
    return false;
}

static void
on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct query *q = arg;
    struct dnsbl *b = q->b;
    const struct cp_dnsbl *c = &b->d->cfg->dnsbl;
    struct ares_addrttl ttls[8];
    int n = 8;
    bool listed = false;
    struct agemap_ent *ent;
    struct addr *ad;

    (void)timeouts;
    if (status == ARES_SUCCESS &&
        ares_parse_a_reply(abuf, alen, NULL, ttls, &n) == ARES_SUCCESS)
        for (int i = 0; i < n; i++)
            listed |= !ignored(c, &ttls[i].ipaddr);
    if (status == ARES_SUCCESS || status == ARES_ENOTFOUND ||
        status == ARES_ENODATA)
        b->st.answers++;
    else if (status != ARES_EDESTRUCTION && status != ARES_ECANCELLED)
        b->st.failures++;
    if (q->gen == b->gen &&
        (ent = agemap_get(&b->cache, (const char *)&q->a, sizeof(q->a)))) {
        ad = ADDR(ent);
        if (ad->outstanding > 0)
            ad->outstanding--;
        if (listed && ad->status != ADDR_LISTED) {
            ad->status = ADDR_LISTED;
            ad->zone = (uint8_t)q->zone;
            b->st.listed++;
        } else if (ad->outstanding == 0 && ad->status == ADDR_PENDING) {
            ad->status = ADDR_CLEAN;
        }
        if (listed)
            charge(b, q->key, q->keylen, c->zone[q->zone]);
    }
    free(q);
}

/* ---- c-ares sockets on the loop ---- */

static void on_timer(uv_timer_t *t);

static void
rearm(struct dnsbl *b)
{
    struct timeval tv, *tvp = ares_timeout(b->ch, NULL, &tv);

    if (tvp == NULL)
        uv_timer_stop(&b->timer);
    else
        uv_timer_start(&b->timer, on_timer,
                       (uint64_t)tvp->tv_sec * 1000 +
                           (uint64_t)tvp->tv_usec / 1000 + 1,
                       0);
}

static void
on_timer(uv_timer_t *t)
{
    struct dnsbl *b = t->data;

    ares_process_fd(b->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(b);
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *s = p->data;
    struct dnsbl *b = s->b;
    ares_socket_t fd = s->fd;

    if (status < 0)
        events = UV_READABLE | UV_WRITABLE; /* let c-ares see the error */
    ares_process_fd(b->ch, events & UV_READABLE ? fd : ARES_SOCKET_BAD,
                    events & UV_WRITABLE ? fd : ARES_SOCKET_BAD);
    rearm(b);
}

static void
on_poll_closed(uv_handle_t *h)
{
    struct sock *s = h->data;

    s->used = false;
}

static void
on_sock_state(void *arg, ares_socket_t fd, int readable, int writable)
{
    struct dnsbl *b = arg;
    struct sock *s = NULL, *free_slot = NULL;

    for (int i = 0; i < DNSBL_MAX_SOCKS; i++) {
        if (b->socks[i].used && b->socks[i].fd == fd &&
            !uv_is_closing((uv_handle_t *)&b->socks[i].poll))
            s = &b->socks[i];
        else if (!b->socks[i].used && free_slot == NULL)
            free_slot = &b->socks[i];
    }
    if (!readable && !writable) {
        if (s != NULL) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_poll_closed);
        }
        return;
    }
    if (s == NULL) {
        if (free_slot == NULL) {
            msg_error("dnsbl: more than %d resolver sockets", DNSBL_MAX_SOCKS);
            return;
        }
        s = free_slot;
        if (uv_poll_init_socket(b->d->loop, &s->poll, fd) != 0)
            return;
        s->used = true;
        s->fd = fd;
        s->b = b;
        s->poll.data = s;
    }
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) |
                                (writable ? UV_WRITABLE : 0),
                  on_poll);
}

/* ---- the cache ---- */

static void
addr_free(struct dnsbl *b, struct addr *ad)
{
    agemap_del(&b->cache, &ad->age);
    free(ad);
}

static void
cache_clear(struct dnsbl *b)
{
    while (b->cache.oldest)
        addr_free(b, ADDR(b->cache.oldest));
    b->gen++;
}

void
dnsbl_check(struct dnsbl *b, const struct cp_decision *dec,
            const struct cp_event *ev)
{
    const struct cp_dnsbl *c;
    struct inet_addr a;
    struct agemap_ent *ent;
    struct addr *ad;
    int64_t now = daemon_now_ms();

    if (b == NULL || !b->ch_ok || !dec->detected ||
        (c = &b->d->cfg->dnsbl)->nzones == 0 ||
        ev->client_address.p == NULL ||
        !inet_parse(ev->client_address.p, ev->client_address.len, &a) ||
        private_addr(&a))
        return;
    while (b->cache.oldest &&
           now - b->cache.oldest->t_ms >= (int64_t)c->cache_ttl_ms &&
           ADDR(b->cache.oldest)->outstanding == 0)
        addr_free(b, ADDR(b->cache.oldest));
    if ((ent = agemap_get(&b->cache, (const char *)&a, sizeof(a))) != NULL) {
        ad = ADDR(ent);
        if (ad->status == ADDR_LISTED)
            charge(b, dec->id.dkey, dec->id.dkeylen,
                   ad->zone < c->nzones ? c->zone[ad->zone] : "?");
        return;
    }
    while (agemap_count(&b->cache) >= c->max_cache && b->cache.oldest)
        addr_free(b, ADDR(b->cache.oldest));
    ad = xcalloc(1, sizeof(*ad));
    ad->a = a;
    ad->age.key = (const char *)&ad->a;
    ad->age.klen = sizeof(ad->a);
    ad->age.t_ms = now;
    ad->status = ADDR_PENDING;
    agemap_put(&b->cache, &ad->age);
    for (uint32_t z = 0; z < c->nzones; z++) {
        struct query *q = xcalloc(1, sizeof(*q));
        char name[256];

        q->b = b;
        q->a = a;
        q->zone = z;
        q->gen = b->gen;
        memcpy(q->key, dec->id.dkey, dec->id.dkeylen);
        q->keylen = dec->id.dkeylen;
        query_name(&a, c->zone[z], name, sizeof(name));
        ad->outstanding++;
        b->st.queries++;
        ares_query(b->ch, name, C_IN, T_A, on_answer, q);
    }
    rearm(b);
}

/* ---- start, reload, stop ---- */

static int
channel_open(struct dnsbl *b)
{
    const struct cp_dnsbl *c = &b->d->cfg->dnsbl;
    struct ares_options o;
    int rc;

    memset(&o, 0, sizeof(o));
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = b;
    o.timeout = (int)c->timeout_ms;
    o.tries = 2;
    rc = ares_init_options(&b->ch, &o,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                               ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        msg_error("dnsbl: resolver: %s; look-ups off", ares_strerror(rc));
        return -1;
    }
    if (c->servers[0] &&
        (rc = ares_set_servers_ports_csv(b->ch, c->servers)) != ARES_SUCCESS) {
        msg_error("dnsbl.servers '%s': %s; look-ups off", c->servers,
                  ares_strerror(rc));
        ares_destroy(b->ch);
        return -1;
    }
    b->ch_ok = true;
    return 0;
}

struct dnsbl *
dnsbl_start(struct daemon *d)
{
    struct dnsbl *b = xcalloc(1, sizeof(*b));

    ares_library_init(ARES_LIB_INIT_ALL);
    b->d = d;
    agemap_init(&b->cache, 1024);
    uv_timer_init(d->loop, &b->timer);
    b->timer.data = b;
    channel_open(b);
    return b;
}

/* After a reload: new zones or servers take effect; the cache is cleared
 * (its answers may be for other zones). */
void
dnsbl_reload(struct dnsbl *b)
{
    if (b == NULL)
        return;
    if (b->ch_ok) {
        ares_destroy(b->ch); /* answers in flight: ARES_EDESTRUCTION */
        b->ch_ok = false;
    }
    cache_clear(b);
    channel_open(b);
    rearm(b);
}

void
dnsbl_stats(const struct dnsbl *b, struct dnsbl_stats *out)
{
    *out = b ? b->st : (struct dnsbl_stats){0};
    if (b)
        out->cached = agemap_count(&b->cache);
}

static void
on_timer_closed(uv_handle_t *h)
{
    struct dnsbl *b = h->data;

    agemap_fini(&b->cache);
    free(b);
    ares_library_cleanup();
}

void
dnsbl_stop(struct dnsbl *b)
{
    if (b == NULL)
        return;
    if (b->ch_ok)
        ares_destroy(b->ch); /* closes its sockets through on_sock_state */
    b->ch_ok = false;
    cache_clear(b);
    uv_timer_stop(&b->timer);
    uv_close((uv_handle_t *)&b->timer, on_timer_closed);
}
