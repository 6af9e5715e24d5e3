/* inet.c — see inet.h. */
#include "util/inet.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "util/parse.h"

bool
inet_parse(const char *s, size_t len, struct inet_addr *out)
{
    char tmp[INET6_ADDRSTRLEN];

    if (len == 0 || len >= sizeof(tmp) || memchr(s, '\0', len))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, tmp, out->bytes) == 1) {
        out->family = 4;
        return true;
    }
    if (inet_pton(AF_INET6, tmp, out->bytes) == 1) {
        out->family = 6;
        return true;
    }
    return false;
}

unsigned
inet_maxlen(const struct inet_addr *a)
{
    return a->family == 4 ? 32 : 128;
}

bool
inet_parse_prefix(const char *s, size_t len, struct inet_addr *out,
                  unsigned *plen)
{
    const char *slash = memchr(s, '/', len);
    uint64_t n;

    if (slash == NULL) {
        if (!inet_parse(s, len, out))
            return false;
        *plen = inet_maxlen(out);
        return true;
    }
    if (!inet_parse(s, (size_t)(slash - s), out))
        return false;
    if (!parse_u64(slash + 1, len - (size_t)(slash - s) - 1, &n) ||
        n > inet_maxlen(out))
        return false;
    *plen = (unsigned)n;
    inet_mask(out, *plen);
    return true;
}

void
inet_mask(struct inet_addr *a, unsigned plen)
{
    unsigned max = inet_maxlen(a), i;

    for (i = plen; i < max; i++)
        a->bytes[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
}

void
inet_format_prefix(char *out, size_t outsz, const struct inet_addr *a,
                   unsigned plen)
{
    char tmp[INET6_ADDRSTRLEN];

    if (inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->bytes, tmp,
                  sizeof(tmp)) == NULL)
        tmp[0] = '\0';
    snprintf(out, outsz, "%s/%u", tmp, plen);
}
