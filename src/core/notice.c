/*
 * notice.c — see notice.h.
 *
 * Every incident field shown goes through one of two filters first:
 * line_value() for headers (one line, printable ASCII, bounded) and
 * body_value() for body text (one line of UTF-8, bounded). Template text
 * is checked once (cp_notice_template_check) and then copied as it is, so
 * no field can add a line, a header or a part. The ARF boundary is chosen
 * after the parts are rendered, so nothing in them can contain it.
 *
 * The one header that keeps non-ASCII text is the customer mail's Subject,
 * which a localised template writes for people: it is RFC 2047 B-encoded
 * (UTF-8, whole characters per encoded-word). Every other header replaces
 * non-ASCII characters by '?' (notice.h).
 */
#include "core/notice.h"

#include "core/explain.h"
#include "util/inet.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#ifndef CP_VERSION
#define CP_VERSION "dev"
#endif

#define FOLD_AT 78               /* RFC 5322 2.1.1 "SHOULD" */
#define MAX_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define PH_MAX 64                /* bytes from "{{" to "}}" */
#define EW_BYTES 42              /* text bytes per encoded-word */
#define HOST_MAX 253

enum {
    PH_ACCOUNT,
    PH_CUSTOMER,
    PH_STATE,
    PH_TIME,
    PH_EVIDENCE,
    PH_CLIENT,
    PH_HELP_URL,
    PH_REASON,
    PH_INCIDENT,
    PH_LOGINS,
    PH_SEEN,
    PH_MESSAGE,
    PH_COUNT
};

static const char *const ph_names[PH_COUNT] = {
    "account", "customer", "state",    "time",   "evidence", "client",
    "help_url", "reason",  "incident", "logins", "seen",     "message"};

#define SEEN_MAX 4000 /* bytes of {{seen}}: every phrase, with room */

/* Placeholder values, already filtered by body_value() (or our own
 * phrases); {{seen}} has lines of its own, so it is bigger. */
struct notice_vals {
    char v[PH_COUNT][NOTICE_MAX_VALUE + 4];
    char seen[SEEN_MAX];
};

/*
 * What each signal kind means, for the customer: plain words, no weights
 * or scores. NULL: a signal that speaks for the account (it never
 * explains a block). Indexed by enum cp_signal.
 */
static const char *const seen_phrase[CP_SIG_COUNT] = {
    [CP_SIG_FORGED_SENDER] = "mail sent in the name of sender addresses "
                             "this account had never used",
    [CP_SIG_NEW_RECIPIENT] = "many messages to addresses this account had "
                             "never written to before",
    [CP_SIG_RATE_JUMP] = "far more messages in an hour than this account "
                         "usually sends",
    [CP_SIG_NETWORKS] = "the account used from many different internet "
                        "connections at the same time",
    [CP_SIG_BAD_RECIPIENT] = "many messages to addresses that do not exist",
    [CP_SIG_REMOTE_REJECT] = "other mail providers refusing the messages as "
                             "spam",
    [CP_SIG_DNSBL] = "the internet address the mail came from is on a "
                     "public list of infected computers",
    [CP_SIG_HELO_NEW] = "mail sent from a computer or program this account "
                        "had not used before",
    [CP_SIG_HELO_FORGED] = "mail sent from a computer that introduced "
                           "itself with another company's name",
    [CP_SIG_ODD_HOUR] = "mail sent at a time of day when this account is "
                        "normally quiet",
    [CP_SIG_TLS_NEW] = "mail sent with mail software this account had not "
                       "used before",
    [CP_SIG_UNIFORM_SIZE] = "a run of messages all of nearly the same size, "
                            "as in a mass mailing",
    [CP_SIG_CAMPAIGN] = "the same message sent to many people, also from "
                        "other accounts",
    [CP_SIG_STALE_RECIPIENT] = "messages to addresses that were closed long "
                               "ago, as on old bought address lists",
};
_Static_assert(CP_SIG_COUNT == 17, "a new signal needs its seen_phrase");

