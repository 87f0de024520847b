/* pki.c — the certificate and key objects, the facts read from a certificate (pki_info), the
 * cluster CA and node certificates. Chain verification and customer uploads are in
 * pki_upload.c.
 *
 * Everything here takes "now" as a parameter: the CA service decides what time it is (and
 * tests move it), OpenSSL never reads the clock on our behalf. */
#include "pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "err.h"

struct pki_cert {
    X509 *x;
};

struct pki_key {
    EVP_PKEY *k;
};

#define PKI__CN_MAX 64 /* ub-common-name, in characters */

/* ---- objects ------------------------------------------------------------------------------ */

void pki_cert_free(pki_cert *c)
{
    if (!c) return;
    X509_free(c->x);
    free(c);
}

void pki_key_free(pki_key *k)
{
    if (!k) return;
    EVP_PKEY_free(k->k);
    free(k);
}

X509 *pki_x509(const pki_cert *c) { return c ? c->x : NULL; }
EVP_PKEY *pki_evp(const pki_key *k) { return k ? k->k : NULL; }

int pki_cert_adopt(X509 *x, pki_cert **out)
{
    *out = NULL;
    if (!x) return ine_err(INE_EINVAL, "no certificate to adopt");
    pki_cert *c = calloc(1, sizeof *c);
    if (!c) {
        X509_free(x);
        return ine_err(INE_ENOMEM, "out of memory for a certificate");
    }
    c->x = x;
    *out = c;
    return INE_OK;
}

int pki_key_adopt(EVP_PKEY *k, pki_key **out)
{
    *out = NULL;
    if (!k) return ine_err(INE_EINVAL, "no key to adopt");
    pki_key *w = calloc(1, sizeof *w);
    if (!w) {
        EVP_PKEY_free(k);
        return ine_err(INE_ENOMEM, "out of memory for a key");
    }
    w->k = k;
    *out = w;
    return INE_OK;
}

void pki_secret_free(void *p, size_t len)
{
    if (!p) return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* A memory BIO's contents as a malloc'd C string. */
static int pki__bio_string(BIO *b, char **out)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0 || (n > 0 && !data)) return ine_err(INE_ECRYPTO, "reading a memory BIO failed");
    char *s = malloc((size_t)n + 1);
    if (!s) return ine_err(INE_ENOMEM, "out of memory for a string");
    if (n) memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *out = s;
    return INE_OK;
}

int pki__x509_to_pem(X509 *x, char **pem)
{
    int rc = INE_OK;
    BIO *b = BIO_new(BIO_s_mem());
    *pem = NULL;
    GUARD_OSSL(b != NULL, out);
    GUARD_OSSL(PEM_write_bio_X509(b, x) == 1, out);
    rc = pki__bio_string(b, pem);
out:
    BIO_free(b);
    return rc;
}

int pki_cert_to_pem(const pki_cert *c, char **pem)
{
    return pki__x509_to_pem(c->x, pem);
}

int pki_cert_from_pem(const char *pem, pki_cert **out)
{
    int rc = INE_OK;
    BIO *b = NULL;
    X509 *x = NULL;
    *out = NULL;
    if (!pem) return ine_err(INE_EINVAL, "no certificate PEM given");
    GUARD_OSSL((b = BIO_new_mem_buf(pem, -1)) != NULL, out);
    x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (!x) {
        rc = ine_err_ossl(INE_EINVAL, "reading a PEM certificate");
        goto out;
    }
    rc = pki_cert_adopt(x, out);
out:
    BIO_free(b);
    return rc;
}

int pki_key_to_der(const pki_key *k, uint8_t **der, size_t *len)
{
    int rc = INE_OK, n = 0;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    uint8_t *buf = NULL;
    *der = NULL;
    *len = 0;
    GUARD_OSSL((p8 = EVP_PKEY2PKCS8(k->k)) != NULL, out);
    GUARD_OSSL((n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL)) > 0, out);
    if (!(buf = malloc((size_t)n))) {
        rc = ine_err(INE_ENOMEM, "out of memory for a private key");
        goto out;
    }
    unsigned char *q = buf;
    GUARD_OSSL(i2d_PKCS8_PRIV_KEY_INFO(p8, &q) == n, out);
    *der = buf;
    *len = (size_t)n;
    buf = NULL;
