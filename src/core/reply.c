/*
 * reply.c — the words of chokepoint's answers; see reply.h.
 *
 * Trust: the texts carry no request value (sender, recipient, HELO); the
 * account key appears in a block's text, and the daemon's protocol
 * writers replace any byte that could break their framing.
 */
#include "core/reply.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/engine.h"
#include "core/lifecycle.h"

static void
describe_window(char *out, size_t n, uint64_t ms)
{
    static const struct {
        uint64_t ms;
        const char *one, *many;
    } u[] = {{86400000, "day", "days"},
             {3600000, "hour", "hours"},
             {60000, "minute", "minutes"},
             {1000, "second", "seconds"}};

    for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
        if (ms % u[i].ms == 0) {
            uint64_t k = ms / u[i].ms;

            if (k == 1)
                snprintf(out, n, "per %s", u[i].one);
            else
                snprintf(out, n, "per %llu %s", (unsigned long long)k,
                         u[i].many);
            return;
        }
    }
    snprintf(out, n, "per %llu ms", (unsigned long long)ms);
}

static void
describe_wait(char *out, size_t n, double s)
{
    if (!(s < 7 * 86400.0)) /* (NaN too) */
        snprintf(out, n, "more than a week");
    else if (s < 1)
        snprintf(out, n, "a moment");
    else if (s < 120)
        snprintf(out, n, "%.0f seconds", ceil(s));
    else if (s < 7200)
        snprintf(out, n, "%.0f minutes", ceil(s / 60));
    else
        snprintf(out, n, "%.0f hours", ceil(s / 3600));
}

static void
set(struct cp_decision *d, uint16_t code, const char *status)
{
    d->code = code;
    snprintf(d->status, sizeof(d->status), "%s", status);
}

void
cp_reply_limit(struct cp_decision *d)
{
    static const char *const what[] = {"messages", "recipients",
                                       "bytes of mail", "recipient domains"};
    const struct cp_rule *r = &d->rule;
    /* the limit applied: lower than the rule's while the account is
     * watched (WATCH, PROBATION), and then said so */
    unsigned long long max = (unsigned long long)floor(d->limit + 1e-9);
    char win[48], wait[32], now[64] = "";

    if (max < r->max)
        snprintf(now, sizeof(now), " for now (normally %llu)",
                 (unsigned long long)r->max);
    describe_window(win, sizeof(win), r->window_ms);
    describe_wait(wait, sizeof(wait), d->retry_s);
    set(d, 0, "");
    switch (d->verdict) {
    case CP_ACT_DEFER:
        set(d, 451, "4.7.1");
        snprintf(d->text, sizeof(d->text),
                 "Sending limit reached: this account may send %llu %s "
                 "%s%s; try again in %s",
                 max, what[r->metric], win, now, wait);
        break;
    case CP_ACT_REJECT:
        set(d, 550, "5.7.1");
        snprintf(d->text, sizeof(d->text),
                 "Sending limit exceeded: this account may send %llu %s %s%s",
                 max, what[r->metric], win, now);
        break;
    case CP_ACT_HOLD:
    case CP_ACT_WARN:
        snprintf(d->text, sizeof(d->text), "chokepoint: over limit %s",
                 r->name);
        break;
    case CP_ACT_PREPEND:
        snprintf(d->text, sizeof(d->text), "X-Chokepoint: over-limit %s",
                 r->name);
        break;
    default:
        d->text[0] = '\0';
    }
}

/* Where the customer finds out more: "See URL" (detection.help_url), or
 * "Contact your provider"; at most CP_TEXT_MAX bytes. */
static const char *
help(const struct cp_detection *det, char *buf, size_t n)
{
    if (det->help_url[0] == '\0')
        return "Contact your provider";
    snprintf(buf, n, "See %s", det->help_url);
    return buf;
}

/* The account as its customer knows it: the login (u:LOGIN), the address
 * or network (ip:...), the customer id (c:ID); not the internal prefix. */
static const char *
known_as(const struct cp_decision *d)
{
    const char *k = d->id.dkey;

    if (strncmp(k, "u:", 2) == 0 || strncmp(k, "c:", 2) == 0)
        return k + 2;
    if (strncmp(k, "ip:", 3) == 0)
        return k + 3;
    return k;
}

void
cp_reply_blocked(struct cp_decision *d, const struct cp_detection *det)
{
    char h[CP_TEXT_MAX];

    if (d->verdict == CP_ACT_HOLD) {
        set(d, 0, "");
        snprintf(d->text, sizeof(d->text), "chokepoint: account %s blocked",
                 d->id.dkey);
        return;
    }
    set(d, 550, "5.7.1");
    if (cp_decision_state(d) == CP_ST_MANUAL_HOLD) {
        /* a person's decision, for whatever reason: not a diagnosis */
        snprintf(d->text, sizeof(d->text),
                 "This account's mail is stopped by the provider's abuse "
                 "desk. %s (account %.60s)",
                 help(det, h, sizeof(h)), known_as(d));
        return;
    }
    snprintf(d->text, sizeof(d->text),
             "This account is blocked: it sent mail the way a compromised "
             "computer or password does. %s (account %.60s)",
             help(det, h, sizeof(h)), known_as(d));
}

void
cp_reply_throttled(struct cp_decision *d, const struct cp_detection *det)
{
    char h[CP_TEXT_MAX];

    set(d, 451, "4.7.1");
    snprintf(d->text, sizeof(d->text),
             "Unusual sending activity on this account: mail is delayed. "
             "%s",
             help(det, h, sizeof(h)));
}

void
cp_reply_campaign(struct cp_decision *d, uint32_t accounts,
                  const struct cp_detection *det)
{
    char h[CP_TEXT_MAX];

    set(d, 451, "4.7.1");
    snprintf(d->text, sizeof(d->text),
             "This message matches a spam run sent from %u accounts of this "
             "provider, so it is not accepted. %s",
             accounts, help(det, h, sizeof(h)));
}

void
cp_reply_pool(struct cp_decision *d, const char *transport)
{
    set(d, 0, "");
    snprintf(d->text, sizeof(d->text), "%s", transport);
}

const char *
cp_reply_text(const struct cp_decision *d, char *buf, size_t n)
{
    if (d->status[0] != '\0')
        snprintf(buf, n, "%s %s", d->status, d->text);
    else
        snprintf(buf, n, "%s", d->text);
    return buf;
}
