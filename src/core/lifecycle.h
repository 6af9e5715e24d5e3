/*
 * lifecycle.h — the account states of RFC 6561-style remediation and the
 * automatic transitions driven by the evidence score:
 *
 *   NORMAL ──score ≥ watch_at──▶ WATCH ──≥ throttle_at──▶ THROTTLED
 *      ▲                           │                        │
 *      └── score < watch_at/2 ─────┘  ◀── score < watch_at ─┘
 *   any ──score ≥ block_at (lower after each incident)──▶ BLOCKED
 *   BLOCKED / MANUAL_HOLD ──release (person)──▶ PROBATION ──quiet for
 *   `probation`──▶ NORMAL;   PROBATION uses half the thresholds.
 *
 * BLOCKED and MANUAL_HOLD are only left by a person (chokepoint release),
 * and so is ALLOWED (chokepoint allow; release returns it to NORMAL).
 * Pure: no I/O, no clock.
 */
#ifndef CP_CORE_LIFECYCLE_H
#define CP_CORE_LIFECYCLE_H

#include <stdint.h>

#include "core/config.h"

enum cp_state {
    CP_ST_NORMAL,
    CP_ST_WATCH,
    CP_ST_THROTTLED,
    CP_ST_BLOCKED,
    CP_ST_MANUAL_HOLD,
    CP_ST_PROBATION,
    CP_ST_ALLOWED, /* a person vouched for it: evidence is kept, no state
                      action; limits still apply (chokepoint allow) */
    CP_ST_COUNT
};

/* How urgent an account in this state is for the abuse desk (chokepoint
 * top): BLOCKED, THROTTLED, MANUAL_HOLD, WATCH, PROBATION, ALLOWED,
 * NORMAL, highest first. */
int cp_state_urgency(enum cp_state s);
const char *cp_state_name(enum cp_state s);
/* How far a state goes against an account's mail, for "the worst state
 * reached": 0 NORMAL, ALLOWED; 1 WATCH, PROBATION (limits halved);
 * 2 THROTTLED; 3 BLOCKED, MANUAL_HOLD. */
int cp_state_rank(enum cp_state s);
/* Parse a state name; -1 if unknown. */
int cp_state_parse(const char *s);

/*
 * The state an account moves to, given its score now. `repeat` is the
 * number of earlier blocks (each lowers block_at), `since_s` when the
 * current state began, `signals` how many different signals back the score
 * (cp_evidence_corroboration): one signal alone, however strong, never
 * blocks — it can throttle.
 */
enum cp_state cp_lifecycle_step(const struct cp_detection *det,
                                enum cp_state st, unsigned repeat,
                                int64_t since_s, double score, int signals,
                                int64_t now_ms);

#endif