out:
    pki_secret_free(buf, (size_t)(n > 0 ? n : 0));
    PKCS8_PRIV_KEY_INFO_free(p8); /* its ASN.1 free cleanses the key bytes */
    return rc;
}

int pki_key_from_der(const uint8_t *der, size_t len, pki_key **out)
{
    int rc = INE_OK;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    EVP_PKEY *k = NULL;
    const unsigned char *q = der;
    *out = NULL;
    if (!der || len == 0 || len > (size_t)INT32_MAX)
        return ine_err(INE_EINVAL, "a PKCS#8 private key needs between 1 and 2^31 bytes");
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &q, (long)len);
    if (!p8 || q != der + len) {
        ERR_clear_error(); /* the reason could only describe the key's bytes: say less */
        rc = ine_err(INE_EINVAL, "the private key is not a well-formed PKCS#8 structure");
        goto out;
    }
    GUARD_OSSL((k = EVP_PKCS82PKEY(p8)) != NULL, out);
    rc = pki_key_adopt(k, out);
out:
    PKCS8_PRIV_KEY_INFO_free(p8);
    return rc;
}

/* ---- facts about a certificate -------------------------------------------------------------- */

int pki__time_unix(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return ine_err_ossl(INE_EINVAL, "reading a certificate time");
    *out = (int64_t)timegm(&tm);
    return INE_OK;
}

int pki__x509_fingerprint(const X509 *x, char out[PKI_FPR_LEN + 1])
{
    int rc = INE_OK;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = '\0';
    GUARD_OSSL(X509_digest(x, EVP_sha256(), md, &n) == 1 && n == 32, out);
    for (unsigned i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
out:
    return rc;
}

int pki_cert_fingerprint(const pki_cert *c, char out[PKI_FPR_LEN + 1])
{
    return pki__x509_fingerprint(c->x, out);
}

/* Lowercase hex without leading zeros; "-" in front of a (non-conforming) negative serial. */
static int pki__serial_hex(X509 *x, char **out)
{
    int rc = INE_OK;
    BIGNUM *bn = NULL;
    char *hex = NULL;
    GUARD_OSSL((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) != NULL, out);
    GUARD_OSSL((hex = BN_bn2hex(bn)) != NULL, out);
    const char *p = hex;
    int neg = (*p == '-');
    if (neg) p++;
    while (p[0] == '0' && p[1] != '\0') p++;
    size_t n = strlen(p);
    char *s = malloc(n + 2);
    if (!s) {
        rc = ine_err(INE_ENOMEM, "out of memory for a serial");
        goto out;
    }
    char *w = s;
    if (neg) *w++ = '-';
    for (size_t i = 0; i <= n; i++) *w++ = (char)(p[i] >= 'A' && p[i] <= 'F' ? p[i] + 32 : p[i]);
    *out = s;
out:
    OPENSSL_free(hex);
    BN_free(bn);
    return rc;
}

/* One-line RFC 2253, with UTF-8 left readable instead of \XX-escaped. */
static int pki__name_line(const X509_NAME *n, char **out)
{
    int rc = INE_OK;
    BIO *b = BIO_new(BIO_s_mem());
    GUARD_OSSL(b != NULL, out);
    GUARD_OSSL(X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0, out);
    rc = pki__bio_string(b, out);
out:
    BIO_free(b);
    return rc;
}

/* "spiffe://<cluster>/node/<uid>/<cp|dp>" → its parts; 0 when the URI has another shape
 * (pki.h, pki_x509_node_id, says what exactly is accepted). */
static int pki__parse_spiffe(const char *u, size_t len, pki_info *info)
{
    static const char pre[] = "spiffe://";
    if (len < sizeof pre - 1 || memcmp(u, pre, sizeof pre - 1) != 0) return 0;
    const char *p = u + sizeof pre - 1, *end = u + len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (!slash || slash == p || (size_t)(slash - p) >= sizeof info->cluster_uid) return 0;
    const char *cl = p;
    size_t cl_len = (size_t)(slash - p);
    p = slash + 1;
    if ((size_t)(end - p) < 5 || memcmp(p, "node/", 5) != 0) return 0;
    p += 5;
    uint64_t uid = 0;
    const char *digits = p;
    /* Exactly: "01", "+1", " 1" or "1x" would name node 1 to a lax reader. */
    if (p >= end || *p < '1' || *p > '9') return 0;
    while (p < end && *p >= '0' && *p <= '9' && p - digits < 10) uid = uid * 10 + (uint64_t)(*p++ - '0');
    if (uid == 0 || uid > UINT32_MAX || p >= end || *p != '/') return 0;
    p++;
    int plane;
    if (end - p == 2 && memcmp(p, "cp", 2) == 0) plane = PKI_PLANE_CONTROL;
    else if (end - p == 2 && memcmp(p, "dp", 2) == 0) plane = PKI_PLANE_DATA;
    else return 0;
    memcpy(info->cluster_uid, cl, cl_len);
    info->cluster_uid[cl_len] = '\0';
    info->node_uid = (uint32_t)uid;
    info->plane = plane;
    return 1;
}

static void pki__identity(X509 *x, pki_info *info)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (!gens) {
        ERR_clear_error(); /* absent or malformed: no identity either way */
        return;
    }
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) continue;
        const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (len <= 0 || memchr(u, '\0', (size_t)len)) continue;
        if (pki__parse_spiffe(u, (size_t)len, info)) break;
    }
    GENERAL_NAMES_free(gens);
}

