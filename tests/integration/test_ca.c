/* test_ca.c — ine-ca end to end, through the real binaries: the cluster CA and every node
 * certificate examined through OpenSSL (and the openssl binary), keys unsealed with the data
 * dir's seal.key and matched to their certificates, nodes added and removed while it runs,
 * restarts that write nothing, two clusters with two CAs, no private key bytes in clear in the
 * LMDB file, and the refusals at start (unsafe seal.key, a second instance, bad arguments).
 * Rotation lives in test_ca_rotation.c, customer certificates in test_ca_upload.c. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cafixture.h"
#include "clock.h"
#include "err.h"
#include "pki.h"
#include "seal.h"
#include "testutil.h"

TestSuite(ca, .init = cf_setup, .fini = cf_teardown, .timeout = 300);

#define PLANE_CP INE__V1__PLANE__PLANE_CONTROL
#define PLANE_DP INE__V1__PLANE__PLANE_DATA

static int64_t unix_of(const ASN1_TIME *t)
{
    struct tm tm;
    cr_assert_eq(ASN1_TIME_to_tm(t, &tm), 1);
    return (int64_t)timegm(&tm);
}

/* The CaCreated event (exactly one is expected) and its certificate. */
static X509 *the_ca(uint64_t *seq)
{
    cf_recs r = cf_events(INE__V1__EVENT__BODY_CA_CREATED, 0);
    cr_assert_eq(r.n, 1, "exactly one CA, found %zu", r.n);
    X509 *ca = cf_x509(r.v[0].ev->ca_created->ca->cert_pem);
    if (seq) *seq = r.v[0].seq;
    cf_recs_free(&r);
    return ca;
}

static void check_ca_profile(X509 *ca, int64_t created)
{
    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca, NID_basic_constraints, &crit, NULL);
    cr_assert_not_null(bc);
    cr_assert(bc->ca, "CA:TRUE");
    cr_assert_eq(crit, 1, "basicConstraints is critical");
    cr_assert_not_null(bc->pathlen);
    cr_assert_eq(ASN1_INTEGER_get(bc->pathlen), 0, "pathlen:0");
    BASIC_CONSTRAINTS_free(bc);
    cr_assert(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN, "keyCertSign");
    cr_assert_eq(X509_check_issued(ca, ca), X509_V_OK, "self-issued");
    cr_assert_eq(X509_verify(ca, X509_get0_pubkey(ca)), 1, "self-signed");
    cr_assert(EVP_PKEY_is_a(X509_get0_pubkey(ca), "RSA"));
    cr_assert_eq(EVP_PKEY_get_bits(X509_get0_pubkey(ca)), 2048, "--ca-key-bits 2048");
    int64_t nb = unix_of(X509_get0_notBefore(ca)), na = unix_of(X509_get0_notAfter(ca));
    cr_assert(llabs(nb + PKI_BACKDATE_S - created) <= 60, "notBefore %lld vs created %lld", (long long)nb, (long long)created);
    cr_assert_geq(na - nb, 3652 * CF_DAY, "a CA lives years (10 by default): %lld days", (long long)((na - nb) / CF_DAY));
    cr_assert_not_null(X509_get0_subject_key_id(ca));
}

