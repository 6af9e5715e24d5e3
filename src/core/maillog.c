/*
 * maillog.c — Postfix mail.log framer and line parser; see maillog.h for
 * the contract.
 *
 * Design: one pass over the line with a cursor, no copies. The header
 * (timestamp, host, service) is read first and the time is resolved only
 * when the whole header is good, so a garbage line never moves the year.
 * The text after "QID: " is a list of "key=value" fields separated by
 * ", "; a value runs to the next ", key=" so that values with commas
 * (reply texts) stay whole. A record chokepoint uses but cannot read (a
 * client= without brackets, a to= without status=) is MAILLOG_UNKNOWN, so
 * the caller can count it; everything else Postfix writes (connect,
 * warnings, statistics, TLS) is MAILLOG_OTHER.
 *
 * Limits: a line is at most MAILLOG_MAX_LINE bytes (the framer skips longer
 * ones); queue ids at most MAILLOG_MAX_QUEUE_ID. Numbers are parsed with
 * overflow checks; years are limited to 1970..9999.
 */
#include "core/maillog.h"

#include <string.h>

#include "util/parse.h"

#define DAY_MS 86400000LL

static const char *const kind_names[MAILLOG_KIND_COUNT] = {
    "unknown",   "other",    "smtpd_client", "pickup",       "cleanup_msgid",
    "qmgr_from", "delivery", "qmgr_removed", "notification", "reject",
    "smtpd_connect", "smtpd_tls"};

const char *
maillog_kind_name(enum maillog_kind k)
{
    return k < MAILLOG_KIND_COUNT ? kind_names[k] : "unknown";
}

/* ---- cursor helpers: (s, len, *pos), never past len ---- */

static bool
lit(const char *s, size_t len, size_t *pos, const char *l)
{
    size_t n = strlen(l);

    if (len - *pos < n || memcmp(s + *pos, l, n) != 0)
        return false;
    *pos += n;
    return true;
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Between `min` and `max` decimal digits (max <= 9) into *out. */
static bool
num(const char *s, size_t len, size_t *pos, size_t min, size_t max, int *out)
{
    size_t p = *pos;
    int v = 0;

    while (p < len && p - *pos < max && is_digit(s[p]))
        v = v * 10 + (s[p++] - '0');
    if (p - *pos < min)
        return false;
    *pos = p;
    *out = v;
    return true;
}

static bool
str_is(struct str s, const char *l)
{
    return s.p != NULL && s.len == strlen(l) && memcmp(s.p, l, s.len) == 0;
}

static struct str
mkstr(const char *p, size_t len)
{
    struct str s = {p, len};

    return s;
}

/* ---- time ---- */

struct stamp {
    int year; /* 0: classic, year from the context */
    int mon;  /* 0-11 */
    int day, hour, min, sec, ms;
    int off_min; /* RFC 3339 offset east of UTC */
};

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
year_of_days(int64_t z)
{
    int64_t era, doe, yoe, y, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    return (int)(y + (mp >= 10));
}

static int64_t
stamp_ms(const struct stamp *t, int year)
{
    int64_t days = days_from_civil(year, t->mon + 1, t->day);

    return ((days * 24 + t->hour) * 60 + t->min - t->off_min) * 60000LL +
           t->sec * 1000LL + t->ms;
}

/* ".123456": the first three digits are milliseconds, the rest ignored. */
static void
fraction(const char *s, size_t len, size_t *pos, int *ms)
{
    size_t p = *pos + 1, n = 0;

    *ms = 0;
    if (*pos >= len || s[*pos] != '.' || p >= len || !is_digit(s[p]))
        return;
    for (; p < len && is_digit(s[p]); p++, n++)
        if (n < 3)
            *ms = *ms * 10 + (s[p] - '0');
    for (; n < 3; n++)
        *ms *= 10;
    *pos = p;
}

static bool
clock_ok(const struct stamp *t)
{
    return t->day >= 1 && t->day <= 31 && t->hour < 24 && t->min < 60 &&
           t->sec <= 60;
}

/* "hh:mm:ss[.fff]" */
static bool
parse_hms(const char *s, size_t len, size_t *pos, struct stamp *t)
{
    if (!num(s, len, pos, 2, 2, &t->hour) || !lit(s, len, pos, ":") ||
        !num(s, len, pos, 2, 2, &t->min) || !lit(s, len, pos, ":") ||
        !num(s, len, pos, 2, 2, &t->sec))
        return false;
    fraction(s, len, pos, &t->ms);
    return true;
}

/* "Nov 23 16:03:30", "Nov  3 16:03:30.123456" */
static bool
parse_classic(const char *s, size_t len, size_t *pos, struct stamp *t)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    size_t p = *pos;

    if (len - p < 4 || s[p + 3] != ' ')
        return false;
    for (t->mon = 0; t->mon < 12; t->mon++)
        if (memcmp(s + p, months + 3 * t->mon, 3) == 0)
            break;
    if (t->mon == 12)
        return false;
    p += 4;
    if (p < len && s[p] == ' ')
        p++;
    if (!num(s, len, &p, 1, 2, &t->day) || !lit(s, len, &p, " ") ||
        !parse_hms(s, len, &p, t) || !clock_ok(t))
        return false;
    t->year = 0;
    t->off_min = 0;
    *pos = p;
    return true;
}

