/*
 * evidence.c — see evidence.h.
 *
 * Signals, per RCPT request:
 *   message level (first RCPT of a message):
 *     forged_sender / owned_sender — the envelope sender is (not) one the
 *       account owns: its SASL login, or a sender it used at least twice
 *       while its score was low (learned, so aliases are accepted); for an
 *       account without an address-shaped login, unknown senders count
 *       only once it has a regular sender or keeps changing senders;
 *     rate_jump — more messages this hour than rate_factor × the account's
 *       usual active hour (+5, so new accounts get slack);
 *     networks — the login used from `networks` or more distinct /24 (/48)
 *       networks within the hour (stolen credentials);
 *   delivery level (from the mail log, cp_evidence_outcome):
 *     bad_recipient — the next hop said the recipient does not exist
 *       (5.1.x): address lists harvested or guessed;
 *     remote_reject — refused by the receiver's policy (5.7.x; a 4.7.x
 *       deferral counts a quarter): the receiver thinks it is spam;
 *     delivered — accepted (a small credit per recipient);
 *   dnsbl (cp_evidence_listed): the client address is on an infected-host
 *     list (XBL/CBL-type), at most once an hour;
 *     helo_new — a HELO name none of the account's devices used (learned
 *       while the score is low, like senders; IP literals such as
 *       "[192.168.1.5]" count as one name, since phones and Thunderbird
 *       send the address they have), only once the account has a regular
 *       HELO; helo_forged — the HELO is the recipient's domain (spamware
 *       pretending to be the receiver's own host);
 *     odd_hour — a message at an hour of the day (UTC) in which the
 *       account has never sent, once it has sent 30 messages while clean
 *       (people keep hours; bots send round the clock);
 *     tls_new — a TLS stack (protocol and cipher Postfix negotiated, or
 *       plaintext) none of the account's devices used, once it has one it
 *       used three times: a bot's own SMTP engine, a spammer's tool;
 *       half weight when helo_new fired for the same message;
 *   END-OF-MESSAGE (cp_evidence_eom):
 *     uniform_size — one template sent for hours to many: a run of
 *       messages whose final sizes lie within 2 % (+64 bytes) of each other
 *       (other sizes in between are tolerated up to one in four, so the
 *       owner's own mail does not hide a bot's), of at least
 *       CP_EV_RUN_MSGS messages to about 16 or more distinct recipients,
 *       started at least CP_EV_RUN_SPAN_S (3 h) ago. Fires once an hour
 *       while the run lasts. People's mail varies in size; a person's mail
 *       merge or greeting cards are one template too, but over within an
 *       hour or two. While it has fired in the last two hours, the
 *       account's own sender earns no owned_sender credit: a bot in the
 *       owner's mail client sends as the owner, so then it tells nothing;
 *   recipient level: new_recipient / known_recipient — against a 256-bit
 *     filter of recipients the account has mailed; a message's recipient
 *     evidence is capped at ±1 so one big message cannot decide alone.
 */
#include "core/evidence.h"

#include "core/custmap.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util/hmap.h"
#include "util/strbuf.h"

#define HOUR_MS 3600000

static uint32_t
hash_ci(struct str s)
{
    return hmap_hash_lower32(s.p, s.len);
}

static void
decay(struct cp_evidence *ev, const struct cp_detection *det, int64_t now)
{
    double dt = (double)(now - ev->t_ms), f;

    if (ev->t_ms == 0 || dt <= 0) {
        if (ev->t_ms == 0)
            ev->t_ms = now;
        return;
    }
    f = exp2(-dt / (double)det->half_life_ms);
    ev->score = (float)(ev->score * f);
    for (int i = 0; i < CP_SIG_COUNT; i++)
        ev->sig[i] = (float)(ev->sig[i] * f);
    ev->t_ms = now;
}

static void
fire(struct cp_evidence *ev, const struct cp_detection *det, enum cp_signal s,
     double scale, uint32_t *fired)
{
    double w = det->weight[s] * scale;

    if (w == 0)
        return; /* off (or no credit now) */
    ev->score = (float)(ev->score + w);
    ev->sig[s] = (float)(ev->sig[s] + w);
    if (ev->fired[s] < UINT16_MAX)
        ev->fired[s]++;
    ev->last_s[s] = (uint32_t)(ev->t_ms / 1000);
    *fired |= 1u << s;
}

void
cp_evidence_habits_only(struct cp_evidence *ev)
{
    ev->score = 0;
    ev->msg_rcpt = 0;
    ev->listed_s = 0;
    memset(ev->sig, 0, sizeof(ev->sig));
    memset(ev->fired, 0, sizeof(ev->fired));
    memset(ev->last_s, 0, sizeof(ev->last_s));
}

int
cp_evidence_block_signals(const struct cp_evidence *ev,
                          const struct cp_detection *det)
{
    int n = cp_evidence_corroboration(ev);
    double delivery = ev->sig[CP_SIG_BAD_RECIPIENT] +
                      ev->sig[CP_SIG_REMOTE_REJECT];

    if (ev->msgs_learned < det->learning && delivery < det->watch_at &&
        n > 1)
        n = 1; /* new: its habits unknown, only the receivers' word blocks */
    return n;
}

int
cp_evidence_corroboration(const struct cp_evidence *ev)
{
    int n = 0;

    /* content alone never blocks: the same text from many accounts can be
     * a chain letter (doc/detection.md) */
    for (int i = 0; i < CP_SIG_COUNT; i++)
        n += ev->sig[i] >= 1.0f && i != CP_SIG_CAMPAIGN;
    return n;
}

double
cp_evidence_score(const struct cp_evidence *ev, const struct cp_detection *det,
                  int64_t now_ms)
{
    double dt = (double)(now_ms - ev->t_ms);

    if (dt <= 0)
        return ev->score;
    return ev->score * exp2(-dt / (double)det->half_life_ms);
}

/* ---- fleet mode: the suspicion shared ---- */

static double
fade_factor(const struct cp_detection *det, int64_t from, int64_t to)
{
    if (from == 0 || to <= from)
        return 1.0;
    return exp2(-(double)(to - from) / (double)det->half_life_ms);
}

void
cp_evidence_mark(const struct cp_evidence *ev, struct cp_ev_delta *m)
{
    m->t_ms = ev->t_ms;
    memcpy(m->sig, ev->sig, sizeof(m->sig));
    memcpy(m->fired, ev->fired, sizeof(m->fired));
    memcpy(m->last_s, ev->last_s, sizeof(m->last_s));
}

void
cp_ev_delta_fade(struct cp_ev_delta *d, const struct cp_detection *det,
                 int64_t to)
{
    double f = fade_factor(det, d->t_ms, to);

    if (f != 1.0)
        for (int i = 0; i < CP_SIG_COUNT; i++)
            d->sig[i] = (float)(d->sig[i] * f);
    if (to > d->t_ms)
        d->t_ms = to;
}

