/* test_deploy_faults — the services under faults a real machine brings: a full LMDB map
 * (INE_LOG_MAP_SIZE makes it tiny) gives a clear error and leaves the chain intact; a missing
 * or world-readable seal key is refused by every service that holds secrets, with a message
 * naming the file; the clock jumping backwards under ine-ca (libfaketime) triggers no rotation
 * and the transports still handshake. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "svc.h"
#include "testutil.h"

static svc_cluster sc;
static cl_t cl;
static char *mounted; /* a tmpfs the test mounted */

static void fini(void)
{
    if (mounted) {
        svc_stop_policy(&sc);
        char *out = NULL;
        cl_sh(&out, 30, "umount %s || umount -l %s", mounted, mounted);
        free(out);
        free(mounted);
        mounted = NULL;
    }
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

static void set_offset(const char *file, const char *offset)
{
    FILE *f = fopen(file, "w");
    cr_assert(f, "cannot write %s", file);
    fprintf(f, "%s\n", offset);
    cr_assert_eq(fclose(f), 0);
}

/* Two commands served by the CA after `after`: its loop reconciles between any two. */
static void ca_two_rounds(cl_t *c)
{
    for (int i = 0; i < 2; i++) {
        char *out = NULL, *err = NULL;
        cr_assert_eq(cl_inectl(c, &out, &err, "status", "certificates", NULL), 0, "status certificates: %s", err);
        free(out);
        free(err);
    }
}

Test(deploy_faults, clock_jumping_back_triggers_no_rotation_and_keeps_handshakes)
{
    char *tsfile, *env_ts, *env_asan, *out, *val;
    char ps[16];
    size_t mark;
    uint64_t seq_before, seq_after;
    int issued_before, rport, dbport;
    const char *asan = getenv("ASAN_OPTIONS");

    /* libfaketime, the threaded variant (ine-ca runs key generation threads). */
    const char *env_pre = tu_faketime_preload(1);
    cr_assert_not_null(env_pre, "libfaketime is not installed (scripts/install-deps.sh installs it)");
    cl_start(&cl, NULL);
    rport = cl_free_port();
    dbport = cl_free_port();
    snprintf(ps, sizeof ps, "%d", rport);
    cl_redis_start(&cl, "127.0.0.2", rport, NULL);
    {
        char shard[64];
        snprintf(shard, sizeof shard, "127.0.0.2:%d", rport);
        cl_create_db(&cl, "a", dbport, 2, shard, 1);
    }

    /* The CA again, now under libfaketime reading its offset from a file on every call. */
    cr_assert_eq(cl_kill(&cl.ca, SIGTERM), 0, "ine-ca did not stop cleanly");
    tsfile = cl_path(&cl, "faketime.rc");
    set_offset(tsfile, "+0");
    cr_assert(asprintf(&env_ts, "FAKETIME_TIMESTAMP_FILE=%s", tsfile) > 0);
    /* ASan wants to come first among preloaded libraries; libfaketime must, to see the calls. */
    cr_assert(asprintf(&env_asan, "ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan ? asan : "", asan ? ":" : "") > 0);
    {
        char *env[] = {(char *)env_pre, env_ts, "FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1",
                       env_asan, NULL};
        char *argv[] = {INE_BIN_DIR "/ine-ca", "--data-dir", cl.dd, "--ca-key-bits", "2048", "--check-interval", "1", NULL};
        cl_spawn(&cl, &cl.ca, "ca-faketime", argv, env); /* a log file of its own */
        mark = 0;
    }
    cr_assert(cl_wait_log(&cl.ca, mark, "started", CL_WAIT_MS), "ine-ca did not start under faketime");
    ca_two_rounds(&cl);

    /* Three days back, with the certificates already in place. */
    issued_before = svc_count_events(cl.dd, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED);
    cr_assert_eq(svc_last_seq(cl.dd, &seq_before), 0);
    set_offset(tsfile, "-3d");
    ca_two_rounds(&cl);
    /* A log change makes it reconcile once more; its 1 s timer has fired by the time it serves
     * two more commands or it has not — either way nothing may be issued. */
    cl_set_encryption(&cl, "a", 0);
    cl_set_encryption(&cl, "a", 1);
    ca_two_rounds(&cl);
    cr_assert_eq(svc_last_seq(cl.dd, &seq_after), 0);
    cr_assert_eq(svc_count_events(cl.dd, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED), issued_before,
                 "the clock going back made the CA issue certificates");
    cr_assert_eq(svc_count_events(cl.dd, INE__V1__EVENT__BODY_ROTATION_REQUESTED), 0,
                 "the clock going back requested a rotation");
    cr_assert_eq(seq_after, seq_before + 2, "only the two toggles may have been written (%llu -> %llu)",
                 (unsigned long long)seq_before, (unsigned long long)seq_after);
    out = cl_log_since(&cl.ca, mark);
    cr_expect(!strstr(out, "reconcile:"), "the CA failed to reconcile under the jumped clock: %s", out);
    free(out);

    /* A rotation under the jumped clock: certificates valid from 3 days back, which the
     * transports (on the real clock) accept; the data plane handshakes across node 2. */
    {
        char *o = NULL, *e = NULL;
        cr_assert_eq(cl_inectl(&cl, &o, &e, "cluster", "certificate", "rotate", NULL), 0, "rotate: %s", e);
        free(o);
        free(e);
    }
    cr_assert(cl_wait_converged(&cl, CL_WAIT_MS), "the transports did not activate the certificates issued 3 days back");
    /* Proof that the CA ran on the jumped clock: the new certificates start 3 days back. */
    for (int n = 1; n <= CL_NODES; n++) {
        const proj_cert *pc = cl_cert(&cl, n, PROJ_PLANE_MAX);
        cr_assert_lt(pc->cert.not_before, (int64_t)time(NULL) - 2 * 86400, "node %d's new certificate starts at %lld: "
                     "the CA did not run on the jumped clock", n, (long long)pc->cert.not_before);
    }
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        char *s = cl_redis_cli("127.0.0.1", dbport, "set", "k", "v-after-jump", NULL);
        int ok = s && !strcmp(s, "OK");
        free(s);
        if (ok) break;
        cr_assert_lt(cl_now_ms(), end, "no data plane through node 1 after the clock jumped back");
        usleep(200 * 1000);
    }
    val = cl_redis_cli("127.0.0.3", dbport, "get", "k", NULL);
    cr_assert(val && !strcmp(val, "v-after-jump"), "node 3 read '%s'", val ? val : "(nothing)");
    free(val);
    out = NULL;
    cr_assert_eq(cl_sh(&out, 60, "%s/ine-log --data-dir %s verify", INE_BIN_DIR, cl.dd), 0, "verify: %s", out);
    free(out);
    free(tsfile);
    free(env_ts);
    free(env_asan);
    cl_finish(&cl);
}

/* A full disk: the data dir on a tmpfs only a little larger than what it holds. */
Test(deploy_faults, full_disk_gives_a_clear_error_and_no_corruption)
{
    char *out = NULL, *err = NULL, *fs, *dd, name[32], port[16];
    int rc = 0, created = 0;

    cr_assert_eq(svc_cluster_init(&sc, NULL, NULL), 0, "%s", svc_why());
    cr_assert_eq(svc_start_ca(&sc, 120000), 0, "%s", svc_why());
    cr_assert_eq(svc_stop_ca(&sc), 0);
    cr_assert(asprintf(&fs, "%s/fs", sc.dir) > 0 && asprintf(&dd, "%s/fs/dd", sc.dir) > 0);
    cr_assert_eq(mkdir(fs, 0700), 0);
    /* Room for what is there plus 24 KiB (the run/ sockets take none). */
    rc = cl_sh(&out, 30, "mount -t tmpfs -o size=$(( $(du -sk %s | cut -f1) + 24 ))k,mode=0700 tmpfs %s", sc.dd, fs);
    if (rc != 0) {
        free(out);
        free(fs);
        free(dd);
        cr_skip_test("cannot mount a tmpfs here (needs root): %s", out ? out : "");
    }
    mounted = strdup(fs);
    free(out);
    out = NULL;
    cr_assert_eq(cl_sh(&out, 30, "cp -a %s %s && rm -rf %s/run/*", sc.dd, dd, dd), 0, "copy: %s", out);
    free(out);
    out = NULL;
    free(sc.dd);
    sc.dd = dd;
    cr_assert_eq(svc_start_policy(&sc, 0, 60000), 0, "%s", svc_why());

    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "db%d", i);
        snprintf(port, sizeof port, "%d", 13000 + i % 2000);
        free(out);
        free(err);
        out = err = NULL;
        rc = svc_inectl(&sc, &out, &err, "create", "db", "name", name, "port", port, "shard_node", "1",
                        "shard_address", "127.0.0.1:6379", NULL);
        if (rc != 0) break;
        created++;
    }
    cr_assert_neq(rc, 0, "the disk never filled after %d databases", created);
    cr_assert(err && strstr(err, "No space left on device"), "no clear error when the disk is full: %s", err ? err : "");
    cr_log_info("disk full after %d databases: %s", created, err);
    /* The refused request left nothing behind: no such database, and the chain verifies. */
    free(out);
    free(err);
    out = err = NULL;
    cr_assert_neq(svc_inectl(&sc, &out, &err, "info", "db", name, NULL), 0, "the refused database %s exists: %s", name, out);
    free(out);
    free(err);
    out = err = NULL;
    cr_assert_eq(cl_sh(&out, 60, "%s/ine-log --data-dir %s verify", INE_BIN_DIR, sc.dd), 0, "verify on a full disk: %s", out);
    free(out);
    out = NULL;

    /* Room again (the operator grew the volume): the same running service takes the request. */
    cr_assert_eq(cl_sh(&out, 30, "mount -o remount,size=64m %s", fs), 0, "remount: %s", out);
    free(out);
    out = NULL;
    rc = svc_inectl(&sc, &out, &err, "create", "db", "name", "late", "port", "15999", "shard_node", "1",
                    "shard_address", "127.0.0.1:6379", NULL);
    cr_assert_eq(rc, 0, "no recovery once the disk had room: %s", err ? err : "");
    free(out);
    free(err);
    out = NULL;
    cr_assert_eq(cl_sh(&out, 60, "%s/ine-log --data-dir %s verify", INE_BIN_DIR, sc.dd), 0, "verify: %s", out);
    free(out);
    cr_assert_eq(svc_stop_policy(&sc), 0, "ine-policy did not stop cleanly: %s", svc_tail(sc.policy_log));
    free(fs);
}
