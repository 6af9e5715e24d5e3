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
sim_login(char *out, size_t n, uint32_t sender)
{
    snprintf(out, n, "c%07u@isp.example", sender);
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
    s->ev[s->nev] = (struct sim_event){t, who, (uint32_t)s->nev, type, 0};
    s->nev++;
}

static bool
is_weekend(const struct sim *s, uint32_t day)
{
    /* day 0 is the scenario's start; 1970-01-01 was a Thursday */
    int64_t d = s->sc.start_ms / SIM_DAY + day;

    return (d + 3) % 7 >= 5;
}

static int
weekday(const struct sim *s, uint32_t day)
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

static void
make_customers(struct sim *s)
{
    uint32_t n = 0, cgnat = 0;

    for (uint32_t c = 0; c < s->sc.ncls; c++)
        n += s->sc.cls[c].customers;
    s->senders = xcalloc(n, sizeof(*s->senders));
    s->nsenders = n;
    n = 0;
    for (uint32_t c = 0; c < s->sc.ncls; c++) {
        const struct sim_class *k = &s->sc.cls[c];

        s->class_first[c] = n;
        for (uint32_t i = 0; i < k->customers; i++, n++) {
            struct sim_sender *p = &s->senders[n];
            double pd = rng_lognormal(&s->rng, k->per_day.median,
                                      k->per_day.sigma);

            p->cls = c;
            p->per_day = (float)(pd < k->per_day.max ? pd : k->per_day.max);
            if (rng_unit(&s->rng) < k->active_share)
                p->flags |= SIM_ACTIVE;
            if (rng_unit(&s->rng) < k->roaming_share)
                p->flags |= SIM_ROAMING;
            if (rng_unit(&s->rng) < k->alias_share)
                p->flags |= SIM_ALIAS;
            if (rng_unit(&s->rng) < k->cgnat_share)
                p->ip = CGNAT_BASE + 1 + cgnat++ / CGNAT_PER_IP;
            else
                p->ip = HOME_BASE + 1 + n;
        }
    }
}

static void
legit_events(struct sim *s)
{
    for (uint32_t i = 0; i < s->nsenders; i++) {
        struct sim_sender *p = &s->senders[i];
        const struct sim_class *k = &s->sc.cls[p->cls];

        if (!(p->flags & SIM_ACTIVE))
            continue;
        for (uint32_t d = 0; d < s->sc.days; d++) {
            double lambda = p->per_day * (is_weekend(s, d) ? k->weekend : 1);
            uint64_t m = rng_poisson(&s->rng, lambda);

            s->legit_expected += lambda;
            for (uint64_t j = 0; j < m; j++) {
                int64_t t = s->sc.start_ms + d * SIM_DAY +
                            draw_hour(s, k->diurnal) * SIM_HOUR +
                            (int64_t)rng_below(&s->rng, SIM_HOUR);

                add_event(s, t, i, EV_LEGIT);
            }
        }
    }
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

static void
newsletter_events(struct sim *s)
{
    for (uint32_t c = 0; c < s->sc.ncls; c++) {
        const struct sim_newsletter *nl = &s->sc.cls[c].newsletter;
        uint32_t msgs;

        if (nl->recipients == 0)
            continue;
        msgs = (nl->recipients + nl->per_message - 1) / nl->per_message;
        for (uint32_t i = 0; i < s->sc.cls[c].customers; i++) {
            uint32_t who = s->class_first[c] + i;

            for (uint32_t d = 0; d < s->sc.days; d++) {
                if (weekday(s, d) != nl->weekday)
                    continue;
                /* senders of one class spread over 8 hours from `hour` */
                int64_t t0 = s->sc.start_ms + d * SIM_DAY +
                             (nl->hour + i % 8) * SIM_HOUR +
                             (int64_t)(i / 8 % 60) * 60000;

                for (uint32_t j = 0; j < msgs; j++)
                    add_event(s, t0 + (int64_t)j * 60000 / nl->per_minute, who,
                              EV_NEWSLETTER);
                s->legit_expected += msgs;
            }
        }
    }
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
    const struct sim_class *k = &s->sc.cls[cls];
    uint32_t who = s->class_first[cls];

    for (int tries = 0; tries < 64; tries++) {
        who = s->class_first[cls] + (uint32_t)rng_below(&s->rng, k->customers);
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
                                   n < s->sc.cls[f->cls].customers) {
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
    newsletter_events(s);
    make_zombies(s);
    qsort(s->ev, s->nev, sizeof(*s->ev), event_cmp);
    s->custday = xcalloc((size_t)s->nsenders * s->sc.days, 1);
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
    free(s->series.ham_tried);
    free(s->series.ham_sent);
    free(s->series.spam_tried);
    free(s->series.spam_sent);
    free(s->series.legit_defer);
    memset(s, 0, sizeof(*s));
}
