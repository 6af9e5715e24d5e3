/*
 * sim.h — `chokepoint sim`: the driver (in-process engine or a live
 * chokepointd), the run, and the report. See doc/sim.md.
 */
#ifndef CP_CLI_SIM_H
#define CP_CLI_SIM_H

#include <stdio.h>
#include <time.h>

#include "cli/inproc.h"
#include "cli/simmodel.h"
#include "cli/simtruth.h"

struct sim_driver {
    bool live;
    /* --maillog: no chokepoint at all; the traffic is written as Postfix
     * logs it (log: the period, hlog: a warm start's history, truthlog: the
     * ground truth), every message accepted */
    FILE *log, *hlog, *truthlog;
    int fd;            /* live: the policy connection */
    struct inproc ip;  /* in-process engine */
    bool content;      /* in-process: the milter's fingerprints too */
    struct sim_truth truth; /* in-process: states against the logins */
    const char *trace; /* in-process: print this login's decisions */
    const struct sim *sim;
};

struct sim_kind_metrics {
    uint32_t zombies, caught;
    uint64_t spam, accepted;
    double accepted_median, accepted_p90, detect_minutes_median;
};

struct sim_metrics {
    double spam_share_before, spam_share_after;
    double spam_share_after_nocampaign; /* campaigns need content signals */
    uint32_t zombie_accounts, zombie_accounts_caught;
    double accepted_median, accepted_p90, detect_minutes_median;
    uint64_t legit_login_days, legit_login_days_deferred;
    uint32_t legit_logins, legit_logins_watched, legit_logins_throttled,
        legit_logins_blocked, zombie_logins;
    uint64_t legit_messages_deferred, legit_messages_lost;
    uint32_t legit_accounts_blocked, flagged_clean, flagged_infected;
    uint32_t infected_accounts;
    double flag_precision, flag_recall;
    struct sim_kind_metrics kind[SIM_KIND_COUNT];
};

/* simlog.c: the traffic as a Postfix mail.log, and its ground truth */
struct simlog_msg {
    uint32_t id;             /* the message (its queue id) */
    bool sasl;
    const char *login, *client, *sender, *tls_proto, *tls_cipher;
    uint64_t size;
    uint32_t nrcpt;
};
void simlog_qid(char *out, size_t n, uint32_t id, uint8_t attempt);
void simlog_submission(FILE *fp, int64_t t, const struct simlog_msg *m);
/* `buf`: per recipient its enum cp_outcome (a byte), the address, NUL */
void simlog_delivery(FILE *fp, int64_t t, uint32_t id, const char *buf,
                     size_t len);
void simlog_truth(FILE *fp, const struct sim *s, const struct sim_metrics *m);

/* simrun.c */
void sim_run(struct sim *s, struct sim_driver *d);
int sim_live_connect(struct sim_driver *d, const char *path);
/* simreport.c */
void sim_metrics(const struct sim *s, struct sim_metrics *m);
void sim_report_text(FILE *fp, const struct sim *s, const struct sim_metrics *m,
                     const char *config);
void sim_report_json(FILE *fp, const struct sim *s, const struct sim_metrics *m,
                     const char *config);
int sim_write_svg(const char *dir, const struct sim *s);
/* sim.c: report a fatal error and exit 1. */
void sim_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
