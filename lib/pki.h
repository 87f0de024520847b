/* pki.h — X.509 for the CA service: the cluster CA, node certificates, the objects that carry
 * certificates and keys around (PEM, PKCS#8 DER for sealing), the facts every consumer needs
 * about a certificate (pki_info), and the validation of customer uploads.
 *
 * OpenSSL 3 EVP/X509 APIs only. No function ever puts key material into an error sentence.
 * Time is always a parameter (unix seconds), never read from the clock here, so tests and the
 * CA service can move it.
 *
 * Node certificates (pki_issue_node):
 *   RSA-2048, SHA-256, v3, random positive serial (16 bytes, top bit cleared, non-zero);
 *   subject CN "<node name> <cp|dp>" (or "node-<uid> <cp|dp>" without a name), O "ine",
 *   OU <cluster uid>; issuer = the CA's subject;
 *   notBefore = now - 60 s (clock skew), notAfter = min(now + validity, CA notAfter), so with the
 *   default 90 days notAfter - notBefore = 90 d + 60 s;
 *   basicConstraints critical CA:FALSE; keyUsage critical digitalSignature, keyEncipherment;
 *   EKU serverAuth, clientAuth; SKI; AKI keyid = the CA's SKI;
 *   SAN: IP (address is an IP literal) or DNS (address is a host name), DNS <node name> when the
 *   name is a valid host name different from the address, and the URI identity
 *   spiffe://<cluster uid>/node/<node uid>/<cp|dp>.
 *   A common name longer than X.509's 64 characters is cut at a UTF-8 boundary (the SANs, not
 *   the CN, carry the identity).
 *
 * Customer uploads (pki_upload_check): see the rules above that function. */
#ifndef INE_PKI_H
#define INE_PKI_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ine/v1/command.pb-c.h"

typedef struct pki_cert pki_cert; /* one X509 */
typedef struct pki_key pki_key;   /* one EVP_PKEY holding a private key */

#define PKI_CA_KEY_BITS_DEFAULT 3072
#define PKI_CA_YEARS_DEFAULT 10
#define PKI_NODE_KEY_BITS 2048
#define PKI_NODE_VALIDITY_DEFAULT (90 * 86400LL)
/* notBefore is set this far before issuance: a node whose clock runs up to 10 minutes behind
 * the CA's still accepts a new certificate (cert-manager and step-ca backdate too); past that,
 * the node_clock_skew alert has said so first (lib/alerts.h). */
#define PKI_BACKDATE_S 600
#define PKI_FPR_LEN 64 /* hex characters of a SHA-256 fingerprint */

/* Plane numbers are ine.v1.Plane's: 1 control ("cp"), 2 data ("dp"). */
#define PKI_PLANE_CONTROL INE__V1__PLANE__PLANE_CONTROL
#define PKI_PLANE_DATA INE__V1__PLANE__PLANE_DATA

/* ---- objects ------------------------------------------------------------------------------ */

void pki_cert_free(pki_cert *c); /* NULL is fine */
void pki_key_free(pki_key *k);   /* NULL is fine */

/* The OpenSSL objects inside, borrowed (valid while the wrapper lives), for the transport. */
X509 *pki_x509(const pki_cert *c);
EVP_PKEY *pki_evp(const pki_key *k);

/* Adopt an object (the wrapper takes over the caller's reference). On failure the object is
 * freed too, so the caller never has to. */
int pki_cert_adopt(X509 *x, pki_cert **out);
int pki_key_adopt(EVP_PKEY *k, pki_key **out);

/* PEM of one certificate; *pem is malloc'd and NUL-terminated (caller frees). */
int pki_cert_to_pem(const pki_cert *c, char **pem);
/* The first CERTIFICATE block of `pem` (text around it is ignored). None → INE_EINVAL. */
int pki_cert_from_pem(const char *pem, pki_cert **out);

/* The private key as PKCS#8 DER (the form that gets sealed). *der is malloc'd: release it
 * with pki_secret_free(*der, *len), which cleanses it first. */
int pki_key_to_der(const pki_key *k, uint8_t **der, size_t *len);
/* A PKCS#8 DER private key (exactly `len` bytes, nothing trailing). */
int pki_key_from_der(const uint8_t *der, size_t len, pki_key **out);
/* Cleanse then free a secret buffer; NULL is fine. */
void pki_secret_free(void *p, size_t len);

/* ---- facts about a certificate -------------------------------------------------------------- */

typedef struct {
    char *serial_hex;              /* lowercase, minimal ("0" for zero, "-" when negative) */
    char fingerprint[PKI_FPR_LEN + 1]; /* lowercase hex SHA-256 of the DER */
    int64_t not_before, not_after; /* unix seconds */
    char *subject, *issuer;        /* one line, RFC 2253 ("CN=x,OU=y,O=ine"), UTF-8 kept */
    /* The identity from a URI SAN spiffe://<cluster>/node/<n>/<cp|dp>; empty/0 when absent. */
    char cluster_uid[65];
    uint32_t node_uid;
    int plane;                     /* PKI_PLANE_CONTROL / PKI_PLANE_DATA / 0 */
} pki_info;

