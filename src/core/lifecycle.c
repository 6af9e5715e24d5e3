/* lifecycle.c — see lifecycle.h. */
#include "core/lifecycle.h"

#include <string.h>

#define QUIET_S 3600 /* WATCH must stay quiet this long to become NORMAL */

static const char *const names[] = {"NORMAL",  "WATCH",       "THROTTLED",
                                    "BLOCKED", "MANUAL_HOLD", "PROBATION",
                                    "ALLOWED"};

const char *
cp_state_name(enum cp_state s)
{
    return s < CP_ST_COUNT ? names[s] : "?";
}

int
cp_state_rank(enum cp_state s)
{
    static const int rank[CP_ST_COUNT] = {0, 1, 2, 3, 3, 1, 0};

    return s < CP_ST_COUNT ? rank[s] : 0;
}

int
cp_state_urgency(enum cp_state s)
{
    /* what the abuse desk looks at first: what the evidence stopped, then
     * what a person holds, then what is watched, vouched for, normal */
    static const int urgency[CP_ST_COUNT] = {
        [CP_ST_BLOCKED] = 6,   [CP_ST_THROTTLED] = 5, [CP_ST_MANUAL_HOLD] = 4,
        [CP_ST_WATCH] = 3,     [CP_ST_PROBATION] = 2, [CP_ST_ALLOWED] = 1,
        [CP_ST_NORMAL] = 0,
    };

    return s < CP_ST_COUNT ? urgency[s] : 0;
}

int
cp_state_parse(const char *s)
{
    for (int i = 0; i < CP_ST_COUNT; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static double
block_threshold(const struct cp_detection *det, enum cp_state st,
                unsigned repeat)
{
    double b = det->block_at;

    /* a repeat offender is blocked on less evidence, never below throttle */
    b -= (det->block_at - det->throttle_at) * (repeat > 2 ? 2 : repeat) / 3;
    return st == CP_ST_PROBATION ? b / 2 : b;
}

enum cp_state
cp_lifecycle_step(const struct cp_detection *det, enum cp_state st,
                  unsigned repeat, int64_t since_s, double score,
                  int signals, int64_t now_ms)
{
    double k = st == CP_ST_PROBATION ? 0.5 : 1.0;
    int64_t in_state = now_ms / 1000 - since_s;

    if (st == CP_ST_BLOCKED || st == CP_ST_MANUAL_HOLD || st == CP_ST_ALLOWED)
        return st;
    if (score >= block_threshold(det, st, repeat) && signals >= 2)
        return CP_ST_BLOCKED;
    if (score >= det->throttle_at * k)
        return CP_ST_THROTTLED;
    switch (st) {
    case CP_ST_THROTTLED:
        return score < det->watch_at ? CP_ST_WATCH : st;
    case CP_ST_WATCH:
        return score < det->watch_at / 2 && in_state >= QUIET_S ? CP_ST_NORMAL
                                                                 : st;
    case CP_ST_PROBATION:
        return in_state * 1000 >= (int64_t)det->probation_ms &&
                       score < det->watch_at / 2
                   ? CP_ST_NORMAL
                   : st;
    default:
        return score >= det->watch_at ? CP_ST_WATCH : st;
    }
}
