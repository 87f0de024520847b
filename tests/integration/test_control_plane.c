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
#include "etcdfix.h"
#include "evlog.h"
#include "svc.h"
#include "testutil.h"

#define NODES 3
#define WAIT_MS 30000

static char *tmp;
static ef_cluster ec;
static char *dd[NODES + 2];           /* node data dirs; [3] and [4] for late/odd ones */
static pid_t mirror[NODES + 2], policy[NODES + 2], ca[NODES];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* etcd.conf for data dir i: member `first` first, then the others. */
static void write_conf(int i, int first)
{
    char buf[1024], *p = tu_path(dd[i], "etcd.conf");
    int n = snprintf(buf, sizeof buf, "endpoints=%s", ef_endpoint(&ec, first));
    for (int m = 0; m < NODES; m++)
        if (m != first) n += snprintf(buf + n, sizeof buf - (size_t)n, ",%s", ef_endpoint(&ec, m));
    snprintf(buf + n, sizeof buf - (size_t)n, "\n");
    cr_assert_eq(tu_write_file(p, buf, strlen(buf)), 0);
    free(p);
}

static void make_dd(int i)
{
    char name[16];
    snprintf(name, sizeof name, "node%d", i + 1);
    dd[i] = tu_path(tmp, name);
    cr_assert_eq(mkdir(dd[i], 0700), 0);
    write_conf(i, i % NODES);
}

static int inectl(int i, char **out, char **err, ...)
{
    char *argv[40] = {(char *)tu_bin("inectl"), "--data-dir", dd[i]};
    int n = 3;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && n < 39;) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    argv[0] = strdup(argv[0]);
    n = tu_run(argv, NULL, out, err);
    free(argv[0]);
    return n;
}

static char *svc_log(int i, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "%s-%d.log", what, i + 1);
    return tu_path(tmp, name);
}

static void start_mirror(int i)
{
    char *bin = strdup(tu_bin("ine-mirror")), *log = svc_log(i, "mirror");
    char *argv[] = {bin, "--data-dir", dd[i], NULL};
    mirror[i] = svc_spawn(argv, NULL, log);
    cr_assert_gt(mirror[i], 0, "%s", svc_why());
    free(bin);
    free(log);
}

static uint64_t last_seq(int i)
{
    uint64_t s = 0;
    char *p = tu_path(dd[i], "log/data.mdb");
    int there = access(p, F_OK) == 0;
    free(p);
    if (there) cr_assert_eq(svc_last_seq(dd[i], &s), 0, "%s", svc_why());
    return s;
}

/* The last seq, 0 while the log is not there or not yet set up (a mirror creating it). */
static uint64_t try_last_seq(int i)
{
    uint64_t s = 0;
    return svc_last_seq(dd[i], &s) == 0 ? s : 0;
}

static void wait_seq(int i, uint64_t seq)
{
    int64_t end = now_ms() + WAIT_MS;
    while (try_last_seq(i) < seq) {
        char *log = svc_log(i, "mirror");
        cr_assert_lt(now_ms(), end, "node %d's log holds %llu, not %llu, after %d ms; mirror: %s", i + 1,
                     (unsigned long long)try_last_seq(i), (unsigned long long)seq, WAIT_MS, svc_tail(log));
        free(log);
        sleep_ms(20);
    }
}

static void start_policy(int i)
{
    char *bin = strdup(tu_bin("ine-policy")), *log = svc_log(i, "policy"), *sock = tu_path(dd[i], "run/policy.sock");
    char *argv[] = {bin, "--data-dir", dd[i], "--rest-port", "0", NULL};
    int64_t end = now_ms() + WAIT_MS;
    policy[i] = svc_spawn(argv, NULL, log);
    cr_assert_gt(policy[i], 0, "%s", svc_why());
    while (access(sock, F_OK) != 0) {
        cr_assert(svc_running(policy[i], NULL), "ine-policy on node %d exited: %s", i + 1, svc_tail(log));
        cr_assert_lt(now_ms(), end, "ine-policy on node %d not up: %s", i + 1, svc_tail(log));
        sleep_ms(20);
    }
    free(bin);
    free(log);
    free(sock);
}

