/* tlsconf.h — TLS exactly as ine specifies it, in one place for every listener and client:
 * TLS 1.2 with ECDHE-RSA-AES256-GCM-SHA384 / ECDHE-RSA-AES128-GCM-SHA256 only, TLS 1.3 with
 * TLS_AES_128_GCM_SHA256 / TLS_AES_256_GCM_SHA384 only, nothing older, no renegotiation, no
 * compression; mutual authentication where asked, against a trust store built from the
 * projection's trust bundle. */
#ifndef INE_TLSCONF_H
#define INE_TLSCONF_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "proj.h"

#define TLSCONF_CIPHERS_12 "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"
#define TLSCONF_SUITES_13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"

typedef enum { TLSCONF_SERVER = 0, TLSCONF_CLIENT = 1 } tlsconf_role;

/* A context with the protocol policy, our certificate (+ chain, may be NULL; roots in it are
 * not sent) and key, and, when `trust` is given, peer verification against it (a server then
 * requires a client certificate). The context takes its own references. */
SSL_CTX *tlsconf_ctx_new(tlsconf_role role, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key, X509_STORE *trust);

/* Remove (and free) the roots (self-signed certificates) of a chain we are about to present
 * other than through tlsconf_ctx_new, which skips them itself. */
void tlsconf_drop_roots(STACK_OF(X509) *chain);

/* A trust store of the bundle's roots (current and retiring) whose PEM the log carried. */
X509_STORE *tlsconf_trust_from_bundle(const proj_state *st);

/* Certificates of a PEM text: the first is the leaf, the rest go to *chain (may be empty). */
int tlsconf_pem_certs(const char *pem, X509 **leaf, STACK_OF(X509) **chain);

#endif