static uint16_t
sat16(uint64_t v)
{
    return v > UINT16_MAX ? UINT16_MAX : (uint16_t)v;
}

bool
cp_evidence_gained(const struct cp_ev_delta *m, const struct cp_evidence *ev,
                   const struct cp_detection *det, struct cp_ev_delta *acc)
{
    double f = fade_factor(det, m->t_ms, ev->t_ms);
    bool any = false;

    cp_ev_delta_fade(acc, det, ev->t_ms);
    for (int i = 0; i < CP_SIG_COUNT; i++) {
        double g = ev->sig[i] - m->sig[i] * f;
        bool fired = ev->fired[i] != m->fired[i] ||
                     ev->last_s[i] != m->last_s[i];

        if (!fired && fabs(g) < 1e-4)
            continue; /* fading only (float rounding) */
        any = true;
        acc->sig[i] = (float)(acc->sig[i] + g);
        if (ev->fired[i] > m->fired[i])
            acc->fired[i] = sat16((uint64_t)acc->fired[i] + ev->fired[i] -
                                  m->fired[i]);
        if (ev->last_s[i] > acc->last_s[i])
            acc->last_s[i] = ev->last_s[i];
    }
    return any;
}

void
cp_ev_delta_add(struct cp_ev_delta *a, const struct cp_ev_delta *b,
                const struct cp_detection *det)
{
    struct cp_ev_delta x = *b;

    if (a->t_ms < x.t_ms)
        cp_ev_delta_fade(a, det, x.t_ms);
    else
        cp_ev_delta_fade(&x, det, a->t_ms);
    for (int i = 0; i < CP_SIG_COUNT; i++) {
        a->sig[i] = a->sig[i] + x.sig[i];
        a->fired[i] = sat16((uint64_t)a->fired[i] + x.fired[i]);
        if (x.last_s[i] > a->last_s[i])
            a->last_s[i] = x.last_s[i];
    }
}

bool
cp_ev_delta_news(const struct cp_ev_delta *d, double up, double down)
{
    double sum = 0;

    for (int i = 0; i < CP_SIG_COUNT; i++) {
        if (d->sig[i] >= up)
            return true;
        sum += d->sig[i];
    }
    return sum >= up || sum <= -down;
}

void
cp_evidence_adopt(struct cp_evidence *ev, const struct cp_detection *det,
                  const struct cp_ev_shared *sh,
                  const struct cp_ev_delta *pending, int64_t now_ms)
{
    int64_t t = now_ms > ev->t_ms ? now_ms : ev->t_ms;
    double f = fade_factor(det, sh->t_ms, t), score = sh->score * f;
    struct cp_ev_delta p;

    if (pending != NULL) {
        p = *pending;
        cp_ev_delta_fade(&p, det, t);
    } else {
        memset(&p, 0, sizeof(p));
    }
    for (int i = 0; i < CP_SIG_COUNT; i++) {
        ev->sig[i] = (float)(sh->sig[i] * f + p.sig[i]);
        score += p.sig[i];
        ev->fired[i] = sat16((uint64_t)sh->fired[i] + p.fired[i]);
        if (sh->last_s[i] > ev->last_s[i])
            ev->last_s[i] = sh->last_s[i];
    }
    if (score < det->floor)
        score = det->floor;
    ev->score = (float)score;
    ev->t_ms = t;
}

/* A remembered set (hash, count) of o joined to ev's: the larger count
 * of each, a new one in place of the least used if it is used more. */
static void
merge_set(uint32_t *hash, uint8_t *count, uint8_t *hosts,
          const uint32_t *ohash, const uint8_t *ocount, const uint8_t *ohosts,
          int k)
{
    for (int j = 0; j < k; j++) {
        int low = 0, i;

        if (ocount[j] == 0)
            continue;
        for (i = 0; i < k && hash[i] != ohash[j]; i++)
            if (count[i] < count[low])
                low = i;
        if (i < k) {
            if (ocount[j] > count[i])
                count[i] = ocount[j];
            hosts[i] |= ohosts[j];
        } else if (count[low] < ocount[j]) {
            hash[low] = ohash[j];
            count[low] = ocount[j];
            hosts[low] = ohosts[j];
        }
    }
}

static void
merge_nets(struct cp_evidence *ev, const struct cp_evidence *o)
{
    for (int j = 0; j < CP_EV_NETS; j++) {
        int low = 0, i;
        unsigned w = o->nets_n[j] + 8u * o->nets_days[j];

        if (w == 0)
            continue;
        for (i = 0; i < CP_EV_NETS && ev->nets[i] != o->nets[j]; i++)
            if (ev->nets_n[i] + 8u * ev->nets_days[i] <
                ev->nets_n[low] + 8u * ev->nets_days[low])
                low = i;
        if (i == CP_EV_NETS) {
            if (ev->nets_n[low] + 8u * ev->nets_days[low] >= w)
                continue;
            i = low;
            ev->nets[i] = o->nets[j];
            ev->nets_n[i] = ev->nets_days[i] = 0;
            ev->nets_h[i] = 0;
            ev->nets_day[i] = o->nets_day[j];
        }
        if (o->nets_n[j] > ev->nets_n[i])
            ev->nets_n[i] = o->nets_n[j];
        ev->nets_h[i] |= o->nets_h[j];
        if (o->nets_days[j] > ev->nets_days[i])
            ev->nets_days[i] = o->nets_days[j];
        if ((int16_t)(o->nets_day[j] - ev->nets_day[i]) > 0)
            ev->nets_day[i] = o->nets_day[j];
    }
}

static void
merge_fresh(struct cp_evidence *ev, const struct cp_evidence *o)
{
    for (int j = 0; j < CP_EV_FRESH; j++) {
        int old = 0, i;

        if (o->fresh[j] == 0)
            continue;
        for (i = 0; i < CP_EV_FRESH && ev->fresh[i] != o->fresh[j]; i++)
            if (ev->fresh[old] != 0 &&
                (ev->fresh[i] == 0 || ev->fresh_s[i] < ev->fresh_s[old]))
                old = i;
        if (i == CP_EV_FRESH) {
            if (ev->fresh[old] != 0 && ev->fresh_s[old] >= o->fresh_s[j])
                continue;
            i = old;
            ev->fresh[i] = o->fresh[j];
            ev->fresh_s[i] = 0;
        }
        if (o->fresh_s[j] > ev->fresh_s[i]) {
            ev->fresh_s[i] = o->fresh_s[j];
            ev->fresh_who[i] = o->fresh_who[j];
        }
    }
}

