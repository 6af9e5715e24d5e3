/*
 * config.c — load chokepoint.yaml through a declared schema.
 *
 * The YAML is parsed by libfyaml into a document tree; this file walks the
 * tree with tables of known keys (nginx-style directive tables), so unknown
 * keys, wrong types and out-of-range values are refused with the file, line
 * and column of the offending node. libfyaml was chosen over libcyaml for
 * those line:column positions (STYLE.md allows either).
 *
 * Trust: the config file is trusted operator input, but it is still checked
 * completely — a typo must be a clear error, never a silent default.
 */
#include "core/config.h"

#include <errno.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/custmap.h"
#include "core/notice.h"
#include "util/inet.h"
#include "util/parse.h"
#include "util/yamlwalk.h"
#include "util/xalloc.h"

struct loader {
    struct yw yw; /* file and error buffer */
    struct cp_config *cfg;
};

enum ftype {
    FT_STR,
    FT_BOOL,
    FT_DURATION,
    FT_SIZE,
    FT_U32,
    FT_LOG,
    FT_LEVEL,
    FT_ACCT_MODE,
    FT_LISTEN,
    FT_USERS,  /* list of user names or uids */
    FT_NETS,   /* list of CIDR prefixes */
    FT_GROUP,  /* a group name or gid */
    FT_MALFORMED,
};

struct field {
    const char *name;
    enum ftype type;
    size_t off;
    uint64_t min, max;
};

#define OFF(m) offsetof(struct cp_config, m)
#define U64MAX UINT64_MAX

static const struct field daemon_fields[] = {
    {"listen", FT_LISTEN, 0, 0, 0},
    {"admin_socket", FT_STR, OFF(admin_socket), 0, 0},
    {"log", FT_LOG, OFF(log_syslog), 0, 0},
    {"log_level", FT_LEVEL, OFF(log_level), 0, 0},
    {"decision_log", FT_STR, OFF(decision_log), 0, 0},
    {"shadow", FT_BOOL, OFF(shadow), 0, 0},
    {"trusted_users", FT_USERS, 0, 0, 0},
    {"trusted_networks", FT_NETS, 0, 0, 0},
    {"socket_group", FT_GROUP, 0, 0, 0},
    {"user", FT_STR, OFF(run_user), 0, 0},
    {"group", FT_STR, OFF(run_group), 0, 0},
    {NULL, 0, 0, 0, 0},
};
static const struct field protocol_fields[] = {
    {"max_line", FT_SIZE, OFF(proto.max_line), 64, 65536},
    {"max_attributes", FT_U32, OFF(proto.max_attributes), 8,
     POLICY_HARD_MAX_ATTRIBUTES},
    {"max_request", FT_SIZE, OFF(proto.max_request), 256,
     POLICY_HARD_MAX_REQUEST},
    {"idle_timeout", FT_DURATION, OFF(idle_timeout_ms), 1000, 86400000},
    {"max_connections", FT_U32, OFF(max_connections), 1, 1000000},
    {"max_connections_per_peer", FT_U32, OFF(max_connections_per_peer), 1,
     1000000},
    {"max_lifetime", FT_DURATION, OFF(max_lifetime_ms), 1000, 7 * 86400000ULL},
    {"listen_backlog", FT_U32, OFF(listen_backlog), 16, 65535},
    {"malformed", FT_MALFORMED, OFF(malformed_defer), 0, 0},
    {NULL, 0, 0, 0, 0},
};
static const struct field store_fields[] = {
    {"path", FT_STR, OFF(store_path), 0, 0},
    {"checkpoint_interval", FT_DURATION, OFF(checkpoint_ms), 100, 3600000},
    {"max_accounts", FT_U32, OFF(max_accounts), 1000, 100000000},
    {NULL, 0, 0, 0, 0},
};
static const struct field identity_fields[] = {
    {"customer_map", FT_STR, OFF(customer_map), 0, 0},
    {"ipv4_prefix", FT_U32, OFF(ipv4_prefix), 8, 32},
    {"ipv6_prefix", FT_U32, OFF(ipv6_prefix), 16, 128},
    {"default_class", FT_STR, OFF(default_class_name), 0, 0},
    {"unauthenticated_class", FT_STR, OFF(unauth_class_name), 0, 0},
    {NULL, 0, 0, 0, 0},
};
static const struct field accounting_fields[] = {
    {"mode", FT_ACCT_MODE, OFF(acct_mode), 0, 0},
    {"reservation_timeout", FT_DURATION, OFF(reservation_timeout_ms), 1000,
     86400000},
    {"max_pending", FT_U32, OFF(max_pending), 16, 10000000},
    {NULL, 0, 0, 0, 0},
};

static int load_classes(struct loader *ld, struct fy_node *key,
                        struct fy_node *map);

static int load_detection(struct loader *ld, struct fy_node *key,
                          struct fy_node *map);




/* ---- errors and node positions: util/yamlwalk.c ---- */

_Static_assert(CP_ERR_MAX == YW_ERR_MAX, "one error buffer size");

#define fail(ld, at, ...) yw_fail(&(ld)->yw, (at), __VA_ARGS__)
#define scalar(n, len) yw_scalar((n), (len))

