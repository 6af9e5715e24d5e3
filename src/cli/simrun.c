/*
 * simrun.c — play the simulated stream through chokepoint: every message
 * event becomes the requests Postfix would send (one RCPT per recipient,
 * then DATA and END-OF-MESSAGE with recipient_count and size, one
 * `instance`), decided by the in-process engine on the virtual clock or by
 * a running chokepointd over the policy protocol (--live). A deferred
 * message is tried again the way its sender would (a person's mail client
 * retries; a trojan usually does not) and counts as sent only when accepted.
 *
 * The client gives up a message at the first recipient that is deferred or
 * refused (as mail clients do), so the engine sees the same aborted
 * transactions as with a real Postfix: reservations released by timeout.
 *
 * Delivery outcomes (scenario `delivery: true`, in-process only): each
 * recipient of a queued message exists or not and is accepted or refused
 * as spam at the next hop (the shares in the scenario); the engine hears
 * of it 2-60 s later by queue id, as chokepointd hears from the mail log.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/sim.h"
#include "core/evidence.h"
#include "core/lifecycle.h"
#include "util/xalloc.h"

#define FOREIGN_BASE 0xc6330000u /* 198.51.0.0/16: networks not the ISP's */
#define STOLEN_BASE 0xcb000000u  /* 203.0.0.0/8: where stolen logins are used */

static const char *const freemail[] = {
    "gmail.example", "yahoo.example", "hotmail.example", "outlook.example",
    "aol.example",   "gmx.example",   "web.example",     "mail.example",
    "yandex.example", "icloud.example"};
#define NFREEMAIL (sizeof(freemail) / sizeof(freemail[0]))

struct sim_msg {
    struct rng r;             /* content generator, seeded by the message */
    const struct sim_event *e;
    bool spam, sasl;
    bool relay_spam;          /* EV_RELAY: it passes on the day's spam */
    uint32_t sender;          /* customer charged (or infected) */
    uint32_t nrcpt;
    uint64_t size;
    char login[64], ip[16], from[96], helo[64];
    const char *tls_proto, *tls_cipher; /* "": plaintext */
    bool pooled;              /* a reply said FILTER: the reputation pool */
    char why[32];             /* in-process: what refused it (a rule's
                                 name, "state", "content") */
};

/* TLS stacks as Postfix logs them (protocol, cipher): the first five are
 * today's mail clients, the last two old libraries; a customer's PC gets
 * one of the first five, a phone away from home the second. */
static const char *const tls_stacks[][2] = {
    {"TLSv1.3", "TLS_AES_256_GCM_SHA384"},
    {"TLSv1.3", "TLS_AES_128_GCM_SHA256"},
    {"TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"},
    {"TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"},
    {"TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"},
    {"TLSv1.2", "AES256-SHA"},
    {"TLSv1", "ECDHE-RSA-AES256-SHA"},
};
#define NSTACKS (sizeof(tls_stacks) / sizeof(tls_stacks[0]))

/* The stack of computer `who` (a customer's, or a person's laptop: any
 * number) of class `cls`, -1: plaintext. Fixed per computer (a hash:
 * nothing stored). */
static int
computer_stack(const struct sim *s, uint32_t cls, uint32_t who)
{
    uint32_t h = who * 2654435761u ^ 0x5bd1e995u;

    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    if ((double)(h >> 8) / (1 << 24) >= s->sc.cls[cls].tls_share)
        return -1;
    return (int)(h % 5);
}

static int
pc_stack(const struct sim *s, uint32_t who)
{
    return computer_stack(s, s->senders[who].cls, who);
}

static uint64_t
mix64(uint64_t x)
{
    return rng_splitmix(&x);
}

static void
set_tls(struct sim_msg *m, int stack)
{
    m->tls_proto = stack < 0 ? "" : tls_stacks[stack][0];
    m->tls_cipher = stack < 0 ? "" : tls_stacks[stack][1];
}

/* ---- the content of one message ---- */

/* What a recipient is, for whether it exists (delivery outcomes). */
enum rtype { R_BOOK, R_NEW, R_LIST, R_DEAD, R_SPAM, R_FORGED, R_MAILBOX };

/*
 * A newsletter's subscriber j of sender `who`: the list is fixed, and an
 * address that is dead stays dead (the list is not cleaned). invalid_share
 * of it is dead at the start, `decay` more dies every day after (before
 * the start, in a warm start's history, fewer were).
 */
/*
 * A newsletter's subscriber j of sender `who`: 85 % at the big mailbox
 * providers, the biggest first (shares 40, 15, 10, 6, 4, 3, 3, 2, 1, 1 %),
 * 15 % at one of 5,000 small domains (companies, universities): a list
 * of a few thousand reaches a few hundred domains.
 */
static void
subscriber(char *out, size_t n, uint32_t who, uint32_t j)
{
    static const uint8_t share[NFREEMAIL] = {40, 15, 10, 6, 4, 3, 3, 2, 1, 1};
    uint64_t h = mix64((uint64_t)who << 32 ^ j ^ 0xd0ULL);
    uint32_t u = (uint32_t)(h % 100), acc = 0;

    for (size_t f = 0; f < NFREEMAIL; f++) {
        acc += share[f];
        if (u < acc) {
            snprintf(out, n, "n%u.%u@%s", who, j, freemail[f]);
            return;
        }
    }
    snprintf(out, n, "n%u.%u@s%llu.example", who, j,
             (unsigned long long)(h >> 8) % 5000);
}

