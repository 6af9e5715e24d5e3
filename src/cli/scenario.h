/*
 * scenario.h — the simulator's scenario file (doc/sim.md): the span, the
 * customer population by class with its legitimate behaviour, and the
 * infections with their kinds, counts and rates.
 */
#ifndef CP_CLI_SCENARIO_H
#define CP_CLI_SCENARIO_H

#include <stdbool.h>
#include <stdint.h>

#define SIM_MAX_CLASSES 8
#define SIM_MAX_INFECTIONS 16
#define SIM_NAME_MAX 64

enum sim_diurnal { SIM_DIURNAL_RESIDENTIAL, SIM_DIURNAL_BUSINESS,
                   SIM_DIURNAL_FLAT };

enum sim_helo {
    SIM_HELO_DEFAULT,  /* the kind's usual */
    SIM_HELO_OWN,      /* the infected PC's own name (as its owner's mail) */
    SIM_HELO_RANDOM,   /* a made-up name per connection (spamware) */
    SIM_HELO_FIXED,    /* one foreign name (the spammer's machine) */
    SIM_HELO_RECIPIENT, /* the recipient's domain */
};

enum sim_tls {
    SIM_TLS_DEFAULT,   /* the kind's usual */
    SIM_TLS_OWN,       /* the infected PC's own mail client's stack */
    SIM_TLS_OTHER,     /* another stack (the spammer's tool) */
    SIM_TLS_NONE,      /* plaintext (a bot's own SMTP engine) */
};

/* The customer map the simulator gives chokepoint. */
enum sim_map {
    SIM_MAP_CUSTOMERS, /* a customer's logins grouped, with its domains */
    SIM_MAP_LOGINS,    /* every login its own customer, with its class */
    SIM_MAP_NONE,      /* no map: every login its own account, default
                          class */
};

enum sim_kind {
    SIM_BLASTER,     /* as fast as the server takes it, forged senders */
    SIM_LOWSLOW,     /* a few dozen an hour, round the clock */
    SIM_CAMPAIGN,    /* many zombies, a handful each, same hour */
    SIM_STOLEN,      /* one login from many unrelated networks */
    SIM_UNAUTH,      /* no login: relayed by client address */
    SIM_KIND_COUNT
};

struct sim_lognormal {
    double median, sigma, max;
};

struct sim_count {
    double mean;   /* 1 + geometric */
    uint32_t max;
};

struct sim_burst {          /* a legitimate burst, once in the period */
    double share;           /* of the class's active customers */
    uint32_t messages;
    uint64_t within_ms;
    struct sim_count recipients;
    double size_spread;     /* one template: sigma of ln(size) around it */
    double shared;          /* of the bursts, one text common to all (a
                               chain letter, the same e-card) */
};

struct sim_newsletter {     /* a weekly send to a big list */
    double share;           /* of the class's customers who send one */
    uint32_t recipients;    /* 0: none */
    uint32_t per_message;   /* recipients per message (BCC batches) */
    int weekday;            /* 0 = Monday */
    uint32_t hour;
    uint32_t per_minute;    /* messages per minute while sending */
    double invalid_share;   /* subscribers that no longer exist at the
                               start (the list is never cleaned) */
    double decay;           /* more of them die per day (delivered before,
                               bounce after: a list going stale) */
    double size_spread;     /* one issue: sigma of ln(size) around it */
};

/*
 * A business: several logins of one customer. Each staff login is one
 * person's, sent as that person's address at the company's domains; a
 * shared office login (office@) is used by several people, each sending
 * as their own address. People send from the office during office hours,
 * and from home (a line of a regional ISP) or a phone (a mobile carrier's
 * address pool) otherwise.
 */
struct sim_staff {
    struct sim_count logins;  /* staff logins per customer; {1,1}: one
                                 login, the customer's (no staff model) */
    double shared_share;      /* customers with a shared office login */
    struct sim_count people;  /* people using the shared login */
    uint32_t domains;         /* the customer's own mail domains */
    double home_share;        /* of a person's mail sent from home */
    double phone_share;       /* ... from a phone */
    double role_share;        /* sent as a role address (info@, sales@)
                                 or at the customer's second domain */
};

