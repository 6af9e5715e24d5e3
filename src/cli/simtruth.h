/*
 * simtruth.h — the simulator's ground truth of chokepoint's accounts:
 * every state change the engine makes is recorded, as the worst state
 * reached, against the simulated logins (or unauth_relay zombies) its
 * account names (struct sim: worst[], zombies[].worst).
 */
#ifndef CP_CLI_SIMTRUTH_H
#define CP_CLI_SIMTRUTH_H

#include <stdio.h>

#include "cli/simmodel.h"
#include "core/config.h"
#include "core/engine.h"
#include "util/hmap.h"

struct sim_truth {
    struct hmap map; /* account key → the logins it names */
    struct sim *s;
    /* --explain: every legitimate login throttled or blocked, with the
     * evidence (from `store`) and what it was doing (`cause`) */
    FILE *explain;
    struct cp_store *store;
    const struct cp_config *cfg;
    const char *cause;
};

/* Index the keys of every login and unauth_relay zombie of `s` as the
 * engine of `cfg` keys them. */
void sim_truth_init(struct sim_truth *t, struct sim *s,
                    const struct cp_config *cfg);
void sim_truth_fini(struct sim_truth *t);
/* An account's state changed (inproc's on_change; arg: the struct
 * sim_truth). */
void sim_truth_transition(void *arg, const struct cp_decision *d,
                          const struct cp_event *ev, int64_t now_ms);

#endif