/* "Z", "+01:00", "-0500" */
static bool
parse_offset(const char *s, size_t len, size_t *pos, int *off_min)
{
    int sign, h, m;

    if (*pos < len && (s[*pos] == 'Z' || s[*pos] == 'z')) {
        (*pos)++;
        *off_min = 0;
        return true;
    }
    if (*pos >= len || (s[*pos] != '+' && s[*pos] != '-'))
        return false;
    sign = s[(*pos)++] == '-' ? -1 : 1;
    if (!num(s, len, pos, 2, 2, &h))
        return false;
    lit(s, len, pos, ":");
    if (!num(s, len, pos, 2, 2, &m) || h > 23 || m > 59)
        return false;
    *off_min = sign * (h * 60 + m);
    return true;
}

/* "2026-11-23T16:03:30.123456+00:00" */
static bool
parse_rfc3339(const char *s, size_t len, size_t *pos, struct stamp *t)
{
    size_t p = *pos;

    if (!num(s, len, &p, 4, 4, &t->year) || !lit(s, len, &p, "-") ||
        !num(s, len, &p, 2, 2, &t->mon) || !lit(s, len, &p, "-") ||
        !num(s, len, &p, 2, 2, &t->day) || p >= len ||
        (s[p] != 'T' && s[p] != 't'))
        return false;
    p++;
    if (!parse_hms(s, len, &p, t) || !parse_offset(s, len, &p, &t->off_min))
        return false;
    if (t->year < 1970 || t->mon < 1 || t->mon > 12 || !clock_ok(t))
        return false;
    t->mon--;
    *pos = p;
    return true;
}

void
maillog_ctx_init(struct maillog_ctx *c, int year, int64_t now_ms)
{
    c->year = year > 0 ? year : 0;
    c->now_ms = now_ms;
    c->last_mon = -1;
}

/* The year of a classic timestamp; moves the context across New Year. */
static int
classic_year(struct maillog_ctx *c, const struct stamp *t)
{
    if (c->year == 0) {
        int y = year_of_days(c->now_ms / DAY_MS);

        if (stamp_ms(t, y) > c->now_ms + DAY_MS)
            y--;
        c->year = y;
    } else if (c->last_mon >= 0 && t->mon + 6 <= c->last_mon) {
        c->year++; /* December → January */
    } else if (c->last_mon >= 0 && t->mon >= c->last_mon + 6) {
        return c->year - 1; /* a late line of last year: state unchanged */
    }
    c->last_mon = t->mon;
    return c->year;
}

static int64_t
resolve_time(struct maillog_ctx *c, const struct stamp *t)
{
    if (t->year != 0) {
        c->year = t->year;
        c->last_mon = t->mon;
        return stamp_ms(t, t->year);
    }
    return stamp_ms(t, classic_year(c, t));
}

/* ---- header: [<PRI>]TIMESTAMP HOST SERVICE[PID]: ---- */