int pki_x509_node_id(X509 *x, char *cluster, size_t clen, uint32_t *node_uid, int *plane)
{
    pki_info info;
    memset(&info, 0, sizeof info);
    pki__identity(x, &info);
    if (!info.plane || strlen(info.cluster_uid) >= clen) return 0;
    memcpy(cluster, info.cluster_uid, strlen(info.cluster_uid) + 1);
    *node_uid = info.node_uid;
    *plane = info.plane;
    return 1;
}

void pki_info_clear(pki_info *info)
{
    if (!info) return;
    free(info->serial_hex);
    free(info->subject);
    free(info->issuer);
    memset(info, 0, sizeof *info);
}

int pki_cert_info(const pki_cert *c, pki_info *out)
{
    int rc = INE_OK;
    memset(out, 0, sizeof *out);
    GUARD_GOTO(pki__serial_hex(c->x, &out->serial_hex), out);
    GUARD_GOTO(pki_cert_fingerprint(c, out->fingerprint), out);
    GUARD_GOTO(pki__time_unix(X509_get0_notBefore(c->x), &out->not_before), out);
    GUARD_GOTO(pki__time_unix(X509_get0_notAfter(c->x), &out->not_after), out);
    GUARD_GOTO(pki__name_line(X509_get_subject_name(c->x), &out->subject), out);
    GUARD_GOTO(pki__name_line(X509_get_issuer_name(c->x), &out->issuer), out);
    pki__identity(c->x, out);
out:
    return rc;
}

/* Hand a freshly built certificate and key to the caller as wrappers, both or neither; the
 * wrappers take the objects over (*x and *k become NULL either way). */
static int pki__wrap_pair(X509 **x, EVP_PKEY **k, pki_cert **cert_out, pki_key **key_out)
{
    int rc;
    pki_cert *c = NULL;
    pki_key *w = NULL;
    rc = pki_cert_adopt(*x, &c);
    *x = NULL;
    if (rc < 0) goto out;
    rc = pki_key_adopt(*k, &w);
    *k = NULL;
    if (rc < 0) goto out;
    *cert_out = c;
    *key_out = w;
    c = NULL;
    w = NULL;
out:
    pki_cert_free(c);
    pki_key_free(w);
    return rc;
}

/* ---- building certificates ------------------------------------------------------------------ */

static int pki__rsa_keygen(int bits, EVP_PKEY **out)
{
    int rc = INE_OK;
    EVP_PKEY_CTX *ctx = NULL;
    *out = NULL;
    GUARD_OSSL((ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) != NULL, out);
    GUARD_OSSL(EVP_PKEY_keygen_init(ctx) == 1, out);
    GUARD_OSSL(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, bits) > 0, out);
    GUARD_OSSL(EVP_PKEY_generate(ctx, out) == 1, out);
out:
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

/* A fresh v3 certificate: random positive 128-bit serial (top bit cleared so the DER INTEGER
 * needs no sign byte, never zero), validity, public key. */
