/*
 * tlsrelay.h — TLS to Redis (rediss://) under a hiredis that has none
 * (Debian 12's 0.14). For each server it reaches, the store connects
 * hiredis to a local socket in a directory of its own (mode 0700); a
 * thread relays each such connection to the server over TLS with
 * OpenSSL: the server's certificate is verified against the CA bundle and
 * its name (or address), and the client certificate is presented if one
 * is configured. hiredis speaks RESP as ever, AUTH included, inside it.
 *
 * Why threads: a person's commands use hiredis's blocking API on the
 * loop thread, which a relay on that loop could not serve meanwhile. Each
 * relayed connection has its own thread, blocked in poll(2) on its two
 * sockets; there are a few (one per node, one for a person's commands).
 */
#ifndef CP_STORE_TLSRELAY_H
#define CP_STORE_TLSRELAY_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

struct tls_relay;

/* The TLS context from cfg's CA bundle and client certificate (checked
 * when the config was loaded), its sockets in a new directory next to
 * the store. NULL with err (CP_ERR_MAX) on failure. */
struct tls_relay *tls_relay_new(const struct cp_config *cfg, char *err);
/* The local socket that reaches host:port over TLS; made at the first
 * call for it. NULL with err on failure. */
const char *tls_relay_path(struct tls_relay *t, const char *host, int port,
                           char *err);
/* Why the last relayed connection to host:port failed ("" : none); for
 * the log line of a lost connection. */
void tls_relay_why(struct tls_relay *t, const char *host, int port,
                   char *out, size_t n);
/* Closes every relayed connection, waits for the threads, removes the
 * sockets and their directory. */
void tls_relay_free(struct tls_relay *t);

#endif