static size_t
run_until(const char *s, size_t len, size_t p, const char *stops)
{
    while (p < len && strchr(stops, s[p]) == NULL)
        p++;
    return p;
}

/* "postfix-out/submission/smtpd" → instance "postfix-out", program
 * "smtpd"; a service without '/' is not Postfix (both stay absent). */
static void
split_service(struct maillog_event *ev)
{
    const char *s = ev->service.p;
    size_t n = ev->service.len, first = n, last = n;

    for (size_t i = 0; i < n; i++) {
        if (s[i] != '/')
            continue;
        if (first == n)
            first = i;
        last = i;
    }
    if (first == n || first == 0 || last + 1 == n)
        return;
    ev->instance = mkstr(s, first);
    ev->program = mkstr(s + last + 1, n - last - 1);
}

/* "<NNN>" or "[NNN]": a number in the given brackets, if present. */
static bool
bracketed(const char *s, size_t len, size_t *pos, const char *open,
          const char *close, size_t maxdig)
{
    size_t p = *pos;
    int v;

    if (!lit(s, len, &p, open))
        return true; /* absent is fine */
    if (!num(s, len, &p, 1, maxdig, &v) || !lit(s, len, &p, close))
        return false;
    *pos = p;
    return true;
}

static bool
parse_header(const char *s, size_t len, size_t *pos, struct stamp *t,
             struct maillog_event *ev)
{
    size_t p = *pos, q;

    if (!bracketed(s, len, &p, "<", ">", 3))
        return false;
    if (p < len && is_digit(s[p]) ? !parse_rfc3339(s, len, &p, t)
                                  : !parse_classic(s, len, &p, t))
        return false;
    if (!lit(s, len, &p, " "))
        return false;
    q = run_until(s, len, p, " ");
    if (q == p || q >= len)
        return false;
    ev->host = mkstr(s + p, q - p);
    p = q + 1;
    q = run_until(s, len, p, " :[");
    if (q == p || q >= len || s[q] == ' ')
        return false;
    ev->service = mkstr(s + p, q - p);
    p = q;
    q = p + 1;
    if (!bracketed(s, len, &p, "[", "]", 9))
        return false;
    if (p > q + 1)
        ev->pid = mkstr(s + q, p - q - 1);
    if (!lit(s, len, &p, ":"))
        return false;
    lit(s, len, &p, " ");
    split_service(ev);
    *pos = p;
    return true;
}

/* ---- fields: "key=value, key=value" ---- */

static bool
is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || c == '_';
}

static bool
key_follows(const char *s, size_t len, size_t p)
{
    size_t k = p;

    while (p < len && is_key_char(s[p]))
        p++;
    return p > k && p < len && s[p] == '=';
}

/* Index of the ", " that ends the value starting at p, or len. */
static size_t
value_end(const char *s, size_t len, size_t p)
{
    const char *c;

    while (p < len && (c = memchr(s + p, ',', len - p)) != NULL) {
        size_t i = (size_t)(c - s);

        if (i + 1 < len && s[i + 1] == ' ' && key_follows(s, len, i + 2))
            return i;
        p = i + 1;
    }
    return len;
}

/* Next field at *pos; false at the end or if no "key=" is there. */
static bool
next_field(const char *s, size_t len, size_t *pos, struct str *k,
           struct str *v)
{
    size_t p = *pos, e;

    if (!key_follows(s, len, p))
        return false;
    e = p;
    while (s[e] != '=')
        e++;
    *k = mkstr(s + p, e - p);
    p = e + 1;
    e = value_end(s, len, p);
    *v = mkstr(s + p, e - p);
    *pos = e < len ? e + 2 : len;
    return true;
}

/* "<addr>" → "addr" (possibly empty); false without the brackets. */
static bool
strip_angle(struct str *v)
{
    if (v->len < 2 || v->p[0] != '<' || v->p[v->len - 1] != '>')
        return false;
    v->p++;
    v->len -= 2;
    return true;
}

/* The leading run of digits of "12 (queue active)". */
static bool
leading_u64(struct str v, uint64_t *out)
{
    size_t n = 0;

    while (n < v.len && is_digit(v.p[n]))
        n++;
    return parse_u64(v.p, n, out);
}