static void copy_seal_key(int to)
{
    char *from = tu_path(dd[0], "seal.key"), *dst = tu_path(dd[to], "seal.key");
    size_t len;
    char *key = tu_read_file(from, &len);
    cr_assert(key);
    cr_assert_eq(tu_write_file(dst, key, len), 0);
    cr_assert_eq(chmod(dst, 0600), 0);
    free(key);
    free(from);
    free(dst);
}

/* Three members, three nodes; the cluster created through node 1; every mirror caught up. */
static uint64_t g_created;

static void setup(void)
{
    char *out = NULL, *err = NULL;
    tmp = tu_tmpdir();
    cr_assert(tmp);
    cr_assert_eq(ef_start(&ec, tmp, NODES, 30000), 0, "%s", ef_why());
    for (int i = 0; i < NODES; i++) make_dd(i);
    cr_assert_eq(inectl(0, &out, &err, "--json", "cluster", "create", "name", "cp", "nodes", "127.0.0.1,127.0.0.2,127.0.0.3",
                        "ca_key_bits", "2048", NULL),
                 0, "cluster create: %s", err);
    {
        json_t *j = json_loads(out, 0, NULL);
        cr_assert(j, "not JSON: %s", out);
        g_created = (uint64_t)json_integer_value(json_object_get(j, "last_seq"));
        json_decref(j);
    }
    cr_assert_gt(g_created, 3);
    free(out);
    free(err);
    for (int i = 1; i < NODES; i++) copy_seal_key(i);
    for (int i = 0; i < NODES; i++) start_mirror(i);
    for (int i = 0; i < NODES; i++) wait_seq(i, g_created);
}

static void teardown(void)
{
    for (int i = 0; i < NODES; i++)
        if (ca[i] > 0) svc_stop(ca[i], 5000), ca[i] = 0;
    for (int i = 0; i < NODES + 2; i++) {
        if (policy[i] > 0) svc_stop(policy[i], 5000);
        if (mirror[i] > 0) svc_stop(mirror[i], 5000);
        policy[i] = mirror[i] = 0;
        free(dd[i]);
        dd[i] = NULL;
    }
    ef_stop(&ec);
    if (getenv("INE_TEST_KEEP")) fprintf(stderr, "kept %s\n", tmp);
    else tu_rmrf(tmp);
    free(tmp);
}

TestSuite(control_plane, .init = setup, .fini = teardown, .timeout = 240);

/* --- checks on the logs ---------------------------------------------------------------------- */

/* ine-log verify on node i passes. */
static void verify(int i)
{
    char *bin = strdup(tu_bin("ine-log")), *out = NULL, *err = NULL;
    char *argv[] = {bin, "--data-dir", dd[i], "verify", NULL};
    int rc = tu_run(argv, NULL, &out, &err);
    cr_assert_eq(rc, 0, "ine-log verify on node %d: %s%s", i + 1, out, err);
    free(out);
    free(err);
    free(bin);
}

/* Every record of node a's log equals node b's, byte for byte. */
static void same_logs(int a, int b)
{
    evlog_opts o = {.read_only = 1};
    evlog_t *la, *lb;
    char *pa = tu_path(dd[a], "log"), *pb = tu_path(dd[b], "log");
    uint64_t na, nb;
    cr_assert_eq(evlog_open(pa, &o, &la), 0);
    cr_assert_eq(evlog_open(pb, &o, &lb), 0);
    cr_assert_eq(evlog_last_seq(la, &na), 0);
    cr_assert_eq(evlog_last_seq(lb, &nb), 0);
    cr_assert_eq(na, nb, "node %d holds %llu records, node %d %llu", a + 1, (unsigned long long)na, b + 1, (unsigned long long)nb);
    for (uint64_t s = 1; s <= na; s++) {
        uint8_t *ra, *rb;
        size_t ka, kb;
        cr_assert_eq(evlog_read_raw(la, s, &ra, &ka), 0);
        cr_assert_eq(evlog_read_raw(lb, s, &rb, &kb), 0);
        cr_assert(ka == kb && !memcmp(ra, rb, ka), "record %llu differs between node %d and node %d", (unsigned long long)s, a + 1,
                  b + 1);
        free(ra);
        free(rb);
    }
    evlog_close(la);
    evlog_close(lb);
    free(pa);
    free(pb);
}