static bool
subscriber_dead(const struct sim *s, uint32_t who, uint32_t j, int64_t t)
{
    const struct sim_newsletter *nl = &s->sc.cls[s->senders[who].cls].newsletter;
    double u = (double)(mix64((uint64_t)who << 32 ^ j ^ 0x5ab5ULL) >> 11) *
               0x1.0p-53;

    return u < nl->invalid_share +
                   nl->decay * (double)(t - s->sc.start_ms) / SIM_DAY;
}

static enum rtype
recipient(struct sim *s, struct sim_msg *m, uint32_t i, char *out, size_t n)
{
    const struct sim_class *k = &s->sc.cls[s->senders[m->sender].cls];

    if (m->spam) {
        uint64_t x = rng_next(&m->r);

        if (x % 4)
            snprintf(out, n, "x%llu@%s", (unsigned long long)(x >> 20) % 10000000,
                     freemail[(x >> 8) % NFREEMAIL]);
        else
            snprintf(out, n, "x%llu@d%llu.example",
                     (unsigned long long)(x >> 20) % 10000000,
                     (unsigned long long)(x >> 4) % 5000);
        return R_SPAM;
    }
    if (m->e->type == EV_RELAY && (m->e->part & 3) == RELAY_BOUNCE) {
        uint64_t x = rng_next(&m->r); /* the spam's forged sender */

        snprintf(out, n, "b%llu@spam%llu.example",
                 (unsigned long long)(x >> 20) % 10000000,
                 (unsigned long long)(x >> 4) % 10000);
        return R_FORGED;
    }
    if (m->e->type == EV_RELAY && (m->e->part & 3) == RELAY_FORWARD) {
        uint32_t who = m->e->part >> 2; /* the person's own mailbox */

        snprintf(out, n, "fw%u.%u@%s", m->sender, who,
                 freemail[(m->sender + who) % 2]);
        return R_MAILBOX;
    }
    if (m->e->type == EV_NEWSLETTER) {
        uint32_t j = m->e->part * k->newsletter.per_message + i;

        subscriber(out, n, m->sender, j);
        return subscriber_dead(s, m->sender, j, m->e->t_ms) ? R_DEAD : R_LIST;
    }
    if (rng_unit(&m->r) < k->new_recipient_share) {
        uint64_t x = rng_next(&m->r);

        snprintf(out, n, "new%llu@d%llu.example",
                 (unsigned long long)(x >> 20) % 1000000,
                 (unsigned long long)(x >> 4) % 2000);
        return R_NEW;
    }
    /* the address book: a few domains per customer, stable; a shared
     * login's people each have theirs */
    uint32_t b = (uint32_t)rng_below(&m->r, (uint64_t)k->address_book *
                                                s->senders[m->sender].people);
    uint32_t h = (m->sender * 2654435761u) ^ (b * 40503u);

    snprintf(out, n, "p%u.%u@%s", m->sender, b,
             (h % 5) < 3 ? freemail[(h >> 4) % 4] : "isp.example");
    return R_BOOK;
}

/*
 * What becomes of each recipient at the next hop: it does not exist
 * (5.1.1), it is refused as spam (5.7.1), or it is delivered. Drawn from
 * a generator of its own, so the recipients themselves do not change.
 */
struct fate {
    struct rng r;
    struct strbuf rcpt; /* per recipient: its enum cp_outcome (a byte), the
                           address, NUL */
};

static void
fate_of(struct sim *s, const struct sim_msg *m, enum rtype t,
        const char *rcpt, struct fate *f)
{
    const struct sim_class *k = &s->sc.cls[s->senders[m->sender].cls];
    double bad = 0, rej = 0, u = rng_unit(&f->r);

    switch (t) {
    case R_BOOK:
        bad = 0.002;
        break;
    case R_NEW:
        bad = k->invalid_share;
        break;
    case R_LIST:
        break;
    case R_DEAD:
        bad = 1;
        break;
    case R_SPAM:
        bad = s->sc.inf[s->zombies[m->e->who].inf].invalid_share;
        rej = s->sc.inf[s->zombies[m->e->who].inf].rejected_share;
        break;
    case R_FORGED: /* a bounce to a spammer's made-up sender */
        bad = 0.6;
        rej = 0.1;
        break;
    case R_MAILBOX: /* the forward's mailbox refuses the spam in it */
        rej = m->relay_spam ? 0.3 : 0;
        break;
    }
    char o = u < bad         ? CP_OUT_BAD_RECIPIENT
             : u < bad + rej ? CP_OUT_REJECTED
                             : CP_OUT_DELIVERED;

    sb_append(&f->rcpt, &o, 1);
    sb_append(&f->rcpt, rcpt, strlen(rcpt) + 1);
}

#define REGIONAL_BASE 0x51000000u /* 81.0.0.0: other ISPs' home lines */
#define CARRIER_BASE 0x64500000u  /* 100.80.0.0: mobile carriers' pools */

/*
 * Where a business's person sends from, as whom, with which device: the
 * office during office hours (weekdays 8-18), else (and for home_share /
 * phone_share of office-hour mail) the person's home line, one of eight
 * regional ISPs' /16s, or a phone in one of four carriers' address pools
 * (a new /24 every time). The person's laptop has one name and TLS stack
 * at the office and at home; a phone sends its address as a literal.
 * A staff login is one person, sending as its login (or, for role_share
 * of its mail, as a role address or at the customer's second domain); a
 * shared login's people send as themselves.
 */