/*
 * A company's own mail server relaying all its mail through the
 * smarthost: one login (mx@ its domain) or, for a class without SASL, its
 * address. Its people's mail goes through it (as a shared login's, the
 * staff model's `people`), at any hour, and so does what it passes on for
 * others: out-of-office replies (the null sender, to whoever wrote in),
 * backscatter (bounces of the spam it received for users who left, to
 * the spam's forged senders) and forwards of its users' incoming mail to
 * their freemail mailboxes (the original sender, no SRS; some of it the
 * day's spam runs, which the mailbox refuses).
 */
struct sim_server {
    double share;           /* of the class's customers: run their own */
    double replies;         /* out-of-office replies a day (mean) */
    double backscatter;     /* bounces of received spam a day (mean) */
    double heavy_share;     /* servers with ten times that */
    double forwarders;      /* people whose mail is forwarded (Poisson
                               mean, at most the server's people) */
    double forwards;        /* forwarded messages a day per forwarder */
    double forward_spam;    /* of them the day's spam runs */
};

struct sim_retry {
    uint64_t after_ms;      /* 0: no retry */
    uint32_t attempts;      /* retries after the first try */
};

struct sim_class {
    char name[SIM_NAME_MAX];    /* the chokepoint class */
    uint32_t customers;
    double active_share;
    struct sim_lognormal per_day; /* messages per active customer-day */
    struct sim_count recipients;
    struct sim_lognormal size;
    int diurnal;                /* enum sim_diurnal */
    double weekend;             /* weekend-day volume vs a weekday */
    uint32_t address_book;
    double new_recipient_share;
    double invalid_share;       /* new recipients that do not exist
                                   (typos, stale addresses): bounce */
    double roaming_share;       /* customers also sending from elsewhere */
    double cgnat_share;         /* customers behind shared addresses */
    double tls_share;           /* customers whose mail client uses TLS */
    double alias_share;         /* customers who also send as another
                                   address of theirs (family, alias) */
    bool sasl;                  /* false: relayed by client address */
    struct sim_staff staff;
    struct sim_server server;
    struct sim_burst burst;
    struct sim_newsletter newsletter;
    struct sim_retry retry;
};

struct sim_infection {
    int kind;                   /* enum sim_kind */
    char class_name[SIM_NAME_MAX];
    int cls;                    /* index into scenario.cls */
    uint32_t accounts;          /* after calibration */
    bool calibrate;             /* scale `accounts` to reach spam_share */
    double volume_share;        /* of the spam volume, for calibration */
    uint64_t start_from_ms, start_to_ms; /* offsets from the start */
    uint64_t duration_min_ms, duration_max_ms;
    double rate_per_hour;
    struct sim_count recipients;
    uint32_t per_zombie;        /* campaign: messages per zombie */
    uint64_t within_ms;         /* campaign: all zombies within this */
    uint32_t networks;          /* stolen credentials: networks used */
    double forge_share;         /* spam with a forged envelope sender (the
                                   rest uses the account's own address);
                                   < 0: the kind's default */
    double invalid_share;       /* recipients that do not exist (harvested
                                   and guessed lists); < 0: kind's default */
    double rejected_share;      /* refused as spam by the receiver (5.7.1) */
    int helo;                   /* enum sim_helo */
    int tls;                    /* enum sim_tls */
    double size_spread;         /* sigma of the log of spam sizes (a
                                   template varies little) */
    /* content (the milter's fingerprints): the zombies send `campaigns`
     * texts at a time (zombie i the i-th modulo), a new one every
     * `rotate` (0: never); two copies of one text are `similarity` alike
     * (Jaccard of their word 3-grams: personalised, hash-busted) */
    uint32_t campaigns;
    uint64_t rotate_ms;
    double similarity;
    struct sim_retry retry;
};

struct scenario {
    char file[256];
    char name[128];
    uint32_t seed;
    int64_t start_ms;
    uint32_t days;
    double spam_share;          /* target with no chokepoint; 0: none */
    bool delivery;              /* feed delivery outcomes (bounces) to the
                                   engine, as the mail-log follower does */
    uint64_t history_ms;        /* warm start: legitimate mail of this long
                                   before `start` is learned first (as
                                   `chokepoint learn` does); 0: a cold
                                   start, the day of deployment */
    int map;                    /* enum sim_map */
    struct sim_class cls[SIM_MAX_CLASSES];
    uint32_t ncls;
    struct sim_infection inf[SIM_MAX_INFECTIONS];
    uint32_t ninf;
};

/* Load and check. 0, or -1 with `err` (YW_ERR_MAX bytes). */
int scenario_load(const char *file, struct scenario *sc, char *err);
const char *sim_kind_name(int kind);

#endif