/* Fill `out` (zeroed first; release with pki_info_clear, also after a failure). */
int pki_cert_info(const pki_cert *c, pki_info *out);

/* The node identity of a certificate: its first URI SAN that is exactly
 * spiffe://<cluster>/node/<uid>/<cp|dp>, where <uid> is 1..4294967295 in decimal with no sign,
 * no leading zero and no space, and nothing follows the plane. 1 with the parts (cluster
 * NUL-terminated into clen bytes), 0 when the certificate has no such URI. */
int pki_x509_node_id(X509 *x, char *cluster, size_t clen, uint32_t *node_uid, int *plane);
void pki_info_clear(pki_info *info);
/* Lowercase hex SHA-256 of the DER into out[65]. */
int pki_cert_fingerprint(const pki_cert *c, char out[PKI_FPR_LEN + 1]);

/* ---- the cluster CA and node certificates --------------------------------------------------- */

typedef struct {
    const char *cluster_name; /* CN "ine cluster CA <name>" (non-empty) */
    const char *cluster_uid;  /* OU; lowercase letters, digits, '.', '-', '_' (a SPIFFE trust domain) */
    int key_bits;             /* 0: PKI_CA_KEY_BITS_DEFAULT; 2048..16384 */
    int years;                /* 0: PKI_CA_YEARS_DEFAULT; calendar years from now, 1..100 */
    int64_t now;              /* unix seconds; notBefore = now - 60 */
} pki_ca_params;

/* The cluster CA: RSA, self-signed, SHA-256, basicConstraints critical CA:TRUE pathlen:0,
 * keyUsage critical keyCertSign cRLSign, SKI, AKI (its own key id), random positive serial. */
int pki_ca_create(const pki_ca_params *p, pki_cert **cert_out, pki_key **key_out);

typedef struct {
    const char *cluster_uid;  /* as for the CA */
    uint32_t node_uid;
    const char *address;      /* IP literal (IPv6 may be in brackets) or host name */
    const char *name;         /* may be NULL or empty */
    int plane;                /* PKI_PLANE_CONTROL or PKI_PLANE_DATA */
    int64_t now;              /* unix seconds */
    int64_t validity_s;       /* 0: PKI_NODE_VALIDITY_DEFAULT */
} pki_issue_params;

/* A node certificate for one plane, signed by the CA (see the top of this file). Refuses
 * (INE_EINVAL) a CA key that does not match the CA, and a CA whose notAfter is not after now. */
int pki_issue_node(const pki_issue_params *p, const pki_cert *ca, const pki_key *ca_key,
                   pki_cert **cert_out, pki_key **key_out);

/* INE_OK when `leaf` chains to `root` (the only trust anchor, its self-signature checked) at
 * time `now`; otherwise INE_ECHAIN with OpenSSL's reason in the sentence. */
int pki_verify_chain_to(const pki_cert *leaf, const pki_cert *root, int64_t now);

/* ---- customer uploads ------------------------------------------------------------------------ */

/* One value per upload rule, equal to ine.v1.ErrorCode's (so pki_upload_err_code is the
 * identity, and a Reply can carry it as is). */
typedef enum {
    PKI_UPLOAD_OK = INE__V1__ERROR_CODE__ERROR_CODE_OK,
    PKI_UPLOAD_INTERNAL = INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL, /* not a rule: we failed */
    PKI_UPLOAD_CERT_PARSE = INE__V1__ERROR_CODE__ERROR_CODE_CERT_PARSE,
    PKI_UPLOAD_CERT_NO_CHAIN = INE__V1__ERROR_CODE__ERROR_CODE_CERT_NO_CHAIN,
    PKI_UPLOAD_KEY_NOT_RSA = INE__V1__ERROR_CODE__ERROR_CODE_KEY_NOT_RSA,
    PKI_UPLOAD_KEY_MISMATCH = INE__V1__ERROR_CODE__ERROR_CODE_KEY_MISMATCH,
    PKI_UPLOAD_CHAIN_INVALID = INE__V1__ERROR_CODE__ERROR_CODE_CHAIN_INVALID,
    PKI_UPLOAD_CERT_EXPIRED = INE__V1__ERROR_CODE__ERROR_CODE_CERT_EXPIRED,
    PKI_UPLOAD_CERT_NOT_YET_VALID = INE__V1__ERROR_CODE__ERROR_CODE_CERT_NOT_YET_VALID,
    PKI_UPLOAD_CERT_EKU = INE__V1__ERROR_CODE__ERROR_CODE_CERT_EKU,
    PKI_UPLOAD_KEY_ENCRYPTED = INE__V1__ERROR_CODE__ERROR_CODE_KEY_ENCRYPTED,
    PKI_UPLOAD_KEY_PARSE = INE__V1__ERROR_CODE__ERROR_CODE_KEY_PARSE,
    PKI_UPLOAD_KEY_TOO_SMALL = INE__V1__ERROR_CODE__ERROR_CODE_KEY_TOO_SMALL,
    PKI_UPLOAD_CERT_WEAK_SIGNATURE = INE__V1__ERROR_CODE__ERROR_CODE_CERT_WEAK_SIGNATURE,
    PKI_UPLOAD_CERT_EXPIRES_SOON = INE__V1__ERROR_CODE__ERROR_CODE_CERT_EXPIRES_SOON,
} pki_upload_err;

