/* test_pki.c — the X.509 module: the cluster CA and node certificate profiles examined through
 * OpenSSL (and the real `openssl verify`), the object conversions, pki_info, and every customer
 * upload rule. Every fixture is generated here at test time with plain OpenSSL calls, not with
 * the module under test, so a mistake in pki cannot hide itself. */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "pki.h"
#include "testutil.h"

#define NOW 1767225600LL /* 2026-01-01T00:00:00Z */
#define DAY 86400LL
#define UID "3f2a9c0d1e2b4a5c6d7e8f9012345678"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir();
    cr_assert_not_null(dir);
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

TestSuite(pki, .init = setup, .fini = teardown);

/* ---- fixtures, made with OpenSSL directly ------------------------------------------------ */

enum { FX_SERVER = 1, FX_CLIENT = 2, FX_ANY = 4, FX_NO_EKU = 8 };
enum { FX_RSA = 0, FX_EC, FX_ED25519, FX_RSA1024 };

static EVP_PKEY *fx_key(int type)
{
    EVP_PKEY *k = type == FX_EC ? EVP_EC_gen("P-256")
                : type == FX_ED25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                : type == FX_RSA1024 ? EVP_RSA_gen(1024)
                : EVP_RSA_gen(2048);
    cr_assert_not_null(k);
    return k;
}

static void fx_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    cr_assert_not_null(e, "extension %d=%s", nid, value);
    cr_assert_eq(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* A certificate for `key` named CN=cn, signed by issuer/ikey (self-signed when issuer is NULL),
 * valid [nb, na]. A CA gets CA:TRUE + keyCertSign; a leaf gets the EKU bits asked for. */
static X509 *fx_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, int ca, int eku,
                     int64_t nb, int64_t na, int aki)
{
    static long serial = 1000;
    X509 *x = X509_new();
    cr_assert_not_null(x);
    cr_assert_eq(X509_set_version(x, X509_VERSION_3), 1);
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
    cr_assert_not_null(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb));
    cr_assert_not_null(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na));
    cr_assert_eq(X509_set_pubkey(x, key), 1);
    X509_NAME *n = X509_get_subject_name(x);
    cr_assert_eq(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Customer", -1, -1, 0), 1);
    cr_assert_eq(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0), 1);
    cr_assert_eq(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n), 1);
    X509 *is = issuer ? issuer : x;
    fx_ext(x, is, NID_subject_key_identifier, "hash");
    if (aki) fx_ext(x, is, NID_authority_key_identifier, "keyid:always");
    if (ca) {
        fx_ext(x, is, NID_basic_constraints, "critical,CA:TRUE");
        fx_ext(x, is, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        fx_ext(x, is, NID_basic_constraints, "critical,CA:FALSE");
        fx_ext(x, is, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        char ekus[64] = "";
        if (eku & FX_SERVER) strcat(ekus, "serverAuth,");
        if (eku & FX_CLIENT) strcat(ekus, "clientAuth,");
        if (eku & FX_ANY) strcat(ekus, "anyExtendedKeyUsage,");
        if (!(eku & FX_NO_EKU)) {
            cr_assert_gt(strlen(ekus), 0);
            ekus[strlen(ekus) - 1] = '\0';
            fx_ext(x, is, NID_ext_key_usage, ekus);
        }
    }
    EVP_PKEY *sk = ikey ? ikey : key; /* a "self-signed" one signed by ikey has a broken self-signature */
    cr_assert_gt(X509_sign(x, sk, EVP_PKEY_is_a(sk, "ED25519") ? NULL : EVP_sha256()), 0);
    return x;
}

/* root → [intermediate →] leaf, with knobs for what each test breaks. */
typedef struct {
    int levels;        /* 2 or 3 */
    int leaf_key;      /* FX_RSA, FX_EC, FX_ED25519 */
    int eku;           /* 0: serverAuth + clientAuth */
    int64_t leaf_nb, leaf_na, mid_na; /* absolute; 0: defaults around NOW */
} fx_spec;

typedef struct {
    EVP_PKEY *root_key, *mid_key, *leaf_key;
    X509 *root, *mid, *leaf;
} fx_chain;

static void fx_chain_make(fx_chain *c, fx_spec s)
{
    memset(c, 0, sizeof *c);
    c->root_key = fx_key(FX_RSA);
    c->root = fx_cert("Customer Root", c->root_key, NULL, NULL, 1, 0, NOW - 365 * DAY, NOW + 3650 * DAY, 1);
    X509 *signer = c->root;
    EVP_PKEY *skey = c->root_key;
    if (s.levels == 3) {
        c->mid_key = fx_key(FX_RSA);
        c->mid = fx_cert("Customer Intermediate", c->mid_key, c->root, c->root_key, 1, 0, NOW - 300 * DAY,
                         s.mid_na ? s.mid_na : NOW + 1825 * DAY, 1);
        signer = c->mid;
        skey = c->mid_key;
    }
    c->leaf_key = fx_key(s.leaf_key);
    c->leaf = fx_cert("node1.customer.example", c->leaf_key, signer, skey, 0, s.eku ? s.eku : FX_SERVER | FX_CLIENT,
                      s.leaf_nb ? s.leaf_nb : NOW - DAY, s.leaf_na ? s.leaf_na : NOW + 90 * DAY, 1);
}

static void fx_chain_free(fx_chain *c)
{
    X509_free(c->root);
    X509_free(c->mid);
    X509_free(c->leaf);
    EVP_PKEY_free(c->root_key);
    EVP_PKEY_free(c->mid_key);
    EVP_PKEY_free(c->leaf_key);
}

static char *fx_bio_string(BIO *b)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    cr_assert_geq(n, 0);
    char *s = strndup(data ? data : "", (size_t)n);
    cr_assert_not_null(s);
    BIO_free(b);
    return s;
}

/* PEM of the certificates given, in that order (NULL-terminated). */
static char *fx_pem(X509 *first, ...)
{
    BIO *b = BIO_new(BIO_s_mem());
    va_list ap;
    va_start(ap, first);
    for (X509 *x = first; x; x = va_arg(ap, X509 *)) cr_assert_eq(PEM_write_bio_X509(b, x), 1);
    va_end(ap);
    return fx_bio_string(b);
}

static char *fx_key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    return fx_bio_string(b);
}

/* ---- upload assertions ------------------------------------------------------------------- */

/* `why` must hold no line of the key's PEM body and no part of its private exponent. */
static void assert_no_key_material(const char *why, const char *key_pem, EVP_PKEY *key)
{
    cr_assert_null(strstr(why, "-----BEGIN"), "why quotes PEM: %s", why);
    char chunk[17];
    for (const char *line = key_pem; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n >= 16 && line[0] != '-' && !memchr(line, ':', n)) {
            memcpy(chunk, line, 16);
            chunk[16] = '\0';
            cr_assert_null(strstr(why, chunk), "why quotes key bytes: %s", why);
        }
        line = nl ? nl + 1 : NULL;
    }
    BIGNUM *d = NULL;
    if (key && EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_D, &d) == 1) {
        char *hex = BN_bn2hex(d);
        memcpy(chunk, hex, 16);
        chunk[16] = '\0';
        cr_assert_null(strcasestr(why, chunk), "why quotes the private exponent: %s", why);
        OPENSSL_free(hex);
        BN_free(d);
    }
    ERR_clear_error();
}

