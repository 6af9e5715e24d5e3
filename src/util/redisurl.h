/*
 * redisurl.h — the address of a Redis server as an operator writes it in
 * the configuration (store.redis), parsed strictly. No I/O.
 *
 *   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]   HOST a name, an IPv4
 *                                                 address or [IPv6]
 *   unix:/PATH[?db=DB]                            a local socket
 *
 * USER and PASSWORD may be %XX-escaped. `rediss://` is the same over TLS
 * (store/tlsrelay.h: the hiredis of Debian 12, 0.14, has no TLS).
 */
#ifndef CP_UTIL_REDISURL_H
#define CP_UTIL_REDISURL_H

#include <stdbool.h>
#include <stddef.h>

#define REDIS_URL_MAX_HOST 256
#define REDIS_URL_MAX_PATH 108 /* sun_path */
#define REDIS_URL_MAX_CRED 256

struct redis_url {
    char host[REDIS_URL_MAX_HOST]; /* "" for a unix socket */
    int port;
    char path[REDIS_URL_MAX_PATH]; /* the unix socket, or "" */
    char user[REDIS_URL_MAX_CRED];     /* "" : none (AUTH with password) */
    char password[REDIS_URL_MAX_CRED]; /* "" : none */
    bool has_password;
    bool tls;                          /* rediss:// */
    unsigned db;
};

/* Parse s[0..len). NULL on success, else what is wrong (a constant). */
const char *redis_url_parse(const char *s, size_t len, struct redis_url *out);

/* "HOST:PORT" or "unix:PATH", for logs (never the password). */
void redis_url_where(const struct redis_url *u, char *out, size_t outsz);

#endif