void
cp_evidence_merge_habits(struct cp_evidence *ev, const struct cp_evidence *o)
{
    merge_set(ev->owned, ev->owned_n, ev->owned_h, o->owned, o->owned_n,
              o->owned_h, CP_EV_OWNED);
    merge_set(ev->odom, ev->odom_n, ev->odom_h, o->odom, o->odom_n, o->odom_h,
              CP_EV_DOMS);
    merge_set(ev->helo, ev->helo_n, ev->helo_h, o->helo, o->helo_n, o->helo_h,
              CP_EV_HELOS);
    merge_set(ev->tls, ev->tls_n, ev->tls_h, o->tls, o->tls_n, o->tls_h,
              CP_EV_TLS);
    merge_nets(ev, o);
    merge_fresh(ev, o);
    for (int i = 0; i < CP_EV_BLOOM; i++)
        ev->bloom[i] |= o->bloom[i];
    for (int i = 0; i < 2; i++)
        ev->local_seen[i] |= o->local_seen[i];
    ev->helo_seen |= o->helo_seen;
    ev->tls_seen |= o->tls_seen;
    ev->hours_used |= o->hours_used;
    if (o->rcpt_n > ev->rcpt_n) {
        ev->rcpt_n = o->rcpt_n;
        ev->rcpt_new = o->rcpt_new;
    }
    if (o->msgs_learned > ev->msgs_learned)
        ev->msgs_learned = o->msgs_learned;
    if (o->listed_s > ev->listed_s)
        ev->listed_s = o->listed_s;
}

static uint64_t
sig_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}

static uint64_t
sig_set(uint64_t h, const uint32_t *hash, const uint8_t *count,
        const uint8_t *hosts, int k)
{
    for (int i = 0; i < k; i++)
        h = sig_mix(h, (uint64_t)hash[i] << 16 | (uint64_t)hosts[i] << 8 |
                           (count[i] == 0     ? 0
                            : count[i] < 2    ? 1
                            : count[i] < 3    ? 2
                                              : 3));
    return h;
}

uint32_t
cp_evidence_habits_sig(const struct cp_evidence *ev)
{
    uint64_t h = 0;

    h = sig_set(h, ev->owned, ev->owned_n, ev->owned_h, CP_EV_OWNED);
    h = sig_set(h, ev->odom, ev->odom_n, ev->odom_h, CP_EV_DOMS);
    h = sig_set(h, ev->helo, ev->helo_n, ev->helo_h, CP_EV_HELOS);
    h = sig_set(h, ev->tls, ev->tls_n, ev->tls_h, CP_EV_TLS);
    for (int i = 0; i < CP_EV_NETS; i++)
        h = sig_mix(h, (uint64_t)ev->nets[i] << 16 |
                           (uint64_t)ev->nets_h[i] << 8 |
                           (ev->nets_days[i] >= 2) << 3 |
                           (ev->nets_n[i] >= 5 ? 2 : ev->nets_n[i] >= 3));
    /* the unfamiliar networks of the last hour: the `networks` signal
     * counts them over the fleet */
    for (int i = 0; i < CP_EV_FRESH; i++)
        h = sig_mix(h, ev->fresh[i]);
    for (int i = 0; i < CP_EV_BLOOM; i++)
        h = sig_mix(h, ev->bloom[i]);
    h = sig_mix(h, ev->local_seen[0]);
    h = sig_mix(h, ev->local_seen[1]);
    h = sig_mix(h, ev->helo_seen);
    h = sig_mix(h, (uint64_t)ev->tls_seen << 32 | ev->hours_used);
    h = sig_mix(h, ev->msgs_learned >= 30);
    return (uint32_t)(h ^ h >> 32);
}

/* ---- message-level signals ---- */

/* A remembered entry used twice, or on two hosts of a fleet. */
static bool
used_twice(uint8_t count, uint8_t hosts)
{
    return count >= 2 || (hosts & (hosts - 1)) != 0;
}

static bool
learned(const struct cp_evidence *ev, uint32_t h)
{
    for (int i = 0; ev != NULL && i < CP_EV_OWNED; i++)
        if (ev->owned[i] == h && used_twice(ev->owned_n[i], ev->owned_h[i]))
            return true;
    return false;
}

bool
cp_evidence_knows_sender(const struct cp_evidence *ev,
                         const struct cp_evidence *shared, struct str sender)
{
    uint32_t h;

    if (!str_set(sender))
        return false;
    h = hash_ci(sender);
    return learned(ev, h) || learned(shared, h);
}

/* The sender is the account's: its login, an address it (or, for a
 * customer's login, any of the customer's logins) used at least twice
 * while clean, or an address at one of the customer's domains. */
static bool
owned(struct cp_evidence *ev, const struct cp_ev_input *in, uint32_t h)
{
    if (in->sasl && in->login.p != NULL && in->login.len == in->sender.len &&
        hash_ci(in->login) == h)
        return true;
    return learned(ev, h) || learned(in->shared, h) ||
           cp_customer_owns(in->cust, in->sender.p, in->sender.len);
}

/* The local part of an address (before the last '@'). */
static uint32_t
local_hash(struct str s)
{
    struct str d = str_domain(s);

    return d.len == 0 ? 0 : hash_ci((struct str){s.p, s.len - d.len - 1});
}

static uint64_t seen_bits(uint32_t x, unsigned bits);

/* Was the local part of `addr` one of the account's own or colleagues'
 * (the filter of 128 bits, 2 bits each)? */
static bool
local_seen(const struct cp_evidence *ev, struct str addr)
{
    uint32_t h = local_hash(addr);
    uint64_t lo = seen_bits(h, 64), hi = seen_bits(h >> 16 | h << 16, 64);

    return h != 0 && (ev->local_seen[0] & lo) == lo &&
           (ev->local_seen[1] & hi) == hi;
}

static void
learn_local(struct cp_evidence *ev, struct str addr)
{
    uint32_t h = local_hash(addr);

    if (h == 0)
        return;
    ev->local_seen[0] |= seen_bits(h, 64);
    ev->local_seen[1] |= seen_bits(h >> 16 | h << 16, 64);
}

/*
 * A colleague's address, not a forgery: an address at the login's own
 * domain (office@acme.example sending as anna@acme.example), or at a
 * domain of two or more of its own senders' messages (sender_signal), or
 * with the local part of one of its own or colleagues' addresses.
 * Neither evidence nor credit.
 */
static bool
colleague(const struct cp_evidence *ev, const struct cp_ev_input *in)
{
    struct str d = str_domain(in->sender), l = str_domain(in->login);
    uint32_t h;

    if (d.len == 0)
        return false;
    if (in->sasl && str_eq_ci(l, d))
        return true;
    h = hash_ci(d);
    for (int i = 0; i < CP_EV_DOMS; i++)
        if (ev->odom[i] == h && used_twice(ev->odom_n[i], ev->odom_h[i]))
            return true;
    /* a person of this login at another of the company's domains
     * (anna@acme.example, anna@acme-shop.example) */
    return local_seen(ev, in->sender);
}

