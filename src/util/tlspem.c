/*
 * tlspem.c — see tlspem.h. Parsing certificates and keys, and the
 * context, are OpenSSL's (doc/design.md, "What is hand-written").
 */
#include <stdio.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "util/tlspem.h"

/* Every certificate of a PEM text to fn (which takes it); how many, or
 * -1 if fn refused one or the text does not parse after the first. */
static int
each_cert(const char *pem, size_t len, SSL_CTX *ctx,
          int (*fn)(SSL_CTX *ctx, X509 *x, int i))
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    unsigned long e;
    int n = 0;

    if (b == NULL)
        return -1;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (fn(ctx, x, n++) != 1) {
            BIO_free(b);
            return -1;
        }
    }
    BIO_free(b);
    e = ERR_peek_last_error();
    /* the end of the text reads as "no start line"; anything else is a
     * certificate that does not parse */
    if (n > 0 && e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM &&
                             ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
        return -1;
    ERR_clear_error();
    return n;
}

static int
count(SSL_CTX *ctx, X509 *x, int i)
{
    (void)ctx;
    (void)i;
    X509_free(x);
    return 1;
}

int
tls_pem_certs(const char *text, size_t len)
{
    return each_cert(text, len, NULL, count);
}

const char *
tls_pem_key_check(const char *cert, size_t certlen, const char *key,
                  size_t keylen)
{
    BIO *cb = BIO_new_mem_buf(cert, (int)certlen);
    BIO *kb = BIO_new_mem_buf(key, (int)keylen);
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    /* (no passphrase: a daemon cannot type one) */
    EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, (void *)"")
                     : NULL;
    const char *why = NULL;

    if (x == NULL)
        why = "no certificate in it (PEM)";
    else if (k == NULL)
        why = "no private key in it (PEM, not protected by a passphrase)";
    else if (X509_check_private_key(x, k) != 1)
        why = "the key does not belong to the certificate";
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    return why;
}

static int
add_ca(SSL_CTX *ctx, X509 *x, int i)
{
    (void)i;
    if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), x) != 1)
        ERR_clear_error(); /* (a duplicate in the bundle: fine) */
    X509_free(x);
    return 1;
}

static int
add_own(SSL_CTX *ctx, X509 *x, int i)
{
    int ok;

    if (i > 0) { /* the chain after it: kept by the context */
        if (SSL_CTX_add_extra_chain_cert(ctx, x) == 1)
            return 1;
        X509_free(x);
        return 0;
    }
    ok = SSL_CTX_use_certificate(ctx, x);
    X509_free(x);
    return ok;
}

/* err: what failed, and OpenSSL's reason */
static SSL_CTX *
failed(SSL_CTX *ctx, const char *part, const char **which, const char *what,
       char *err, size_t errlen)
{
    unsigned long e = ERR_get_error();
    char buf[200];

    ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s: %s", what, e ? buf : "not PEM, or empty");
    ERR_clear_error();
    if (which != NULL)
        *which = part;
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *
tls_pem_ctx(const char *ca, size_t calen, const char *cert, size_t certlen,
            const char *key, size_t keylen, const char **which, char *err,
            size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    BIO *kb;
    EVP_PKEY *k;

    if (ctx == NULL)
        return failed(NULL, "ca", which, "cannot make a TLS context", err,
                      errlen);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    if (each_cert(ca, calen, ctx, add_ca) <= 0)
        return failed(ctx, "ca", which, "the CA bundle", err, errlen);
    if (cert == NULL)
        return ctx;
    if (each_cert(cert, certlen, ctx, add_own) <= 0)
        return failed(ctx, "cert", which, "the client certificate", err,
                      errlen);
    kb = BIO_new_mem_buf(key, (int)keylen);
    k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, (void *)"") : NULL;
    BIO_free(kb);
    if (k == NULL || SSL_CTX_use_PrivateKey(ctx, k) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        EVP_PKEY_free(k);
        return failed(ctx, "key", which, "the client key", err, errlen);
    }
    EVP_PKEY_free(k);
    return ctx;
}
