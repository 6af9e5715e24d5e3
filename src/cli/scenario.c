/*
 * scenario.c — load a scenario file through declared field tables
 * (util/yamlwalk.c); every field has a default, so a scenario states only
 * what differs (doc/sim.md lists them all).
 */
#include "cli/scenario.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "util/yamlwalk.h"

#define DAY 86400000ULL
#define HOUR 3600000ULL

static const char *const kind_names[] = {"blaster", "low_and_slow", "campaign",
                                         "stolen_credentials", "unauth_relay",
                                         NULL};
static const char *const map_names[] = {"customers", "logins", "none", NULL};
static const char *const diurnal_names[] = {"residential", "business", "flat",
                                            NULL};

const char *
sim_kind_name(int kind)
{
    return kind >= 0 && kind < SIM_KIND_COUNT ? kind_names[kind] : "?";
}

#define LN(type, m) offsetof(type, m)

static const struct yw_field lognormal_f[] = {
    {"median", yw_size, LN(struct sim_lognormal, median), 0, 1e12, NULL},
    {"sigma", yw_double, LN(struct sim_lognormal, sigma), 0, 5, NULL},
    {"max", yw_size, LN(struct sim_lognormal, max), 0, 1e12, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field count_f[] = {
    {"mean", yw_double, LN(struct sim_count, mean), 1, 1e6, NULL},
    {"max", yw_u32, LN(struct sim_count, max), 1, 1e6, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field retry_f[] = {
    {"after", yw_duration, LN(struct sim_retry, after_ms), 0, 7 * DAY, NULL},
    {"attempts", yw_u32, LN(struct sim_retry, attempts), 0, 1000, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field burst_f[] = {
    {"share", yw_double, LN(struct sim_burst, share), 0, 1, NULL},
    {"messages", yw_u32, LN(struct sim_burst, messages), 0, 1e6, NULL},
    {"within", yw_duration, LN(struct sim_burst, within_ms), 1000, 7 * DAY,
     NULL},
    {"recipients", yw_map, LN(struct sim_burst, recipients), 0, 0, count_f},
    {"size_spread", yw_double, LN(struct sim_burst, size_spread), 0, 3, NULL},
    {"shared", yw_double, LN(struct sim_burst, shared), 0, 1, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field newsletter_f[] = {
    {"share", yw_double, LN(struct sim_newsletter, share), 0, 1, NULL},
    {"recipients", yw_u32, LN(struct sim_newsletter, recipients), 0, 1e8,
     NULL},
    {"per_message", yw_u32, LN(struct sim_newsletter, per_message), 1, 1e5,
     NULL},
    {"weekday", yw_u32, LN(struct sim_newsletter, weekday), 0, 6, NULL},
    {"hour", yw_u32, LN(struct sim_newsletter, hour), 0, 23, NULL},
    {"invalid_share", yw_double, LN(struct sim_newsletter, invalid_share), 0,
     1, NULL},
    {"per_minute", yw_u32, LN(struct sim_newsletter, per_minute), 1, 1e6,
     NULL},
    {"size_spread", yw_double, LN(struct sim_newsletter, size_spread), 0, 3,
     NULL},
    {"decay", yw_double, LN(struct sim_newsletter, decay), 0, 0.1, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field staff_f[] = {
    {"logins", yw_map, LN(struct sim_staff, logins), 0, 0, count_f},
    {"shared", yw_double, LN(struct sim_staff, shared_share), 0, 1, NULL},
    {"people", yw_map, LN(struct sim_staff, people), 0, 0, count_f},
    {"domains", yw_u32, LN(struct sim_staff, domains), 1, 8, NULL},
    {"home", yw_double, LN(struct sim_staff, home_share), 0, 1, NULL},
    {"phone", yw_double, LN(struct sim_staff, phone_share), 0, 1, NULL},
    {"roles", yw_double, LN(struct sim_staff, role_share), 0, 1, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static const struct yw_field server_f[] = {
    {"share", yw_double, LN(struct sim_server, share), 0, 1, NULL},
    {"replies", yw_double, LN(struct sim_server, replies), 0, 1e5, NULL},
    {"backscatter", yw_double, LN(struct sim_server, backscatter), 0, 1e5,
     NULL},
    {"heavy_share", yw_double, LN(struct sim_server, heavy_share), 0, 1, NULL},
    {"forwarders", yw_double, LN(struct sim_server, forwarders), 0, 100, NULL},
    {"forwards", yw_double, LN(struct sim_server, forwards), 0, 1e5, NULL},
    {"forward_spam", yw_double, LN(struct sim_server, forward_spam), 0, 1,
     NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

#define C(m) offsetof(struct sim_class, m)
static const struct yw_field class_f[] = {
    {"class", yw_str, C(name), SIM_NAME_MAX, 0, NULL},
    {"customers", yw_u32, C(customers), 1, 1e7, NULL},
    {"active_share", yw_double, C(active_share), 0, 1, NULL},
    {"messages_per_day", yw_map, C(per_day), 0, 0, lognormal_f},
    {"recipients", yw_map, C(recipients), 0, 0, count_f},
    {"size", yw_map, C(size), 0, 0, lognormal_f},
    {"diurnal", yw_enum, C(diurnal), 0, 0, diurnal_names},
    {"weekend", yw_double, C(weekend), 0, 10, NULL},
    {"address_book", yw_u32, C(address_book), 1, 1e6, NULL},
    {"new_recipient_share", yw_double, C(new_recipient_share), 0, 1, NULL},
    {"invalid_share", yw_double, C(invalid_share), 0, 1, NULL},
    {"roaming_share", yw_double, C(roaming_share), 0, 1, NULL},
    {"cgnat_share", yw_double, C(cgnat_share), 0, 1, NULL},
    {"alias_share", yw_double, C(alias_share), 0, 1, NULL},
    {"tls_share", yw_double, C(tls_share), 0, 1, NULL},
    {"sasl", yw_bool, C(sasl), 0, 0, NULL},
    {"staff", yw_map, C(staff), 0, 0, staff_f},
    {"server", yw_map, C(server), 0, 0, server_f},
    {"burst", yw_map, C(burst), 0, 0, burst_f},
    {"newsletter", yw_map, C(newsletter), 0, 0, newsletter_f},
    {"retry", yw_map, C(retry), 0, 0, retry_f},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef C

#define I(m) offsetof(struct sim_infection, m)
static const char *const helo_names[] = {"default", "own", "random", "fixed",
                                         "recipient", NULL};
static const char *const tls_names[] = {"default", "own", "other", "none",
                                        NULL};

static const struct yw_field infection_f[] = {
    {"kind", yw_enum, I(kind), 0, 0, kind_names},
    {"class", yw_str, I(class_name), SIM_NAME_MAX, 0, NULL},
    {"accounts", yw_u32, I(accounts), 0, 1e6, NULL},
    {"calibrate", yw_bool, I(calibrate), 0, 0, NULL},
    {"volume_share", yw_double, I(volume_share), 0, 1, NULL},
    {"start_from", yw_duration, I(start_from_ms), 0, 366 * DAY, NULL},
    {"start_to", yw_duration, I(start_to_ms), 0, 366 * DAY, NULL},
    {"duration_min", yw_duration, I(duration_min_ms), 60000, 366 * DAY, NULL},
    {"duration_max", yw_duration, I(duration_max_ms), 60000, 366 * DAY, NULL},
    {"rate_per_hour", yw_double, I(rate_per_hour), 0.01, 1e6, NULL},
    {"recipients", yw_map, I(recipients), 0, 0, count_f},
    {"per_zombie", yw_u32, I(per_zombie), 1, 1e6, NULL},
    {"within", yw_duration, I(within_ms), 60000, 7 * DAY, NULL},
    {"networks", yw_u32, I(networks), 1, 1e6, NULL},
    {"forge_share", yw_double, I(forge_share), 0, 1, NULL},
    {"invalid_share", yw_double, I(invalid_share), 0, 1, NULL},
    {"rejected_share", yw_double, I(rejected_share), 0, 1, NULL},
    {"helo", yw_enum, I(helo), 0, 0, helo_names},
    {"tls", yw_enum, I(tls), 0, 0, tls_names},
    {"size_spread", yw_double, I(size_spread), 0, 3, NULL},
    {"campaigns", yw_u32, I(campaigns), 1, 1e6, NULL},
    {"rotate", yw_duration, I(rotate_ms), 0, 366 * DAY, NULL},
    {"similarity", yw_double, I(similarity), 0, 1, NULL},
    {"retry", yw_map, I(retry), 0, 0, retry_f},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef I

#define S(m) offsetof(struct scenario, m)
static const struct yw_field top_f[] = {
    {"name", yw_str, S(name), sizeof(((struct scenario *)0)->name), 0, NULL},
    {"seed", yw_u32, S(seed), 0, 4294967295.0, NULL},
    {"start", yw_date, S(start_ms), 0, 0, NULL},
    {"days", yw_u32, S(days), 1, 366, NULL},
    {"spam_share", yw_double, S(spam_share), 0, 0.99, NULL},
    {"delivery", yw_bool, S(delivery), 0, 0, NULL},
    {"history", yw_duration, S(history_ms), 0, 60 * DAY, NULL},
    {"map", yw_enum, S(map), 0, 0, map_names},
    {"base", yw_skip, 0, 0, 0, NULL},
    {"customers", yw_skip, 0, 0, 0, NULL},
    {"infections", yw_skip, 0, 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef S

static void
class_defaults(struct sim_class *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "residential");
    c->customers = 1000;
    c->active_share = 0.6;
    c->per_day = (struct sim_lognormal){2, 1.0, 300};
    c->recipients = (struct sim_count){1.5, 50};
    c->size = (struct sim_lognormal){20000, 1.0, 25e6};
    c->weekend = 1.0;
    c->address_book = 40;
    c->new_recipient_share = 0.1;
    c->invalid_share = 0.03;
    c->sasl = true;
    c->alias_share = 0.05;
    c->tls_share = 0.95;
    c->burst = (struct sim_burst){0, 50, 2 * HOUR, {3, 20}, 0.01, 0};
    c->newsletter = (struct sim_newsletter){1, 0, 50, 1, 10, 300, 0.01, 0,
                                            0.005};
    c->staff = (struct sim_staff){{1, 1}, 0, {4, 20}, 1, 0.1, 0.1, 0.1};
    c->server = (struct sim_server){0, 5, 10, 0.1, 1.5, 30, 0.3};
    c->retry = (struct sim_retry){15 * 60000, 8};
}

static void
infection_defaults(struct sim_infection *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->class_name, sizeof(f->class_name), "residential");
    f->accounts = 10;
    f->calibrate = true;
    f->volume_share = 0;
    f->start_to_ms = 6 * DAY;
    f->duration_min_ms = 2 * HOUR;
    f->duration_max_ms = 24 * HOUR;
    f->rate_per_hour = 1000;
    f->recipients = (struct sim_count){10, 50};
    f->per_zombie = 5;
    f->within_ms = HOUR;
    f->networks = 30;
    f->forge_share = -1;
    f->invalid_share = -1;
    f->rejected_share = 0.05;
    f->size_spread = 0.15;
    f->campaigns = 1;
    f->similarity = 0.8;
}

static int
load_list(struct yw *w, struct fy_node *seq, struct scenario *sc, bool classes)
{
    struct fy_node *item;
    void *it = NULL;

    if (!fy_node_is_sequence(seq))
        return yw_fail(w, seq, "expected a list");
    while ((item = fy_node_sequence_iterate(seq, &it)) != NULL) {
        if (classes) {
            if (sc->ncls == SIM_MAX_CLASSES)
                return yw_fail(w, item, "at most %d classes", SIM_MAX_CLASSES);
            class_defaults(&sc->cls[sc->ncls]);
            if (yw_load(w, item, class_f, &sc->cls[sc->ncls]) < 0)
                return -1;
            sc->ncls++;
        } else {
            if (sc->ninf == SIM_MAX_INFECTIONS)
                return yw_fail(w, item, "at most %d infections",
                               SIM_MAX_INFECTIONS);
            infection_defaults(&sc->inf[sc->ninf]);
            if (yw_load(w, item, infection_f, &sc->inf[sc->ninf]) < 0)
                return -1;
            sc->ninf++;
        }
    }
    return 0;
}

static int
check(struct yw *w, struct scenario *sc)
{
    for (uint32_t i = 0; i < sc->ninf; i++) {
        struct sim_infection *f = &sc->inf[i];

        f->cls = -1;
        for (uint32_t c = 0; c < sc->ncls; c++)
            if (strcmp(sc->cls[c].name, f->class_name) == 0)
                f->cls = (int)c;
        if (f->cls < 0)
            return yw_fail(w, NULL, "infection %u: class '%s' is not in "
                                    "customers",
                           i + 1, f->class_name);
        if (f->start_to_ms < f->start_from_ms ||
            f->duration_max_ms < f->duration_min_ms)
            return yw_fail(w, NULL, "infection %u: a range ends before it "
                                    "starts",
                           i + 1);
        if (f->forge_share < 0) {
            /* bots forge; spammers with a stolen password often do not */
            static const double dflt[SIM_KIND_COUNT] = {0.9, 0.7, 0.8, 0.3,
                                                        1.0};

            f->forge_share = dflt[f->kind];
        }
        if (f->helo == SIM_HELO_DEFAULT) {
            /* bots bring their own SMTP engine and make names up; a
             * stolen password is used from the spammer's machine */
            static const int dflt[SIM_KIND_COUNT] = {
                SIM_HELO_RANDOM, SIM_HELO_OWN, SIM_HELO_RANDOM,
                SIM_HELO_FIXED, SIM_HELO_RANDOM};

            f->helo = dflt[f->kind];
        }
        if (f->tls == SIM_TLS_DEFAULT) {
            /* the same engines: plaintext; low-and-slow malware sends
             * through the PC's own mail client */
            static const int dflt[SIM_KIND_COUNT] = {
                SIM_TLS_NONE, SIM_TLS_OWN, SIM_TLS_NONE, SIM_TLS_OTHER,
                SIM_TLS_NONE};

            f->tls = dflt[f->kind];
        }
        if (f->invalid_share < 0) {
            /* harvested and guessed lists; a stolen login's spammer
             * brings a cleaner list */
            static const double dflt[SIM_KIND_COUNT] = {0.3, 0.3, 0.25, 0.15,
                                                        0.3};

            f->invalid_share = dflt[f->kind];
        }
        if (f->start_from_ms >= sc->days * DAY)
            return yw_fail(w, NULL, "infection %u: starts after the end of "
                                    "the %u-day period",
                           i + 1, sc->days);
        /* the default start window (6 days) shrinks to a shorter period */
        if (f->start_to_ms >= sc->days * DAY)
            f->start_to_ms = sc->days * DAY - DAY / 8;
        if (f->start_to_ms < f->start_from_ms)
            f->start_to_ms = f->start_from_ms;
    }
    if (sc->ncls == 0)
        return yw_fail(w, NULL, "no customers");
    return 0;
}

static void
scenario_defaults(struct scenario *sc)
{
    memset(sc, 0, sizeof(*sc));
    snprintf(sc->name, sizeof(sc->name), "unnamed");
    sc->seed = 1;
    sc->start_ms = 1793577600000LL; /* 2026-11-02, a Monday */
    sc->days = 7;
    sc->delivery = true;
}

static int load_file(const char *file, struct scenario *sc, char *err,
                     int depth);

/*
 * base: FILE — a variant of another scenario (a path relative to this
 * file's directory): that one is loaded first, and this file's keys
 * replace its values; a `customers` or `infections` list given here
 * replaces the whole list.
 */
static int
load_base(struct yw *w, struct fy_node *v, struct scenario *sc, int depth)
{
    char path[512];
    const char *slash = strrchr(w->file, '/');
    size_t len;
    const char *name = yw_scalar(v, &len);

    if (name == NULL || len == 0 || len > 255)
        return yw_fail(w, v, "base: expected a file name");
    if (depth >= 4)
        return yw_fail(w, v, "base: nested too deeply");
    if (name[0] == '/' || slash == NULL)
        snprintf(path, sizeof(path), "%.*s", (int)len, name);
    else
        snprintf(path, sizeof(path), "%.*s/%.*s", (int)(slash - w->file),
                 w->file, (int)len, name);
    return load_file(path, sc, w->err, depth + 1);
}

static int
load_file(const char *file, struct scenario *sc, char *err, int depth)
{
    struct yw w = {.file = file, .err = err};
    struct fy_document *doc;
    struct fy_node_pair *pair;
    void *it = NULL;
    int rc = 0;

    if ((doc = yw_parse_file(&w)) == NULL) {
        yw_done(&w, NULL);
        return -1;
    }
    struct fy_node *root = fy_document_root(doc);

    if (root == NULL || !fy_node_is_mapping(root))
        rc = yw_fail(&w, root, "expected a mapping");
    /* the base first, whatever the order of the keys */
    while (rc == 0 && root && (pair = fy_node_mapping_iterate(root, &it)) != NULL) {
        size_t len;
        const char *name = yw_scalar(fy_node_pair_key(pair), &len);

        if (name && len == 4 && memcmp(name, "base", 4) == 0)
            rc = load_base(&w, fy_node_pair_value(pair), sc, depth);
    }
    it = NULL;
    while (rc == 0 && root && (pair = fy_node_mapping_iterate(root, &it)) != NULL) {
        size_t len;
        struct fy_node *k = fy_node_pair_key(pair);
        const char *name = yw_scalar(k, &len);

        if (name && len == 9 && memcmp(name, "customers", 9) == 0) {
            sc->ncls = 0;
            rc = load_list(&w, fy_node_pair_value(pair), sc, true);
        } else if (name && len == 10 && memcmp(name, "infections", 10) == 0) {
            sc->ninf = 0;
            rc = load_list(&w, fy_node_pair_value(pair), sc, false);
        }
    }
    if (rc == 0)
        rc = yw_load(&w, root, top_f, sc);
    if (rc == 0 && depth == 0)
        rc = check(&w, sc);
    yw_done(&w, doc);
    return rc;
}

int
scenario_load(const char *file, struct scenario *sc, char *err)
{
    scenario_defaults(sc);
    if (load_file(file, sc, err, 0) < 0)
        return -1;
    snprintf(sc->file, sizeof(sc->file), "%s", file);
    return 0;
}