static void
staff_origin(struct sim *s, const struct sim_event *e, struct sim_msg *m)
{
    const struct sim_sender *p = &s->senders[m->sender];
    const struct sim_staff *st = &s->sc.cls[p->cls].staff;
    uint32_t person = (p->flags & SIM_SHARED)
                          ? 1000u + (uint32_t)rng_below(&m->r, p->people)
                          : p->slot;
    uint64_t ph = mix64((uint64_t)p->cust << 20 ^ person);
    int64_t tod = (e->t_ms % SIM_DAY) / SIM_HOUR;
    int wd = (int)((e->t_ms / SIM_DAY + 3) % 7);
    bool office_hours = wd < 5 && tod >= 8 && tod < 18;
    double u = rng_unit(&m->r), away = st->home_share + st->phone_share;
    uint32_t ip, dom = 0;
    bool phone = false;
    char d[48];

    if ((p->flags & SIM_SERVER) || (office_hours && u >= away)) {
        ip = p->ip; /* the office (a server: always) */
    } else {
        double v = office_hours ? u : rng_unit(&m->r) * away;

        phone = away > 0 && v >= st->home_share;
        ip = phone ? CARRIER_BASE + (uint32_t)(ph % 4) * 65536u +
                         (uint32_t)rng_below(&m->r, 65536)
                   : REGIONAL_BASE + (uint32_t)(ph % 8) * 65536u +
                         (uint32_t)(ph >> 3) % 256u * 256u + 10 +
                         (uint32_t)(ph >> 11) % 200;
    }
    sim_format_ip(m->ip, sizeof(m->ip), ip);
    if (phone) {
        set_tls(m, 1);
        snprintf(m->helo, sizeof(m->helo), "[10.%u.%u.%u]",
                 (unsigned)rng_below(&m->r, 256),
                 (unsigned)rng_below(&m->r, 256),
                 (unsigned)rng_below(&m->r, 256));
    } else if (p->flags & SIM_SERVER) {
        set_tls(m, computer_stack(s, p->cls, p->cust));
        snprintf(m->helo, sizeof(m->helo), "mx.co%u.example", p->cust);
    } else {
        set_tls(m, computer_stack(s, p->cls, (uint32_t)ph));
        snprintf(m->helo, sizeof(m->helo), "nb-%u-%u", p->cust, person);
    }
    if (st->domains > 1 && rng_unit(&m->r) < st->role_share / 2)
        dom = 1 + (uint32_t)rng_below(&m->r, st->domains - 1);
    sim_domain(d, sizeof(d), p->cust, dom);
    if (dom == 0 && rng_unit(&m->r) < st->role_share / 2)
        snprintf(m->from, sizeof(m->from), "%s@%s",
                 (ph >> 20) % 2 ? "info" : "sales", d);
    else if (p->flags & SIM_SHARED)
        snprintf(m->from, sizeof(m->from), "q%u@%s", person - 1000u, d);
    else
        snprintf(m->from, sizeof(m->from), "p%u@%s", person, d);
}

/* A mail server's message passed on for others: from the server (its
 * address, name and TLS stack), to one recipient; a reply or a bounce
 * with the null sender, a forward with its original sender (a
 * correspondent's, or the day's spam's). */
static void
relay_msg(struct sim *s, const struct sim_event *e, struct sim_msg *m)
{
    const struct sim_server *sv = &s->sc.cls[s->senders[e->who].cls].server;
    uint32_t kind = e->part & 3;

    m->nrcpt = 1;
    staff_origin(s, e, m);
    m->size = (uint64_t)rng_lognormal(&m->r, kind == RELAY_FORWARD ? 20000
                                                                   : 4000,
                                      0.5);
    if (kind != RELAY_FORWARD) {
        m->from[0] = '\0';
        return;
    }
    m->relay_spam = rng_unit(&m->r) < sv->forward_spam;
    snprintf(m->from, sizeof(m->from), "%s%llu@sender%llu.example",
             m->relay_spam ? "offer" : "n",
             (unsigned long long)rng_below(&m->r, 1000000),
             (unsigned long long)rng_below(&m->r, 100000));
}