/* Every SAN of a node certificate: the address as IP or DNS, and exactly the one URI identity. */
static void check_sans(X509 *x, const char *uid, uint32_t node, int plane, const char *addr)
{
    GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    unsigned char ip[16];
    int iplen = inet_pton(AF_INET, addr, ip) == 1 ? 4 : inet_pton(AF_INET6, addr, ip) == 1 ? 16 : 0;
    char want_uri[256];
    int uris = 0, addr_seen = 0;
    snprintf(want_uri, sizeof want_uri, "spiffe://%s/node/%u/%s", uid, node, plane == PLANE_CP ? "cp" : "dp");
    cr_assert_not_null(g, "node %u: no subjectAltName", node);
    for (int i = 0; i < sk_GENERAL_NAME_num(g); i++) {
        const GENERAL_NAME *n = sk_GENERAL_NAME_value(g, i);
        if (n->type == GEN_URI) {
            uris++;
            cr_assert_str_eq((const char *)ASN1_STRING_get0_data(n->d.uniformResourceIdentifier), want_uri);
        } else if (n->type == GEN_IPADD) {
            cr_assert_neq(iplen, 0, "node %u (%s) has an IP SAN", node, addr);
            cr_assert_eq(ASN1_STRING_length(n->d.iPAddress), iplen);
            cr_assert_arr_eq(ASN1_STRING_get0_data(n->d.iPAddress), ip, (size_t)iplen);
            addr_seen = 1;
        } else if (n->type == GEN_DNS) {
            const char *dns = (const char *)ASN1_STRING_get0_data(n->d.dNSName);
            if (!strcmp(dns, addr)) addr_seen = 1;
        }
    }
    cr_assert_eq(uris, 1, "node %u: exactly one URI SAN", node);
    cr_assert(addr_seen, "node %u: its address %s is in the SANs", node, addr);
    GENERAL_NAMES_free(g);
}

/* The node certificate profile of the issue, seen through OpenSSL only. */
static void check_node_profile(X509 *x, X509 *ca, const char *uid, uint32_t node, int plane, const char *addr,
                               int64_t issued)
{
    EVP_PKEY *pub = X509_get0_pubkey(x);
    cr_assert(EVP_PKEY_is_a(pub, "RSA"), "node %u: RSA", node);
    cr_assert_eq(EVP_PKEY_get_bits(pub), 2048, "node %u: RSA-2048", node);
    cr_assert_eq(X509_get_version(x), X509_VERSION_3);
    int64_t nb = unix_of(X509_get0_notBefore(x)), na = unix_of(X509_get0_notAfter(x));
    cr_assert_eq(na - nb, 90 * CF_DAY + PKI_BACKDATE_S, "node %u: exactly 90 days plus the backdate, got %lld s", node,
                 (long long)(na - nb));
    cr_assert(llabs(nb + PKI_BACKDATE_S - issued) <= 60, "node %u: notBefore is issuance minus the backdate", node);
    cr_assert_leq(na, unix_of(X509_get0_notAfter(ca)), "never outlives the CA");
    cr_assert_eq(X509_check_ca(x), 0, "not a CA");
    cr_assert_eq(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
    uint32_t xku = X509_get_extended_key_usage(x);
    cr_assert((xku & XKU_SSL_SERVER) && (xku & XKU_SSL_CLIENT), "EKU serverAuth + clientAuth");
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x), *aki = X509_get0_authority_key_id(x);
    cr_assert_not_null(ski, "SKI");
    cr_assert_not_null(aki, "AKI");
    cr_assert_eq(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(ca)), 0, "AKI is the CA's key id");
    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    cr_assert(!BN_is_negative(serial) && BN_num_bits(serial) <= 128 && BN_num_bits(serial) > 64,
              "a random 128-bit serial: %d bits", BN_num_bits(serial));
    BN_free(serial);
    cr_assert_eq(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(ca)), 0);
    cr_assert_eq(X509_verify(x, X509_get0_pubkey(ca)), 1, "signed by the CA");
    cr_assert(cf_chains_to(x, NULL, ca, ine_clock_now()), "chains to the CA");
    check_sans(x, uid, node, plane, addr);
}

