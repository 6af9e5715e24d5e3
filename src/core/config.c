/*
 * config.c — load chokepoint.yaml through a declared schema.
 *
 * The YAML is parsed by libfyaml into a document tree and walked by
 * util/yamlwalk.c with the tables below, one per section (nginx-style
 * directive tables): unknown keys, wrong types and out-of-range values are
 * refused with "file:line:column: section.key: reason". What the built-in
 * field types do not cover (listeners, users, networks, the classes and
 * their limits) has a handler of its own in the same tables, so every
 * section follows the same rules: booleans, empty sections and error
 * messages alike. libfyaml was chosen over libcyaml for those line:column
 * positions (the project's style guide allows either).
 *
 * The walk fills fields; what spans several keys or sections (a class
 * named by identity, notify.from needed by abuse_to) is checked after it,
 * in finish(), pointing at the key concerned where the file gives it.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/custmap.h"
#include "core/notice.h"
#include "util/inet.h"
#include "util/parse.h"
#include "util/tlspem.h"
#include "util/yamlwalk.h"
#include "util/xalloc.h"

struct loader {
    struct yw yw; /* file, error buffer, key path */
    struct cp_config *cfg;
    struct fy_node *root; /* for finish(): where a key was written */
};

_Static_assert(CP_ERR_MAX == YW_ERR_MAX, "one error buffer size");
/* yw_enum stores an int, yw_u32 a uint32_t */
_Static_assert(sizeof(enum msg_level) == sizeof(int) &&
                   sizeof(enum cp_acct_mode) == sizeof(int) &&
                   sizeof(enum cp_metric) == sizeof(int),
               "enums loaded by yw_enum are ints");
_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "prefix lengths");

/* A check after the walk failed on `key` ("notify.from"). */
#define fail(ld, key, ...) yw_fail_key(&(ld)->yw, (ld)->root, key, __VA_ARGS__)

static bool
scalar_eq(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* ---- handlers: what the built-in field types do not cover ---- */

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

/* daemon.listen: a list of listener specs */
static int
set_listen(struct yw *w, struct fy_node *v, void *base,
           const struct yw_field *f)
{
    struct cp_config *cfg = base;
    struct fy_node *item;
    void *it = NULL;

    if (!fy_node_is_sequence(v))
        return yw_fail(w, v, "expected a list");
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        size_t len;
        const char *s = yw_scalar(item, &len), *why;

        if (cfg->nlisten >= 32)
            return yw_fail(w, item, "at most 32 listeners");
        cfg->listen = xreallocarray(cfg->listen, cfg->nlisten + 1,
                                    sizeof(*cfg->listen));
        why = listen_spec(s, len, &cfg->listen[cfg->nlisten++]);
        if (why != NULL)
            return yw_fail(w, item, "%s", why);
    }
    return 0;
}

/* A user or group, by name or number. */
static int
parse_id(struct yw *w, struct fy_node *v, bool group, unsigned *id)
{
    char buf[256];
    size_t len;
    const char *s = yw_scalar(v, &len);
    uint64_t n;
    struct passwd *pw;
    struct group *gr;

    if (s == NULL || len == 0 || len >= sizeof(buf) || memchr(s, 0, len))
        return yw_fail(w, v, "expected a %s name or number",
                       group ? "group" : "user");
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (parse_u64(s, len, &n)) {
        if (n >= UINT32_MAX)
            return yw_fail(w, v, "%s out of range", buf);
        *id = (unsigned)n;
    } else if (group) {
        if ((gr = getgrnam(buf)) == NULL)
            return yw_fail(w, v, "no such group '%s'", buf);
        *id = gr->gr_gid;
    } else {
        if ((pw = getpwnam(buf)) == NULL)
            return yw_fail(w, v, "no such user '%s'", buf);
        *id = pw->pw_uid;
    }
    return 0;
}

/* daemon.trusted_users: replaces the default (postfix) */
static int
set_users(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    struct cp_config *cfg = base;
    struct fy_node *item;
    void *it = NULL;
    unsigned id;

    if (!fy_node_is_sequence(v))
        return yw_fail(w, v, "expected a list");
    cfg->ntrusted_uids = 0;
    cfg->trusted_users_set = true;
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        if (cfg->ntrusted_uids >= CP_MAX_TRUSTED)
            return yw_fail(w, item, "at most %d", CP_MAX_TRUSTED);
        if (parse_id(w, item, false, &id) < 0)
            return -1;
        cfg->trusted_uids[cfg->ntrusted_uids++] = (uid_t)id;
    }
    return 0;
}

/* daemon.trusted_networks: replaces the default (loopback) */
static int
set_nets(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    struct cp_config *cfg = base;
    struct fy_node *item;
    void *it = NULL;

    if (!fy_node_is_sequence(v))
        return yw_fail(w, v, "expected a list");
    cfg->ntrusted_nets = 0;
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        struct cp_prefix *p = &cfg->trusted_nets[cfg->ntrusted_nets];
        size_t len;
        const char *s = yw_scalar(item, &len);

        if (cfg->ntrusted_nets >= CP_MAX_TRUSTED)
            return yw_fail(w, item, "at most %d", CP_MAX_TRUSTED);
        if (s == NULL || !inet_parse_prefix(s, len, &p->addr, &p->plen))
            return yw_fail(w, item, "expected an address or ADDRESS/PREFIX");
        inet_mask(&p->addr, p->plen);
        cfg->ntrusted_nets++;
    }
    return 0;
}

