/*
 * config.h — chokepoint's configuration: the declared schema of
 * chokepoint.yaml, the customer map it names, and the derived tables the
 * engine uses (rules per class and per customer, counter slots).
 *
 * A struct cp_config is immutable once cp_config_load() returns it; a
 * reload builds a new one and swaps it whole (doc/design.md). Errors read
 * "file:line:column: section.key: reason" (util/yamlwalk.h; the customer
 * map: "file:line: reason").
 * Thread: loading is pure apart from reading the two files; any thread.
 */
#ifndef CP_CORE_CONFIG_H
#define CP_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/policy.h"
#include "util/hmap.h"
#include "util/inet.h"
#include "util/msg.h"
#include "util/redisurl.h"

#define CP_MAX_SLOTS 12      /* distinct (metric, window) counters */
#define CP_MAX_RULES 12      /* rules per class or customer */
#define CP_RULE_NAME_MAX 32  /* "recipients/10080m" fits */
#define CP_ERR_MAX 512

enum cp_metric {
    CP_METRIC_MESSAGES,
    CP_METRIC_RECIPIENTS,
    CP_METRIC_BYTES,
    CP_METRIC_DOMAINS,
    CP_METRIC_COUNT
};

enum cp_action {
    CP_ACT_DUNNO,
    CP_ACT_DEFER,   /* DEFER_IF_PERMIT 4.7.1 */
    CP_ACT_REJECT,  /* REJECT 5.7.1 */
    CP_ACT_HOLD,
    CP_ACT_WARN,
    CP_ACT_PREPEND,
    CP_ACT_FILTER,  /* FILTER transport:nexthop (reputation pool; not a rule
                       action) */
    CP_ACT_COUNT
};

/* One limit: at most `max` units of `metric`, refilling over `window_ms`. */
struct cp_rule {
    char name[CP_RULE_NAME_MAX]; /* "metric/window", as written */
    enum cp_metric metric;
    uint64_t window_ms;
    uint64_t max;
    enum cp_action action;
    bool shadow;
    uint8_t slot; /* counter slot of (metric, window) */
};

struct cp_ruleset {
    struct cp_rule rule[CP_MAX_RULES];
    size_t n;
};

/* Evidence signals, each with a log-likelihood-ratio weight. */
enum cp_signal {
    CP_SIG_FORGED_SENDER,   /* envelope sender the account does not own */
    CP_SIG_OWNED_SENDER,    /* one it does */
    CP_SIG_NEW_RECIPIENT,   /* a recipient never mailed before */
    CP_SIG_KNOWN_RECIPIENT, /* one mailed before */
    CP_SIG_RATE_JUMP,       /* a message beyond the account's usual hour */
    CP_SIG_NETWORKS,        /* a login used from many networks at once */
    CP_SIG_BAD_RECIPIENT,   /* delivery: recipient unknown (5.1.x) */
    CP_SIG_REMOTE_REJECT,   /* delivery: refused by policy (5.7.x, 4.7.x) */
    CP_SIG_DELIVERED,       /* delivery: accepted by the next hop */
    CP_SIG_DNSBL,           /* client address on an infected-host list */
    CP_SIG_HELO_NEW,        /* a HELO the account's devices never used */
    CP_SIG_HELO_FORGED,     /* HELO names the recipient's domain */
    CP_SIG_ODD_HOUR,        /* mail at an hour of day the account never used */
    CP_SIG_TLS_NEW,         /* a TLS stack the account's devices never used */
    CP_SIG_UNIFORM_SIZE,    /* a run of messages of near-identical size */
    CP_SIG_CAMPAIGN,        /* content: the same text from many accounts */
    CP_SIG_STALE_RECIPIENT, /* delivery: unknown (5.1.x), but delivered to
                               by this account before: a list gone stale */
    CP_SIG_COUNT
};

enum cp_block_action { CP_BLOCK_REJECT, CP_BLOCK_HOLD };

struct cp_detection {
    bool enabled;
    bool shadow;            /* log state actions, answer as in NORMAL */
    uint64_t half_life_ms;  /* evidence fades by half in this time */
    double floor;           /* lowest score (good history is capped) */
    double watch_at, throttle_at, block_at;
    double watch_factor;    /* limits in WATCH and PROBATION scale by this */
    uint64_t probation_ms;
    int block_action;       /* enum cp_block_action */
    char help_url[256];
    uint32_t networks;      /* unfamiliar networks per hour that count */
    double rate_factor;     /* a message beyond factor × usual hour counts */
    uint32_t learning;      /* an account with fewer messages learned is
                               new: blocked only on delivery evidence */
    double weight[CP_SIG_COUNT];
};

