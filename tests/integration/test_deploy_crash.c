/* test_deploy_crash — the supervisord deployment survives SIGKILL.
 *
 * The real deploy/supervisord.conf.in (rendered with free ports) runs the 3-node cluster and a
 * redis shard; traffic flows through node 1's encrypted endpoint while the test rotates
 * certificates and toggles a second database, each request with its own --request-id. It
 * SIGKILLs every service in turn, then all at once; supervisord restarts them. Afterwards the
 * hash chain verifies, every acknowledged request is in the log exactly once (and no request
 * twice), and the data plane works again through nodes 1 and 3. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deploy.h"

#define MAX_REQS 64

static dp_t d;
static char *bench_pidfile;

enum { RQ_ROTATE, RQ_TOGGLE, RQ_CREATE };

typedef struct {
    char id[64];
    int kind, on; /* on: a toggle's target */
    int acked;
} req_t;

static req_t reqs[MAX_REQS];
static int n_reqs, toggle_on = 1;

static int bench_port;

static void fini(void)
{
    if (bench_pidfile) {
        char *out = NULL;
        /* The loop first, then any redis-benchmark it had started (one was seen to outlive
         * the group kill, stuck on the dead endpoint). */
        cl_sh(&out, 10,
              "kill -9 -- -$(cat %s) 2>/dev/null; kill -9 $(cat %s) 2>/dev/null; "
              "pkill -9 -f 'redis-benchmark -h 127.0.0.1 -p %d ' 2>/dev/null; true",
              bench_pidfile, bench_pidfile, bench_port);
        free(out);
        free(bench_pidfile);
        bench_pidfile = NULL;
    }
    dp_stop(&d);
}

/* One control-plane request with a fresh request id: a rotation, a toggle of db b (always to
 * the other value than the last one asked for), or a new database. Acknowledged when inectl
 * exits 0. */
static void request(int kind)
{
    char *out = NULL, what[160];
    req_t *r;
    cr_assert_lt(n_reqs, MAX_REQS);
    r = &reqs[n_reqs];
    snprintf(r->id, sizeof r->id, "crash-%ld-%d", (long)getpid(), n_reqs);
    r->kind = kind;
    if (kind == RQ_ROTATE) snprintf(what, sizeof what, "cluster certificate rotate");
    else if (kind == RQ_TOGGLE) {
        toggle_on = !toggle_on;
        r->on = toggle_on;
        snprintf(what, sizeof what, "tune db b data_internode_encryption %s", toggle_on ? "enabled" : "disabled");
    } else
        snprintf(what, sizeof what, "create db name c%d port %d shard_node 2 shard_address 127.0.0.2:%d", n_reqs,
                 cl_free_port(), d.redis_port);
    n_reqs++;
    r->acked = cl_sh(&out, 40, "%s/inectl --data-dir %s --timeout 6 --request-id %s %s", INE_BIN_DIR, d.dd, r->id,
                     what) == 0;
    free(out);
}

static void some_requests(void)
{
    request(RQ_ROTATE);
    request(RQ_TOGGLE);
    request(RQ_CREATE);
}

/* SET then GET through `addr`, retried until it works (the restarted transports come back). */
static int data_plane_ok(const char *addr, int port, const char *val, int timeout_ms)
{
    int64_t end = cl_now_ms() + timeout_ms;
    while (cl_now_ms() < end) {
        char *s = cl_redis_cli(addr, port, "set", "crash:key", val, NULL), *g = NULL;
        int ok = s && !strcmp(s, "OK") && (g = cl_redis_cli(addr, port, "get", "crash:key", NULL)) && !strcmp(g, val);
        free(s);
        free(g);
        if (ok) return 1;
        usleep(300 * 1000);
    }
    return 0;
}

/* The shard's total_commands_processed, asked directly (not through ine). */
static long shard_commands(void)
{
    char *out = NULL;
    long n = -1;
    if (cl_sh(&out, 20, "redis-cli -h 127.0.0.2 -p %d info stats | tr -d '\\r' | sed -n 's/^total_commands_processed://p'",
              d.redis_port) == 0 && out)
        n = atol(out);
    free(out);
    cr_assert_geq(n, 0, "cannot read the shard's stats");
    return n;
}

/* How many events carry each request id (ine-log export). */
static void count_in_log(int counts[MAX_REQS])
{
    char *out = NULL, *line, *save = NULL, prev[512] = "";
    int rc = cl_sh(&out, 60, "%s/ine-log --data-dir %s export", INE_BIN_DIR, d.dd);
    cr_assert_eq(rc, 0, "ine-log export failed: %.300s", out ? out : "");
    memset(counts, 0, sizeof(int) * MAX_REQS);
    /* The services prefix the id ("policy:<id>") and stamp it on every event of one append:
     * an append is a run of consecutive records with the same id, and it is what must occur
     * exactly once. */
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *rid = j ? json_string_value(json_object_get(j, "request_id")) : NULL;
        size_t rl = rid ? strlen(rid) : 0;
        int first = rid && *rid && strcmp(rid, prev);
        for (int i = 0; first && i < n_reqs; i++) {
            size_t il = strlen(reqs[i].id);
            if (rl >= il && !strcmp(rid + rl - il, reqs[i].id) && (rl == il || !isalnum((unsigned char)rid[rl - il - 1])))
                counts[i]++;
        }
        snprintf(prev, sizeof prev, "%s", rid ? rid : "");
        json_decref(j);
    }
    free(out);
}

TestSuite(deploy_crash, .fini = fini, .timeout = 300);