static int pki__new_cert(EVP_PKEY *pub, int64_t not_before, int64_t not_after, X509 **out)
{
    int rc = INE_OK;
    X509 *x = NULL;
    BIGNUM *bn = NULL;
    unsigned char b[16];
    *out = NULL;
    GUARD_OSSL((x = X509_new()) != NULL, out);
    GUARD_OSSL(X509_set_version(x, X509_VERSION_3) == 1, out);
    for (;;) {
        GUARD_OSSL(RAND_bytes(b, sizeof b) == 1, out);
        b[0] &= 0x7f;
        int nz = 0;
        for (size_t i = 0; i < sizeof b; i++) nz |= b[i];
        if (nz) break;
    }
    GUARD_OSSL((bn = BN_bin2bn(b, sizeof b, NULL)) != NULL, out);
    GUARD_OSSL(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL, out);
    GUARD_OSSL(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) != NULL, out);
    GUARD_OSSL(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after) != NULL, out);
    GUARD_OSSL(X509_set_pubkey(x, pub) == 1, out);
    *out = x;
    x = NULL;
out:
    BN_free(bn);
    X509_free(x);
    return rc;
}

/* Copy at most `max` UTF-8 characters of s into buf (>= 4 * max + 1 bytes). */
static void pki__cn_cut(const char *s, char *buf, size_t max)
{
    size_t i = 0, chars = 0;
    while (s[i] && chars < max) {
        size_t n = 1;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xf0) n = 4;
        else if (c >= 0xe0) n = 3;
        else if (c >= 0xc0) n = 2;
        for (size_t k = 1; k < n; k++)
            if (!s[i + k]) n = k; /* truncated sequence: OpenSSL will refuse it, not us */
        memcpy(buf + i, s + i, n);
        i += n;
        chars++;
    }
    buf[i] = '\0';
}

/* O=ine, OU=<cluster uid>, CN=<cn> (RFC 2253 prints it CN first). */
static int pki__set_subject(X509 *x, const char *cn, const char *ou)
{
    int rc = INE_OK;
    char cut[4 * PKI__CN_MAX + 1];
    X509_NAME *n = X509_get_subject_name(x);
    pki__cn_cut(cn, cut, PKI__CN_MAX);
    GUARD_OSSL(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"ine", -1, -1, 0) == 1, out);
    GUARD_OSSL(X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_UTF8, (const unsigned char *)ou, -1, -1, 0) == 1, out);
    GUARD_OSSL(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cut, -1, -1, 0) == 1, out);
out:
    return rc;
}

/* A standard extension from its configuration text (fixed strings only, never user input). */
static int pki__add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    int rc = INE_OK;
    X509V3_CTX ctx;
    X509_EXTENSION *ext = NULL;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    GUARD_OSSL((ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value)) != NULL, out);
    GUARD_OSSL(X509_add_ext(x, ext, -1) == 1, out);
out:
    X509_EXTENSION_free(ext);
    return rc;
}

/* A SPIFFE trust domain: lowercase letters, digits, '.', '-', '_'. */
static int pki__uid_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_'))
            return 0;
    return 1;
}

