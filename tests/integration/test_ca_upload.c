/* test_ca_upload.c — customer certificates through `inectl cluster certificate set internal`
 * and a running ine-ca: every upload rule refused with its [CODE] and the log byte-for-byte
 * unchanged, 3-level chains, one certificate for both planes or one per plane, customer
 * certificates never rotated (manually or on schedule) and copied to a node added later, the
 * trust bundle after an upload, and the fallback to self-signed certificates 5 days before a
 * customer certificate expires (whole-process clock moved with libfaketime). Every fixture is
 * made at test time with plain OpenSSL calls (tests/cafixture.c). */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "cafixture.h"
#include "clock.h"
#include "err.h"
#include "testutil.h"

TestSuite(upload, .init = cf_setup, .fini = cf_teardown, .timeout = 300);

#define PLANE_CP INE__V1__PLANE__PLANE_CONTROL
#define PLANE_DP INE__V1__PLANE__PLANE_DATA
#define EV_ISSUED INE__V1__EVENT__BODY_CERTIFICATE_ISSUED
#define EV_UPLOADED INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED
#define EV_ROTATED INE__V1__EVENT__BODY_CERTIFICATES_ROTATED
#define EV_FALLBACK INE__V1__EVENT__BODY_CUSTOMER_EXPIRY_FALLBACK

static pid_t cluster_with_certs(const char *nodes, size_t n_nodes)
{
    cf_cluster("cust", nodes);
    pid_t p = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(EV_ISSUED, 0, 2 * n_nodes, CF_WAIT_S), 2 * n_nodes, "%s", cf_ca_log());
    return p;
}

/* `inectl cluster certificate set internal` with the files given (NULL: that keyword left out). */
static int set_internal(char **out, char **err, const char *cp_crt, const char *cp_key, const char *dp_crt,
                        const char *dp_key)
{
    const char *kw[4] = {"cpine_certificate_file", "cpine_key_file", "dpine_certificate_file", "dpine_key_file"};
    const char *files[4] = {cp_crt, cp_key, dp_crt, dp_key};
    char *a[8] = {0};
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (files[i]) {
            a[n++] = (char *)kw[i];
            a[n++] = (char *)files[i];
        }
    return cf_inectl(out, err, "cluster", "certificate", "set", "internal", a[0], a[1], a[2], a[3], a[4], a[5], a[6],
                     a[7], NULL);
}