struct cp_class {
    char *name;
    struct cp_ruleset rules;
    bool detect;      /* compromise detection applies to this class */
    bool det_shadow;  /* its state actions are only logged */
    int block_action; /* enum cp_block_action; -1: detection.block_action */
    double weight[CP_SIG_COUNT]; /* detection.weights of its own; NaN: the
                                    global one */
    struct cp_detection det; /* detection: with its weights (when loaded) */
};

/* delivery: — the mail.log follower and the queue-id table. */
struct cp_delivery {
    char log[256];             /* mail.log to follow; "": none */
    uint64_t poll_ms;          /* how often the log is read */
    uint32_t max_queue_ids;    /* queue id → account entries kept */
    uint32_t max_recipients;   /* (account, recipient) pairs delivered to,
                                  remembered (4 bytes each) */
    uint64_t queue_id_ttl_ms;  /* forgotten after (Postfix: 5d lifetime) */
};

/* dnsbl: — look-ups of the client address in infected-host lists
 * (XBL/CBL-type). Answers in `ignore` (PBL-type: "dynamic address, should
 * not send directly" — expected on the submission port) are not evidence. */
#define CP_DNSBL_MAX_ZONES 8
#define CP_DNSBL_MAX_IGNORE 16
struct cp_dnsbl {
    char zones_text[512];      /* "xbl.example, cbl.example"; "": off */
    char ignore_text[256];     /* "127.0.0.10, 127.0.0.11" */
    char servers[256];         /* "127.0.0.1:5353"; "": /etc/resolv.conf */
    uint64_t timeout_ms;
    uint64_t cache_ttl_ms;
    uint32_t max_cache;        /* addresses remembered */
    /* parsed at load */
    char zone[CP_DNSBL_MAX_ZONES][128];
    uint32_t nzones;
    uint32_t ignore[CP_DNSBL_MAX_IGNORE]; /* IPv4, host order */
    uint32_t nignore;
};

/* notify: — what is sent when an account is blocked. */
struct cp_notify {
    char smtp[256];            /* smtp://host:port to submit to, or "" */
    char sendmail[512];        /* else this command (no shell) */
    char from[256];            /* envelope and header sender */
    char abuse_to[256];        /* ARF reports; "": none */
    bool customer;             /* mail the customer's contact address */
    char customer_template[256]; /* file; "": built-in */
    char release_template[256];  /* the release notice's file; "": built-in */
    char webhook[512];         /* http(s) URL for a JSON POST; "": none */
    char webhook_secret[256];  /* HMAC key, inline; "": see _file */
    char webhook_secret_file[256]; /* file holding the HMAC key; "": none */
    uint64_t timeout_ms;       /* per attempt */
    uint32_t attempts;         /* tries per notification */
    uint64_t retry_ms;         /* first retry delay, doubling */
    uint32_t max_per_hour;     /* incidents notified per hour, all accounts */
    char reporting_mta[256];   /* host name in reports; "": this host */
};

/* containment: — retroactive hold and self-service release. */
struct cp_containment {
    char hold_command[512];    /* reads queue ids on stdin; "": off */
    char release_command[512];
    uint32_t self_release_max; /* self-service releases per period */
    uint64_t self_release_period_ms;
    /* reputation pool: mail of WATCH and PROBATION accounts is answered
     * FILTER <suspect_transport> ("transport:nexthop"); "": off */
    char suspect_transport[128];
};

/* content: — message bodies, seen by the milter service (core/fingerprint.h,
 * doc/detection.md). */
struct cp_content {
    char milter[256];          /* listener spec as written; "": no milter */
    uint32_t min_words;        /* shorter bodies get no fingerprint */
    uint32_t repeat;           /* copies before an account counts */
    uint32_t min_bad;          /* a campaign: refused copies at least, */
    double bad_share;          /* and this share of the outcomes */
    uint32_t campaign_accounts; /* sent by this many accounts: campaign */
    uint32_t refuse_accounts;  /* by this many: the message is deferred at
                                  end of data; 0: never */
    uint64_t window_ms;        /* a fingerprint unseen this long is new */
    uint32_t max_fingerprints; /* campaign table slots (36 bytes each) */
};

