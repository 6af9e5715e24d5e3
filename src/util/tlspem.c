/*
 * tlspem.c — see tlspem.h. Parsing certificates and keys is OpenSSL's
 * (doc/design.md, "Not hand-written").
 */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "util/tlspem.h"

int
tls_pem_certs(const char *text, size_t len)
{
    BIO *b = BIO_new_mem_buf(text, (int)len);
    X509 *x;
    int n = 0;

    if (b == NULL)
        return 0;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        n++;
    }
    ERR_clear_error(); /* (the end of the text reads as an error) */
    BIO_free(b);
    return n;
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