/*
 * The small remembered sets (senders, HELOs, TLS stacks): k hashes with a
 * use count each, and the hosts that used it. remember() counts one use
 * of x on host `bit`, replacing the least used entry when x is new;
 * callers learn only while the account looks clean.
 */
static void
remember(uint32_t *hash, uint8_t *count, uint8_t *hosts, int k, uint32_t x,
         uint8_t bit)
{
    int low = 0;

    for (int i = 0; i < k; i++) {
        if (hash[i] == x) {
            if (count[i] < 255)
                count[i]++;
            hosts[i] |= bit;
            return;
        }
        if (count[i] < count[low])
            low = i;
    }
    hash[low] = x;
    count[low] = 1;
    hosts[low] = bit;
}

static uint8_t
host_bit(const struct cp_ev_input *in)
{
    return in->host_bit != 0 ? in->host_bit : 1;
}

/* A small filter of every value learned (2 bits of `bits` per value): a
 * shared login's many devices are all remembered, where the counted set
 * above keeps only the most used few. */
static uint64_t
seen_bits(uint32_t x, unsigned bits)
{
    uint32_t h = x * 0x9e3779b1u;

    return 1ULL << (h % bits) | 1ULL << ((h >> 16) % bits);
}

static bool
seen(uint64_t filter, uint32_t x, unsigned bits)
{
    uint64_t b = seen_bits(x, bits);

    return (filter & b) == b;
}

/* Is x in the set, used at least twice? Does the account have a habit
 * to compare with: an entry used three times or more, and at least as
 * often as all the others together (one person's device; a shared
 * login's many devices are no habit a new one departs from)? */
static bool
remembered(const uint32_t *hash, const uint8_t *count, const uint8_t *hosts,
           int k, uint32_t x, bool *regular)
{
    bool known = false;
    unsigned top = 0, all = 0;

    for (int i = 0; i < k; i++) {
        known |= hash[i] == x && used_twice(count[i], hosts[i]);
        /* the address literal stands for all phones: no device's habit */
        if (hash[i] != 1 && count[i] > top)
            top = count[i];
        all += count[i];
    }
    *regular = top >= 3 && 2 * top >= all;
    return known;
}

/*
 * Is an unowned sender evidence? For a login that is an address, or once
 * the account has a sender it uses regularly, yes. Otherwise (a new
 * account keyed by address) only when it keeps changing sender: every
 * remembered sender seen just once.
 */
static bool
sender_expected(const struct cp_evidence *ev, const struct cp_ev_input *in)
{
    int once = 0;

    if (in->sasl && memchr(in->login.p, '@', in->login.len) != NULL)
        return true;
    for (int i = 0; i < CP_EV_OWNED; i++) {
        if (used_twice(ev->owned_n[i], ev->owned_h[i]))
            return true;
        once += ev->owned_n[i] == 1;
    }
    return once == CP_EV_OWNED;
}

/* Did signal s fire in the `secs` seconds before now_s? */
static bool
fired_within(const struct cp_evidence *ev, enum cp_signal s, uint32_t now_s,
             uint32_t secs)
{
    return ev->last_s[s] != 0 && now_s - ev->last_s[s] < secs;
}

/*
 * A per-message fact about the account (its own sender, a busy hour).
 * While a template run is on (uniform_size fired in the last two hours),
 * the hour's messages are one campaign, and such a fact counts once an
 * hour: otherwise a bot in the owner's mail client earns the owner's
 * credit with every message it sends.
 */
static void
fire_repeat(struct cp_evidence *ev, const struct cp_detection *det,
            enum cp_signal s, uint32_t *fired)
{
    uint32_t now_s = (uint32_t)(ev->t_ms / 1000);

    if ((fired_within(ev, CP_SIG_UNIFORM_SIZE, now_s, 7200) ||
         fired_within(ev, CP_SIG_CAMPAIGN, now_s, 7200)) &&
        fired_within(ev, s, now_s, 3600))
        return;
    fire(ev, det, s, 1, fired);
}

/* The network a client is in, as a person's habits go: its /16 (IPv6
 * /32) — an office, a home line and a phone's carrier are one each, a
 * botnet's or a spammer's proxies are many. */
uint32_t
cp_evidence_net(const struct inet_addr *a)
{
    struct inet_addr n = *a;

    inet_mask(&n, a->family == 4 ? 16 : 32);
    return (uint32_t)hmap_hash(&n, sizeof(n)) | 1;
}

/* Is network h one the login uses: on two days or more, or for five
 * messages or more, learned while it looked clean? */
static bool
familiar(const struct cp_evidence *ev, uint32_t h)
{
    for (int i = 0; i < CP_EV_NETS; i++)
        if (ev->nets[i] == h &&
            (ev->nets_days[i] >= 2 || ev->nets_n[i] >= 5 ||
             /* a fleet's hosts each learn from their share, and a merge
              * keeps the larger count: as many again on each host that
              * saw it (the balancer spreads evenly) */
             ev->nets_n[i] * __builtin_popcount(ev->nets_h[i]) >= 5))
            return true;
    return false;
}

/*
 * Is the login spread right now: `networks` fired in the last hour and
 * this message comes from a network it does not use? Its own address is
 * then no credit: stolen credentials are used with the owner's address.
 */
static bool
spread(const struct cp_evidence *ev, const struct cp_ev_input *in)
{
    return in->sasl && in->client != NULL &&
           fired_within(ev, CP_SIG_NETWORKS, (uint32_t)(in->now_ms / 1000),
                        3600) &&
           !familiar(ev, cp_evidence_net(in->client));
}

/* Whose the sender is: the account's own, a colleague's (a person who
 * uses this login: neither evidence nor credit), or nobody's it knows. */
enum sender { SENDER_NONE, SENDER_OWN, SENDER_COLLEAGUE, SENDER_OTHER };

/* *who gets the sender's hash if it is the account's own or a
 * colleague's, else 0. Another's sender to an address the account
 * delivers or forwards to (the first recipient) may be a forward: *forward
 * is set, and forged_sender waits for a second recipient. */