static bool
scalar_eq(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* ---- detection: loaded with util/yamlwalk tables ---- */

static const char *const signal_names[] = {
    "forged_sender", "owned_sender", "new_recipient", "known_recipient",
    "rate_jump",     "networks",     "bad_recipient",   "remote_reject",
    "delivered",     "dnsbl",         "helo_new",        "helo_forged",
    "odd_hour",      "tls_new",      "uniform_size",    "campaign",
    "stale_recipient", NULL};
static const char *const block_actions[] = {"reject", "hold", NULL};

const char *
cp_signal_name(enum cp_signal s)
{
    return s < CP_SIG_COUNT ? signal_names[s] : "?";
}

/* offsets within the weight array (the "weights" map is loaded there) */
#define DW(i, name) {name, yw_double, (i) * sizeof(double), -100, 100, NULL}
static const struct yw_field weight_fields[] = {
    DW(CP_SIG_FORGED_SENDER, "forged_sender"),
    DW(CP_SIG_OWNED_SENDER, "owned_sender"),
    DW(CP_SIG_NEW_RECIPIENT, "new_recipient"),
    DW(CP_SIG_KNOWN_RECIPIENT, "known_recipient"),
    DW(CP_SIG_RATE_JUMP, "rate_jump"),
    DW(CP_SIG_NETWORKS, "networks"),
    DW(CP_SIG_BAD_RECIPIENT, "bad_recipient"),
    DW(CP_SIG_REMOTE_REJECT, "remote_reject"),
    DW(CP_SIG_DELIVERED, "delivered"),
    DW(CP_SIG_DNSBL, "dnsbl"),
    DW(CP_SIG_HELO_NEW, "helo_new"),
    DW(CP_SIG_HELO_FORGED, "helo_forged"),
    DW(CP_SIG_ODD_HOUR, "odd_hour"),
    DW(CP_SIG_TLS_NEW, "tls_new"),
    DW(CP_SIG_UNIFORM_SIZE, "uniform_size"),
    DW(CP_SIG_CAMPAIGN, "campaign"),
    DW(CP_SIG_STALE_RECIPIENT, "stale_recipient"),
    {NULL, 0, 0, 0, 0, NULL},
};
#undef DW
_Static_assert(CP_SIG_COUNT == 17, "weight_fields lists every signal");

#define DO(m) offsetof(struct cp_detection, m)
static const struct yw_field detection_fields[] = {
    {"enabled", yw_bool, DO(enabled), 0, 0, NULL},
    {"shadow", yw_bool, DO(shadow), 0, 0, NULL},
    {"half_life", yw_duration, DO(half_life_ms), 60000, 30 * 86400000.0,
     NULL},
    {"floor", yw_double, DO(floor), -1000, 0, NULL},
    {"watch_at", yw_double, DO(watch_at), 0.1, 1000, NULL},
    {"throttle_at", yw_double, DO(throttle_at), 0.1, 1000, NULL},
    {"block_at", yw_double, DO(block_at), 0.1, 1000, NULL},
    {"watch_factor", yw_double, DO(watch_factor), 0.01, 1, NULL},
    {"probation", yw_duration, DO(probation_ms), 0, 366 * 86400000.0, NULL},
    {"block_action", yw_enum, DO(block_action), 0, 0, block_actions},
    {"help_url", yw_str, DO(help_url), sizeof(((struct cp_detection *)0)->help_url), 0, NULL},
    {"networks", yw_u32, DO(networks), 2, 8 /* CP_EV_FRESH */, NULL},
    {"rate_factor", yw_double, DO(rate_factor), 1, 1000, NULL},
    {"learning", yw_u32, DO(learning), 0, 65535, NULL},
    {"weights", yw_map, DO(weight), 0, 0, weight_fields},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef DO

#define SZ(type, m) sizeof(((struct type *)0)->m)
#define DV(m) offsetof(struct cp_delivery, m)
static const struct yw_field delivery_fields[] = {
    {"log", yw_str, DV(log), SZ(cp_delivery, log), 0, NULL},
    {"poll", yw_duration, DV(poll_ms), 100, 60000, NULL},
    {"max_queue_ids", yw_u32, DV(max_queue_ids), 0, 10000000, NULL},
    {"max_recipients", yw_u32, DV(max_recipients), 0, 1u << 30, NULL},
    {"queue_id_ttl", yw_duration, DV(queue_id_ttl_ms), 60000,
     30 * 86400000.0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef DV

#define DB(m) offsetof(struct cp_dnsbl, m)
static const struct yw_field dnsbl_fields[] = {
    {"zones", yw_str, DB(zones_text), SZ(cp_dnsbl, zones_text), 0, NULL},
    {"ignore", yw_str, DB(ignore_text), SZ(cp_dnsbl, ignore_text), 0, NULL},
    {"servers", yw_str, DB(servers), SZ(cp_dnsbl, servers), 0, NULL},
    {"timeout", yw_duration, DB(timeout_ms), 100, 30000, NULL},
    {"cache_ttl", yw_duration, DB(cache_ttl_ms), 60000, 7 * 86400000.0,
     NULL},
    {"max_cache", yw_u32, DB(max_cache), 16, 10000000, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef DB

#define NO(m) offsetof(struct cp_notify, m)
static const struct yw_field notify_fields[] = {
    {"smtp", yw_str, NO(smtp), SZ(cp_notify, smtp), 0, NULL},
    {"sendmail", yw_str, NO(sendmail), SZ(cp_notify, sendmail), 0, NULL},
    {"from", yw_str, NO(from), SZ(cp_notify, from), 0, NULL},
    {"abuse_to", yw_str, NO(abuse_to), SZ(cp_notify, abuse_to), 0, NULL},
    {"customer", yw_bool, NO(customer), 0, 0, NULL},
    {"customer_template", yw_str, NO(customer_template),
     SZ(cp_notify, customer_template), 0, NULL},
    {"webhook", yw_str, NO(webhook), SZ(cp_notify, webhook), 0, NULL},
    {"timeout", yw_duration, NO(timeout_ms), 100, 300000, NULL},
    {"attempts", yw_u32, NO(attempts), 1, 100, NULL},
    {"retry", yw_duration, NO(retry_ms), 100, 86400000.0, NULL},
    {"max_per_hour", yw_u32, NO(max_per_hour), 0, 1000000, NULL},
    {"reporting_mta", yw_str, NO(reporting_mta), SZ(cp_notify, reporting_mta),
     0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef NO

#define CO(m) offsetof(struct cp_containment, m)
static const struct yw_field containment_fields[] = {
    {"hold_command", yw_str, CO(hold_command), SZ(cp_containment, hold_command),
     0, NULL},
    {"release_command", yw_str, CO(release_command),
     SZ(cp_containment, release_command), 0, NULL},
    {"self_release_max", yw_u32, CO(self_release_max), 0, 1000, NULL},
    {"self_release_period", yw_duration, CO(self_release_period_ms), 3600000,
     3660 * 86400000.0, NULL},
    {"suspect_transport", yw_str, CO(suspect_transport),
     SZ(cp_containment, suspect_transport), 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef CO

#define CT(m) offsetof(struct cp_content, m)
static const struct yw_field content_fields[] = {
    {"milter", yw_str, CT(milter), SZ(cp_content, milter), 0, NULL},
    {"min_words", yw_u32, CT(min_words), 3, 100000, NULL},
    {"repeat", yw_u32, CT(repeat), 1, 1000, NULL},
    {"min_bad", yw_u32, CT(min_bad), 0, 65535, NULL},
    {"bad_share", yw_double, CT(bad_share), 0, 1, NULL},
    /* at most 150: the accounts sketch (64 bits) saturates near 200 */
    {"campaign_accounts", yw_u32, CT(campaign_accounts), 2, 150, NULL},
    {"refuse_accounts", yw_u32, CT(refuse_accounts), 0, 150, NULL},
    {"window", yw_duration, CT(window_ms), 60000, 7 * 86400000.0, NULL},
    {"max_fingerprints", yw_u32, CT(max_fingerprints), 64, 1u << 28, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef CT
#undef SZ

static void
detection_defaults(struct cp_detection *d)
{
    static const double w[CP_SIG_COUNT] = {1.0, -0.5, 0.1,  -0.2, 0.5,
                                           2.0, 2.0,  1.5, -0.25, 2.5,
                                           0.5, 2.0,  1.0, 0.5, 6.0, 3.0,
                                           0.2};

    memset(d, 0, sizeof(*d));
    d->enabled = true;
    d->half_life_ms = 6 * 3600000ULL;
    d->floor = -5;
    d->watch_at = 4;
    d->throttle_at = 8;
    d->block_at = 15;
    d->watch_factor = 0.5;
    d->probation_ms = 7 * 86400000ULL;
    d->block_action = CP_BLOCK_REJECT;
    d->networks = 4;
    d->rate_factor = 4;
    d->learning = 50;
    memcpy(d->weight, w, sizeof(w));
}

static int
load_detection(struct loader *ld, struct fy_node *key, struct fy_node *map)
{
    struct cp_detection *d = &ld->cfg->det;

    if (map == NULL || !fy_node_is_mapping(map))
        return fail(ld, key, "detection: expected a mapping");
    if (yw_load(&ld->yw, map, detection_fields, d) < 0)
        return -1;
    if (!(d->watch_at <= d->throttle_at && d->throttle_at <= d->block_at))
        return fail(ld, key, "detection: expected watch_at <= throttle_at "
                             "<= block_at");
    return 0;
}

/* ---- scalar fields ---- */

static int
parse_bool(struct loader *ld, struct fy_node *v, bool *out)
{
    size_t len;
    const char *s = scalar(v, &len);

    if (s && (scalar_eq(s, len, "true") || scalar_eq(s, len, "yes") ||
              scalar_eq(s, len, "on"))) {
        *out = true;
        return 0;
    }
    if (s && (scalar_eq(s, len, "false") || scalar_eq(s, len, "no") ||
              scalar_eq(s, len, "off"))) {
        *out = false;
        return 0;
    }
    return fail(ld, v, "expected true or false");
}

static int
parse_enum(struct loader *ld, struct fy_node *v, const char *const *names,
           int *out)
{
    size_t len;
    const char *s = scalar(v, &len);
    int i;

    for (i = 0; s && names[i]; i++) {
        if (scalar_eq(s, len, names[i])) {
            *out = i;
            return 0;
        }
    }
    char list[256];
    size_t off = 0;

    list[0] = '\0';
    for (i = 0; names[i] && off < sizeof(list); i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                i ? ", " : "", names[i]);
    return fail(ld, v, "expected one of %s", list);
}

static int
parse_number(struct loader *ld, struct fy_node *v, const struct field *f,
             uint64_t *out)
{
    size_t len;
    const char *s = scalar(v, &len);
    bool ok = false;

    if (s && f->type == FT_DURATION)
        ok = parse_duration_ms(s, len, out);
    else if (s && f->type == FT_SIZE)
        ok = parse_size(s, len, out);
    else if (s)
        ok = parse_u64(s, len, out);
    if (!ok)
        return fail(ld, v, "%s: expected %s", f->name,
                    f->type == FT_DURATION ? "a duration like 30s, 5m, 1h"
                    : f->type == FT_SIZE   ? "a size like 4096, 16k, 20M"
                                           : "a non-negative integer");
    if (*out < f->min || *out > f->max)
        return fail(ld, v, "%s: value out of range", f->name);
    return 0;
}

/* "unix:/PATH" or "inet:ADDRESS:PORT" into l; NULL, or why not. */
static const char *
listen_spec(const char *s, size_t len, struct cp_listen *l)
{
    const char *colon;
    uint64_t port;

    memset(l, 0, sizeof(*l));
    if (s && len > 5 && memcmp(s, "unix:", 5) == 0 && s[5] == '/') {
        if (len - 5 >= 108) /* sizeof(sun_path) */
            return "unix socket path too long";
        l->kind = CP_LISTEN_UNIX;
        l->path = xmemdup0(s + 5, len - 5);
    } else if (s && len > 5 && memcmp(s, "inet:", 5) == 0 &&
               (colon = memrchr(s + 5, ':', len - 5)) != NULL) {
        const char *h = s + 5;
        size_t hlen = (size_t)(colon - h);

        if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
            h++;
            hlen -= 2;
        }
        if (hlen == 0 ||
            !parse_u64(colon + 1, len - (size_t)(colon + 1 - s), &port) ||
            port == 0 || port > 65535)
            return "expected inet:ADDRESS:PORT";
        l->kind = CP_LISTEN_INET;
        l->host = xmemdup0(h, hlen);
        l->port = (uint16_t)port;
    } else {
        return "expected unix:/PATH or inet:ADDRESS:PORT";
    }
    l->spec = xmemdup0(s, len);
    return NULL;
}

static int
parse_listen_one(struct loader *ld, struct fy_node *v, struct cp_listen *l)
{
    size_t len;
    const char *s = scalar(v, &len);
    const char *why = listen_spec(s, len, l);

    return why == NULL ? 0 : fail(ld, v, "%s", why);
}

static int
parse_listen(struct loader *ld, struct fy_node *v)
{
    struct cp_config *cfg = ld->cfg;
    struct fy_node *item;
    void *it = NULL;
    size_t i;

    if (!fy_node_is_sequence(v))
        return fail(ld, v, "listen: expected a list");
    for (i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i].spec);
        free(cfg->listen[i].path);
        free(cfg->listen[i].host);
    }
    cfg->nlisten = 0;
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        if (cfg->nlisten >= 32)
            return fail(ld, item, "listen: at most 32 listeners");
        cfg->listen = xreallocarray(cfg->listen, cfg->nlisten + 1,
                                    sizeof(*cfg->listen));
        if (parse_listen_one(ld, item, &cfg->listen[cfg->nlisten++]) < 0)
            return -1;
    }
    return 0;
}

/* A user or group, by name or number. */
static int
parse_id(struct loader *ld, struct fy_node *v, const char *what, bool group,
         unsigned *id)
{
    char buf[256];
    size_t len;
    const char *s = scalar(v, &len);
    uint64_t n;
    struct passwd *pw;
    struct group *gr;

    if (s == NULL || len == 0 || len >= sizeof(buf) || memchr(s, 0, len))
        return fail(ld, v, "%s: expected a %s name or number", what,
                    group ? "group" : "user");
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (parse_u64(s, len, &n)) {
        if (n >= UINT32_MAX)
            return fail(ld, v, "%s: %s out of range", what, buf);
        *id = (unsigned)n;
    } else if (group) {
        if ((gr = getgrnam(buf)) == NULL)
            return fail(ld, v, "%s: no such group '%s'", what, buf);
        *id = gr->gr_gid;
    } else {
        if ((pw = getpwnam(buf)) == NULL)
            return fail(ld, v, "%s: no such user '%s'", what, buf);
        *id = pw->pw_uid;
    }
    return 0;
}

static int
parse_users(struct loader *ld, struct fy_node *v)
{
    struct cp_config *cfg = ld->cfg;
    struct fy_node *item;
    void *it = NULL;
    unsigned id;

    if (!fy_node_is_sequence(v))
        return fail(ld, v, "trusted_users: expected a list");
    cfg->ntrusted_uids = 0;
    cfg->trusted_users_set = true;
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        if (cfg->ntrusted_uids >= CP_MAX_TRUSTED)
            return fail(ld, item, "trusted_users: at most %d",
                        CP_MAX_TRUSTED);
        if (parse_id(ld, item, "trusted_users", false, &id) < 0)
            return -1;
        cfg->trusted_uids[cfg->ntrusted_uids++] = (uid_t)id;
    }
    return 0;
}

static int
parse_nets(struct loader *ld, struct fy_node *v)
{
    struct cp_config *cfg = ld->cfg;
    struct fy_node *item;
    void *it = NULL;

    if (!fy_node_is_sequence(v))
        return fail(ld, v, "trusted_networks: expected a list");
    cfg->ntrusted_nets = 0;
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        struct cp_prefix *p = &cfg->trusted_nets[cfg->ntrusted_nets];
        size_t len;
        const char *s = scalar(item, &len);

        if (cfg->ntrusted_nets >= CP_MAX_TRUSTED)
            return fail(ld, item, "trusted_networks: at most %d",
                        CP_MAX_TRUSTED);
        if (s == NULL || !inet_parse_prefix(s, len, &p->addr, &p->plen))
            return fail(ld, item, "trusted_networks: expected an address or "
                                  "ADDRESS/PREFIX");
        inet_mask(&p->addr, p->plen);
        cfg->ntrusted_nets++;
    }
    return 0;
}

static int
set_field(struct loader *ld, const struct field *f, struct fy_node *key,
          struct fy_node *v)
{
    static const char *const logs[] = {"stderr", "syslog", NULL};
    static const char *const levels[] = {"debug", "info", "warning", "error",
                                         NULL};
    static const char *const modes[] = {"two-phase", "rcpt", NULL};
    char *base = (char *)ld->cfg;
    uint64_t n;
    size_t len;
    const char *s;
    int e = 0;

    switch (f->type) {
    case FT_STR:
        if ((s = scalar(v, &len)) == NULL || len == 0 || memchr(s, 0, len))
            return fail(ld, v ? v : key, "%s: expected a string", f->name);
        free(*(char **)(base + f->off));
        *(char **)(base + f->off) = xmemdup0(s, len);
        return 0;
    case FT_BOOL:
        return parse_bool(ld, v, (bool *)(base + f->off));
    case FT_DURATION:
    case FT_SIZE:
        if (parse_number(ld, v, f, &n) < 0)
            return -1;
        if (f->type == FT_SIZE)
            *(size_t *)(base + f->off) = (size_t)n;
        else
            *(uint64_t *)(base + f->off) = n;
        return 0;
    case FT_U32:
        if (parse_number(ld, v, f, &n) < 0)
            return -1;
        if (f->off == OFF(proto.max_attributes))
            *(size_t *)(base + f->off) = (size_t)n;
        else if (f->off == OFF(ipv4_prefix) || f->off == OFF(ipv6_prefix))
            *(unsigned *)(base + f->off) = (unsigned)n;
        else
            *(uint32_t *)(base + f->off) = (uint32_t)n;
        return 0;
    case FT_LOG:
        if (parse_enum(ld, v, logs, &e) < 0)
            return -1;
        ld->cfg->log_syslog = (e == 1);
        return 0;
    case FT_LEVEL:
        if (parse_enum(ld, v, levels, &e) < 0)
            return -1;
        ld->cfg->log_level = (enum msg_level)e;
        return 0;
    case FT_ACCT_MODE:
        if (parse_enum(ld, v, modes, &e) < 0)
            return -1;
        ld->cfg->acct_mode = (enum cp_acct_mode)e;
        return 0;
    case FT_LISTEN:
        return parse_listen(ld, v);
    case FT_USERS:
        return parse_users(ld, v);
    case FT_NETS:
        return parse_nets(ld, v);
    case FT_MALFORMED: {
        static const char *const answers[] = {"dunno", "defer", NULL};

        if (parse_enum(ld, v, answers, &e) < 0)
            return -1;
        ld->cfg->malformed_defer = e == 1;
        return 0;
    }
    case FT_GROUP: {
        unsigned id;

        if (parse_id(ld, v, f->name, true, &id) < 0)
            return -1;
        ld->cfg->socket_gid = (gid_t)id;
        ld->cfg->has_socket_gid = true;
        return 0;
    }
    }
    return fail(ld, key, "internal: unknown field type");
}

static int
load_section(struct loader *ld, const struct field *fields,
             struct fy_node *key, struct fy_node *map)
{
    struct fy_node_pair *pair;
    void *it = NULL;
    size_t klen, ksec;
    const char *sec = scalar(key, &ksec);

    if (map == NULL ||
        (fy_node_is_scalar(map) && scalar(map, &klen) && klen == 0))
        return 0; /* "daemon:" with nothing under it */
    if (!fy_node_is_mapping(map))
        return fail(ld, key, "%.*s: expected a mapping", (int)ksec, sec);
    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *k = fy_node_pair_key(pair);
        struct fy_node *v = fy_node_pair_value(pair);
        const char *name = scalar(k, &klen);
        const struct field *f;

        for (f = fields; name && f->name; f++)
            if (scalar_eq(name, klen, f->name))
                break;
        if (name == NULL || f->name == NULL)
            return fail(ld, k, "unknown key '%.*s' in section %.*s",
                        name ? (int)klen : 1, name ? name : "?", (int)ksec,
                        sec);
        if (v == NULL)
            return fail(ld, k, "%s: missing value", f->name);
        if (set_field(ld, f, k, v) < 0)
            return -1;
    }
    return 0;
}

/* ---- classes and rules ---- */

static const char *const metric_names[] = {"messages", "recipients", "bytes",
                                           "domains", NULL};
static const char *const action_names[] = {"dunno", "defer", "reject", "hold",
                                           "warn",  "prepend", NULL};

const char *
cp_metric_name(enum cp_metric m)
{
    return m < CP_METRIC_COUNT ? metric_names[m] : "?";
}

const char *
cp_action_name(enum cp_action a)
{
    if (a == CP_ACT_FILTER)
        return "filter"; /* not in action_names: no rule may use it */
    return a < CP_ACT_FILTER ? action_names[a] : "?";
}

static const char *const rule_keys[] = {"metric", "window", "max", "action",
                                        "shadow", NULL};
static const char *const class_keys[] = {"limits", "action", "shadow",
                                         "detection", NULL};

/* A class's `detection:` — false, true, or a mapping of per-class
 * settings: { enabled, shadow, block_action, weights }. */
static const struct yw_field class_detection_fields[] = {
    {"enabled", yw_bool, offsetof(struct cp_class, detect), 0, 0, NULL},
    {"shadow", yw_bool, offsetof(struct cp_class, det_shadow), 0, 0, NULL},
    {"block_action", yw_enum, offsetof(struct cp_class, block_action), 0, 0,
     block_actions},
    {"weights", yw_map, offsetof(struct cp_class, weight), 0, 0, weight_fields},
    {NULL, 0, 0, 0, 0, NULL},
};

static int
load_class_detection(struct loader *ld, struct fy_node *v, struct cp_class *c)
{
    if (fy_node_is_mapping(v))
        return yw_load(&ld->yw, v, class_detection_fields, c);
    return parse_bool(ld, v, &c->detect);
}

/* Refuse keys of mapping `m` that are not in `allowed`. */
static int
check_keys(struct loader *ld, struct fy_node *m, const char *const *allowed,
           const char *what)
{
    struct fy_node_pair *pair;
    void *it = NULL;

    while ((pair = fy_node_mapping_iterate(m, &it)) != NULL) {
        struct fy_node *k = fy_node_pair_key(pair);
        size_t len, i;
        const char *name = scalar(k, &len);

        for (i = 0; name && allowed[i]; i++)
            if (scalar_eq(name, len, allowed[i]))
                break;
        if (name == NULL || allowed[i] == NULL)
            return fail(ld, k, "unknown key '%.*s' in %s",
                        name ? (int)len : 1, name ? name : "?", what);
    }
    return 0;
}

static void
rule_set_name(struct cp_rule *r)
{
    char w[24];

    format_duration(w, sizeof(w), r->window_ms);
    snprintf(r->name, sizeof(r->name), "%s/%s", cp_metric_name(r->metric), w);
}

const char *
cp_rule_parse_name(struct cp_rule *r, const char *s, size_t len)
{
    const char *slash = memchr(s, '/', len);
    int i;

    if (slash == NULL)
        return "expected METRIC/WINDOW, e.g. messages/1h";
    for (i = 0; metric_names[i]; i++)
        if (scalar_eq(s, (size_t)(slash - s), metric_names[i]))
            break;
    if (metric_names[i] == NULL)
        return "unknown metric (messages, recipients, bytes, domains)";
    r->metric = (enum cp_metric)i;
    if (!parse_duration_ms(slash + 1, len - (size_t)(slash + 1 - s),
                           &r->window_ms))
        return "bad window: expected a duration like 1m, 1h, 1d";
    if (r->window_ms < 1000 || r->window_ms > 366ULL * 86400000)
        return "window must be between 1s and 366d";
    rule_set_name(r);
    return NULL;
}

static int
load_rule(struct loader *ld, struct fy_node *m, struct cp_rule *r,
          enum cp_action dflt_action, bool dflt_shadow)
{
    static const struct field f_window = {"window", FT_DURATION, 0, 1000,
                                          366ULL * 86400000};
    static const struct field f_max = {"max", FT_SIZE, 0, 1, 1ULL << 50};
    struct fy_node *v;
    int e;

    memset(r, 0, sizeof(*r));
    r->action = dflt_action;
    r->shadow = dflt_shadow;
    if (!fy_node_is_mapping(m))
        return fail(ld, m, "a limit is a mapping {metric, window, max}");
    if (check_keys(ld, m, rule_keys, "limit") < 0)
        return -1;
    if ((v = fy_node_mapping_lookup_by_string(m, "metric", 6)) == NULL)
        return fail(ld, m, "limit without metric");
    if (parse_enum(ld, v, metric_names, &e) < 0)
        return -1;
    r->metric = (enum cp_metric)e;
    if ((v = fy_node_mapping_lookup_by_string(m, "window", 6)) == NULL)
        return fail(ld, m, "limit without window");
    if (parse_number(ld, v, &f_window, &r->window_ms) < 0)
        return -1;
    if ((v = fy_node_mapping_lookup_by_string(m, "max", 3)) == NULL)
        return fail(ld, m, "limit without max");
    if (parse_number(ld, v, &f_max, &r->max) < 0)
        return -1;
    if ((v = fy_node_mapping_lookup_by_string(m, "action", 6)) != NULL) {
        if (parse_enum(ld, v, action_names + 1, &e) < 0)
            return -1;
        r->action = (enum cp_action)(e + 1);
    }
    if ((v = fy_node_mapping_lookup_by_string(m, "shadow", 6)) != NULL &&
        parse_bool(ld, v, &r->shadow) < 0)
        return -1;
    rule_set_name(r);
    return 0;
}

static int
load_class(struct loader *ld, struct fy_node *key, struct fy_node *body,
           struct cp_class *c)
{
    enum cp_action action = CP_ACT_DEFER;
    bool shadow = false;
    struct fy_node *v, *item;
    void *it = NULL;
    int e;

    if (body == NULL || !fy_node_is_mapping(body))
        return fail(ld, key, "class: expected a mapping with 'limits'");
    if (check_keys(ld, body, class_keys, "class") < 0)
        return -1;
    if ((v = fy_node_mapping_lookup_by_string(body, "action", 6)) != NULL) {
        if (parse_enum(ld, v, action_names + 1, &e) < 0)
            return -1;
        action = (enum cp_action)(e + 1);
    }
    if ((v = fy_node_mapping_lookup_by_string(body, "shadow", 6)) != NULL &&
        parse_bool(ld, v, &shadow) < 0)
        return -1;
    c->detect = true;
    c->block_action = -1;
    for (int i = 0; i < CP_SIG_COUNT; i++)
        c->weight[i] = NAN;
    if ((v = fy_node_mapping_lookup_by_string(body, "detection", 9)) != NULL &&
        load_class_detection(ld, v, c) < 0)
        return -1;
    v = fy_node_mapping_lookup_by_string(body, "limits", 6);
    if (v == NULL || !fy_node_is_sequence(v))
        return fail(ld, key, "class: 'limits' must be a list");
    it = NULL;
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        struct cp_rule *r = &c->rules.rule[c->rules.n];

        if (c->rules.n >= CP_MAX_RULES)
            return fail(ld, key, "class: at most %d limits", CP_MAX_RULES);
        if (load_rule(ld, item, r, action, shadow) < 0)
            return -1;
        for (size_t i = 0; i < c->rules.n; i++)
            if (strcmp(c->rules.rule[i].name, r->name) == 0)
                return fail(ld, fy_node_mapping_lookup_by_string(item,
                                                                 "window", 6),
                            "class %s: %s given twice", c->name, r->name);
        c->rules.n++;
    }
    return 0;
}

static int
load_classes(struct loader *ld, struct fy_node *key, struct fy_node *map)
{
    struct cp_config *cfg = ld->cfg;
    struct fy_node_pair *pair;
    void *it = NULL;

    if (map == NULL || !fy_node_is_mapping(map))
        return fail(ld, key, "classes: expected a mapping of class names");
    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        size_t len;
        struct fy_node *k = fy_node_pair_key(pair);
        const char *name = scalar(k, &len);
        struct cp_class *c;

        if (name == NULL || len == 0 || len > 64)
            return fail(ld, k, "bad class name");
        if (cfg->nclasses >= 256)
            return fail(ld, k, "at most 256 classes");
        cfg->classes = xreallocarray(cfg->classes, cfg->nclasses + 1,
                                     sizeof(*cfg->classes));
        c = &cfg->classes[cfg->nclasses++];
        memset(c, 0, sizeof(*c));
        c->name = xmemdup0(name, len);
        if (load_class(ld, k, fy_node_pair_value(pair), c) < 0)
            return -1;
    }
    return 0;
}

/* ---- slots ---- */

/* Give every rule of `rs` a counter slot; -1 if out of slots. */
static int
assign_slots(struct cp_config *cfg, struct cp_ruleset *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        struct cp_rule *r = &rs->rule[i];
        size_t s;

        for (s = 0; s < cfg->nslots; s++)
            if (cfg->slots[s].metric == r->metric &&
                cfg->slots[s].window_ms == r->window_ms)
                break;
        if (s == cfg->nslots) {
            if (cfg->nslots >= CP_MAX_SLOTS)
                return -1;
            cfg->slots[s].metric = r->metric;
            cfg->slots[s].window_ms = r->window_ms;
            snprintf(cfg->slots[s].name, sizeof(cfg->slots[s].name), "%s",
                     r->name);
            cfg->nslots++;
        }
        r->slot = (uint8_t)s;
    }
    return 0;
}

/* A whole file, NUL-terminated, at most max bytes; NULL with err set. */
static char *
read_small_file(const char *path, size_t max, size_t *len, char *err)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    size_t n;

    if (fp == NULL) {
        snprintf(err, CP_ERR_MAX, "%s: cannot open: %s", path,
                 strerror(errno));
        return NULL;
    }
    buf = xmalloc(max + 2);
    n = fread(buf, 1, max + 1, fp);
    fclose(fp);
    if (n > max) {
        snprintf(err, CP_ERR_MAX, "%s: longer than %zu bytes", path, max);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Split "a, b c" at commas and blanks; calls fn per item; -1 on its error. */
static int
each_item(struct loader *ld, const char *text, const char *what,
          int (*fn)(struct loader *ld, const char *item, size_t len))
{
    const char *p = text;

    while (*p) {
        size_t n;

        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        n = strcspn(p, ", \t");
        if (n == 0)
            break;
        if (fn(ld, p, n) < 0)
            return fail(ld, NULL, "%s: bad item '%.*s'", what, (int)n, p);
        p += n;
    }
    return 0;
}

static int
add_zone(struct loader *ld, const char *s, size_t n)
{
    struct cp_dnsbl *b = &ld->cfg->dnsbl;

    if (b->nzones == CP_DNSBL_MAX_ZONES || n >= sizeof(b->zone[0]) - 1)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return -1;
    snprintf(b->zone[b->nzones++], sizeof(b->zone[0]), "%.*s", (int)n, s);
    return 0;
}

static int
add_ignore(struct loader *ld, const char *s, size_t n)
{
    struct cp_dnsbl *b = &ld->cfg->dnsbl;
    struct inet_addr a;

    if (b->nignore == CP_DNSBL_MAX_IGNORE || !inet_parse(s, n, &a) ||
        a.family != 4)
        return -1;
    b->ignore[b->nignore++] = (uint32_t)a.bytes[0] << 24 |
                              (uint32_t)a.bytes[1] << 16 |
                              (uint32_t)a.bytes[2] << 8 | a.bytes[3];
    return 0;
}

static int
finish_dnsbl(struct loader *ld)
{
    struct cp_dnsbl *b = &ld->cfg->dnsbl;

    return each_item(ld, b->zones_text, "dnsbl.zones", add_zone) < 0 ||
                   each_item(ld, b->ignore_text, "dnsbl.ignore",
                             add_ignore) < 0
               ? -1
               : 0;
}

/* notify: — what must hold together; the customer template is read and
 * checked here, so a bad template is refused like any bad config. */
static int
finish_notify(struct loader *ld)
{
    struct cp_notify *n = &ld->cfg->notify;
    bool any = n->customer || n->abuse_to[0] || n->webhook[0];
    char *text;
    size_t len;

    if (n->webhook[0] && strncmp(n->webhook, "http://", 7) != 0 &&
        strncmp(n->webhook, "https://", 8) != 0)
        return fail(ld, NULL, "notify.webhook: expected an http:// or "
                              "https:// URL");
    if (n->smtp[0] && strncmp(n->smtp, "smtp://", 7) != 0 &&
        strncmp(n->smtp, "smtps://", 8) != 0)
        return fail(ld, NULL, "notify.smtp: expected smtp://HOST[:PORT] "
                              "or smtps://HOST[:PORT]");
    if (n->from[0] == '\0') {
        if (n->abuse_to[0] || n->webhook[0])
            return fail(ld, NULL, "notify.from: needed to send notifications");
        return 0; /* notifications off */
    }
    if (any && (strchr(n->from, '@') == NULL ||
                strpbrk(n->from, " \t<>\"(),;") != NULL))
        return fail(ld, NULL, "notify.from: expected a plain address "
                              "(local@domain, no display name)");
    if (n->customer_template[0] == '\0')
        return 0;
    text = read_small_file(n->customer_template, NOTICE_MAX_TEMPLATE, &len,
                           ld->yw.err);
    if (text == NULL)
        return -1;
    if (cp_notice_template_check(text, len, ld->yw.err + 0) < 0) {
        char why[CP_ERR_MAX];

        snprintf(why, sizeof(why), "%s", ld->yw.err);
        snprintf(ld->yw.err, CP_ERR_MAX, "%s: %s", n->customer_template, why);
        free(text);
        return -1;
    }
    ld->cfg->notify_template = text;
    return 0;
}

/* containment.suspect_transport: "transport:[nexthop]" as Postfix's
 * FILTER action takes it; it goes into replies, so no blanks or controls. */
static int
finish_containment(struct loader *ld)
{
    const char *t = ld->cfg->contain.suspect_transport, *colon;

    if (t[0] == '\0')
        return 0;
    colon = strchr(t, ':');
    if (colon == NULL || colon == t)
        return fail(ld, NULL, "containment.suspect_transport: expected "
                              "transport:nexthop (a master.cf service, e.g. "
                              "smtp-suspect:), got '%s'",
                    t);
    for (const char *p = t; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return fail(ld, NULL, "containment.suspect_transport: no blanks "
                                  "or control characters allowed");
    return 0;
}

/* Who may connect: root (and the daemon's own uid, trust.c); postfix when
 * daemon.trusted_users is not given (and Postfix is installed). */
static void
add_uid(struct cp_config *cfg, uid_t uid)
{
    for (size_t i = 0; i < cfg->ntrusted_uids; i++)
        if (cfg->trusted_uids[i] == uid)
            return;
    cfg->trusted_uids[cfg->ntrusted_uids++] = uid;
}

static void
finish_trust(struct cp_config *cfg)
{
    struct passwd *pw;

    if (!cfg->trusted_users_set && (pw = getpwnam("postfix")) != NULL)
        add_uid(cfg, pw->pw_uid);
    add_uid(cfg, 0);
    if (cfg->max_connections_per_peer == 0)
        cfg->max_connections_per_peer =
            cfg->max_connections - cfg->max_connections / 4;
    if (cfg->max_connections_per_peer > cfg->max_connections)
        cfg->max_connections_per_peer = cfg->max_connections;
}

/* content.milter: a listener like daemon.listen's */
static int
finish_content(struct loader *ld)
{
    struct cp_content *c = &ld->cfg->content;
    const char *why;

    if (c->refuse_accounts != 0 && c->refuse_accounts < c->campaign_accounts)
        return fail(ld, NULL, "content.refuse_accounts (%u) below "
                              "content.campaign_accounts (%u)",
                    c->refuse_accounts, c->campaign_accounts);
    if (c->milter[0] == '\0')
        return 0;
    why = listen_spec(c->milter, strlen(c->milter), &ld->cfg->milter);
    if (why != NULL)
        return fail(ld, NULL, "content.milter: %s", why);
    return 0;
}

static int
finish(struct loader *ld)
{
    struct cp_config *cfg = ld->cfg;
    size_t i;

    if (cfg->nlisten == 0)
        return fail(ld, NULL, "daemon.listen: at least one listener needed");
    finish_trust(cfg);
    if (cfg->nclasses == 0)
        return fail(ld, NULL, "classes: at least one class needed");
    cfg->default_class = cp_config_class(cfg, cfg->default_class_name);
    if (cfg->default_class == NULL)
        return fail(ld, NULL, "identity.default_class '%s' is not a class",
                    cfg->default_class_name);
    cfg->unauth_class = cp_config_class(cfg, cfg->unauth_class_name);
    if (cfg->unauth_class == NULL)
        return fail(ld, NULL,
                    "identity.unauthenticated_class '%s' is not a class",
                    cfg->unauth_class_name);
    for (i = 0; i < cfg->nclasses; i++) {
        struct cp_class *c = &cfg->classes[i];

        c->det = cfg->det;
        for (int s = 0; s < CP_SIG_COUNT; s++)
            if (!isnan(c->weight[s]))
                c->det.weight[s] = c->weight[s];
    }
    for (i = 0; i < cfg->nclasses; i++)
        if (assign_slots(cfg, &cfg->classes[i].rules) < 0)
            return fail(ld, NULL,
                        "more than %d distinct metric/window counters",
                        CP_MAX_SLOTS);
    if (finish_notify(ld) < 0 || finish_dnsbl(ld) < 0 ||
        finish_containment(ld) < 0 || finish_content(ld) < 0)
        return -1;
    if (cfg->customer_map && cp_custmap_load(cfg, ld->yw.err) < 0)
        return -1;
    for (i = 0; i < cfg->ncustomers; i++)
        if (assign_slots(cfg, &cfg->customers[i]->rules) < 0)
            return fail(ld, NULL,
                        "%s:%d: more than %d distinct metric/window counters",
                        cfg->customer_map, cfg->customers[i]->line,
                        CP_MAX_SLOTS);
    return 0;
}

/* ---- top level ---- */

static void
set_defaults(struct cp_config *cfg)
{
    cfg->admin_socket = xstrdup("/run/chokepoint/admin.sock");
    cfg->log_level = MSG_INFO;
    cfg->proto.max_line = 2048;
    cfg->proto.max_attributes = 64;
    cfg->proto.max_request = 16384;
    cfg->idle_timeout_ms = 300000;
    cfg->max_connections = 4096;
    cfg->max_lifetime_ms = 3600000;
    cfg->listen_backlog = 4096;
    cfg->malformed_defer = true;
    inet_parse_prefix("127.0.0.0/8", 11, &cfg->trusted_nets[0].addr,
                      &cfg->trusted_nets[0].plen);
    inet_parse_prefix("::1", 3, &cfg->trusted_nets[1].addr,
                      &cfg->trusted_nets[1].plen);
    cfg->ntrusted_nets = 2;
    {
        struct group *gr = getgrnam("postfix");

        if (gr != NULL) {
            cfg->socket_gid = gr->gr_gid;
            cfg->has_socket_gid = true;
        }
    }
    cfg->store_path = xstrdup("/var/lib/chokepoint/state.db");
    cfg->checkpoint_ms = 5000;
    cfg->max_accounts = 2000000;
    cfg->ipv4_prefix = 32;
    cfg->ipv6_prefix = 64;
    cfg->default_class_name = xstrdup("residential");
    cfg->unauth_class_name = xstrdup("unauthenticated");
    cfg->acct_mode = CP_ACCT_TWO_PHASE;
    cfg->reservation_timeout_ms = 600000;
    cfg->max_pending = 100000;
    detection_defaults(&cfg->det);
    cfg->dnsbl.timeout_ms = 2000;
    cfg->dnsbl.cache_ttl_ms = 3600000;
    cfg->dnsbl.max_cache = 100000;
    cfg->delivery.poll_ms = 1000;
    cfg->delivery.max_queue_ids = 200000;
    cfg->delivery.max_recipients = 1u << 22; /* 16 MiB */
    cfg->delivery.queue_id_ttl_ms = 5 * 86400000ULL;
    snprintf(cfg->notify.sendmail, sizeof(cfg->notify.sendmail), "%s",
             "/usr/sbin/sendmail -i");
    cfg->notify.customer = true;
    cfg->notify.timeout_ms = 10000;
    cfg->notify.attempts = 5;
    cfg->notify.retry_ms = 30000;
    cfg->notify.max_per_hour = 100;
    cfg->content.min_words = 20;
    cfg->content.repeat = 2;
    cfg->content.min_bad = 5;
    cfg->content.bad_share = 0.03;
    cfg->content.campaign_accounts = 3;
    cfg->content.refuse_accounts = 10;
    cfg->content.window_ms = 6 * 3600000ULL;
    cfg->content.max_fingerprints = 1u << 20;
    cfg->contain.self_release_max = 1;
    cfg->contain.self_release_period_ms = 30 * 86400000ULL;
}

static const struct section {
    const char *name;
    const struct field *fields;
    const struct yw_field *yw; /* loaded with util/yamlwalk instead */
    size_t off;                /* of the struct yw fills, in cp_config */
} sections[] = {
    {"daemon", daemon_fields, NULL, 0},
    {"protocol", protocol_fields, NULL, 0},
    {"store", store_fields, NULL, 0},
    {"identity", identity_fields, NULL, 0},
    {"accounting", accounting_fields, NULL, 0},
    {"classes", NULL, NULL, 0},
    {"detection", NULL, NULL, 0},
    {"delivery", NULL, delivery_fields, offsetof(struct cp_config, delivery)},
    {"notify", NULL, notify_fields, offsetof(struct cp_config, notify)},
    {"dnsbl", NULL, dnsbl_fields, offsetof(struct cp_config, dnsbl)},
    {"containment", NULL, containment_fields,
     offsetof(struct cp_config, contain)},
    {"content", NULL, content_fields, offsetof(struct cp_config, content)},
};

static int
load_root(struct loader *ld, struct fy_node *root, bool map_override,
          const char *map)
{
    struct fy_node_pair *pair;
    void *it = NULL;

    if (root == NULL || !fy_node_is_mapping(root))
        return fail(ld, root, "expected a mapping of sections (daemon, "
                              "protocol, store, identity, accounting, "
                              "classes)");
    while ((pair = fy_node_mapping_iterate(root, &it)) != NULL) {
        struct fy_node *k = fy_node_pair_key(pair);
        size_t len, i;
        const char *name = scalar(k, &len);

        for (i = 0; name && i < sizeof(sections) / sizeof(sections[0]); i++)
            if (scalar_eq(name, len, sections[i].name))
                break;
        if (name == NULL || i == sizeof(sections) / sizeof(sections[0]))
            return fail(ld, k, "unknown section '%.*s'",
                        name ? (int)len : 1, name ? name : "?");
        if (sections[i].yw != NULL) {
            struct fy_node *v = fy_node_pair_value(pair);

            if (v == NULL || !fy_node_is_mapping(v))
                return fail(ld, k, "%s: expected a mapping", sections[i].name);
            if (yw_load(&ld->yw, v, sections[i].yw,
                        (char *)ld->cfg + sections[i].off) < 0)
                return -1;
        } else if (sections[i].fields == NULL) {
            if ((strcmp(sections[i].name, "classes") == 0
                     ? load_classes(ld, k, fy_node_pair_value(pair))
                     : load_detection(ld, k, fy_node_pair_value(pair))) < 0)
                return -1;
        } else if (load_section(ld, sections[i].fields, k,
                                fy_node_pair_value(pair)) < 0) {
            return -1;
        }
    }
    if (map_override) {
        free(ld->cfg->customer_map);
        ld->cfg->customer_map = map ? xstrdup(map) : NULL;
    }
    return finish(ld);
}

static struct cp_config *
config_load(const char *file, bool map_override, const char *map, char *err)
{
    struct cp_config *cfg = xcalloc(1, sizeof(*cfg));
    struct loader ld = {{.file = file, .err = err}, cfg};
    struct fy_document *doc;
    int rc;

    err[0] = '\0';
    cfg->file = xstrdup(file);
    set_defaults(cfg);
    doc = yw_parse_file(&ld.yw);
    if (doc == NULL) {
        yw_done(&ld.yw, NULL);
        cp_config_free(cfg);
        return NULL;
    }
    rc = load_root(&ld, fy_document_root(doc), map_override, map);
    yw_done(&ld.yw, doc);
    if (rc < 0) {
        cp_config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct cp_config *
cp_config_load(const char *file, char *err)
{
    return config_load(file, false, NULL, err);
}

struct cp_config *
cp_config_load_map(const char *file, const char *map, char *err)
{
    return config_load(file, true, map, err);
}

void
cp_config_free(struct cp_config *cfg)
{
    size_t i;

    if (cfg == NULL)
        return;
    cp_custmap_free(cfg);
    for (i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i].spec);
        free(cfg->listen[i].path);
        free(cfg->listen[i].host);
    }
    free(cfg->listen);
    free(cfg->milter.spec);
    free(cfg->milter.path);
    free(cfg->milter.host);
    for (i = 0; i < cfg->nclasses; i++)
        free(cfg->classes[i].name);
    free(cfg->classes);
    free(cfg->file);
    free(cfg->admin_socket);
    free(cfg->decision_log);
    free(cfg->store_path);
    free(cfg->customer_map);
    free(cfg->default_class_name);
    free(cfg->unauth_class_name);
    free(cfg->notify_template);
    free(cfg->run_user);
    free(cfg->run_group);
    free(cfg);
}

bool
cp_config_state_shadow(const struct cp_config *cfg, const struct cp_class *k)
{
    return cfg->shadow || cfg->det.shadow || (k != NULL && k->det_shadow);
}

const struct cp_class *
cp_config_class(const struct cp_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nclasses; i++)
        if (strcmp(cfg->classes[i].name, name) == 0)
            return &cfg->classes[i];
    return NULL;
}