static struct str
first_word(struct str v)
{
    const char *sp = memchr(v.p, ' ', v.len);

    return mkstr(v.p, sp ? (size_t)(sp - v.p) : v.len);
}

/* ---- records ---- */

/* "name[addr]" or "name[addr]:port" */
static bool
split_client(struct str v, struct maillog_event *ev)
{
    const char *lb = memchr(v.p, '[', v.len), *rb, *end = v.p + v.len;
    uint64_t port;

    if (lb == NULL || (rb = memchr(lb, ']', (size_t)(end - lb))) == NULL ||
        rb == lb + 1)
        return false;
    if (rb + 1 < end &&
        (rb[1] != ':' || !parse_u64(rb + 2, (size_t)(end - rb - 2), &port)))
        return false;
    ev->client_name = mkstr(v.p, (size_t)(lb - v.p));
    ev->client_addr = mkstr(lb + 1, (size_t)(rb - lb - 1));
    return true;
}

static enum maillog_kind
parse_client(const char *s, size_t len, struct maillog_event *ev)
{
    struct str k, v;
    size_t p = 0;
    bool client = false;

    while (next_field(s, len, &p, &k, &v)) {
        if (str_is(k, "client")) {
            if (!split_client(v, ev))
                return MAILLOG_UNKNOWN;
            client = true;
        } else if (str_is(k, "sasl_method") && v.len > 0) {
            ev->sasl_method = v;
        } else if (str_is(k, "sasl_username") && v.len > 0) {
            ev->sasl_username = v;
        } else if (str_is(k, "orig_queue_id") && v.len > 0) {
            ev->orig_queue_id = v;
        }
    }
    return client ? MAILLOG_SMTPD_CLIENT : MAILLOG_UNKNOWN;
}

static enum maillog_kind
parse_qmgr_from(const char *s, size_t len, struct maillog_event *ev)
{
    struct str k, v;
    size_t p = 0;
    bool from = false, size = false, nrcpt = false;

    while (next_field(s, len, &p, &k, &v)) {
        if (str_is(k, "from")) {
            if (!strip_angle(&v))
                return MAILLOG_UNKNOWN;
            ev->from = v;
            from = true;
        } else if (str_is(k, "size")) {
            if (!parse_u64(v.p, v.len, &ev->size))
                return MAILLOG_UNKNOWN;
            size = true;
        } else if (str_is(k, "nrcpt")) {
            if (!leading_u64(v, &ev->nrcpt))
                return MAILLOG_UNKNOWN;
            nrcpt = true;
        }
    }
    if (!from)
        return MAILLOG_UNKNOWN;
    /* "from=<x>, status=expired, returned to sender" is another record. */
    return size && nrcpt ? MAILLOG_QMGR_FROM : MAILLOG_OTHER;
}

static enum maillog_kind
parse_delivery(const char *s, size_t len, struct maillog_event *ev)
{
    struct str k, v;
    size_t p = 0;

    while (next_field(s, len, &p, &k, &v)) {
        if (str_is(k, "to")) {
            if (!strip_angle(&v))
                return MAILLOG_UNKNOWN;
            ev->to = v;
        } else if (str_is(k, "relay")) {
            ev->relay = v;
        } else if (str_is(k, "dsn")) {
            ev->dsn = v;
        } else if (str_is(k, "status")) {
            /* The rest is the remote reply: commas there are not fields. */
            ev->status = first_word(mkstr(v.p, len - (size_t)(v.p - s)));
            break;
        }
    }
    return ev->to.p && ev->status.p && ev->status.len > 0 ? MAILLOG_DELIVERY
                                                          : MAILLOG_UNKNOWN;
}

/* "uid=0 from=<root>" */
static enum maillog_kind
parse_pickup(const char *s, size_t len, struct maillog_event *ev)
{
    const char *f = memmem(s, len, " from=<", 7);
    struct str v;

    if (f == NULL)
        return MAILLOG_UNKNOWN;
    v = mkstr(f + 6, len - (size_t)(f + 6 - s));
    if (!strip_angle(&v))
        return MAILLOG_UNKNOWN;
    ev->from = v;
    return MAILLOG_PICKUP;
}

