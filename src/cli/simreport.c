/*
 * simreport.c — turn a finished simulation into the efficacy report (text
 * or JSON, keys documented in doc/sim.md) and SVG charts.
 *
 * Definitions: a zombie account is one infection of one account (the
 * SASL login, or the client address for unauth_relay); it is caught when
 * chokepoint deferred or refused any of its mail during the infection;
 * detection time runs from the infection's start to that first stop. A
 * legitimate customer-day is a (customer, day) with legitimate mail while
 * the customer was not infected; it is deferred if any of that mail was.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sim.h"
#include "util/xalloc.h"

/* Spam share of the mail that left through the ordinary transports (not
 * the reputation pool): what the main addresses' reputation sees. */
static double
share_outside_pool(const struct sim *s)
{
    double spam = (double)(s->tot.spam_delivered - s->tot.spam_pooled);
    double all = spam + (double)(s->tot.ham_delivered - s->tot.ham_pooled);

    return all > 0 ? spam / all : 0;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
quantile(double *v, size_t n, double q)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof(*v), cmp_double);
    return v[(size_t)floor(q * (double)(n - 1) + 0.5)];
}

static void
zombie_metrics(const struct sim *s, struct sim_metrics *m)
{
    double *acc = xcalloc(s->nzombies + 1, sizeof(double));
    double *det = xcalloc(s->nzombies + 1, sizeof(double));
    size_t na = 0, nd = 0;

    for (int k = -1; k < SIM_KIND_COUNT; k++) {
        na = nd = 0;
        for (uint32_t i = 0; i < s->nzombies; i++) {
            const struct sim_zombie *z = &s->zombies[i];

            if (k >= 0 && s->sc.inf[z->inf].kind != k)
                continue;
            acc[na++] = z->spam_accepted;
            if (z->first_stop_ms >= 0)
                det[nd++] = (double)(z->first_stop_ms - z->start_ms) / 60000;
            if (k >= 0) {
                m->kind[k].zombies++;
                m->kind[k].caught += z->first_stop_ms >= 0;
                m->kind[k].spam += z->spam_sent;
                m->kind[k].accepted += z->spam_accepted;
            }
        }
        if (k < 0) {
            m->zombie_accounts = (uint32_t)na;
            m->zombie_accounts_caught = (uint32_t)nd;
            m->accepted_p90 = quantile(acc, na, 0.9);
            m->accepted_median = quantile(acc, na, 0.5);
            m->detect_minutes_median = quantile(det, nd, 0.5);
        } else {
            m->kind[k].accepted_p90 = quantile(acc, na, 0.9);
            m->kind[k].accepted_median = quantile(acc, na, 0.5);
            m->kind[k].detect_minutes_median = quantile(det, nd, 0.5);
        }
    }
    free(acc);
    free(det);
}

/* Does zombie z send through its login's own account (not an address's
 * account of its own: unauth_relay from a customer who uses SASL)? */
static bool
on_login(const struct sim *s, const struct sim_zombie *z)
{
    return s->sc.inf[z->inf].kind != SIM_UNAUTH ||
           !s->sc.cls[s->senders[z->sender].cls].sasl;
}

static void
login_metrics(const struct sim *s, const uint8_t *infected,
              const uint8_t *active, struct sim_metrics *m)
{
    for (uint32_t p = 0; p < s->nsenders; p++) {
        if (infected[p]) {
            m->zombie_logins++;
            continue;
        }
        if (!active[p])
            continue;
        m->legit_logins++;
        m->legit_logins_watched += s->worst[p] >= SIM_RANK_WATCH;
        m->legit_logins_throttled += s->worst[p] >= SIM_RANK_THROTTLED;
        m->legit_logins_blocked += s->worst[p] >= SIM_RANK_BLOCKED;
    }
    for (uint32_t i = 0; i < s->nzombies; i++)
        m->zombie_logins += !on_login(s, &s->zombies[i]);
}

