/* test_config.c — the config schema and the customer map: what loads, and
 * that every refusal names the file, the line and the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/custmap.h"
#include "core/identity.h"
#include "helpers.h"
#include "util/inet.h"

static const char base[] = "daemon:\n"
                           "  listen: [unix:/tmp/x.sock]\n"
                           "classes:\n"
                           "  residential:\n"
                           "    limits:\n"
                           "      - { metric: messages, window: 1h, max: 10 }\n"
                           "      - { metric: bytes, window: 1d, max: 20M }\n"
                           "  unauthenticated:\n"
                           "    limits:\n"
                           "      - { metric: messages, window: 60m, max: 5 }\n";

static struct cp_config *
load(const char *yaml, char *err)
{
    return cp_config_load(tmpfile_with(0, yaml), err);
}

static void
test_example_config(void **state)
{
    char err[CP_ERR_MAX];
    struct cp_config *cfg = cp_config_load("etc/chokepoint.yaml", err);

    (void)state;
    /* the shipped example names a map under /etc that need not exist */
    if (cfg == NULL)
        assert_non_null(strstr(err, "customers.map"));
    cp_config_free(cfg);
}

static void
test_base(void **state)
{
    char err[CP_ERR_MAX];
    struct cp_config *cfg = load(base, err);

    (void)state;
    assert_non_null(cfg);
    assert_int_equal(cfg->nclasses, 2);
    assert_int_equal(cfg->nslots, 2); /* 60m is the same window as 1h */
    assert_string_equal(cfg->classes[1].rules.rule[0].name, "messages/1h");
    assert_int_equal(cfg->classes[0].rules.rule[1].max, 20 * 1048576);
    assert_int_equal(cfg->classes[0].rules.rule[0].action, CP_ACT_DEFER);
    assert_int_equal(cfg->checkpoint_ms, 5000);
    assert_int_equal(cfg->listen[0].kind, CP_LISTEN_UNIX);
    cp_config_free(cfg);
}

/* The detection, delivery, notify and containment sections land where they
 * should (a wrong offset once sent the weights past the struct). */
