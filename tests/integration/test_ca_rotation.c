/* test_ca_rotation.c — ine-ca's rotations end to end: the 30-day schedule with the whole
 * process's clock moved by libfaketime (29 days 23 hours: nothing; 30 days 1 hour: everything,
 * at start and on the timer of a running CA), rotated certificates that never outlive the CA,
 * manual rotation of all or one plane, idempotent retries by request id (across a restart too),
 * and SIGKILL in the middle of a 40-node rotation and at random moments: each node/plane keeps
 * its old or its new certificate and the next start finishes the job without duplicates. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cafixture.h"
#include "clock.h"
#include "err.h"
#include "testutil.h"

TestSuite(rotation, .init = cf_setup, .fini = cf_teardown, .timeout = 400);

#define PLANE_CP INE__V1__PLANE__PLANE_CONTROL
#define PLANE_DP INE__V1__PLANE__PLANE_DATA
#define EV_ISSUED INE__V1__EVENT__BODY_CERTIFICATE_ISSUED
#define EV_ROTATED INE__V1__EVENT__BODY_CERTIFICATES_ROTATED
#define EV_REQUESTED INE__V1__EVENT__BODY_ROTATION_REQUESTED
/* Key generation for many nodes on a loaded 2-core machine: more than the usual minute. */
#define BIG_WAIT_S(n_nodes) (CF_WAIT_S + 2 * (int)(n_nodes))

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static X509 *ca_cert(void)
{
    cf_recs r = cf_events(INE__V1__EVENT__BODY_CA_CREATED, 0);
    cr_assert_eq(r.n, 1, "exactly one CA");
    X509 *x = cf_x509(r.v[0].ev->ca_created->ca->cert_pem);
    cf_recs_free(&r);
    return x;
}

static int64_t not_after_of(X509 *x)
{
    struct tm tm;
    cr_assert_eq(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
    return (int64_t)timegm(&tm);
}

/* Create a cluster of `nodes`, run ine-ca until each has both certificates; returns its pid. */
static pid_t cluster_with_certs(const char *nodes, size_t n_nodes)
{
    cf_cluster("rot", nodes);
    pid_t p = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(EV_ISSUED, 0, 2 * n_nodes, BIG_WAIT_S(n_nodes)), 2 * n_nodes, "%s", cf_ca_log());
    return p;
}

/* The CertificatesRotated events for a rotation id. */
static size_t rotated_count(const char *rid)
{
    cf_recs r = cf_events(EV_ROTATED, 0);
    size_t n = 0;
    for (size_t i = 0; i < r.n; i++) n += !strcmp(r.v[i].ev->certificates_rotated->rotation_id, rid);
    cf_recs_free(&r);
    return n;
}

/* For every node in 1..n_nodes and every plane in `planes` (bit 1 cp, bit 2 dp): exactly one
 * CertificateIssued with this rotation id and reason; none for other planes; each current
 * certificate is that one and chains to the CA. */
static void assert_rotation_complete(const char *rid, uint32_t n_nodes, unsigned planes, int reason)
{
    cf_recs r = cf_events(EV_ISSUED, 0);
    size_t *count = calloc((n_nodes + 1) * 3, sizeof *count);
    for (size_t i = 0; i < r.n; i++) {
        const Ine__V1__CertificateIssued *ci = r.v[i].ev->certificate_issued;
        if (strcmp(ci->rotation_id, rid)) continue;
        cr_assert(ci->node_uid >= 1 && ci->node_uid <= n_nodes, "node %u", ci->node_uid);
        cr_assert_eq(ci->reason, reason);
        count[ci->node_uid * 3 + ci->plane]++;
    }
    cf_recs_free(&r);
    cr_assert_eq(rotated_count(rid), 1, "exactly one CertificatesRotated for %s", rid);
    proj_state st;
    cf_state(&st);
    X509 *ca = ca_cert();
    for (uint32_t n = 1; n <= n_nodes; n++)
        for (int p = PLANE_CP; p <= PLANE_DP; p++) {
            size_t want = (planes >> p) & 1;
            cr_assert_eq(count[n * 3 + p], want, "node %u plane %d: %zu certificates for %s", n, p, count[n * 3 + p], rid);
            const proj_cert *c = proj_cert_find(&st, n, p);
            cr_assert_not_null(c, "node %u plane %d has a certificate", n, p);
            if (want) cr_assert_str_eq(c->rotation_id, rid, "node %u plane %d serves the new certificate", n, p);
            /* Checked at its issuance: the CA may have run with a moved clock. */
            X509 *x = cf_x509(c->cert.cert_pem);
            cr_assert(cf_chains_to(x, NULL, ca, c->cert.not_before + 60), "node %u plane %d chains to the CA", n, p);
            X509_free(x);
        }
    X509_free(ca);
    proj_free(&st);
    free(count);
}