static enum sender
sender_signal(struct cp_evidence *ev, const struct cp_detection *det,
              const struct cp_ev_input *in, uint32_t *who, bool *forward,
              uint32_t *fired)
{
    enum sender k;
    uint32_t h;

    *who = 0;
    *forward = false;
    if (in->sender.p == NULL || in->sender.len == 0)
        return SENDER_NONE; /* null sender (bounces): no evidence either way */
    h = hash_ci(in->sender);
    k = owned(ev, in, h)        ? SENDER_OWN
        : colleague(ev, in)     ? SENDER_COLLEAGUE
                                : SENDER_OTHER;
    if (k == SENDER_OWN && !spread(ev, in))
        fire_repeat(ev, det, CP_SIG_OWNED_SENDER, fired);
    else if (k == SENDER_OTHER && sender_expected(ev, in)) {
        if (in->rcpt_seen == CP_RCPT_DELIVERED || in->rcpt_forwarded)
            *forward = true;
        else
            fire(ev, det, CP_SIG_FORGED_SENDER, 1, fired);
    }
    /* learn while the account looks clean (before this message counts);
     * a customer's logins learn into its shared set too */
    if (ev->score < det->watch_at) {
        remember(ev->owned, ev->owned_n, ev->owned_h, CP_EV_OWNED, h,
                 host_bit(in));
        if (in->shared != NULL)
            remember(in->shared->owned, in->shared->owned_n,
                     in->shared->owned_h, CP_EV_OWNED, h, host_bit(in));
    }
    /* the domains of its own senders: their other addresses there are
     * colleagues' (learned from owned senders only: a bot forging one
     * domain again and again must not teach it) */
    if (k == SENDER_OWN && ev->score < det->watch_at &&
        str_domain(in->sender).len > 0)
        remember(ev->odom, ev->odom_n, ev->odom_h, CP_EV_DOMS,
                 hash_ci(str_domain(in->sender)), host_bit(in));
    if (k == SENDER_OWN || k == SENDER_COLLEAGUE) {
        *who = h | 1;
        if (ev->score < det->watch_at)
            learn_local(ev, in->sender);
    }
    return k;
}

static void
rate_signal(struct cp_evidence *ev, const struct cp_detection *det,
            int64_t now, bool counts, uint32_t *fired)
{
    uint32_t hour = (uint32_t)(now / HOUR_MS);
    double usual;

    if (hour != ev->hour) {
        if (ev->hour_count > 0 && ev->score <= det->watch_at / 2) {
            ev->hourly_mean = ev->hourly_mean == 0
                                  ? ev->hour_count
                                  : 0.9f * ev->hourly_mean +
                                        0.1f * ev->hour_count;
            if (ev->active_hours < 255)
                ev->active_hours++;
        }
        ev->hour = hour;
        ev->hour_count = 0;
    }
    if (ev->hour_count < UINT16_MAX)
        ev->hour_count++;
    usual = ev->hourly_mean > 2 ? ev->hourly_mean : 2;
    if (ev->active_hours < CP_EV_RATE_HOURS && usual < CP_EV_RATE_NEW)
        usual = CP_EV_RATE_NEW; /* no baseline yet: a jump from what? */
    /* a busy hour of a colleague's is as neutral as the sender: a busy
     * hour counts against its own sender's credit (both repeat with every
     * message), and a colleague earns none */
    if (counts && ev->hour_count > det->rate_factor * usual + 5)
        fire_repeat(ev, det, CP_SIG_RATE_JUMP, fired);
}

/* Count one message from network h (least used replaced when new). */
static void
learn_net(struct cp_evidence *ev, uint32_t h, uint32_t now_s, uint8_t bit)
{
    uint16_t day = (uint16_t)(now_s / 86400);
    int i, low = 0;

    for (i = 0; i < CP_EV_NETS && ev->nets[i] != h; i++)
        if (ev->nets_n[i] + 8 * ev->nets_days[i] <
            ev->nets_n[low] + 8 * ev->nets_days[low])
            low = i;
    if (i == CP_EV_NETS) {
        i = low;
        ev->nets[i] = h;
        ev->nets_n[i] = ev->nets_days[i] = 0;
        ev->nets_h[i] = 0;
        ev->nets_day[i] = (uint16_t)(day - 1);
    }
    if (ev->nets_n[i] < 255)
        ev->nets_n[i]++;
    ev->nets_h[i] |= bit;
    if (ev->nets_day[i] != day && ev->nets_days[i] < 255)
        ev->nets_days[i]++;
    ev->nets_day[i] = day;
}

/*
 * `networks`: a login used from networks it does not use, spread widely —
 * the `networks`-th distinct unfamiliar network within an hour, and each
 * further one, adds the weight once. A login's own handful (the office,
 * home lines, a phone's carrier) is learned; stolen credentials are used
 * from one unrelated network after another.
 */
/* The people behind the unfamiliar networks of the last hour: distinct
 * own (or colleague) senders among them. A person is at one or two
 * places at a time (a desk, a phone): a shared login's people are
 * expected at as many more. */
static uint32_t
people(const struct cp_evidence *ev, uint32_t now_s)
{
    uint32_t n = 0;

    for (int i = 0; i < CP_EV_FRESH; i++) {
        bool first = ev->fresh_who[i] != 0 && now_s - ev->fresh_s[i] < 3600;

        for (int j = 0; first && j < i; j++)
            first = ev->fresh_who[j] != ev->fresh_who[i] ||
                    now_s - ev->fresh_s[j] >= 3600;
        n += first;
    }
    return n;
}

static void
network_signal(struct cp_evidence *ev, const struct cp_detection *det,
               const struct cp_ev_input *in, uint32_t who, uint32_t *fired)
{
    uint32_t h = cp_evidence_net(in->client), now_s = (uint32_t)(in->now_ms / 1000);
    int slot = -1, oldest = 0;
    uint32_t recent = 0;

    if (!familiar(ev, h)) {
        bool again;

        for (int i = 0; i < CP_EV_FRESH; i++) {
            if (ev->fresh[i] == h)
                slot = i;
            /* an empty slot first, else the least recently used */
            if (ev->fresh[oldest] != 0 &&
                (ev->fresh[i] == 0 || ev->fresh_s[i] < ev->fresh_s[oldest]))
                oldest = i;
        }
        again = slot >= 0 && now_s - ev->fresh_s[slot] < 3600;
        slot = slot >= 0 ? slot : oldest;
        ev->fresh[slot] = h;
        ev->fresh_s[slot] = now_s;
        if (!again)
            ev->fresh_who[slot] = who;
        for (int i = 0; i < CP_EV_FRESH && !again; i++)
            recent += ev->fresh[i] != 0 && now_s - ev->fresh_s[i] < 3600;
        /* beyond `networks`, one more for every further person */
        if (!again && recent + 1 >= det->networks + people(ev, now_s))
            fire(ev, det, CP_SIG_NETWORKS, 1, fired);
    }
    if (ev->score < det->watch_at / 2)
        learn_net(ev, h, now_s, host_bit(in));
}

static void
hour_signal(struct cp_evidence *ev, const struct cp_detection *det,
            int64_t now, bool relayed, uint32_t *fired)
{
    uint32_t bit = 1u << (uint32_t)((now / HOUR_MS) % 24);

    /* one fact per clock hour, however many messages it has */
    if (!relayed && ev->msgs_learned >= 30 && !(ev->hours_used & bit) &&
        (ev->last_s[CP_SIG_ODD_HOUR] == 0 ||
         ev->last_s[CP_SIG_ODD_HOUR] / 3600 != (uint32_t)(now / HOUR_MS)))
        fire(ev, det, CP_SIG_ODD_HOUR, 1, fired);
    if (ev->score < det->watch_at / 2) {
        ev->hours_used |= bit;
        if (ev->msgs_learned < UINT16_MAX)
            ev->msgs_learned++;
    }
}