static void
test_sections(void **state)
{
    static const char extra[] =
        "detection:\n"
        "  watch_at: 3\n"
        "  weights: { forged_sender: 3.5, delivered: -0.25 }\n"
        "delivery:\n"
        "  log: /var/log/mail.log\n"
        "  max_queue_ids: 1000\n"
        "notify:\n"
        "  from: abuse@isp.example\n"
        "  smtp: smtp://127.0.0.1:25\n"
        "  webhook: https://tickets.example/hook\n"
        "containment:\n"
        "  hold_command: /usr/sbin/postsuper -h -\n"
        "  self_release_max: 2\n";
    char yaml[2048], err[CP_ERR_MAX];
    struct cp_config *cfg;

    (void)state;
    snprintf(yaml, sizeof(yaml), "%s%s", base, extra);
    cfg = load(yaml, err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_true(cfg->det.weight[CP_SIG_FORGED_SENDER] == 3.5);
    assert_true(cfg->det.weight[CP_SIG_DELIVERED] == -0.25);
    assert_true(cfg->det.weight[CP_SIG_NETWORKS] == 2.0); /* default kept */
    assert_true(cfg->det.watch_at == 3);
    assert_string_equal(cfg->delivery.log, "/var/log/mail.log");
    assert_int_equal(cfg->delivery.max_queue_ids, 1000);
    assert_string_equal(cfg->notify.smtp, "smtp://127.0.0.1:25");
    assert_string_equal(cfg->notify.webhook, "https://tickets.example/hook");
    assert_string_equal(cfg->notify.sendmail, "/usr/sbin/sendmail -i");
    assert_string_equal(cfg->contain.hold_command, "/usr/sbin/postsuper -h -");
    assert_int_equal(cfg->contain.self_release_max, 2);
    cp_config_free(cfg);
    /* a class's detection: a mapping of its state settings */
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "  business:\n"
             "    detection: { block_action: hold, shadow: true }\n"
             "    limits: [{ metric: messages, window: 1h, max: 10 }]\n"
             "  lists:\n"
             "    detection: false\n"
             "    limits: [{ metric: messages, window: 1h, max: 10 }]\n");
    cfg = load(yaml, err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_int_equal(cp_config_class(cfg, "business")->block_action,
                     CP_BLOCK_HOLD);
    assert_true(cp_config_class(cfg, "business")->det_shadow);
    assert_true(cp_config_class(cfg, "business")->detect);
    assert_false(cp_config_class(cfg, "lists")->detect);
    assert_int_equal(cp_config_class(cfg, "residential")->block_action, -1);
    cp_config_free(cfg);
    /* a class's own weights; the others are the global ones, wherever
     * the detection section is */
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "  business:\n"
             "    detection: { weights: { uniform_size: 1.5, owned_sender: 0 } }\n"
             "    limits: [{ metric: messages, window: 1h, max: 10 }]\n"
             "detection:\n"
             "  weights: { forged_sender: 3.5 }\n");
    cfg = load(yaml, err);
    if (cfg == NULL)
        fail_msg("%s", err);
    {
        const struct cp_class *b = cp_config_class(cfg, "business");
        const struct cp_class *r = cp_config_class(cfg, "residential");

        assert_true(cp_class_det(cfg, b)->weight[CP_SIG_UNIFORM_SIZE] == 1.5);
        assert_true(cp_class_det(cfg, b)->weight[CP_SIG_OWNED_SENDER] == 0);
        assert_true(cp_class_det(cfg, b)->weight[CP_SIG_FORGED_SENDER] == 3.5);
        assert_true(cp_class_det(cfg, r)->weight[CP_SIG_UNIFORM_SIZE] ==
                    cfg->det.weight[CP_SIG_UNIFORM_SIZE]);
        assert_true(cp_class_det(cfg, r)->weight[CP_SIG_FORGED_SENDER] == 3.5);
        assert_true(cp_class_det(cfg, NULL) == &cfg->det);
    }
    cp_config_free(cfg);
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "  business:\n"
             "    detection: { weights: { uniform_sizes: 1 } }\n"
             "    limits: [{ metric: messages, window: 1h, max: 10 }]\n");
    assert_null(load(yaml, err));
    assert_non_null(strstr(err, "uniform_sizes"));
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "  business:\n"
             "    detection: { block_action: bounce }\n"
             "    limits: [{ metric: messages, window: 1h, max: 10 }]\n");
    assert_null(load(yaml, err));
    assert_non_null(strstr(err, "block_action"));
    /* refusals name the setting */
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "notify:\n  from: Abuse Desk <abuse@isp.example>\n"
             "  abuse_to: a@isp.example\n");
    assert_null(load(yaml, err));
    assert_non_null(strstr(err, "notify.from: expected a plain address"));
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "dnsbl:\n  zones: xbl.example, bad/zone\n");
    assert_null(load(yaml, err));
    assert_non_null(strstr(err, "dnsbl.zones: bad item 'bad/zone'"));
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "dnsbl:\n  zones: xbl.example\n  ignore: 127.0.0.10, ::1\n");
    assert_null(load(yaml, err));
    assert_non_null(strstr(err, "dnsbl.ignore: bad item '::1'"));
    snprintf(yaml, sizeof(yaml), "%s%s", base,
             "notify:\n  from: a@isp.example\n  webhook: ftp://x\n");
    assert_null(load(yaml, err));
    assert_non_null(strstr(err, "notify.webhook"));
}

static void
expect_error(const char *yaml, const char *where, const char *what)
{
    char err[CP_ERR_MAX];
    struct cp_config *cfg = load(yaml, err);

    assert_null(cfg);
    if (strstr(err, where) == NULL || strstr(err, what) == NULL)
        fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err, where, what);
}

/* notify.webhook_secret(_file) and release_template: the key's value
 * and default, and refusals with file:line:column. */