/* The rotation id of the only rotation event of `type` at or after `from`. */
static char *only_rotation_id(int type, uint64_t from)
{
    cf_recs r = cf_events(type, from);
    cr_assert_eq(r.n, 1, "%zu events of type %d from %llu", r.n, type, (unsigned long long)from);
    char *rid = strdup(type == EV_ROTATED ? r.v[0].ev->certificates_rotated->rotation_id
                                          : r.v[0].ev->rotation_requested->rotation_id);
    cf_recs_free(&r);
    return rid;
}

Test(rotation, scheduled_at_30_days_not_at_29_and_a_ca_down_for_weeks_catches_up_at_start)
{
    pid_t p = cluster_with_certs("127.0.0.1,127.0.0.2,127.0.0.3", 3);
    cr_assert_eq(cf_ca_stop(p), 0);
    uint64_t initial_end = cf_last_seq();

    /* 29 days 23 hours later: nothing is old enough. */
    p = cf_ca_start("+719h");
    cf_barrier(20);
    cr_assert_eq(cf_count(EV_ROTATED, 0), 0, "nothing rotates before 30 days:\n%s", cf_ca_log());
    for (uint32_t n = 1; n <= 3; n++) cr_assert_eq(cf_count_issued(n, 0, initial_end + 1), 0);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());

    /* 30 days 1 hour: every certificate of nodes 1-3 at once; the barrier node's are 2 hours old. */
    uint64_t from = cf_last_seq() + 1;
    p = cf_ca_start("+721h");
    cr_assert_eq(cf_wait_count(EV_ROTATED, from, 1, CF_WAIT_S), 1, "%s", cf_ca_log());
    char *rid = only_rotation_id(EV_ROTATED, from);
    cf_recs r = cf_events(EV_ROTATED, from);
    const Ine__V1__CertificatesRotated *cr = r.v[0].ev->certificates_rotated;
    cr_assert_eq(cr->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_SCHEDULED);
    cr_assert_eq(cr->certificates, 6);
    cr_assert_eq(r.v[0].ev->time_us / INE_USEC_PER_SEC - ine_clock_now() > 720 * 3600 - 60, 1, "written at the moved time");
    cf_recs_free(&r);
    assert_rotation_complete(rid, 3, 6, INE__V1__ISSUE_REASON__ISSUE_REASON_SCHEDULED);
    cr_assert_eq(cf_count_issued(20, 0, from), 0, "a young certificate is kept");
    /* The new certificates are young: the timer finds nothing more to do. */
    cf_barrier(21);
    cr_assert_eq(cf_count(EV_ROTATED, 0), 1, "no second rotation:\n%s", cf_ca_log());
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    cr_assert_eq(cf_verify(), 0);
    free(rid);
}

Test(rotation, the_timer_rotates_while_the_ca_runs)
{
    cf_cluster("tick", "127.0.0.1,127.0.0.2");
    char *ft = cf_write("faketime.txt", "+0\n");
    pid_t p = cf_ca_start_ftfile(ft);
    cr_assert_eq(cf_wait_count(EV_ISSUED, 0, 4, CF_WAIT_S), 4, "%s", cf_ca_log());
    cf_barrier(20);
    cr_assert_eq(cf_count(EV_ROTATED, 0), 0);
    uint64_t from = cf_last_seq() + 1;
    /* Move the running process's clock: no event arrives, only the check timer can act. The
     * file is replaced whole (libfaketime rereads it on every call and must never see it empty). */
    char *tmp = cf_write("faketime.tmp", "+721h\n");
    cr_assert_eq(rename(tmp, ft), 0);
    free(tmp);
    cr_assert_eq(cf_wait_count(EV_ROTATED, from, 1, CF_WAIT_S), 1, "%s", cf_ca_log());
    char *rid = only_rotation_id(EV_ROTATED, from);
    cr_assert_eq(cf_count_issued(1, 0, from), 2);
    cr_assert_eq(cf_count_issued(2, 0, from), 2);
    cr_assert_eq(cf_count_issued(20, 0, from), 2, "the barrier node's certificates were 30 days old too");
    cf_recs r = cf_events(EV_ROTATED, from);
    cr_assert_eq(r.v[0].ev->certificates_rotated->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_SCHEDULED);
    cr_assert_eq(r.v[0].ev->certificates_rotated->certificates, 6);
    cf_recs_free(&r);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    free(rid);
    free(ft);
}