static char *fingerprint(X509 *x)
{
    unsigned char md[32];
    unsigned int len = 0;
    char *hex = calloc(65, 1);
    cr_assert_eq(X509_digest(x, EVP_sha256(), md, &len), 1);
    for (unsigned i = 0; i < len; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    return hex;
}

/* The upload is refused naming its rule and code, and the log is byte-for-byte unchanged. */
static void refused(const char *rule, const char *code, const char *cp_crt, const char *cp_key, const char *dp_crt,
                    const char *dp_key)
{
    size_t l1, l2;
    uint64_t last = cf_last_seq();
    char *before = cf_log_bytes(&l1), *out, *err, tag[64];
    int rc = set_internal(&out, &err, cp_crt, cp_key, dp_crt, dp_key);
    cr_assert_neq(rc, 0, "accepted (%d) where '%s' should refuse it: %s", rc, rule, out);
    cr_assert(strstr(err, rule), "expected '%s' in: %s", rule, err);
    snprintf(tag, sizeof tag, "[%s]", code);
    cr_assert(!*code || strstr(err, tag), "expected %s in: %s", tag, err);
    cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
    cr_assert_null(strstr(err, "PRIVATE"), "%s", err);
    char *after = cf_log_bytes(&l2);
    cr_assert_eq(cf_last_seq(), last, "%s: the last seq moved", rule);
    cr_assert_eq(l1, l2, "%s: data.mdb changed size", rule);
    cr_assert_eq(memcmp(before, after, l1), 0, "%s: data.mdb changed", rule);
    free(before);
    free(after);
    free(out);
    free(err);
}

/* A certificate file holding `leaf` and then `chain...` (NULL-terminated). */
static char *crt_file(const char *name, X509 *leaf, ...)
{
    BIO *b = BIO_new(BIO_s_mem());
    va_list ap;
    va_start(ap, leaf);
    for (X509 *x = leaf; x; x = va_arg(ap, X509 *)) cr_assert_eq(PEM_write_bio_X509(b, x), 1);
    va_end(ap);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *text = strndup(data, (size_t)n), *path = cf_write(name, text);
    free(text);
    BIO_free(b);
    return path;
}

static char *key_file(const char *name, EVP_PKEY *k, const char *pass)
{
    char *pem = cf_key_pem(k, pass), *path = cf_write(name, pem);
    free(pem);
    return path;
}

Test(upload, every_rule_is_checked_before_anything_is_written)
{
    pid_t p = cluster_with_certs("127.0.0.1,127.0.0.2", 2);
    int64_t now = ine_clock_now();
    cf_chain good, ec;
    char *good_crt, *good_key, *ec_crt, *ec_key;
    cf_chain_make(&good, (cf_chain_spec){.levels = 2});
    cf_chain_files(&good, "good", &good_crt, &good_key);
    cf_chain_make(&ec, (cf_chain_spec){.levels = 2, .ec_leaf = 1});
    cf_chain_files(&ec, "ec", &ec_crt, &ec_key);
    EVP_PKEY *other = EVP_RSA_gen(2048), *foreign_key = EVP_RSA_gen(2048);
    cr_assert(other && foreign_key);
    /* Variants of the good leaf: same key, same root, one thing wrong each. */
    X509 *expired = cf_cert("ine.customer.example", good.leaf_key, good.root, good.root_key, 0, CF_SERVER | CF_CLIENT,
                            now - 30 * CF_DAY, now - CF_DAY);
    X509 *future = cf_cert("ine.customer.example", good.leaf_key, good.root, good.root_key, 0, CF_SERVER | CF_CLIENT,
                           now + CF_DAY, now + 90 * CF_DAY);
    X509 *server_only = cf_cert("ine.customer.example", good.leaf_key, good.root, good.root_key, 0, CF_SERVER,
                                now - CF_DAY, now + 90 * CF_DAY);
    X509 *client_only = cf_cert("ine.customer.example", good.leaf_key, good.root, good.root_key, 0, CF_CLIENT,
                                now - CF_DAY, now + 90 * CF_DAY);
    /* Signed with SHA-1 (issue #22: accepted before), and with 3 days left (inside the 5-day
     * fallback window: accepted, then replaced seconds later). */
    X509 *sha1 = cf_cert("ine.customer.example", good.leaf_key, good.root, good.root_key, 0, CF_SERVER | CF_CLIENT,
                         now - CF_DAY, now + 90 * CF_DAY);
    cr_assert_gt(X509_sign(sha1, good.root_key, EVP_sha1()), 0);
    X509 *short_lived = cf_cert("ine.customer.example", good.leaf_key, good.root, good.root_key, 0, CF_SERVER | CF_CLIENT,
                                now - 30 * CF_DAY, now + 3 * CF_DAY);
    /* A root with the right name but another key: the leaf does not verify under it. */
    X509 *foreign_root = cf_cert("Customer Root CA", foreign_key, NULL, NULL, 1, 0, now - CF_DAY, now + 3650 * CF_DAY);

    char *leaf_only = crt_file("leaf-only.crt", good.leaf, NULL);
    char *expired_crt = crt_file("expired.crt", expired, good.root, NULL);
    char *future_crt = crt_file("future.crt", future, good.root, NULL);
    char *server_crt = crt_file("server-only.crt", server_only, good.root, NULL);
    char *client_crt = crt_file("client-only.crt", client_only, good.root, NULL);
    char *foreign_crt = crt_file("foreign.crt", good.leaf, foreign_root, NULL);
    char *extra_crt = crt_file("extra.crt", good.leaf, good.root, foreign_root, NULL);
    char *self_crt = crt_file("self.crt", good.root, NULL);
    char *sha1_crt = crt_file("sha1.crt", sha1, good.root, NULL);
    char *short_crt = crt_file("short-lived.crt", short_lived, good.root, NULL);
    char *other_key = key_file("other.key", other, NULL);
    char *enc_key = key_file("encrypted.key", good.leaf_key, "s3cret passphrase");
    char *garbage = cf_write("garbage.pem", "this is not a certificate\n");
    char *bad_pem = cf_write("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAAnotDER=\n-----END CERTIFICATE-----\n");
    char *missing = tu_path(cf_dir, "does-not-exist.crt");

    refused("does not parse", "CERT_PARSE", garbage, good_key, NULL, NULL);
    refused("does not parse", "CERT_PARSE", bad_pem, good_key, NULL, NULL);
    refused("chain is missing", "CERT_NO_CHAIN", leaf_only, good_key, NULL, NULL);
    refused("chain is missing", "CERT_NO_CHAIN", self_crt, good_key, NULL, NULL);
    refused("is not RSA", "KEY_NOT_RSA", ec_crt, ec_key, NULL, NULL);
    refused("does not match", "KEY_MISMATCH", good_crt, other_key, NULL, NULL);
    refused("does not verify", "CHAIN_INVALID", foreign_crt, good_key, NULL, NULL);
    refused("not on the leaf's chain", "CHAIN_INVALID", extra_crt, good_key, NULL, NULL);
    refused("has expired", "CERT_EXPIRED", expired_crt, good_key, NULL, NULL);
    refused("not yet valid", "CERT_NOT_YET_VALID", future_crt, good_key, NULL, NULL);
    refused("lacks clientAuth", "CERT_EKU", server_crt, good_key, NULL, NULL);
    refused("lacks serverAuth", "CERT_EKU", client_crt, good_key, NULL, NULL);
    refused("encrypted with a passphrase", "KEY_ENCRYPTED", good_crt, enc_key, NULL, NULL);
    refused("is signed with SHA1", "CERT_WEAK_SIGNATURE", sha1_crt, good_key, NULL, NULL);
    refused("would be replaced at once", "CERT_EXPIRES_SOON", short_crt, good_key, NULL, NULL);
    refused("would be replaced at once", "CERT_EXPIRES_SOON", NULL, NULL, short_crt, good_key);
    refused("does not parse", "KEY_PARSE", good_crt, garbage, NULL, NULL);
    /* The data plane's rule, through the dpine_* keywords. */
    refused("has expired", "CERT_EXPIRED", NULL, NULL, expired_crt, good_key);
    /* All or nothing: a good control-plane certificate is not applied with a bad data-plane one. */
    refused("data-plane certificate", "CERT_EXPIRED", good_crt, good_key, expired_crt, good_key);
    refused("is not RSA", "KEY_NOT_RSA", good_crt, good_key, ec_crt, ec_key);
    /* Refused by inectl itself before ine-ca is asked: still nothing written. */
    refused("cannot read", "", missing, good_key, NULL, NULL);
    refused("go together", "", good_crt, NULL, NULL, NULL);
    cr_assert_eq(cf_count(EV_UPLOADED, 0), 0);

    /* The same files, fixed, are accepted: the refusals were about the rule, not the plumbing. */
    char *out, *err;
    cr_assert_eq(set_internal(&out, &err, good_crt, good_key, NULL, NULL), 0, "%s", err);
    cr_assert(strstr(out, "customer certificate set for the control plane"), "%s", out);
    free(out); free(err);
    cr_assert_eq(cf_count(EV_UPLOADED, 0), 1);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());

    X509_free(sha1); X509_free(short_lived);
    X509_free(expired); X509_free(future); X509_free(server_only); X509_free(client_only); X509_free(foreign_root);
    EVP_PKEY_free(other); EVP_PKEY_free(foreign_key);
    cf_chain_free(&good); cf_chain_free(&ec);
    char *paths[] = {good_crt, good_key, ec_crt, ec_key, leaf_only, expired_crt, future_crt, server_crt, client_crt,
                     foreign_crt, extra_crt, self_crt, other_key, enc_key, garbage, bad_pem, missing, sha1_crt, short_crt};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) free(paths[i]);
}

