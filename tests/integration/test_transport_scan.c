/* test_transport_scan.c — what a TLS scanner sees on port P: sslscan (given a node's
 * certificate, since P requires client certificates and sslscan counts a TLS 1.2 cipher as
 * accepted only when the whole handshake completes) reports TLS 1.2 and 1.3 only and exactly
 * the four suites, on both planes; an openssl s_client loop over every suite OpenSSL knows
 * agrees; renegotiation is refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

static cl_t c;

static void teardown(void) { cl_stop(&c); }
TestSuite(transport_scan, .fini = teardown, .timeout = 150);

static const char *four[] = {"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256",
                             "TLS_AES_256_GCM_SHA384"};

static int is_one_of_four(const char *s)
{
    for (size_t i = 0; i < 4; i++)
        if (!strcmp(s, four[i])) return 1;
    return 0;
}

/* sslscan against node 1's P with SNI `sni`, presenting cert/key; the report. */
static char *sslscan(const char *sni, const char *cert, const char *key)
{
    char *out = NULL;
    int rc = cl_sh(&out, 120, "/usr/bin/sslscan --no-colour --no-groups --no-heartbleed --sni-name=%s --certs=%s --pk=%s %s:%d", sni,
                   cert, key, cl_addr(1), c.port);
    cr_assert_eq(rc, 0, "sslscan failed: %s", out);
    return out;
}

/* The suites sslscan lists as accepted (lines "Preferred|Accepted  TLSv1.x  N bits  NAME"). */
static int accepted_suites(const char *report, char names[][64], char versions[][16], int max)
{
    int n = 0;
    for (const char *l = report; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char what[32], ver[16], name[64];
        int bits;
        if (sscanf(l, "%31s %15s %d bits %63s", what, ver, &bits, name) == 4 && (!strcmp(what, "Preferred") || !strcmp(what, "Accepted"))) {
            cr_assert_lt(n, max);
            snprintf(names[n], 64, "%s", name);
            snprintf(versions[n], 16, "%s", ver);
            n++;
        }
    }
    return n;
}

static void check_report(const char *report, const char *plane)
{
    char names[64][64], versions[64][16];
    int n = accepted_suites(report, names, versions, 64), seen[4] = {0};
    cr_log_info("sslscan (%s plane):\n%s", plane, report);
    cr_assert(strstr(report, "SSLv2     disabled"), "%s", report);
    cr_assert(strstr(report, "SSLv3     disabled"), "%s", report);
    cr_assert(strstr(report, "TLSv1.0   disabled"), "%s", report);
    cr_assert(strstr(report, "TLSv1.1   disabled"), "%s", report);
    cr_assert(strstr(report, "TLSv1.2   enabled"), "%s", report);
    cr_assert(strstr(report, "TLSv1.3   enabled"), "%s", report);
    cr_assert(strstr(report, "Session renegotiation not supported"), "%s", report);
    cr_assert_eq(n, 4, "sslscan accepted %d suites on the %s plane (expected the four):\n%s", n, plane, report);
    for (int i = 0; i < n; i++) {
        cr_assert(is_one_of_four(names[i]), "%s accepted %s", versions[i], names[i]);
        cr_assert_str_eq(versions[i], !strncmp(names[i], "TLS_", 4) ? "TLSv1.3" : "TLSv1.2", "%s over %s", names[i], versions[i]);
        for (int k = 0; k < 4; k++) seen[k] |= !strcmp(names[i], four[k]);
    }
    for (int k = 0; k < 4; k++) cr_assert(seen[k], "%s was not accepted on the %s plane", four[k], plane);
}