static void
customer_metrics(const struct sim *s, struct sim_metrics *m)
{
    uint32_t days = s->sc.days;
    uint8_t *infday = xcalloc((size_t)s->nsenders * days, 1);
    uint8_t *sasl_infected = xcalloc(s->nsenders, 1);
    uint8_t *infected = xcalloc(s->nsenders, 1);
    uint8_t *active = xcalloc(s->nsenders, 1);

    for (uint32_t i = 0; i < s->nzombies; i++) {
        const struct sim_zombie *z = &s->zombies[i];
        int64_t d0 = (z->start_ms - s->sc.start_ms) / SIM_DAY;
        int64_t d1 = (z->end_ms - 1 - s->sc.start_ms) / SIM_DAY;

        /* a login stopped for its infection stays stopped until its owner
         * cleans up and someone releases it, which the simulator does
         * not model: its days from the infection on are not counted */
        if (on_login(s, z))
            d1 = days;
        for (int64_t d = d0 < 0 ? 0 : d0; d <= d1 && d < days; d++)
            infday[(size_t)z->sender * days + (size_t)d] = 1;
        /* the account of an unauth_relay zombie is its address, not the
         * customer's login */
        if (s->sc.inf[z->inf].kind != SIM_UNAUTH)
            sasl_infected[z->sender] = 1;
        infected[z->sender] |= on_login(s, z);
    }
    for (uint32_t p = 0; p < s->nsenders; p++) {
        bool lost = false;

        for (uint32_t d = 0; d < days; d++) {
            uint8_t cd = s->custday[(size_t)p * days + d];

            active[p] |= cd & 1;
            if (!(cd & 1) || infday[(size_t)p * days + d])
                continue;
            m->legit_login_days++;
            m->legit_login_days_deferred += (cd & 2) != 0;
            lost |= (cd & 4) != 0;
        }
        if (s->senders[p].flags & SIM_INFECTED) {
            m->infected_accounts += sasl_infected[p];
            m->flagged_infected +=
                sasl_infected[p] && (s->senders[p].flags & SIM_FLAGGED);
            continue;
        }
        m->legit_accounts_blocked += lost;
        m->flagged_clean += (s->senders[p].flags & SIM_FLAGGED) != 0;
    }
    login_metrics(s, infected, active, m);
    free(infday);
    free(sasl_infected);
    free(infected);
    free(active);
}

void
sim_metrics(const struct sim *s, struct sim_metrics *m)
{
    uint64_t before = s->tot.ham + s->tot.spam;
    uint64_t after = s->tot.ham_delivered + s->tot.spam_delivered;
    uint32_t unauth = 0;

    memset(m, 0, sizeof(*m));
    m->spam_share_before = before ? (double)s->tot.spam / (double)before : 0;
    m->spam_share_after = after ? (double)s->tot.spam_delivered / (double)after
                                : 0;
    zombie_metrics(s, m);
    customer_metrics(s, m);
    {
        double camp = (double)m->kind[SIM_CAMPAIGN].accepted;
        double sent = (double)after - camp;

        m->spam_share_after_nocampaign =
            sent > 0 ? ((double)s->tot.spam_delivered - camp) / sent : 0;
    }
    m->legit_messages_deferred = s->tot.ham_deferred_any;
    m->legit_messages_lost = s->tot.ham_lost;
    /* accounts: SASL kinds are the customer's login; unauth is the address */
    for (uint32_t i = 0; i < s->nzombies; i++)
        unauth += s->sc.inf[s->zombies[i].inf].kind == SIM_UNAUTH;
    m->infected_accounts += unauth;
    m->flagged_infected += m->kind[SIM_UNAUTH].caught;
    m->flag_precision =
        m->flagged_infected + m->flagged_clean
            ? (double)m->flagged_infected /
                  (double)(m->flagged_infected + m->flagged_clean)
            : NAN;
    m->flag_recall = m->infected_accounts ? (double)m->flagged_infected /
                                                (double)m->infected_accounts
                                          : NAN;
}

/* Members of the report; every one but the first follows another. A
 * ratio, median or duration is a real (always with a fraction, null when
 * nothing was measured), a count an integer: one JSON type per member. */
static void
json_real(struct strbuf *sb, const char *key, double v)
{
    sb_json_kreal(sb, key, v, false);
}

static void
json_count(struct strbuf *sb, const char *key, uint64_t v)
{
    sb_json_ku64(sb, key, v, false);
}