static uint32_t
helo_hash(struct str h)
{
    if (h.len > 0 && (h.p[0] == '[' || inet_parse(h.p, h.len, &(struct inet_addr){0})))
        return 1; /* every address literal is one "name" */
    return hash_ci(h) | 2;
}

static bool
helo_is_str_domain(struct str helo, struct str rcpt)
{
    const char *at = rcpt.p ? memchr(rcpt.p, '@', rcpt.len) : NULL;

    if (at == NULL || helo.len == 0)
        return false;
    return str_eq_ci(helo, (struct str){at + 1, rcpt.len - (size_t)(
                                                    at + 1 - rcpt.p)});
}

static void
helo_signal(struct cp_evidence *ev, const struct cp_detection *det,
            const struct cp_ev_input *in, uint32_t *fired)
{
    uint32_t h;
    bool regular;

    if (in->helo.p == NULL || in->helo.len == 0)
        return;
    if (helo_is_str_domain(in->helo, in->recipient)) {
        fire(ev, det, CP_SIG_HELO_FORGED, 1, fired);
        return;
    }
    h = helo_hash(in->helo);
    if (!remembered(ev->helo, ev->helo_n, ev->helo_h, CP_EV_HELOS, h,
                    &regular) &&
        regular && !seen(ev->helo_seen, h, 64))
        fire(ev, det, CP_SIG_HELO_NEW, 1, fired);
    if (ev->score < det->watch_at / 2) {
        remember(ev->helo, ev->helo_n, ev->helo_h, CP_EV_HELOS, h,
                 host_bit(in));
        ev->helo_seen |= seen_bits(h, 64);
    }
}

/* A client's TLS stack as Postfix saw it: protocol and cipher (the
 * client's preference decides the cipher unless tls_preempt_cipherlist);
 * plaintext is a stack of its own. */
static uint32_t
tls_hash(const struct cp_ev_input *in)
{
    uint32_t h;

    if (in->tls_protocol.p == NULL || in->tls_protocol.len == 0)
        return 1;
    h = hash_ci(in->tls_protocol);
    if (in->tls_cipher.p != NULL)
        h = h * 0x9e3779b1u ^ hash_ci(in->tls_cipher);
    return h | 2;
}

static void
tls_signal(struct cp_evidence *ev, const struct cp_detection *det,
           const struct cp_ev_input *in, uint32_t *fired)
{
    uint32_t h = tls_hash(in);
    bool regular;

    /* a new HELO and a new stack are often one new program: together
     * they count 1.5 times one, not twice */
    if (!remembered(ev->tls, ev->tls_n, ev->tls_h, CP_EV_TLS, h, &regular) &&
        regular &&
        !seen(ev->tls_seen, h, 32)) {
        fire(ev, det, CP_SIG_TLS_NEW,
             *fired & (1u << CP_SIG_HELO_NEW) ? 0.5 : 1, fired);
        /* one new stack is one fact (a new device, or a bot's engine),
         * not one with every message: there are only a handful of stacks,
         * and a shared login's people have most of them */
        ev->tls_seen |= (uint32_t)seen_bits(h, 32);
    }
    if (ev->score < det->watch_at / 2) {
        remember(ev->tls, ev->tls_n, ev->tls_h, CP_EV_TLS, h, host_bit(in));
        ev->tls_seen |= (uint32_t)seen_bits(h, 32);
    }
}

/* ---- recipient-level signal ---- */

/*
 * How much a new recipient says, 0..1: ln(P(new | bot) / P(new | owner))
 * against the usual owner's (10 % new). The owner's share is learned, with
 * a prior of one in five: an account still meeting its address book (a
 * shared login's many people, the day of deployment) has a high share of
 * new recipients, and for it a new one is little news.
 */
static double
novelty_scale(const struct cp_evidence *ev)
{
    double p = (ev->rcpt_new + 1.0) / (ev->rcpt_n + 5.0);
    double s = log(0.95 / p) / log(0.95 / 0.10);

    return s < 0 ? 0 : s > 1 ? 1 : s;
}

/* Mail the account's state refuses (`refused`) is tried again, to the
 * same recipients: that they are "known" then is no credit. */
static void
recipient_signal(struct cp_evidence *ev, const struct cp_detection *det,
                 const struct cp_ev_input *in, uint32_t *fired)
{
    struct str rcpt = in->recipient;
    uint64_t h = hmap_hash(rcpt.p, rcpt.len);
    unsigned b1 = (unsigned)(h & 255), b2 = (unsigned)((h >> 8) & 255);
    /* the table of recipients delivered to, where the mail log feeds it:
     * it does not fill up as the 256 bits do (a zombie's own spam made
     * its later recipients look known) */
    bool known = in->rcpt_seen != CP_RCPT_UNTRACKED
                     ? in->rcpt_seen == CP_RCPT_DELIVERED
                     : (ev->bloom[b1 / 64] >> (b1 % 64) & 1) &&
                           (ev->bloom[b2 / 64] >> (b2 % 64) & 1);
    bool refused = in->refused;
    enum cp_signal s = known ? CP_SIG_KNOWN_RECIPIENT : CP_SIG_NEW_RECIPIENT;
    double w = det->weight[s] * (known ? 1 : novelty_scale(ev));

    /* learn the owner's share: from its own (or colleagues') mail while
     * it looks clean; a bot's forged mail must not teach it that every
     * recipient is new */
    if (ev->score < det->watch_at / 2 && (ev->msg_flags & CP_EV_MSG_OWN)) {
        ev->rcpt_n = (float)(ev->rcpt_n * (1 - CP_EV_RCPT_RATE) + 1);
        ev->rcpt_new = (float)(ev->rcpt_new * (1 - CP_EV_RCPT_RATE) + !known);
    }

    ev->bloom[b1 / 64] |= 1ULL << (b1 % 64);
    ev->bloom[b2 / 64] |= 1ULL << (b2 % 64);
    ev->run_rcpts |= 1u << ((h >> 16) & 31);
    if (fabs(ev->msg_rcpt + w) > 1.0 || (known && refused) || w == 0)
        return; /* this message's recipients have had their say */
    ev->msg_rcpt = (float)(ev->msg_rcpt + w);
    fire(ev, det, s, w / det->weight[s], fired);
}