Test(deploy_crash, sigkill_each_then_all_under_supervisord)
{
    char *out = NULL;
    int dbp_a = cl_free_port(), dbp_b = cl_free_port(), rc, counts[MAX_REQS];
    pid_t pids[8];

    dp_start(&d);
    cr_assert(dp_wait_ready(&d, 120000), "the cluster did not come up; see %s/logs", d.dd);
    cr_assert(dp_wait_restarted(&d, "redis-shard", 0, 30000), "redis-shard is not running");

    rc = cl_sh(&out, 60,
               "B=%s/inectl; D=%s; for i in $(seq 30); do [ -S $D/run/policy.sock ] && break; sleep 1; done; "
               "$B --data-dir $D create db name a port %d shard_node 2 shard_address 127.0.0.2:%d data_internode_encryption enabled && "
               "$B --data-dir $D create db name b port %d shard_node 2 shard_address 127.0.0.2:%d data_internode_encryption enabled",
               INE_BIN_DIR, d.dd, dbp_a, d.redis_port, dbp_b, d.redis_port);
    cr_assert_eq(rc, 0, "create db failed: %s", out ? out : "");
    free(out);
    cr_assert(data_plane_ok("127.0.0.1", dbp_a, "before", 60000), "no data plane through node 1 before the crashes");

    long served0 = shard_commands();
    /* Traffic: redis-benchmark in a loop (it exits when its connection is cut; the loop restarts it). */
    cr_assert(asprintf(&bench_pidfile, "%s/bench.pid", d.dir) > 0);
    bench_port = dbp_a;
    rc = cl_sh(&out, 10,
               "setsid sh -c 'while :; do redis-benchmark -h 127.0.0.1 -p %d -c 2 -n 2000 -t set,get -q >/dev/null 2>&1; done' "
               "</dev/null >/dev/null 2>&1 & echo $! > %s",
               dbp_a, bench_pidfile);
    cr_assert_eq(rc, 0);
    free(out);

    /* Each service in turn, with requests in flight around every kill. */
    for (int i = 0; dp_programs[i]; i++) {
        pid_t old = dp_pid(&d, dp_programs[i]);
        cr_assert_gt(old, 0, "%s is not running", dp_programs[i]);
        request(RQ_TOGGLE);
        cr_assert_eq(kill(old, SIGKILL), 0);
        some_requests();
        cr_assert(dp_wait_restarted(&d, dp_programs[i], old, 60000), "supervisord did not restart %s", dp_programs[i]);
        request(i % 2 ? RQ_ROTATE : RQ_CREATE);
    }

    /* All at once. */
    for (int i = 0; dp_programs[i]; i++) cr_assert_gt(pids[i] = dp_pid(&d, dp_programs[i]), 0, "%s down", dp_programs[i]);
    for (int i = 0; dp_programs[i]; i++) kill(pids[i], SIGKILL);
    some_requests();
    for (int i = 0; dp_programs[i]; i++)
        cr_assert(dp_wait_restarted(&d, dp_programs[i], pids[i], 60000), "supervisord did not restart %s", dp_programs[i]);
    some_requests();

    /* The data plane resumes (node 1 and node 3, both across the transports to node 2). */
    cr_assert(data_plane_ok("127.0.0.1", dbp_a, "after-1", 120000), "node 1's endpoint did not come back");
    cr_assert(data_plane_ok("127.0.0.3", dbp_a, "after-3", 60000), "node 3's endpoint did not come back");
    cr_assert(data_plane_ok("127.0.0.3", dbp_b, "after-b", 60000), "db b did not come back through node 3");
    cr_assert(dp_wait_ready(&d, 120000), "the certificates are not all served after the crashes");
    /* The benchmark really went through the encrypted endpoint while all this happened: the
     * shard served at least one full run (2000 requests) more than the test's own commands. */
    long served = shard_commands() - served0;
    cr_log_info("deploy_crash: the shard served %ld commands during the crashes", served);
    cr_assert_gt(served, 2000, "no traffic flowed during the crashes (%ld commands)", served);

    rc = cl_sh(&out, 60, "%s/ine-log --data-dir %s verify", INE_BIN_DIR, d.dd);
    cr_assert_eq(rc, 0, "ine-log verify failed after the crashes: %s", out ? out : "");
    free(out);

    count_in_log(counts);
    int acked = 0, last_toggle = -1;
    for (int i = 0; i < n_reqs; i++) {
        acked += reqs[i].acked;
        cr_expect_leq(counts[i], 1, "request %s is in the log %d times", reqs[i].id, counts[i]);
        /* A toggle to the value the database already has is acknowledged and writes nothing
         * (an earlier unacknowledged one may have set it): it is checked by the end state. */
        if (reqs[i].acked && reqs[i].kind != RQ_TOGGLE)
            cr_expect_eq(counts[i], 1, "acknowledged request %s is in the log %d times", reqs[i].id, counts[i]);
        if (reqs[i].acked && reqs[i].kind == RQ_TOGGLE) last_toggle = i;
    }
    if (last_toggle >= 0) {
        rc = cl_sh(&out, 30, "%s/inectl --data-dir %s info db b", INE_BIN_DIR, d.dd);
        cr_assert_eq(rc, 0, "inectl info db b: %s", out ? out : "");
        cr_expect(strstr(out, reqs[last_toggle].on ? "enabled" : "disabled"),
                  "db b is not as its last acknowledged toggle (%s) left it: %s", reqs[last_toggle].on ? "enabled" : "disabled", out);
        free(out);
    }
    cr_log_info("deploy_crash: %d requests, %d acknowledged", n_reqs, acked);
    /* Most requests must get through: supervisord brings a killed service back within seconds. */
    cr_assert_geq(acked, n_reqs / 2, "only %d of %d requests were acknowledged", acked, n_reqs);
}
