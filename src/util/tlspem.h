/*
 * tlspem.h — checks of the PEM texts a TLS client is given (the CA
 * bundle, its certificate and key: store.redis_tls_*), with OpenSSL's
 * libcrypto. Nothing is kept: the store builds its TLS context from the
 * same texts (store/tlsrelay.h).
 */
#ifndef CP_UTIL_TLSPEM_H
#define CP_UTIL_TLSPEM_H

#include <stddef.h>

/* How many certificates the text holds (0: none, or not PEM). */
int tls_pem_certs(const char *text, size_t len);
/* NULL if key holds one private key that belongs to the first certificate
 * of cert, else what is wrong (a constant). */
const char *tls_pem_key_check(const char *cert, size_t certlen,
                              const char *key, size_t keylen);

#endif