static void
build_msg(struct sim *s, const struct sim_event *e, struct sim_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->e = e;
    rng_seed(&m->r, ((uint64_t)s->sc.seed << 32) ^ (e->id * 0x9e3779b97f4a7c15ULL));
    m->sasl = true;
    if (e->type == EV_SPAM) {
        const struct sim_zombie *z = &s->zombies[e->who];
        const struct sim_infection *f = &s->sc.inf[z->inf];
        uint32_t ip = z->ip;

        m->spam = true;
        m->sender = z->sender;
        m->nrcpt = rng_count(&m->r, f->recipients.mean, f->recipients.max);
        m->size = (uint64_t)rng_lognormal(&m->r, 6000, f->size_spread);
        m->sasl = f->kind != SIM_UNAUTH;
        set_tls(m, f->tls == SIM_TLS_OWN     ? pc_stack(s, z->sender)
                   : f->tls == SIM_TLS_OTHER ? (int)(e->who * 7919u % NSTACKS)
                                             : -1);
        if (f->kind == SIM_STOLEN) /* one of `networks` /24s abroad */
            ip = STOLEN_BASE +
                 ((e->who * 7919u + (uint32_t)rng_below(&m->r, f->networks) *
                                        104729u) %
                  65536u) * 256u +
                 1 + (uint32_t)rng_below(&m->r, 250);
        sim_format_ip(m->ip, sizeof(m->ip), ip);
        switch (f->helo) {
        case SIM_HELO_OWN:
            snprintf(m->helo, sizeof(m->helo), "pc-%u", z->sender);
            break;
        case SIM_HELO_FIXED:
            snprintf(m->helo, sizeof(m->helo), "host%u.example", e->who);
            break;
        case SIM_HELO_RECIPIENT: /* set per message below */
            break;
        default:
            snprintf(m->helo, sizeof(m->helo), "%08llx",
                     (unsigned long long)rng_below(&m->r, 1ULL << 32));
        }
        if (rng_unit(&m->r) < f->forge_share)
            snprintf(m->from, sizeof(m->from), "x%llu@%s",
                     (unsigned long long)rng_below(&m->r, 100000000),
                     freemail[rng_below(&m->r, NFREEMAIL)]);
        else
            sim_login(s, m->from, sizeof(m->from), m->sender);
    } else {
        const struct sim_sender *p = &s->senders[e->who];
        const struct sim_class *k = &s->sc.cls[p->cls];
        uint32_t ip = p->ip;

        m->sender = e->who;
        m->sasl = k->sasl;
        if (e->type == EV_RELAY) {
            relay_msg(s, e, m);
            goto login;
        }
        if (e->type == EV_NEWSLETTER)
            m->nrcpt = k->newsletter.per_message;
        else if (e->type == EV_BURST)
            m->nrcpt = rng_count(&m->r, k->burst.recipients.mean,
                                 k->burst.recipients.max);
        else
            m->nrcpt = rng_count(&m->r, k->recipients.mean, k->recipients.max);
        if (e->type == EV_LEGIT) {
            m->size = (uint64_t)rng_lognormal(&m->r, k->size.median,
                                              k->size.sigma);
        } else {
            /* a burst (a mail merge, one greeting card) or a newsletter is
             * one template: its size drawn once per sender, each message
             * within `size_spread` of it (names and addresses differ) */
            struct rng t;

            rng_seed(&t, ((uint64_t)s->sc.seed << 32) ^
                             ((uint64_t)e->who * 0x9e3779b97f4a7c15ULL) ^
                             e->type);
            m->size = (uint64_t)rng_lognormal(
                &m->r, rng_lognormal(&t, k->size.median, k->size.sigma),
                e->type == EV_BURST ? k->burst.size_spread
                                    : k->newsletter.size_spread);
        }
        if (m->size > k->size.max)
            m->size = (uint64_t)k->size.max;
        if (p->flags & SIM_STAFF) {
            staff_origin(s, e, m);
            goto login;
        }
        /* roaming: 20 % of the mail from one of two networks of the day
         * (the office, the phone's carrier), not a new one each time */
        if ((p->flags & SIM_ROAMING) && rng_unit(&m->r) < 0.2) {
            uint32_t day = (uint32_t)((e->t_ms - s->sc.start_ms) / SIM_DAY);
            uint32_t alt = (uint32_t)rng_below(&m->r, 2);

            ip = FOREIGN_BASE + 0x8000 +
                 ((e->who * 2654435761u + day * 40503u + alt * 97u) % 30000u);
        }
        sim_format_ip(m->ip, sizeof(m->ip), ip);
        /* the customer's computer by name; away from home, the phone,
         * whose client sends its address as a literal */
        set_tls(m, ip != p->ip ? 1 : pc_stack(s, e->who));
        if (ip != p->ip)
            snprintf(m->helo, sizeof(m->helo), "[10.%u.%u.%u]",
                     (unsigned)rng_below(&m->r, 256),
                     (unsigned)rng_below(&m->r, 256),
                     (unsigned)rng_below(&m->r, 256));
        else
            snprintf(m->helo, sizeof(m->helo), "pc-%u", e->who);
        sim_login(s, m->from, sizeof(m->from), m->sender);
        if ((p->flags & SIM_ALIAS) && rng_unit(&m->r) < 0.3) {
            char login[64];

            sim_login(s, login, sizeof(login), m->sender);
            snprintf(m->from, sizeof(m->from), "family.%s", login);
        }
    }
login:
    sim_login(s, m->login, sizeof(m->login), m->sender);
    if (!m->sasl)
        m->login[0] = '\0';
}

/* ---- asking chokepoint ---- */

/* One policy request: as text for --live, typed for the engine. */
struct ask {
    const char *stage, *rcpt, *count;
    char inst[32], size[24], qid[32];
    enum cp_stage st;
    uint64_t nsize, ncount;
};

/* --trace: one decision about the traced login's mail. */
static void
trace(const struct sim_msg *m, const struct ask *a,
      const struct cp_decision *dec, int64_t now)
{
    char t[32];

    cp_format_time(t, sizeof(t), now);
    fprintf(stderr, "%s %s %-14s %s from=%s ip=%s helo=%s rcpt=%s -> %s %s "
                    "score %.1f:",
            t, m->spam ? "SPAM" : "ham ", a->stage, m->login, m->from, m->ip,
            m->helo, a->rcpt, cp_action_word(dec->action),
            cp_state_name((enum cp_state)dec->state), dec->score);
    for (int i = 0; i < CP_SIG_COUNT; i++)
        if (dec->fired & (1u << i))
            fprintf(stderr, " %s", cp_signal_name((enum cp_signal)i));
    fputc('\n', stderr);
}