Test(rotation, rotated_certificates_never_outlive_the_ca)
{
    pid_t p = cluster_with_certs("127.0.0.1", 1);
    cr_assert_eq(cf_ca_stop(p), 0);
    X509 *ca = ca_cert();
    int64_t ca_na = not_after_of(ca);
    uint64_t from = cf_last_seq() + 1;
    /* 3600 days on, the 10-year CA has about 52 days left: less than a node certificate's 90. */
    p = cf_ca_start("+3600d");
    cr_assert_eq(cf_wait_count(EV_ROTATED, from, 1, CF_WAIT_S), 1, "%s", cf_ca_log());
    cf_recs r = cf_events(EV_ISSUED, from);
    cr_assert_eq(r.n, 2);
    for (size_t i = 0; i < r.n; i++) {
        X509 *x = cf_x509(r.v[i].ev->certificate_issued->cert->cert_pem);
        cr_assert_eq(not_after_of(x), ca_na, "cut at the CA's notAfter");
        cr_assert(cf_chains_to(x, NULL, ca, ine_clock_now() + 3600 * CF_DAY), "valid then, under the CA");
        X509_free(x);
    }
    cf_recs_free(&r);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    X509_free(ca);
}

Test(rotation, manual_rotation_of_all_then_one_plane)
{
    pid_t p = cluster_with_certs("127.0.0.1,127.0.0.2,127.0.0.3", 3);
    char *out, *err;
    uint64_t from = cf_last_seq() + 1;
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "rotate", "all", NULL), 0, "%s", err);
    cr_assert(strstr(out, "rotation manual-") && strstr(out, "done"), "%s", out);
    free(out); free(err);
    char *rid = only_rotation_id(EV_REQUESTED, from);
    assert_rotation_complete(rid, 3, 6, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);
    cf_recs r = cf_events(EV_ROTATED, from);
    cr_assert_eq(r.v[0].ev->certificates_rotated->certificates, 6);
    cr_assert_eq(r.v[0].ev->certificates_rotated->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);
    cf_recs_free(&r);
    free(rid);

    /* One plane: the control plane's certificates only; the data plane's stay as they are. */
    proj_state before;
    cf_state(&before);
    from = cf_last_seq() + 1;
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "rotate", "ccs_internode_encryption", NULL), 0, "%s", err);
    free(out); free(err);
    rid = only_rotation_id(EV_REQUESTED, from);
    assert_rotation_complete(rid, 3, 1u << PLANE_CP, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);
    proj_state after;
    cf_state(&after);
    for (uint32_t n = 1; n <= 3; n++) {
        cr_assert_str_eq(proj_cert_find(&before, n, PLANE_DP)->cert.fingerprint,
                         proj_cert_find(&after, n, PLANE_DP)->cert.fingerprint, "node %u: data plane kept", n);
        cr_assert_str_neq(proj_cert_find(&before, n, PLANE_CP)->cert.fingerprint,
                          proj_cert_find(&after, n, PLANE_CP)->cert.fingerprint, "node %u: control plane new", n);
    }
    proj_free(&before);
    proj_free(&after);
    free(rid);
    from = cf_last_seq() + 1;
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "rotate", "data_internode_encryption", NULL), 0, "%s", err);
    free(out); free(err);
    rid = only_rotation_id(EV_REQUESTED, from);
    assert_rotation_complete(rid, 3, 1u << PLANE_DP, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);
    free(rid);

    /* A name that is not a plane is refused before anything is asked of ine-ca. */
    uint64_t last = cf_last_seq();
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "certificate", "rotate", "everything", NULL), 2);
    cr_assert(strstr(err, "unknown certificate 'everything'"), "%s", err);
    free(out); free(err);
    cr_assert_eq(cf_last_seq(), last);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
}

