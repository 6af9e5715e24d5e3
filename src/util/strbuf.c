/* strbuf.c — see strbuf.h. */
#include "util/strbuf.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

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

void
sb_json_str(struct strbuf *sb, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;

    sb_reserve(sb, len + 2);
    sb->data[sb->len++] = '"';
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            sb_append(sb, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            sb_append(sb, esc, 6);
        } else {
            sb_append(sb, (const char *)&c, 1);
        }
    }
    sb_append(sb, "\"", 1);
}

void
sb_json_num(struct strbuf *sb, double v)
{
    if (!isfinite(v))
        sb_puts(sb, "null");
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        sb_printf(sb, "%lld", (long long)v);
    else
        sb_printf(sb, "%.3f", v);
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