/* What refused the message, for the report's breakdown. */
static void
note_why(struct sim_msg *m, const struct cp_decision *dec)
{
    if (dec->action != CP_ACT_DEFER && dec->action != CP_ACT_REJECT &&
        dec->action != CP_ACT_HOLD)
        return;
    snprintf(m->why, sizeof(m->why), "%s",
             dec->has_rule                     ? dec->rule.name
             : dec->stage == CP_STAGE_CONTENT && !dec->by_state ? "content"
             : dec->cust_state == cp_decision_state(dec) &&
                     dec->cust_state != CP_ST_NORMAL
                 ? "customer state"
                 : "login state");
}

static enum cp_action
ask_inproc(struct sim_driver *d, struct sim_msg *m, const struct ask *a,
           int64_t now)
{
    struct cp_event r;
    struct cp_decision dec;

    memset(&r, 0, sizeof(r));
    r.stage = a->st;
    r.client_address = str_c(m->ip);
    r.sender = str_c(m->from);
    r.recipient = str_c(a->rcpt);
    r.recipient_count = a->ncount;
    r.size = a->nsize;
    r.instance = str_c(a->inst);
    r.sasl_username = str_c(m->login);
    r.queue_id = str_c(a->qid);
    r.helo_name = str_c(m->helo);
    r.tls_protocol = str_c(m->tls_proto);
    r.tls_cipher = str_c(m->tls_cipher);
    d->truth.cause = m->e->type == EV_BURST        ? "burst message"
                     : m->e->type == EV_NEWSLETTER ? "newsletter message"
                     : m->e->type == EV_RELAY      ? "relayed message"
                     : m->spam                     ? "spam"
                                                   : "ordinary message";
    inproc_decide(&d->ip, &r, now, &dec);
    d->truth.cause = "delivery outcome";
    note_why(m, &dec);
    if (d->trace != NULL && strcmp(d->trace, m->login) == 0)
        trace(m, a, &dec, now);
    return dec.action;
}

static enum cp_action
action_of(const char *reply, size_t len)
{
    static const struct {
        const char *w;
        enum cp_action a;
    } words[] = {{"action=DEFER_IF_PERMIT", CP_ACT_DEFER},
                 {"action=REJECT", CP_ACT_REJECT},
                 {"action=HOLD", CP_ACT_HOLD},
                 {"action=WARN", CP_ACT_WARN},
                 {"action=PREPEND", CP_ACT_PREPEND},
                 {"action=FILTER", CP_ACT_FILTER}};

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (len >= strlen(words[i].w) &&
            memcmp(reply, words[i].w, strlen(words[i].w)) == 0)
            return words[i].a;
    return CP_ACT_DUNNO;
}

static enum cp_action
ask_live(struct sim_driver *d, const struct sim_msg *m, const struct ask *a,
         int64_t now)
{
    char req[2048], rep[1024];
    int n = snprintf(req, sizeof(req),
                     "request=smtpd_access_policy\nprotocol_state=%s\n"
                     "protocol_name=ESMTP\nclient_address=%s\nsender=%s\n"
                     "recipient=%s\nrecipient_count=%s\nsize=%s\n"
                     "instance=%s\nsasl_method=%s\nsasl_username=%s\n"
                     "helo_name=%s\nencryption_protocol=%s\n"
                     "encryption_cipher=%s\nchokepoint_sim_time=%lld\n\n",
                     a->stage, m->ip, m->from, a->rcpt, a->count, a->size,
                     a->inst, m->sasl ? "plain" : "", m->login, m->helo,
                     m->tls_proto, m->tls_cipher, (long long)now);
    size_t got = 0;

    if (write(d->fd, req, (size_t)n) != n)
        sim_die("live: write: %s", strerror(errno));
    while (got < 4 || memcmp(rep + got - 2, "\n\n", 2) != 0) {
        ssize_t r = read(d->fd, rep + got, sizeof(rep) - got);

        if (r <= 0 || got + (size_t)r >= sizeof(rep))
            sim_die("live: the daemon closed the connection or sent junk");
        got += (size_t)r;
    }
    return action_of(rep, got);
}

static enum cp_action
ask(struct sim *s, struct sim_driver *d, struct sim_msg *m,
    const struct ask *a, int64_t now)
{
    enum cp_action act;

    if (d->log != NULL)
        return CP_ACT_DUNNO; /* --maillog: no chokepoint */
    if (!d->ip.engine.learning)
        s->tot.requests++;
    act = d->live ? ask_live(d, m, a, now) : ask_inproc(d, m, a, now);
    if (act == CP_ACT_FILTER) /* Postfix: for the whole message */
        m->pooled = true;
    return act;
}

static enum sim_outcome
outcome_of(enum cp_action act)
{
    return act == CP_ACT_DEFER    ? SIM_DEFERRED
           : act == CP_ACT_REJECT ? SIM_REFUSED
           : act == CP_ACT_HOLD   ? SIM_REFUSED
                                  : SIM_DELIVERED;
}

/* ---- the milter: the message's text, as its fingerprint ---- */

static uint32_t
mix32(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return (uint32_t)((x ^ (x >> 31)) >> 16) | 1;
}