int pki_ca_create(const pki_ca_params *p, pki_cert **cert_out, pki_key **key_out)
{
    int rc = INE_OK;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    *cert_out = NULL;
    *key_out = NULL;
    int bits = p->key_bits ? p->key_bits : PKI_CA_KEY_BITS_DEFAULT;
    int years = p->years ? p->years : PKI_CA_YEARS_DEFAULT;
    if (bits < 2048 || bits > 16384)
        return ine_err(INE_EINVAL, "CA key size %d bits is outside 2048..16384", bits);
    if (years < 1 || years > 100)
        return ine_err(INE_EINVAL, "CA validity of %d years is outside 1..100", years);
    if (!p->cluster_name || !*p->cluster_name)
        return ine_err(INE_EINVAL, "the CA needs a cluster name");
    if (!pki__uid_ok(p->cluster_uid))
        return ine_err(INE_EINVAL, "cluster uid must be 1-64 lowercase letters, digits, '.', '-' or '_'");

    /* Calendar years from now: a 10-year CA ends on the same date ten years on. */
    time_t t = (time_t)p->now;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) return ine_err(INE_EINVAL, "time %lld is out of range", (long long)p->now);
    tm.tm_year += years;
    int64_t not_after = (int64_t)timegm(&tm);

    char cn[256];
    snprintf(cn, sizeof cn, "ine cluster CA %s", p->cluster_name);
    GUARD_GOTO(pki__rsa_keygen(bits, &key), out);
    GUARD_GOTO(pki__new_cert(key, p->now - PKI_BACKDATE_S, not_after, &x), out);
    GUARD_GOTO(pki__set_subject(x, cn, p->cluster_uid), out);
    GUARD_OSSL(X509_set_issuer_name(x, X509_get_subject_name(x)) == 1, out);
    GUARD_GOTO(pki__add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"), out);
    GUARD_GOTO(pki__add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign"), out);
    GUARD_GOTO(pki__add_ext(x, x, NID_subject_key_identifier, "hash"), out);
    GUARD_GOTO(pki__add_ext(x, x, NID_authority_key_identifier, "keyid:always"), out);
    GUARD_OSSL(X509_sign(x, key, EVP_sha256()) > 0, out);
    rc = pki__wrap_pair(&x, &key, cert_out, key_out);
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

/* A host name as a DNS SAN may carry it: dot-separated labels of letters, digits and inner
 * hyphens, 1-63 characters each, 253 in all. */
static int pki__hostname_ok(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253) return 0;
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-') return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
            return 0;
        if (c == '-' && label == 0) return 0;
        label++;
    }
    return 1;
}

/* The address as IP octets when it is an IP literal ("[v6]" accepted), else NULL. */
static ASN1_OCTET_STRING *pki__ip(const char *addr)
{
    char buf[64];
    size_t n = strlen(addr);
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']' && n - 2 < sizeof buf) {
        memcpy(buf, addr + 1, n - 2);
        buf[n - 2] = '\0';
        addr = buf;
    }
    ERR_set_mark();
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(addr);
    ERR_pop_to_mark(); /* "not an IP address" is an answer here, not an error */
    return ip;
}

/* Append one GEN_DNS / GEN_URI name (ia5 text) or a GEN_IPADD (ip, taken over). */
static int pki__san_push(GENERAL_NAMES *gens, int type, const char *text, ASN1_OCTET_STRING *ip)
{
    int rc = INE_OK;
    GENERAL_NAME *g = NULL;
    ASN1_IA5STRING *s = NULL;
    GUARD_OSSL((g = GENERAL_NAME_new()) != NULL, out);
    if (type == GEN_IPADD) {
        GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
        ip = NULL;
    } else {
        GUARD_OSSL((s = ASN1_IA5STRING_new()) != NULL, out);
        GUARD_OSSL(ASN1_STRING_set(s, text, (int)strlen(text)) == 1, out);
        GENERAL_NAME_set0_value(g, type, s);
        s = NULL;
    }
    GUARD_OSSL(sk_GENERAL_NAME_push(gens, g) > 0, out);
    g = NULL;
out:
    ASN1_OCTET_STRING_free(ip);
    ASN1_IA5STRING_free(s);
    GENERAL_NAME_free(g);
    return rc;
}

/* SANs built as objects, not configuration text, so an address or name can never smuggle in
 * extra entries. */
static int pki__add_san(X509 *x, const pki_issue_params *p, const char *plane)
{
    int rc = INE_OK;
    GENERAL_NAMES *gens = NULL;
    ASN1_OCTET_STRING *ip = pki__ip(p->address);
    char uri[160];
    GUARD_OSSL((gens = sk_GENERAL_NAME_new_null()) != NULL, out);
    if (ip) {
        rc = pki__san_push(gens, GEN_IPADD, NULL, ip);
        ip = NULL;
        if (rc < 0) goto out;
    } else {
        GUARD_GOTO(pki__san_push(gens, GEN_DNS, p->address, NULL), out);
    }
    if (p->name && pki__hostname_ok(p->name) && strcasecmp(p->name, p->address) != 0) {
        ASN1_OCTET_STRING *name_ip = pki__ip(p->name);
        int is_ip = name_ip != NULL;
        ASN1_OCTET_STRING_free(name_ip);
        if (!is_ip) GUARD_GOTO(pki__san_push(gens, GEN_DNS, p->name, NULL), out);
    }
    snprintf(uri, sizeof uri, "spiffe://%s/node/%u/%s", p->cluster_uid, (unsigned)p->node_uid, plane);
    GUARD_GOTO(pki__san_push(gens, GEN_URI, uri, NULL), out);
    GUARD_OSSL(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1, out);
out:
    ASN1_OCTET_STRING_free(ip);
    GENERAL_NAMES_free(gens);
    return rc;
}

