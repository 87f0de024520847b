/* pki_upload.c — chain verification, and the validation of a customer certificate upload
 * (certificate file + key file).
 *
 * Every rule is checked on in-memory copies before the caller writes anything, each failure has
 * its own ine.v1.ErrorCode and one sentence naming the rule (the rule list is in pki.h). The key
 * never reaches a sentence: key failures say what is wrong with the key, never what is in it. */
#include "pki.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "err.h"

/* The enum mirrors the proto: a renumbered proto code must fail the build, not the reply. */
_Static_assert(PKI_UPLOAD_CERT_PARSE == 20 && PKI_UPLOAD_KEY_PARSE == 29, "ErrorCode drifted");

Ine__V1__ErrorCode pki_upload_err_code(pki_upload_err e)
{
    return (Ine__V1__ErrorCode)e;
}

/* A rule failed: record its code and sentence; INE_EINVAL. */
static int up__rule(pki_upload *u, pki_upload_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int up__rule(pki_upload *u, pki_upload_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ine_verr(INE_EINVAL, fmt, ap);
    va_end(ap);
    u->error_code = code;
    return INE_EINVAL;
}

/* A name for a sentence (malloc'd, NULL only without memory; "?" when it cannot be printed). */
static char *up__name(const X509_NAME *name)
{
    char *s = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
        (n = BIO_get_mem_data(b, &data)) >= 0)
        s = strndup(data ? data : "", (size_t)n);
    BIO_free(b);
    ERR_clear_error();
    return s ? s : strdup("?");
}

static char *up__subject(X509 *x) { return up__name(X509_get_subject_name(x)); }

/* ---- verification ---------------------------------------------------------------------------- */

/* Verify leaf → untrusted… → root at now; purpose 0 = no purpose check. A verification
 * failure is INE_ECHAIN with the reason (also in `why`); other failures INE_ECRYPTO/INE_ENOMEM. */
static int pki__verify(X509 *leaf, STACK_OF(X509) *untrusted, X509 *root, int64_t now, int purpose,
                       char *why, size_t why_len)
{
    int rc = INE_OK;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    char *subj = NULL;
    GUARD_OSSL((store = X509_STORE_new()) != NULL, out);
    GUARD_OSSL(X509_STORE_add_cert(store, root) == 1, out);
    GUARD_OSSL((ctx = X509_STORE_CTX_new()) != NULL, out);
    GUARD_OSSL(X509_STORE_CTX_init(ctx, store, leaf, untrusted) == 1, out);
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(vp, (time_t)now);
    /* The anchor's own signature too: a root whose self-signature is broken is not a root. */
    GUARD_OSSL(X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_CHECK_SS_SIGNATURE) == 1, out);
    if (purpose) GUARD_OSSL(X509_STORE_CTX_set_purpose(ctx, purpose) == 1, out);
    int v = X509_verify_cert(ctx);
    if (v == 1) goto out;
    if (v < 0) {
        rc = ine_err_ossl(INE_ECRYPTO, "X509_verify_cert");
        goto out;
    }
    ERR_clear_error();
    int e = X509_STORE_CTX_get_error(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx);
    X509 *cur = X509_STORE_CTX_get_current_cert(ctx);
    if (cur) subj = up__subject(cur);
    const char *as = purpose == X509_PURPOSE_SSL_SERVER ? " as a TLS server certificate"
                   : purpose == X509_PURPOSE_SSL_CLIENT ? " as a TLS client certificate" : "";
    rc = ine_err(INE_ECHAIN, "the certificate chain does not verify%s: %s (certificate at depth %d%s%s)",
                 as, X509_verify_cert_error_string(e), depth, subj ? ", " : "", subj ? subj : "");
out:
    if (rc < 0 && why && why_len) snprintf(why, why_len, "%s", ine_err_msg());
    free(subj);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