static void
test_notify_keys(void **state)
{
    char buf[2048], err[CP_ERR_MAX];
    const char *hook = "notify:\n  from: a@isp.example\n"
                       "  webhook: https://tickets.example/hook\n";
    const char *key;
    struct cp_config *cfg;

    (void)state;
    snprintf(buf, sizeof(buf), "%s%s", base, hook);
    assert_non_null(cfg = load(buf, err));
    assert_null(cfg->webhook_key); /* default: unsigned */
    assert_null(cfg->release_template);
    cp_config_free(cfg);
    snprintf(buf, sizeof(buf), "%s%s  webhook_secret: 0123456789abcdefXY\n",
             base, hook);
    assert_non_null(cfg = load(buf, err));
    assert_int_equal(cfg->webhook_key_len, 18);
    assert_memory_equal(cfg->webhook_key, "0123456789abcdefXY", 18);
    cp_config_free(cfg);
    /* a file: its first line; mkstemp made it 0600 */
    key = tmpfile_with(1, "fedcba9876543210fedcba\nignored\n");
    snprintf(buf, sizeof(buf), "%s%s  webhook_secret_file: %s\n", base, hook,
             key);
    assert_non_null(cfg = load(buf, err));
    assert_int_equal(cfg->webhook_key_len, 22);
    assert_memory_equal(cfg->webhook_key, "fedcba9876543210fedcba", 22);
    cp_config_free(cfg);
    chmod(key, 0644);
    expect_error(buf, ":14:3:", "notify.webhook_secret_file: ");
    expect_error(buf, ":14:3:", "readable or writable by every user");
    unlink(key);
    snprintf(buf, sizeof(buf), "%s%s  webhook_secret: short\n", base, hook);
    expect_error(buf, ":14:3:",
                 "notify.webhook_secret: the secret is 5 bytes; at least 16");
    snprintf(buf, sizeof(buf),
             "%snotify:\n  from: a@isp.example\n"
             "  webhook_secret: 0123456789abcdef\n",
             base);
    expect_error(buf, ":13:3:", "no notify.webhook to sign");
    snprintf(buf, sizeof(buf),
             "%s%s  webhook_secret: 0123456789abcdef\n"
             "  webhook_secret_file: /nonexistent\n",
             base, hook);
    expect_error(buf, ":15:3:", "not both");
    snprintf(buf, sizeof(buf), "%s%s  release_template: /nonexistent/r.txt\n",
             base, hook);
    expect_error(buf, ":14:3:",
                 "notify.release_template: /nonexistent/r.txt: cannot open");
    key = tmpfile_with(1, "Released {{acount}}\n");
    snprintf(buf, sizeof(buf), "%s%s  release_template: %s\n", base, hook,
             key);
    expect_error(buf, ":14:3:", "unknown placeholder {{acount}}");
    unlink(key);
}

static void
test_errors(void **state)
{
    char buf[2048];

    (void)state;
    snprintf(buf, sizeof(buf), "%sstore:\n  checkpoint_intervl: 5s\n", base);
    expect_error(buf, ":12:3:", "unknown key 'checkpoint_intervl'");
    snprintf(buf, sizeof(buf), "%sstore:\n  checkpoint_interval: soon\n", base);
    expect_error(buf, ":12:24:", "expected a duration");
    snprintf(buf, sizeof(buf), "%sprotocol:\n  max_line: 10\n", base);
    expect_error(buf, ":12:13:", "out of range");
    expect_error("daemon:\n  log: journal\n", ":2:8:",
                 "expected one of stderr, syslog");
    snprintf(buf, sizeof(buf), "%sdaemon:\n  shadow: true\n", base);
    expect_error(buf, ":11:1:", "duplicate key");
    expect_error("daemon: [\n", ":", "");
    /* a YAML syntax error names the file, line and column like the rest,
     * not libfyaml's name for a buffer, and no "error:" in the middle */
    expect_error("detection:\n  watch_factor: [0.5\n", ":3:1: ",
                 "flow sequence without a closing bracket");
    expect_error("daemon:\n\tlisten: x\n", ":2:1: ",
                 "tab character may not be used as indentation");
    {
        char err[CP_ERR_MAX];

        assert_null(load("daemon:\n\tlisten: x\n", err));
        assert_null(strstr(err, "<memory"));
        assert_null(strstr(err, "error:"));
    }
    expect_error("classes:\n  r:\n    limits:\n      - { metric: msgs, "
                 "window: 1h, max: 1 }\n",
                 ":4:19:", "expected one of messages");
    expect_error("daemon:\n  listen: [tcp:1.2.3.4]\n", ":2:12:",
                 "expected unix:/PATH or inet:ADDRESS:PORT");
    expect_error("daemon:\n  listen: [unix:/x]\nclasses:\n  r:\n    limits: "
                 "[]\n",
                 "", "default_class 'residential' is not a class");
}