/* From `inectl --json status certificates`: source, reason and fingerprint of one node/plane. */
typedef struct {
    char source[32], reason[48], fingerprint[65];
} slot_status;

static int status_of(uint32_t node, const char *plane, slot_status *s)
{
    char *out, *err;
    json_t *c;
    size_t i;
    int found = 0;
    cr_assert_eq(cf_inectl(&out, &err, "--json", "status", "certificates", NULL), 0, "%s", err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "%s", out);
    json_array_foreach(json_object_get(j, "certificates"), i, c) {
        if ((uint32_t)json_integer_value(json_object_get(c, "node")) != node ||
            strcmp(json_string_value(json_object_get(c, "plane")), plane))
            continue;
        snprintf(s->source, sizeof s->source, "%s", json_string_value(json_object_get(c, "source")));
        snprintf(s->reason, sizeof s->reason, "%s", json_string_value(json_object_get(c, "reason")));
        snprintf(s->fingerprint, sizeof s->fingerprint, "%s", json_string_value(json_object_get(c, "fingerprint_sha256")));
        found = 1;
    }
    json_decref(j);
    free(out);
    free(err);
    return found;
}

static void assert_slot(uint32_t node, const char *plane, const char *source, const char *reason, const char *fp)
{
    slot_status s;
    cr_assert(status_of(node, plane, &s), "node %u %s is in the status", node, plane);
    cr_assert_str_eq(s.source, source, "node %u %s", node, plane);
    if (reason) cr_assert_str_eq(s.reason, reason, "node %u %s", node, plane);
    if (fp) cr_assert_str_eq(s.fingerprint, fp, "node %u %s", node, plane);
}