/* Run the check and assert it fails with `code`, `why` naming the rule by `keyword`. */
static void expect_refused(const char *cert_pem, const char *key_pem, EVP_PKEY *key, int64_t now,
                           pki_upload_err code, const char *keyword)
{
    pki_upload u;
    char why[512];
    int rc = pki_upload_check(cert_pem, key_pem, now, &u, why, sizeof why);
    cr_assert_eq(rc, INE_EINVAL, "rc %d, why: %s", rc, why);
    cr_assert_eq(u.error_code, code, "code %d, want %d; why: %s", u.error_code, code, why);
    cr_assert_eq((int)pki_upload_err_code(u.error_code), (int)code);
    cr_assert_not_null(strcasestr(why, keyword), "why does not name \"%s\": %s", keyword, why);
    cr_assert_str_eq(why, ine_err_msg());
    cr_assert_null(u.leaf);
    cr_assert_null(u.key);
    cr_assert_null(u.chain_pem);
    assert_no_key_material(why, key_pem ? key_pem : "", key);
    pki_upload_free(&u);
}

static void expect_accepted(const char *cert_pem, const char *key_pem, int64_t now, pki_upload *u)
{
    char why[512];
    int rc = pki_upload_check(cert_pem, key_pem, now, u, why, sizeof why);
    cr_assert_eq(rc, INE_OK, "refused: %s", why);
    cr_assert_eq(u->error_code, PKI_UPLOAD_OK);
    cr_assert_str_empty(why);
    cr_assert_not_null(u->leaf);
    cr_assert_not_null(u->key);
}

