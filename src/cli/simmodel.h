/*
 * simmodel.h — the simulator's world: customers (senders), infections
 * (zombies), the time-ordered stream of message events, and what happened
 * to each (the ground truth and the outcomes the report is made of).
 *
 * Ownership: one struct sim owns everything; sim_free() releases it.
 */
#ifndef CP_CLI_SIMMODEL_H
#define CP_CLI_SIMMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/scenario.h"
#include "util/rng.h"

#define SIM_HOUR 3600000LL
#define SIM_DAY 86400000LL

enum sim_sender_flags {
    SIM_ACTIVE = 1,     /* sends legitimate mail in the period */
    SIM_ROAMING = 2,    /* sometimes sends from another network */
    SIM_INFECTED = 4,   /* has at least one infection */
    SIM_FLAGGED = 8,    /* chokepoint deferred or refused any of its mail */
    SIM_BURST = 16,     /* does one legitimate burst */
    SIM_ALIAS = 32,     /* also sends as an alias address */
    SIM_STAFF = 64,     /* a login of a business with the staff model */
    SIM_SHARED = 128,   /* a shared office login (office@) */
    SIM_SERVER = 256,   /* a company's own mail server (scenario `server:`):
                           one login or address relays its people's mail
                           and what it passes on for others */
};

/* One login (one credential), or for mail relayed by client address one
 * address. Most classes have one login per customer; a business with the
 * staff model (scenario `staff:`) has several, of one customer. */
struct sim_sender {
    uint32_t cls;
    uint32_t ip;             /* home IPv4 (business: the office), host order */
    uint32_t cust;           /* the customer it belongs to */
    float per_day;           /* legitimate messages per weekday */
    uint16_t flags;
    uint8_t people;          /* people who use it (a shared login: > 1) */
    uint16_t slot;           /* its number among the customer's logins */
};

struct sim_zombie {          /* one infection of one account */
    uint32_t sender;         /* the infected login */
    uint32_t inf;            /* index into scenario.inf */
    uint32_t ip;             /* unauth relay: its address */
    int64_t start_ms, end_ms;
    uint32_t spam_sent, spam_accepted;
    int64_t first_stop_ms;   /* first deferral/refusal, -1: never */
    uint8_t worst;           /* unauth_relay: its address's account's worst
                                state (enum sim_rank) */
};

/* How far chokepoint went with an account (its worst state: the values
 * of cp_state_rank). */
enum sim_rank { SIM_RANK_NORMAL, SIM_RANK_WATCH, SIM_RANK_THROTTLED,
                SIM_RANK_BLOCKED };

enum sim_event_type { EV_LEGIT, EV_BURST, EV_NEWSLETTER, EV_SPAM, EV_RELAY };

/* EV_RELAY: what a mail server passes on for others (its event's `part`:
 * the kind, and for a forward the forwarding person << 2) */
enum sim_relay { RELAY_REPLY, RELAY_BOUNCE, RELAY_FORWARD };

struct sim_event {
    int64_t t_ms;
    uint32_t who;            /* sender (legit) or zombie (spam) */
    uint32_t id;             /* the message: seeds its content */
    uint32_t part;           /* newsletter: its message number in the
                                issue; EV_RELAY: enum sim_relay, and the
                                forwarder << 2 */
    uint8_t type;
    uint8_t attempt;         /* 0: first try */
};

enum sim_outcome { SIM_DELIVERED, SIM_DEFERRED, SIM_REFUSED };

struct sim_series {          /* per hour of the period */
    uint32_t *ham_tried, *ham_sent, *spam_tried, *spam_sent, *legit_defer;
    uint32_t hours;
};

struct sim_totals {
    uint64_t ham, ham_delivered, ham_deferred_any, ham_lost;
    uint64_t spam, spam_delivered;
    uint64_t attempts, requests;
    uint64_t held;           /* HOLD: stopped, in the hold queue */
    uint64_t spam_pooled, ham_pooled; /* delivered with FILTER: through the
                                         reputation pool */
    uint64_t outcomes[4];    /* delivery outcomes reported, by
                                enum cp_outcome */
    /* what deferred or refused legitimate mail (attempts): a limit (by
     * rule name), the login's or its customer's state, or the content
     * check; SIM_WHY_MAX reasons, the rest as "other" */
#define SIM_WHY_MAX 16
    struct sim_why {
        char name[32];
        uint64_t n;
    } why[SIM_WHY_MAX];
    uint32_t nwhy;
};

struct sim {
    struct scenario sc;
    struct rng rng;
    struct sim_sender *senders;
    uint32_t nsenders;
    uint32_t class_first[SIM_MAX_CLASSES]; /* first sender of each class */
    uint32_t class_n[SIM_MAX_CLASSES];     /* its senders (logins) */
    uint32_t ncust;          /* customers (a business's logins are one) */
    struct sim_zombie *zombies;
    uint32_t nzombies, capzombies;
    struct sim_event *ev;    /* first tries, sorted by time; those before
                                sc.start_ms are the history of a warm
                                start (legitimate mail, learned) */
    uint64_t nev, capev;
    uint8_t *custday;        /* [sender * days + day]: bit 0 had legit
                                mail, bit 1 a legit deferral */
    uint8_t *worst;          /* [sender]: its login's worst state in the
                                period (enum sim_rank; in-process only) */
    bool ranked;             /* worst[] was recorded (not --live) */
    struct sim_series series;
    struct sim_totals tot;
    double legit_expected;   /* expected legitimate messages (calibration) */
    double wall_s;
};

/* simgen.c: population, infections (calibrated), first-try events. */
void sim_generate(struct sim *s);
void sim_free(struct sim *s);
/* Hourly weight (sums to 24 over a day) of a diurnal profile. */
double sim_diurnal(int profile, int hour);
/* The login of a sender (its SASL username). */
void sim_login(const struct sim *s, char *out, size_t n, uint32_t sender);
/* A customer's own mail domain number `i` (staff model). */
void sim_domain(char *out, size_t n, uint32_t cust, uint32_t i);
void sim_format_ip(char *out, size_t n, uint32_t ip);

#endif
