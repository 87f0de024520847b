/* test_control_plane.c — the event log committed through etcd, with real processes: three
 * etcd members, three node data dirs (each with its etcd.conf, its member first), an
 * ine-mirror per node, and ine-policy on every node taking writes through inectl.
 *
 * What it shows: writers racing on three nodes never fork the log (every acknowledged change
 * present once, seqs strictly increasing, one chain, the three local logs byte-identical); a
 * request id retried on another node changes nothing; a node without quorum refuses a write
 * within the front door's deadline, writes nothing, and takes writes again once the majority
 * is back, with no operator action; a mirror started late copies the whole history; a mirror
 * whose local log disagrees with the cluster's stops and names the seq; a second `cluster
 * create` against the same etcd is refused. */
#include <criterion/criterion.h>
#include <zmq.h>

#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commit.h"
#include "elect.h"
#include "err.h"
#include "etcd.h"
#include "cpfix.h"
#include "etcdfix.h"
#include "evlog.h"
#include "svc.h"
#include "testutil.h"
static void setup(void) { cp_setup("127.0.0.1,127.0.0.2,127.0.0.3"); }

TestSuite(control_plane, .init = setup, .fini = cp_teardown, .timeout = 240);

/* --- tests ------------------------------------------------------------------------------------- */

/* One create through node i's REST (POST /v1/bdbs with X-Request-Id race-<id>), in a child
 * whose exit status is 0 for HTTP 200; what went wrong is in <tmp>/<prefix>-<id+1>.log. */
static pid_t create_async(int i, int id, const char *prefix)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char body[256], hdr[64], url[96], user[64], *out = NULL, *err = NULL, *errf = cp_log_path(id, prefix);
        snprintf(body, sizeof body, "{\"name\":\"db%d\",\"port\":%d,\"shard_node\":%d,\"shard_address\":\"127.0.0.%d:%d\"}", id,
                 13000 + id, i == 0 ? 1 : 2, i + 1, 16000 + id);
        snprintf(hdr, sizeof hdr, "X-Request-Id: race-%d", id);
        snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/bdbs", cp_rest_port[i]);
        snprintf(user, sizeof user, "%s:%s", CP_ADMIN, CP_PASSWORD);
        char *argv[] = {"/usr/bin/curl", "-sk", "--noproxy", "*", "-u", user, "-H", hdr, "-H", "Content-Type: application/json",
                        "--max-time", "30", "-w", "\n%{http_code}", "--data-binary", body, url, NULL};
        int rc = tu_run(argv, NULL, &out, &err);
        const char *nl = out ? strrchr(out, '\n') : NULL;
        int ok = rc == 0 && nl && !strcmp(nl + 1, "200");
        if (!ok && out) tu_write_file(errf, out, strlen(out));
        _exit(ok ? 0 : 1);
    }
    return pid;
}

static void reap_all(pid_t *kids, int n, const char *prefix)
{
    for (int k = 0; k < n; k++) {
        int st;
        cr_assert_eq(waitpid(kids[k], &st, 0), kids[k]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a create failed (status %d): %s", st, svc_tail(cp_log_path(k, prefix)));
    }
}

Test(control_plane, three_hundred_rest_changes_racing_on_three_nodes_commit_once_each_in_one_chain)
{
    enum { TOTAL = 300, WAVE = 30, RETRIED = 30 };
    pid_t kids[WAVE];
    /* REST on every node, served with each node's own certificate: the CA issues them first. */
    cp_start_ca(0, "5");
    cp_wait_count(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, CP_NODES * 2);
    for (int i = 0; i < CP_NODES; i++) cp_start_policy_rest(i);
    /* 300 REST creates, 30 at a time, each wave spread over the three nodes: all racing for
     * the head. */
    for (int w = 0; w < TOTAL; w += WAVE) {
        for (int k = 0; k < WAVE; k++) kids[k] = create_async((w + k) % CP_NODES, w + k, "create-err");
        for (int k = 0; k < WAVE; k++) {
            int st;
            cr_assert_eq(waitpid(kids[k], &st, 0), kids[k]);
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "create db%d failed (status %d): %s", w + k, st,
                      svc_tail(cp_log_path(w + k, "create-err")));
        }
    }
    uint64_t head = cp_last_seq(0);
    cr_assert_geq(head, cp_created + TOTAL);
    for (int i = 0; i < CP_NODES; i++) cp_wait_seq(i, head);
    /* Retries with the same request ids, each on another node than the first time: answered
     * from the first attempt, nothing appended. */
    for (int k = 0; k < RETRIED; k++) kids[k] = create_async((k + 1) % CP_NODES, k, "retry-err");
    reap_all(kids, RETRIED, "retry-err");
    cp_sleep_ms(300);
    cr_assert_eq(cp_last_seq(0), head, "a retry appended");
    for (int i = 0; i < CP_NODES; i++) {
        cp_db_count c;
        cp_count_dbs(i, &c);
        for (int k = 0; k < TOTAL; k++) cr_assert_eq(c.names[k], 1, "node %d: db%d created %d times", i + 1, k, c.names[k]);
        cp_verify(i);
    }
    cp_same_logs(0, 1);
    cp_same_logs(0, 2);
    /* Every database got its own uid, although three nodes chose uids at once. */
    {
        json_t *c, *j = cp_status_json(2, &c);
        json_t *dbs = json_object_get(j, "databases");
        char seen[TOTAL + 1] = {0};
        cr_assert_eq(json_array_size(dbs), (size_t)TOTAL);
        for (size_t a = 0; a < json_array_size(dbs); a++) {
            json_int_t uid = json_integer_value(json_object_get(json_array_get(dbs, a), "uid"));
            cr_assert(uid >= 1 && uid <= TOTAL && !seen[uid], "uid %lld twice or out of range", (long long)uid);
            seen[uid] = 1;
        }
        json_decref(j);
    }
}

