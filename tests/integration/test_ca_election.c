/* test_ca_election.c — one ine-ca acts at a time under etcd, with real processes: three etcd
 * members, three nodes' mirrors and policies (tests/cpfix.h), an ine-ca on every node. The
 * initial certificates are issued once; a rotation asked on a standby's node completes; the
 * holder killed right after a rotation is recorded is replaced and the rotation completes once;
 * an append fenced on an ended holding writes nothing; and a rotation that takes longer than
 * the lease's TTL completes under one holder, which keeps its lease alive while it works. */
#include <criterion/criterion.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commit.h"
#include "cpfix.h"
#include "elect.h"
#include "err.h"
#include "etcd.h"
#include "svc.h"
#include "testutil.h"

static void setup(void) { cp_setup("127.0.0.1,127.0.0.2,127.0.0.3"); }

TestSuite(ca_election, .init = setup, .fini = cp_teardown, .timeout = 240);

Test(ca_election, one_ca_acts_and_a_holder_killed_mid_rotation_is_replaced_and_the_rotation_completes)
{
    enum { CERTS = CP_NODES * 2 };
    for (int i = 0; i < CP_NODES; i++) cp_start_ca(i, "2");
    for (int i = 0; i < CP_NODES; i++) cp_start_policy(i);
    /* Initial certificates, issued once although three CAs run. */
    cp_wait_count(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, CERTS);
    cp_sleep_ms(1500);
    cr_assert_eq(cp_count_all(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED), CERTS, "a certificate was issued twice");
    int h = cp_acting_ca(10000);
    cr_assert_geq(h, 0, "no ine-ca acts");
    {
        json_t *c, *j = cp_status_json((h + 2) % CP_NODES, &c);
        char want[64];
        snprintf(want, sizeof want, "node%d", h + 1);
        cr_assert(json_is_string(json_object_get(c, "ca_holder")) && strstr(json_string_value(json_object_get(c, "ca_holder")), want),
                  "status does not name the CA holder on node %d", h + 1);
        json_decref(j);
    }
    for (int i = 0; i < CP_NODES; i++)
        if (i != h) cr_assert_eq(cp_log_has(i, "ca", "acting as the cluster CA"), 0, "node %d's standby CA acted too", i + 1);

    /* A rotation asked on a standby's node: recorded there, done by the acting CA, answered. */
    int s = (h + 1) % CP_NODES;
    char *out = NULL, *err = NULL;
    cr_assert_eq(cp_inectl(s, &out, &err, "cluster", "certificate", "rotate", NULL), 0, "rotate on a standby: %s%s", out, err);
    free(out);
    free(err);
    cr_assert_eq(cp_count_all(s, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED), 1);

    /* Another, on the holder's node, and the holder killed as soon as it is recorded. */
    pid_t kid = fork();
    cr_assert_neq(kid, -1);
    if (kid == 0) _exit(cp_inectl(h, NULL, NULL, "cluster", "certificate", "rotate", NULL));
    cp_wait_count(s, INE__V1__EVENT__BODY_ROTATION_REQUESTED, 2);
    cr_assert_eq(kill(cp_ca[h], SIGKILL), 0);
    int64_t killed = cp_now_ms();
    waitpid(cp_ca[h], NULL, 0);
    cp_ca[h] = 0;
    /* A new holder within the TTL (2 s) plus etcd's own failover; generous for a busy host. */
    cp_wait_count(s, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED, 2);
    int n = cp_acting_ca(1000);
    cr_assert(n >= 0 && n != h, "no other CA took over");
    cr_assert_lt(cp_now_ms() - killed, 60000);
    /* The inectl that asked the killed CA gets no answer from it: not ours to wait for. */
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    {
        uint64_t head = cp_last_seq(s);
        for (int i = 0; i < CP_NODES; i++) cp_wait_seq(i, head);
    }
    cp_sleep_ms(1500); /* nothing more comes: the rotation was completed once */
    cr_assert_eq(cp_count_all(s, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED), 2, "a rotation completed twice");
    cr_assert_eq(cp_count_all(s, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED), 3 * CERTS, "issued: %d",
                 cp_count_all(s, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED));
    for (int i = 0; i < CP_NODES; i++) cp_verify(i);
    cp_same_logs(0, 1);
    cp_same_logs(0, 2);
    cp_stop_cas();
}