/* `openssl verify` (the real binary) of a certificate against the CA, for both TLS roles. */
static void openssl_verify(X509 *ca, X509 *leaf)
{
    char *ca_pem = cf_pem(ca, NULL), *leaf_pem = cf_pem(leaf, NULL);
    char *ca_path = cf_write("ca.pem", ca_pem), *leaf_path = cf_write("leaf.pem", leaf_pem);
    const char *purposes[] = {"sslserver", "sslclient"};
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"/usr/bin/openssl", "verify", "-purpose", (char *)purposes[i], "-CAfile", ca_path, leaf_path, NULL};
        char *out, *err;
        cr_assert_eq(tu_run(argv, NULL, &out, &err), 0, "openssl verify: %s %s", out, err);
        cr_assert(strstr(out, ": OK"), "%s", out);
        free(out);
        free(err);
    }
    free(ca_pem); free(leaf_pem); free(ca_path); free(leaf_path);
}

Test(ca, issues_the_cluster_ca_and_every_node_certificate_to_profile)
{
    const char *addrs[] = {"127.0.0.1", "::1", "node3.example.com"};
    char uid[64];
    snprintf(uid, sizeof uid, "%s", cf_cluster("prod", "127.0.0.1,::1,node3.example.com"));
    pid_t ca_pid = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0, 6, CF_WAIT_S), 6, "%s", cf_ca_log());

    uint64_t ca_seq;
    X509 *ca = the_ca(&ca_seq);
    cf_recs cae = cf_events(INE__V1__EVENT__BODY_CA_CREATED, 0);
    check_ca_profile(ca, cae.v[0].ev->time_us / INE_USEC_PER_SEC);
    cr_assert_str_eq(cae.v[0].ev->ca_created->reason, "initial");
    cf_recs_free(&cae);
    EVP_PKEY *ca_key = cf_unseal_key(ca_seq);
    cr_assert_eq(X509_check_private_key(ca, ca_key), 1, "the sealed CA key is the CA's");
    EVP_PKEY_free(ca_key);

    cf_recs r = cf_events(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0);
    cr_assert_eq(r.n, 6);
    char *serials[6];
    int seen[4][3] = {{0}};
    for (size_t i = 0; i < r.n; i++) {
        const Ine__V1__CertificateIssued *ci = r.v[i].ev->certificate_issued;
        cr_assert(ci->node_uid >= 1 && ci->node_uid <= 3 && (ci->plane == PLANE_CP || ci->plane == PLANE_DP));
        seen[ci->node_uid][ci->plane]++;
        cr_assert_eq(ci->source, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED);
        cr_assert_eq(ci->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL);
        X509 *x = cf_x509(ci->cert->cert_pem);
        check_node_profile(x, ca, uid, ci->node_uid, ci->plane, addrs[ci->node_uid - 1],
                           r.v[i].ev->time_us / INE_USEC_PER_SEC);
        openssl_verify(ca, x);
        /* The sealed key opens with the seal key and this event's purpose, and is this cert's. */
        EVP_PKEY *k = cf_unseal_key(r.v[i].seq);
        cr_assert_eq(X509_check_private_key(x, k), 1, "node %u: key matches", ci->node_uid);
        cr_assert_eq(EVP_PKEY_eq(k, X509_get0_pubkey(x)), 1);
        EVP_PKEY_free(k);
        serials[i] = ci->cert->serial_hex;
        for (size_t j = 0; j < i; j++) cr_assert_str_neq(serials[j], serials[i], "serials are unique");
        X509_free(x);
    }
    for (int n = 1; n <= 3; n++) cr_assert(seen[n][1] == 1 && seen[n][2] == 1, "node %d: one cert per plane", n);
    cf_recs_free(&r);

    /* Status shows them all, and never a key. */
    char *out, *err;
    cr_assert_eq(cf_inectl(&out, &err, "--json", "status", "certificates", NULL), 0, "%s", err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert_not_null(j, "%s: %s", je.text, out);
    cr_assert_eq(json_array_size(json_object_get(j, "certificates")), 6);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "certificates"), i, c) {
        cr_assert_str_eq(json_string_value(json_object_get(c, "source")), "self_signed");
        cr_assert_str_eq(json_string_value(json_object_get(c, "reason")), "initial");
        cr_assert_geq(json_integer_value(json_object_get(c, "days_left")), 89);
    }
    cr_assert_null(strstr(out, "PRIVATE"));
    json_decref(j);
    free(out);
    free(err);
    cr_assert_eq(cf_inectl(&out, &err, "status", "certificates", NULL), 0, "%s", err);
    cr_assert(strstr(out, "CLUSTER CA  serial"), "%s", out);
    cr_assert_null(strstr(out, "PRIVATE"));
    free(out);
    free(err);

    cr_assert_eq(cf_ca_stop(ca_pid), 0, "ine-ca exits cleanly on SIGTERM: %s", cf_ca_log());
    cr_assert_eq(cf_verify(), 0);
    X509_free(ca);
}