int pki_issue_node(const pki_issue_params *p, const pki_cert *ca, const pki_key *ca_key,
                   pki_cert **cert_out, pki_key **key_out)
{
    int rc = INE_OK;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    *cert_out = NULL;
    *key_out = NULL;
    const char *plane = p->plane == PKI_PLANE_CONTROL ? "cp" : p->plane == PKI_PLANE_DATA ? "dp" : NULL;
    int64_t validity = p->validity_s ? p->validity_s : PKI_NODE_VALIDITY_DEFAULT;
    if (!plane) return ine_err(INE_EINVAL, "plane %d is neither control (1) nor data (2)", p->plane);
    if (validity < 0 || validity > 100 * 366 * 86400LL)
        return ine_err(INE_EINVAL, "certificate validity of %lld seconds is outside 1 s..100 years",
                       (long long)validity);
    if (!pki__uid_ok(p->cluster_uid))
        return ine_err(INE_EINVAL, "cluster uid must be 1-64 lowercase letters, digits, '.', '-' or '_'");
    if (!p->address || !*p->address)
        return ine_err(INE_EINVAL, "node %u has no address", (unsigned)p->node_uid);
    ASN1_OCTET_STRING *ip = pki__ip(p->address);
    int is_ip = ip != NULL;
    ASN1_OCTET_STRING_free(ip);
    if (!is_ip && !pki__hostname_ok(p->address))
        return ine_err(INE_EINVAL, "node address \"%.80s\" is neither an IP literal nor a host name", p->address);
    if (EVP_PKEY_eq(ca_key->k, X509_get0_pubkey(ca->x)) != 1) {
        ERR_clear_error();
        return ine_err(INE_EINVAL, "the CA key does not match the CA certificate");
    }
    int64_t ca_not_after = 0;
    GUARD(pki__time_unix(X509_get0_notAfter(ca->x), &ca_not_after));
    if (ca_not_after <= p->now)
        return ine_err(INE_EINVAL, "the cluster CA has expired; renew it before issuing certificates");
    int64_t not_after = p->now + validity;
    if (not_after > ca_not_after) not_after = ca_not_after; /* never outlive the CA */

    char cn[4 * PKI__CN_MAX + 8];
    char name[4 * PKI__CN_MAX + 1];
    if (p->name && *p->name) {
        /* Cut the name, not the plane suffix: "<name> cp" must still say which plane. */
        pki__cn_cut(p->name, name, PKI__CN_MAX - 3);
    } else {
        snprintf(name, sizeof name, "node-%u", (unsigned)p->node_uid);
    }
    snprintf(cn, sizeof cn, "%s %s", name, plane);

    GUARD_GOTO(pki__rsa_keygen(PKI_NODE_KEY_BITS, &key), out);
    GUARD_GOTO(pki__new_cert(key, p->now - PKI_BACKDATE_S, not_after, &x), out);
    GUARD_GOTO(pki__set_subject(x, cn, p->cluster_uid), out);
    GUARD_OSSL(X509_set_issuer_name(x, X509_get_subject_name(ca->x)) == 1, out);
    GUARD_GOTO(pki__add_ext(x, ca->x, NID_basic_constraints, "critical,CA:FALSE"), out);
    GUARD_GOTO(pki__add_ext(x, ca->x, NID_key_usage, "critical,digitalSignature,keyEncipherment"), out);
    GUARD_GOTO(pki__add_ext(x, ca->x, NID_ext_key_usage, "serverAuth,clientAuth"), out);
    GUARD_GOTO(pki__add_ext(x, ca->x, NID_subject_key_identifier, "hash"), out);
    GUARD_GOTO(pki__add_ext(x, ca->x, NID_authority_key_identifier, "keyid:always"), out);
    GUARD_GOTO(pki__add_san(x, p, plane), out);
    GUARD_OSSL(X509_sign(x, ca_key->k, EVP_sha256()) > 0, out);
    rc = pki__wrap_pair(&x, &key, cert_out, key_out);
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}
