/* tlsconf.c — see tlsconf.h. */
#include "tlsconf.h"
#include "err.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* A root is never sent (RFC 8446 4.4.2 lets the sender omit it): a peer verifies us against
 * its own trust bundle, and a root it parsed from us could only be ignored — at the price of
 * one more certificate to decode per handshake (in OpenSSL 3.0, a decoder chain for its key). */
static int tlsconf__is_root(X509 *x)
{
    return (X509_get_extension_flags(x) & EXFLAG_SS) != 0;
}

SSL_CTX *tlsconf_ctx_new(tlsconf_role role, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key, X509_STORE *trust)
{
    SSL_CTX *ctx = SSL_CTX_new(role == TLSCONF_SERVER ? TLS_server_method() : TLS_client_method());
    int rc = INE_OK;
    if (!ctx) return ine_err_ossl(INE_ECRYPTO, "SSL_CTX_new"), NULL;
    GUARD_OSSL(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION), err);
    GUARD_OSSL(SSL_CTX_set_cipher_list(ctx, TLSCONF_CIPHERS_12), err);
    GUARD_OSSL(SSL_CTX_set_ciphersuites(ctx, TLSCONF_SUITES_13), err);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their buffers back; partial writes keep relays simple. We send
     * our chain as configured, never one built from the trust store: OpenSSL would otherwise
     * verify our own certificate again for every handshake to find it. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_NO_AUTO_CHAIN);
    if (cert) {
        GUARD_OSSL(SSL_CTX_use_certificate(ctx, cert) == 1, err);
        for (int i = 0; chain && i < sk_X509_num(chain); i++) {
            X509 *x = sk_X509_value(chain, i);
            if (tlsconf__is_root(x)) continue;
            GUARD_OSSL(SSL_CTX_add1_chain_cert(ctx, x), err);
        }
        GUARD_OSSL(SSL_CTX_use_PrivateKey(ctx, key) == 1, err);
        GUARD_OSSL(SSL_CTX_check_private_key(ctx) == 1, err);
    }
    if (trust) {
        X509_STORE_up_ref(trust);
        SSL_CTX_set_cert_store(ctx, trust);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (role == TLSCONF_SERVER ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
        SSL_CTX_set_verify_depth(ctx, 4);
    }
    return ctx;
err:
    (void)rc;
    SSL_CTX_free(ctx);
    return NULL;
}

void tlsconf_drop_roots(STACK_OF(X509) *chain)
{
    for (int i = sk_X509_num(chain) - 1; i >= 0; i--)
        if (tlsconf__is_root(sk_X509_value(chain, i))) X509_free(sk_X509_delete(chain, i));
}

X509_STORE *tlsconf_trust_from_bundle(const proj_state *st)
{
    X509_STORE *s = X509_STORE_new();
    if (!s) return NULL;
    for (size_t i = 0; i < st->n_bundle; i++) {
        const char *pem = st->bundle[i].pem;
        BIO *b;
        X509 *x;
        if (!pem) continue;
        b = BIO_new_mem_buf(pem, -1);
        x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        if (x) X509_STORE_add_cert(s, x);
        X509_free(x);
        BIO_free(b);
    }
    ERR_clear_error();
    return s;
}

int tlsconf_pem_certs(const char *pem, X509 **leaf, STACK_OF(X509) **chain)
{
    BIO *b = BIO_new_mem_buf(pem ? pem : "", -1);
    X509 *x;
    *leaf = NULL;
    *chain = sk_X509_new_null();
    while (b && *chain && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        if (!*leaf) *leaf = x;
        else sk_X509_push(*chain, x);
    }
    ERR_clear_error();
    BIO_free(b);
    return *leaf ? INE_OK : ine_err(INE_EINVAL, "no certificate in the PEM text");
}