/* Fingerprint computed by the test itself. */
static void fpr(X509 *x, char out[65])
{
    unsigned char md[32];
    unsigned n = 0;
    cr_assert_eq(X509_digest(x, EVP_sha256(), md, &n), 1);
    for (unsigned i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", md[i]);
}

static int64_t t_unix(const ASN1_TIME *t)
{
    struct tm tm;
    cr_assert_eq(ASN1_TIME_to_tm(t, &tm), 1);
    return (int64_t)timegm(&tm);
}

/* ---- the cluster CA ------------------------------------------------------------------------ */

static void make_ca(int64_t now, int bits, int years, pki_cert **ca, pki_key **key)
{
    pki_ca_params p = {.cluster_name = "test", .cluster_uid = UID, .key_bits = bits, .years = years, .now = now};
    cr_assert_eq(pki_ca_create(&p, ca, key), INE_OK, "%s", ine_err_msg());
}

static ASN1_OCTET_STRING *ext_ski(X509 *x)
{
    ASN1_OCTET_STRING *ski = X509_get_ext_d2i(x, NID_subject_key_identifier, NULL, NULL);
    cr_assert_not_null(ski);
    return ski;
}

static ASN1_OCTET_STRING *ext_aki_keyid(X509 *x)
{
    AUTHORITY_KEYID *aki = X509_get_ext_d2i(x, NID_authority_key_identifier, NULL, NULL);
    cr_assert_not_null(aki);
    cr_assert_not_null(aki->keyid);
    ASN1_OCTET_STRING *id = ASN1_OCTET_STRING_dup(aki->keyid);
    AUTHORITY_KEYID_free(aki);
    return id;
}

static int ext_critical(X509 *x, int nid)
{
    int i = X509_get_ext_by_NID(x, nid, -1);
    cr_assert_geq(i, 0, "extension %d absent", nid);
    return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

Test(pki, ca_is_a_self_signed_ca_with_the_profile)
{
    pki_cert *ca;
    pki_key *key;
    make_ca(NOW, 0, 0, &ca, &key);
    X509 *x = pki_x509(ca);

    cr_assert_eq(X509_self_signed(x, 1), 1, "self-signed and the signature verifies");
    cr_assert_eq(X509_get_version(x), X509_VERSION_3);
    cr_assert_eq(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
    cr_assert(EVP_PKEY_is_a(pki_evp(key), "RSA"));
    cr_assert_eq(EVP_PKEY_get_bits(pki_evp(key)), 3072, "default CA key size");
    cr_assert_eq(EVP_PKEY_eq(pki_evp(key), X509_get0_pubkey(x)), 1);

    /* basicConstraints critical CA:TRUE pathlen:0 */
    cr_assert_eq(X509_check_ca(x), 1);
    cr_assert_eq(X509_get_pathlen(x), 0);
    cr_assert_eq(ext_critical(x, NID_basic_constraints), 1);
    /* keyUsage critical keyCertSign + cRLSign, nothing else */
    cr_assert_eq(X509_get_key_usage(x), (uint32_t)(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    cr_assert_eq(ext_critical(x, NID_key_usage), 1);
    /* SKI, and AKI naming its own key */
    ASN1_OCTET_STRING *ski = ext_ski(x), *aki = ext_aki_keyid(x);
    cr_assert_eq(ASN1_OCTET_STRING_cmp(ski, aki), 0);
    ASN1_OCTET_STRING_free(ski);
    ASN1_OCTET_STRING_free(aki);

    /* serial: positive, random, fits 128 bits with the top bit clear */
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    cr_assert(!BN_is_negative(bn) && !BN_is_zero(bn));
    cr_assert_leq(BN_num_bits(bn), 127);
    cr_assert_gt(BN_num_bits(bn), 64, "128 random bits almost never leave 64 leading zeros");
    BN_free(bn);

    /* validity: now - 60 s .. now + 10 calendar years */
    cr_assert_eq(t_unix(X509_get0_notBefore(x)), NOW - PKI_BACKDATE_S);
    cr_assert_eq(t_unix(X509_get0_notAfter(x)), 2082758400LL, "2036-01-01T00:00:00Z");

    pki_info info;
    cr_assert_eq(pki_cert_info(ca, &info), INE_OK);
    cr_assert_str_eq(info.subject, "CN=ine cluster CA test,OU=" UID ",O=ine");
    cr_assert_str_eq(info.issuer, info.subject);
    cr_assert_str_empty(info.cluster_uid, "a CA has no node identity");
    cr_assert_eq(info.plane, 0);
    cr_assert_eq(info.node_uid, 0);
    pki_info_clear(&info);
    pki_cert_free(ca);
    pki_key_free(key);
}

Test(pki, ca_key_size_and_years_are_configurable)
{
    pki_cert *ca;
    pki_key *key;
    make_ca(NOW, 2048, 2, &ca, &key);
    cr_assert_eq(EVP_PKEY_get_bits(pki_evp(key)), 2048);
    cr_assert_eq(t_unix(X509_get0_notAfter(pki_x509(ca))), 1830297600LL, "2028-01-01T00:00:00Z");
    pki_cert *ca2;
    pki_key *key2;
    make_ca(NOW, 2048, 2, &ca2, &key2);
    cr_assert_neq(ASN1_INTEGER_cmp(X509_get0_serialNumber(pki_x509(ca)), X509_get0_serialNumber(pki_x509(ca2))), 0);
    pki_cert_free(ca);
    pki_key_free(key);
    pki_cert_free(ca2);
    pki_key_free(key2);
}

Test(pki, ca_refuses_bad_parameters)
{
    pki_cert *ca = (pki_cert *)1;
    pki_key *key = (pki_key *)1;
    pki_ca_params p = {.cluster_name = "test", .cluster_uid = UID, .key_bits = 1024, .now = NOW};
    cr_assert_eq(pki_ca_create(&p, &ca, &key), INE_EINVAL);
    cr_assert_null(ca);
    cr_assert_null(key);
    cr_assert_not_null(strstr(ine_err_msg(), "1024"));
    p.key_bits = 2048;
    p.cluster_uid = "UID/with/slash";
    cr_assert_eq(pki_ca_create(&p, &ca, &key), INE_EINVAL);
    p.cluster_uid = UID;
    p.cluster_name = "";
    cr_assert_eq(pki_ca_create(&p, &ca, &key), INE_EINVAL);
    p.cluster_name = "test";
    p.years = 101;
    cr_assert_eq(pki_ca_create(&p, &ca, &key), INE_EINVAL);
}

Test(pki, ca_long_cluster_name_is_cut_to_64_characters)
{
    char name[200];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    pki_ca_params p = {.cluster_name = name, .cluster_uid = UID, .key_bits = 2048, .now = NOW};
    pki_cert *ca;
    pki_key *key;
    cr_assert_eq(pki_ca_create(&p, &ca, &key), INE_OK, "%s", ine_err_msg());
    char cn[128];
    cr_assert_eq(X509_NAME_get_text_by_NID(X509_get_subject_name(pki_x509(ca)), NID_commonName, cn, sizeof cn), 64);
    cr_assert_eq(strncmp(cn, "ine cluster CA nnnn", 19), 0);
    pki_cert_free(ca);
    pki_key_free(key);
}

/* ---- node certificates ----------------------------------------------------------------------- */

static void issue(const pki_cert *ca, const pki_key *cakey, const char *addr, const char *name, int plane,
                  int64_t now, pki_cert **c, pki_key **k)
{
    pki_issue_params p = {.cluster_uid = UID, .node_uid = 7, .address = addr, .name = name, .plane = plane,
                          .now = now};
    cr_assert_eq(pki_issue_node(&p, ca, cakey, c, k), INE_OK, "%s", ine_err_msg());
}

/* The SANs of x as "IP:a DNS:b URI:c" in order. */
static void sans(X509 *x, char *out, size_t len)
{
    GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    cr_assert_not_null(g);
    out[0] = '\0';
    for (int i = 0; i < sk_GENERAL_NAME_num(g); i++) {
        GENERAL_NAME *n = sk_GENERAL_NAME_value(g, i);
        char one[256];
        if (n->type == GEN_IPADD) {
            const unsigned char *b = ASN1_STRING_get0_data(n->d.iPAddress);
            cr_assert_eq(ASN1_STRING_length(n->d.iPAddress), 4);
            snprintf(one, sizeof one, "IP:%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
        } else if (n->type == GEN_DNS) {
            snprintf(one, sizeof one, "DNS:%s", (const char *)ASN1_STRING_get0_data(n->d.dNSName));
        } else if (n->type == GEN_URI) {
            snprintf(one, sizeof one, "URI:%s", (const char *)ASN1_STRING_get0_data(n->d.uniformResourceIdentifier));
        } else {
            snprintf(one, sizeof one, "other:%d", n->type);
        }
        if (*out) strncat(out, " ", len - strlen(out) - 1);
        strncat(out, one, len - strlen(out) - 1);
    }
    GENERAL_NAMES_free(g);
}

Test(pki, node_certificate_profile)
{
    pki_cert *ca, *leaf;
    pki_key *cakey, *key;
    make_ca(NOW, 2048, 0, &ca, &cakey);
    issue(ca, cakey, "127.0.0.2", "node-a", PKI_PLANE_CONTROL, NOW + 3600, &leaf, &key);
    X509 *x = pki_x509(leaf), *cax = pki_x509(ca);

    /* notBefore = now - 60, notAfter = now + 90 d: the span is exactly 90 d + 60 s */
    int64_t nb = t_unix(X509_get0_notBefore(x)), na = t_unix(X509_get0_notAfter(x));
    cr_assert_eq(nb, NOW + 3600 - PKI_BACKDATE_S);
    cr_assert_eq(na, NOW + 3600 + 90 * DAY);
    cr_assert_eq(na - nb, 90 * DAY + PKI_BACKDATE_S);

    cr_assert(EVP_PKEY_is_a(pki_evp(key), "RSA"));
    cr_assert_eq(EVP_PKEY_get_bits(pki_evp(key)), 2048);
    cr_assert_eq(EVP_PKEY_eq(pki_evp(key), X509_get0_pubkey(x)), 1);
    cr_assert_eq(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
    cr_assert_eq(X509_get_version(x), X509_VERSION_3);

    cr_assert_eq(X509_check_ca(x), 0, "CA:FALSE");
    cr_assert_eq(ext_critical(x, NID_basic_constraints), 1);
    cr_assert_eq(X509_get_key_usage(x), (uint32_t)(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
    cr_assert_eq(ext_critical(x, NID_key_usage), 1);
    cr_assert_eq(X509_get_extended_key_usage(x), (uint32_t)(XKU_SSL_SERVER | XKU_SSL_CLIENT));

    char s[512];
    sans(x, s, sizeof s);
    cr_assert_str_eq(s, "IP:127.0.0.2 DNS:node-a URI:spiffe://" UID "/node/7/cp");

    ASN1_OCTET_STRING *ca_ski = ext_ski(cax), *aki = ext_aki_keyid(x), *ski = ext_ski(x);
    cr_assert_eq(ASN1_OCTET_STRING_cmp(ca_ski, aki), 0, "AKI keyid = the CA's SKI");
    cr_assert_neq(ASN1_OCTET_STRING_cmp(ca_ski, ski), 0);
    ASN1_OCTET_STRING_free(ca_ski);
    ASN1_OCTET_STRING_free(aki);
    ASN1_OCTET_STRING_free(ski);

    char sub[256];
    X509_NAME_oneline(X509_get_subject_name(x), sub, sizeof sub);
    cr_assert_str_eq(sub, "/O=ine/OU=" UID "/CN=node-a cp");
    cr_assert_eq(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(cax)), 0);

    /* chains to the CA through OpenSSL's own verifier */
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    cr_assert_eq(X509_STORE_add_cert(st, cax), 1);
    cr_assert_eq(X509_STORE_CTX_init(ctx, st, x, NULL), 1);
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), (time_t)(NOW + 7200));
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
    cr_assert_eq(X509_verify_cert(ctx), 1, "%s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    cr_assert_eq(pki_verify_chain_to(leaf, ca, NOW + 7200), INE_OK, "%s", ine_err_msg());

    pki_cert_free(leaf);
    pki_key_free(key);
    pki_cert_free(ca);
    pki_key_free(cakey);
}

Test(pki, node_certificate_host_address_data_plane_and_odd_names)
{
    pki_cert *ca, *leaf;
    pki_key *cakey, *key;
    make_ca(NOW, 2048, 0, &ca, &cakey);
    char s[512];
    /* host name address; a name that is no host name gets no DNS SAN (but is the CN) */
    issue(ca, cakey, "db1.example.com", "bad name!", PKI_PLANE_DATA, NOW, &leaf, &key);
    sans(pki_x509(leaf), s, sizeof s);
    cr_assert_str_eq(s, "DNS:db1.example.com URI:spiffe://" UID "/node/7/dp");
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(pki_x509(leaf)), NID_commonName, cn, sizeof cn);
    cr_assert_str_eq(cn, "bad name! dp");
    pki_cert_free(leaf);
    pki_key_free(key);
    /* name equal to the address is not repeated; no name → CN node-<uid> */
    issue(ca, cakey, "node7.example.com", "NODE7.example.com", PKI_PLANE_CONTROL, NOW, &leaf, &key);
    sans(pki_x509(leaf), s, sizeof s);
    cr_assert_str_eq(s, "DNS:node7.example.com URI:spiffe://" UID "/node/7/cp");
    pki_cert_free(leaf);
    pki_key_free(key);
    issue(ca, cakey, "10.0.0.1", NULL, PKI_PLANE_CONTROL, NOW, &leaf, &key);
    X509_NAME_get_text_by_NID(X509_get_subject_name(pki_x509(leaf)), NID_commonName, cn, sizeof cn);
    cr_assert_str_eq(cn, "node-7 cp");
    pki_cert_free(leaf);
    pki_key_free(key);
    /* an address with a comma cannot smuggle in another SAN */
    pki_issue_params p = {.cluster_uid = UID, .node_uid = 7, .address = "a.example,IP:1.2.3.4",
                          .plane = PKI_PLANE_CONTROL, .now = NOW};
    cr_assert_eq(pki_issue_node(&p, ca, cakey, &leaf, &key), INE_EINVAL);
    cr_assert_null(leaf);
    pki_cert_free(ca);
    pki_key_free(cakey);
}

Test(pki, node_certificate_never_outlives_the_ca)
{
    pki_cert *ca, *leaf;
    pki_key *cakey, *key;
    make_ca(NOW, 2048, 1, &ca, &cakey);
    int64_t ca_na = t_unix(X509_get0_notAfter(pki_x509(ca)));
    issue(ca, cakey, "127.0.0.1", "n", PKI_PLANE_CONTROL, ca_na - 30 * DAY, &leaf, &key);
    cr_assert_eq(t_unix(X509_get0_notAfter(pki_x509(leaf))), ca_na, "30 days left: the leaf ends with the CA");
    pki_cert_free(leaf);
    pki_key_free(key);
    /* an expired CA issues nothing */
    pki_issue_params p = {.cluster_uid = UID, .node_uid = 1, .address = "127.0.0.1", .plane = PKI_PLANE_DATA,
                          .now = ca_na};
    cr_assert_eq(pki_issue_node(&p, ca, cakey, &leaf, &key), INE_EINVAL);
    cr_assert_not_null(strstr(ine_err_msg(), "expired"));
    pki_cert_free(ca);
    pki_key_free(cakey);
}

Test(pki, node_issue_refuses_bad_parameters)
{
    pki_cert *ca, *ca2, *leaf;
    pki_key *cakey, *cakey2, *key;
    make_ca(NOW, 2048, 0, &ca, &cakey);
    make_ca(NOW, 2048, 0, &ca2, &cakey2);
    pki_issue_params p = {.cluster_uid = UID, .node_uid = 1, .address = "127.0.0.1", .plane = 3, .now = NOW};
    cr_assert_eq(pki_issue_node(&p, ca, cakey, &leaf, &key), INE_EINVAL);
    p.plane = PKI_PLANE_CONTROL;
    p.address = "not a host";
    cr_assert_eq(pki_issue_node(&p, ca, cakey, &leaf, &key), INE_EINVAL);
    p.address = "127.0.0.1";
    cr_assert_eq(pki_issue_node(&p, ca, cakey2, &leaf, &key), INE_EINVAL, "a CA key that is not the CA's");
    cr_assert_not_null(strstr(ine_err_msg(), "does not match"));
    p.cluster_uid = "Bad/Uid";
    cr_assert_eq(pki_issue_node(&p, ca, cakey, &leaf, &key), INE_EINVAL);
    pki_cert_free(ca);
    pki_key_free(cakey);
    pki_cert_free(ca2);
    pki_key_free(cakey2);
}

Test(pki, two_node_certificates_have_different_serials)
{
    pki_cert *ca, *a, *b;
    pki_key *cakey, *ka, *kb;
    make_ca(NOW, 2048, 0, &ca, &cakey);
    issue(ca, cakey, "127.0.0.1", "n", PKI_PLANE_CONTROL, NOW, &a, &ka);
    issue(ca, cakey, "127.0.0.1", "n", PKI_PLANE_CONTROL, NOW, &b, &kb);
    cr_assert_neq(ASN1_INTEGER_cmp(X509_get0_serialNumber(pki_x509(a)), X509_get0_serialNumber(pki_x509(b))), 0);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(pki_x509(a)), NULL);
    cr_assert(!BN_is_negative(bn));
    cr_assert_leq(BN_num_bits(bn), 127);
    BN_free(bn);
    pki_cert_free(a);
    pki_cert_free(b);
    pki_key_free(ka);
    pki_key_free(kb);
    pki_cert_free(ca);
    pki_key_free(cakey);
}

Test(pki, openssl_verify_binary_accepts_the_node_certificate)
{
    int64_t now = (int64_t)time(NULL); /* the openssl binary checks validity at the real time */
    pki_cert *ca, *leaf;
    pki_key *cakey, *key;
    make_ca(now, 2048, 0, &ca, &cakey);
    issue(ca, cakey, "127.0.0.3", "node-c", PKI_PLANE_DATA, now, &leaf, &key);
    char *ca_pem, *leaf_pem;
    cr_assert_eq(pki_cert_to_pem(ca, &ca_pem), INE_OK);
    cr_assert_eq(pki_cert_to_pem(leaf, &leaf_pem), INE_OK);
    char *ca_path = tu_path(dir, "ca.pem"), *leaf_path = tu_path(dir, "leaf.pem");
    cr_assert_eq(tu_write_file(ca_path, ca_pem, strlen(ca_pem)), 0);
    cr_assert_eq(tu_write_file(leaf_path, leaf_pem, strlen(leaf_pem)), 0);
    char *argv[] = {"/usr/bin/openssl", "verify", "-CAfile", ca_path, "-purpose", "sslclient", leaf_path, NULL};
    char *out = NULL, *err = NULL;
    int st = tu_run(argv, NULL, &out, &err);
    cr_assert_eq(st, 0, "openssl verify: %s %s", out, err);
    cr_assert_not_null(strstr(out, ": OK"), "%s", out);
    free(out);
    free(err);
    /* and it refuses it against another CA */
    pki_cert *other;
    pki_key *okey;
    make_ca(now, 2048, 0, &other, &okey);
    char *other_pem;
    cr_assert_eq(pki_cert_to_pem(other, &other_pem), INE_OK);
    cr_assert_eq(tu_write_file(ca_path, other_pem, strlen(other_pem)), 0);
    char *argv2[] = {"/usr/bin/openssl", "verify", "-CAfile", ca_path, leaf_path, NULL};
    cr_assert_neq(tu_run(argv2, NULL, NULL, NULL), 0);
    free(other_pem);
    pki_cert_free(other);
    pki_key_free(okey);
    free(ca_path);
    free(leaf_path);
    free(ca_pem);
    free(leaf_pem);
    pki_cert_free(leaf);
    pki_key_free(key);
    pki_cert_free(ca);
    pki_key_free(cakey);
}

/* ---- objects ---------------------------------------------------------------------------------- */

Test(pki, key_der_and_cert_pem_round_trip)
{
    pki_cert *ca, *leaf, *back;
    pki_key *cakey, *key, *kback;
    make_ca(NOW, 2048, 0, &ca, &cakey);
    issue(ca, cakey, "127.0.0.1", "n", PKI_PLANE_CONTROL, NOW, &leaf, &key);

    uint8_t *der;
    size_t len;
    cr_assert_eq(pki_key_to_der(key, &der, &len), INE_OK);
    const unsigned char *q = der;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &q, (long)len);
    cr_assert_not_null(p8, "PKCS#8 DER");
    cr_assert_eq(q, der + len);
    PKCS8_PRIV_KEY_INFO_free(p8);
    cr_assert_eq(pki_key_from_der(der, len, &kback), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(EVP_PKEY_eq(pki_evp(kback), X509_get0_pubkey(pki_x509(leaf))), 1, "the key matches the cert");
    pki_key_free(kback);
    /* trailing bytes and truncation are refused */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, der, len);
    longer[len] = 0;
    cr_assert_eq(pki_key_from_der(longer, len + 1, &kback), INE_EINVAL);
    cr_assert_null(kback);
    cr_assert_eq(pki_key_from_der(der, len - 1, &kback), INE_EINVAL);
    free(longer);
    pki_secret_free(der, len);

    char *pem;
    cr_assert_eq(pki_cert_to_pem(leaf, &pem), INE_OK);
    cr_assert_eq(strncmp(pem, "-----BEGIN CERTIFICATE-----\n", 28), 0);
    cr_assert_eq(pki_cert_from_pem(pem, &back), INE_OK);
    cr_assert_eq(X509_cmp(pki_x509(back), pki_x509(leaf)), 0);
    pki_cert_free(back);
    free(pem);
    cr_assert_eq(pki_cert_from_pem("no pem here", &back), INE_EINVAL);
    cr_assert_null(back);

    pki_cert_free(leaf);
    pki_key_free(key);
    pki_cert_free(ca);
    pki_key_free(cakey);
}

Test(pki, cert_info_reads_every_field)
{
    pki_cert *ca, *leaf;
    pki_key *cakey, *key;
    make_ca(NOW, 2048, 0, &ca, &cakey);
    issue(ca, cakey, "127.0.0.1", "node-a", PKI_PLANE_DATA, NOW, &leaf, &key);
    pki_info info;
    cr_assert_eq(pki_cert_info(leaf, &info), INE_OK, "%s", ine_err_msg());

    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(pki_x509(leaf)), NULL);
    char *hex = BN_bn2hex(bn);
    const char *h = hex;
    while (*h == '0') h++;
    cr_assert_eq(strlen(info.serial_hex), strlen(h));
    cr_assert_eq(strcasecmp(info.serial_hex, h), 0);
    for (const char *c = info.serial_hex; *c; c++) cr_assert(!(*c >= 'A' && *c <= 'F'), "lowercase");
    cr_assert_neq(info.serial_hex[0], '0');
    OPENSSL_free(hex);
    BN_free(bn);

    char want[65];
    fpr(pki_x509(leaf), want);
    cr_assert_str_eq(info.fingerprint, want);
    char f2[65];
    cr_assert_eq(pki_cert_fingerprint(leaf, f2), INE_OK);
    cr_assert_str_eq(f2, want);
    cr_assert_eq(strlen(info.fingerprint), 64);

    cr_assert_eq(info.not_before, NOW - PKI_BACKDATE_S);
    cr_assert_eq(info.not_after, NOW + 90 * DAY);
    cr_assert_str_eq(info.subject, "CN=node-a dp,OU=" UID ",O=ine");
    cr_assert_str_eq(info.issuer, "CN=ine cluster CA test,OU=" UID ",O=ine");
    cr_assert_str_eq(info.cluster_uid, UID);
    cr_assert_eq(info.node_uid, 7);
    cr_assert_eq(info.plane, PKI_PLANE_DATA);
    pki_info_clear(&info);
    cr_assert_null(info.subject);

    pki_cert_free(leaf);
    pki_key_free(key);
    pki_cert_free(ca);
    pki_key_free(cakey);
}

Test(pki, verify_chain_to_refuses_a_foreign_root_and_an_expired_leaf)
{
    pki_cert *ca, *ca2, *leaf;
    pki_key *cakey, *cakey2, *key;
    make_ca(NOW, 2048, 0, &ca, &cakey);
    make_ca(NOW, 2048, 0, &ca2, &cakey2);
    issue(ca, cakey, "127.0.0.1", "n", PKI_PLANE_CONTROL, NOW, &leaf, &key);
    cr_assert_eq(pki_verify_chain_to(leaf, ca, NOW), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(pki_verify_chain_to(leaf, ca2, NOW), INE_ECHAIN);
    cr_assert_not_null(strstr(ine_err_msg(), "does not verify"), "%s", ine_err_msg());
    cr_assert_eq(pki_verify_chain_to(leaf, ca, NOW + 91 * DAY), INE_ECHAIN);
    cr_assert_not_null(strstr(ine_err_msg(), "expired"), "%s", ine_err_msg());
    cr_assert_eq(pki_verify_chain_to(leaf, ca, NOW - 2 * DAY), INE_ECHAIN);
    cr_assert_not_null(strstr(ine_err_msg(), "not yet valid"), "%s", ine_err_msg());
    pki_cert_free(leaf);
    pki_key_free(key);
    pki_cert_free(ca);
    pki_key_free(cakey);
    pki_cert_free(ca2);
    pki_key_free(cakey2);
}

/* ---- customer uploads: accepted ------------------------------------------------------------- */

Test(pki, upload_accepts_a_two_level_chain)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 2});
    char *cert = fx_pem(c.leaf, c.root, NULL), *key = fx_key_pem(c.leaf_key);
    pki_upload u;
    expect_accepted(cert, key, NOW, &u);
    cr_assert_eq(X509_cmp(pki_x509(u.leaf), c.leaf), 0);
    cr_assert_eq(EVP_PKEY_eq(pki_evp(u.key), c.leaf_key), 1);
    char *root_pem = fx_pem(c.root, NULL);
    cr_assert_str_eq(u.chain_pem, root_pem);
    cr_assert_str_eq(u.root_pem, root_pem);
    char want[65];
    fpr(c.root, want);
    cr_assert_str_eq(u.root_fingerprint, want);
    fpr(c.leaf, want);
    cr_assert_str_eq(u.info.fingerprint, want);
    cr_assert_str_eq(u.info.subject, "CN=node1.customer.example,O=Customer");
    cr_assert_eq(u.info.not_after, NOW + 90 * DAY);
    cr_assert_eq(u.info.plane, 0, "no spiffe identity in a customer certificate");
    pki_upload_free(&u);
    cr_assert_null(u.leaf);
    free(root_pem);
    free(cert);
    free(key);
    fx_chain_free(&c);
}

Test(pki, upload_accepts_a_three_level_chain_in_any_order)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 3});
    char *key = fx_key_pem(c.leaf_key);
    char *want_chain = fx_pem(c.mid, c.root, NULL), *want_root = fx_pem(c.root, NULL);
    char *orders[2] = {fx_pem(c.leaf, c.mid, c.root, NULL), fx_pem(c.leaf, c.root, c.mid, NULL)};
    for (int i = 0; i < 2; i++) {
        pki_upload u;
        expect_accepted(orders[i], key, NOW, &u);
        cr_assert_str_eq(u.chain_pem, want_chain, "chain in chain order, whatever the file's order");
        cr_assert_str_eq(u.root_pem, want_root);
        char want[65];
        fpr(c.root, want);
        cr_assert_str_eq(u.root_fingerprint, want);
        pki_upload_free(&u);
        free(orders[i]);
    }
    /* text around the blocks (as bundles often carry) is fine */
    char *plain = fx_pem(c.leaf, c.mid, c.root, NULL);
    size_t n = strlen(plain) + 64;
    char *chatty = malloc(n);
    snprintf(chatty, n, "subject=leaf\n%s# end\n", plain);
    pki_upload u;
    expect_accepted(chatty, key, NOW, &u);
    pki_upload_free(&u);
    free(chatty);
    free(plain);
    free(want_chain);
    free(want_root);
    free(key);
    fx_chain_free(&c);
}

