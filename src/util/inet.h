/*
 * inet.h — IPv4/IPv6 addresses and prefixes as plain values, for keying
 * accounts by client network and for CIDR entries in the customer map.
 * Parsing takes (pointer, length) and rejects anything inet_pton rejects.
 */
#ifndef CP_UTIL_INET_H
#define CP_UTIL_INET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct inet_addr {
    uint8_t family;  /* 4 or 6 */
    uint8_t bytes[16]; /* IPv4 uses the first 4 */
};

#define INET_PREFIX_STRLEN 48 /* "ffff:...:ffff/128" + NUL */

bool inet_parse(const char *s, size_t len, struct inet_addr *out);
/* "a.b.c.d/n" or "x::/n" (a bare address is a full-length prefix). */
bool inet_parse_prefix(const char *s, size_t len, struct inet_addr *out,
                       unsigned *plen);
/* Clear the bits after the first `plen`. */
void inet_mask(struct inet_addr *a, unsigned plen);
unsigned inet_maxlen(const struct inet_addr *a);
/* Write "addr/plen" into out (INET_PREFIX_STRLEN bytes suffice). */
void inet_format_prefix(char *out, size_t outsz, const struct inet_addr *a,
                        unsigned plen);

#endif