Test(control_plane, a_request_id_retried_on_another_node_changes_nothing)
{
    char *out = NULL;
    cp_start_policy(0);
    cp_start_policy(1);
    cr_assert_eq(cp_inectl(0, &out, NULL, "--json", "--request-id", "ticket-1", "create", "db", "name", "orders", "port", "12000",
                        "shard_node", "1", "shard_address", "127.0.0.1:6379", NULL),
                 0, "%s", out);
    json_t *a = json_loads(out, 0, NULL);
    free(out);
    uint64_t head = cp_last_seq(0);
    cp_wait_seq(1, head);
    cr_assert_eq(cp_inectl(1, &out, NULL, "--json", "--request-id", "ticket-1", "create", "db", "name", "orders", "port", "12000",
                        "shard_node", "1", "shard_address", "127.0.0.1:6379", NULL),
                 0, "the retry on node 2 was refused: %s", out);
    json_t *b = json_loads(out, 0, NULL);
    free(out);
    cr_assert(a && b);
    cr_assert_eq(json_integer_value(json_object_get(a, "uid")), json_integer_value(json_object_get(b, "uid")));
    cr_assert_eq(json_integer_value(json_object_get(a, "seq")), json_integer_value(json_object_get(b, "seq")),
                 "the retry answers with the first attempt's seq");
    json_decref(a);
    json_decref(b);
    cp_sleep_ms(300);
    cr_assert_eq(cp_last_seq(0), head, "the retry appended");
    cr_assert_eq(cp_last_seq(1), head);
    cr_assert_eq(svc_count_events(cp_dd[1], INE__V1__EVENT__BODY_DATABASE_CREATED), 1);
}