/* A counter slot: what one stored counter measures. */
struct cp_slot {
    enum cp_metric metric;
    uint64_t window_ms;
    char name[CP_RULE_NAME_MAX]; /* canonical "messages/3600s" */
};

#define CP_CUST_MAX_DOMAINS 16

struct cp_customer {
    char *id;
    size_t idlen;
    char *contact;           /* notifications; NULL: none given */
    /* domains=: the customer's own mail domains (hmap_hash_lower of each):
     * any address at them is owned by every login of the customer */
    uint64_t domain[CP_CUST_MAX_DOMAINS];
    size_t ndomains;
    int domains_line;        /* where domains= was given */
    const char **logins;     /* its logins in the map (keys owned by the
                                map's entries) */
    size_t nlogins;
    size_t nnetworks;        /* networks in the map */
    const struct cp_class *cls;
    struct cp_ruleset rules; /* the class's rules with overrides applied */
    bool has_overrides;
    int line;                /* where class/overrides were given */
    size_t idx;              /* position in cp_config.customers */
};

enum cp_listen_kind { CP_LISTEN_UNIX, CP_LISTEN_INET };

struct cp_listen {
    enum cp_listen_kind kind;
    char *spec; /* as written, e.g. "inet:127.0.0.1:10031" */
    char *path; /* unix */
    char *host; /* inet */
    uint16_t port;
};

enum cp_acct_mode { CP_ACCT_TWO_PHASE, CP_ACCT_RCPT };

#define CP_MAX_TRUSTED 32 /* entries in daemon.trusted_users/_networks */

struct cp_prefix {
    struct inet_addr addr; /* masked */
    unsigned plen;
};

/* A group given in the configuration (daemon.socket_group, ...). */
struct cp_group {
    bool set;
    gid_t gid;
};

struct cp_config {
    char *file;

    /* daemon: */
    struct cp_listen *listen;
    size_t nlisten;
    char *admin_socket;
    bool log_syslog;
    enum msg_level log_level;
    char *decision_log; /* NULL: JSON lines go to the main log */
    bool shadow;
    /* who may speak for customers (daemon/trust.c): callers' uids (root
     * always) and, for TCP, their networks */
    uid_t trusted_uids[CP_MAX_TRUSTED + 3];
    size_t ntrusted_uids;
    bool trusted_users_set;
    struct cp_prefix trusted_nets[CP_MAX_TRUSTED];
    size_t ntrusted_nets;
    struct cp_group socket_group; /* policy and milter unix sockets: 0660
                                     to it */
    struct cp_group admin_read_group; /* may use the admin socket's
                                         read-only commands */
    /* daemon.user and .group: dropped to after the sockets are bound
     * (resolved by the daemon at start, daemon/privs.c); NULL: none */
    char *run_user, *run_group;

    /* protocol: */
    struct policy_limits proto;
    uint64_t idle_timeout_ms;
    uint64_t max_lifetime_ms; /* a connection is closed between requests */
    uint32_t max_connections;
    uint32_t max_connections_per_peer; /* uid (unix) or address (TCP) */
    uint32_t listen_backlog;
    bool malformed_defer; /* protocol.malformed: defer (else dunno) */