void
sim_report_json(FILE *fp, const struct sim *s, const struct sim_metrics *m,
                const char *config)
{
    struct strbuf sb_, *sb = &sb_;

    sb_init(sb);
    sb_json_open(sb, CP_JSON_SIM);
    sb_json_kcstr(sb, "scenario", s->sc.file, false);
    sb_json_kcstr(sb, "name", s->sc.name, false);
    sb_json_kcstr(sb, "config", config, false);
    json_count(sb, "seed", s->sc.seed);
    json_count(sb, "days", s->sc.days);
    json_count(sb, "customers", s->ncust);
    json_count(sb, "logins", s->nsenders);
    json_real(sb, "spam_share_before", m->spam_share_before);
    json_real(sb, "spam_share_after", m->spam_share_after);
    json_real(sb, "spam_share_after_without_campaigns", m->spam_share_after_nocampaign);
    json_count(sb, "zombie_accounts", m->zombie_accounts);
    json_count(sb, "zombie_accounts_caught", m->zombie_accounts_caught);
    json_real(sb, "spam_accepted_per_zombie_median", m->accepted_median);
    json_real(sb, "spam_accepted_per_zombie_p90", m->accepted_p90);
    json_real(sb, "detect_minutes_median", m->detect_minutes_median);
    json_real(sb, "history_days", (double)s->sc.history_ms / (double)SIM_DAY);
    json_count(sb, "legit_login_days", m->legit_login_days);
    json_count(sb, "legit_login_days_deferred", m->legit_login_days_deferred);
    if (s->ranked) {
        json_count(sb, "legit_logins", m->legit_logins);
        json_count(sb, "legit_logins_watched", m->legit_logins_watched);
        json_count(sb, "legit_logins_throttled", m->legit_logins_throttled);
        json_count(sb, "legit_logins_blocked", m->legit_logins_blocked);
    }
    json_count(sb, "zombie_logins", m->zombie_logins);
    json_count(sb, "legit_messages_deferred", m->legit_messages_deferred);
    json_count(sb, "legit_messages_lost", m->legit_messages_lost);
    json_count(sb, "legit_accounts_blocked", m->legit_accounts_blocked);
    json_real(sb, "account_flag_precision", m->flag_precision);
    json_real(sb, "account_flag_recall", m->flag_recall);
    json_count(sb, "ham_messages", s->tot.ham);
    json_count(sb, "ham_delivered", s->tot.ham_delivered);
    json_count(sb, "spam_messages", s->tot.spam);
    json_count(sb, "spam_delivered", s->tot.spam_delivered);
    json_count(sb, "held", s->tot.held);
    json_count(sb, "spam_delivered_via_pool", s->tot.spam_pooled);
    json_count(sb, "ham_delivered_via_pool", s->tot.ham_pooled);
    json_real(sb, "spam_share_after_outside_pool", share_outside_pool(s));
    json_count(sb, "outcomes_delivered", s->tot.outcomes[CP_OUT_DELIVERED]);
    json_count(sb, "outcomes_bad_recipient", s->tot.outcomes[CP_OUT_BAD_RECIPIENT]);
    json_count(sb, "outcomes_rejected", s->tot.outcomes[CP_OUT_REJECTED]);
    json_count(sb, "attempts", s->tot.attempts);
    json_count(sb, "policy_requests", s->tot.requests);
    json_real(sb, "wall_seconds", s->wall_s);
    sb_json_key(sb, "legit_deferred_by", false);
    sb_puts(sb, "{");
    for (uint32_t i = 0; i < s->tot.nwhy; i++)
        sb_json_ku64(sb, s->tot.why[i].name, s->tot.why[i].n, i == 0);
    sb_puts(sb, "}");
    sb_json_key(sb, "by_kind", false);
    sb_puts(sb, "{");
    for (int k = 0, first = 1; k < SIM_KIND_COUNT; k++) {
        const struct sim_kind_metrics *km = &m->kind[k];

        if (km->zombies == 0)
            continue;
        sb_json_key(sb, sim_kind_name(k), first);
        sb_puts(sb, "{");
        first = 0;
        sb_json_ku64(sb, "zombie_accounts", km->zombies, true);
        json_count(sb, "zombie_accounts_caught", km->caught);
        json_count(sb, "spam_messages", km->spam);
        json_count(sb, "spam_accepted", km->accepted);
        json_real(sb, "spam_accepted_per_zombie_median", km->accepted_median);
        json_real(sb, "spam_accepted_per_zombie_p90", km->accepted_p90);
        json_real(sb, "detect_minutes_median", km->detect_minutes_median);
        sb_puts(sb, "}");
    }
    sb_puts(sb, "}}\n");
    fwrite(sb->data, 1, sb->len, fp);
    sb_fini(sb);
}

/* "%.Nf" of v, or "-" when there is nothing to measure (NaN). */
static const char *
num(char *buf, size_t n, double v, int decimals)
{
    if (isnan(v))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.*f", decimals, v);
    return buf;
}

static void
pct(FILE *fp, const char *label, double num, double den)
{
    fprintf(fp, "  %-44s %12.0f / %-12.0f (%.3f %%)\n", label, num, den,
            den > 0 ? 100 * num / den : 0);
}

