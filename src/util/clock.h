/*
 * clock.h — the two clocks chokepoint reads: wall time in milliseconds
 * (decisions, stored state: it must survive restarts) and a monotonic
 * clock for measuring durations.
 */
#ifndef CP_UTIL_CLOCK_H
#define CP_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t
clock_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic, in microseconds (for durations only). */
static inline uint64_t
clock_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

#endif