/* A group by name or number (struct cp_group at f->off). */
static int
set_group(struct yw *w, struct fy_node *v, void *base, const struct yw_field *f)
{
    struct cp_group *g = (struct cp_group *)((char *)base + f->off);
    unsigned id;

    if (parse_id(w, v, true, &id) < 0)
        return -1;
    g->gid = (gid_t)id;
    g->set = true;
    return 0;
}

/* One of two names (aux), stored as a bool: true for the second. */
static int
set_choice(struct yw *w, struct fy_node *v, void *base,
           const struct yw_field *f)
{
    int i = yw_enum_index(w, v, f->aux);

    if (i < 0)
        return -1;
    *(bool *)((char *)base + f->off) = i == 1;
    return 0;
}

/* protocol's limits are size_t: a size (max_line, max_request) ... */
static int
set_size_bytes(struct yw *w, struct fy_node *v, void *base,
               const struct yw_field *f)
{
    struct yw_field g = *f;
    uint64_t n;

    g.off = 0;
    if (yw_bytes(w, v, &n, &g) < 0)
        return -1;
    *(size_t *)((char *)base + f->off) = (size_t)n; /* max fits */
    return 0;
}

/* ... or a count (max_attributes). */
static int
set_size_count(struct yw *w, struct fy_node *v, void *base,
               const struct yw_field *f)
{
    struct yw_field g = *f;
    uint32_t n;

    g.off = 0;
    if (yw_u32(w, v, &n, &g) < 0)
        return -1;
    *(size_t *)((char *)base + f->off) = n;
    return 0;
}

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

/* A limit's action, or a class's for its limits: not dunno, not filter. */
static int
set_action(struct yw *w, struct fy_node *v, void *base,
           const struct yw_field *f)
{
    int i = yw_enum_index(w, v, action_names + 1);

    if (i < 0)
        return -1;
    *(enum cp_action *)((char *)base + f->off) = (enum cp_action)(i + 1);
    return 0;
}

/* ---- daemon, protocol, store, identity, accounting ---- */

#define OFF(m) offsetof(struct cp_config, m)
static const char *const log_names[] = {"stderr", "syslog", NULL};
static const char *const level_names[] = {"debug", "info", "warning",
                                          "error", NULL};
static const char *const mode_names[] = {"two-phase", "rcpt", NULL};
static const char *const malformed_names[] = {"dunno", "defer", NULL};