/*
 * Copies of one text share each band of the fingerprint with probability
 * similarity^4 (MinHash banding, core/fingerprint.h); their other bands
 * are the message's own. Ordinary mail is a text of its own; a burst or a
 * newsletter is its sender's template (names differ: 0.9 alike) or, for
 * the `shared` bursts, one text common to the class; a zombie sends its
 * infection's current campaign.
 */
static enum cp_action
content(struct sim *s, struct sim_driver *d, struct sim_msg *m,
        const struct ask *a, int64_t now)
{
    const struct sim_event *e = m->e;
    uint64_t text = 0;
    double p = 0;
    struct cp_event r;
    struct cp_decision dec;
    struct cp_fp fp;
    struct rng g;

    rng_seed(&g, ((uint64_t)s->sc.seed << 32) ^ 0xc3a5c85c97cb3127ULL ^
                     ((uint64_t)e->id * 0x9e3779b97f4a7c15ULL));
    if (m->spam) {
        const struct sim_zombie *z = &s->zombies[e->who];
        const struct sim_infection *f = &s->sc.inf[z->inf];
        uint64_t epoch = f->rotate_ms ? (uint64_t)(now - s->sc.start_ms) /
                                            f->rotate_ms
                                      : 0;

        text = ((uint64_t)z->inf << 48) ^ ((uint64_t)(e->who % f->campaigns)
                                           << 20) ^ epoch;
        p = pow(f->similarity, 4);
    } else if (e->type == EV_RELAY &&
               ((e->part & 3) == RELAY_BOUNCE || m->relay_spam)) {
        /* a bounce carries the spam it bounces, a forward passes it on:
         * one of the day's five spam runs, which every server receives */
        int64_t day = (e->t_ms - s->sc.start_ms) / SIM_DAY;

        text = (1ULL << 61) ^ ((uint64_t)(day + 1000) << 8) ^ (e->id % 5);
        p = 0.9 * 0.9 * 0.9 * 0.9;
    } else if (e->type == EV_BURST || e->type == EV_NEWSLETTER) {
        const struct sim_class *k = &s->sc.cls[s->senders[m->sender].cls];
        bool shared = e->type == EV_BURST &&
                      (mix32(m->sender * 0x2545f4914f6cdd1dULL) >> 8) /
                              16777216.0 < k->burst.shared;

        text = shared ? 0xc4a1ULL << 40 ^ s->senders[m->sender].cls
                      : (1ULL << 62) ^ ((uint64_t)m->sender << 8) ^ e->type;
        p = 0.9 * 0.9 * 0.9 * 0.9;
    }
    for (int j = 0; j < CP_FP_BANDS; j++)
        fp.band[j] = rng_unit(&g) < p ? mix32(text * CP_FP_BANDS + (uint64_t)j)
                                      : mix32(rng_next(&g));
    fp.words = 100;
    memset(&r, 0, sizeof(r));
    r.stage = CP_STAGE_CONTENT;
    r.queue_id = str_c(a->qid);
    r.client_address = str_c(m->ip);
    r.sender = str_c(m->from);
    r.sasl_username = str_c(m->login);
    d->truth.cause = "content";
    inproc_content(&d->ip, &r, &fp, now, &dec);
    d->truth.cause = "delivery outcome";
    note_why(m, &dec);
    return dec.action;
}

/* ---- a binary heap of events by time: retries, and delivery outcomes
 * (an outcome travels as a sim_event: id and attempt name the message,
 * type is the enum cp_outcome, who the number of recipients) ---- */

struct heap {
    struct sim_event *v;
    size_t n, cap;
};

static bool
ev_before(const struct sim_event *a, const struct sim_event *b)
{
    return a->t_ms != b->t_ms ? a->t_ms < b->t_ms : a->id < b->id;
}

static void
heap_push(struct heap *h, struct sim_event e)
{
    size_t i;

    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->v = xreallocarray(h->v, h->cap, sizeof(*h->v));
    }
    for (i = h->n++; i > 0 && ev_before(&e, &h->v[(i - 1) / 2]); i = (i - 1) / 2)
        h->v[i] = h->v[(i - 1) / 2];
    h->v[i] = e;
}