Test(pki, upload_accepted_today_is_expired_91_days_later)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 3});
    char *cert = fx_pem(c.leaf, c.mid, c.root, NULL), *key = fx_key_pem(c.leaf_key);
    pki_upload u;
    expect_accepted(cert, key, NOW, &u);
    pki_upload_free(&u);
    expect_refused(cert, key, c.leaf_key, NOW + 91 * DAY, PKI_UPLOAD_CERT_EXPIRED, "leaf certificate");
    free(cert);
    free(key);
    fx_chain_free(&c);
}

/* ---- customer uploads: each rule ----------------------------------------------------------- */

Test(pki, upload_refuses_unparsable_certificates)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 2});
    char *key = fx_key_pem(c.leaf_key);
    expect_refused("garbage, not PEM", key, c.leaf_key, NOW, PKI_UPLOAD_CERT_PARSE, "no PEM certificate");
    expect_refused("", key, c.leaf_key, NOW, PKI_UPLOAD_CERT_PARSE, "does not parse");
    expect_refused(NULL, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_PARSE, "does not parse");
    /* a block whose base64 is not a certificate */
    expect_refused("-----BEGIN CERTIFICATE-----\nAAAAAAAAAAAAAAAA\n-----END CERTIFICATE-----\n", key, c.leaf_key, NOW,
                   PKI_UPLOAD_CERT_PARSE, "block 1");
    /* the second block damaged: every block must parse */
    char *good = fx_pem(c.leaf, c.root, NULL);
    char *second = strstr(good + 10, "-----BEGIN CERTIFICATE-----");
    cr_assert_not_null(second);
    second[40] = second[40] == 'A' ? 'B' : 'A';
    second[41] = '*';
    expect_refused(good, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_PARSE, "block 2");
    free(good);
    /* a private key in the certificate file: named by its label, never quoted */
    char *leaf = fx_pem(c.leaf, NULL);
    size_t n = strlen(leaf) + strlen(key) + 1;
    char *mixed = malloc(n);
    snprintf(mixed, n, "%s%s", leaf, key);
    expect_refused(mixed, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_PARSE, "not a CERTIFICATE");
    free(mixed);
    free(leaf);
    free(key);
    fx_chain_free(&c);
}

