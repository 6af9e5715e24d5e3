/* strbuf.c — see strbuf.h. */
#include "util/strbuf.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util/msg.h"
#include "util/xalloc.h"

void
sb_init(struct strbuf *sb)
{
    sb->cap = 64;
    sb->data = xmalloc(sb->cap);
    sb->len = 0;
    sb->data[0] = '\0';
}

void
sb_fini(struct strbuf *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
}

void
sb_reset(struct strbuf *sb)
{
    sb->len = 0;
    sb->data[0] = '\0';
}

static void
sb_reserve(struct strbuf *sb, size_t more)
{
    size_t need;

    if (more > ((size_t)-1) / 2 - sb->len)
        msg_panic("strbuf overflow");
    need = sb->len + more + 1;
    if (need <= sb->cap)
        return;
    while (sb->cap < need)
        sb->cap *= 2;
    sb->data = xrealloc(sb->data, sb->cap);
}

void
sb_append(struct strbuf *sb, const char *data, size_t len)
{
    sb_reserve(sb, len);
    memcpy(sb->data + sb->len, data, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

void
sb_puts(struct strbuf *sb, const char *s)
{
    sb_append(sb, s, strlen(s));
}

void
sb_printf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(sb->data + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg_panic("sb_printf: bad format");
    if ((size_t)n >= sb->cap - sb->len) {
        sb_reserve(sb, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(sb->data + sb->len, sb->cap - sb->len, fmt, ap);
        va_end(ap);
    }
    sb->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t
utf8_seq(const unsigned char *s, size_t len)
{
    size_t n;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (n > len)
        return 0; /* cut in the middle of a character */
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong or surrogate */
    return n;
}

size_t
utf8_check(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, n;

    while (i < len) {
        if ((n = utf8_seq(u + i, len - i)) == 0)
            return i;
        i += n;
    }
    return len;
}

void
sb_json_str(struct strbuf *sb, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    sb_reserve(sb, len + 2);
    sb->data[sb->len++] = '"';
    while (i < len) {
        unsigned char c = u[i];
        size_t n = utf8_seq(u + i, len - i);
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            sb_append(sb, esc, 2);
        } else if (c < 0x20 || c == 0x7f || n == 0) {
            /* controls, and bytes that are not UTF-8, as \u00XX */
            sb_append(sb, esc, 6);
            n = 1;
        } else {
            sb_append(sb, s + i, n);
        }
        i += n ? n : 1;
    }
    sb_append(sb, "\"", 1);
}

void
sb_json_num(struct strbuf *sb, double v)
{
    char buf[64];
    int n;

    if (!isfinite(v)) {
        sb_puts(sb, "null");
        return;
    }
    n = snprintf(buf, sizeof(buf), "%.3f", v);
    if (n <= 0 || (size_t)n >= sizeof(buf)) { /* |v| beyond 1e59: as is */
        sb_printf(sb, "%.17g", v);
        return;
    }
    /* always a fraction, so a field is one JSON type: 720.0, not 720 in
     * one line and 719.999 in the next; trailing zeros dropped */
    while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.')
        buf[--n] = '\0';
    if (strcmp(buf, "-0.0") == 0)
        memcpy(buf, "0.0", 4), n = 3;
    sb_append(sb, buf, (size_t)n);
}

void
sb_json_open(struct strbuf *sb, const char *schema)
{
    sb_puts(sb, "{");
    sb_json_kcstr(sb, "schema", schema, true);
}

void
sb_json_key(struct strbuf *sb, const char *name, bool first)
{
    sb_printf(sb, "%s\"%s\":", first ? "" : ",", name);
}

void
sb_json_kstr(struct strbuf *sb, const char *name, const char *s, size_t len,
             bool first)
{
    sb_json_key(sb, name, first);
    if (s == NULL)
        sb_puts(sb, "null");
    else
        sb_json_str(sb, s, len);
}

void
sb_json_kcstr(struct strbuf *sb, const char *name, const char *s, bool first)
{
    sb_json_kstr(sb, name, s, s ? strlen(s) : 0, first);
}

void
sb_json_ku64(struct strbuf *sb, const char *name, uint64_t v, bool first)
{
    sb_printf(sb, "%s\"%s\":%llu", first ? "" : ",", name,
              (unsigned long long)v);
}

void
sb_json_knum(struct strbuf *sb, const char *name, double v, bool first)
{
    sb_json_key(sb, name, first);
    sb_json_num(sb, v);
}

void
sb_json_kbool(struct strbuf *sb, const char *name, bool v, bool first)
{
    sb_json_key(sb, name, first);
    sb_puts(sb, v ? "true" : "false");
}

void
sb_json_kreal(struct strbuf *sb, const char *name, double v, bool first)
{
    char buf[64];
    int n;

    sb_json_key(sb, name, first);
    if (!isfinite(v)) {
        sb_puts(sb, "null");
        return;
    }
    n = snprintf(buf, sizeof(buf), "%.6g", v); /* at most 13 bytes */
    /* a fraction or an exponent, always: 1.0, not 1 (one JSON type) */
    if (strpbrk(buf, ".e") == NULL)
        memcpy(buf + n, ".0", 3);
    sb_puts(sb, buf);
}

const char *
str_escape(char *out, size_t outsz, const char *in, size_t inlen,
           size_t max_in)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;

    if (outsz == 0)
        return out;
    for (i = 0; i < inlen && i < max_in; i++) {
        unsigned char c = (unsigned char)in[i];

        if (c >= 0x20 && c < 0x7f && c != '\\') {
            if (o + 1 >= outsz)
                break;
            out[o++] = (char)c;
        } else {
            if (o + 4 >= outsz)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (i < inlen && o + 3 < outsz) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

void
cp_format_time(char *out, size_t n, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ms % 1000));
}