Test(ca, a_node_added_later_gets_its_pair_and_a_removed_node_gets_nothing)
{
    char uid[64];
    snprintf(uid, sizeof uid, "%s", cf_cluster("grow", "127.0.0.1,127.0.0.2"));
    pid_t ca_pid = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0, 4, CF_WAIT_S), 4, "%s", cf_ca_log());
    X509 *ca = the_ca(NULL);

    /* Another process adds a node: ine-ca follows the log and issues its pair. */
    uint64_t added = cf_append_node(3, "node3.example.com");
    cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, added, 2, CF_WAIT_S), 2, "%s", cf_ca_log());
    cf_recs r = cf_events(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, added);
    cr_assert_eq(r.n, 2);
    for (size_t i = 0; i < r.n; i++) {
        const Ine__V1__CertificateIssued *ci = r.v[i].ev->certificate_issued;
        cr_assert_eq(ci->node_uid, 3, "only the new node gets certificates");
        X509 *x = cf_x509(ci->cert->cert_pem);
        check_node_profile(x, ca, uid, 3, ci->plane, "node3.example.com", r.v[i].ev->time_us / INE_USEC_PER_SEC);
        X509_free(x);
    }
    cr_assert_eq(cf_count_issued(3, PLANE_CP, 0), 1);
    cr_assert_eq(cf_count_issued(3, PLANE_DP, 0), 1);
    cf_recs_free(&r);

    /* Node 2 leaves: nothing new for it, not in a rotation, not in the status. */
    uint64_t removed = cf_append_node_removed(2);
    char *out, *err;
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    free(out);
    free(err);
    cf_barrier(9);
    cf_recs rot = cf_events(INE__V1__EVENT__BODY_CERTIFICATES_ROTATED, removed);
    cr_assert_eq(rot.n, 1);
    cr_assert_eq(rot.v[0].ev->certificates_rotated->certificates, 4, "nodes 1 and 3, two planes each");
    cf_recs_free(&rot);
    cr_assert_eq(cf_count_issued(2, 0, removed), 0, "a removed node gets no certificate");
    cr_assert_eq(cf_count_issued(1, 0, removed), 2);
    cr_assert_eq(cf_count_issued(3, 0, removed), 2);

    proj_state st;
    cf_state(&st);
    cr_assert_null(proj_cert_find(&st, 2, PLANE_CP), "a removed node's certificates are not current");
    cr_assert_null(proj_cert_find(&st, 2, PLANE_DP));
    static const uint32_t live[] = {1, 3, 9};
    for (size_t k = 0; k < 3; k++)
        for (int p = PLANE_CP; p <= PLANE_DP; p++)
            cr_assert_not_null(proj_cert_find(&st, live[k], p), "node %u plane %d", live[k], p);
    proj_free(&st);

    cr_assert_eq(cf_inectl(&out, &err, "--json", "status", "certificates", NULL), 0, "%s", err);
    json_t *j = json_loads(out, 0, NULL), *c;
    size_t i;
    cr_assert_not_null(j, "%s", out);
    cr_assert_eq(json_array_size(json_object_get(j, "certificates")), 6, "%s", out);
    json_array_foreach(json_object_get(j, "certificates"), i, c)
        cr_assert_neq(json_integer_value(json_object_get(c, "node")), 2, "node 2 is gone from the status");
    json_decref(j);
    free(out);
    free(err);
    cr_assert_eq(cf_ca_stop(ca_pid), 0, "%s", cf_ca_log());
    X509_free(ca);
}