Test(pki, upload_refuses_a_missing_chain_or_root)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 3});
    char *key = fx_key_pem(c.leaf_key);
    char *alone = fx_pem(c.leaf, NULL), *no_root = fx_pem(c.leaf, c.mid, NULL), *no_mid = fx_pem(c.leaf, c.root, NULL);
    expect_refused(alone, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_NO_CHAIN, "only the leaf");
    expect_refused(no_root, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_NO_CHAIN, "missing its root");
    expect_refused(no_mid, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_NO_CHAIN, "issuer (CN=Customer Intermediate");
    /* the root first is "a self-signed leaf": not a chain */
    char *root_first = fx_pem(c.root, c.mid, c.leaf, NULL);
    expect_refused(root_first, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_NO_CHAIN, "self-signed");
    free(root_first);
    free(alone);
    free(no_root);
    free(no_mid);
    free(key);
    fx_chain_free(&c);
}

Test(pki, upload_refuses_a_certificate_that_is_not_on_the_chain)
{
    fx_chain c, d;
    fx_chain_make(&c, (fx_spec){.levels = 2});
    fx_chain_make(&d, (fx_spec){.levels = 2});
    char *key = fx_key_pem(c.leaf_key);
    char *extra = fx_pem(c.leaf, c.root, d.leaf, NULL);
    expect_refused(extra, key, c.leaf_key, NOW, PKI_UPLOAD_CHAIN_INVALID, "not on the leaf's chain");
    free(extra);
    free(key);
    fx_chain_free(&c);
    fx_chain_free(&d);
}