Test(upload, a_three_level_chain_for_one_plane_is_served_everywhere_and_never_rotated)
{
    pid_t p = cluster_with_certs("127.0.0.1,127.0.0.2", 2);
    cf_chain ch;
    char *crt, *key, *out, *err;
    cf_chain_make(&ch, (cf_chain_spec){.levels = 3});
    cf_chain_files(&ch, "three", &crt, &key);
    char *leaf_fp = fingerprint(ch.leaf), *root_fp = fingerprint(ch.root);
    uint64_t from = cf_last_seq() + 1;
    cr_assert_eq(set_internal(&out, &err, crt, key, NULL, NULL), 0, "%s", err);
    free(out); free(err);

    /* One event, carrying the leaf, its chain, the root, and the key sealed. */
    cf_recs up = cf_events(EV_UPLOADED, from);
    cr_assert_eq(up.n, 1);
    const Ine__V1__CustomerCertificateUploaded *cu = up.v[0].ev->customer_certificate_uploaded;
    cr_assert_eq(cu->n_planes, 1);
    cr_assert_eq(cu->planes[0], PLANE_CP);
    cr_assert_str_eq(cu->cert->fingerprint_sha256, leaf_fp);
    cr_assert_str_eq(cu->cert->root_fingerprint_sha256, root_fp);
    char *mid_pem = cf_pem(ch.mid, NULL), *root_pem = cf_pem(ch.root, NULL);
    cr_assert(strstr(cu->cert->chain_pem, mid_pem) && strstr(cu->cert->chain_pem, root_pem), "chain kept");
    cr_assert_str_eq(cu->root_pem, root_pem);
    X509 *leaf = cf_x509(cu->cert->cert_pem);
    cr_assert(cf_chains_to(leaf, cu->cert->chain_pem, ch.root, ine_clock_now()));
    X509_free(leaf);
    EVP_PKEY *k = cf_unseal_key(up.v[0].seq);
    cr_assert_eq(EVP_PKEY_eq(k, ch.leaf_key), 1, "the sealed key is the uploaded one");
    EVP_PKEY_free(k);
    cf_recs_free(&up);
    for (uint32_t n = 1; n <= 2; n++) {
        assert_slot(n, "control", "customer", "customer_upload", leaf_fp);
        assert_slot(n, "data", "self_signed", "initial", NULL);
    }

    /* A manual rotation replaces the data plane only. */
    from = cf_last_seq() + 1;
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    free(out); free(err);
    cf_recs rot = cf_events(EV_ROTATED, from);
    cr_assert_eq(rot.n, 1);
    cr_assert_eq(rot.v[0].ev->certificates_rotated->certificates, 2, "two data-plane certificates");
    cf_recs_free(&rot);
    for (uint32_t n = 1; n <= 2; n++) {
        cr_assert_eq(cf_count_issued(n, PLANE_CP, from), 0, "customer certificates are never rotated");
        cr_assert_eq(cf_count_issued(n, PLANE_DP, from), 1);
        assert_slot(n, "control", "customer", "customer_upload", leaf_fp);
        assert_slot(n, "data", "self_signed", "manual", NULL);
    }

    /* A node added later serves the customer's certificate and key on that plane. */
    uint64_t added = cf_append_node(3, "127.0.0.3");
    cr_assert_eq(cf_wait_count(EV_ISSUED, added, 2, CF_WAIT_S), 2, "%s", cf_ca_log());
    cf_recs iss = cf_events(EV_ISSUED, added);
    for (size_t i = 0; i < iss.n; i++) {
        const Ine__V1__CertificateIssued *ci = iss.v[i].ev->certificate_issued;
        cr_assert_eq(ci->node_uid, 3);
        if (ci->plane == PLANE_CP) {
            cr_assert_eq(ci->source, INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER);
            cr_assert_str_eq(ci->cert->fingerprint_sha256, leaf_fp);
            EVP_PKEY *k3 = cf_unseal_key(iss.v[i].seq);
            cr_assert_eq(EVP_PKEY_eq(k3, ch.leaf_key), 1);
            EVP_PKEY_free(k3);
        } else {
            cr_assert_eq(ci->source, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED);
        }
    }
    cf_recs_free(&iss);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());

    /* Thirty days on, the schedule replaces the data plane only. */
    from = cf_last_seq() + 1;
    p = cf_ca_start("+721h");
    cr_assert_eq(cf_wait_count(EV_ROTATED, from, 1, CF_WAIT_S), 1, "%s", cf_ca_log());
    rot = cf_events(EV_ROTATED, from);
    cr_assert_eq(rot.v[0].ev->certificates_rotated->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_SCHEDULED);
    cr_assert_eq(rot.v[0].ev->certificates_rotated->certificates, 3);
    cf_recs_free(&rot);
    for (uint32_t n = 1; n <= 3; n++) {
        cr_assert_eq(cf_count_issued(n, PLANE_CP, from), 0, "node %u: the customer certificate stays", n);
        assert_slot(n, "control", "customer", "customer_upload", leaf_fp);
        assert_slot(n, "data", "self_signed", "scheduled", NULL);
    }
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    cr_assert_eq(cf_verify(), 0);
    free(mid_pem); free(root_pem); free(leaf_fp); free(root_fp); free(crt); free(key);
    cf_chain_free(&ch);
}