Test(transport_scan, sslscan_reports_tls12_and_tls13_and_exactly_the_four_suites)
{
    char *cp_cert, *cp_key, *dp_cert, *dp_key, *r;
    cl_start(&c, NULL);
    cp_cert = cl_path(&c, "n1-cp.pem");
    cp_key = cl_path(&c, "n1-cp.key");
    dp_cert = cl_path(&c, "n1-dp.pem");
    dp_key = cl_path(&c, "n1-dp.key");
    cl_export_cert(&c, 1, 1, cp_cert, cp_key);
    cl_export_cert(&c, 1, 2, dp_cert, dp_key);
    cr_assert_eq(access("/usr/bin/sslscan", X_OK), 0, "sslscan is installed by scripts/install-deps.sh");
    r = sslscan("control.ine", cp_cert, cp_key);
    check_report(r, "control");
    cr_assert(strstr(r, "Subject:  node:1 cp"), "SNI control.ine selects the control-plane certificate");
    free(r);
    r = sslscan("data.ine", dp_cert, dp_key);
    check_report(r, "data");
    cr_assert(strstr(r, "Subject:  node:1 dp"), "SNI data.ine selects the data-plane certificate");
    free(r);
    free(cp_cert);
    free(cp_key);
    free(dp_cert);
    free(dp_key);
    cl_finish(&c);
}

/* Every TLS 1.2 cipher an RSA certificate could serve (aRSA: 64 in OpenSSL 3.0, with
 * RSA/DHE/ECDHE key exchange, CBC, CCM, ChaCha20, ARIA, Camellia, NULL) and every TLS 1.3
 * suite, offered one at a time by openssl s_client with node 1's certificate (so a handshake
 * that completes means the suite is served): exactly the four complete, each on its protocol.
 * (ECDSA-, PSK- and SRP-only ciphers cannot be served with an RSA certificate at all.) */
Test(transport_scan, an_openssl_loop_over_every_suite_completes_only_the_four)
{
    char *cert, *key, *out = NULL;
    char ok[8][64];
    int n = 0, rc;
    cl_start(&c, NULL);
    cert = cl_path(&c, "n1-cp.pem");
    key = cl_path(&c, "n1-cp.key");
    cl_export_cert(&c, 1, 1, cert, key);
    rc = cl_sh(&out, 200,
               "n=0; for x in $(openssl ciphers 'aRSA:@SECLEVEL=0' | tr : ' '); do case $x in TLS_*) continue;; esac; "
               "n=$((n+1)); openssl s_client -connect %s:%d -servername control.ine -cert %s -key %s -tls1_2 -cipher \"$x:@SECLEVEL=0\" "
               "</dev/null >/dev/null 2>&1 && echo \"ok TLSv1.2 $x\"; done; "
               "for x in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256 TLS_AES_128_CCM_SHA256 "
               "TLS_AES_128_CCM_8_SHA256; do n=$((n+1)); openssl s_client -connect %s:%d -servername control.ine -cert %s -key %s "
               "-tls1_3 -ciphersuites $x </dev/null >/dev/null 2>&1 && echo \"ok TLSv1.3 $x\"; done; echo \"tried $n\"",
               cl_addr(1), c.port, cert, key, cl_addr(1), c.port, cert, key);
    cr_assert_eq(rc, 0, "%s", out);
    cr_log_info("openssl loop:\n%s", out);
    cr_assert(strstr(out, "tried "), "%s", out);
    cr_assert_gt(atoi(strstr(out, "tried ") + 6), 60, "the loop offered every suite");
    for (char *l = out; (l = strstr(l, "ok TLSv1.")); l++) {
        char ver[16], name[64];
        cr_assert_eq(sscanf(l, "ok %15s %63s", ver, name), 2);
        cr_assert_lt(n, 8, "too many suites completed:\n%s", out);
        cr_assert(is_one_of_four(name), "%s completed a handshake over %s", name, ver);
        cr_assert_str_eq(ver, !strncmp(name, "TLS_", 4) ? "TLSv1.3" : "TLSv1.2");
        snprintf(ok[n++], sizeof ok[0], "%s", name);
    }
    cr_assert_eq(n, 4, "exactly the four suites complete a handshake:\n%s", out);
    free(out);
    /* And without a client certificate no TLS 1.2 handshake completes at all, which is why a
     * scanner given no certificate sees only the TLS 1.3 suites (their ServerHello comes first). */
    rc = cl_sh(&out, 60, "openssl s_client -connect %s:%d -servername control.ine -tls1_2 </dev/null", cl_addr(1), c.port);
    cr_assert_neq(rc, 0, "a TLS 1.2 handshake without a client certificate completed:\n%s", out);
    free(out);
    free(cert);
    free(key);
    cl_finish(&c);
}