Test(pki, upload_refuses_keys_that_are_not_rsa)
{
    int types[] = {FX_EC, FX_ED25519};
    const char *names[] = {"EC", "ED25519"};
    for (int i = 0; i < 2; i++) {
        fx_chain c;
        fx_chain_make(&c, (fx_spec){.levels = 2, .leaf_key = types[i]});
        char *cert = fx_pem(c.leaf, c.root, NULL), *key = fx_key_pem(c.leaf_key);
        expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_KEY_NOT_RSA, "not RSA");
        expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_KEY_NOT_RSA, names[i]);
        free(cert);
        free(key);
        fx_chain_free(&c);
    }
}

Test(pki, upload_refuses_an_rsa_key_under_2048_bits)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 2, .leaf_key = FX_RSA1024});
    char *cert = fx_pem(c.leaf, c.root, NULL), *key = fx_key_pem(c.leaf_key);
    expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_KEY_TOO_SMALL, "1024 bits");
    free(cert);
    free(key);
    fx_chain_free(&c);
}

Test(pki, upload_refuses_a_key_that_is_not_the_leafs)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 2});
    EVP_PKEY *other = fx_key(FX_RSA);
    char *cert = fx_pem(c.leaf, c.root, NULL), *key = fx_key_pem(other);
    expect_refused(cert, key, other, NOW, PKI_UPLOAD_KEY_MISMATCH, "does not match");
    /* the CA's key is not the leaf's either */
    char *root_key = fx_key_pem(c.root_key);
    expect_refused(cert, root_key, c.root_key, NOW, PKI_UPLOAD_KEY_MISMATCH, "does not match");
    free(root_key);
    EVP_PKEY_free(other);
    free(cert);
    free(key);
    fx_chain_free(&c);
}

Test(pki, upload_refuses_encrypted_and_unreadable_keys)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 2});
    char *cert = fx_pem(c.leaf, c.root, NULL);
    static const char pass[] = "correct horse";

    BIO *b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PrivateKey(b, c.leaf_key, EVP_aes_256_cbc(), (const unsigned char *)pass,
                                          (int)strlen(pass), NULL, NULL), 1);
    char *pkcs8 = fx_bio_string(b);
    cr_assert_not_null(strstr(pkcs8, "ENCRYPTED PRIVATE KEY"));
    expect_refused(cert, pkcs8, c.leaf_key, NOW, PKI_UPLOAD_KEY_ENCRYPTED, "passphrase");

    b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PrivateKey_traditional(b, c.leaf_key, EVP_aes_256_cbc(), (const unsigned char *)pass,
                                                      (int)strlen(pass), NULL, NULL), 1);
    char *legacy = fx_bio_string(b);
    cr_assert_not_null(strstr(legacy, "Proc-Type: 4,ENCRYPTED"));
    expect_refused(cert, legacy, c.leaf_key, NOW, PKI_UPLOAD_KEY_ENCRYPTED, "encrypted");

    /* encrypted bytes under a plain label: refused as unreadable, without ever prompting (a
     * prompt would read the test's stdin, /dev/null, and fail differently) */
    char *no_marker = strdup(pkcs8);
    for (char *m; (m = strstr(no_marker, "ENCRYPTED PRIVATE KEY"));) memmove(m, m + 10, strlen(m + 10) + 1);
    cr_assert_null(strstr(no_marker, "ENCRYPTED"));
    expect_refused(cert, no_marker, c.leaf_key, NOW, PKI_UPLOAD_KEY_PARSE, "no readable PEM private key");

    char *key = fx_key_pem(c.leaf_key);
    expect_refused(cert, "", c.leaf_key, NOW, PKI_UPLOAD_KEY_PARSE, "empty");
    expect_refused(cert, NULL, c.leaf_key, NOW, PKI_UPLOAD_KEY_PARSE, "does not parse");
    expect_refused(cert, "not a key at all", c.leaf_key, NOW, PKI_UPLOAD_KEY_PARSE, "no readable PEM private key");
    /* a damaged key body */
    char *bad = strdup(key);
    bad[60] = bad[60] == 'A' ? 'B' : 'A';
    bad[61] = '!';
    expect_refused(cert, bad, c.leaf_key, NOW, PKI_UPLOAD_KEY_PARSE, "does not parse");
    /* a certificate where the key belongs */
    expect_refused(cert, cert, c.leaf_key, NOW, PKI_UPLOAD_KEY_PARSE, "private key");
    free(bad);
    free(key);
    free(no_marker);
    free(pkcs8);
    free(legacy);
    free(cert);
    fx_chain_free(&c);
}