Test(upload, one_certificate_for_both_planes_or_one_per_plane_and_the_trust_bundle)
{
    pid_t p = cluster_with_certs("127.0.0.1,127.0.0.2", 2);
    cf_chain a, b, c;
    char *a_crt, *a_key, *b_crt, *b_key, *c_crt, *c_key, *out, *err;
    cf_chain_make(&a, (cf_chain_spec){.levels = 2});
    cf_chain_make(&b, (cf_chain_spec){.levels = 2});
    cf_chain_make(&c, (cf_chain_spec){.levels = 3});
    cf_chain_files(&a, "a", &a_crt, &a_key);
    cf_chain_files(&b, "b", &b_crt, &b_key);
    cf_chain_files(&c, "c", &c_crt, &c_key);
    char *a_fp = fingerprint(a.leaf), *a_root = fingerprint(a.root);

    /* The same files for both planes: one certificate serving both. */
    uint64_t from = cf_last_seq() + 1;
    cr_assert_eq(set_internal(&out, &err, a_crt, a_key, a_crt, a_key), 0, "%s", err);
    cr_assert(strstr(out, "control and data planes"), "%s", out);
    free(out); free(err);
    cf_recs up = cf_events(EV_UPLOADED, from);
    cr_assert_eq(up.n, 1, "one upload event");
    cr_assert_eq(up.v[0].ev->customer_certificate_uploaded->n_planes, 2);
    cf_recs_free(&up);
    for (uint32_t n = 1; n <= 2; n++) {
        assert_slot(n, "control", "customer", "customer_upload", a_fp);
        assert_slot(n, "data", "customer", "customer_upload", a_fp);
    }

    /* End to end, once: the projection's bundle now holds the customer root as current and the
     * cluster CA root as retiring (no node has activated the customer certificate yet). */
    proj_state st;
    cf_state(&st);
    const proj_root *cust = proj_bundle_find(&st, a_root), *ca = proj_bundle_find(&st, st.ca.cert.fingerprint);
    cr_assert_not_null(cust, "the customer root is in the bundle");
    cr_assert_eq(cust->state, PROJ_ROOT_CURRENT);
    cr_assert_eq(cust->kind, PROJ_ROOT_CUSTOMER);
    cr_assert_not_null(ca, "the cluster CA root stays in the bundle");
    cr_assert_eq(ca->state, PROJ_ROOT_RETIRING);
    cr_assert_eq(ca->kind, PROJ_ROOT_CLUSTER_CA);
    proj_free(&st);

    /* Two different certificates: one event each, one plane each. */
    from = cf_last_seq() + 1;
    cr_assert_eq(set_internal(&out, &err, b_crt, b_key, c_crt, c_key), 0, "%s", err);
    free(out); free(err);
    up = cf_events(EV_UPLOADED, from);
    cr_assert_eq(up.n, 2, "two upload events");
    char *b_fp = fingerprint(b.leaf), *c_fp = fingerprint(c.leaf);
    for (size_t i = 0; i < up.n; i++) {
        const Ine__V1__CustomerCertificateUploaded *cu = up.v[i].ev->customer_certificate_uploaded;
        cr_assert_eq(cu->n_planes, 1);
        cr_assert_str_eq(cu->cert->fingerprint_sha256, cu->planes[0] == PLANE_CP ? b_fp : c_fp);
        EVP_PKEY *k = cf_unseal_key(up.v[i].seq);
        cr_assert_eq(EVP_PKEY_eq(k, cu->planes[0] == PLANE_CP ? b.leaf_key : c.leaf_key), 1);
        EVP_PKEY_free(k);
    }
    cf_recs_free(&up);
    for (uint32_t n = 1; n <= 2; n++) {
        assert_slot(n, "control", "customer", "customer_upload", b_fp);
        assert_slot(n, "data", "customer", "customer_upload", c_fp);
    }
    cf_state(&st);
    cr_assert_eq(proj_bundle_find(&st, b_fp) ? 1 : 0, 0, "leaves are not roots");
    char *b_root = fingerprint(b.root), *c_root = fingerprint(c.root);
    cr_assert(proj_bundle_find(&st, b_root) && proj_bundle_find(&st, b_root)->state == PROJ_ROOT_CURRENT);
    cr_assert(proj_bundle_find(&st, c_root) && proj_bundle_find(&st, c_root)->state == PROJ_ROOT_CURRENT);
    proj_free(&st);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    free(a_fp); free(a_root); free(b_fp); free(c_fp); free(b_root); free(c_root);
    free(a_crt); free(a_key); free(b_crt); free(b_key); free(c_crt); free(c_key);
    cf_chain_free(&a); cf_chain_free(&b); cf_chain_free(&c);
}