double
cp_evidence_rcpt(struct cp_evidence *ev, const struct cp_detection *det,
                 const struct cp_ev_input *in, uint32_t *fired)
{
    *fired = 0;
    decay(ev, det, in->now_ms);
    if (in->new_message) {
        uint32_t who;
        bool forward;
        enum sender k = sender_signal(ev, det, in, &who, &forward, fired);

        ev->msg_rcpt = 0;
        ev->msg_flags = (k == SENDER_OWN || k == SENDER_COLLEAGUE
                             ? CP_EV_MSG_OWN
                             : 0) |
                        (in->rcpt_seen == CP_RCPT_DELIVERED ||
                                 in->rcpt_forwarded
                             ? CP_EV_MSG_KNOWN_ONE
                             : 0) |
                        (forward ? CP_EV_MSG_FORGED : 0);
        rate_signal(ev, det, in->now_ms, k != SENDER_COLLEAGUE, fired);
        helo_signal(ev, det, in, fired);
        /* a bounce or a reply goes when the mail it answers came, a
         * forward when the mail it forwards came: their hour is no habit
         * of a person's (it is learned, never odd) */
        hour_signal(ev, det, in->now_ms,
                    k == SENDER_NONE || (forward && k == SENDER_OTHER),
                    fired);
        tls_signal(ev, det, in, fired);
        /* where the login's people are: a forged sender's message is
         * evidence of its own (forged_sender), its network is not counted
         * again */
        if (in->sasl && in->client != NULL && k != SENDER_OTHER)
            network_signal(ev, det, in, who, fired);
    } else {
        /* a second recipient: no forward, the sender was forged */
        if (ev->msg_flags & CP_EV_MSG_FORGED)
            fire(ev, det, CP_SIG_FORGED_SENDER, 1, fired);
        ev->msg_flags &= (uint8_t)~(CP_EV_MSG_KNOWN_ONE | CP_EV_MSG_FORGED);
    }
    if (in->recipient.p != NULL && in->recipient.len > 0)
        recipient_signal(ev, det, in, fired);
    if (ev->score < det->floor)
        ev->score = (float)det->floor;
    return ev->score;
}

/* Does `size` keep the run within 2 % (+64 bytes) of its extremes? */
static bool
size_fits(const struct cp_evidence *ev, uint32_t size)
{
    uint32_t lo = size < ev->size_lo ? size : ev->size_lo;
    uint32_t hi = size > ev->size_hi ? size : ev->size_hi;

    return (double)hi <= (double)lo * 1.02 + 64;
}

double
cp_evidence_eom(struct cp_evidence *ev, const struct cp_detection *det,
                uint64_t size, int64_t now_ms, uint32_t *fired)
{
    uint32_t s = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
    uint32_t now_s = (uint32_t)(now_ms / 1000), gap;
    bool fits;

    *fired = 0;
    decay(ev, det, now_ms);
    if (size == 0)
        return ev->score; /* not reported: no evidence */
    fits = ev->size_n > 0 && size_fits(ev, s);
    gap = now_s - ev->run_last_s;
    if (fits) {
        ev->run_last_s = now_s;
        ev->size_lo = s < ev->size_lo ? s : ev->size_lo;
        ev->size_hi = s > ev->size_hi ? s : ev->size_hi;
        if (ev->size_n < 255)
            ev->size_n++;
    } else if (ev->size_n >= 4 && ev->size_miss < ev->size_n / 4) {
        ev->size_miss++; /* another message in between: the run goes on */
    } else {
        ev->size_lo = ev->size_hi = s;
        ev->size_n = 1;
        ev->size_miss = 0;
        ev->run_start_s = ev->run_last_s = now_s;
        ev->run_rcpts = 0;
    }
    /* a message of the template, three hours or more after the first and
     * soon after the one before it */
    if (fits && gap <= CP_EV_RUN_GAP_S && ev->size_n >= CP_EV_RUN_MSGS &&
        now_s - ev->run_start_s >= CP_EV_RUN_SPAN_S &&
        __builtin_popcount(ev->run_rcpts) >= CP_EV_RUN_RCPT_BITS &&
        !fired_within(ev, CP_SIG_UNIFORM_SIZE, now_s, 3600))
        fire(ev, det, CP_SIG_UNIFORM_SIZE, 1, fired);
    if (ev->score < det->floor)
        ev->score = (float)det->floor;
    return ev->score;
}

double
cp_evidence_content(struct cp_evidence *ev, const struct cp_detection *det,
                    bool campaign, int64_t now_ms, uint32_t *fired)
{
    *fired = 0;
    decay(ev, det, now_ms);
    if (!campaign)
        return ev->score;
    /* the owner's habits (its own sender, known recipients) are no
     * credit against a botnet's text sent from the account */
    if (ev->score < 0)
        ev->score = 0;
    fire(ev, det, CP_SIG_CAMPAIGN, 1, fired);
    return ev->score;
}

/* A message's delivery evidence counts within [-0.25, +2] in all:
 * accepted mail is little credit (spam to a clean list is accepted too),
 * bounces are evidence unless its deliveries outweigh them. */
static double
clamp_delivery(double x)
{
    return x > 2.0 ? 2.0 : x < -0.25 ? -0.25 : x;
}

double
cp_evidence_outcome(struct cp_evidence *ev, const struct cp_detection *det,
                    enum cp_signal s, double scale, float *msg, int64_t now_ms,
                    uint32_t *fired)
{
    double before = clamp_delivery(*msg), after;

    *fired = 0;
    decay(ev, det, now_ms);
    *msg = (float)(*msg + det->weight[s] * scale);
    after = clamp_delivery(*msg);
    if (after != before && det->weight[s] != 0)
        fire(ev, det, s, (after - before) / det->weight[s], fired);
    if (ev->score < det->floor)
        ev->score = (float)det->floor;
    return ev->score;
}

double
cp_evidence_listed(struct cp_evidence *ev, const struct cp_detection *det,
                   int64_t now_ms, uint32_t *fired)
{
    uint32_t now_s = (uint32_t)(now_ms / 1000);

    *fired = 0;
    decay(ev, det, now_ms);
    if (ev->listed_s == 0 || now_s - ev->listed_s >= 3600) {
        ev->listed_s = now_s;
        fire(ev, det, CP_SIG_DNSBL, 1, fired);
    }
    return ev->score;
}

static const unsigned char ev_magic[4] = {'C', 'P', 'E', 'V'};

void
cp_evidence_pack(const struct cp_evidence *ev, unsigned char *out)
{
    uint16_t fmt = CP_EV_FORMAT, size = (uint16_t)sizeof(*ev);

    memcpy(out, ev_magic, 4);
    memcpy(out + 4, &fmt, 2);
    memcpy(out + 6, &size, 2);
    memcpy(out + 8, ev, sizeof(*ev));
}

static bool
sane(float x)
{
    return isfinite(x) && fabsf(x) <= 1e7f;
}

/* struct cp_evidence of format 3: up to the hosts of format 4 (its last
 * member, run_last_s, ended on a multiple of 8: no tail padding) */
#define CP_EV_V3_SIZE 528
_Static_assert(offsetof(struct cp_evidence, owned_h) == CP_EV_V3_SIZE,
               "format 3 is a prefix of format 4");

