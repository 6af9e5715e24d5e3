/*
 * tlspem.h — the TLS client context of the fleet store (rediss://), from
 * the PEM texts of its configuration (the CA bundle, a client certificate
 * and its key: store.redis_tls_*), with OpenSSL. The configuration
 * builds one to check them at each load (so that --check and a reload
 * refuse what the daemon could not use); the store builds the one it
 * uses (store/tlsrelay.h).
 */
#ifndef CP_UTIL_TLSPEM_H
#define CP_UTIL_TLSPEM_H

#include <stddef.h>

#include <openssl/ssl.h>

/* How many certificates the text holds (0: none, or not PEM; -1: PEM
 * that does not parse after the first). */
int tls_pem_certs(const char *text, size_t len);
/* NULL if key holds one private key that belongs to the first certificate
 * of cert, else what is wrong (a constant). */
const char *tls_pem_key_check(const char *cert, size_t certlen,
                              const char *key, size_t keylen);
/*
 * A client context: TLS 1.2 at least, the server's certificate verified
 * against the CA bundle `ca`, the client certificate `cert` (and the
 * chain after it) with `key` if cert is not NULL. NULL on failure, with
 * why in err and, if which is not NULL, the part that failed ("ca",
 * "cert" or "key") in *which.
 */
SSL_CTX *tls_pem_ctx(const char *ca, size_t calen, const char *cert,
                     size_t certlen, const char *key, size_t keylen,
                     const char **which, char *err, size_t errlen);

#endif