Test(pki, upload_refuses_certificates_outside_their_validity)
{
    struct {
        fx_spec s;
        pki_upload_err code;
        const char *kw;
    } cases[] = {
        {{.levels = 2, .leaf_nb = NOW - 100 * DAY, .leaf_na = NOW - DAY}, PKI_UPLOAD_CERT_EXPIRED,
         "leaf certificate (CN=node1.customer.example,O=Customer) has expired"},
        {{.levels = 2, .leaf_nb = NOW + DAY, .leaf_na = NOW + 90 * DAY}, PKI_UPLOAD_CERT_NOT_YET_VALID,
         "leaf certificate (CN=node1.customer.example,O=Customer) is not yet valid"},
        {{.levels = 3, .mid_na = NOW - 1}, PKI_UPLOAD_CERT_EXPIRED, "intermediate certificate"},
        /* the boundary is OpenSSL's: valid through notAfter - 1, expired at notAfter */
        {{.levels = 2, .leaf_na = NOW}, PKI_UPLOAD_CERT_EXPIRED, "expired"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx_chain c;
        fx_chain_make(&c, cases[i].s);
        char *cert = c.mid ? fx_pem(c.leaf, c.mid, c.root, NULL) : fx_pem(c.leaf, c.root, NULL);
        char *key = fx_key_pem(c.leaf_key);
        expect_refused(cert, key, c.leaf_key, NOW, cases[i].code, cases[i].kw);
        free(cert);
        free(key);
        fx_chain_free(&c);
    }
    /* Valid, but inside the fallback window plus its margin: refused with its own code, down
     * to the second; exactly PKI_UPLOAD_MIN_LEFT_S left is fine. */
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 2, .leaf_nb = NOW - 30 * DAY, .leaf_na = NOW});
    char *cert = fx_pem(c.leaf, c.root, NULL), *key = fx_key_pem(c.leaf_key);
    pki_upload u;
    expect_refused(cert, key, c.leaf_key, NOW - 1, PKI_UPLOAD_CERT_EXPIRES_SOON, "would be replaced at once");
    expect_refused(cert, key, c.leaf_key, NOW - PKI_UPLOAD_MIN_LEFT_S + 1, PKI_UPLOAD_CERT_EXPIRES_SOON, "leaf certificate");
    expect_accepted(cert, key, NOW - PKI_UPLOAD_MIN_LEFT_S, &u);
    pki_upload_free(&u);
    free(cert);
    free(key);
    fx_chain_free(&c);
    /* An intermediate about to expire takes the chain with it. */
    fx_chain_make(&c, (fx_spec){.levels = 3, .mid_na = NOW + 3 * DAY});
    cert = fx_pem(c.leaf, c.mid, c.root, NULL);
    key = fx_key_pem(c.leaf_key);
    expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_EXPIRES_SOON, "intermediate certificate");
    free(cert);
    free(key);
    fx_chain_free(&c);
}

Test(pki, upload_refuses_sha1_and_md5_signatures_and_small_chain_keys)
{
    struct {
        int levels, which; /* 0: re-sign the leaf, 1: the intermediate */
        const EVP_MD *(*md)(void);
        const char *kw;
    } cases[] = {
        {2, 0, EVP_sha1, "leaf certificate (CN=node1.customer.example,O=Customer) is signed with SHA1"},
        {3, 0, EVP_sha1, "leaf certificate"},
        {3, 1, EVP_sha1, "intermediate certificate (CN=Customer Intermediate,O=Customer) is signed with SHA1"},
        {2, 0, EVP_md5, "signed with MD5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx_chain c;
        fx_chain_make(&c, (fx_spec){.levels = cases[i].levels});
        if (cases[i].which == 0) cr_assert_gt(X509_sign(c.leaf, c.mid ? c.mid_key : c.root_key, cases[i].md()), 0);
        else cr_assert_gt(X509_sign(c.mid, c.root_key, cases[i].md()), 0);
        char *cert = c.mid ? fx_pem(c.leaf, c.mid, c.root, NULL) : fx_pem(c.leaf, c.root, NULL);
        char *key = fx_key_pem(c.leaf_key);
        expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_WEAK_SIGNATURE, cases[i].kw);
        free(cert);
        free(key);
        fx_chain_free(&c);
    }
    /* A root's own SHA-1 self-signature is not judged: the root is trusted as it is. */
    {
        fx_chain c;
        pki_upload u;
        fx_chain_make(&c, (fx_spec){.levels = 2});
        cr_assert_gt(X509_sign(c.root, c.root_key, EVP_sha1()), 0);
        cr_assert_gt(X509_sign(c.leaf, c.root_key, EVP_sha256()), 0); /* the root's signature changed, not its key */
        char *cert = fx_pem(c.leaf, c.root, NULL), *key = fx_key_pem(c.leaf_key);
        expect_accepted(cert, key, NOW, &u);
        pki_upload_free(&u);
        free(cert);
        free(key);
        fx_chain_free(&c);
    }
    /* An intermediate with a 1024-bit RSA key (the leaf's is 2048). */
    {
        fx_chain c;
        fx_chain_make(&c, (fx_spec){.levels = 3});
        EVP_PKEY *small = EVP_RSA_gen(1024);
        cr_assert_not_null(small);
        X509 *mid = fx_cert("Customer Intermediate", small, c.root, c.root_key, 1, 0, NOW - 300 * DAY, NOW + 1825 * DAY, 1);
        cr_assert_gt(X509_sign(c.leaf, small, EVP_sha256()), 0);
        X509_set_issuer_name(c.leaf, X509_get_subject_name(mid));
        cr_assert_gt(X509_sign(c.leaf, small, EVP_sha256()), 0);
        char *cert = fx_pem(c.leaf, mid, c.root, NULL), *key = fx_key_pem(c.leaf_key);
        expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_KEY_TOO_SMALL, "intermediate certificate");
        free(cert);
        free(key);
        X509_free(mid);
        EVP_PKEY_free(small);
        fx_chain_free(&c);
    }
}

Test(pki, upload_refuses_a_leaf_without_both_tls_ekus)
{
    struct {
        int eku;
        const char *kw;
    } cases[] = {
        {FX_SERVER, "lacks clientAuth"},
        {FX_CLIENT, "lacks serverAuth"},
        {FX_NO_EKU, "no extended key usage"},
        {FX_ANY, "lacks clientAuth and serverAuth"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx_chain c;
        fx_chain_make(&c, (fx_spec){.levels = 2, .eku = cases[i].eku});
        char *cert = fx_pem(c.leaf, c.root, NULL), *key = fx_key_pem(c.leaf_key);
        expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_CERT_EKU, cases[i].kw);
        free(cert);
        free(key);
        fx_chain_free(&c);
    }
}

/* The file's CA has the leaf issuer's name but not its key: the chain is there, it just does
 * not verify. */
