/*
 * simgen.c — build the simulated ISP: customers with legitimate habits
 * drawn once per customer, infections placed on customers and scaled so
 * that, with no chokepoint, spam is the scenario's share of outbound
 * messages, and the time-ordered list of first tries of every message.
 *
 * Everything is drawn from one generator seeded by the scenario's seed, in
 * a fixed order, so a seed gives the same world every time. The models and
 * the figures behind the defaults are described in doc/sim.md.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/simmodel.h"
#include "util/xalloc.h"

#define HOME_BASE 0x64400000u  /* 100.64.0.0: customers' own lines */
#define CGNAT_BASE 0x647f0000u /* 100.127.0.0: shared CGNAT addresses */
#define CGNAT_PER_IP 16
#define FOREIGN_BASE 0xc6330000u /* 198.51.0.0: other networks */
#define OFFICE_BASE 0xb9000000u  /* 185.0.0.0: business offices, a /24 each */

/* Hourly shape of legitimate sending; each row sums to 24. */
static const double diurnal_tab[3][24] = {
    /* residential: quiet nights, evening peak */
    {0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.0, 1.1, 1.2, 1.2,
     1.3, 1.2, 1.2, 1.2, 1.3, 1.5, 1.8, 2.0, 2.0, 1.7, 1.1, 0.4},
    /* business: office hours */
    {0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 1.0, 2.2, 2.6, 2.6, 2.4,
     1.8, 2.2, 2.4, 2.3, 2.0, 1.2, 0.5, 0.3, 0.2, 0.15, 0.1, 0.05},
    /* flat */
    {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
};

double
sim_diurnal(int profile, int hour)
{
    return diurnal_tab[profile][hour];
}

void
sim_domain(char *out, size_t n, uint32_t cust, uint32_t i)
{
    if (i == 0)
        snprintf(out, n, "co%u.example", cust);
    else
        snprintf(out, n, "co%u-%u.example", cust, i);
}

void
sim_login(const struct sim *s, char *out, size_t n, uint32_t sender)
{
    const struct sim_sender *p = &s->senders[sender];
    char dom[48];

    if (!(p->flags & SIM_STAFF)) {
        snprintf(out, n, "c%07u@isp.example", sender);
        return;
    }
    sim_domain(dom, sizeof(dom), p->cust, 0);
    if (p->flags & SIM_SERVER)
        snprintf(out, n, "mx@%s", dom);
    else if (p->flags & SIM_SHARED)
        snprintf(out, n, "office@%s", dom);
    else
        snprintf(out, n, "p%u@%s", p->slot, dom);
}

void
sim_format_ip(char *out, size_t n, uint32_t ip)
{
    snprintf(out, n, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255,
             (ip >> 8) & 255, ip & 255);
}

static void
add_event(struct sim *s, int64_t t, uint32_t who, uint8_t type)
{
    if (s->nev == s->capev) {
        s->capev = s->capev ? s->capev * 2 : 1 << 16;
        s->ev = xreallocarray(s->ev, s->capev, sizeof(*s->ev));
    }
    s->ev[s->nev] = (struct sim_event){t, who, (uint32_t)s->nev, 0, type, 0};
    s->nev++;
}

/* A hash of x (splitmix64's finaliser): per-sender properties drawn
 * without touching the generator, so they do not change the world. */
static uint64_t
mix(uint64_t x)
{
    return rng_splitmix(&x);
}

static bool
is_weekend(const struct sim *s, int64_t day)
{
    /* day 0 is the scenario's start; 1970-01-01 was a Thursday */
    int64_t d = s->sc.start_ms / SIM_DAY + day;

    return (d + 3) % 7 >= 5;
}

static int
weekday(const struct sim *s, int64_t day)
{
    return (int)((s->sc.start_ms / SIM_DAY + day + 3) % 7);
}

static int
draw_hour(struct sim *s, int profile)
{
    double u = rng_unit(&s->rng) * 24, acc = 0;

    for (int h = 0; h < 24; h++) {
        acc += diurnal_tab[profile][h];
        if (u < acc)
            return h;
    }
    return 23;
}

/* One login's legitimate habits (per_day, activity, roaming, alias,
 * address). */
static void
draw_sender(struct sim *s, const struct sim_class *k, struct sim_sender *p,
            uint32_t n, uint32_t *cgnat)
{
    double pd = rng_lognormal(&s->rng, k->per_day.median, k->per_day.sigma);

    p->per_day = (float)(pd < k->per_day.max ? pd : k->per_day.max);
    p->people = 1;
    if (rng_unit(&s->rng) < k->active_share)
        p->flags |= SIM_ACTIVE;
    if (rng_unit(&s->rng) < k->roaming_share)
        p->flags |= SIM_ROAMING;
    if (rng_unit(&s->rng) < k->alias_share)
        p->flags |= SIM_ALIAS;
    if (rng_unit(&s->rng) < k->cgnat_share)
        p->ip = CGNAT_BASE + 1 + (*cgnat)++ / CGNAT_PER_IP;
    else
        p->ip = HOME_BASE + 1 + n;
}

static bool
has_staff(const struct sim_class *k)
{
    return k->staff.logins.max > 1 || k->staff.shared_share > 0;
}

/* How many logins each customer of class k has (staff model: drawn). */
static uint32_t
logins_of(struct sim *s, const struct sim_class *k, bool *shared)
{
    uint32_t n;

    *shared = false;
    if (!has_staff(k))
        return 1;
    n = (uint32_t)rng_count(&s->rng, k->staff.logins.mean,
                            k->staff.logins.max);
    *shared = rng_unit(&s->rng) < k->staff.shared_share;
    return n + *shared;
}

static void
grow_senders(struct sim *s, uint32_t need, uint32_t *cap)
{
    if (need <= *cap)
        return;
    while (*cap < need)
        *cap = *cap ? *cap * 2 : 1024;
    s->senders = xreallocarray(s->senders, *cap, sizeof(*s->senders));
}

static void
make_customers(struct sim *s)
{
    uint32_t n = 0, cgnat = 0, cap = 0;

    for (uint32_t c = 0; c < s->sc.ncls; c++) {
        const struct sim_class *k = &s->sc.cls[c];

        s->class_first[c] = n;
        for (uint32_t i = 0; i < k->customers; i++) {
            bool shared;
            /* (no draw without servers: the other scenarios' worlds stay
             * as they were) */
            bool server = k->server.share > 0 &&
                          rng_unit(&s->rng) < k->server.share;
            uint32_t logins = server ? 1 : logins_of(s, k, &shared);

            grow_senders(s, n + logins, &cap);
            for (uint32_t j = 0; j < logins; j++, n++) {
                struct sim_sender *p = &s->senders[n];

                memset(p, 0, sizeof(*p));
                p->cls = c;
                p->cust = s->ncust;
                p->slot = (uint16_t)j;
                draw_sender(s, k, p, n, &cgnat);
                if (server) { /* its people's mail and the relayed */
                    p->flags |= SIM_STAFF | SIM_SHARED | SIM_SERVER;
                    p->ip = OFFICE_BASE + s->ncust * 256u + 10;
                    p->people = (uint8_t)rng_count(
                        &s->rng, k->staff.people.mean,
                        k->staff.people.max > 255 ? 255
                                                  : k->staff.people.max);
                    p->per_day *= p->people;
                    continue;
                }
                if (!has_staff(k))
                    continue;
                /* a business: its office network, one per customer */
                p->flags |= SIM_STAFF;
                p->ip = OFFICE_BASE + s->ncust * 256u + 10;
                if (shared && j == logins - 1) {
                    p->flags |= SIM_SHARED;
                    p->people = (uint8_t)rng_count(&s->rng,
                                                   k->staff.people.mean,
                                                   k->staff.people.max > 255
                                                       ? 255
                                                       : k->staff.people.max);
                    p->per_day *= p->people;
                }
            }
            s->ncust++;
        }
        s->class_n[c] = n - s->class_first[c];
    }
    s->nsenders = n;
}

/* Sender i's legitimate messages of day d (negative: history). */
static void
legit_day(struct sim *s, uint32_t i, int64_t d, bool count)
{
    const struct sim_sender *p = &s->senders[i];
    const struct sim_class *k = &s->sc.cls[p->cls];
    double lambda = p->per_day * (is_weekend(s, d) ? k->weekend : 1);
    uint64_t m = rng_poisson(&s->rng, lambda);

    if (count)
        s->legit_expected += lambda;
    for (uint64_t j = 0; j < m; j++) {
        int64_t t = s->sc.start_ms + d * SIM_DAY +
                    draw_hour(s, k->diurnal) * SIM_HOUR +
                    (int64_t)rng_below(&s->rng, SIM_HOUR);

        add_event(s, t, i, EV_LEGIT);
    }
}

static void
legit_events(struct sim *s)
{
    for (uint32_t i = 0; i < s->nsenders; i++)
        if (s->senders[i].flags & SIM_ACTIVE)
            for (uint32_t d = 0; d < s->sc.days; d++)
                legit_day(s, i, d, true);
}

static void
burst_events(struct sim *s)
{
    for (uint32_t i = 0; i < s->nsenders; i++) {
        struct sim_sender *p = &s->senders[i];
        const struct sim_burst *b = &s->sc.cls[p->cls].burst;

        if (!(p->flags & SIM_ACTIVE) || b->share <= 0 ||
            rng_unit(&s->rng) >= b->share)
            continue;
        p->flags |= SIM_BURST;
        int64_t t0 = s->sc.start_ms +
                     (int64_t)rng_below(&s->rng, s->sc.days) * SIM_DAY +
                     (9 + (int64_t)rng_below(&s->rng, 11)) * SIM_HOUR;

        for (uint32_t j = 0; j < b->messages; j++)
            add_event(s, t0 + (int64_t)rng_below(&s->rng, b->within_ms), i,
                      EV_BURST);
        s->legit_expected += b->messages;
    }
}

/* A newsletter's sends, weekly on its weekday, from `first` day on. */
static void
newsletter_sends(struct sim *s, const struct sim_newsletter *nl, uint32_t who,
                 uint32_t i, int64_t first, int64_t days, bool count)
{
    uint32_t msgs = (nl->recipients + nl->per_message - 1) / nl->per_message;

    for (int64_t d = first; d < days; d++) {
        if (weekday(s, d) != nl->weekday)
            continue;
        /* senders of one class spread over 8 hours from `hour` */
        int64_t t0 = s->sc.start_ms + d * SIM_DAY +
                     (nl->hour + i % 8) * SIM_HOUR +
                     (int64_t)(i / 8 % 60) * 60000;

        for (uint32_t j = 0; j < msgs; j++) {
            add_event(s, t0 + (int64_t)j * 60000 / nl->per_minute, who,
                      EV_NEWSLETTER);
            s->ev[s->nev - 1].part = j;
        }
        if (count)
            s->legit_expected += msgs;
    }
}

/* Does sender `who` send its class's newsletter (its customer's first
 * login, for the share of customers that have one)? */
static bool
sends_newsletter(struct sim *s, uint32_t who)
{
    const struct sim_sender *p = &s->senders[who];
    const struct sim_newsletter *nl = &s->sc.cls[p->cls].newsletter;

    if (nl->recipients == 0 || p->slot != 0)
        return false;
    return nl->share >= 1 || (mix(who ^ 0x6e6c) >> 11) * 0x1.0p-53 < nl->share;
}

/* Every newsletter's sends on days [first, days). */
static void
newsletter_events(struct sim *s, int64_t first, int64_t days, bool count)
{
    for (uint32_t c = 0; c < s->sc.ncls; c++) {
        const struct sim_newsletter *nl = &s->sc.cls[c].newsletter;
        uint32_t i = 0;

        for (uint32_t w = s->class_first[c];
             w < s->class_first[c] + s->class_n[c]; w++)
            if (sends_newsletter(s, w))
                newsletter_sends(s, nl, w, i++, first, days, count);
    }
}

/* How many of mail server i's people have their mail forwarded, and
 * whether it is one of the heavy backscatterers: drawn from its number
 * (not the world's generator), so the history and the period agree. */
static void
server_traits(const struct sim *s, uint32_t i, uint32_t *forwarders,
              bool *heavy)
{
    const struct sim_sender *p = &s->senders[i];
    const struct sim_server *sv = &s->sc.cls[p->cls].server;
    struct rng r;
    uint64_t n;

    rng_seed(&r, ((uint64_t)s->sc.seed << 32) ^ 0x7365727665ULL ^
                     ((uint64_t)i * 0x9e3779b97f4a7c15ULL));
    n = rng_poisson(&r, sv->forwarders);
    *forwarders = (uint32_t)(n < p->people ? n : p->people);
    *heavy = rng_unit(&r) < sv->heavy_share;
}

/* `mean` (Poisson) messages of one kind (`part`) on day d, at any hour. */
static void
relay_some(struct sim *s, uint32_t i, int64_t d, double mean, uint32_t part,
           bool count)
{
    uint64_t m = rng_poisson(&s->rng, mean);

    if (count)
        s->legit_expected += mean;
    for (uint64_t j = 0; j < m; j++) {
        add_event(s, s->sc.start_ms + d * SIM_DAY +
                         (int64_t)rng_below(&s->rng, SIM_DAY),
                  i, EV_RELAY);
        s->ev[s->nev - 1].part = part;
    }
}

/* Mail server i's day d of mail passed on for others: replies,
 * backscatter, forwards, at any hour (negative d: history). */
static void
relay_day(struct sim *s, uint32_t i, int64_t d, bool count)
{
    const struct sim_server *sv = &s->sc.cls[s->senders[i].cls].server;
    uint32_t fwd;
    bool heavy;

    server_traits(s, i, &fwd, &heavy);
    relay_some(s, i, d, sv->replies, RELAY_REPLY, count);
    relay_some(s, i, d, sv->backscatter * (heavy ? 10 : 1), RELAY_BOUNCE,
               count);
    for (uint32_t f = 0; f < fwd; f++)
        relay_some(s, i, d, sv->forwards, RELAY_FORWARD | f << 2, count);
}

static void
relay_events(struct sim *s, int64_t first, int64_t days, bool count)
{
    for (uint32_t i = 0; i < s->nsenders; i++)
        if (s->senders[i].flags & SIM_SERVER)
            for (int64_t d = first; d < days; d++)
                relay_day(s, i, d, count);
}

/*
 * A warm start: the customers' legitimate mail (and newsletters) of the
 * `history` before the period, which the engine learns from first, as
 * `chokepoint learn` does from past mail logs. Drawn last, from a
 * generator of its own, so the period itself is the same world as on a
 * cold start.
 */
static void
history_events(struct sim *s)
{
    int64_t days = (int64_t)((s->sc.history_ms + SIM_DAY - 1) / SIM_DAY);
    struct rng saved = s->rng;

    if (days == 0)
        return;
    rng_seed(&s->rng, ((uint64_t)s->sc.seed << 32) ^ 0x686973746f7279ULL);
    for (uint32_t i = 0; i < s->nsenders; i++)
        if (s->senders[i].flags & SIM_ACTIVE)
            for (int64_t d = -days; d < 0; d++)
                legit_day(s, i, d, false);
    newsletter_events(s, -days, 0, false);
    relay_events(s, -days, 0, false);
    s->rng = saved;
}


/* Expected spam messages from one account of infection `f`. */
static double
volume_per_account(const struct sim_infection *f)
{
    if (f->kind == SIM_CAMPAIGN)
        return f->per_zombie;
    return f->rate_per_hour *
           ((double)(f->duration_min_ms + f->duration_max_ms) / 2) / SIM_HOUR;
}

/*
 * Spam volume each calibrated infection must carry so that spam is
 * sc.spam_share of all messages (without chokepoint). Infections with
 * `calibrate: false` (or no volume_share) keep their `accounts` and count
 * towards the total first. Returns false if nothing is calibrated.
 */
static bool
spam_targets(struct sim *s, double *target)
{
    double spam = s->legit_expected * s->sc.spam_share / (1 - s->sc.spam_share);
    double shares = 0;

    for (uint32_t i = 0; i < s->sc.ninf; i++) {
        const struct sim_infection *f = &s->sc.inf[i];

        if (f->calibrate && f->volume_share > 0)
            shares += f->volume_share;
        else
            spam -= f->accounts * volume_per_account(f);
    }
    for (uint32_t i = 0; i < s->sc.ninf; i++) {
        const struct sim_infection *f = &s->sc.inf[i];

        target[i] = -1; /* not calibrated: place `accounts` */
        if (s->sc.spam_share > 0 && shares > 0 && f->calibrate &&
            f->volume_share > 0)
            target[i] = spam > 0 ? spam * f->volume_share / shares : 0;
    }
    return shares > 0;
}

static uint32_t
pick_victim(struct sim *s, uint32_t cls)
{
    uint32_t who = s->class_first[cls];

    for (int tries = 0; tries < 64; tries++) {
        who = s->class_first[cls] + (uint32_t)rng_below(&s->rng, s->class_n[cls]);
        if (!(s->senders[who].flags & SIM_INFECTED))
            break;
    }
    s->senders[who].flags |= SIM_INFECTED;
    return who;
}

static void
spam_events(struct sim *s, uint32_t z)
{
    struct sim_zombie *zb = &s->zombies[z];
    const struct sim_infection *f = &s->sc.inf[zb->inf];

    if (f->kind == SIM_CAMPAIGN) {
        for (uint32_t j = 0; j < f->per_zombie; j++)
            add_event(s, zb->start_ms +
                             (int64_t)rng_below(&s->rng, (uint64_t)(zb->end_ms -
                                                                    zb->start_ms)),
                      z, EV_SPAM);
        return;
    }
    for (double t = (double)zb->start_ms;;) {
        t += rng_exp(&s->rng, SIM_HOUR / f->rate_per_hour);
        if (t >= (double)zb->end_ms)
            break;
        add_event(s, (int64_t)t, z, EV_SPAM);
    }
}

/* Place one infection of `f` on a customer; returns its expected volume. */
static double
place_zombie(struct sim *s, uint32_t inf, int64_t campaign)
{
    const struct sim_infection *f = &s->sc.inf[inf];
    int64_t end = s->sc.start_ms + s->sc.days * SIM_DAY;
    struct sim_zombie *zb;

    if (s->nzombies == s->capzombies) {
        s->capzombies = s->capzombies ? s->capzombies * 2 : 256;
        s->zombies = xreallocarray(s->zombies, s->capzombies,
                                   sizeof(*s->zombies));
    }
    zb = &s->zombies[s->nzombies];
    memset(zb, 0, sizeof(*zb));
    zb->inf = inf;
    zb->sender = pick_victim(s, (uint32_t)f->cls);
    zb->ip = s->senders[zb->sender].ip;
    zb->first_stop_ms = -1;
    if (f->kind == SIM_CAMPAIGN) {
        zb->start_ms = campaign;
        zb->end_ms = campaign + (int64_t)f->within_ms;
    } else {
        zb->start_ms = s->sc.start_ms + (int64_t)f->start_from_ms +
                       (int64_t)rng_below(&s->rng,
                                          f->start_to_ms - f->start_from_ms + 1);
        zb->end_ms = zb->start_ms + (int64_t)f->duration_min_ms +
                     (int64_t)rng_below(&s->rng, f->duration_max_ms -
                                                     f->duration_min_ms + 1);
    }
    if (zb->end_ms > end)
        zb->end_ms = end;
    spam_events(s, s->nzombies++);
    if (f->kind == SIM_CAMPAIGN)
        return f->per_zombie;
    return f->rate_per_hour * (double)(zb->end_ms - zb->start_ms) / SIM_HOUR;
}

/*
 * Infections: calibrated ones get accounts until their expected volume
 * (with each infection's real start and end, so infections cut by the end
 * of the period count for what they send) reaches their target.
 */
static void
make_zombies(struct sim *s)
{
    double target[SIM_MAX_INFECTIONS];

    spam_targets(s, target);
    for (uint32_t i = 0; i < s->sc.ninf; i++) {
        struct sim_infection *f = &s->sc.inf[i];
        int64_t campaign = s->sc.start_ms + (int64_t)f->start_from_ms +
                           (int64_t)rng_below(&s->rng, f->start_to_ms -
                                                           f->start_from_ms + 1);
        double vol = 0;
        uint32_t n = 0;

        /* stop at the count whose volume is nearest the target */
        while (target[i] < 0 ? n < f->accounts
                             : (n == 0 || vol + volume_per_account(f) / 2 <
                                              target[i]) &&
                                   n < s->class_n[f->cls]) {
            vol += place_zombie(s, i, campaign);
            n++;
        }
        f->accounts = n;
    }
}

static int
event_cmp(const void *a, const void *b)
{
    const struct sim_event *x = a, *y = b;

    if (x->t_ms != y->t_ms)
        return x->t_ms < y->t_ms ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void
sim_generate(struct sim *s)
{
    rng_seed(&s->rng, s->sc.seed);
    make_customers(s);
    legit_events(s);
    burst_events(s);
    newsletter_events(s, 0, s->sc.days, true);
    relay_events(s, 0, s->sc.days, true);
    make_zombies(s);
    history_events(s);
    qsort(s->ev, s->nev, sizeof(*s->ev), event_cmp);
    s->custday = xcalloc((size_t)s->nsenders * s->sc.days, 1);
    s->worst = xcalloc(s->nsenders, 1);
    s->series.hours = s->sc.days * 24;
    s->series.ham_tried = xcalloc(s->series.hours, sizeof(uint32_t));
    s->series.ham_sent = xcalloc(s->series.hours, sizeof(uint32_t));
    s->series.spam_tried = xcalloc(s->series.hours, sizeof(uint32_t));
    s->series.spam_sent = xcalloc(s->series.hours, sizeof(uint32_t));
    s->series.legit_defer = xcalloc(s->series.hours, sizeof(uint32_t));
}

void
sim_free(struct sim *s)
{
    free(s->senders);
    free(s->zombies);
    free(s->ev);
    free(s->custday);
    free(s->worst);
    free(s->series.ham_tried);
    free(s->series.ham_sent);
    free(s->series.spam_tried);
    free(s->series.spam_sent);
    free(s->series.legit_defer);
    memset(s, 0, sizeof(*s));
}