Test(ca_election, an_append_fenced_on_a_holding_that_ended_is_refused_and_writes_nothing)
{
    etcd_opts eo = {.endpoints = ef_endpoints(&cp_ec)};
    etcd_t *e = NULL;
    elect_t *el = NULL, *el2 = NULL;
    evlog_t *log = NULL;
    commit_t *c = NULL;
    int holding = 0, changed = 0;
    char *p = tu_path(cp_dd[0], "log");
    cr_assert_eq(etcd_open(&eo, &e), 0, "%s", ine_err_msg());
    cr_assert_eq(elect_open(e, "/ine/test/holder", "first", 2, &el), 0);
    cr_assert_eq(elect_tick(el, &holding, &changed), 0);
    cr_assert(holding && changed, "the only candidate does not hold the role");
    int64_t fence = elect_fence(el);
    cr_assert_gt(fence, 0);
    /* The holding ends (as when its lease runs out); a second candidate takes the role. */
    elect_close(el);
    cr_assert_eq(elect_open(e, "/ine/test/holder", "second", 2, &el2), 0);
    cr_assert_eq(elect_tick(el2, &holding, NULL), 0);
    cr_assert(holding, "the second candidate did not take the free role");
    cr_assert_neq(elect_fence(el2), fence);

    cr_assert_eq(evlog_open(p, NULL, &log), 0);
    commit_cfg cc = {.data_dir = cp_dd[0], .producer = "test", .log = log};
    cr_assert_eq(commit_open(&cc, &c), 0, "%s", ine_err_msg());
    cr_assert_str_eq(commit_backend(c), "etcd");
    uint64_t head = cp_last_seq(0), seq = 0;
    Ine__V1__AlertCleared b = INE__V1__ALERT_CLEARED__INIT;
    evlog_event ev = INE__V1__EVENT__INIT, *evs[1] = {&ev};
    b.alert_id = "x";
    ev.body_case = INE__V1__EVENT__BODY_ALERT_CLEARED;
    ev.alert_cleared = &b;
    commit_opts o = {.fence_key = "/ine/test/holder", .fence_rev = fence};
    cr_assert_eq(commit_append(c, evs, 1, &o, &seq), INE_EPERM, "a fenced-off append: %s", ine_err_msg());
    cr_assert(strstr(ine_err_msg(), "fenced off"), "%s", ine_err_msg());
    cp_sleep_ms(300);
    cr_assert_eq(cp_last_seq(0), head, "the fenced-off append reached the log");
    /* The current holder's fence lets it through. */
    o.fence_rev = elect_fence(el2);
    cr_assert_eq(commit_append(c, evs, 1, &o, &seq), 0, "%s", ine_err_msg());
    cr_assert_eq(seq, head + 1);
    cr_assert_eq(cp_last_seq(0), head + 1, "read-your-writes: the local log holds it on return");
    commit_close(c);
    evlog_close(log);
    elect_close(el2);
    etcd_close(e);
    free(p);
}

/* Twenty nodes: forty RSA-2048 keys take several times the 2 s TTL (more under ASan). */
static void setup_many(void)
{
    char nodes[400] = "";
    for (int i = 1; i <= 20; i++) snprintf(nodes + strlen(nodes), sizeof nodes - strlen(nodes), "%s127.0.0.%d", i > 1 ? "," : "", i);
    cp_setup(nodes);
}

/* Its own suite: a test's .init/.fini run in addition to its suite's, not instead. */
TestSuite(ca_lease, .init = setup_many, .fini = cp_teardown, .timeout = 300);

Test(ca_lease, issuing_for_longer_than_the_lease_ttl_keeps_the_lease)
{
    int64_t t0 = cp_now_ms();
    cp_start_ca(0, "2");
    cp_start_policy(0);
    cp_wait_count(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, 40);
    cr_log_info("40 certificates issued in %lld ms under a 2 s lease", (long long)(cp_now_ms() - t0));
    cp_sleep_ms(1500);
    /* Without the keepalive the lease ends mid-issuance, every append is fenced off and the
     * certificates are issued again, for ever: the wait above times out. */
    cr_assert_eq(cp_count_all(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED), 40, "issued twice");
    cp_verify(0);
    cp_stop_cas();
}