Test(ca, a_restart_creates_no_second_ca_and_no_new_certificates)
{
    cf_cluster("again", "127.0.0.1,127.0.0.2,127.0.0.3");
    pid_t ca_pid = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0, 6, CF_WAIT_S), 6, "%s", cf_ca_log());
    cr_assert_eq(cf_ca_stop(ca_pid), 0, "%s", cf_ca_log());
    uint64_t last = cf_last_seq();
    size_t len_before;
    char *before = cf_log_bytes(&len_before);

    /* SIGTERM, then SIGKILL: neither restart writes anything on its own. */
    for (int round = 0; round < 2; round++) {
        ca_pid = cf_ca_start(NULL);
        char *out, *err;
        cr_assert_eq(cf_inectl(&out, &err, "status", "certificates", NULL), 0, "%s", err);
        free(out);
        free(err);
        uint64_t b = cf_barrier(10 + (uint32_t)round);
        /* Only the barrier node's NodeAdded and its two certificates are new. */
        cr_assert_eq(cf_last_seq(), b + 2, "round %d: the restart wrote something else:\n%s", round, cf_ca_log());
        cr_assert_eq(cf_count(INE__V1__EVENT__BODY_CA_CREATED, 0), 1, "no second CA");
        for (uint32_t n = 1; n <= 3; n++) cr_assert_eq(cf_count_issued(n, 0, last + 1), 0, "node %u got nothing new", n);
        if (round == 0) cr_assert_eq(cf_ca_stop(ca_pid), 0, "%s", cf_ca_log());
        else cf_kill(ca_pid);
    }
    /* The records before the restarts are untouched. */
    size_t len_after;
    char *after = cf_log_bytes(&len_after);
    evlog_t *log;
    char *lp = tu_path(cf_dd, "log");
    evlog_opts o = {.read_only = 1};
    cr_assert_eq(evlog_open(lp, &o, &log), INE_OK);
    for (uint64_t s = 1; s <= last; s++) {
        uint8_t *raw;
        size_t rl;
        cr_assert_eq(evlog_read_raw(log, s, &raw, &rl), INE_OK);
        cr_assert(tu_contains(before, len_before, raw, rl) && tu_contains(after, len_after, raw, rl));
        free(raw);
    }
    evlog_close(log);
    free(lp);
    free(before);
    free(after);
    cr_assert_eq(cf_verify(), 0);
}

Test(ca, two_clusters_never_share_a_ca)
{
    char uid1[64], uid2[64];
    char *dd1 = cf_dd, *dd2 = tu_path(cf_dir, "node-b");
    snprintf(uid1, sizeof uid1, "%s", cf_cluster("alpha", "127.0.0.1"));
    pid_t p1 = cf_ca_start(NULL);
    cf_dd = dd2;
    snprintf(uid2, sizeof uid2, "%s", cf_cluster("beta", "127.0.0.1"));
    pid_t p2 = cf_ca_start(NULL);
    cr_assert_str_neq(uid1, uid2);

    X509 *ca[2], *leaf[2];
    char *dds[2] = {dd1, dd2};
    for (int k = 0; k < 2; k++) {
        cf_dd = dds[k];
        cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0, 2, CF_WAIT_S), 2, "%s", cf_ca_log());
        ca[k] = the_ca(NULL);
        cf_recs r = cf_events(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0);
        leaf[k] = cf_x509(r.v[0].ev->certificate_issued->cert->cert_pem);
        cf_recs_free(&r);
    }
    cr_assert_neq(EVP_PKEY_eq(X509_get0_pubkey(ca[0]), X509_get0_pubkey(ca[1])), 1, "two CA keys");
    cr_assert_neq(X509_NAME_cmp(X509_get_subject_name(ca[0]), X509_get_subject_name(ca[1])), 0);
    int64_t now = ine_clock_now();
    cr_assert(cf_chains_to(leaf[0], NULL, ca[0], now) && cf_chains_to(leaf[1], NULL, ca[1], now));
    cr_assert_not(cf_chains_to(leaf[0], NULL, ca[1], now), "cluster a's node is not trusted by cluster b");
    cr_assert_not(cf_chains_to(leaf[1], NULL, ca[0], now));
    check_sans(leaf[0], uid1, 1, PLANE_CP, "127.0.0.1");
    cf_dd = dd1;
    cr_assert_eq(cf_ca_stop(p1), 0);
    cr_assert_eq(cf_ca_stop(p2), 0);
    for (int k = 0; k < 2; k++) {
        X509_free(ca[k]);
        X509_free(leaf[k]);
    }
    free(dd2);
}