/* ---- the same rules in every section (one walker: util/yamlwalk.c) ---- */

static const char *const section_names[] = {
    "daemon",      "protocol",  "store",    "identity", "accounting",
    "classes",     "detection", "delivery", "dnsbl",    "notify",
    "containment", "content",   NULL};

/* A valid file without section `omit` (NULL: complete): base, whose
 * first two lines are the daemon section; returns its line count. */
static int
base_without(char *out, size_t outsz, const char *omit)
{
    static const char daemon[] = "daemon:\n  listen: [unix:/tmp/x.sock]\n";
    const char *classes = base + strlen(daemon);
    int lines = 0;

    snprintf(out, outsz, "%s%s",
             omit && strcmp(omit, "daemon") == 0 ? "" : daemon,
             omit && strcmp(omit, "classes") == 0 ? "" : classes);
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    return lines;
}

/* Load `yaml`; the temporary file's name into path, the file removed. */
static struct cp_config *
load_named(const char *yaml, char *err, char *path, size_t pathsz)
{
    const char *p = tmpfile_with(2, yaml);
    struct cp_config *cfg = cp_config_load(p, err);

    snprintf(path, pathsz, "%s", p);
    unlink(p);
    return cfg;
}

/* Does the section of `a` hold what that of `b` does? */
static bool
same_section(const struct cp_config *a, const struct cp_config *b,
             const char *name)
{
#define SAME(m) (memcmp(&a->m, &b->m, sizeof(a->m)) == 0)
    if (strcmp(name, "protocol") == 0)
        return SAME(proto) && SAME(idle_timeout_ms) && SAME(max_lifetime_ms) &&
               SAME(max_connections) && SAME(max_connections_per_peer) &&
               SAME(listen_backlog) && SAME(malformed_defer);
    if (strcmp(name, "store") == 0)
        return strcmp(a->store_path, b->store_path) == 0 &&
               SAME(checkpoint_ms) && SAME(max_accounts);
    if (strcmp(name, "identity") == 0)
        return SAME(ipv4_prefix) && SAME(ipv6_prefix) &&
               strcmp(a->default_class_name, b->default_class_name) == 0 &&
               a->customer_map == NULL && b->customer_map == NULL;
    if (strcmp(name, "accounting") == 0)
        return SAME(acct_mode) && SAME(reservation_timeout_ms) &&
               SAME(max_pending);
    if (strcmp(name, "detection") == 0)
        return SAME(det);
    if (strcmp(name, "delivery") == 0)
        return SAME(delivery);
    if (strcmp(name, "dnsbl") == 0)
        return SAME(dnsbl);
    if (strcmp(name, "notify") == 0)
        return SAME(notify);
    if (strcmp(name, "containment") == 0)
        return SAME(contain);
    return strcmp(name, "content") == 0 && SAME(content);
#undef SAME
}

/* `NAME:`, `NAME: {}` and `NAME: ~` mean the defaults, in every section
 * (an empty dnsbl: or detection: was refused). daemon: and classes: have
 * something required, so their defaults are refused for its lack. */