bool
cp_evidence_unpack(struct cp_evidence *ev, const void *in, size_t len)
{
    const unsigned char *p = in;
    uint16_t fmt, size;

    if (len < 8 || memcmp(p, ev_magic, 4) != 0)
        return false;
    memcpy(&fmt, p + 4, 2);
    memcpy(&size, p + 6, 2);
    if (fmt == 3 && size == CP_EV_V3_SIZE && len == 8 + CP_EV_V3_SIZE) {
        /* format 3: the same, without the hosts of the entries (a
         * single host's: its own) */
        memset(ev, 0, sizeof(*ev));
        memcpy(ev, p + 8, CP_EV_V3_SIZE);
        for (int i = 0; i < CP_EV_OWNED; i++)
            ev->owned_h[i] = ev->owned_n[i] ? 1 : 0;
        for (int i = 0; i < CP_EV_DOMS; i++)
            ev->odom_h[i] = ev->odom_n[i] ? 1 : 0;
        for (int i = 0; i < CP_EV_HELOS; i++)
            ev->helo_h[i] = ev->helo_n[i] ? 1 : 0;
        for (int i = 0; i < CP_EV_TLS; i++)
            ev->tls_h[i] = ev->tls_n[i] ? 1 : 0;
        for (int i = 0; i < CP_EV_NETS; i++)
            ev->nets_h[i] = ev->nets_n[i] ? 1 : 0;
    } else if (fmt == CP_EV_FORMAT && size == sizeof(*ev) &&
               len == CP_EV_PACKED) {
        memcpy(ev, p + 8, sizeof(*ev));
    } else {
        return false;
    }
    /* no value the evidence code produces is beyond these */
    if (!sane(ev->score) || !sane(ev->hourly_mean) || !sane(ev->msg_rcpt) ||
        !sane(ev->rcpt_n) || !sane(ev->rcpt_new) || ev->rcpt_n < 0 ||
        ev->rcpt_new < 0 ||
        ev->t_ms < 0 || ev->t_ms > (int64_t)1 << 50 /* year 37648 */)
        return false;
    for (int i = 0; i < CP_SIG_COUNT; i++)
        if (!sane(ev->sig[i]))
            return false;
    return true;
}

size_t
cp_signals_ranked(const float share[CP_SIG_COUNT],
                  const uint16_t times[CP_SIG_COUNT],
                  uint8_t order[CP_SIG_COUNT])
{
    bool used[CP_SIG_COUNT] = {false};
    size_t n = 0;

    for (; n < CP_SIG_COUNT; n++) {
        int best = -1;

        for (int i = 0; i < CP_SIG_COUNT; i++)
            if (!used[i] && times[i] > 0 &&
                (best < 0 || fabsf(share[i]) > fabsf(share[best])))
                best = i;
        if (best < 0)
            break;
        used[best] = true;
        order[n] = (uint8_t)best;
    }
    return n;
}

void
cp_evidence_explain(const struct cp_evidence *ev,
                    const struct cp_detection *det, int64_t now_ms,
                    char *out, size_t n)
{
    double f = ev->t_ms && now_ms > ev->t_ms
                   ? exp2(-(double)(now_ms - ev->t_ms) /
                          (double)det->half_life_ms)
                   : 1.0;
    uint8_t order[CP_SIG_COUNT];
    size_t nsig = cp_signals_ranked(ev->sig, ev->fired, order);
    size_t off;
    double sum = 0;

    off = (size_t)snprintf(out, n, "score %.1f", ev->score * f);
    for (size_t k = 0; k < nsig && off < n; k++) {
        int s = order[k];

        sum += ev->sig[s] * f;
        off += (size_t)snprintf(out + off, n - off, "%s %s %+.1f (%ux)",
                                k ? "," : ":", cp_signal_name(s),
                                ev->sig[s] * f, ev->fired[s]);
    }
    /* the signals add up to less than the score when good mail pushed it
     * to the floor: what came after counted from there */
    if (nsig > 0 && off < n && ev->score * f > sum + 0.05)
        snprintf(out + off, n - off, " (not below %.1f: good mail counts at "
                 "most that)", det->floor * f);
}

void
cp_evidence_detail(const struct cp_evidence *ev,
                   const struct cp_detection *det, int64_t now_ms,
                   struct strbuf *o, bool json)
{
    double f = ev->t_ms && now_ms > ev->t_ms
                   ? exp2(-(double)(now_ms - ev->t_ms) /
                          (double)det->half_life_ms)
                   : 1.0;
    int senders = 0, helos = 0, hours = __builtin_popcount(ev->hours_used);
    bool first = true;
    char t[32];

    for (int i = 0; i < CP_EV_OWNED; i++)
        senders += used_twice(ev->owned_n[i], ev->owned_h[i]);
    for (int i = 0; i < CP_EV_HELOS; i++)
        helos += used_twice(ev->helo_n[i], ev->helo_h[i]);
    sb_puts(o, json ? ",\"signals\":[" : "  signals (weight, times, share of the "
                                         "score now, last):\n");
    for (int i = 0; i < CP_SIG_COUNT; i++) {
        if (ev->fired[i] == 0)
            continue;
        cp_format_time(t, sizeof(t), (int64_t)ev->last_s[i] * 1000);
        if (json) {
            sb_printf(o, "%s{\"signal\":\"%s\",\"weight\":", first ? "" : ",",
                      cp_signal_name((enum cp_signal)i));
            sb_json_num(o, det->weight[i]);
            sb_printf(o, ",\"times\":%u,\"share\":", ev->fired[i]);
            sb_json_num(o, ev->sig[i] * f);
            sb_printf(o, ",\"last\":\"%s\"}", t);
        } else {
            sb_printf(o, "    %-16s %+5.2f %6ux %+7.1f  %s\n",
                      cp_signal_name((enum cp_signal)i), det->weight[i],
                      ev->fired[i], ev->sig[i] * f, t);
        }
        first = false;
    }
    if (json) {
        sb_puts(o, "],\"baseline\":{\"usual_messages_per_hour\":");
        sb_json_num(o, ev->hourly_mean);
        sb_printf(o, ",\"messages_this_hour\":%u,\"senders_owned\":%d,"
                     "\"helos_known\":%d,\"hours_of_day_used\":%d,"
                     "\"messages_learned\":%u}",
                  ev->hour == (uint32_t)(now_ms / HOUR_MS) ? ev->hour_count : 0,
                  senders, helos, hours, ev->msgs_learned);
        return;
    }
    sb_printf(o, "  baseline: %.1f messages in a usual active hour (%u this "
                 "hour), %d senders owned, %d HELOs known, %d hours of the "
                 "day used, learned from %u messages\n",
              ev->hourly_mean,
              ev->hour == (uint32_t)(now_ms / HOUR_MS) ? ev->hour_count : 0,
              senders, helos, hours, ev->msgs_learned);
}