Test(control_plane, without_quorum_a_write_fails_fast_and_writes_nothing_then_resumes)
{
    char *out = NULL, *err = NULL;
    cp_start_ca(0, "5");
    cp_wait_count(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, CP_NODES * 2);
    cp_start_policy_rest(0);
    cp_sleep_ms(300);
    cp_stop_cas(); /* the log stays still: the head below is the head */
    uint64_t head = cp_last_seq(0);
    json_t *c, *j = cp_status_json(0, &c);
    cr_assert_str_eq(json_string_value(json_object_get(c, "mode")), "etcd");
    cr_assert_eq(json_array_size(json_object_get(c, "members")), CP_NODES);
    cr_assert(json_is_true(json_object_get(c, "quorum")));
    cr_assert(json_is_string(json_object_get(c, "leader")), "no leader named");
    cr_assert_eq(json_integer_value(json_object_get(c, "log_head_seq")), (json_int_t)head);
    json_decref(j);
    cr_assert_eq(ef_kill(&cp_ec, 1), 0, "%s", ef_why());
    cr_assert_eq(ef_kill(&cp_ec, 2), 0, "%s", ef_why());
    {
        /* Status still answers, and says what is wrong. */
        char *text = NULL;
        j = cp_status_json(0, &c);
        cr_assert(json_is_false(json_object_get(c, "quorum")), "quorum with two of three members dead");
        json_decref(j);
        cr_assert_eq(cp_inectl(0, &text, NULL, "status", NULL), 0);
        cr_assert(strstr(text, "quorum NO (writes are refused)"), "%s", text);
        free(text);
    }
    int64_t t0 = cp_now_ms();
    int rc = cp_inectl(0, &out, &err, "create", "db", "name", "lost", "port", "12000", "shard_node", "1", "shard_address",
                    "127.0.0.1:6379", NULL);
    int64_t took = cp_now_ms() - t0;
    cr_assert_neq(rc, 0, "a write without quorum succeeded: %s", out);
    cr_assert(strstr(err, "NO_QUORUM") && strstr(err, "etcd"), "the refusal does not name the cause: %s", err);
    /* The front door's deadline is 1.8 s; etcd alone would take 7 s. Generous: inectl's own
     * start and the policy round trip come on top. */
    cr_assert_lt(took, 6000, "the refusal took %lld ms", (long long)took);
    cr_assert_eq(cp_last_seq(0), head, "a refused write reached the log");
    free(out);
    free(err);
    out = err = NULL;
    {
        /* Through REST: 503, error_code no_quorum, the cause in the description. */
        char url[96], user[64];
        snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/bdbs", cp_rest_port[0]);
        snprintf(user, sizeof user, "%s:%s", CP_ADMIN, CP_PASSWORD);
        char *argv[] = {"/usr/bin/curl", "-sk", "--noproxy", "*", "-u", user, "-H", "Content-Type: application/json", "--max-time", "30",
                        "-w", "\n%{http_code}", "--data-binary",
                        "{\"name\":\"lost2\",\"port\":12002,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6381\"}", url, NULL};
        cr_assert_eq(tu_run(argv, NULL, &out, &err), 0, "curl: %s", err);
        cr_assert(strstr(out, "\n503") && strstr(out, "\"error_code\"") && strstr(out, "\"no_quorum\"") && strstr(out, "etcd"), "%s", out);
        cr_assert_eq(cp_last_seq(0), head, "a refused REST write reached the log");
        free(out);
        free(err);
        out = err = NULL;
    }
    /* The majority returns: writes go through again, nothing done by hand. */
    cr_assert_eq(ef_restart(&cp_ec, 1, 30000), 0, "%s", ef_why());
    cr_assert_eq(ef_restart(&cp_ec, 2, 30000), 0, "%s", ef_why());
    {
        int64_t end = cp_now_ms() + CP_WAIT_MS;
        while ((rc = cp_inectl(0, &out, &err, "create", "db", "name", "back", "port", "12001", "shard_node", "1", "shard_address",
                            "127.0.0.1:6380", NULL)) != 0) {
            cr_assert_lt(cp_now_ms(), end, "no write accepted after the majority came back: %s", err);
            free(out);
            free(err);
            out = err = NULL;
            cp_sleep_ms(200);
        }
    }
    free(out);
    free(err);
    head = cp_last_seq(0);
    for (int i = 0; i < CP_NODES; i++) cp_wait_seq(i, head);
    cr_assert_eq(svc_count_events(cp_dd[2], INE__V1__EVENT__BODY_DATABASE_CREATED), 1, "only 'back' was created");
    cp_same_logs(0, 2);
}

Test(control_plane, a_mirror_started_late_copies_the_whole_history)
{
    char *out = NULL;
    cp_start_policy(0);
    for (int k = 0; k < 5; k++) {
        char name[16], port[16];
        snprintf(name, sizeof name, "db%d", k);
        snprintf(port, sizeof port, "%d", 12000 + k);
        cr_assert_eq(cp_inectl(0, &out, NULL, "create", "db", "name", name, "port", port, "shard_node", "1", "shard_address",
                            "127.0.0.1:6379", NULL),
                     0, "%s", out);
        free(out);
        out = NULL;
    }
    cp_make_dd(3);
    cp_start_mirror(3);
    cp_wait_seq(3, cp_last_seq(0));
    cp_same_logs(0, 3);
    cp_verify(3);
}