int pki_verify_chain_to(const pki_cert *leaf, const pki_cert *root, int64_t now)
{
    return pki__verify(pki_x509(leaf), NULL, pki_x509(root), now, 0, NULL, 0);
}

/* Rule 1: every PEM block is a certificate that parses. */
static int up__parse_certs(pki_upload *u, const char *pem, STACK_OF(X509) **out)
{
    int rc = INE_OK;
    BIO *b = NULL;
    STACK_OF(X509) *certs = NULL;
    char *name = NULL, *hdr = NULL;
    unsigned char *data = NULL;
    long len = 0;
    GUARD_OSSL((b = BIO_new_mem_buf(pem ? pem : "", -1)) != NULL, out);
    GUARD_OSSL((certs = sk_X509_new_null()) != NULL, out);
    for (int n = 1;; n++) {
        ERR_set_mark();
        int ok = PEM_read_bio(b, &name, &hdr, &data, &len);
        unsigned long e = ERR_peek_last_error();
        ERR_pop_to_mark();
        if (!ok) {
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) break;
            rc = up__rule(u, PKI_UPLOAD_CERT_PARSE,
                          "the certificate file does not parse: PEM block %d is malformed", n);
            goto out;
        }
        if (strcmp(name, PEM_STRING_X509) != 0 && strcmp(name, PEM_STRING_X509_OLD) != 0) {
            rc = up__rule(u, PKI_UPLOAD_CERT_PARSE,
                          "the certificate file does not parse: PEM block %d is a \"%.40s\", not a CERTIFICATE",
                          n, name);
            goto out;
        }
        const unsigned char *q = data;
        X509 *x = d2i_X509(NULL, &q, len);
        if (!x || q != data + len) {
            X509_free(x);
            ERR_clear_error();
            rc = up__rule(u, PKI_UPLOAD_CERT_PARSE,
                          "the certificate file does not parse: PEM block %d is not a valid X.509 certificate", n);
            goto out;
        }
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            GUARD_OSSL(0, out);
        }
        OPENSSL_free(name);
        OPENSSL_free(hdr);
        OPENSSL_free(data);
        name = hdr = NULL;
        data = NULL;
    }
    if (sk_X509_num(certs) == 0) {
        rc = up__rule(u, PKI_UPLOAD_CERT_PARSE, "the certificate file does not parse: it holds no PEM certificate");
        goto out;
    }
    *out = certs;
    certs = NULL;
out:
    OPENSSL_free(name);
    OPENSSL_free(hdr);
    OPENSSL_free(data);
    sk_X509_pop_free(certs, X509_free);
    BIO_free(b);
    return rc;
}

/* Rule 2: from the leaf (first) up to a self-signed root by issuer name, using every other
 * certificate exactly once. *path borrows from certs: leaf, intermediates…, root. */