static void
test_every_section_empty(void **state)
{
    static const char *const empty[] = {":\n", ": {}\n", ": ~\n",
                                        ": # nothing yet\n"};
    char yaml[2048], err[CP_ERR_MAX], path[64];
    struct cp_config *ref = load(base, err);

    (void)state;
    assert_non_null(ref);
    for (int i = 0; section_names[i]; i++) {
        const char *name = section_names[i];

        for (size_t e = 0; e < sizeof(empty) / sizeof(empty[0]); e++) {
            struct cp_config *cfg;
            size_t at;

            base_without(yaml, sizeof(yaml), name);
            at = strlen(yaml);
            snprintf(yaml + at, sizeof(yaml) - at, "%s%s", name, empty[e]);
            cfg = load_named(yaml, err, path, sizeof(path));
            if (strcmp(name, "daemon") == 0 || strcmp(name, "classes") == 0) {
                assert_null(cfg);
                if (strstr(err, strcmp(name, "daemon") == 0
                                    ? "daemon.listen: at least one listener"
                                    : "classes: at least one class") == NULL)
                    fail_msg("%s: %s", name, err);
                continue;
            }
            if (cfg == NULL)
                fail_msg("empty %s refused: %s", name, err);
            if (!same_section(cfg, ref, name))
                fail_msg("empty %s is not its defaults", name);
            cp_config_free(cfg);
        }
    }
    cp_config_free(ref);
}

/* An unknown key: one message, naming where, in every section. */
static void
test_every_section_unknown_key(void **state)
{
    char yaml[2048], err[CP_ERR_MAX], path[64], want[CP_ERR_MAX];

    (void)state;
    for (int i = 0; section_names[i]; i++) {
        const char *name = section_names[i];
        bool cls = strcmp(name, "classes") == 0;
        int n = base_without(yaml, sizeof(yaml), name);

        snprintf(yaml + strlen(yaml), sizeof(yaml) - strlen(yaml),
                 "%s:\n%s  bogus_key: 1\n", name,
                 cls ? "  residential:\n  " : "");
        assert_null(load_named(yaml, err, path, sizeof(path)));
        snprintf(want, sizeof(want), "%s:%d:%d: %s%s: unknown key 'bogus_key'",
                 path, n + (cls ? 3 : 2), cls ? 5 : 3, name,
                 cls ? ".residential" : "");
        assert_string_equal(err, want);
    }
    /* and at the top: a misspelt section */
    snprintf(yaml, sizeof(yaml), "%sdnsbls:\n  zones: x.example\n", base);
    assert_null(load_named(yaml, err, path, sizeof(path)));
    snprintf(want, sizeof(want), "%s:11:1: unknown key 'dnsbls'", path);
    assert_string_equal(err, want);
}

/* A value of the wrong type, in every section: the position of the value
 * and the key's full name; a section that is not a mapping likewise. */
static void
test_every_section_wrong_type(void **state)
{
    /* a key of each section, in the order of section_names */
    static const char *const key[] = {
        "admin_socket", "max_line",           "max_accounts",     "ipv4_prefix",
        "mode",         "residential.shadow", "watch_at",         "poll",
        "timeout",      "attempts",           "self_release_max", "min_words"};
    _Static_assert(sizeof(key) / sizeof(key[0]) ==
                       sizeof(section_names) / sizeof(section_names[0]) - 1,
                   "a key per section");
    char yaml[2048], err[CP_ERR_MAX], path[64], want[CP_ERR_MAX];

    (void)state;
    for (int i = 0; section_names[i]; i++) {
        const char *name = section_names[i], *k = key[i], *dot;
        int n = base_without(yaml, sizeof(yaml), name);
        size_t at = strlen(yaml);

        /* NAME:\n  KEY: [x]\n  (a class: NAME:\n  CLASS:\n    KEY: [x]) */
        if ((dot = strchr(k, '.')) != NULL)
            snprintf(yaml + at, sizeof(yaml) - at,
                     "%s:\n  %.*s:\n    %s: [x]\n", name, (int)(dot - k), k,
                     dot + 1);
        else
            snprintf(yaml + at, sizeof(yaml) - at, "%s:\n  %s: [x]\n", name, k);
        assert_null(load_named(yaml, err, path, sizeof(path)));
        snprintf(want, sizeof(want), "%s:%d:%d: %s.%s: expected ", path,
                 n + (dot ? 3 : 2),
                 (int)(dot ? strlen(dot + 1) + 8 : strlen(k) + 6), name, k);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("\"%s\" does not start with \"%s\"", err, want);

        /* NAME: [1] */
        yaml[at] = '\0';
        snprintf(yaml + at, sizeof(yaml) - at, "%s: [1]\n", name);
        assert_null(load_named(yaml, err, path, sizeof(path)));
        snprintf(want, sizeof(want), "%s:%d:%d: %s: expected a mapping", path,
                 n + 1, (int)strlen(name) + 4, name);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("\"%s\" does not start with \"%s\"", err, want);
    }
}