static int fail(char *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(char *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, CP_ERR_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- text filters ---------------------------------------------------- */

/* Length of the valid UTF-8 character at s (1..4), or 0. */
static size_t
utf8_len(const char *s, size_t len)
{
    unsigned char c = (unsigned char)s[0];
    size_t n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;

    if (n > len || utf8_check(s, n) != n)
        return 0;
    return n;
}

/*
 * Whether the valid character s[0..n) must not appear in one line of
 * text: C0 and C1 controls, DEL, U+2028/U+2029 (line and paragraph
 * separators), and the bidi embeddings, overrides and isolates
 * (U+202A..U+202E, U+2066..U+2069), which can make an account name read
 * as something else.
 */
static bool
blank_char(const unsigned char *s, size_t n)
{
    if (n == 1)
        return s[0] < 0x20 || s[0] == 0x7f;
    if (n == 2)
        return s[0] == 0xc2 && s[1] < 0xa0;
    if (n == 3 && s[0] == 0xe2 && s[1] == 0x80)
        return s[2] >= 0xa8 && s[2] <= 0xae;
    if (n == 3 && s[0] == 0xe2 && s[1] == 0x81)
        return s[2] >= 0xa6 && s[2] <= 0xa9;
    return false;
}

/*
 * Filter untrusted text for a header: controls and spaces become single
 * spaces, leading and trailing ones are dropped; a non-ASCII character (or
 * a byte that is not UTF-8) becomes '?', or is kept if `utf8` (and valid).
 * Cut at `max` bytes with "...". `dst` holds max + 4 bytes; NULL is "".
 * Returns the length.
 */
static size_t
line_value(char *dst, size_t max, const char *s, bool utf8)
{
    size_t len = s ? strlen(s) : 0, i = 0, o = 0;
    bool space = false;

    while (i < len) {
        const unsigned char *u = (const unsigned char *)s + i;
        size_t n = utf8_len(s + i, len - i), w;

        if (n == 0)
            n = 1; /* a stray byte: one '?' */
        i += n;
        if (u[0] == ' ' || blank_char(u, n)) {
            space = o > 0;
            continue;
        }
        w = u[0] < 0x80 || !utf8 || utf8_len((const char *)u, n) == 0 ? 1 : n;
        if (o + space + w > max) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (space)
            dst[o++] = ' ';
        space = false;
        if (w == 1 && u[0] >= 0x80) {
            dst[o++] = '?';
        } else {
            memcpy(dst + o, u, w);
            o += w;
        }
    }
    dst[o] = '\0';
    return o;
}

/*
 * Filter untrusted text for a body: valid UTF-8 is kept, blank_char()s
 * become a space, bytes that are not UTF-8 a '?'. Cut at `max` bytes on a
 * character boundary with "...". `dst` holds max + 4 bytes; NULL is "".
 */
static size_t
body_value(char *dst, size_t max, const char *s)
{
    size_t len = s ? strlen(s) : 0, i = 0, o = 0;

    while (i < len) {
        const char *p = s + i;
        size_t n = utf8_len(p, len - i), w = n;

        if (n == 0) {
            p = "?";
            n = w = 1;
        } else if (blank_char((const unsigned char *)p, n)) {
            p = " ";
            w = 1;
        }
        if (o + w > max) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(dst + o, p, w);
        o += w;
        i += n;
    }
    dst[o] = '\0';
    return o;
}

/*
 * Append body text, breaking lines longer than NOTICE_MAX_LINE octets on a
 * character boundary, and end it with a newline.
 */
static void
put_body(struct strbuf *out, const char *s, size_t len)
{
    size_t i = 0, col = 0, n;

    while (i < len) {
        if (s[i] == '\n') {
            col = 0;
            n = 1;
        } else {
            if ((n = utf8_len(s + i, len - i)) == 0)
                n = 1;
            if (col + n > NOTICE_MAX_LINE) {
                sb_append(out, "\n", 1);
                col = 0;
            }
            col += n;
        }
        sb_append(out, s + i, n);
        i += n;
    }
    if (len == 0 || s[len - 1] != '\n')
        sb_append(out, "\n", 1);
}

/* ---- dates and checks ---------------------------------------------- */

static int64_t
incident_ms(const struct cp_incident *in)
{
    return in->at_ms < 0 ? 0 : in->at_ms > MAX_MS ? MAX_MS : in->at_ms;
}

static struct tm
utc(int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    return tm;
}

/* "Mon, 23 Nov 2026 16:40:01 +0000" (RFC 5322 3.3), no locale. */
static void
date_rfc5322(char *out, size_t n, int64_t ms)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
    static const char mons[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm = utc(ms);

    snprintf(out, n, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
             tm.tm_mday, mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
             tm.tm_min, tm.tm_sec);
}

/* "2026-11-23 16:40:01 UTC", for the abuse desk. */
static void
date_human(char *out, size_t n, int64_t ms)
{
    struct tm tm = utc(ms);

    snprintf(out, n, "%04d-%02d-%02d %02d:%02d:%02d UTC", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* "2026-11-23 17:40 CET", for the customer: the host's time zone (TZ, else
 * /etc/localtime), named, as the customer's own clock shows it. A zone
 * without an abbreviation gets its offset ("+0530"). */
static void
date_local(char *out, size_t n, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char zone[16] = "";

    if (localtime_r(&t, &tm) == NULL) {
        date_human(out, n, ms);
        return;
    }
    if (tm.tm_zone == NULL || tm.tm_zone[0] == '\0' ||
        strftime(zone, sizeof(zone), "%Z", &tm) == 0)
        strftime(zone, sizeof(zone), "%z", &tm);
    snprintf(out, n, "%04d-%02d-%02d %02d:%02d %s", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, zone);
}

static bool
host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

static bool
is_host(const char *s, size_t len)
{
    if (len == 0 || len > HOST_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!host_char(s[i]))
            return false;
    return true;
}

/*
 * An address goes into From:/To: as it is (rewriting one would mail
 * someone else), so it must be printable ASCII and hold an '@'. A display
 * name ("Abuse Desk <abuse@isp.example>") is allowed.
 */
static int
check_addr(const char *what, const char *s, char *err)
{
    size_t len;

    if (s == NULL || *s == '\0')
        return fail(err, "no %s address", what);
    len = strnlen(s, NOTICE_MAX_ADDR + 1);
    if (len > NOTICE_MAX_ADDR)
        return fail(err, "%s address longer than %d bytes", what,
                    NOTICE_MAX_ADDR);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return fail(err,
                        "%s address has a control character or non-ASCII "
                        "byte at offset %zu",
                        what, i);
    if (memchr(s, '@', len) == NULL)
        return fail(err, "%s address has no '@'", what);
    return 0;
}

static int
check_incident(const struct cp_incident *in, char *err)
{
    const char *h = in->reporting_mta;

    if (in->account == NULL || in->account[0] == '\0')
        return fail(err, "incident %llu has no account",
                    (unsigned long long)in->id);
    if (h == NULL || !is_host(h, strnlen(h, HOST_MAX + 1)))
        return fail(err, "reporting_mta is not a host name");
    return 0;
}

/* ---- headers ------------------------------------------------------- */

/*
 * Write "Name: value", folded at spaces before FOLD_AT columns. `v` comes
 * from line_value() (no controls, single spaces, at most
 * NOTICE_MAX_HEADER bytes), so no line exceeds NOTICE_MAX_LINE.
 */
static void
put_hdr(struct strbuf *out, const char *name, const char *v)
{
    size_t col = strlen(name) + 1;
    bool first = true;

    sb_puts(out, name);
    sb_puts(out, ":");
    while (*v != '\0') {
        size_t w = strcspn(v, " ");

        if (!first && col + 1 + w > FOLD_AT) {
            sb_puts(out, "\n");
            col = 0;
        }
        sb_puts(out, " ");
        sb_append(out, v, w);
        col += 1 + w;
        first = false;
        v += w;
        if (*v == ' ')
            v++;
    }
    sb_puts(out, "\n");
}

/* An untrusted field as a header, ASCII only. */
static void
put_field(struct strbuf *out, const char *name, const char *v)
{
    char buf[NOTICE_MAX_HEADER + 4];

    line_value(buf, NOTICE_MAX_HEADER, v, false);
    put_hdr(out, name, buf);
}

/* An untrusted envelope address as "Name: <addr>". */
static void
put_addr_field(struct strbuf *out, const char *name, const char *addr)
{
    char buf[NOTICE_MAX_HEADER + 4], v[NOTICE_MAX_HEADER + 8];

    line_value(buf, NOTICE_MAX_HEADER, addr, false);
    snprintf(v, sizeof(v), "<%s>", buf);
    put_hdr(out, name, v);
}

static void
put_b64(struct strbuf *out, const unsigned char *s, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < n; i += 3) {
        unsigned long v = (unsigned long)s[i] << 16;
        char q[4];

        if (i + 1 < n)
            v |= (unsigned long)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        sb_append(out, q, 4);
    }
}

/*
 * Subject from line_value(..., true): as it is if ASCII, else RFC 2047
 * encoded-words of whole UTF-8 characters (at most EW_BYTES each, so a
 * word is 68 characters), one per line.
 */
static void
put_subject(struct strbuf *out, const char *v)
{
    size_t len = strlen(v), i = 0;

    while (i < len && (unsigned char)v[i] < 0x80)
        i++;
    if (i == len) {
        put_hdr(out, "Subject", v);
        return;
    }
    sb_puts(out, "Subject:");
    for (i = 0; i < len;) {
        size_t n = 0, c;

        while (i + n < len) {
            if ((c = utf8_len(v + i + n, len - i - n)) == 0)
                c = 1;
            if (n + c > EW_BYTES)
                break;
            n += c;
        }
        sb_puts(out, i == 0 ? " =?utf-8?B?" : "\n =?utf-8?B?");
        put_b64(out, (const unsigned char *)v + i, n);
        sb_puts(out, "?=");
        i += n;
    }
    sb_puts(out, "\n");
}

/* The headers both mails share, up to but not including Content-Type. */
static void
put_common(struct strbuf *out, const struct cp_incident *in, const char *from,
           const char *to, const char *subject, const char *kind)
{
    char date[48];
    int64_t ms = incident_ms(in);

    date_rfc5322(date, sizeof(date), ms);
    sb_printf(out, "From: %s\nTo: %s\n", from, to);
    put_subject(out, subject);
    sb_printf(out, "Date: %s\n", date);
    sb_printf(out, "Message-ID: <chokepoint.%llu.%lld.%s@%s>\n",
              (unsigned long long)in->id, (long long)ms, kind,
              in->reporting_mta);
    sb_puts(out, "MIME-Version: 1.0\nAuto-Submitted: auto-generated\n");
    sb_printf(out, "X-Chokepoint-Incident: %llu\n", (unsigned long long)in->id);
    put_field(out, "X-Chokepoint-Account", in->account);
}

/* ---- customer template --------------------------------------------- */

/*
 * The placeholder opening at t[i] ("{{"): its index, with *end just past
 * its "}}"; -1 if the name is unknown (*name, *nlen say which), -2 if no
 * "}}" follows within PH_MAX bytes.
 */
static int
ph_parse(const char *t, size_t len, size_t i, size_t *end, const char **name,
         size_t *nlen)
{
    size_t lim = len - i > PH_MAX ? i + PH_MAX : len, j = i + 2, a, b;

    while (j + 1 < lim && !(t[j] == '}' && t[j + 1] == '}'))
        j++;
    if (j + 1 >= lim)
        return -2;
    *end = j + 2;
    for (a = i + 2; a < j && t[a] == ' '; a++)
        ;
    for (b = j; b > a && t[b - 1] == ' '; b--)
        ;
    *name = t + a;
    *nlen = b - a;
    for (int k = 0; k < PH_COUNT; k++)
        if (strlen(ph_names[k]) == b - a &&
            memcmp(ph_names[k], t + a, b - a) == 0)
            return k;
    return -1;
}

static bool
ph_open(const char *t, size_t len, size_t i)
{
    return t[i] == '{' && i + 1 < len && t[i + 1] == '{';
}

int
cp_notice_template_check(const char *tmpl, size_t len, char *err)
{
    size_t bad, i = 0, end, nlen;
    const char *name;
    char esc[PH_MAX * 4 + 4];

    if (len == 0)
        return fail(err, "template is empty");
    if (len > NOTICE_MAX_TEMPLATE)
        return fail(err, "template longer than %d bytes", NOTICE_MAX_TEMPLATE);
    if ((bad = utf8_check(tmpl, len)) < len)
        return fail(err, "template is not UTF-8 at offset %zu", bad);
    while (i < len) {
        unsigned char c = (unsigned char)tmpl[i];

        if (ph_open(tmpl, len, i)) {
            int k = ph_parse(tmpl, len, i, &end, &name, &nlen);

            if (k == -2)
                return fail(err, "unterminated placeholder at offset %zu", i);
            if (k < 0)
                return fail(err, "unknown placeholder {{%s}} at offset %zu",
                            str_escape(esc, sizeof(esc), name, nlen, PH_MAX),
                            i);
            i = end;
            continue;
        }
        if ((c < 0x20 && c != '\t' && c != '\n' &&
             !(c == '\r' && i + 1 < len && tmpl[i + 1] == '\n')) ||
            c == 0x7f)
            return fail(err, "control character 0x%02x at offset %zu", c, i);
        i++;
    }
    return 0;
}

/* Append a checked template with its placeholders replaced, CRs dropped. */
static void
render(struct strbuf *out, const char *t, size_t len,
       const struct notice_vals *v)
{
    size_t i = 0, start = 0, end, nlen;
    const char *name;

    while (i < len) {
        if (t[i] != '\r' && !ph_open(t, len, i)) {
            i++;
            continue;
        }
        sb_append(out, t + start, i - start);
        if (t[i] == '\r') {
            i++;
        } else {
            int k = ph_parse(t, len, i, &end, &name, &nlen);

            if (k >= 0) {
                sb_puts(out, k == PH_SEEN ? v->seen : v->v[k]);
                i = end;
            } else { /* not reached after the check: keep it as text */
                sb_append(out, t + i, 2);
                i += 2;
            }
        }
        start = i;
    }
    sb_append(out, t + start, len - start);
}

/*
 * A leading "Subject:" line: its text in *s, *slen (NULL if none).
 * Returns where the body starts (after one blank line, if there is one).
 */
static size_t
split_subject(const char *t, size_t len, const char **s, size_t *slen)
{
    const char *nl;
    size_t body;

    *s = NULL;
    *slen = 0;
    if (len < 8 || strncasecmp(t, "Subject:", 8) != 0)
        return 0;
    nl = memchr(t, '\n', len);
    body = nl ? (size_t)(nl - t) + 1 : len;
    *s = t + 8;
    *slen = (nl ? (size_t)(nl - t) : len) - 8;
    if (body < len && t[body] == '\n')
        body++;
    else if (body + 1 < len && t[body] == '\r' && t[body + 1] == '\n')
        body += 2;
    return body;
}

/* The account as its owner knows it: the key without its kind prefix. */
static const char *
account_display(const char *key)
{
    static const char *const kinds[] = {"u:", "c:", "ip:"};

    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        size_t n = strlen(kinds[k]);

        if (strncmp(key, kinds[k], n) == 0 && key[n] != '\0')
            return key + n;
    }
    return key;
}

/* {{logins}}: the logins given, comma-separated, else the account. */
static void
fill_logins(char *dst, const struct cp_incident *in)
{
    struct strbuf sb;

    if (in->logins == NULL || in->nlogins == 0) {
        body_value(dst, NOTICE_MAX_VALUE, account_display(in->account));
        return;
    }
    sb_init(&sb);
    for (size_t i = 0; i < in->nlogins && sb.len <= NOTICE_MAX_VALUE; i++) {
        if (i > 0)
            sb_puts(&sb, ", ");
        sb_puts(&sb, in->logins[i] ? in->logins[i] : "");
    }
    body_value(dst, NOTICE_MAX_VALUE, sb.data);
    sb_fini(&sb);
}

/* {{seen}} ("- phrase" lines) and {{evidence}} (one line, "; "): the
 * phrases of the signal kinds given, each once, in their order. */
static void
fill_seen(struct notice_vals *v, const struct cp_incident *in)
{
    size_t ls = 0, le = 0;

    v->seen[0] = '\0';
    v->v[PH_EVIDENCE][0] = '\0';
    for (size_t i = 0; i < in->nsignals && i < CP_SIG_COUNT; i++) {
        unsigned s = in->signals[i];
        const char *p = s < CP_SIG_COUNT ? seen_phrase[s] : NULL;

        if (p == NULL || memchr(in->signals, (int)s, i) != NULL)
            continue;
        if (ls >= sizeof(v->seen) - 1)
            break; /* not reached: every phrase fits */
        ls += (size_t)snprintf(v->seen + ls, sizeof(v->seen) - ls, "%s- %s",
                               ls ? "\n" : "", p);
        if (le + strlen(p) + 2 <= NOTICE_MAX_VALUE)
            le += (size_t)snprintf(v->v[PH_EVIDENCE] + le,
                                   NOTICE_MAX_VALUE + 4 - le, "%s%s",
                                   le ? "; " : "", p);
    }
}

static void
fill_vals(struct notice_vals *v, const struct cp_incident *in)
{
    char t[64];

    fill_logins(v->v[PH_LOGINS], in);
    memcpy(v->v[PH_ACCOUNT], v->v[PH_LOGINS], sizeof(v->v[PH_ACCOUNT]));
    body_value(v->v[PH_CUSTOMER], NOTICE_MAX_VALUE, in->customer);
    body_value(v->v[PH_STATE], NOTICE_MAX_VALUE, in->state);
    date_local(t, sizeof(t), incident_ms(in));
    body_value(v->v[PH_TIME], NOTICE_MAX_VALUE, t);
    fill_seen(v, in);
    body_value(v->v[PH_CLIENT], NOTICE_MAX_VALUE, in->client_addr);
    body_value(v->v[PH_HELP_URL], NOTICE_MAX_VALUE, in->help_url);
    /* the customer hears only what the desk chose to tell (--tell); the
     * internal note (in->reason) stays with the desk */
    body_value(v->v[PH_MESSAGE], NOTICE_MAX_VALUE, in->message);
    memcpy(v->v[PH_REASON], v->v[PH_MESSAGE], sizeof(v->v[PH_REASON]));
    snprintf(v->v[PH_INCIDENT], sizeof(v->v[PH_INCIDENT]), "%llu",
             (unsigned long long)in->id);
}

static bool
state_is(const struct cp_incident *in, const char *name)
{
    return in->state != NULL && strcmp(in->state, name) == 0;
}

static const char *
default_subject(const struct cp_incident *in)
{
    if (in->released)
        return "Outgoing mail from {{logins}} can flow again "
               "(incident {{incident}})";
    if (state_is(in, "THROTTLED"))
        return "Outgoing mail from {{logins}} is being limited "
               "(incident {{incident}})";
    if (state_is(in, "MANUAL_HOLD"))
        return "Outgoing mail from {{logins}} is on hold "
               "(incident {{incident}})";
    return "Outgoing mail from {{logins}} has been blocked "
           "(incident {{incident}})";
}

static bool
present(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* What was seen: the part of the built-in template that varies most. In
 * plain words; the abuse desk's internal note never appears here. */
static void
builtin_seen(struct strbuf *t, const struct cp_incident *in)
{
    bool any = false;

    sb_puts(t, "What we saw\n-----------\n");
    if (in->nsignals > 0) {
        sb_puts(t, "Mail sent with this account showed:\n{{seen}}\n");
        any = true;
    }
    if (present(in->client_addr)) {
        sb_puts(t, "Some of this mail came from the internet address "
                   "{{client}}.\n");
        any = true;
    }
    if (present(in->message)) {
        sb_puts(t, "Our abuse desk adds: {{message}}\n");
        any = true;
    }
    if (!any)
        sb_puts(t, "Mail sent with this account looked like spam.\n");
}

/* The built-in release notice: the account may send again. What comes
 * next depends on the state it was released into: on probation it is
 * watched more closely; one a person allowed is never blocked
 * automatically; a normal one is checked as every account is. */
static void
builtin_release(struct strbuf *t, const struct cp_incident *in)
{
    sb_puts(t, "Hello,\n\n"
               "This is an automatic message from the mail service of your\n"
               "internet provider about your mail account {{logins}}.\n\n"
               "On {{time}} we lifted the block: mail sent with this\n"
               "account can flow again.\n");
    if (present(in->message))
        sb_puts(t, "\nOur abuse desk adds: {{message}}\n");
    if (state_is(in, "PROBATION"))
        sb_puts(t, "\nFor the next days the account is watched more closely "
                   "than usual.\nIf it sends spam again, it will be blocked "
                   "again, so please make\nsure that every computer and "
                   "phone that uses it is clean and that\nits password is "
                   "new.\n\n");
    else if (state_is(in, "ALLOWED"))
        sb_puts(t, "\nOur abuse desk has checked the account: its mail is "
                   "no longer\nstopped automatically. Please still make "
                   "sure that every computer\nand phone that uses it is "
                   "clean and that its password is new.\n\n");
    else
        sb_puts(t, "\nIf it sends spam again, it will be blocked again, so "
                   "please make\nsure that every computer and phone that "
                   "uses it is clean and that\nits password is new.\n\n");
    sb_puts(t, "Thank you. Please quote incident number {{incident}} if you "
               "write to us\nabout it: reply to this message.\n"
               "\n-- \nThis message was sent automatically.\n");
}

/*
 * The abuse desk held an account on which nothing was seen (a contract
 * ended, an investigation, a complaint from elsewhere): the notice says it
 * was held and how to reach the desk, and does not tell the customer that
 * a computer of theirs was infected or a password stolen.
 */
static void
builtin_hold(struct strbuf *t, const struct cp_incident *in)
{
    sb_puts(t, "On {{time}} our abuse desk stopped all mail sent with this\n"
               "account. Receiving mail is not affected.\n\n");
    if (present(in->message))
        sb_puts(t, "Our abuse desk adds: {{message}}\n\n");
    if (present(in->help_url))
        sb_puts(t, "To learn why and to have the hold lifted, follow the\n"
                   "instructions at\n\n  {{help_url}}\n\nor reply to this "
                   "message.");
    else
        sb_puts(t, "To learn why and to have the hold lifted, reply to this "
                   "message.");
    sb_puts(t, " Please quote incident number {{incident}}.\n"
               "Until the hold is lifted, all mail sent with this account "
               "stays\nblocked.\n"
               "\n-- \nThis message was sent automatically.\n");
}

/*
 * The built-in English template, for a home user: what happened, what we
 * saw, what it probably means, how to clean up, how to get released.
 */
static void
builtin_template(struct strbuf *t, const struct cp_incident *in)
{
    bool thr = state_is(in, "THROTTLED"), hold = state_is(in, "MANUAL_HOLD");
    const char *what = thr ? "limit" : hold ? "hold" : "block";

    sb_puts(t, "Hello,\n\n"
               "This is an automatic message from the mail service of your\n"
               "internet provider about your mail account {{logins}}.\n\n");
    if (hold && in->nsignals == 0) {
        builtin_hold(t, in);
        return;
    }
    if (thr)
        sb_puts(t, "On {{time}} we started to limit the mail sent with this\n"
                   "account, because it was sending mail that looks like "
                   "spam.\nIf this goes on, the account will be blocked.");
    else if (hold)
        sb_puts(t, "On {{time}} our abuse desk stopped all mail sent with\n"
                   "this account, because it was sending mail that looks "
                   "like spam.");
    else
        sb_puts(t, "On {{time}} we blocked all mail sent with this account,\n"
                   "because it was sending mail that looks like spam.");
    sb_puts(t, "\nReceiving mail is not affected.\n\n");
    builtin_seen(t, in);
    sb_puts(
        t, "\nWhat this usually means\n-----------------------\n"
           "Almost always, a computer, phone or tablet on your connection is\n"
           "infected with malicious software, or someone has found out the\n"
           "password of your mail account and sends spam with it. You have\n"
           "most likely done nothing wrong on purpose, but it has to be fixed\n"
           "before your mail can flow normally again.\n\n"
           "What to do now\n--------------\n"
           "1. Scan every computer on your connection with an up-to-date\n"
           "   malware (virus) scanner and remove whatever it finds. Install\n"
           "   all pending updates for the operating system, the web browser\n"
           "   and the mail program.\n"
           "2. From a device you know is clean, change the password of your\n"
           "   mail account. Choose a new password that you use nowhere else.\n"
           "3. Check the settings of every mail program and phone that uses\n"
           "   this account: the outgoing (SMTP) server should be ours, with\n"
           "   authentication switched on. Remove accounts, forwarding rules\n"
           "   or automatic replies that you did not set up yourself.\n"
           "4. If others share your connection or your mail password, ask\n"
           "   them to do the same.\n\n"
           "How to get your mail released\n-----------------------------\n");
    if (present(in->help_url))
        sb_printf(t,
                  "When you have done this, follow the instructions at\n\n"
                  "  {{help_url}}\n\nto have the %s lifted.",
                  what);
    else
        sb_printf(t,
                  "When you have done this, reply to this message to have "
                  "the\n%s lifted.",
                  what);
    sb_puts(t, " Please quote incident number {{incident}}.\n");
    if (thr)
        sb_puts(t, "Until then, mail sent with this account stays limited "
                   "and may be\ndelayed or refused.\n");
    else
        sb_printf(t,
                  "Until the %s is lifted, all mail sent with this account "
                  "stays\nblocked.\n",
                  what);
    sb_puts(t, "\n-- \nThis message was sent automatically.\n");
}

int
cp_notice_customer(const struct cp_incident *in, const char *from,
                   const char *tmpl, struct strbuf *out, char *err)
{
    struct notice_vals v;
    struct strbuf t, subj, body;
    const char *tp, *sp;
    size_t tlen, slen, b;
    char subject[NOTICE_MAX_HEADER + 4];

    if (check_incident(in, err) < 0 || check_addr("from", from, err) < 0 ||
        check_addr("contact", in->contact, err) < 0)
        return -1;
    if (tmpl != NULL && cp_notice_template_check(tmpl, strlen(tmpl), err) < 0)
        return -1;
    fill_vals(&v, in);
    sb_init(&t);
    sb_init(&subj);
    sb_init(&body);
    if (tmpl == NULL && in->released)
        builtin_release(&t, in);
    else if (tmpl == NULL)
        builtin_template(&t, in);
    tp = tmpl ? tmpl : t.data;
    tlen = tmpl ? strlen(tmpl) : t.len;
    if (tlen >= 3 && memcmp(tp, "\xef\xbb\xbf", 3) == 0) {
        tp += 3; /* a byte order mark from an editor */
        tlen -= 3;
    }
    b = split_subject(tp, tlen, &sp, &slen);
    if (sp == NULL) {
        sp = default_subject(in);
        slen = strlen(sp);
    }
    render(&subj, sp, slen, &v);
    render(&body, tp + b, tlen - b, &v);
    line_value(subject, NOTICE_MAX_HEADER, subj.data, true);
    put_common(out, in, from, in->contact, subject,
               in->released ? "release" : "customer");
    sb_puts(out, "Content-Type: text/plain; charset=utf-8\n"
                 "Content-Transfer-Encoding: 8bit\n\n");
    put_body(out, body.data, body.len);
    sb_fini(&t);
    sb_fini(&subj);
    sb_fini(&body);
    return 0;
}

/* ---- ARF ----------------------------------------------------------- */

/* "Label: value" in the human part, if the value is known. */
static void
put_line(struct strbuf *t, const char *label, const char *v)
{
    char buf[NOTICE_MAX_VALUE + 4];

    if (v == NULL)
        return;
    body_value(buf, NOTICE_MAX_VALUE, v);
    sb_printf(t, "%-16s%s\n", label, buf);
}

/* Whether any of the last message's envelope is known (a decision on a
 * message); a person's decision from the admin socket has none. */
static bool
has_envelope(const struct cp_incident *in)
{
    return in->sample_sender != NULL || in->sample_recipient != NULL ||
           in->helo != NULL || in->client_addr != NULL;
}

/* Part 1: the human summary. */
static void
arf_summary(struct strbuf *p, const struct cp_incident *in)
{
    struct strbuf t;
    char when[48], score[32];

    sb_init(&t);
    date_human(when, sizeof(when), incident_ms(in));
    if (isfinite(in->score))
        snprintf(score, sizeof(score), "%.1f", in->score);
    else
        snprintf(score, sizeof(score), "unknown");
    sb_printf(&t,
              "This is an abuse report (RFC 5965) from chokepoint on %s.\n"
              "Outgoing mail from the account below has been %s.\n\n",
              in->reporting_mta,
              state_is(in, "THROTTLED")     ? "limited"
              : state_is(in, "MANUAL_HOLD") ? "put on hold"
                                            : "blocked");
    sb_printf(&t, "%-16s%llu\n", "Incident:", (unsigned long long)in->id);
    put_line(&t, "Account:", in->account);
    put_line(&t, "Customer:", in->customer);
    put_line(&t, "State:", in->state);
    put_line(&t, "Previous state:", in->prev_state);
    sb_printf(&t, "%-16s%s\n%-16s%s\n", "Time:", when, "Score:", score);
    put_line(&t, "Evidence:", in->evidence);
    put_line(&t, "Decided by:", in->actor);
    put_line(&t, "Reason:", in->reason);
    put_line(&t, "Customer told:", in->message);
    put_line(&t, "Client address:", in->client_addr);
    put_line(&t, "HELO:", in->helo);
    put_line(&t, "Last sender:", in->sample_sender);
    put_line(&t, "Last recipient:", in->sample_recipient);
    sb_puts(&t, "\nchokepoint checks mail at the SMTP policy stage, before "
                "the message\ncontent is transferred, so it never sees "
                "message bodies. The third\npart of this report is "
                "therefore not the original message: it holds\n");
    if (has_envelope(in))
        sb_puts(&t, "only the envelope of the last message (sender, "
                    "recipient, client\naddress and HELO), written as "
                    "headers.\n");
    else
        sb_puts(&t, "only the account and the incident: no SMTP envelope "
                    "was seen for\nthis decision (a person's, with no "
                    "message of the account at hand).\n");
    sb_puts(p, "Content-Type: text/plain; charset=utf-8\n"
               "Content-Transfer-Encoding: 8bit\n\n");
    put_body(p, t.data, t.len);
    sb_fini(&t);
}

static bool
is_ip(const char *s)
{
    struct inet_addr a;

    return s != NULL && inet_parse(s, strnlen(s, 64), &a);
}

/* The domain of an address, if the address is plain ASCII without spaces
 * and its domain looks like a host name. */
static const char *
addr_domain(const char *addr)
{
    const char *at;

    if (addr == NULL || strnlen(addr, NOTICE_MAX_ADDR + 1) > NOTICE_MAX_ADDR)
        return NULL;
    for (const char *p = addr; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return NULL;
    at = strrchr(addr, '@');
    if (at == NULL || !is_host(at + 1, strlen(at + 1)))
        return NULL;
    return at + 1;
}

#define ARF_MAX_DOMAINS 8 /* Reported-Domain fields of one report */

/*
 * Reported-Domain (RFC 5965 3.2: the domain the reporter holds
 * responsible; optional, may repeat). Never the envelope sender's domain:
 * a zombie forges its senders, so that domain is the victim's, and a
 * report naming it would send the recipient's abuse process after an
 * innocent party (RFC 6650 asks reports to be about the source). The
 * source is the account that submitted the mail, so the domain is that of
 * its login(s) when a login is an address (the ISP's own mail domain, or
 * a business customer's); for a login without a domain or an address-only
 * account the field is left out and Source-IP says where it came from.
 */
static void
arf_domains(struct strbuf *p, const struct cp_incident *in)
{
    const char *seen[ARF_MAX_DOMAINS];
    size_t n = 0, nl = in->logins ? in->nlogins : 1;

    for (size_t i = 0; i < nl && n < ARF_MAX_DOMAINS; i++) {
        const char *dom = addr_domain(
            in->logins ? in->logins[i] : account_display(in->account));
        bool dup = false;

        for (size_t k = 0; dom != NULL && k < n; k++)
            dup |= strcasecmp(seen[k], dom) == 0;
        if (dom == NULL || dup)
            continue;
        seen[n++] = dom;
        sb_printf(p, "Reported-Domain: %s\n", dom);
    }
}

/* Part 2: the machine-readable report. */
static void
arf_report(struct strbuf *p, const struct cp_incident *in)
{
    char date[48];

    date_rfc5322(date, sizeof(date), incident_ms(in));
    sb_puts(p, "Content-Type: message/feedback-report\n\n"
               "Feedback-Type: abuse\n"
               "User-Agent: chokepoint/" CP_VERSION "\n"
               "Version: 1\n");
    if (in->sample_sender != NULL)
        put_addr_field(p, "Original-Mail-From", in->sample_sender);
    if (in->sample_recipient != NULL)
        put_addr_field(p, "Original-Rcpt-To", in->sample_recipient);
    sb_printf(p, "Arrival-Date: %s\n", date);
    sb_printf(p, "Reporting-MTA: dns; %s\n", in->reporting_mta);
    if (is_ip(in->client_addr))
        sb_printf(p, "Source-IP: %s\n", in->client_addr);
    arf_domains(p, in);
}

/* Part 3: the last envelope as headers; without one (a person's decision
 * on an account with no message at hand), only the account and the
 * incident, saying so (RFC 5965 2: the third part is required). */
static void
arf_headers(struct strbuf *p, const struct cp_incident *in)
{
    char date[48], helo[NOTICE_MAX_HEADER + 4], ip[NOTICE_MAX_HEADER + 4];
    struct strbuf r;

    sb_puts(p, "Content-Type: text/rfc822-headers\n\n");
    if (in->sample_sender != NULL)
        put_addr_field(p, "Return-Path", in->sample_sender);
    if (in->helo != NULL || in->client_addr != NULL) {
        date_rfc5322(date, sizeof(date), incident_ms(in));
        line_value(helo, NOTICE_MAX_HEADER, in->helo ? in->helo : "unknown",
                   false);
        line_value(ip, NOTICE_MAX_HEADER, in->client_addr, false);
        sb_init(&r);
        sb_printf(&r, "from %s", helo[0] ? helo : "unknown");
        if (ip[0] != '\0')
            sb_printf(&r, " ([%s])", ip);
        sb_printf(&r, " by %s (chokepoint policy check); %s", in->reporting_mta,
                  date);
        put_hdr(p, "Received", r.data);
        sb_fini(&r);
    }
    if (in->sample_recipient != NULL)
        put_addr_field(p, "X-Envelope-To", in->sample_recipient);
    put_field(p, "X-Chokepoint-Account", in->account);
    sb_printf(p, "X-Chokepoint-Incident: %llu\n", (unsigned long long)in->id);
    put_hdr(p, "X-Chokepoint-Note",
            has_envelope(in)
                ? "reconstructed from the SMTP envelope at the policy "
                  "stage; no message header or body was seen"
                : "no SMTP envelope was seen for this decision, and no "
                  "message header or body; these fields name only the "
                  "account and the incident");
}

/* "=_chokepoint_ID_MS_N" with the first N that occurs in no part. */
static void
arf_boundary(char *b, size_t n, const struct cp_incident *in,
             const struct strbuf parts[3])
{
    for (unsigned salt = 0;; salt++) {
        bool clash = false;

        snprintf(b, n, "=_chokepoint_%llu_%lld_%u", (unsigned long long)in->id,
                 (long long)incident_ms(in), salt);
        for (int i = 0; i < 3; i++)
            clash |= memmem(parts[i].data, parts[i].len, b, strlen(b)) != NULL;
        if (!clash)
            return;
    }
}

int
cp_notice_arf(const struct cp_incident *in, const char *from, const char *to,
              struct strbuf *out, char *err)
{
    struct strbuf parts[3];
    char acct[NOTICE_MAX_HEADER + 4], subject[NOTICE_MAX_HEADER + 64];
    char bnd[80];

    if (check_incident(in, err) < 0 || check_addr("from", from, err) < 0 ||
        check_addr("to", to, err) < 0)
        return -1;
    for (int i = 0; i < 3; i++)
        sb_init(&parts[i]);
    arf_summary(&parts[0], in);
    arf_report(&parts[1], in);
    arf_headers(&parts[2], in);
    arf_boundary(bnd, sizeof(bnd), in, parts);
    line_value(acct, NOTICE_MAX_HEADER - 40, in->account, false);
    snprintf(subject, sizeof(subject), "Abuse report: %s (incident %llu)", acct,
             (unsigned long long)in->id);
    put_common(out, in, from, to, subject, "arf");
    sb_printf(out,
              "Content-Type: multipart/report; "
              "report-type=feedback-report;\n boundary=\"%s\"\n"
              "Content-Transfer-Encoding: 8bit\n\n"
              "This is an abuse report in the Abuse Reporting Format "
              "(RFC 5965).\n",
              bnd);
    for (int i = 0; i < 3; i++) {
        sb_printf(out, "\n--%s\n", bnd);
        sb_append(out, parts[i].data, parts[i].len);
        sb_fini(&parts[i]);
    }
    sb_printf(out, "\n--%s--\n", bnd);
    return 0;
}

/* ---- webhook ------------------------------------------------------- */

static void
json_field(struct strbuf *sb, const char *name, const char *v)
{
    char buf[NOTICE_MAX_VALUE + 4];
    size_t len, cut;

    if (v == NULL || (len = strlen(v)) <= NOTICE_MAX_VALUE) {
        sb_json_kcstr(sb, name, v, false);
        return;
    }
    sb_json_key(sb, name, false);
    cut = NOTICE_MAX_VALUE;
    for (int k = 0; k < 3 && ((unsigned char)v[cut] & 0xc0) == 0x80; k++)
        cut--; /* do not split a character */
    memcpy(buf, v, cut);
    memcpy(buf + cut, "...", 3);
    sb_json_str(sb, buf, cut + 3);
}

/* "logins":[..]: the logins given, else the account as the customer
 * knows it; at most NOTICE_MAX_VALUE bytes of them. */
static void
json_logins(struct strbuf *sb, const struct cp_incident *in)
{
    size_t n = in->logins ? in->nlogins : 1, used = 0;

    sb_puts(sb, ",\"logins\":[");
    for (size_t i = 0; i < n && used <= NOTICE_MAX_VALUE; i++) {
        const char *l = in->logins ? in->logins[i] : account_display(in->account);
        size_t len = l ? strnlen(l, NOTICE_MAX_VALUE + 1) : 0;

        if (i > 0)
            sb_puts(sb, ",");
        used += len;
        sb_json_str(sb, l ? l : "", len > NOTICE_MAX_VALUE ? NOTICE_MAX_VALUE
                                                             : len);
    }
    sb_puts(sb, "]");
}

void
cp_notice_webhook(const struct cp_incident *in, struct strbuf *out)
{
    char ts[32];

    cp_format_time(ts, sizeof(ts), incident_ms(in));
    sb_json_open(out, CP_JSON_WEBHOOK);
    sb_json_kcstr(out, "event", in->released ? "released" : "incident",
                  false);
    sb_json_ku64(out, "incident", in->id, false);
    sb_json_ku64(out, "change", in->change != 0 ? in->change : in->id, false);
    json_field(out, "account", in->account);
    json_field(out, "customer", in->customer);
    json_field(out, "state", in->state);
    json_field(out, "previous_state", in->prev_state);
    sb_json_kcstr(out, "time", ts, false);
    sb_json_knum(out, "score", in->score, false);
    json_field(out, "evidence", in->evidence);
    json_field(out, "reason", in->reason);
    json_field(out, "actor", in->actor);
    json_field(out, "message", in->message);
    json_logins(out, in);
    sb_puts(out, ",\"signals\":[");
    for (size_t i = 0; i < in->nsignals && i < CP_SIG_COUNT; i++)
        sb_printf(out, "%s\"%s\"", i ? "," : "",
                  cp_signal_name((enum cp_signal)in->signals[i]));
    sb_puts(out, "]");
    json_field(out, "client", in->client_addr);
    json_field(out, "help_url", in->help_url);
    sb_puts(out, "}");
}
