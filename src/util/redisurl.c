/*
 * redisurl.c — see redisurl.h. Every part is length-checked before it is
 * copied; nothing here is secret-aware beyond never printing the password.
 */
#include "util/redisurl.h"

#include <stdio.h>
#include <string.h>

#include "util/parse.h"

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* %XX-decode s[0..len) into out (NUL-terminated); false if too long or a
 * bad escape. */
static bool
decode(const char *s, size_t len, char *out, size_t outsz)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (c == '%') {
            int hi, lo;

            if (i + 2 >= len)
                return false;
            hi = hexval(s[i + 1]);
            lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return false;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o + 1 >= outsz)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

static const char *
parse_db(const char *s, size_t len, unsigned *db)
{
    uint64_t v;

    if (len == 0)
        return NULL;
    if (!parse_u64(s, len, &v) || v > 65535)
        return "the database number is not a number from 0 to 65535";
    *db = (unsigned)v;
    return NULL;
}

static const char *
parse_unix(const char *s, size_t len, struct redis_url *u)
{
    const char *q = memchr(s, '?', len);
    size_t plen = q ? (size_t)(q - s) : len;

    if (plen == 0 || s[0] != '/')
        return "expected unix:/PATH";
    if (plen >= sizeof(u->path))
        return "the socket path is longer than 107 bytes";
    if (memchr(s, '\0', plen) != NULL)
        return "the socket path contains a NUL byte";
    memcpy(u->path, s, plen);
    u->path[plen] = '\0';
    if (q == NULL)
        return NULL;
    q++;
    len -= plen + 1;
    if (len < 3 || memcmp(q, "db=", 3) != 0)
        return "expected unix:/PATH?db=N";
    return parse_db(q + 3, len - 3, &u->db);
}

static const char *
parse_cred(const char *s, size_t len, struct redis_url *u)
{
    const char *colon = memchr(s, ':', len);

    if (colon == NULL) /* redis://PASSWORD@host is not a form: be exact */
        return "expected USER:PASSWORD@ or :PASSWORD@ before the host";
    if (!decode(s, (size_t)(colon - s), u->user, sizeof(u->user)) ||
        !decode(colon + 1, len - (size_t)(colon + 1 - s), u->password,
                sizeof(u->password)))
        return "the user or password is too long or has a bad %-escape";
    u->has_password = true;
    return NULL;
}

static const char *
parse_hostport(const char *s, size_t len, struct redis_url *u)
{
    const char *end = s + len, *p;
    size_t hlen;
    uint64_t port = 6379;

    if (len > 0 && s[0] == '[') {
        p = memchr(s, ']', len);
        if (p == NULL)
            return "an IPv6 address needs its closing ']'";
        hlen = (size_t)(p - s - 1);
        s++;
        p++;
    } else {
        p = memchr(s, ':', len);
        if (p == NULL)
            p = end;
        hlen = (size_t)(p - s);
    }
    if (hlen == 0)
        return "no host";
    if (hlen >= sizeof(u->host))
        return "the host name is too long";
    for (size_t i = 0; i < hlen; i++)
        if (s[i] <= ' ' || s[i] == '/' || s[i] == '@' || s[i] == 0x7f)
            return "the host name has a character not allowed in it";
    memcpy(u->host, s, hlen);
    u->host[hlen] = '\0';
    if (p < end) {
        if (*p != ':' || !parse_u64(p + 1, (size_t)(end - p - 1), &port) ||
            port == 0 || port > 65535)
            return "the port is not a number from 1 to 65535";
    }
    u->port = (int)port;
    return NULL;
}

const char *
redis_url_parse(const char *s, size_t len, struct redis_url *u)
{
    const char *at, *slash, *why;
    size_t n;

    memset(u, 0, sizeof(*u));
    if (len >= 5 && memcmp(s, "unix:", 5) == 0)
        return parse_unix(s + 5, len - 5, u);
    if (len >= 9 && memcmp(s, "rediss://", 9) == 0) {
        u->tls = true;
        s++;
        len--;
    } else if (len < 8 || memcmp(s, "redis://", 8) != 0) {
        return "expected redis://[USER:PASSWORD@]HOST[:PORT][/DB], "
               "rediss://... (TLS) or unix:/PATH";
    }
    s += 8;
    len -= 8;
    slash = memchr(s, '/', len);
    n = slash ? (size_t)(slash - s) : len;
    at = memrchr(s, '@', n);
    if (at != NULL) {
        if ((why = parse_cred(s, (size_t)(at - s), u)) != NULL)
            return why;
        n -= (size_t)(at + 1 - s);
        len -= (size_t)(at + 1 - s);
        s = at + 1;
    }
    if ((why = parse_hostport(s, n, u)) != NULL)
        return why;
    if (slash == NULL)
        return NULL;
    return parse_db(s + n + 1, len - n - 1, &u->db);
}

void
redis_url_where(const struct redis_url *u, char *out, size_t outsz)
{
    if (u->path[0] != '\0')
        snprintf(out, outsz, "unix:%s", u->path);
    else if (strchr(u->host, ':') != NULL)
        snprintf(out, outsz, "[%s]:%d", u->host, u->port);
    else
        snprintf(out, outsz, "%s:%d", u->host, u->port);
}