/* A queue id: 5..MAILLOG_MAX_QUEUE_ID letters and digits with at least one
 * digit or capital ("warning", "fatal" are not queue ids). */
static bool
queue_id_ok(const char *s, size_t n)
{
    bool mark = false;

    if (n < 5 || n > MAILLOG_MAX_QUEUE_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (is_digit(c) || (c >= 'A' && c <= 'Z'))
            mark = true;
        else if (!(c >= 'a' && c <= 'z'))
            return false;
    }
    return mark;
}

/* "sender non-delivery notification: NEWQID" and its siblings. */
static enum maillog_kind
parse_notification(const char *s, size_t len, struct maillog_event *ev)
{
    const char *n = memmem(s, len, " notification: ", 15);
    size_t off;

    if (n == NULL)
        return MAILLOG_OTHER;
    off = (size_t)(n + 15 - s);
    if (!queue_id_ok(s + off, len - off))
        return MAILLOG_UNKNOWN;
    ev->new_queue_id = mkstr(s + off, len - off);
    return MAILLOG_NOTIFICATION;
}

static enum maillog_kind
parse_reject(const char *s, size_t len, size_t p, struct maillog_event *ev)
{
    ev->reject_stage = first_word(mkstr(s + p, len - p));
    return ev->reject_stage.len > 0 ? MAILLOG_REJECT : MAILLOG_UNKNOWN;
}

/* Text after "QID: ". */
static enum maillog_kind
parse_record(const char *s, size_t len, struct maillog_event *ev)
{
    size_t p = 0;

    if (lit(s, len, &p, "reject: ") || lit(s, len, &p, "milter-reject: "))
        return parse_reject(s, len, p, ev);
    if (str_is(ev->program, "smtpd") && len > 7 && memcmp(s, "client=", 7) == 0)
        return parse_client(s, len, ev);
    if (str_is(ev->program, "qmgr")) {
        if (len == 7 && memcmp(s, "removed", 7) == 0)
            return MAILLOG_QMGR_REMOVED;
        if (len > 6 && memcmp(s, "from=<", 6) == 0)
            return parse_qmgr_from(s, len, ev);
    }
    if (str_is(ev->program, "pickup") && lit(s, len, &p, "uid="))
        return parse_pickup(s, len, ev);
    if (str_is(ev->program, "cleanup") && lit(s, len, &p, "message-id=")) {
        ev->message_id = mkstr(s + p, len - p);
        return MAILLOG_CLEANUP_MSGID;
    }
    if (len > 4 && memcmp(s, "to=<", 4) == 0)
        return parse_delivery(s, len, ev);
    if (lit(s, len, &p, "sender "))
        return parse_notification(s, len, ev);
    return MAILLOG_OTHER;
}

/*
 * smtpd's lines about a connection (no queue id yet): "connect from
 * NAME[ADDR]" and "Anonymous TLS connection established from NAME[ADDR]:
 * TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" (also
 * Trusted, Verified, Untrusted; smtpd_tls_loglevel >= 1).
 */
static enum maillog_kind
parse_connection(const char *s, size_t len, struct maillog_event *ev)
{
    size_t p = 0, q;
    struct str client;

    if (lit(s, len, &p, "connect from ")) {
        if (!split_client(mkstr(s + p, len - p), ev))
            return MAILLOG_OTHER;
        return MAILLOG_SMTPD_CONNECT;
    }
    q = run_until(s, len, 0, " ");
    p = q;
    if (q == 0 || !lit(s, len, &p, " TLS connection established from "))
        return MAILLOG_OTHER;
    q = run_until(s, len, p, "]"); /* an IPv6 address has colons */
    if (q + 1 >= len || s[q + 1] != ':')
        return MAILLOG_OTHER;
    client = mkstr(s + p, q + 1 - p);
    if (!split_client(client, ev))
        return MAILLOG_OTHER;
    p = q + 2;
    if (!lit(s, len, &p, " "))
        return MAILLOG_OTHER;
    q = run_until(s, len, p, " ");
    ev->tls_protocol = mkstr(s + p, q - p);
    p = q;
    if (ev->tls_protocol.len == 0 || !lit(s, len, &p, " with cipher "))
        return MAILLOG_OTHER;
    q = run_until(s, len, p, " ");
    ev->tls_cipher = mkstr(s + p, q - p);
    return ev->tls_cipher.len > 0 ? MAILLOG_SMTPD_TLS : MAILLOG_OTHER;
}