typedef struct {
    int names[400];   /* how often database dbN was created */
    uint64_t last;    /* seqs strictly increasing */
} db_count;

static int count_db(const evlog_record *rec, void *ud)
{
    db_count *c = ud;
    cr_assert_gt(rec->seq, c->last);
    c->last = rec->seq;
    if (rec->ev && rec->ev->body_case == INE__V1__EVENT__BODY_DATABASE_CREATED) {
        int k = atoi(rec->ev->database_created->name + 2);
        if (k >= 0 && k < 400) c->names[k]++;
    }
    return 0;
}

static void count_dbs(int i, db_count *c)
{
    evlog_opts o = {.read_only = 1};
    evlog_t *l;
    char *p = tu_path(dd[i], "log");
    memset(c, 0, sizeof *c);
    cr_assert_eq(evlog_open(p, &o, &l), 0);
    cr_assert_eq(evlog_iterate(l, 1, 0, 0, count_db, c), 0);
    evlog_close(l);
    free(p);
}

/* inectl --json status on node i: its "consensus" object (the caller decrefs the whole). */
static json_t *status_json(int i, json_t **consensus)
{
    char *out = NULL, *err = NULL;
    cr_assert_eq(inectl(i, &out, &err, "--json", "status", NULL), 0, "status: %s", err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "status is not JSON: %s", out);
    *consensus = json_object_get(j, "consensus");
    cr_assert(json_is_object(*consensus), "status has no consensus: %s", out);
    free(out);
    free(err);
    return j;
}

/* --- tests ------------------------------------------------------------------------------------- */

/* One create through node i's policy, with a request id; its exit status. */
static pid_t create_async(int i, int id, const char *prefix)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char name[16], port[16], shard[32], reqid[32];
        char *err = NULL, *errf = svc_log(id, prefix);
        snprintf(name, sizeof name, "db%d", id);
        snprintf(port, sizeof port, "%d", 13000 + id);
        snprintf(shard, sizeof shard, "127.0.0.%d:%d", i + 1, 16000 + id);
        snprintf(reqid, sizeof reqid, "race-%d", id);
        int rc = inectl(i, NULL, &err, "--request-id", reqid, "create", "db", "name", name, "port", port, "shard_node",
                        i == 0 ? "1" : "2", "shard_address", shard, NULL);
        if (err) tu_write_file(errf, err, strlen(err));
        _exit(rc);
    }
    return pid;
}