    /* store: */
    bool store_redis;         /* store.backend: redis (fleet mode) */
    struct redis_url redis;   /* store.redis, parsed; in cluster mode the
                                 password of every node */
#define CP_REDIS_MAX_SEEDS 16
    struct redis_url redis_seeds[CP_REDIS_MAX_SEEDS]; /* store.redis_cluster */
    size_t nredis_seeds;      /* > 0: Redis Cluster */
    struct redis_url redis_sentinels[CP_REDIS_MAX_SEEDS];
    size_t nredis_sentinels;  /* > 0: a primary found through Sentinel */
    char redis_master[128];   /* store.redis_master: its name there */
#define CP_REDIS_WHERE_MAX (REDIS_URL_MAX_HOST + 300)
    char *redis_text;         /* store.redis as written (has no secret
                                 when the password is in a file) */
    char *redis_password_file;
    char *redis_sentinel_password_file; /* the Sentinels' (requirepass) */
    /* rediss:// (store/tlsrelay.h): the files of store.redis_tls_ca (the
     * CA bundle; default the system's), _cert and _key (a client
     * certificate, if Redis asks for one), read at every load, and the
     * name the server's certificate must carry (store.redis_tls_name;
     * "": each node's host) */
    bool redis_tls;
    char *redis_tls_ca, *redis_tls_cert, *redis_tls_key;
    char redis_tls_name[256];
    char *redis_tls_ca_pem, *redis_tls_cert_pem, *redis_tls_key_pem;
    size_t redis_tls_ca_len, redis_tls_cert_len, redis_tls_key_len;
    uint64_t redis_connect_timeout_ms; /* store.redis_connect_timeout */
    uint64_t redis_timeout_ms;  /* store.redis_timeout: a decision waits
                                   this long for Redis, then is made from
                                   the local copy */
    uint32_t fleet_host;      /* store.fleet_host: this host's number, 1-8
                                 (0: from the host name) */
    char *store_path;
    uint64_t checkpoint_ms;
    uint32_t max_accounts; /* idle, clean ones are evicted above it */

    /* identity: */
    char *customer_map; /* NULL: no map */
    unsigned ipv4_prefix, ipv6_prefix;
    char *default_class_name, *unauth_class_name;
    const struct cp_class *default_class, *unauth_class;

    /* accounting: */
    enum cp_acct_mode acct_mode;
    uint64_t reservation_timeout_ms;
    uint32_t max_pending; /* messages between RCPT and END-OF-MESSAGE */

    struct cp_detection det;
    struct cp_delivery delivery;
    struct cp_dnsbl dnsbl;
    struct cp_notify notify;
    char *notify_template;     /* customer_template's text, or NULL */
    char *release_template;    /* release_template's text, or NULL */
    char *webhook_key;         /* the webhook's HMAC key, or NULL: unsigned */
    size_t webhook_key_len;
    struct cp_containment contain;
    struct cp_content content;
    struct cp_listen milter;   /* content.milter parsed; spec NULL: none */

    struct cp_class *classes;
    size_t nclasses;
    struct cp_slot slots[CP_MAX_SLOTS];
    size_t nslots;

    /* customer map */
    struct cp_customer **customers;
    size_t ncustomers;
    struct hmap logins;   /* login → struct cp_map_entry */
    struct hmap networks; /* (family, plen, masked bytes) → entry */
    struct hmap customer_ids; /* id → struct cp_customer */
    uint8_t v4_plens[33], v6_plens[129]; /* populated lengths, descending */
    size_t n_v4_plens, n_v6_plens;
};

/*
 * Load and validate `file` and the customer map it names. Returns NULL and
 * writes "file:line[:col]: reason" into err (CP_ERR_MAX bytes) on failure.
 */
/*
 * Where fleet mode's Redis is, for logs and --check: "HOST:PORT" (or
 * "unix:PATH"), "a Cluster with N seeds (HOST:PORT, ...)", or "primary
 * 'NAME' of N Sentinels (HOST:PORT, ...)"; at most CP_REDIS_WHERE_MAX
 * bytes with the NUL.
 */
void cp_config_redis_where(const struct cp_config *cfg, char *out, size_t n);

struct cp_config *cp_config_load(const char *file, char *err);
/* The same, with identity.customer_map replaced by `map` (NULL: none);
 * for the simulator and replay, which bring their own customers. */
struct cp_config *cp_config_load_map(const char *file, const char *map,
                                     char *err);
void cp_config_free(struct cp_config *cfg);

const struct cp_class *cp_config_class(const struct cp_config *cfg,
                                       const char *name);
const char *cp_metric_name(enum cp_metric m);
const char *cp_signal_name(enum cp_signal s);
const char *cp_action_name(enum cp_action a);
/* Are the actions of account states only logged for class `k` (NULL: any
 * class)? daemon.shadow, detection.shadow, or the class's own shadow. */
bool cp_config_state_shadow(const struct cp_config *cfg,
                            const struct cp_class *k);

/* The detection settings that apply to class `k` (NULL: the global ones):
 * detection: with the class's own weights. */
static inline const struct cp_detection *
cp_class_det(const struct cp_config *cfg, const struct cp_class *k)
{
    return k != NULL ? &k->det : &cfg->det;
}

#endif