/* The ine.v1.ErrorCode for an upload result. */
Ine__V1__ErrorCode pki_upload_err_code(pki_upload_err e);

typedef struct {
    pki_upload_err error_code; /* PKI_UPLOAD_OK on success */
    pki_cert *leaf;
    pki_key *key;
    char *chain_pem;           /* intermediates then root, leaf excluded, in chain order */
    char *root_pem;
    pki_info info;             /* of the leaf */
    char root_fingerprint[PKI_FPR_LEN + 1];
} pki_upload;

/* Validate a customer certificate file and key file at time `now`, changing nothing. The rules,
 * checked in this order, each with its own code and a sentence naming the rule in `why` (also
 * the ine_err_msg() sentence; never any key material):
 *   1. every PEM block of cert_pem is a certificate that parses; at least one  → CERT_PARSE
 *   2. the first certificate is the leaf; the others must form its chain up to and including
 *      a self-signed root (any order, nothing extra). The leaf alone (even self-signed), or a
 *      chain whose root is missing                                              → CERT_NO_CHAIN
 *      a certificate in the file that is not on the leaf's chain               → CHAIN_INVALID
 *   3. key_pem is a PEM private key: encrypted (PKCS#8 ENCRYPTED PRIVATE KEY or a legacy
 *      Proc-Type: 4,ENCRYPTED block, detected without prompting)               → KEY_ENCRYPTED
 *      otherwise unreadable                                                     → KEY_PARSE
 *   4. the key is RSA (rsaEncryption; EC, Ed25519, Ed448, RSA-PSS are not)     → KEY_NOT_RSA
 *      of at least 2048 bits (what OpenSSL's default security level accepts)   → KEY_TOO_SMALL
 *   5. the key is the leaf's                                                   → KEY_MISMATCH
 *   6. the leaf and every chain certificate are valid at now: notBefore <= now
 *                                                                   → CERT_NOT_YET_VALID
 *      and now < notAfter (OpenSSL's own boundary)                             → CERT_EXPIRED
 *   6a. every certificate on the path is valid for PKI_UPLOAD_MIN_LEFT_S more (7 days: the
 *      ine-ca replaces a customer certificate PKI_FALLBACK_BEFORE_S = 5 days before it expires,
 *      so one inside that window would be replaced at once, plus a 2-day margin)
 *                                                                   → CERT_EXPIRES_SOON
 *   6b. no signature on the path is made with SHA-1 or MD5 (a self-signed root's own signature
 *      is not judged: the root is trusted as it is)                → CERT_WEAK_SIGNATURE
 *      and no certificate on the path has an RSA key under 2048 bits             → KEY_TOO_SMALL
 *   7. the leaf has an EKU extension listing both serverAuth and clientAuth     → CERT_EKU
 *      An absent EKU is refused, and anyExtendedKeyUsage does NOT count: OpenSSL's TLS purpose
 *      checks (which the transport's peers apply) reject a certificate whose EKU lacks the
 *      explicit serverAuth/clientAuth OIDs, so accepting it would split the mesh later.
 *   8. the chain verifies at now with the root as the only trust anchor (its self-signature
 *      checked) and the intermediates untrusted, for both the TLS client and server purposes
 *      (so an intermediate whose EKU excludes TLS, or a leaf whose keyUsage does not fit TLS,
 *      fails here rather than at the first handshake)                           → CHAIN_INVALID
 *      (OpenSSL's verify error string, the depth and the failing subject in the sentence).
 *      X509_V_FLAG_X509_STRICT is not set: it refuses certificates real CAs still issue.
 * Returns INE_OK with `out` filled (error_code PKI_UPLOAD_OK), INE_EINVAL when a rule fails
 * (`out` empty but for error_code), or another negative code with error_code
 * PKI_UPLOAD_INTERNAL when we could not do the work (memory, OpenSSL). Release `out` with
 * pki_upload_free in every case. `why` may be NULL. */
#define PKI_FALLBACK_BEFORE_S (5 * 86400LL)   /* a customer certificate gives way this long before expiry */
#define PKI_UPLOAD_MIN_LEFT_S (PKI_FALLBACK_BEFORE_S + 2 * 86400LL)
int pki_upload_check(const char *cert_pem, const char *key_pem, int64_t now, pki_upload *out,
                     char *why, size_t why_len);
void pki_upload_free(pki_upload *u);

/* ---- module-internal, shared by pki.c and pki_upload.c ----------------------------------------- */

int pki__time_unix(const ASN1_TIME *t, int64_t *out);
int pki__x509_to_pem(X509 *x, char **pem);
int pki__x509_fingerprint(const X509 *x, char out[PKI_FPR_LEN + 1]);

#endif