static struct sim_event
heap_pop(struct heap *h)
{
    struct sim_event top = h->v[0], last = h->v[--h->n];
    size_t i = 0, c;

    while ((c = 2 * i + 1) < h->n) {
        if (c + 1 < h->n && ev_before(&h->v[c + 1], &h->v[c]))
            c++;
        if (!ev_before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0)
        h->v[i] = last;
    return top;
}

/*
 * Queued messages waiting for their recipients' fates: a heap of events
 * (the time they are reported; `who` names the message's recipients in
 * `buf`, a slot reused once reported).
 */
struct fates {
    struct heap h;
    struct strbuf *buf;
    uint32_t nbuf, *free, nfree;
    struct fate cur;         /* the message being sent */
};

static void
fates_free(struct fates *f)
{
    for (uint32_t i = 0; i < f->nbuf; i++)
        sb_fini(&f->buf[i]);
    free(f->buf);
    free(f->free);
    free(f->h.v);
    sb_fini(&f->cur.rcpt);
}

/* Report the outcomes due by `now` to the engine. */
static void
fate_drain(struct sim *s, struct sim_driver *d, struct fates *f, int64_t now)
{
    while (f->h.n > 0 && f->h.v[0].t_ms <= now) {
        struct sim_event e = heap_pop(&f->h);
        struct strbuf *b = &f->buf[e.who];
        char qid[32];
        int n = snprintf(qid, sizeof(qid), "Q%u.%u", e.id, e.attempt);

        for (size_t at = 0; at < b->len; at += strlen(b->data + at + 1) + 2) {
            enum cp_outcome o = (enum cp_outcome)b->data[at];

            if (!d->live && d->log == NULL)
                inproc_outcome(&d->ip, qid, (size_t)n, b->data + at + 1, o,
                               e.t_ms);
            if (e.t_ms >= s->sc.start_ms)
                s->tot.outcomes[o]++;
        }
        if (d->log != NULL && (e.t_ms >= s->sc.start_ms || d->hlog != NULL))
            simlog_delivery(e.t_ms >= s->sc.start_ms ? d->log : d->hlog,
                            e.t_ms, e.id, b->data, b->len);
        f->free[f->nfree++] = e.who;
    }
}

/* The message was queued: its recipients' fates arrive 2-60 s later. */
static void
fate_schedule(struct fates *fs, const struct sim_msg *m, struct fate *f,
              int64_t now)
{
    int64_t at = now + 2000 + (int64_t)rng_below(&f->r, 58000);
    uint32_t slot;

    if (fs->nfree == 0) { /* a new slot */
        fs->buf = xreallocarray(fs->buf, fs->nbuf + 1, sizeof(*fs->buf));
        fs->free = xreallocarray(fs->free, fs->nbuf + 1, sizeof(*fs->free));
        sb_init(&fs->buf[fs->nbuf]);
        fs->free[fs->nfree++] = fs->nbuf++;
    }
    slot = fs->free[--fs->nfree];
    sb_reset(&fs->buf[slot]);
    sb_append(&fs->buf[slot], f->rcpt.data, f->rcpt.len);
    heap_push(&fs->h, (struct sim_event){.t_ms = at, .who = slot,
                                         .id = m->e->id,
                                         .attempt = m->e->attempt});
}

/* --maillog: the message as Postfix logs it (the history of a warm start
 * into its own file, if asked for), and, if spam, its truth. */
static void
log_submission(struct sim *s, struct sim_driver *d, const struct sim_msg *m,
               int64_t now)
{
    struct simlog_msg lm = {m->e->id, m->sasl, m->login, m->ip, m->from,
                            m->tls_proto, m->tls_cipher, m->size, m->nrcpt};
    char qid[16];

    if (now < s->sc.start_ms) {
        if (d->hlog != NULL)
            simlog_submission(d->hlog, now, &lm);
        return;
    }
    simlog_submission(d->log, now, &lm);
    if (m->spam && d->truthlog != NULL) {
        simlog_qid(qid, sizeof(qid), m->e->id, 0);
        fprintf(d->truthlog, "spam\t%s\t%u\n", qid, m->e->who);
    }
}

/* One SMTP transaction; stops at the first recipient not accepted. */
static enum sim_outcome
transact(struct sim *s, struct sim_driver *d, struct sim_msg *m, int64_t now,
         struct fates *fates)
{
    char rcpt[128], count[16];
    struct ask a = {"RCPT", rcpt, "0", "", "", "", CP_STAGE_RCPT, 0, 0};
    enum cp_action act;
    struct fate *f = &fates->cur;

    sb_reset(&f->rcpt);
    rng_seed(&f->r, ((uint64_t)s->sc.seed << 32) ^ 0x5deece66dULL ^
                       ((uint64_t)m->e->id * 0xbf58476d1ce4e5b9ULL) ^
                       m->e->attempt);
    m->pooled = false;
    snprintf(a.inst, sizeof(a.inst), "m%u.%u", m->e->id, m->e->attempt);
    snprintf(a.size, sizeof(a.size), "%llu", (unsigned long long)m->size);
    a.nsize = m->size;
    for (uint32_t i = 0; i < m->nrcpt; i++) {
        enum rtype t = recipient(s, m, i, rcpt, sizeof(rcpt));

        if (i == 0 && m->spam &&
            s->sc.inf[s->zombies[m->e->who].inf].helo == SIM_HELO_RECIPIENT)
            snprintf(m->helo, sizeof(m->helo), "%s", strchr(rcpt, '@') + 1);

        act = ask(s, d, m, &a, now);
        if (act == CP_ACT_DEFER || act == CP_ACT_REJECT)
            return outcome_of(act);
        fate_of(s, m, t, rcpt, f);
    }
    snprintf(count, sizeof(count), "%u", m->nrcpt);
    a.rcpt = "";
    a.count = count;
    a.ncount = m->nrcpt;
    a.stage = "DATA";
    a.st = CP_STAGE_DATA;
    if ((act = ask(s, d, m, &a, now)) == CP_ACT_DEFER || act == CP_ACT_REJECT)
        return outcome_of(act);
    a.stage = "END-OF-MESSAGE";
    a.st = CP_STAGE_EOM;
    snprintf(a.qid, sizeof(a.qid), "Q%u.%u", m->e->id, m->e->attempt);
    act = ask(s, d, m, &a, now);
    if (act != CP_ACT_HOLD && outcome_of(act) == SIM_DELIVERED &&
        d->content && !d->ip.engine.learning && d->log == NULL) {
        enum cp_action c = content(s, d, m, &a, now); /* the milter */

        act = c != CP_ACT_DUNNO ? c : act;
    }
    if (d->log != NULL)
        log_submission(s, d, m, now);
    if (act == CP_ACT_HOLD)
        s->tot.held++;
    else if ((s->sc.delivery || d->log != NULL) && !d->live &&
             outcome_of(act) == SIM_DELIVERED)
        fate_schedule(fates, m, f, now);
    return outcome_of(act);
}

/* ---- bookkeeping ---- */

static uint32_t
hour_of(const struct sim *s, int64_t t)
{
    int64_t h = (t - s->sc.start_ms) / SIM_HOUR;

    return h < 0 ? 0 : h >= s->series.hours ? s->series.hours - 1 : (uint32_t)h;
}

static const struct sim_retry *
retry_of(const struct sim *s, const struct sim_event *e)
{
    if (e->type == EV_SPAM)
        return &s->sc.inf[s->zombies[e->who].inf].retry;
    return &s->sc.cls[s->senders[e->who].cls].retry;
}

static void
tally_why(struct sim *s, const char *why)
{
    struct sim_totals *t = &s->tot;
    uint32_t i;

    if (t->nwhy == SIM_WHY_MAX - 1) /* the last slot: all the rest */
        why = "other";
    for (i = 0; i < t->nwhy && strcmp(t->why[i].name, why) != 0; i++)
        ;
    if (i == t->nwhy) {
        t->nwhy++;
        snprintf(t->why[i].name, sizeof(t->why[i].name), "%s", why);
    }
    t->why[i].n++;
}

static void
record(struct sim *s, const struct sim_event *e, const struct sim_msg *m,
       enum sim_outcome o, struct heap *retries)
{
    uint32_t h = hour_of(s, e->t_ms);
    const struct sim_retry *rt = retry_of(s, e);
    bool retry = o == SIM_DEFERRED && rt->after_ms > 0 &&
                 e->attempt < rt->attempts && e->attempt < 250;

    if (m->spam) {
        struct sim_zombie *z = &s->zombies[e->who];

        if (e->attempt == 0) {
            s->tot.spam++;
            z->spam_sent++;
            s->series.spam_tried[h]++;
        }
        if (o == SIM_DELIVERED) {
            s->tot.spam_delivered++;
            s->tot.spam_pooled += m->pooled;
            z->spam_accepted++;
            s->series.spam_sent[h]++;
        } else if (z->first_stop_ms < 0) {
            z->first_stop_ms = e->t_ms;
        }
        if (o != SIM_DELIVERED && s->sc.inf[z->inf].kind != SIM_UNAUTH)
            s->senders[z->sender].flags |= SIM_FLAGGED;
    } else {
        size_t cd = (size_t)m->sender * s->sc.days + h / 24;

        if (e->attempt == 0) {
            s->tot.ham++;
            s->series.ham_tried[h]++;
            s->custday[cd] |= 1;
        }
        if (o == SIM_DELIVERED) {
            s->tot.ham_delivered++;
            s->tot.ham_pooled += m->pooled;
            s->series.ham_sent[h]++;
        } else {
            tally_why(s, m->why[0] ? m->why : "(live: unknown)");
            s->series.legit_defer[h]++;
            s->custday[(size_t)m->sender * s->sc.days +
                       hour_of(s, e->t_ms) / 24] |= 2;
            s->senders[m->sender].flags |= SIM_FLAGGED;
            if (e->attempt == 0)
                s->tot.ham_deferred_any++;
            if (!retry) {
                s->tot.ham_lost++;
                s->custday[cd] |= 4;
            }
        }
    }
    if (retry) {
        struct sim_event r = *e;

        r.t_ms = e->t_ms + (int64_t)rt->after_ms;
        r.attempt++;
        heap_push(retries, r);
    }
}

void
sim_run(struct sim *s, struct sim_driver *d)
{
    struct heap retries = {0};
    struct fates fates = {0};

    int64_t end = s->sc.start_ms + s->sc.days * SIM_DAY;
    uint64_t i = 0;
    bool learning;

    d->sim = s;
    sb_init(&fates.cur.rcpt);
    /* a warm start: the history is learned first (chokepoint learn) */
    learning = s->nev > 0 && s->ev[0].t_ms < s->sc.start_ms;
    if (learning && d->live)
        sim_die("--live cannot learn a history; set 'history: 0'");
    d->ip.engine.learning = learning && d->log == NULL;
    while (i < s->nev || retries.n > 0) {
        struct sim_event e;
        struct sim_msg m;
        enum sim_outcome o;

        if (retries.n > 0 && (i == s->nev || ev_before(&retries.v[0], &s->ev[i])))
            e = heap_pop(&retries);
        else
            e = s->ev[i++];
        if (e.t_ms >= end)
            continue; /* retries past the end of the period */
        fate_drain(s, d, &fates, e.t_ms);
        if (learning && e.t_ms >= s->sc.start_ms) {
            learning = false;
            if (!d->live && d->log == NULL)
                inproc_learned(&d->ip);
        }
        build_msg(s, &e, &m);
        o = transact(s, d, &m, e.t_ms, &fates);
        if (!learning) {
            s->tot.attempts++;
            record(s, &e, &m, o, &retries);
        }
    }
    fate_drain(s, d, &fates, INT64_MAX);
    free(retries.v);
    fates_free(&fates);
    if (!d->live && d->log == NULL)
        inproc_flush(&d->ip, end + 86400000);
}

int
sim_live_connect(struct sim_driver *d, const char *path)
{
    struct sockaddr_un sa;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    d->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (d->fd < 0 || connect(d->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    d->live = true;
    return 0;
}