static bool
get_daemon_shadow(const struct cp_config *c)
{
    return c->shadow;
}

static bool
get_det_enabled(const struct cp_config *c)
{
    return c->det.enabled;
}

static bool
get_det_shadow(const struct cp_config *c)
{
    return c->det.shadow;
}

static bool
get_notify_customer(const struct cp_config *c)
{
    return c->notify.customer;
}

static bool
get_class_detect(const struct cp_config *c)
{
    return cp_config_class(c, "residential")->detect;
}

static bool
get_class_det_shadow(const struct cp_config *c)
{
    return cp_config_class(c, "residential")->det_shadow;
}

static bool
get_rule_shadow(const struct cp_config *c)
{
    return cp_config_class(c, "residential")->rules.rule[0].shadow;
}

/* Every boolean of the file takes the same spellings (daemon.shadow took
 * yes/no/on/off, detection.shadow only true/false). */
static void
test_every_boolean_spelling(void **state)
{
    static const char cls[] = "classes:\n  unauthenticated: { limits: [] }\n"
                              "  residential:\n";
    static const struct {
        const char *section, *before, *after; /* the value between */
        bool (*get)(const struct cp_config *);
    } b[] = {
        {"daemon", "daemon:\n  listen: [unix:/x]\n  shadow: ", "\n",
         get_daemon_shadow},
        {"detection", "detection:\n  enabled: ", "\n", get_det_enabled},
        {"detection", "detection:\n  shadow: ", "\n", get_det_shadow},
        {"notify", "notify:\n  customer: ", "\n", get_notify_customer},
        {"classes", "    detection: ", "\n    limits: []\n", get_class_detect},
        {"classes", "    detection: { shadow: ", " }\n    limits: []\n",
         get_class_det_shadow},
        {"classes", "    shadow: ",
         "\n    limits: [{ metric: messages, window: 1h, max: 1 }]\n",
         get_rule_shadow},
        {"classes",
         "    limits: [{ metric: messages, window: 1h, max: 1, shadow: ",
         " }]\n", get_rule_shadow},
    };
    static const struct {
        const char *text;
        bool value;
    } spell[] = {{"true", true}, {"false", false}, {"yes", true},
                 {"no", false},  {"on", true},     {"off", false},
                 {"Yes", true},  {"NO", false},    {"TRUE", true},
                 {"Off", false}, {"maybe", false}};
    const size_t nspell = sizeof(spell) / sizeof(spell[0]);
    char yaml[2048], err[CP_ERR_MAX], path[64];

    (void)state;
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
        for (size_t j = 0; j < nspell; j++) {
            bool in_class = strcmp(b[i].section, "classes") == 0;
            struct cp_config *cfg;
            size_t at;

            base_without(yaml, sizeof(yaml), b[i].section);
            at = strlen(yaml);
            snprintf(yaml + at, sizeof(yaml) - at, "%s%s%s%s",
                     in_class ? cls : "", b[i].before, spell[j].text,
                     b[i].after);
            cfg = load_named(yaml, err, path, sizeof(path));
            if (j == nspell - 1) { /* "maybe" */
                assert_null(cfg);
                assert_non_null(strstr(err, ": expected a boolean: "
                                            "true/false, yes/no or on/off"));
                continue;
            }
            if (cfg == NULL)
                fail_msg("%s in %s: %s", spell[j].text, b[i].before, err);
            if (b[i].get(cfg) != spell[j].value)
                fail_msg("%s in %s: read as %d", spell[j].text, b[i].before,
                         !spell[j].value);
            cp_config_free(cfg);
        }
    }
}