Test(pki, upload_refuses_a_leaf_signed_by_another_ca)
{
    for (int aki = 0; aki <= 1; aki++) {
        fx_chain c;
        fx_chain_make(&c, (fx_spec){.levels = 2});
        EVP_PKEY *impostor_key = fx_key(FX_RSA);
        X509 *impostor = fx_cert("Customer Root", impostor_key, NULL, NULL, 1, 0, NOW - DAY, NOW + 365 * DAY, 1);
        EVP_PKEY *lk = fx_key(FX_RSA);
        X509 *leaf = fx_cert("node1.customer.example", lk, impostor, impostor_key, 0, FX_SERVER | FX_CLIENT,
                             NOW - DAY, NOW + 90 * DAY, aki);
        char *cert = fx_pem(leaf, c.root, NULL), *key = fx_key_pem(lk);
        expect_refused(cert, key, lk, NOW, PKI_UPLOAD_CHAIN_INVALID, "does not verify");
        if (!aki) expect_refused(cert, key, lk, NOW, PKI_UPLOAD_CHAIN_INVALID, "signature");
        free(cert);
        free(key);
        X509_free(leaf);
        EVP_PKEY_free(lk);
        X509_free(impostor);
        EVP_PKEY_free(impostor_key);
        fx_chain_free(&c);
    }
}

/* A root whose self-signature is made with another key is not a trust anchor. */
Test(pki, upload_refuses_a_root_with_a_broken_self_signature)
{
    fx_chain c;
    fx_chain_make(&c, (fx_spec){.levels = 2});
    EVP_PKEY *other = fx_key(FX_RSA);
    X509 *bad_root = fx_cert("Customer Root", c.root_key, NULL, other, 1, 0, NOW - 365 * DAY, NOW + 3650 * DAY, 1);
    cr_assert_eq(X509_self_signed(bad_root, 0), 1, "it looks self-signed");
    cr_assert_neq(X509_self_signed(bad_root, 1), 1, "but its signature is not its own");
    ERR_clear_error();
    char *cert = fx_pem(c.leaf, bad_root, NULL), *key = fx_key_pem(c.leaf_key);
    expect_refused(cert, key, c.leaf_key, NOW, PKI_UPLOAD_CHAIN_INVALID, "signature failure (certificate at depth 1");
    free(cert);
    free(key);
    X509_free(bad_root);
    EVP_PKEY_free(other);
    fx_chain_free(&c);
}

Test(pki, upload_error_codes_are_the_proto_values)
{
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_CERT_PARSE), INE__V1__ERROR_CODE__ERROR_CODE_CERT_PARSE);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_CERT_NO_CHAIN), INE__V1__ERROR_CODE__ERROR_CODE_CERT_NO_CHAIN);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_KEY_NOT_RSA), INE__V1__ERROR_CODE__ERROR_CODE_KEY_NOT_RSA);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_KEY_MISMATCH), INE__V1__ERROR_CODE__ERROR_CODE_KEY_MISMATCH);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_CHAIN_INVALID), INE__V1__ERROR_CODE__ERROR_CODE_CHAIN_INVALID);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_CERT_EXPIRED), INE__V1__ERROR_CODE__ERROR_CODE_CERT_EXPIRED);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_CERT_NOT_YET_VALID),
                 INE__V1__ERROR_CODE__ERROR_CODE_CERT_NOT_YET_VALID);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_CERT_EKU), INE__V1__ERROR_CODE__ERROR_CODE_CERT_EKU);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_KEY_ENCRYPTED), INE__V1__ERROR_CODE__ERROR_CODE_KEY_ENCRYPTED);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_KEY_PARSE), INE__V1__ERROR_CODE__ERROR_CODE_KEY_PARSE);
    cr_assert_eq(pki_upload_err_code(PKI_UPLOAD_OK), INE__V1__ERROR_CODE__ERROR_CODE_OK);
}

/* A certificate whose only SAN is the given URI (the key and signature do not matter here). */
static X509 *uri_cert(const char *uri)
{
    X509 *x = X509_new();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    char san[300];
    X509_EXTENSION *e;
    snprintf(san, sizeof san, "URI:%s", uri);
    cr_assert(x && k);
    X509_set_version(x, 2);
    X509_set_pubkey(x, k);
    cr_assert_not_null(e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san), "%s", san);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(x, k, EVP_sha256());
    EVP_PKEY_free(k);
    return x;
}

Test(pki, a_node_identity_is_read_exactly_or_not_at_all)
{
    static const struct {
        const char *uri;
        uint32_t node; /* 0: no identity */
        int plane;
    } cases[] = {
        {"spiffe://" UID "/node/1/cp", 1, PKI_PLANE_CONTROL},
        {"spiffe://" UID "/node/12/dp", 12, PKI_PLANE_DATA},
        {"spiffe://" UID "/node/4294967295/dp", 4294967295u, PKI_PLANE_DATA},
        {"spiffe://" UID "/node/01/dp", 0, 0},            /* a leading zero */
        {"spiffe://" UID "/node/+1/dp", 0, 0},            /* a sign */
        {"spiffe://" UID "/node/-4294967295/dp", 0, 0},   /* what wraps to 1 */
        {"spiffe://" UID "/node/ 1/dp", 0, 0},
        {"spiffe://" UID "/node/0/dp", 0, 0},
        {"spiffe://" UID "/node/4294967296/dp", 0, 0},
        {"spiffe://" UID "/node/1/dp/x", 0, 0},          /* something after the plane */
        {"spiffe://" UID "/node/1/dpx", 0, 0},
        {"spiffe://" UID "/node/1x/dp", 0, 0},
        {"spiffe://" UID "/node//dp", 0, 0},
        {"spiffe:///node/1/dp", 0, 0},                    /* no trust domain */
        {"https://" UID "/node/1/dp", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        X509 *x = uri_cert(cases[i].uri);
        char cluster[80] = "";
        uint32_t node = 0;
        int plane = 0, got = pki_x509_node_id(x, cluster, sizeof cluster, &node, &plane);
        if (cases[i].node) {
            cr_assert_eq(got, 1, "%s is node %u", cases[i].uri, cases[i].node);
            cr_assert_eq(node, cases[i].node, "%s", cases[i].uri);
            cr_assert_eq(plane, cases[i].plane, "%s", cases[i].uri);
            cr_assert_str_eq(cluster, UID);
        } else {
            cr_assert_eq(got, 0, "%s was read as node %u", cases[i].uri, node);
        }
        X509_free(x);
    }
}

/* What the stricter rules must not refuse: an RSA-4096 leaf, a PKCS#1 ("RSA PRIVATE KEY") key,
 * CRLF line ends, three levels. */
Test(pki, upload_still_accepts_rsa4096_pkcs1_crlf_and_three_levels)
{
    fx_chain c;
    pki_upload u;
    fx_chain_make(&c, (fx_spec){.levels = 3});
    EVP_PKEY *big = EVP_RSA_gen(4096);
    cr_assert_not_null(big);
    X509 *leaf = fx_cert("node1.customer.example", big, c.mid, c.mid_key, 0, FX_SERVER | FX_CLIENT, NOW - DAY, NOW + 90 * DAY, 1);
    char *cert = fx_pem(leaf, c.mid, c.root, NULL);
    BIO *b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PrivateKey_traditional(b, big, NULL, NULL, 0, NULL, NULL), 1);
    char *key = fx_bio_string(b);
    cr_assert(strstr(key, "BEGIN RSA PRIVATE KEY"), "a PKCS#1 key: %.40s", key);
    /* CRLF everywhere */
    size_t n = 0;
    for (const char *p = cert; *p; p++) n += *p == '\n';
    char *crlf = malloc(strlen(cert) + n + 1), *q = crlf;
    for (const char *p = cert; *p; p++) {
        if (*p == '\n') *q++ = '\r';
        *q++ = *p;
    }
    *q = 0;
    expect_accepted(crlf, key, NOW, &u);
    cr_assert_eq(EVP_PKEY_get_bits(pki_evp(u.key)), 4096);
    pki_upload_free(&u);
    free(crlf);
    free(cert);
    free(key);
    X509_free(leaf);
    EVP_PKEY_free(big);
    fx_chain_free(&c);
}