/* Text after "SERVICE[PID]: ". */
static enum maillog_kind
parse_body(const char *s, size_t len, struct maillog_event *ev)
{
    size_t p = 0, q;

    if (ev->program.p == NULL)
        return MAILLOG_OTHER; /* not a Postfix daemon */
    if (str_is(ev->program, "smtpd") &&
        (len > 13 && (memcmp(s, "connect from ", 13) == 0 ||
                      memmem(s, len < 48 ? len : 48, " TLS connection ",
                             16) != NULL)))
        return parse_connection(s, len, ev);
    if (lit(s, len, &p, "NOQUEUE: ")) {
        if (lit(s, len, &p, "reject: ") || lit(s, len, &p, "milter-reject: "))
            return parse_reject(s, len, p, ev);
        return MAILLOG_OTHER;
    }
    q = run_until(s, len, 0, ": ");
    if (q + 1 >= len || s[q] != ':' || s[q + 1] != ' ' || !queue_id_ok(s, q))
        return MAILLOG_OTHER;
    ev->queue_id = mkstr(s, q);
    return parse_record(s + q + 2, len - q - 2, ev);
}

enum maillog_kind
maillog_parse(struct maillog_ctx *c, const char *line, size_t len,
              struct maillog_event *ev)
{
    struct stamp t;
    size_t p = 0;

    memset(ev, 0, sizeof(*ev));
    memset(&t, 0, sizeof(t));
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (!parse_header(line, len, &p, &t, ev)) {
        memset(ev, 0, sizeof(*ev));
        return ev->kind = MAILLOG_UNKNOWN;
    }
    ev->has_time = true;
    ev->ts_ms = resolve_time(c, &t);
    ev->kind = parse_body(line + p, len - p, ev);
    return ev->kind;
}

/* ---- framing ---- */

void
maillog_framer_init(struct maillog_framer *f)
{
    f->len = 0;
    f->skipping = false;
}

static size_t
chomp(const char *line, size_t len)
{
    return len > 0 && line[len - 1] == '\r' ? len - 1 : len;
}

enum maillog_frame
maillog_framer_feed(struct maillog_framer *f, const char *data, size_t len,
                    size_t *consumed, const char **line, size_t *linelen)
{
    size_t off = 0;

    while (off < len) {
        const char *p = data + off, *nl = memchr(p, '\n', len - off);
        size_t seg = nl ? (size_t)(nl - p) : len - off;
        size_t used = nl ? seg + 1 : seg;

        if (f->skipping) {
            f->skipping = nl == NULL;
            off += used;
            continue;
        }
        if (seg > MAILLOG_MAX_LINE - f->len) {
            f->len = 0;
            f->skipping = nl == NULL;
            *consumed = off + used;
            return MAILLOG_TOO_LONG;
        }
        if (nl == NULL) {
            memcpy(f->buf + f->len, p, seg);
            f->len += seg;
            break;
        }
        if (f->len == 0) {
            *line = p;
        } else {
            memcpy(f->buf + f->len, p, seg);
            seg += f->len;
            f->len = 0;
            *line = f->buf;
        }
        *linelen = chomp(*line, seg);
        *consumed = off + used;
        return MAILLOG_LINE;
    }
    *consumed = len;
    return MAILLOG_NEED_MORE;
}

enum maillog_frame
maillog_framer_finish(struct maillog_framer *f, const char **line,
                      size_t *linelen)
{
    size_t n = f->len;

    f->len = 0;
    f->skipping = false;
    if (n == 0)
        return MAILLOG_NEED_MORE;
    *line = f->buf;
    *linelen = chomp(f->buf, n);
    return MAILLOG_LINE;
}