Test(control_plane, a_mirror_whose_log_disagrees_stops_and_names_the_seq)
{
    char *out = NULL, *err = NULL;
    int st;
    /* Node 5's log holds another cluster's first records (made without etcd). */
    cp_dd[4] = tu_path(cp_tmp, "node5");
    cr_assert_eq(mkdir(cp_dd[4], 0700), 0);
    cr_assert_eq(cp_inectl(4, &out, &err, "cluster", "create", "name", "other", "nodes", "127.0.0.9", "ca_key_bits", "2048", NULL), 0,
                 "%s", err);
    free(out);
    free(err);
    svc_snap before;
    cr_assert_eq(svc_snap_take(cp_dd[4], &before), 0, "%s", svc_why());
    cp_write_conf(4, 0);
    cp_start_mirror(4);
    {
        int64_t end = cp_now_ms() + CP_WAIT_MS;
        while (svc_running(cp_mirror[4], &st)) {
            cr_assert_lt(cp_now_ms(), end, "the mirror goes on over a log that disagrees");
            cp_sleep_ms(50);
        }
        cp_mirror[4] = 0;
    }
    cr_assert_eq(st, 3, "exit status %d", st);
    {
        char *log = cp_log_path(4, "mirror");
        cr_assert(strstr(svc_tail(log), "disagrees with the cluster's") && strstr(svc_tail(log), "record 1"),
                  "the mirror does not say which record: %s", svc_tail(log));
        free(log);
    }
    cr_assert_eq(svc_snap_same(cp_dd[4], &before), 0, "the mirror changed the local log: %s", svc_why());
    svc_snap_free(&before);
}

/* Records a local committer hands its mirror (commit.h, COMMIT_NOTES_FILE) are applied at
 * once, and etcd's watch confirms each: a note of a record the cluster never committed (as a
 * bug would send) is found out when the cluster's own record for that seq arrives, and the
 * mirror stops naming it, never silently. A note that does not link to the head is ignored. */
Test(control_plane, a_note_the_cluster_did_not_commit_stops_the_mirror_by_name)
{
    char ep[600], *out = NULL, *err = NULL, *path = tu_path(cp_dd[0], "log");
    evlog_t *log;
    evlog_opts ro = {.read_only = 1};
    uint64_t head = 0;
    uint8_t hash[EVLOG_HASH_LEN], *rec = NULL;
    size_t len = 0;
    int st;
    cr_assert_eq(evlog_open(path, &ro, &log), INE_OK);
    cr_assert_eq(evlog_head(log, &head, hash), INE_OK);
    {
        Ine__V1__JoinTokenIssued jt = INE__V1__JOIN_TOKEN_ISSUED__INIT;
        evlog_event ev = INE__V1__EVENT__INIT;
        uint8_t sha[32] = {1};
        jt.token_id = "forged0000000000";
        jt.token_sha256 = (ProtobufCBinaryData){sizeof sha, sha};
        jt.expires_at = 4102444800;
        ev.body_case = INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED;
        ev.join_token_issued = &jt;
        ev.producer = "forger";
        ev.actor = "forger";
        cr_assert_eq(evlog_encode(&ev, head + 1, hash, NULL, NULL, NULL, &rec, &len), INE_OK, "%s", ine_err_msg());
    }
    void *z = zmq_ctx_new(), *push = zmq_socket(z, ZMQ_PUSH);
    snprintf(ep, sizeof ep, "ipc://%s/run/" COMMIT_NOTES_FILE, cp_dd[0]);
    cr_assert_eq(zmq_connect(push, ep), 0);
    {
        /* First one that does not fit (seq two ahead): ignored. */
        uint8_t *msg = malloc(8 + len);
        for (int pass = 0; pass < 2; pass++) {
            uint64_t v = head + (pass ? 1 : 2);
            for (int k = 7; k >= 0; k--, v >>= 8) msg[k] = (uint8_t)v;
            memcpy(msg + 8, rec, len);
            cr_assert_eq(zmq_send(push, msg, 8 + len, 0), (int)(8 + len));
            if (!pass) {
                cp_sleep_ms(300);
                cr_assert_eq(cp_last_seq(0), head, "a note that does not link to the head was applied");
            }
        }
        free(msg);
    }
    cp_wait_seq(0, head + 1); /* applied at once, before etcd has anything at that seq */
    /* The cluster commits its own record at head + 1 (through node 2): node 1's mirror sees
     * another record there and stops. */
    cr_assert_eq(cp_inectl(1, &out, &err, "node", "token", "create", NULL), 0, "%s", err);
    for (int64_t end = cp_now_ms() + CP_WAIT_MS; svc_running(cp_mirror[0], &st);) {
        cr_assert_lt(cp_now_ms(), end, "node 1's mirror goes on over a record the cluster did not commit");
        cp_sleep_ms(50);
    }
    cp_mirror[0] = 0;
    cr_assert_eq(st, 3, "exit status %d", st);
    {
        char *mlog = cp_log_path(0, "mirror"), want[64];
        snprintf(want, sizeof want, "record %llu differs", (unsigned long long)(head + 1));
        cr_assert(strstr(svc_tail(mlog), want), "the mirror does not name the record: %s", svc_tail(mlog));
        free(mlog);
    }
    zmq_close(push);
    zmq_ctx_term(z);
    free(rec);
    free(out);
    free(err);
    evlog_close(log);
    free(path);
}