/* Every window of `len` bytes (step `len`) of the secret, the whole secret, and "PRIVATE KEY". */
static void assert_absent(const char *what, const char *hay, size_t hlen, const uint8_t *der, size_t dlen)
{
    cr_assert_not(tu_contains(hay, hlen, der, dlen), "%s holds a whole key", what);
    for (size_t off = 0; off + 24 <= dlen; off += 24)
        cr_assert_not(tu_contains(hay, hlen, der + off, 24), "%s holds key bytes %zu..%zu", what, off, off + 24);
    cr_assert_not(tu_contains(hay, hlen, der + dlen - 24, 24), "%s holds the key's last bytes", what);
    cr_assert_not(tu_contains(hay, hlen, "PRIVATE KEY", 11), "%s holds a PEM key", what);
}

Test(ca, no_private_key_bytes_in_clear_in_the_lmdb_file)
{
    cf_cluster("secret", "127.0.0.1,127.0.0.2");
    pid_t ca_pid = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0, 4, CF_WAIT_S), 4, "%s", cf_ca_log());
    /* A customer key goes through the same path: upload one, and rotate once for more keys. */
    cf_chain ch;
    char *crt, *key, *out, *err;
    cf_chain_make(&ch, (cf_chain_spec){.levels = 2});
    cf_chain_files(&ch, "cust", &crt, &key);
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "set", "internal", "cpine_certificate_file", crt,
                           "cpine_key_file", key, NULL), 0, "%s", err);
    free(out); free(err);
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    free(out); free(err);
    char *status = NULL;
    cr_assert_eq(cf_inectl(&status, &err, "--json", "status", "certificates", NULL), 0, "%s", err);
    free(err);
    cr_assert_eq(cf_ca_stop(ca_pid), 0, "%s", cf_ca_log());

    size_t flen;
    char *file = cf_log_bytes(&flen), *calog = cf_ca_log();
    cf_recs all = cf_events(0, 0);
    size_t keys = 0;
    for (size_t i = 0; i < all.n; i++) {
        int bc = all.v[i].ev->body_case;
        if (bc != INE__V1__EVENT__BODY_CA_CREATED && bc != INE__V1__EVENT__BODY_CERTIFICATE_ISSUED &&
            bc != INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED)
            continue;
        size_t dlen;
        uint8_t *der = cf_unseal_der(all.v[i].seq, &dlen);
        cr_assert_gt(dlen, 600, "an RSA-2048 PKCS#8 key");
        assert_absent("data.mdb", file, flen, der, dlen);
        assert_absent("ine-ca's log", calog, strlen(calog), der, dlen);
        assert_absent("status", status, strlen(status), der, dlen);
        seal_free_secret(der, dlen);
        keys++;
    }
    /* CA + 4 initial + upload + 2 rotated data-plane certs (customer ones are never rotated). */
    cr_assert_eq(keys, 8, "keys checked: %zu", keys);
    /* Nor the customer's key file's PEM lines. */
    char *kpem = tu_read_file(key, NULL);
    for (char *save = NULL, *line = strtok_r(kpem, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        if (line[0] != '-')
            cr_assert_not(tu_contains(file, flen, line, strlen(line)), "a line of the key PEM is in data.mdb");
    free(kpem);
    cf_recs_free(&all);
    free(file); free(calog); free(status); free(crt); free(key);
    cf_chain_free(&ch);
}

Test(ca, refuses_a_seal_key_others_can_read_with_one_clear_line)
{
    cf_cluster("perm", "127.0.0.1");
    char *kp = tu_path(cf_dd, "seal.key"), *out;
    cr_assert_eq(chmod(kp, 0644), 0);
    uint64_t before = cf_last_seq();
    int rc = cf_ca_run(&out, "--ca-key-bits", "2048", NULL);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "ine-ca: cannot start") && strstr(out, "0644"), "%s", out);
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line: %s", out);
    /* The CA came with the cluster (inectl cluster create); ine-ca wrote nothing. */
    cr_assert_eq(cf_count(INE__V1__EVENT__BODY_CA_CREATED, 0), 1, "only the CA of cluster create");
    cr_assert_eq(cf_last_seq(), before, "nothing was written");
    free(out);
    /* With the mode fixed it starts. */
    cr_assert_eq(chmod(kp, 0600), 0);
    pid_t p = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0, 2, CF_WAIT_S), 2, "%s", cf_ca_log());
    cr_assert_eq(cf_ca_stop(p), 0);
    free(kp);
}

