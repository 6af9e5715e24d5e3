/*
 * ratelog.h — a token bucket for log lines a peer can cause: at most
 * `rate` lines a second (burst `burst`), the rest counted and summed up in
 * one line a minute ("N <what> not logged in the last minute"), so the log
 * never grows faster than a fixed amount whatever a peer sends.
 * One owner thread.
 */
#ifndef CP_UTIL_RATELOG_H
#define CP_UTIL_RATELOG_H

#include <stdbool.h>
#include <stdint.h>

struct ratelog {
    const char *what; /* "peer warnings", for the summary line */
    double rate, burst, tokens;
    int64_t t_ms, summary_ms; /* monotonic */
    uint64_t unlogged_since;  /* since the last summary */
    uint64_t unlogged;        /* ever (status) */
};

void ratelog_init(struct ratelog *r, const char *what, double rate,
                  double burst);
/* May one more line be logged now? */
bool ratelog_allow(struct ratelog *r);

#endif