Test(control_plane, a_second_cluster_create_against_the_same_etcd_is_refused)
{
    char *out = NULL, *err = NULL;
    cp_dd[3] = tu_path(cp_tmp, "fresh");
    cr_assert_eq(mkdir(cp_dd[3], 0700), 0);
    cp_write_conf(3, 1);
    int rc = cp_inectl(3, &out, &err, "cluster", "create", "name", "again", "nodes", "127.0.0.1", "ca_key_bits", "2048", NULL);
    cr_assert_neq(rc, 0, "a second cluster was created: %s", out);
    cr_assert(strstr(err, "already holds"), "%s", err);
    {
        char *k = tu_path(cp_dd[3], "seal.key");
        cr_assert_neq(access(k, F_OK), 0, "the refused create left a seal key behind");
        free(k);
    }
    cr_assert_eq(cp_last_seq(0), cp_created, "the refused create appended");
    free(out);
    free(err);
}

/* --- etcd's quota ------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int n;
    char description[512];
} alert_find;

static int find_alert(const evlog_record *rec, void *ud)
{
    alert_find *f = ud;
    if (rec->ev && rec->ev->body_case == INE__V1__EVENT__BODY_ALERT_RAISED && !strcmp(rec->ev->alert_raised->name, f->name)) {
        f->n++;
        snprintf(f->description, sizeof f->description, "%s", rec->ev->alert_raised->description);
    }
    return 0;
}

static alert_find alerts_named(int i, const char *name)
{
    alert_find f = {name, 0, ""};
    evlog_opts o = {.read_only = 1};
    evlog_t *l;
    char *p = tu_path(cp_dd[i], "log");
    cr_assert_eq(evlog_open(p, &o, &l), 0);
    cr_assert_eq(evlog_iterate(l, 1, 0, 0, find_alert, &f), 0);
    evlog_close(l);
    free(p);
    return f;
}

Test(control_plane, etcd_storage_near_its_quota_raises_an_alert)
{
    etcd_opts eo = {.endpoints = ef_endpoints(&cp_ec)};
    etcd_status_info si;
    etcd_t *e = NULL;
    pid_t al;
    char *conf = tu_path(cp_dd[0], "etcd.conf"), *log = cp_log_path(0, "alerting"), *bin = strdup(tu_bin("ine-alerting"));
    char port[16], *out = NULL;
    size_t len;
    char *text = tu_read_file(conf, &len);
    int mport = svc_free_port();
    /* The quota ine measures against: 8 MiB here (etcd keeps its own default). */
    cr_assert(text);
    text = realloc(text, len + 64);
    strcat(text, "quota_bytes=8388608\n");
    cr_assert_eq(tu_write_file(conf, text, strlen(text)), 0);
    cr_assert_eq(etcd_open(&eo, &e), 0);
    cr_assert_eq(etcd_status(e, ef_endpoint(&cp_ec, 0), &si), 0, "%s", ine_err_msg());
    cr_assert_lt(si.db_size, 6 << 20, "etcd's database is already %lld bytes", (long long)si.db_size);

    snprintf(port, sizeof port, "%d", mport);
    char *argv[] = {bin, "--data-dir", cp_dd[0], "--check-interval", "1", "--metrics-addr", "127.0.0.1", "--metrics-port", port, NULL};
    al = svc_spawn(argv, NULL, log);
    cr_assert_gt(al, 0);
    cp_sleep_ms(2500);
    cr_assert_eq(alerts_named(0, "consensus_storage_near_quota").n, 0, "raised below the threshold");

    /* Fill etcd past 75 % of 8 MiB, beside the log. */
    {
        size_t big = 1 << 20;
        char *v = malloc(big), key[32];
        memset(v, 'f', big);
        for (int k = 0; k < 7; k++) {
            snprintf(key, sizeof key, "/fill/%d", k);
            cr_assert_eq(etcd_put(e, key, strlen(key), v, big, 0, NULL), 0, "%s", ine_err_msg());
        }
        free(v);
    }
    {
        int64_t end = cp_now_ms() + CP_WAIT_MS;
        alert_find f;
        while ((f = alerts_named(0, "consensus_storage_near_quota")).n == 0) {
            cr_assert_lt(cp_now_ms(), end, "no storage alert; ine-alerting: %s", svc_tail(log));
            cp_sleep_ms(100);
        }
        cr_assert_eq(f.n, 1);
        cr_assert(strstr(f.description, "of its 8 MiB quota") && strstr(f.description, "threshold 75 %"), "%s", f.description);
    }
    {
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", mport);
        char *cargv[] = {"/usr/bin/curl", "-sf", url, NULL};
        cr_assert_eq(tu_run(cargv, NULL, &out, NULL), 0, "GET %s failed", url);
    }
    cr_assert(strstr(out, "ine_etcd_quota_bytes 8388608") && strstr(out, "ine_etcd_db_size_bytes "), "metrics: %s", out);
    free(out);
    svc_stop(al, 5000);
    etcd_close(e);
    free(text);
    free(conf);
    free(log);
    free(bin);
}