/* The two refusals of issue 13 that users met. */
static void
test_detection_shadow_yes_and_empty_dnsbl(void **state)
{
    char yaml[2048], err[CP_ERR_MAX];
    struct cp_config *cfg;

    (void)state;
    snprintf(yaml, sizeof(yaml), "%sdetection:\n  shadow: yes\ndnsbl:\n", base);
    cfg = load(yaml, err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_true(cfg->det.shadow);
    assert_int_equal(cfg->dnsbl.nzones, 0);
    assert_int_equal(cfg->dnsbl.timeout_ms, 2000);
    cp_config_free(cfg);
}

static struct cp_config *
load_with_map(const char *map, char *err)
{
    char yaml[2048];

    snprintf(yaml, sizeof(yaml), "%sidentity:\n  customer_map: %s\n", base,
             tmpfile_with(1, map));
    return load(yaml, err);
}

static void
test_map(void **state)
{
    char err[CP_ERR_MAX];
    struct cp_config *cfg =
        load_with_map("# comment\n"
                      "alice@isp.example  c1  residential messages/1h=50 "
                      "recipients/1d=500\n"
                      "alice2@isp.example c1\n"
                      "192.0.2.0/24       c2  unauthenticated\n"
                      "192.0.2.7          c3\n"
                      "2001:db8::/32      c2\n",
                      err);
    const struct cp_customer *c;
    struct inet_addr a;

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    c = cp_custmap_login(cfg, "alice2@isp.example", 18);
    assert_non_null(c);
    assert_string_equal(c->id, "c1");
    assert_int_equal(c->rules.n, 3);
    assert_int_equal(c->rules.rule[0].max, 50);
    assert_string_equal(c->rules.rule[2].name, "recipients/1d");
    assert_int_equal(cfg->nslots, 3);
    assert_true(inet_parse("192.0.2.99", 10, &a));
    assert_string_equal(cp_custmap_network(cfg, &a)->id, "c2");
    assert_true(inet_parse("192.0.2.7", 9, &a));
    assert_string_equal(cp_custmap_network(cfg, &a)->id, "c3");
    assert_true(inet_parse("2001:db8:1::1", 13, &a));
    assert_string_equal(cp_custmap_network(cfg, &a)->id, "c2");
    assert_true(inet_parse("198.51.100.1", 12, &a));
    assert_null(cp_custmap_network(cfg, &a));
    cp_config_free(cfg);
}

/* domains=: a customer's own mail domains, owned by all its logins; the
 * map lists each customer's logins; identity keeps the state per login
 * (dkey) and the limits per customer (key). */
static void
test_map_domains_and_logins(void **state)
{
    char err[CP_ERR_MAX];
    struct cp_config *cfg =
        load_with_map("office@acme.example acme residential "
                      "domains=acme.example,Acme-Shop.example\n"
                      "anna@acme.example   acme\n"
                      "192.0.2.0/24        acme\n"
                      "bob@isp.example     bob\n",
                      err);
    const struct cp_customer *c;
    struct cp_identity id;
    const char *a = "anna@acme-shop.EXAMPLE";

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    c = cp_custmap_customer(cfg, "acme", 4);
    assert_non_null(c);
    assert_int_equal(c->ndomains, 2);
    assert_int_equal(c->nlogins, 2);
    assert_int_equal(c->nnetworks, 1);
    assert_string_equal(c->logins[0], "office@acme.example");
    assert_true(cp_customer_owns(c, a, strlen(a)));
    assert_true(cp_customer_owns(c, "x@acme.example", 14));
    assert_false(cp_customer_owns(c, "x@acme.example.evil", 19));
    assert_false(cp_customer_owns(c, "acme.example", 12));
    assert_false(cp_customer_owns(cp_custmap_customer(cfg, "bob", 3),
                                  "x@acme.example", 14));
    /* a mapped login: its own state, its customer's limits */
    assert_int_equal(cp_identity_lookup(cfg, "anna@acme.example", 17, &id), 0);
    assert_string_equal(id.key, "c:acme");
    assert_string_equal(id.dkey, "u:anna@acme.example");
    assert_false(cp_identity_one_record(&id));
    /* a mapped network: the client address's own state */
    assert_int_equal(cp_identity_lookup(cfg, "192.0.2.7", 9, &id), 0);
    assert_string_equal(id.key, "c:acme");
    assert_string_equal(id.dkey, "ip:192.0.2.7/32");
    /* the customer itself (an operator's block covers its logins) */
    assert_int_equal(cp_identity_lookup(cfg, "c:acme", 6, &id), 0);
    assert_string_equal(id.dkey, "c:acme");
    assert_true(cp_identity_one_record(&id));
    /* an unmapped login: one record */
    assert_int_equal(cp_identity_lookup(cfg, "zed@isp.example", 15, &id), 0);
    assert_string_equal(id.key, "u:zed@isp.example");
    assert_true(cp_identity_one_record(&id));
    cp_config_free(cfg);
}

static void
expect_map_error(const char *map, const char *what)
{
    char err[CP_ERR_MAX];
    struct cp_config *cfg = load_with_map(map, err);

    assert_null(cfg);
    if (strstr(err, what) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, what);
}

static void
test_map_errors(void **state)
{
    (void)state;
    expect_map_error("a@x c1\nb@x c1 nosuchclass\n", ":2: unknown class");
    expect_map_error("a@x c1 residential\nb@x c1 unauthenticated\n",
                     ":2: customer c1 already has class residential");
    expect_map_error("a@x c1\na@x c2\n", ":2: key 'a@x' is listed twice");
    expect_map_error("a@x c1 messages/1h=0\n", ":1: override");
    expect_map_error("a@x c1 parcels/1h=3\n", "unknown metric");
    expect_map_error("10.0.0.0/33 c1\n", ":1: '10.0.0.0/33' is not a valid");
    expect_map_error("onlykey\n", ":1: expected KEY CUSTOMER");
    expect_map_error("a@x c1 contact=nobody\n", ":1: contact=: expected");
    expect_map_error("a@x c1 contact=a\rb@x\n", ":1: contact=: character");
    expect_map_error("a@x c1 contact=p@h.example\nb@x c1 contact=q@h.example\n",
                     ":2: customer c1 already has contact p@h.example");
    expect_map_error("a@x c1 domains=a.example\nb@x c1 domains=b.example\n",
                     ":2: domains of customer c1 already given on line 1");
    expect_map_error("a@x c1 domains=a.example,,b.example\n",
                     ":1: domains=: '' is not a domain");
    expect_map_error("a@x c1 domains=u@a.example\n",
                     ":1: domains=: 'u@a.example' is not a domain");
    expect_map_error("a@x c1 domains=localhost\n",
                     ":1: domains=: 'localhost' is not a domain");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_config), cmocka_unit_test(test_base),
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_notify_keys),
                cmocka_unit_test(test_map),
        cmocka_unit_test(test_map_errors),
        cmocka_unit_test(test_map_domains_and_logins),
        cmocka_unit_test(test_every_section_empty),
        cmocka_unit_test(test_every_section_unknown_key),
        cmocka_unit_test(test_every_section_wrong_type),
        cmocka_unit_test(test_every_boolean_spelling),
        cmocka_unit_test(test_detection_shadow_yes_and_empty_dnsbl),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