Test(ca, a_second_instance_on_the_same_data_dir_is_refused)
{
    cf_cluster("solo", "127.0.0.1");
    pid_t p = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 0, 2, CF_WAIT_S), 2, "%s", cf_ca_log());
    uint64_t last = cf_last_seq();
    char *out, *err;
    int rc = cf_ca_run(&out, NULL);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "already running"), "%s", out);
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line: %s", out);
    free(out);
    /* The first one still serves, and nothing was written. */
    cr_assert_eq(cf_inectl(&out, &err, "status", "certificates", NULL), 0, "%s", err);
    free(out);
    free(err);
    cr_assert_eq(cf_last_seq(), last);
    cr_assert_eq(cf_ca_stop(p), 0);
}

Test(ca, bad_arguments_and_no_cluster)
{
    char *out;
    cf_cluster("args", "127.0.0.1");
    cr_assert_eq(cf_ca_run(&out, "--check-interval", "0", NULL), 2, "%s", out);
    cr_assert(strstr(out, "--check-interval"), "%s", out);
    free(out);
    cr_assert_eq(cf_ca_run(&out, "--ca-key-bits", "1024", NULL), 2, "%s", out);
    cr_assert(strstr(out, "--ca-key-bits"), "%s", out);
    free(out);
    cr_assert_eq(cf_ca_run(&out, "surplus", NULL), 2, "%s", out);
    free(out);
    cr_assert_eq(cf_ca_run(&out, "--help", NULL), 0, "%s", out);
    cr_assert(strstr(out, "usage: ine-ca"), "%s", out);
    free(out);
    /* A data dir without a cluster: a clear refusal, not a crash. */
    char *saved = cf_dd;
    cf_dd = tu_path(cf_dir, "empty");
    int rc = cf_ca_run(&out, NULL);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "cannot start"), "%s", out);
    free(out);
    free(cf_dd);
    cf_dd = saved;
    /* inectl without a running ine-ca says so. */
    char *err;
    cr_assert_eq(cf_inectl(&out, &err, "status", "certificates", NULL), 1);
    cr_assert(strstr(err, "ine-ca is not running"), "%s", err);
    free(out);
    free(err);
}