Test(upload, falls_back_to_self_signed_5_days_before_the_customer_certificate_expires)
{
    pid_t p = cluster_with_certs("127.0.0.1,127.0.0.2", 2);
    int64_t now = ine_clock_now();
    cf_chain ch;
    char *crt, *key, *out, *err;
    cf_chain_make(&ch, (cf_chain_spec){.levels = 2, .nb = now - CF_DAY, .na = now + 10 * CF_DAY});
    cf_chain_files(&ch, "short", &crt, &key);
    char *leaf_fp = fingerprint(ch.leaf);
    cr_assert_eq(set_internal(&out, &err, crt, key, crt, key), 0, "%s", err);
    free(out); free(err);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());

    /* 6 days left, then 5 days and 1 hour left: nothing. */
    const char *early[] = {"+4d", "+119h"};
    for (int i = 0; i < 2; i++) {
        p = cf_ca_start(early[i]);
        cf_barrier(20 + (uint32_t)i);
        cr_assert_eq(cf_count(EV_FALLBACK, 0), 0, "no fallback at %s:\n%s", early[i], cf_ca_log());
        assert_slot(20 + (uint32_t)i, "control", "customer", "customer_upload", leaf_fp);
        cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    }

    /* 5 days left: one fallback per plane, self-signed certificates for every live node. */
    uint64_t from = cf_last_seq() + 1;
    p = cf_ca_start("+5d");
    cr_assert_eq(cf_wait_count(EV_FALLBACK, from, 2, CF_WAIT_S), 2, "%s", cf_ca_log());
    cr_assert_eq(cf_wait_count(EV_ROTATED, from, 2, CF_WAIT_S), 2, "%s", cf_ca_log());
    cf_recs fb = cf_events(EV_FALLBACK, from);
    X509 *ca;
    {
        cf_recs cae = cf_events(INE__V1__EVENT__BODY_CA_CREATED, 0);
        ca = cf_x509(cae.v[0].ev->ca_created->ca->cert_pem);
        cf_recs_free(&cae);
    }
    unsigned planes = 0;
    const uint32_t nodes[] = {1, 2, 20, 21};
    for (size_t i = 0; i < fb.n; i++) {
        const Ine__V1__CustomerExpiryFallback *f = fb.v[i].ev->customer_expiry_fallback;
        planes |= 1u << f->plane;
        cr_assert_str_eq(f->customer_fingerprint_sha256, leaf_fp);
        cr_assert_eq(f->customer_not_after, now + 10 * CF_DAY);
        /* Its rotation: one CertificatesRotated, one new certificate per live node. */
        cf_recs rot = cf_events(EV_ROTATED, from);
        size_t done = 0;
        for (size_t r = 0; r < rot.n; r++)
            if (!strcmp(rot.v[r].ev->certificates_rotated->rotation_id, f->rotation_id)) {
                done++;
                cr_assert_eq(rot.v[r].ev->certificates_rotated->reason,
                             INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_EXPIRY_FALLBACK);
                cr_assert_eq(rot.v[r].ev->certificates_rotated->certificates, 4, "certificates = %u for 4 issued",
                             rot.v[r].ev->certificates_rotated->certificates);
            }
        cf_recs_free(&rot);
        cr_assert_eq(done, 1, "fallback %s completed once", f->rotation_id);
        cf_recs iss = cf_events(EV_ISSUED, from);
        for (size_t n = 0; n < 4; n++) {
            size_t got = 0;
            for (size_t k = 0; k < iss.n; k++) {
                const Ine__V1__CertificateIssued *ci = iss.v[k].ev->certificate_issued;
                if (ci->node_uid != nodes[n] || ci->plane != f->plane) continue;
                got++;
                cr_assert_str_eq(ci->rotation_id, f->rotation_id);
                cr_assert_eq(ci->source, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED);
                cr_assert_eq(ci->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_EXPIRY_FALLBACK);
                X509 *x = cf_x509(ci->cert->cert_pem);
                cr_assert(cf_chains_to(x, NULL, ca, ci->cert->not_before + 60), "under the cluster CA");
                X509_free(x);
            }
            cr_assert_eq(got, 1, "node %u plane %d", nodes[n], f->plane);
        }
        cf_recs_free(&iss);
    }
    cr_assert_eq(planes, (1u << PLANE_CP) | (1u << PLANE_DP), "one fallback per plane");
    cf_recs_free(&fb);
    for (size_t n = 0; n < 4; n++) {
        assert_slot(nodes[n], "control", "self_signed", "customer_expiry_fallback", NULL);
        assert_slot(nodes[n], "data", "self_signed", "customer_expiry_fallback", NULL);
    }

    /* Uploading the same short-lived certificate again is refused (issue #22): it is inside the
     * fallback window, so it would be replaced at once. Its own error code; nothing changes. */
    from = cf_last_seq() + 1;
    cr_assert_neq(set_internal(&out, &err, crt, key, crt, key), 0, "a certificate with 5 days left was accepted");
    cr_assert(strstr(err, "[CERT_EXPIRES_SOON]") && strstr(err, "would be replaced at once"), "%s", err);
    free(out); free(err);
    cr_assert_eq(cf_last_seq(), from - 1, "the refused upload changed the log");
    for (size_t n = 0; n < 4; n++) {
        assert_slot(nodes[n], "control", "self_signed", "customer_expiry_fallback", NULL);
        assert_slot(nodes[n], "data", "self_signed", "customer_expiry_fallback", NULL);
    }

    /* A new upload is accepted at any time, and is not replaced. */
    cf_chain fresh;
    char *f_crt, *f_key;
    cf_chain_make(&fresh, (cf_chain_spec){.levels = 2});
    cf_chain_files(&fresh, "fresh", &f_crt, &f_key);
    cr_assert_eq(set_internal(&out, &err, f_crt, f_key, NULL, NULL), 0, "%s", err);
    free(out); free(err);
    char *fresh_fp = fingerprint(fresh.leaf);
    cf_barrier(30);
    cr_assert_eq(cf_count(EV_FALLBACK, 0), 2, "no further fallback:\n%s", cf_ca_log());
    assert_slot(1, "control", "customer", "customer_upload", fresh_fp);
    assert_slot(30, "control", "customer", "customer_upload", fresh_fp);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    cr_assert_eq(cf_verify(), 0);
    X509_free(ca);
    free(leaf_fp); free(fresh_fp); free(crt); free(key); free(f_crt); free(f_key);
    cf_chain_free(&ch);
    cf_chain_free(&fresh);
}