/* --- membership ---------------------------------------------------------------------------------- */

Test(control_plane, removing_a_dead_node_takes_its_etcd_member_out_and_the_cluster_writes_on)
{
    etcd_opts eo = {.endpoints = ef_endpoints(&cp_ec)};
    etcd_member *ms = NULL;
    size_t n = 0;
    etcd_t *e = NULL;
    char *out = NULL, *err = NULL;
    char uid[16], said[48], *nodename;
    int dead = 2;
    cp_start_policy(0);
    /* A node dies for good, its member and its mirror: the etcd leader's when that is node 2's
     * or node 3's (a removal sent while etcd elects again goes unanswered), else node 3's. */
    cr_assert_eq(etcd_open(&eo, &e), 0);
    for (int m = 1; m < CP_NODES; m++) {
        etcd_status_info si;
        if (etcd_status(e, ef_endpoint(&cp_ec, m), &si) == 0 && si.leader == si.member_id) dead = m;
    }
    etcd_close(e);
    e = NULL;
    cr_assert_eq(ef_kill(&cp_ec, dead), 0, "%s", ef_why());
    svc_stop(cp_mirror[dead], 5000);
    cp_mirror[dead] = 0;
    snprintf(uid, sizeof uid, "%d", dead + 1);
    snprintf(said, sizeof said, "node %d removed", dead + 1);
    nodename = cp_ec.m[dead].name;
    cr_assert_eq(cp_inectl(0, &out, &err, "node", "remove", uid, NULL), 0, "node remove: %s%s", out, err);
    cr_assert(strstr(out, said), "%s", out);
    free(out);
    free(err);
    out = err = NULL;
    cr_assert_eq(etcd_open(&eo, &e), 0);
    cr_assert_eq(etcd_member_list(e, &ms, &n), 0, "%s", ine_err_msg());
    cr_assert_eq(n, 2, "etcd still has %zu members", n);
    for (size_t i = 0; i < n; i++) cr_assert_str_neq(ms[i].name, nodename);
    free(ms);
    etcd_close(e);
    cr_assert_eq(svc_count_events(cp_dd[0], INE__V1__EVENT__BODY_NODE_REMOVED), 1);
    /* Two of two members: writes go on. */
    cr_assert_eq(cp_inectl(0, &out, &err, "create", "db", "name", "after", "port", "12000", "shard_node", "1", "shard_address",
                        "127.0.0.1:6379", NULL),
                 0, "a write after the removal: %s", err);
    free(out);
    free(err);
    out = err = NULL;
    cp_wait_seq(3 - dead, cp_last_seq(0));
    cp_same_logs(0, 3 - dead);
    /* Refusals change nothing. */
    uint64_t head = cp_last_seq(0);
    snprintf(said, sizeof said, "no node %d in this cluster [NOT_FOUND]", dead + 1);
    cr_assert_eq(cp_inectl(0, &out, &err, "node", "remove", uid, NULL), 1);
    cr_assert(strstr(err, said), "%s", err);
    free(out);
    free(err);
    out = err = NULL;
    cr_assert_eq(cp_inectl(0, &out, &err, "node", "remove", "three", NULL), 2);
    cr_assert(strstr(err, "'three' is not a node uid"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(cp_last_seq(0), head);
}
