/*
 * ratelog.c — see ratelog.h.
 */
#include "util/ratelog.h"

#include "util/clock.h"
#include "util/msg.h"

void
ratelog_init(struct ratelog *r, const char *what, double rate, double burst)
{
    *r = (struct ratelog){.what = what, .rate = rate, .burst = burst,
                          .tokens = burst};
    r->t_ms = (int64_t)(clock_mono_us() / 1000);
}

bool
ratelog_allow(struct ratelog *r)
{
    int64_t now = (int64_t)(clock_mono_us() / 1000);
    double t = r->tokens + (double)(now - r->t_ms) * r->rate / 1000.0;

    r->tokens = t > r->burst ? r->burst : t;
    r->t_ms = now;
    if (r->unlogged_since > 0 && now - r->summary_ms >= 60000) {
        msg_info("%llu %s not logged in the last minute (log rate limit)",
                 (unsigned long long)r->unlogged_since, r->what);
        r->unlogged_since = 0;
        r->summary_ms = now;
    }
    if (r->tokens >= 1.0) {
        r->tokens -= 1.0;
        return true;
    }
    if (r->unlogged_since == 0)
        r->summary_ms = now;
    r->unlogged_since++;
    r->unlogged++;
    return false;
}