static void reap_all(pid_t *kids, int n, const char *prefix)
{
    for (int k = 0; k < n; k++) {
        int st;
        cr_assert_eq(waitpid(kids[k], &st, 0), kids[k]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a create failed (status %d): %s", st, svc_tail(svc_log(k, prefix)));
    }
}

Test(control_plane, three_hundred_changes_racing_on_three_nodes_commit_once_each_in_one_chain)
{
    enum { TOTAL = 300, WAVE = 30, RETRIED = 30 };
    pid_t kids[WAVE];
    for (int i = 0; i < NODES; i++) start_policy(i);
    /* 300 creates, 30 at a time, each wave spread over the three nodes: all racing for the head. */
    for (int w = 0; w < TOTAL; w += WAVE) {
        for (int k = 0; k < WAVE; k++) kids[k] = create_async((w + k) % NODES, w + k, "create-err");
        for (int k = 0; k < WAVE; k++) {
            int st;
            cr_assert_eq(waitpid(kids[k], &st, 0), kids[k]);
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "create db%d failed (status %d): %s", w + k, st,
                      svc_tail(svc_log(w + k, "create-err")));
        }
    }
    uint64_t head = last_seq(0);
    cr_assert_geq(head, g_created + TOTAL);
    for (int i = 0; i < NODES; i++) wait_seq(i, head);
    /* Retries with the same request ids, each on another node than the first time: answered
     * from the first attempt, nothing appended. */
    for (int k = 0; k < RETRIED; k++) kids[k] = create_async((k + 1) % NODES, k, "retry-err");
    reap_all(kids, RETRIED, "retry-err");
    sleep_ms(300);
    cr_assert_eq(last_seq(0), head, "a retry appended");
    for (int i = 0; i < NODES; i++) {
        db_count c;
        count_dbs(i, &c);
        for (int k = 0; k < TOTAL; k++) cr_assert_eq(c.names[k], 1, "node %d: db%d created %d times", i + 1, k, c.names[k]);
        verify(i);
    }
    same_logs(0, 1);
    same_logs(0, 2);
    /* Every database got its own uid, although three nodes chose uids at once. */
    {
        json_t *c, *j = status_json(2, &c);
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
    start_policy(0);
    start_policy(1);
    cr_assert_eq(inectl(0, &out, NULL, "--json", "--request-id", "ticket-1", "create", "db", "name", "orders", "port", "12000",
                        "shard_node", "1", "shard_address", "127.0.0.1:6379", NULL),
                 0, "%s", out);
    json_t *a = json_loads(out, 0, NULL);
    free(out);
    uint64_t head = last_seq(0);
    wait_seq(1, head);
    cr_assert_eq(inectl(1, &out, NULL, "--json", "--request-id", "ticket-1", "create", "db", "name", "orders", "port", "12000",
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
    sleep_ms(300);
    cr_assert_eq(last_seq(0), head, "the retry appended");
    cr_assert_eq(last_seq(1), head);
    cr_assert_eq(svc_count_events(dd[1], INE__V1__EVENT__BODY_DATABASE_CREATED), 1);
}

Test(control_plane, without_quorum_a_write_fails_fast_and_writes_nothing_then_resumes)
{
    char *out = NULL, *err = NULL;
    start_policy(0);
    uint64_t head = last_seq(0);
    json_t *c, *j = status_json(0, &c);
    cr_assert_str_eq(json_string_value(json_object_get(c, "mode")), "etcd");
    cr_assert_eq(json_array_size(json_object_get(c, "members")), NODES);
    cr_assert(json_is_true(json_object_get(c, "quorum")));
    cr_assert(json_is_string(json_object_get(c, "leader")), "no leader named");
    cr_assert_eq(json_integer_value(json_object_get(c, "log_head_seq")), (json_int_t)head);
    json_decref(j);
    cr_assert_eq(ef_kill(&ec, 1), 0, "%s", ef_why());
    cr_assert_eq(ef_kill(&ec, 2), 0, "%s", ef_why());
    {
        /* Status still answers, and says what is wrong. */
        char *text = NULL;
        j = status_json(0, &c);
        cr_assert(json_is_false(json_object_get(c, "quorum")), "quorum with two of three members dead");
        json_decref(j);
        cr_assert_eq(inectl(0, &text, NULL, "status", NULL), 0);
        cr_assert(strstr(text, "quorum NO (writes are refused)"), "%s", text);
        free(text);
    }
    int64_t t0 = now_ms();
    int rc = inectl(0, &out, &err, "create", "db", "name", "lost", "port", "12000", "shard_node", "1", "shard_address",
                    "127.0.0.1:6379", NULL);
    int64_t took = now_ms() - t0;
    cr_assert_neq(rc, 0, "a write without quorum succeeded: %s", out);
    cr_assert(strstr(err, "NO_QUORUM") && strstr(err, "etcd"), "the refusal does not name the cause: %s", err);
    /* The front door's deadline is 1.8 s; etcd alone would take 7 s. Generous: inectl's own
     * start and the policy round trip come on top. */
    cr_assert_lt(took, 6000, "the refusal took %lld ms", (long long)took);
    cr_assert_eq(last_seq(0), head, "a refused write reached the log");
    free(out);
    free(err);
    out = err = NULL;
    /* The majority returns: writes go through again, nothing done by hand. */
    cr_assert_eq(ef_restart(&ec, 1, 30000), 0, "%s", ef_why());
    cr_assert_eq(ef_restart(&ec, 2, 30000), 0, "%s", ef_why());
    {
        int64_t end = now_ms() + WAIT_MS;
        while ((rc = inectl(0, &out, &err, "create", "db", "name", "back", "port", "12001", "shard_node", "1", "shard_address",
                            "127.0.0.1:6380", NULL)) != 0) {
            cr_assert_lt(now_ms(), end, "no write accepted after the majority came back: %s", err);
            free(out);
            free(err);
            out = err = NULL;
            sleep_ms(200);
        }
    }
    free(out);
    free(err);
    head = last_seq(0);
    for (int i = 0; i < NODES; i++) wait_seq(i, head);
    cr_assert_eq(svc_count_events(dd[2], INE__V1__EVENT__BODY_DATABASE_CREATED), 1, "only 'back' was created");
    same_logs(0, 2);
}

Test(control_plane, a_mirror_started_late_copies_the_whole_history)
{
    char *out = NULL;
    start_policy(0);
    for (int k = 0; k < 5; k++) {
        char name[16], port[16];
        snprintf(name, sizeof name, "db%d", k);
        snprintf(port, sizeof port, "%d", 12000 + k);
        cr_assert_eq(inectl(0, &out, NULL, "create", "db", "name", name, "port", port, "shard_node", "1", "shard_address",
                            "127.0.0.1:6379", NULL),
                     0, "%s", out);
        free(out);
        out = NULL;
    }
    make_dd(3);
    start_mirror(3);
    wait_seq(3, last_seq(0));
    same_logs(0, 3);
    verify(3);
}

Test(control_plane, a_mirror_whose_log_disagrees_stops_and_names_the_seq)
{
    char *out = NULL, *err = NULL;
    int st;
    /* Node 5's log holds another cluster's first records (made without etcd). */
    dd[4] = tu_path(tmp, "node5");
    cr_assert_eq(mkdir(dd[4], 0700), 0);
    cr_assert_eq(inectl(4, &out, &err, "cluster", "create", "name", "other", "nodes", "127.0.0.9", "ca_key_bits", "2048", NULL), 0,
                 "%s", err);
    free(out);
    free(err);
    svc_snap before;
    cr_assert_eq(svc_snap_take(dd[4], &before), 0, "%s", svc_why());
    write_conf(4, 0);
    start_mirror(4);
    {
        int64_t end = now_ms() + WAIT_MS;
        while (svc_running(mirror[4], &st)) {
            cr_assert_lt(now_ms(), end, "the mirror goes on over a log that disagrees");
            sleep_ms(50);
        }
        mirror[4] = 0;
    }
    cr_assert_eq(st, 3, "exit status %d", st);
    {
        char *log = svc_log(4, "mirror");
        cr_assert(strstr(svc_tail(log), "disagrees with the cluster's") && strstr(svc_tail(log), "record 1"),
                  "the mirror does not say which record: %s", svc_tail(log));
        free(log);
    }
    cr_assert_eq(svc_snap_same(dd[4], &before), 0, "the mirror changed the local log: %s", svc_why());
    svc_snap_free(&before);
}

Test(control_plane, a_second_cluster_create_against_the_same_etcd_is_refused)
{
    char *out = NULL, *err = NULL;
    dd[3] = tu_path(tmp, "fresh");
    cr_assert_eq(mkdir(dd[3], 0700), 0);
    write_conf(3, 1);
    int rc = inectl(3, &out, &err, "cluster", "create", "name", "again", "nodes", "127.0.0.1", "ca_key_bits", "2048", NULL);
    cr_assert_neq(rc, 0, "a second cluster was created: %s", out);
    cr_assert(strstr(err, "already holds"), "%s", err);
    {
        char *k = tu_path(dd[3], "seal.key");
        cr_assert_neq(access(k, F_OK), 0, "the refused create left a seal key behind");
        free(k);
    }
    cr_assert_eq(last_seq(0), g_created, "the refused create appended");
    free(out);
    free(err);
}

/* --- the CA: one acts, the others stand by ------------------------------------------------------ */

static void start_ca(int i)
{
    char *bin = strdup(tu_bin("ine-ca")), *log = svc_log(i, "ca");
    char *argv[] = {bin, "--data-dir", dd[i], "--ca-key-bits", "2048", "--check-interval", "1", "--lease-ttl", "2", NULL};
    ca[i] = svc_spawn(argv, NULL, log);
    cr_assert_gt(ca[i], 0, "%s", svc_why());
    free(bin);
    free(log);
}

static int log_has(int i, const char *what, const char *text)
{
    char *p = svc_log(i, what);
    size_t len;
    char *s = tu_read_file(p, &len);
    int n = 0;
    for (const char *q = s; q && (q = strstr(q, text)); q += strlen(text)) n++;
    free(s);
    free(p);
    return n;
}

static int count_all(int i, int body_case)
{
    int n = svc_count_events(dd[i], body_case);
    cr_assert_geq(n, 0, "%s", svc_why());
    return n;
}

static void wait_count(int i, int body_case, int want)
{
    int64_t end = now_ms() + 60000;
    while (count_all(i, body_case) < want) {
        cr_assert_lt(now_ms(), end, "node %d's log has %d events of type %d, not %d", i + 1, count_all(i, body_case), body_case, want);
        sleep_ms(50);
    }
}

/* Which node's ine-ca acts now (the last to say so), -1 if none within the wait. */
static int acting_ca(int64_t wait_ms)
{
    int64_t end = now_ms() + wait_ms;
    for (;;) {
        int best = -1, most = 0;
        for (int i = 0; i < NODES; i++) {
            int a = ca[i] > 0 ? log_has(i, "ca", "acting as the cluster CA") : 0;
            int s = ca[i] > 0 ? log_has(i, "ca", "standing by") : 0;
            if (a > s && a > most) best = i, most = a;
        }
        if (best >= 0 || now_ms() > end) return best;
        sleep_ms(50);
    }
}

static void stop_cas(void)
{
    for (int i = 0; i < NODES; i++)
        if (ca[i] > 0) svc_stop(ca[i], 5000), ca[i] = 0;
}

Test(control_plane, one_ca_acts_and_a_holder_killed_mid_rotation_is_replaced_and_the_rotation_completes)
{
    enum { CERTS = NODES * 2 };
    for (int i = 0; i < NODES; i++) start_ca(i);
    for (int i = 0; i < NODES; i++) start_policy(i);
    /* Initial certificates, issued once although three CAs run. */
    wait_count(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, CERTS);
    sleep_ms(1500);
    cr_assert_eq(count_all(0, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED), CERTS, "a certificate was issued twice");
    int h = acting_ca(10000);
    cr_assert_geq(h, 0, "no ine-ca acts");
    {
        json_t *c, *j = status_json((h + 2) % NODES, &c);
        char want[64];
        snprintf(want, sizeof want, "node%d", h + 1);
        cr_assert(json_is_string(json_object_get(c, "ca_holder")) && strstr(json_string_value(json_object_get(c, "ca_holder")), want),
                  "status does not name the CA holder on node %d", h + 1);
        json_decref(j);
    }
    for (int i = 0; i < NODES; i++)
        if (i != h) cr_assert_eq(log_has(i, "ca", "acting as the cluster CA"), 0, "node %d's standby CA acted too", i + 1);

    /* A rotation asked on a standby's node: recorded there, done by the acting CA, answered. */
    int s = (h + 1) % NODES;
    char *out = NULL, *err = NULL;
    cr_assert_eq(inectl(s, &out, &err, "cluster", "certificate", "rotate", NULL), 0, "rotate on a standby: %s%s", out, err);
    free(out);
    free(err);
    cr_assert_eq(count_all(s, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED), 1);

    /* Another, on the holder's node, and the holder killed as soon as it is recorded. */
    pid_t kid = fork();
    cr_assert_neq(kid, -1);
    if (kid == 0) _exit(inectl(h, NULL, NULL, "cluster", "certificate", "rotate", NULL));
    wait_count(s, INE__V1__EVENT__BODY_ROTATION_REQUESTED, 2);
    cr_assert_eq(kill(ca[h], SIGKILL), 0);
    int64_t killed = now_ms();
    waitpid(ca[h], NULL, 0);
    ca[h] = 0;
    /* A new holder within the TTL (2 s) plus etcd's own failover; generous for a busy host. */
    wait_count(s, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED, 2);
    int n = acting_ca(1000);
    cr_assert(n >= 0 && n != h, "no other CA took over");
    cr_assert_lt(now_ms() - killed, 60000);
    /* The inectl that asked the killed CA gets no answer from it: not ours to wait for. */
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    {
        uint64_t head = last_seq(s);
        for (int i = 0; i < NODES; i++) wait_seq(i, head);
    }
    sleep_ms(1500); /* nothing more comes: the rotation was completed once */
    cr_assert_eq(count_all(s, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED), 2, "a rotation completed twice");
    cr_assert_eq(count_all(s, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED), 3 * CERTS, "issued: %d",
                 count_all(s, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED));
    for (int i = 0; i < NODES; i++) verify(i);
    same_logs(0, 1);
    same_logs(0, 2);
    stop_cas();
}

Test(control_plane, an_append_fenced_on_a_holding_that_ended_is_refused_and_writes_nothing)
{
    etcd_opts eo = {.endpoints = ef_endpoints(&ec)};
    etcd_t *e = NULL;
    elect_t *el = NULL, *el2 = NULL;
    evlog_t *log = NULL;
    commit_t *c = NULL;
    int holding = 0, changed = 0;
    char *p = tu_path(dd[0], "log");
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
    commit_cfg cc = {.data_dir = dd[0], .producer = "test", .log = log};
    cr_assert_eq(commit_open(&cc, &c), 0, "%s", ine_err_msg());
    cr_assert_str_eq(commit_backend(c), "etcd");
    uint64_t head = last_seq(0), seq = 0;
    Ine__V1__AlertCleared b = INE__V1__ALERT_CLEARED__INIT;
    evlog_event ev = INE__V1__EVENT__INIT, *evs[1] = {&ev};
    b.alert_id = "x";
    ev.body_case = INE__V1__EVENT__BODY_ALERT_CLEARED;
    ev.alert_cleared = &b;
    commit_opts o = {.fence_key = "/ine/test/holder", .fence_rev = fence};
    cr_assert_eq(commit_append(c, evs, 1, &o, &seq), INE_EPERM, "a fenced-off append: %s", ine_err_msg());
    cr_assert(strstr(ine_err_msg(), "fenced off"), "%s", ine_err_msg());
    sleep_ms(300);
    cr_assert_eq(last_seq(0), head, "the fenced-off append reached the log");
    /* The current holder's fence lets it through. */
    o.fence_rev = elect_fence(el2);
    cr_assert_eq(commit_append(c, evs, 1, &o, &seq), 0, "%s", ine_err_msg());
    cr_assert_eq(seq, head + 1);
    cr_assert_eq(last_seq(0), head + 1, "read-your-writes: the local log holds it on return");
    commit_close(c);
    evlog_close(log);
    elect_close(el2);
    etcd_close(e);
    free(p);
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
    char *p = tu_path(dd[i], "log");
    cr_assert_eq(evlog_open(p, &o, &l), 0);
    cr_assert_eq(evlog_iterate(l, 1, 0, 0, find_alert, &f), 0);
    evlog_close(l);
    free(p);
    return f;
}

Test(control_plane, etcd_storage_near_its_quota_raises_an_alert)
{
    etcd_opts eo = {.endpoints = ef_endpoints(&ec)};
    etcd_status_info si;
    etcd_t *e = NULL;
    pid_t al;
    char *conf = tu_path(dd[0], "etcd.conf"), *log = svc_log(0, "alerting"), *bin = strdup(tu_bin("ine-alerting"));
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
    cr_assert_eq(etcd_status(e, ef_endpoint(&ec, 0), &si), 0, "%s", ine_err_msg());
    cr_assert_lt(si.db_size, 6 << 20, "etcd's database is already %lld bytes", (long long)si.db_size);

    snprintf(port, sizeof port, "%d", mport);
    char *argv[] = {bin, "--data-dir", dd[0], "--check-interval", "1", "--metrics-addr", "127.0.0.1", "--metrics-port", port, NULL};
    al = svc_spawn(argv, NULL, log);
    cr_assert_gt(al, 0);
    sleep_ms(2500);
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
        int64_t end = now_ms() + WAIT_MS;
        alert_find f;
        while ((f = alerts_named(0, "consensus_storage_near_quota")).n == 0) {
            cr_assert_lt(now_ms(), end, "no storage alert; ine-alerting: %s", svc_tail(log));
            sleep_ms(100);
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
    etcd_opts eo = {.endpoints = ef_endpoints(&ec)};
    etcd_member *ms = NULL;
    size_t n = 0;
    etcd_t *e = NULL;
    char *out = NULL, *err = NULL;
    char uid[16], said[48], *nodename;
    int dead = 2;
    start_policy(0);
    /* A node dies for good, its member and its mirror: the etcd leader's when that is node 2's
     * or node 3's (a removal sent while etcd elects again goes unanswered), else node 3's. */
    cr_assert_eq(etcd_open(&eo, &e), 0);
    for (int m = 1; m < NODES; m++) {
        etcd_status_info si;
        if (etcd_status(e, ef_endpoint(&ec, m), &si) == 0 && si.leader == si.member_id) dead = m;
    }
    etcd_close(e);
    e = NULL;
    cr_assert_eq(ef_kill(&ec, dead), 0, "%s", ef_why());
    svc_stop(mirror[dead], 5000);
    mirror[dead] = 0;
    snprintf(uid, sizeof uid, "%d", dead + 1);
    snprintf(said, sizeof said, "node %d removed", dead + 1);
    nodename = ec.m[dead].name;
    cr_assert_eq(inectl(0, &out, &err, "node", "remove", uid, NULL), 0, "node remove: %s%s", out, err);
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
    cr_assert_eq(svc_count_events(dd[0], INE__V1__EVENT__BODY_NODE_REMOVED), 1);
    /* Two of two members: writes go on. */
    cr_assert_eq(inectl(0, &out, &err, "create", "db", "name", "after", "port", "12000", "shard_node", "1", "shard_address",
                        "127.0.0.1:6379", NULL),
                 0, "a write after the removal: %s", err);
    free(out);
    free(err);
    out = err = NULL;
    wait_seq(3 - dead, last_seq(0));
    same_logs(0, 3 - dead);
    /* Refusals change nothing. */
    uint64_t head = last_seq(0);
    snprintf(said, sizeof said, "no node %d in this cluster [NOT_FOUND]", dead + 1);
    cr_assert_eq(inectl(0, &out, &err, "node", "remove", uid, NULL), 1);
    cr_assert(strstr(err, said), "%s", err);
    free(out);
    free(err);
    out = err = NULL;
    cr_assert_eq(inectl(0, &out, &err, "node", "remove", "three", NULL), 2);
    cr_assert(strstr(err, "'three' is not a node uid"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(last_seq(0), head);
}