static int up__chain(pki_upload *u, STACK_OF(X509) *certs, STACK_OF(X509) **path)
{
    int rc = INE_OK, n = sk_X509_num(certs);
    char *s1 = NULL, *s2 = NULL;
    char *used = NULL;
    STACK_OF(X509) *p = NULL;
    X509 *cur = sk_X509_value(certs, 0);
    if (X509_self_signed(cur, 0) == 1) {
        rc = up__rule(u, PKI_UPLOAD_CERT_NO_CHAIN,
                      "the certificate chain is missing: the first certificate (the leaf) is self-signed; upload a "
                      "certificate issued by a CA, followed by its chain up to the root");
        goto out;
    }
    if (n == 1) {
        rc = up__rule(u, PKI_UPLOAD_CERT_NO_CHAIN,
                      "the certificate chain is missing: the file holds only the leaf; its chain up to and including "
                      "the self-signed root must follow it");
        goto out;
    }
    if (!(used = calloc((size_t)n, 1))) {
        rc = ine_err(INE_ENOMEM, "out of memory for a certificate chain");
        goto out;
    }
    GUARD_OSSL((p = sk_X509_new_null()) != NULL, out);
    GUARD_OSSL(sk_X509_push(p, cur) > 0, out);
    used[0] = 1;
    while (X509_self_signed(cur, 0) != 1) {
        /* The first certificate named as the issuer; prefer one whose key ids agree too. A name
         * match with the wrong key stays on the path so verification reports the bad signature. */
        int pick = -1;
        for (int j = 1; j < n; j++) {
            X509 *c = sk_X509_value(certs, j);
            if (used[j] || X509_NAME_cmp(X509_get_issuer_name(cur), X509_get_subject_name(c)) != 0) continue;
            if (pick < 0) pick = j;
            if (X509_check_issued(c, cur) == X509_V_OK) {
                pick = j;
                break;
            }
        }
        ERR_clear_error();
        if (pick < 0) {
            s1 = up__subject(cur);
            s2 = up__name(X509_get_issuer_name(cur));
            if (sk_X509_num(p) == 1)
                rc = up__rule(u, PKI_UPLOAD_CERT_NO_CHAIN,
                              "the certificate chain is missing: the leaf's issuer (%s) is not in the file; its chain "
                              "up to and including the self-signed root must follow the leaf", s2 ? s2 : "?");
            else
                rc = up__rule(u, PKI_UPLOAD_CERT_NO_CHAIN,
                              "the certificate chain is missing its root: the chain stops at %s, whose issuer (%s) is "
                              "not in the file; include the self-signed root certificate", s1, s2 ? s2 : "?");
            goto out;
        }
        used[pick] = 1;
        cur = sk_X509_value(certs, pick);
        GUARD_OSSL(sk_X509_push(p, cur) > 0, out);
    }
    for (int j = 1; j < n; j++) {
        if (used[j]) continue;
        s1 = up__subject(sk_X509_value(certs, j));
        rc = up__rule(u, PKI_UPLOAD_CHAIN_INVALID,
                      "the certificate chain is invalid: certificate %d in the file (%s) is not on the leaf's chain",
                      j + 1, s1);
        goto out;
    }
    *path = p;
    p = NULL;
out:
    sk_X509_free(p);
    free(used);
    free(s1);
    free(s2);
    return rc;
}

/* Never prompt: a key that needs a passphrase is reported, not decrypted. */
static int up__no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(int *)asked = 1;
    return -1;
}