void
sim_report_text(FILE *fp, const struct sim *s, const struct sim_metrics *m,
                const char *config)
{
    fprintf(fp, "chokepoint sim: %s (%s), seed %u, %u days, %u customers, "
                "%u logins, %s start\n",
            s->sc.name, s->sc.file, s->sc.seed, s->sc.days, s->ncust,
            s->nsenders, s->sc.history_ms ? "warm" : "cold");
    fprintf(fp, "config: %s; %llu messages, %llu attempts, %llu policy "
                "requests in %.1f s\n\n",
            config, (unsigned long long)(s->tot.ham + s->tot.spam),
            (unsigned long long)s->tot.attempts,
            (unsigned long long)s->tot.requests, s->wall_s);
    if (s->sc.delivery)
        fprintf(fp, "delivery outcomes reported: %llu delivered, %llu no such "
                    "recipient, %llu refused as spam\n\n",
                (unsigned long long)s->tot.outcomes[CP_OUT_DELIVERED],
                (unsigned long long)s->tot.outcomes[CP_OUT_BAD_RECIPIENT],
                (unsigned long long)s->tot.outcomes[CP_OUT_REJECTED]);
    fprintf(fp, "outbound spam share      before %6.2f %%   after %6.3f %%   "
                "(after, without campaigns: %.3f %%)\n",
            100 * m->spam_share_before, 100 * m->spam_share_after,
            100 * m->spam_share_after_nocampaign);
    pct(fp, "zombie accounts caught", m->zombie_accounts_caught,
        m->zombie_accounts);
    fprintf(fp, "  zombie logins (accounts infected at some time): %u\n",
            m->zombie_logins);
    char a[32], b[32], c[32];

    fprintf(fp, "  spam accepted per zombie: median %s, p90 %s; "
                "detection: median %s min\n",
            num(a, sizeof(a), m->accepted_median, 0),
            num(b, sizeof(b), m->accepted_p90, 0),
            num(c, sizeof(c), m->detect_minutes_median, 1));
    pct(fp, "legit login-days with a deferral",
        (double)m->legit_login_days_deferred, (double)m->legit_login_days);
    if (s->ranked) {
        pct(fp, "legit logins throttled (or blocked)",
            m->legit_logins_throttled, m->legit_logins);
        pct(fp, "legit logins blocked", m->legit_logins_blocked,
            m->legit_logins);
        pct(fp, "legit logins watched (or worse)", m->legit_logins_watched,
            m->legit_logins);
    }
    pct(fp, "legit messages deferred at least once",
        (double)m->legit_messages_deferred, (double)s->tot.ham);
    pct(fp, "legit messages never delivered", (double)m->legit_messages_lost,
        (double)s->tot.ham);
    fprintf(fp, "  legit accounts with mail lost (\"blocked\"): %u\n",
            m->legit_accounts_blocked);
    if (s->tot.nwhy > 0) {
        fprintf(fp, "  legit attempts deferred or refused, by what:");
        for (uint32_t i = 0; i < s->tot.nwhy; i++)
            fprintf(fp, "%s %s %llu", i ? "," : "", s->tot.why[i].name,
                    (unsigned long long)s->tot.why[i].n);
        fputc('\n', fp);
    }
    if (s->tot.spam_pooled + s->tot.ham_pooled > 0)
        fprintf(fp, "  through the reputation pool: %llu of %llu spam "
                    "delivered, %llu legit messages; spam share of the mail "
                    "outside the pool %.3f %%\n",
                (unsigned long long)s->tot.spam_pooled,
                (unsigned long long)s->tot.spam_delivered,
                (unsigned long long)s->tot.ham_pooled,
                100 * share_outside_pool(s));
    fprintf(fp, "  account flags: precision %s, recall %s (%u infected, "
                "%u clean flagged)\n\n",
            num(a, sizeof(a), m->flag_precision, 3),
            num(b, sizeof(b), m->flag_recall, 3), m->flagged_infected,
            m->flagged_clean);
    fprintf(fp, "  %-20s %8s %8s %10s %10s %8s %8s %10s\n", "kind", "zombies",
            "caught", "spam", "accepted", "acc/z50", "acc/z90", "det50min");
    for (int k = 0; k < SIM_KIND_COUNT; k++) {
        const struct sim_kind_metrics *km = &m->kind[k];

        if (km->zombies == 0)
            continue;
        fprintf(fp, "  %-20s %8u %8u %10llu %10llu %8s %8s %10s\n",
                sim_kind_name(k), km->zombies, km->caught,
                (unsigned long long)km->spam,
                (unsigned long long)km->accepted,
                num(a, sizeof(a), km->accepted_median, 0),
                num(b, sizeof(b), km->accepted_p90, 0),
                num(c, sizeof(c), km->detect_minutes_median, 1));
    }
}