Test(rotation, a_retried_request_id_rotates_once_even_across_a_restart)
{
    pid_t p = cluster_with_certs("127.0.0.1,127.0.0.2", 2);
    uint64_t from = cf_last_seq() + 1;
    char *out1, *out2, *err;
    cr_assert_eq(cf_inectl_rid("retry-1", &out1, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    free(err);
    cr_assert_eq(cf_inectl_rid("retry-1", &out2, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    free(err);
    cr_assert_str_eq(out1, out2, "the retry answers with the same rotation and seq");
    free(out2);
    cr_assert_eq(cf_count(EV_REQUESTED, from), 1);
    cr_assert_eq(cf_count(EV_ROTATED, from), 1);
    cr_assert_eq(cf_count(EV_ISSUED, from), 4);
    char *rid = only_rotation_id(EV_ROTATED, from);
    assert_rotation_complete(rid, 2, 6, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);

    /* The request id is remembered by the log, not by the process. */
    cr_assert_eq(cf_ca_stop(p), 0);
    p = cf_ca_start(NULL);
    cr_assert_eq(cf_inectl_rid("retry-1", &out2, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    free(err);
    cr_assert_str_eq(out1, out2);
    free(out2);
    cr_assert_eq(cf_count(EV_ROTATED, from), 1, "still one rotation");
    cr_assert_eq(cf_count(EV_ISSUED, from), 4);
    /* Another id is another rotation. */
    cr_assert_eq(cf_inectl_rid("retry-2", &out2, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    cr_assert_str_neq(out1, out2);
    free(out2); free(err);
    cr_assert_eq(cf_count(EV_ROTATED, from), 2);
    cr_assert_eq(cf_count(EV_ISSUED, from), 8);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    free(out1);
    free(rid);
}

/* Start `inectl [--request-id rid] cluster certificate rotate` in the background. */
static pid_t rotate_async(const char *rid)
{
    char *bin = strdup(tu_bin("inectl"));
    char *argv[] = {bin, "--data-dir", cf_dd, "--request-id", (char *)rid, "cluster", "certificate", "rotate", NULL};
    pid_t pid = cf_spawn(argv);
    free(bin);
    return pid;
}

/* Every live node/plane in `want` (bit node*3+plane; NULL: all) has a current certificate that
 * chains to the CA; returns the slots served now (malloc'd bitmap of (n_nodes+1)*3 entries). */
static char *assert_slots_served(uint32_t n_nodes, const char *want)
{
    proj_state st;
    char *served = calloc((n_nodes + 1) * 3, 1);
    cf_state(&st);
    for (uint32_t n = 1; n <= n_nodes; n++)
        for (int p = PLANE_CP; p <= PLANE_DP; p++) served[n * 3 + p] = proj_cert_find(&st, n, p) != NULL;
    X509 *ca = st.ca.present ? ca_cert() : NULL;
    for (uint32_t n = 1; n <= n_nodes; n++)
        for (int p = PLANE_CP; p <= PLANE_DP; p++) {
            const proj_cert *c = proj_cert_find(&st, n, p);
            if (want && !want[n * 3 + p]) continue;
            cr_assert_not_null(c, "node %u plane %d lost its certificate", n, p);
            X509 *x = cf_x509(c->cert.cert_pem);
            cr_assert(cf_chains_to(x, NULL, ca, ine_clock_now()), "node %u plane %d chains to the CA", n, p);
            X509_free(x);
        }
    X509_free(ca);
    proj_free(&st);
    return served;
}

static void assert_every_slot_served(uint32_t n_nodes)
{
    char *all = malloc((n_nodes + 1) * 3);
    memset(all, 1, (n_nodes + 1) * 3);
    free(assert_slots_served(n_nodes, all));
    free(all);
}

Test(rotation, sigkill_in_the_middle_of_a_40_node_rotation_is_finished_by_the_next_start)
{
    char *nodes = cf_node_list(40);
    pid_t p = cluster_with_certs(nodes, 40);
    free(nodes);
    uint64_t from = cf_last_seq() + 1;
    pid_t cli = rotate_async("big-rotation");
    /* The request is recorded first; kill while the 80 keys are being made. */
    cr_assert_eq(cf_wait_count(EV_REQUESTED, from, 1, CF_WAIT_S), 1, "%s", cf_ca_log());
    cf_kill(p);
    cf_kill(cli);
    char *rid = only_rotation_id(EV_REQUESTED, from);
    cr_assert_eq(rotated_count(rid), 0, "killed mid-rotation (80 RSA keys take seconds)");
    cr_assert_eq(cf_count(EV_ISSUED, from), 0, "nothing half-written");
    cr_assert_eq(cf_verify(), 0);
    assert_every_slot_served(40);

    p = cf_ca_start(NULL);
    cr_assert_eq(cf_wait_count(EV_ROTATED, from, 1, BIG_WAIT_S(40)), 1, "%s", cf_ca_log());
    assert_rotation_complete(rid, 40, 6, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);
    cr_assert_eq(cf_count(EV_ISSUED, from), 80, "each node/plane exactly one new certificate");
    /* The operator's retry of the killed command finds it done, and rotates nothing more. */
    char *out, *err;
    cr_assert_eq(cf_inectl_rid("big-rotation", &out, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    cr_assert(strstr(out, rid), "%s", out);
    free(out); free(err);
    cr_assert_eq(cf_count(EV_ISSUED, from), 80);
    cr_assert_eq(rotated_count(rid), 1);
    cr_assert_eq(cf_verify(), 0);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
    free(rid);
}

Test(rotation, sigkill_at_random_moments_loses_and_duplicates_nothing)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    const uint32_t n_nodes = 8;
    char *nodes = cf_node_list((int)n_nodes);
    cr_log_info("random kill delays: seed %u", seed);
    srand(seed);
    cf_cluster("chaos", nodes);
    free(nodes);
    /* Round 0 kills during the initial issuance, the others during rotations. A slot served
     * before a kill is served after it, by its old or its new certificate. */
    char *served = calloc((n_nodes + 1) * 3, 1);
    for (int round = 0; round < 5; round++) {
        char rid[32];
        pid_t cli = 0, p = cf_ca_start(NULL);
        if (round > 0) {
            snprintf(rid, sizeof rid, "chaos-%d", round);
            cli = rotate_async(rid);
        }
        int delay = rand() % 1500;
        sleep_ms(delay);
        cf_kill(p);
        if (cli) cf_kill(cli);
        cr_assert_eq(cf_verify(), 0, "round %d (killed after %d ms)", round, delay);
        char *now_served = assert_slots_served(n_nodes, served);
        free(served);
        served = now_served;
    }
    free(served);
    /* The last start finishes whatever was recorded. */
    pid_t p = cf_ca_start(NULL);
    size_t requested = 0;
    for (int waited = 0; waited < BIG_WAIT_S(4 * n_nodes) * 1000; waited += 100) {
        requested = cf_count(EV_REQUESTED, 0);
        if (cf_count(EV_ROTATED, 0) == requested && cf_count_issued(n_nodes, PLANE_DP, 0) > 0) break;
        sleep_ms(100);
    }
    cf_barrier(50);
    cf_recs req = cf_events(EV_REQUESTED, 0);
    cr_log_info("%zu of 4 rotation requests were recorded before their kill", req.n);
    for (size_t i = 0; i < req.n; i++) {
        cr_assert_eq(req.v[i].ev->rotation_requested->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);
        /* Each recorded request: exactly one CertificatesRotated, each node/plane exactly one new cert. */
        cf_recs iss = cf_events(EV_ISSUED, 0);
        size_t per[9][3] = {{0}};
        for (size_t k = 0; k < iss.n; k++) {
            const Ine__V1__CertificateIssued *ci = iss.v[k].ev->certificate_issued;
            if (!strcmp(ci->rotation_id, req.v[i].ev->rotation_requested->rotation_id)) {
                cr_assert_leq(ci->node_uid, n_nodes);
                per[ci->node_uid][ci->plane]++;
            }
        }
        cf_recs_free(&iss);
        cr_assert_eq(rotated_count(req.v[i].ev->rotation_requested->rotation_id), 1, "seed %u", seed);
        for (uint32_t n = 1; n <= n_nodes; n++)
            for (int pl = PLANE_CP; pl <= PLANE_DP; pl++)
                cr_assert_eq(per[n][pl], 1, "seed %u: node %u plane %d got %zu for %s", seed, n, pl, per[n][pl],
                             req.v[i].ev->rotation_requested->rotation_id);
    }
    cf_recs_free(&req);
    /* The initial issuance happened at most once per node/plane, crash or not (a rotation that
     * came first may have given a node its first certificate). */
    cf_recs iss = cf_events(EV_ISSUED, 0);
    size_t initial[9][3] = {{0}};
    for (size_t k = 0; k < iss.n; k++)
        if (iss.v[k].ev->certificate_issued->reason == INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL &&
            iss.v[k].ev->certificate_issued->node_uid <= n_nodes)
            initial[iss.v[k].ev->certificate_issued->node_uid][iss.v[k].ev->certificate_issued->plane]++;
    cf_recs_free(&iss);
    for (uint32_t n = 1; n <= n_nodes; n++)
        for (int pl = PLANE_CP; pl <= PLANE_DP; pl++)
            cr_assert_leq(initial[n][pl], 1, "seed %u: node %u plane %d", seed, n, pl);
    cr_assert_eq(cf_count(INE__V1__EVENT__BODY_CA_CREATED, 0), 1, "seed %u: one CA", seed);
    assert_every_slot_served(n_nodes);
    cr_assert_eq(cf_verify(), 0);
    cr_assert_eq(cf_ca_stop(p), 0, "%s", cf_ca_log());
}