/* Rules 3-5: a readable, unencrypted RSA private key that is the leaf's. */
static int up__key(pki_upload *u, const char *pem, X509 *leaf, EVP_PKEY **out)
{
    int rc = INE_OK, asked = 0;
    BIO *b = NULL;
    EVP_PKEY *k = NULL;
    if (!pem || !*pem)
        return up__rule(u, PKI_UPLOAD_KEY_PARSE, "the private key does not parse: the key file is empty");
    if (strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----") || strstr(pem, "Proc-Type: 4,ENCRYPTED"))
        return up__rule(u, PKI_UPLOAD_KEY_ENCRYPTED,
                        "the private key is encrypted with a passphrase; upload it unencrypted (ine seals it "
                        "before storing it)");
    GUARD_OSSL((b = BIO_new_mem_buf(pem, -1)) != NULL, out);
    k = PEM_read_bio_PrivateKey_ex(b, NULL, up__no_passphrase, &asked, NULL, NULL);
    ERR_clear_error(); /* whatever the decoders said, it is about the key's bytes: say less */
    if (!k && asked) {
        rc = up__rule(u, PKI_UPLOAD_KEY_ENCRYPTED,
                      "the private key is encrypted with a passphrase; upload it unencrypted (ine seals it "
                      "before storing it)");
        goto out;
    }
    if (!k) {
        rc = up__rule(u, PKI_UPLOAD_KEY_PARSE,
                      "the private key does not parse: the key file holds no readable PEM private key");
        goto out;
    }
    if (!EVP_PKEY_is_a(k, "RSA")) {
        const char *t = EVP_PKEY_get0_type_name(k);
        rc = up__rule(u, PKI_UPLOAD_KEY_NOT_RSA,
                      "the private key is not RSA (it is %s); the TLS suites ine uses (ECDHE-RSA) need an RSA key",
                      t ? t : "another type");
        goto out;
    }
    if (EVP_PKEY_get_bits(k) < PKI_NODE_KEY_BITS) {
        rc = up__rule(u, PKI_UPLOAD_KEY_TOO_SMALL,
                      "the RSA key has %d bits; at least %d are required (TLS peers refuse smaller keys)",
                      EVP_PKEY_get_bits(k), PKI_NODE_KEY_BITS);
        goto out;
    }
    EVP_PKEY *pub = X509_get0_pubkey(leaf);
    if (!pub || EVP_PKEY_eq(k, pub) != 1) {
        ERR_clear_error();
        rc = up__rule(u, PKI_UPLOAD_KEY_MISMATCH,
                      "the private key does not match the leaf certificate's public key");
        goto out;
    }
    *out = k;
    k = NULL;
out:
    EVP_PKEY_free(k);
    BIO_free(b);
    return rc;
}

/* Rule 6: every certificate on the path is valid at now, with OpenSSL's boundaries
 * (notBefore <= now < notAfter), so verification below never disagrees. */
static int up__validity(pki_upload *u, STACK_OF(X509) *path, int64_t now)
{
    int rc = INE_OK, n = sk_X509_num(path);
    char *subj = NULL;
    char when[32];
    for (int i = 0; i < n && rc == INE_OK; i++) {
        X509 *x = sk_X509_value(path, i);
        const char *role = i == 0 ? "leaf" : i == n - 1 ? "root" : "intermediate";
        int64_t nb, na;
        if (pki__time_unix(X509_get0_notBefore(x), &nb) < 0 || pki__time_unix(X509_get0_notAfter(x), &na) < 0) {
            rc = up__rule(u, PKI_UPLOAD_CERT_PARSE,
                          "the certificate file does not parse: the %s certificate's validity dates are unreadable",
                          role);
            break;
        }
        if (now < nb) {
            subj = up__subject(x);
            rc = up__rule(u, PKI_UPLOAD_CERT_NOT_YET_VALID,
                          "the %s certificate (%s) is not yet valid: its validity starts at %s", role, subj,
                          ine_clock_fmt(nb * INE_USEC_PER_SEC, when, sizeof when));
        } else if (now >= na) {
            subj = up__subject(x);
            rc = up__rule(u, PKI_UPLOAD_CERT_EXPIRED, "the %s certificate (%s) has expired: its validity ended at %s",
                          role, subj, ine_clock_fmt(na * INE_USEC_PER_SEC, when, sizeof when));
        }
    }
    free(subj);
    return rc;
}

/* Rule 6a: nothing on the path expires inside the fallback window (plus its margin): the CA
 * would replace the certificate at once, "new connections use it" being untrue seconds later. */
static int up__lifetime(pki_upload *u, STACK_OF(X509) *path, int64_t now)
{
    int n = sk_X509_num(path), soonest = -1, rc;
    int64_t min_na = INT64_MAX;
    char when[32], *subj;
    for (int i = 0; i < n; i++) {
        int64_t na;
        if (pki__time_unix(X509_get0_notAfter(sk_X509_value(path, i)), &na) == 0 && na < min_na) {
            min_na = na;
            soonest = i;
        }
    }
    if (soonest < 0 || min_na - now >= PKI_UPLOAD_MIN_LEFT_S) return INE_OK;
    subj = up__subject(sk_X509_value(path, soonest));
    rc = up__rule(u, PKI_UPLOAD_CERT_EXPIRES_SOON,
                  "the %s certificate (%s) expires at %s, in less than %lld days: customer certificates are replaced by "
                  "self-signed ones %lld days before they expire, so this one would be replaced at once; upload one valid "
                  "longer",
                  soonest == 0 ? "leaf" : soonest == n - 1 ? "root" : "intermediate", subj ? subj : "?",
                  ine_clock_fmt(min_na * INE_USEC_PER_SEC, when, sizeof when), PKI_UPLOAD_MIN_LEFT_S / 86400,
                  PKI_FALLBACK_BEFORE_S / 86400);
    free(subj);
    return rc;
}

/* Rule 6b: strong signatures and keys on the whole path. */
static int up__strength(pki_upload *u, STACK_OF(X509) *path)
{
    int n = sk_X509_num(path), rc = INE_OK;
    char *subj = NULL;
    for (int i = 0; i < n && rc == INE_OK; i++) {
        X509 *x = sk_X509_value(path, i);
        const char *role = i == 0 ? "leaf" : i == n - 1 ? "root" : "intermediate";
        EVP_PKEY *pub = X509_get0_pubkey(x);
        int mdnid = NID_undef, pknid = NID_undef;
        if (i < n - 1 && OBJ_find_sigid_algs(X509_get_signature_nid(x), &mdnid, &pknid) == 1 &&
            (mdnid == NID_sha1 || mdnid == NID_md5 || mdnid == NID_md5_sha1 || mdnid == NID_md4 || mdnid == NID_md2)) {
            subj = up__subject(x);
            rc = up__rule(u, PKI_UPLOAD_CERT_WEAK_SIGNATURE,
                          "the %s certificate (%s) is signed with %s, which is broken for signatures; its issuer must sign "
                          "with SHA-256 or stronger",
                          role, subj ? subj : "?", OBJ_nid2sn(mdnid));
        } else if (pub && EVP_PKEY_is_a(pub, "RSA") && EVP_PKEY_get_bits(pub) < PKI_NODE_KEY_BITS) {
            subj = up__subject(x);
            rc = up__rule(u, PKI_UPLOAD_KEY_TOO_SMALL, "the %s certificate (%s) has an RSA key of %d bits; at least %d are required",
                          role, subj ? subj : "?", EVP_PKEY_get_bits(pub), PKI_NODE_KEY_BITS);
        }
    }
    free(subj);
    return rc;
}

/* Rule 7: an EKU extension naming both TLS purposes (see pki.h for why anyExtendedKeyUsage
 * does not count). */
static int up__eku(pki_upload *u, X509 *leaf)
{
    uint32_t flags = X509_get_extension_flags(leaf);
    if (!(flags & EXFLAG_XKUSAGE))
        return up__rule(u, PKI_UPLOAD_CERT_EKU,
                        "the leaf certificate has no extended key usage (EKU); it must allow both clientAuth and "
                        "serverAuth");
    uint32_t xku = X509_get_extended_key_usage(leaf);
    int server = (xku & XKU_SSL_SERVER) != 0, client = (xku & XKU_SSL_CLIENT) != 0;
    if (!server || !client)
        return up__rule(u, PKI_UPLOAD_CERT_EKU,
                        "the leaf certificate's extended key usage (EKU) lacks %s; it must allow both clientAuth and "
                        "serverAuth",
                        !server && !client ? "clientAuth and serverAuth" : !server ? "serverAuth" : "clientAuth");
    return INE_OK;
}

/* Rule 8: the chain verifies for both TLS roles (each node is client and server). */
static int up__verify(pki_upload *u, STACK_OF(X509) *path, int64_t now)
{
    int rc = INE_OK, n = sk_X509_num(path);
    STACK_OF(X509) *mid = NULL;
    GUARD_OSSL((mid = sk_X509_new_null()) != NULL, out);
    for (int i = 1; i < n - 1; i++) GUARD_OSSL(sk_X509_push(mid, sk_X509_value(path, i)) > 0, out);
    static const int purposes[] = {X509_PURPOSE_SSL_SERVER, X509_PURPOSE_SSL_CLIENT};
    for (size_t i = 0; i < sizeof purposes / sizeof purposes[0]; i++) {
        char why[512];
        rc = pki__verify(sk_X509_value(path, 0), mid, sk_X509_value(path, n - 1), now, purposes[i], why,
                         sizeof why);
        /* formatted from a copy: ine_err() must not read the buffer it writes */
        if (rc == INE_ECHAIN) rc = up__rule(u, PKI_UPLOAD_CHAIN_INVALID, "%s", why);
        if (rc < 0) goto out;
    }
out:
    sk_X509_free(mid);
    return rc;
}

/* Everything validated: hand over the leaf, the key, the chain and the root. */
static int up__fill(pki_upload *u, STACK_OF(X509) *path, EVP_PKEY **key)
{
    int rc = INE_OK, n = sk_X509_num(path);
    char *pem = NULL;
    size_t len = 0;
    X509 *leaf = sk_X509_value(path, 0), *root = sk_X509_value(path, n - 1);
    GUARD_OSSL(X509_up_ref(leaf) == 1, out);
    GUARD_GOTO(pki_cert_adopt(leaf, &u->leaf), out);
    rc = pki_key_adopt(*key, &u->key);
    *key = NULL;
    if (rc < 0) goto out;
    for (int i = 1; i < n; i++) {
        GUARD_GOTO(pki__x509_to_pem(sk_X509_value(path, i), &pem), out);
        size_t add = strlen(pem);
        char *grown = realloc(u->chain_pem, len + add + 1);
        if (!grown) {
            rc = ine_err(INE_ENOMEM, "out of memory for a certificate chain");
            goto out;
        }
        memcpy(grown + len, pem, add + 1);
        u->chain_pem = grown;
        len += add;
        if (i == n - 1) {
            u->root_pem = pem;
            pem = NULL;
        } else {
            free(pem);
            pem = NULL;
        }
    }
    GUARD_GOTO(pki_cert_info(u->leaf, &u->info), out);
    GUARD_GOTO(pki__x509_fingerprint(root, u->root_fingerprint), out);
out:
    free(pem);
    return rc;
}

int pki_upload_check(const char *cert_pem, const char *key_pem, int64_t now, pki_upload *out,
                     char *why, size_t why_len)
{
    int rc = INE_OK;
    STACK_OF(X509) *certs = NULL, *path = NULL;
    EVP_PKEY *key = NULL;
    memset(out, 0, sizeof *out);
    out->error_code = PKI_UPLOAD_INTERNAL;
    if (why && why_len) why[0] = '\0';

    GUARD_GOTO(up__parse_certs(out, cert_pem, &certs), out);
    GUARD_GOTO(up__chain(out, certs, &path), out);
    GUARD_GOTO(up__key(out, key_pem, sk_X509_value(path, 0), &key), out);
    GUARD_GOTO(up__validity(out, path, now), out);
    GUARD_GOTO(up__lifetime(out, path, now), out);
    GUARD_GOTO(up__strength(out, path), out);
    GUARD_GOTO(up__eku(out, sk_X509_value(path, 0)), out);
    GUARD_GOTO(up__verify(out, path, now), out);
    GUARD_GOTO(up__fill(out, path, &key), out);
    out->error_code = PKI_UPLOAD_OK;
out:
    if (rc < 0) {
        pki_upload_err code = out->error_code; /* still INTERNAL unless a rule failed */
        pki_upload_free(out);
        out->error_code = code;
        if (why && why_len) snprintf(why, why_len, "%s", ine_err_msg());
    }
    EVP_PKEY_free(key);
    sk_X509_free(path);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

void pki_upload_free(pki_upload *u)
{
    if (!u) return;
    pki_cert_free(u->leaf);
    pki_key_free(u->key);
    free(u->chain_pem);
    free(u->root_pem);
    pki_info_clear(&u->info);
    memset(u, 0, sizeof *u);
}