static const struct yw_field daemon_fields[] = {
    {"listen", set_listen, 0, 0, 0, NULL},
    {"admin_socket", yw_strdup, OFF(admin_socket), 0, 0, NULL},
    {"log", set_choice, OFF(log_syslog), 0, 0, log_names},
    {"log_level", yw_enum, OFF(log_level), 0, 0, level_names},
    {"decision_log", yw_strdup, OFF(decision_log), 0, 0, NULL},
    {"shadow", yw_bool, OFF(shadow), 0, 0, NULL},
    {"trusted_users", set_users, 0, 0, 0, NULL},
    {"trusted_networks", set_nets, 0, 0, 0, NULL},
    {"socket_group", set_group, OFF(socket_group), 0, 0, NULL},
    {"admin_read_group", set_group, OFF(admin_read_group), 0, 0, NULL},
    {"user", yw_strdup, OFF(run_user), 0, 0, NULL},
    {"group", yw_strdup, OFF(run_group), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field protocol_fields[] = {
    {"max_line", set_size_bytes, OFF(proto.max_line), 64, 65536, NULL},
    {"max_attributes", set_size_count, OFF(proto.max_attributes), 8,
     POLICY_HARD_MAX_ATTRIBUTES, NULL},
    {"max_request", set_size_bytes, OFF(proto.max_request), 256,
     POLICY_HARD_MAX_REQUEST, NULL},
    {"idle_timeout", yw_duration, OFF(idle_timeout_ms), 1000, 86400000, NULL},
    {"max_connections", yw_u32, OFF(max_connections), 1, 1000000, NULL},
    {"max_connections_per_peer", yw_u32, OFF(max_connections_per_peer), 1,
     1000000, NULL},
    {"max_lifetime", yw_duration, OFF(max_lifetime_ms), 1000,
     7 * 86400000.0, NULL},
    {"listen_backlog", yw_u32, OFF(listen_backlog), 16, 65535, NULL},
    {"malformed", set_choice, OFF(malformed_defer), 0, 0, malformed_names},
    {NULL, 0, 0, 0, 0, NULL},
};
static const char *const backend_names[] = {"sqlite", "redis", NULL};

/* store.redis: the Redis server of fleet mode (util/redisurl.h) */
static int
set_redis_url(struct yw *w, struct fy_node *v, void *base,
              const struct yw_field *f)
{
    struct cp_config *cfg = base;
    size_t len;
    const char *s = yw_scalar(v, &len), *why;

    if (s == NULL)
        return yw_fail(w, v, "expected a URL: redis://HOST:PORT");
    if ((why = redis_url_parse(s, len, &cfg->redis)) != NULL)
        return yw_fail(w, v, "%s", why);
    free(cfg->redis_text);
    cfg->redis_text = xmemdup0(s, len);
    return 0;
}

/* A list of redis://HOST:PORT (Cluster seeds, Sentinels). */
static int
set_redis_list(struct yw *w, struct fy_node *v, struct redis_url *out,
               size_t *n, const char *what)
{
    struct fy_node *item;
    void *it = NULL;

    if (!fy_node_is_sequence(v))
        return yw_fail(w, v, "expected a list of redis://HOST:PORT %s", what);
    while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
        size_t len;
        const char *s = yw_scalar(item, &len), *why;
        struct redis_url *u;

        if (*n >= CP_REDIS_MAX_SEEDS)
            return yw_fail(w, item, "at most %d %s", CP_REDIS_MAX_SEEDS,
                           what);
        u = &out[*n];
        if (s == NULL)
            return yw_fail(w, item, "expected redis://HOST:PORT");
        if ((why = redis_url_parse(s, len, u)) != NULL)
            return yw_fail(w, item, "%s", why);
        if (u->path[0] != '\0' || u->db != 0)
            return yw_fail(w, item, "expected redis://HOST:PORT (no unix "
                                    "socket, no database number)");
        (*n)++;
    }
    if (*n == 0)
        return yw_fail(w, v, "at least one of the %s", what);
    return 0;
}

/* store.redis_cluster: seed nodes of a Redis Cluster */
static int
set_redis_cluster(struct yw *w, struct fy_node *v, void *base,
                  const struct yw_field *f)
{
    struct cp_config *cfg = base;

    return set_redis_list(w, v, cfg->redis_seeds, &cfg->nredis_seeds,
                          "seeds");
}

/* store.redis_sentinels: the Sentinels that know the primary */
static int
set_redis_sentinels(struct yw *w, struct fy_node *v, void *base,
                    const struct yw_field *f)
{
    struct cp_config *cfg = base;

    return set_redis_list(w, v, cfg->redis_sentinels, &cfg->nredis_sentinels,
                          "sentinels");
}

static const struct yw_field store_fields[] = {
    {"backend", set_choice, OFF(store_redis), 0, 0, backend_names},
    {"redis", set_redis_url, 0, 0, 0, NULL},
    {"redis_cluster", set_redis_cluster, 0, 0, 0, NULL},
    {"redis_sentinels", set_redis_sentinels, 0, 0, 0, NULL},
    {"redis_master", yw_str, OFF(redis_master),
     sizeof(((struct cp_config *)0)->redis_master), 0, NULL},
    {"redis_password_file", yw_strdup, OFF(redis_password_file), 0, 0, NULL},
    {"redis_sentinel_password_file", yw_strdup,
     OFF(redis_sentinel_password_file), 0, 0, NULL},
    {"redis_tls_ca", yw_strdup, OFF(redis_tls_ca), 0, 0, NULL},
    {"redis_tls_cert", yw_strdup, OFF(redis_tls_cert), 0, 0, NULL},
    {"redis_tls_key", yw_strdup, OFF(redis_tls_key), 0, 0, NULL},
    {"redis_tls_name", yw_str, OFF(redis_tls_name),
     sizeof(((struct cp_config *)0)->redis_tls_name), 0, NULL},
    {"redis_connect_timeout", yw_duration, OFF(redis_connect_timeout_ms), 10,
     60000, NULL},
    {"redis_timeout", yw_duration, OFF(redis_timeout_ms), 1, 10000, NULL},
    {"fleet_host", yw_u32, OFF(fleet_host), 1, 8, NULL},
    {"path", yw_strdup, OFF(store_path), 0, 0, NULL},
    {"checkpoint_interval", yw_duration, OFF(checkpoint_ms), 100, 3600000,
     NULL},
    {"max_accounts", yw_u32, OFF(max_accounts), 1000, 100000000, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field identity_fields[] = {
    {"customer_map", yw_strdup, OFF(customer_map), 0, 0, NULL},
    {"ipv4_prefix", yw_u32, OFF(ipv4_prefix), 8, 32, NULL},
    {"ipv6_prefix", yw_u32, OFF(ipv6_prefix), 16, 128, NULL},
    {"default_class", yw_strdup, OFF(default_class_name), 0, 0, NULL},
    {"unauthenticated_class", yw_strdup, OFF(unauth_class_name), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
static const struct yw_field accounting_fields[] = {
    {"mode", yw_enum, OFF(acct_mode), 0, 0, mode_names},
    {"reservation_timeout", yw_duration, OFF(reservation_timeout_ms), 1000,
     86400000, NULL},
    {"max_pending", yw_u32, OFF(max_pending), 16, 10000000, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

/* ---- detection ---- */

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
    {"help_url", yw_str, DO(help_url), sizeof(((struct cp_detection *)0)->help_url),
     0, NULL},
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
    {"release_template", yw_str, NO(release_template),
     SZ(cp_notify, release_template), 0, NULL},
    {"webhook", yw_str, NO(webhook), SZ(cp_notify, webhook), 0, NULL},
    {"webhook_secret", yw_str, NO(webhook_secret), SZ(cp_notify, webhook_secret),
     0, NULL},
    {"webhook_secret_file", yw_str, NO(webhook_secret_file),
     SZ(cp_notify, webhook_secret_file), 0, NULL},
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


/* ---- classes and their limits ---- */

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

#define RO(m) offsetof(struct cp_rule, m)
static const struct yw_field rule_fields[] = {
    {"metric", yw_enum, RO(metric), 0, 0, metric_names},
    {"window", yw_duration, RO(window_ms), 1000, 366 * 86400000.0, NULL},
    {"max", yw_bytes, RO(max), 1, 1ULL << 50, NULL},
    {"action", set_action, RO(action), 0, 0, NULL},
    {"shadow", yw_bool, RO(shadow), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef RO

/* What a class's mapping fills: the class, and the defaults of its
 * limits, which apply whatever the order of the keys. */
struct class_body {
    struct cp_class c;
    enum cp_action action;
    bool shadow;
    struct fy_node *limits; /* loaded once action and shadow are known */
};

/* A class's `detection:` mapping: { enabled, shadow, block_action,
 * weights } of its own. */
static const struct yw_field class_detection_fields[] = {
    {"enabled", yw_bool, offsetof(struct cp_class, detect), 0, 0, NULL},
    {"shadow", yw_bool, offsetof(struct cp_class, det_shadow), 0, 0, NULL},
    {"block_action", yw_enum, offsetof(struct cp_class, block_action), 0, 0,
     block_actions},
    {"weights", yw_map, offsetof(struct cp_class, weight), 0, 0,
     weight_fields},
    {NULL, 0, 0, 0, 0, NULL},
};

/* A class's `detection:` — a boolean (enabled), or a mapping. */
static int
set_class_detection(struct yw *w, struct fy_node *v, void *base,
                    const struct yw_field *f)
{
    struct class_body *b = base;

    if (yw_is_empty(v) || fy_node_is_mapping(v))
        return yw_load(w, v, class_detection_fields, &b->c);
    return yw_bool(w, v, base, f);
}

#define CB(m) offsetof(struct class_body, m)
static const struct yw_field class_fields[] = {
    {"limits", yw_node, CB(limits), 0, 0, NULL},
    {"action", set_action, CB(action), 0, 0, NULL},
    {"shadow", yw_bool, CB(shadow), 0, 0, NULL},
    {"detection", set_class_detection, CB(c.detect), 0, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef CB

static int
load_rule(struct yw *w, struct fy_node *m, struct cp_rule *r,
          const struct class_body *b)
{
    const char *missing;

    memset(r, 0, sizeof(*r));
    r->metric = CP_METRIC_COUNT; /* 0 and this: not given */
    r->action = b->action;
    r->shadow = b->shadow;
    if (!fy_node_is_mapping(m))
        return yw_fail(w, m, "a limit is a mapping {metric, window, max}");
    if (yw_load(w, m, rule_fields, r) < 0)
        return -1;
    missing = r->metric == CP_METRIC_COUNT ? "metric"
              : r->window_ms == 0          ? "window"
              : r->max == 0                ? "max"
                                           : NULL;
    if (missing != NULL)
        return yw_fail(w, m, "limit without %s", missing);
    rule_set_name(r);
    return 0;
}

static int
load_limits(struct yw *w, struct class_body *b)
{
    struct cp_ruleset *rs = &b->c.rules;
    struct fy_node *item;
    void *it = NULL;

    if (!fy_node_is_sequence(b->limits))
        return yw_fail(w, b->limits, "expected a list");
    while ((item = fy_node_sequence_iterate(b->limits, &it)) != NULL) {
        struct cp_rule *r = &rs->rule[rs->n];

        if (rs->n >= CP_MAX_RULES)
            return yw_fail(w, item, "at most %d limits", CP_MAX_RULES);
        if (load_rule(w, item, r, b) < 0)
            return -1;
        for (size_t i = 0; i < rs->n; i++)
            if (strcmp(rs->rule[i].name, r->name) == 0)
                return yw_fail(w, yw_find_key(item, "window"),
                               "%s given twice", r->name);
        rs->n++;
    }
    return 0;
}

static int
load_class(struct yw *w, struct fy_node *v, struct class_body *b)
{
    struct yw_mark m;
    int rc;

    memset(b, 0, sizeof(*b));
    b->action = CP_ACT_DEFER;
    b->c.detect = true;
    b->c.block_action = -1;
    for (int i = 0; i < CP_SIG_COUNT; i++)
        b->c.weight[i] = NAN;
    if (yw_load(w, v, class_fields, b) < 0)
        return -1;
    if (b->limits == NULL)
        return yw_fail(w, NULL, "'limits' must be a list");
    m = yw_push(w, NULL, "limits", 6);
    rc = load_limits(w, b);
    yw_pop(w, m);
    return rc;
}

/* classes: a mapping of class names, each a mapping with its limits */
static int
set_classes(struct yw *w, struct fy_node *v, void *base,
            const struct yw_field *f)
{
    struct cp_config *cfg = base;
    struct fy_node_pair *pair;
    void *it = NULL;

    if (yw_is_empty(v))
        return 0;
    if (!fy_node_is_mapping(v))
        return yw_fail(w, v, "expected a mapping of class names");
    while ((pair = fy_node_mapping_iterate(v, &it)) != NULL) {
        struct fy_node *k = fy_node_pair_key(pair);
        size_t len;
        const char *name = yw_scalar(k, &len);
        struct class_body b;
        struct yw_mark m;
        int rc;

        if (name == NULL || len == 0 || len > 64)
            return yw_fail(w, k, "bad class name");
        if (cfg->nclasses >= 256)
            return yw_fail(w, k, "at most 256 classes");
        m = yw_push(w, k, name, len);
        rc = load_class(w, fy_node_pair_value(pair), &b);
        yw_pop(w, m);
        if (rc < 0)
            return -1;
        b.c.name = xmemdup0(name, len);
        cfg->classes = xreallocarray(cfg->classes, cfg->nclasses + 1,
                                     sizeof(*cfg->classes));
        cfg->classes[cfg->nclasses++] = b.c;
    }
    return 0;
}

/* ---- the file: one table of sections ---- */

static const struct yw_field top_fields[] = {
    {"daemon", yw_map, 0, 0, 0, daemon_fields},
    {"protocol", yw_map, 0, 0, 0, protocol_fields},
    {"store", yw_map, 0, 0, 0, store_fields},
    {"identity", yw_map, 0, 0, 0, identity_fields},
    {"accounting", yw_map, 0, 0, 0, accounting_fields},
    {"classes", set_classes, 0, 0, 0, NULL},
    {"detection", yw_map, OFF(det), 0, 0, detection_fields},
    {"delivery", yw_map, OFF(delivery), 0, 0, delivery_fields},
    {"notify", yw_map, OFF(notify), 0, 0, notify_fields},
    {"dnsbl", yw_map, OFF(dnsbl), 0, 0, dnsbl_fields},
    {"containment", yw_map, OFF(contain), 0, 0, containment_fields},
    {"content", yw_map, OFF(content), 0, 0, content_fields},
    {NULL, 0, 0, 0, 0, NULL},
};
#undef OFF

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
            return fail(ld, what, "bad item '%.*s'", (int)n, p);
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

/* A notice template (notify.`key`, the file `path`): read and checked, so
 * a bad one is refused like any bad config. 0 with *out (NULL: none). */
static int
load_template(struct loader *ld, const char *key, const char *path,
              char **out)
{
    char err[CP_ERR_MAX];
    char *text;
    size_t len;

    *out = NULL;
    if (path[0] == '\0')
        return 0;
    text = read_small_file(path, NOTICE_MAX_TEMPLATE, &len, err);
    if (text == NULL)
        return fail(ld, key, "%s", err);
    if (cp_notice_template_check(text, len, err) < 0) {
        free(text);
        return fail(ld, key, "%s: %s", path, err);
    }
    *out = text;
    return 0;
}

void
cp_config_redis_where(const struct cp_config *cfg, char *out, size_t n)
{
    char at[REDIS_URL_MAX_HOST + 16];

    if (cfg->nredis_sentinels > 0) {
        redis_url_where(&cfg->redis_sentinels[0], at, sizeof(at));
        snprintf(out, n, "primary '%s' of %zu Sentinels (%s%s)",
                 cfg->redis_master, cfg->nredis_sentinels, at,
                 cfg->nredis_sentinels > 1 ? ", ..." : "");
    } else if (cfg->nredis_seeds > 0) {
        redis_url_where(&cfg->redis_seeds[0], at, sizeof(at));
        snprintf(out, n, "a Cluster with %zu seeds (%s%s)",
                 cfg->nredis_seeds, at, cfg->nredis_seeds > 1 ? ", ..." : "");
    } else {
        redis_url_where(&cfg->redis, out, n);
    }
    if (cfg->redis_tls && strlen(out) + 10 < n)
        memcpy(out + strlen(out), " over TLS", 10);
}

#define REDIS_PASSWORD_MAX 255

/*
 * A file that holds a secret (a password, a key): refused if every user
 * may read or write it; read whole (at most max bytes). NULL after fail().
 */
static char *
read_secret_file(struct loader *ld, const char *key, const char *path,
                 size_t max, size_t *len)
{
    char err[CP_ERR_MAX], *text;
    struct stat st;

    if (stat(path, &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH))) {
        fail(ld, key, "%s: readable or writable by every user (chmod o-rw; "
                      "owner root, group of daemon.user, mode 0640)",
             path);
        return NULL;
    }
    if ((text = read_small_file(path, max, len, err)) == NULL)
        fail(ld, key, "%s", err);
    return text;
}

#define TLS_PEM_MAX (1024 * 1024)
#define TLS_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

/* The context the store will make of them, made and dropped: OpenSSL may
 * refuse what parses (a key too weak for its security level). */
static int
tls_ctx_check(struct loader *ld, const char *ca)
{
    struct cp_config *cfg = ld->cfg;
    const char *which = "ca";
    char err[CP_ERR_MAX];
    SSL_CTX *ctx = tls_pem_ctx(
        cfg->redis_tls_ca_pem, cfg->redis_tls_ca_len, cfg->redis_tls_cert_pem,
        cfg->redis_tls_cert_len, cfg->redis_tls_key_pem,
        cfg->redis_tls_key_len, &which, err, sizeof(err));

    if (ctx != NULL) {
        SSL_CTX_free(ctx);
        return 0;
    }
    if (strcmp(which, "ca") == 0)
        return fail(ld, "store.redis_tls_ca", "%s: %s", ca, err);
    if (strcmp(which, "cert") == 0)
        return fail(ld, "store.redis_tls_cert", "%s: %s", cfg->redis_tls_cert,
                    err);
    return fail(ld, "store.redis_tls_key", "%s: %s", cfg->redis_tls_key, err);
}

/*
 * rediss://: every server of the store is reached over TLS, or none; the
 * CA bundle (default the system's), and a client certificate with its
 * key (guarded as the password file is), read and checked at each load.
 */
static int
finish_store_tls(struct loader *ld)
{
    struct cp_config *cfg = ld->cfg;
    char err[CP_ERR_MAX];
    const char *ca = cfg->redis_tls_ca ? cfg->redis_tls_ca : TLS_SYSTEM_CA;
    const char *why;
    size_t n = 0, tls = 0;

    for (size_t i = 0; i < cfg->nredis_seeds; i++, n++)
        tls += cfg->redis_seeds[i].tls;
    for (size_t i = 0; i < cfg->nredis_sentinels; i++, n++)
        tls += cfg->redis_sentinels[i].tls;
    if (cfg->redis_text != NULL) {
        tls += cfg->redis.tls;
        n++;
    }
    if (tls != 0 && tls != n)
        return fail(ld, cfg->redis_text ? "store.redis"
                        : cfg->nredis_seeds ? "store.redis_cluster"
                                            : "store.redis_sentinels",
                    "give every server as rediss:// (TLS) or none");
    cfg->redis_tls = cfg->store_redis && tls > 0;
    if (!cfg->redis_tls) {
        if (cfg->redis_tls_ca || cfg->redis_tls_cert || cfg->redis_tls_key ||
            cfg->redis_tls_name[0])
            return fail(ld, cfg->redis_tls_ca     ? "store.redis_tls_ca"
                            : cfg->redis_tls_cert ? "store.redis_tls_cert"
                            : cfg->redis_tls_key  ? "store.redis_tls_key"
                                                  : "store.redis_tls_name",
                        "only for a Redis reached over TLS (rediss://)");
        return 0;
    }
    if ((cfg->redis_tls_cert == NULL) != (cfg->redis_tls_key == NULL))
        return fail(ld, cfg->redis_tls_cert ? "store.redis_tls_key"
                                            : "store.redis_tls_cert",
                    "store.redis_tls_cert and store.redis_tls_key go "
                    "together: the client certificate and its key");
    cfg->redis_tls_ca_pem = read_small_file(ca, TLS_PEM_MAX,
                                            &cfg->redis_tls_ca_len, err);
    if (cfg->redis_tls_ca_pem == NULL)
        return fail(ld, "store.redis_tls_ca", "%s", err);
    if (tls_pem_certs(cfg->redis_tls_ca_pem, cfg->redis_tls_ca_len) <= 0)
        return fail(ld, "store.redis_tls_ca", "%s: no certificate in it, "
                    "or one that does not parse (PEM)", ca);
    if (cfg->redis_tls_cert == NULL)
        return tls_ctx_check(ld, ca);
    cfg->redis_tls_cert_pem = read_small_file(
        cfg->redis_tls_cert, TLS_PEM_MAX, &cfg->redis_tls_cert_len, err);
    if (cfg->redis_tls_cert_pem == NULL)
        return fail(ld, "store.redis_tls_cert", "%s", err);
    cfg->redis_tls_key_pem = read_secret_file(
        ld, "store.redis_tls_key", cfg->redis_tls_key, TLS_PEM_MAX,
        &cfg->redis_tls_key_len);
    if (cfg->redis_tls_key_pem == NULL)
        return -1;
    if ((why = tls_pem_key_check(cfg->redis_tls_cert_pem,
                                 cfg->redis_tls_cert_len,
                                 cfg->redis_tls_key_pem,
                                 cfg->redis_tls_key_len)) != NULL)
        return fail(ld, "store.redis_tls_key", "%s (certificate %s): %s",
                    cfg->redis_tls_key, cfg->redis_tls_cert, why);
    return tls_ctx_check(ld, ca);
}

/* A password from the first line of file (store.KEY) into out. */
static int
password_file(struct loader *ld, const char *key, const char *file,
              char *out)
{
    char *text;
    size_t size, len;

    text = read_secret_file(ld, key, file, 4096, &size);
    if (text == NULL)
        return -1;
    len = strcspn(text, "\r\n");
    if (len == 0 || len > REDIS_PASSWORD_MAX) {
        explicit_bzero(text, size);
        free(text);
        return fail(ld, key, "the first line must be the password "
                             "(1 to %d bytes)", REDIS_PASSWORD_MAX);
    }
    memcpy(out, text, len);
    out[len] = '\0';
    explicit_bzero(text, size);
    free(text);
    return 0;
}

/* store.redis_sentinel_password_file: the Sentinels' password (their
 * requirepass), for all of them (then no URL of theirs may carry one). */
static int
finish_sentinels(struct loader *ld)
{
    struct cp_config *cfg = ld->cfg;
    const char *key = "store.redis_sentinel_password_file";
    char pw[REDIS_URL_MAX_CRED] = {0}; /* (copied whole: compared whole) */

    if (cfg->redis_sentinel_password_file == NULL)
        return 0;
    if (cfg->nredis_sentinels == 0)
        return fail(ld, key, "there are no store.redis_sentinels");
    for (size_t i = 0; i < cfg->nredis_sentinels; i++)
        if (cfg->redis_sentinels[i].has_password)
            return fail(ld, key, "the URL of a Sentinel has a password "
                                 "already; give one or the other");
    if (password_file(ld, key, cfg->redis_sentinel_password_file, pw) < 0)
        return -1;
    for (size_t i = 0; i < cfg->nredis_sentinels; i++) {
        memcpy(cfg->redis_sentinels[i].password, pw, sizeof(pw));
        cfg->redis_sentinels[i].has_password = true;
    }
    explicit_bzero(pw, sizeof(pw));
    return 0;
}

/*
 * store: fleet mode needs its server; the password may be in a file
 * (store.redis_password_file, first line, refused if every user may read
 * it) instead of the URL, since the config is often readable by all; so
 * may the Sentinels'.
 */
static int
finish_store(struct loader *ld)
{
    struct cp_config *cfg = ld->cfg;
    const char *key = "store.redis_password_file";

    if (cfg->store_redis && cfg->redis_text == NULL &&
        cfg->nredis_seeds == 0 && cfg->nredis_sentinels == 0)
        return fail(ld, "store.backend",
                    "redis needs store.redis: redis://HOST:PORT (or "
                    "store.redis_cluster: a list of seeds, or "
                    "store.redis_sentinels and store.redis_master)");
    if ((cfg->redis_text != NULL) + (cfg->nredis_seeds > 0) +
            (cfg->nredis_sentinels > 0) > 1)
        return fail(ld, "store.redis_cluster",
                    "give one of store.redis (one server), "
                    "store.redis_cluster (its seeds) and "
                    "store.redis_sentinels");
    if ((cfg->nredis_sentinels > 0) != (cfg->redis_master[0] != '\0'))
        return fail(ld, "store.redis_master",
                    "store.redis_sentinels and store.redis_master go "
                    "together: the Sentinels, and the name of the primary "
                    "they watch");
    if (cfg->nredis_seeds > 0) {
        /* every node takes the first seed's user and password */
        struct redis_url *s0 = &cfg->redis_seeds[0];

        for (size_t i = 1; i < cfg->nredis_seeds; i++)
            if (cfg->redis_seeds[i].has_password &&
                (strcmp(cfg->redis_seeds[i].password, s0->password) != 0 ||
                 strcmp(cfg->redis_seeds[i].user, s0->user) != 0))
                return fail(ld, "store.redis_cluster",
                            "the seeds have different users or passwords; "
                            "a cluster has one");
        cfg->redis = *s0;
    }
    if (finish_store_tls(ld) < 0 || finish_sentinels(ld) < 0)
        return -1;
    if (cfg->redis_password_file == NULL)
        return 0;
    if (cfg->redis.has_password)
        return fail(ld, key, "the URL in store.redis has a password already; "
                             "give one or the other");
    if (password_file(ld, key, cfg->redis_password_file,
                      cfg->redis.password) < 0)
        return -1;
    cfg->redis.has_password = true;
    return 0;
}

#define WEBHOOK_KEY_MIN 16   /* bytes: shorter keys are guessable */
#define WEBHOOK_KEY_MAX 1024

/*
 * The webhook's HMAC key: notify.webhook_secret, or the first line of
 * notify.webhook_secret_file (better: the config is often readable by
 * all, the key file need not be). The file is read at load and reload, so
 * it must be readable by daemon.user (root:chokepoint, mode 0640), and is
 * refused if every user may read or write it.
 */
static int
load_webhook_key(struct loader *ld)
{
    struct cp_notify *n = &ld->cfg->notify;
    const char *key = "notify.webhook_secret_file";
    char *text;
    size_t len;

    if (n->webhook_secret[0] && n->webhook_secret_file[0])
        return fail(ld, key, "give webhook_secret or webhook_secret_file, "
                             "not both");
    if (n->webhook_secret[0]) {
        text = xstrdup(n->webhook_secret);
        len = strlen(text);
        key = "notify.webhook_secret";
    } else if (n->webhook_secret_file[0]) {
        text = read_secret_file(ld, key, n->webhook_secret_file,
                                WEBHOOK_KEY_MAX, &len);
        if (text == NULL)
            return -1;
        len = strcspn(text, "\r\n"); /* the first line */
    } else {
        return 0;
    }
    if (len < WEBHOOK_KEY_MIN) {
        free(text);
        return fail(ld, key, "the secret is %zu bytes; at least %d, e.g. "
                             "openssl rand -hex 32",
                    len, WEBHOOK_KEY_MIN);
    }
    if (!n->webhook[0]) {
        free(text);
        return fail(ld, key, "set, but there is no notify.webhook to sign");
    }
    ld->cfg->webhook_key = text;
    ld->cfg->webhook_key_len = len;
    return 0;
}

/* notify: — what must hold together; the templates and the webhook's key
 * are read and checked here. */
static int
finish_notify(struct loader *ld)
{
    struct cp_notify *n = &ld->cfg->notify;
    bool any = n->customer || n->abuse_to[0] || n->webhook[0];

    if (n->webhook[0] && strncmp(n->webhook, "http://", 7) != 0 &&
        strncmp(n->webhook, "https://", 8) != 0)
        return fail(ld, "notify.webhook",
                    "expected an http:// or https:// URL");
    if (n->smtp[0] && strncmp(n->smtp, "smtp://", 7) != 0 &&
        strncmp(n->smtp, "smtps://", 8) != 0)
        return fail(ld, "notify.smtp",
                    "expected smtp://HOST[:PORT] or smtps://HOST[:PORT]");
    if (load_webhook_key(ld) < 0)
        return -1;
    if (n->from[0] == '\0') {
        if (n->abuse_to[0] || n->webhook[0])
            return fail(ld, "notify.from", "needed to send notifications");
        return 0; /* notifications off */
    }
    if (any && (strchr(n->from, '@') == NULL ||
                strpbrk(n->from, " \t<>\"(),;") != NULL))
        return fail(ld, "notify.from", "expected a plain address "
                                       "(local@domain, no display name)");
    if (load_template(ld, "notify.customer_template", n->customer_template,
                      &ld->cfg->notify_template) < 0)
        return -1;
    return load_template(ld, "notify.release_template", n->release_template,
                         &ld->cfg->release_template);
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
        return fail(ld, "containment.suspect_transport",
                    "expected transport:nexthop (a master.cf service, e.g. "
                    "smtp-suspect:), got '%s'",
                    t);
    for (const char *p = t; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return fail(ld, "containment.suspect_transport",
                        "no blanks or control characters allowed");
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
        return fail(ld, "content.refuse_accounts",
                    "%u is below content.campaign_accounts (%u)",
                    c->refuse_accounts, c->campaign_accounts);
    if (c->milter[0] == '\0')
        return 0;
    why = listen_spec(c->milter, strlen(c->milter), &ld->cfg->milter);
    if (why != NULL)
        return fail(ld, "content.milter", "%s", why);
    return 0;
}

static int
finish(struct loader *ld)
{
    struct cp_config *cfg = ld->cfg;
    size_t i;

    if (!(cfg->det.watch_at <= cfg->det.throttle_at &&
          cfg->det.throttle_at <= cfg->det.block_at))
        return fail(ld, "detection",
                    "expected watch_at <= throttle_at <= block_at");
    if (cfg->nlisten == 0)
        return fail(ld, "daemon.listen", "at least one listener needed");
    finish_trust(cfg);
    if (cfg->nclasses == 0)
        return fail(ld, "classes", "at least one class needed");
    cfg->default_class = cp_config_class(cfg, cfg->default_class_name);
    if (cfg->default_class == NULL)
        return yw_fail(&ld->yw,
                       yw_find_key(ld->root, "identity.default_class"),
                       "identity.default_class '%s' is not a class",
                       cfg->default_class_name);
    cfg->unauth_class = cp_config_class(cfg, cfg->unauth_class_name);
    if (cfg->unauth_class == NULL)
        return yw_fail(&ld->yw,
                       yw_find_key(ld->root, "identity.unauthenticated_class"),
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
            return fail(ld, "classes",
                        "more than %d distinct metric/window counters",
                        CP_MAX_SLOTS);
    if (finish_store(ld) < 0 || finish_notify(ld) < 0 ||
        finish_dnsbl(ld) < 0 ||
        finish_containment(ld) < 0 || finish_content(ld) < 0)
        return -1;
    if (cfg->customer_map && cp_custmap_load(cfg, ld->yw.err) < 0)
        return -1;
    for (i = 0; i < cfg->ncustomers; i++)
        if (assign_slots(cfg, &cfg->customers[i]->rules) < 0)
            return yw_fail(&ld->yw, NULL,
                           "%s:%d: more than %d distinct metric/window "
                           "counters",
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
            cfg->socket_group.gid = gr->gr_gid;
            cfg->socket_group.set = true;
        }
    }
    cfg->store_path = xstrdup("/var/lib/chokepoint/state.db");
    cfg->redis_connect_timeout_ms = 1000;
    cfg->redis_timeout_ms = 50;
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

static int
load_root(struct loader *ld, bool map_override, const char *map)
{
    if (yw_load(&ld->yw, ld->root, top_fields, ld->cfg) < 0)
        return -1;
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
    struct loader ld = {{.file = file, .err = err}, cfg, NULL};
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
    ld.root = fy_document_root(doc);
    rc = load_root(&ld, map_override, map);
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
    free(cfg->redis_text);
    free(cfg->redis_password_file);
    free(cfg->redis_sentinel_password_file);
    free(cfg->redis_tls_ca);
    free(cfg->redis_tls_cert);
    free(cfg->redis_tls_key);
    free(cfg->redis_tls_ca_pem);
    free(cfg->redis_tls_cert_pem);
    if (cfg->redis_tls_key_pem != NULL)
        explicit_bzero(cfg->redis_tls_key_pem, cfg->redis_tls_key_len);
    free(cfg->redis_tls_key_pem);
    explicit_bzero(&cfg->redis, sizeof(cfg->redis));
    explicit_bzero(cfg->redis_seeds, sizeof(cfg->redis_seeds));
    explicit_bzero(cfg->redis_sentinels, sizeof(cfg->redis_sentinels));
    free(cfg->customer_map);
    free(cfg->default_class_name);
    free(cfg->unauth_class_name);
    free(cfg->notify_template);
    free(cfg->release_template);
    if (cfg->webhook_key != NULL)
        explicit_bzero(cfg->webhook_key, cfg->webhook_key_len);
    free(cfg->webhook_key);
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
