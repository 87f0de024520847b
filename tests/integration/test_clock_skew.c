/* test_clock_skew.c — a node whose clock runs 5 minutes behind (a real offset: libfaketime
 * under its transport): ine-alerting names it (node_clock_skew/3, from the offsets the
 * transports measure on heartbeats) before anything breaks, and a data-plane rotation does
 * not break it (certificates are backdated 10 minutes; with the former minute, node 3 found
 * its new certificate not yet valid and lost its encrypted data plane). When its clock is
 * right again, the alert clears. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

static cl_t c;

static void setup(void) {}
static void teardown(void) { cl_stop(&c); }
TestSuite(clock_skew, .init = setup, .fini = teardown, .timeout = 300);

static const proj_alert *skew_alert(void)
{
    return proj_alert_find(cl_state(&c), "node_clock_skew/3");
}

static void set_get(int via, int port, const char *key, const char *val)
{
    char *r = cl_redis_cli(cl_addr(via), port, "SET", key, val, NULL);
    cr_assert(r && !strcmp(r, "OK"), "SET through node %d: %s", via, r ? r : "(failed)");
    free(r);
    r = cl_redis_cli(cl_addr(via), port, "GET", key, NULL);
    cr_assert(r && !strcmp(r, val), "GET through node %d: %s", via, r ? r : "(failed)");
    free(r);
}

Test(clock_skew, a_node_five_minutes_behind_is_named_and_keeps_its_data_plane_through_a_rotation)
{
    int shard = cl_free_port(), port = cl_free_port();
    char pre[512], *argv[8];
    const char *preload = tu_faketime_preload(1);
    cr_assert_not_null(preload, "libfaketime is installed by scripts/install-deps.sh");
    cl_start(&c, NULL);
    cl_redis_db(&c, "kv", port, 2, shard);
    set_get(3, port, "before", "skew");

    /* Node 3's transport, 5 minutes behind (monotonic time left alone: timers stay sane). */
    cl_tp_stop(&c, 3, SIGTERM);
    snprintf(pre, sizeof pre, "%s", preload);
    /* Under ASan the sanitizer's runtime must come first; libfaketime preloaded before it is
     * fine for what this test checks. */
    const char *asan = getenv("ASAN_OPTIONS");
    char asan_opts[512];
    snprintf(asan_opts, sizeof asan_opts, "ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan ? asan : "", asan && *asan ? ":" : "");
    char *env[] = {pre, "FAKETIME=-5m", "FAKETIME_DONT_FAKE_MONOTONIC=1", asan_opts, NULL};
    size_t mark = cl_log_mark(&c.tp[3]);
    cl_tp_start_env(&c, 3, env);
    cr_assert(cl_wait_links(&c, 3, mark, CL_WAIT_MS), "node 3 is back: %s", cl_log_since(&c.tp[3], mark));

    /* ine-alerting reads the offsets the transports measured. */
    argv[0] = (char *)tu_bin("ine-alerting");
    argv[1] = "--data-dir";
    argv[2] = c.dd;
    argv[3] = "--check-interval";
    argv[4] = "1";
    argv[5] = "--metrics-port";
    argv[6] = "0";
    argv[7] = NULL;
    cl_proc *al = cl_spawn(&c, NULL, "alerting", argv, NULL);
    const proj_alert *a = NULL;
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; !(a = skew_alert()) && cl_now_ms() < end;) usleep(200 * 1000);
    cr_assert_not_null(a, "no node_clock_skew/3 alert: %s", cl_log_since(al, 0));
    cr_assert_eq(a->node_uid, 3);
    cr_assert(strstr(a->description, "behind the cluster's"), "%s", a->description);
    long secs = strtol(a->change_value, NULL, 10);
    cr_assert(secs <= -290 && secs >= -310, "measured %ld s", secs);
    cr_assert_null(proj_alert_find(cl_state(&c), "node_clock_skew/1"), "node 1 is not named");
    cr_assert_null(proj_alert_find(cl_state(&c), "node_clock_skew/2"), "node 2 is not named");

    /* A data-plane rotation: node 3 takes its new certificate (notBefore 10 minutes back, so
     * valid on its clock too) and its clients keep reaching the shard on node 2 in TLS. */
    const proj_cert *old3 = cl_cert(&c, 3, 2);
    char old_fp[80];
    snprintf(old_fp, sizeof old_fp, "%s", old3->cert.fingerprint);
    char *out = NULL, *err = NULL;
    cr_assert_eq(cl_inectl(&c, &out, &err, "cluster", "certificate", "rotate", "data_internode_encryption", NULL), 0, "%s", err);
    free(out);
    free(err);
    const proj_activation *act = NULL;
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; cl_now_ms() < end; usleep(200 * 1000)) {
        const proj_cert *now3 = cl_cert(&c, 3, 2);
        act = proj_activation_find(cl_state(&c), 3, 2);
        if (strcmp(now3->cert.fingerprint, old_fp) && act && !strcmp(act->fingerprint, now3->cert.fingerprint)) break;
        act = NULL;
    }
    cr_assert_not_null(act, "node 3 never served its new data-plane certificate: %s", cl_log_since(&c.tp[3], mark));
    set_get(3, port, "after", "rotation");
    set_get(1, port, "also", "node1");

    /* Its clock right again: the alert clears. */
    cl_tp_stop(&c, 3, SIGTERM);
    mark = cl_log_mark(&c.tp[3]);
    cl_tp_start(&c, 3);
    cr_assert(cl_wait_links(&c, 3, mark, CL_WAIT_MS));
    for (int64_t end = cl_now_ms() + 2 * CL_WAIT_MS; skew_alert() && cl_now_ms() < end;) usleep(500 * 1000);
    cr_assert_null(skew_alert(), "the alert did not clear: %s", cl_log_since(al, 0));
    cl_finish(&c);
}
