/* cpfix.c — see cpfix.h. */
#include "cpfix.h"

#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "svc.h"
#include "testutil.h"

char *cp_tmp;
ef_cluster cp_ec;
char *cp_dd[CP_NODES + 2];
int cp_rest_port[CP_NODES + 2];
pid_t cp_mirror[CP_NODES + 2], cp_policy[CP_NODES + 2], cp_ca[CP_NODES];

int64_t cp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cp_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* etcd.conf for data dir i: member `first` first, then the others. */
void cp_write_conf(int i, int first)
{
    char buf[1024], *p = tu_path(cp_dd[i], "etcd.conf");
    int n = snprintf(buf, sizeof buf, "endpoints=%s", ef_endpoint(&cp_ec, first));
    for (int m = 0; m < CP_NODES; m++)
        if (m != first) n += snprintf(buf + n, sizeof buf - (size_t)n, ",%s", ef_endpoint(&cp_ec, m));
    snprintf(buf + n, sizeof buf - (size_t)n, "\n");
    cr_assert_eq(tu_write_file(p, buf, strlen(buf)), 0);
    free(p);
}

void cp_make_dd(int i)
{
    char name[16];
    snprintf(name, sizeof name, "node%d", i + 1);
    cp_dd[i] = tu_path(cp_tmp, name);
    cr_assert_eq(mkdir(cp_dd[i], 0700), 0);
    cp_write_conf(i, i % CP_NODES);
}

int cp_inectl(int i, char **out, char **err, ...)
{
    char *argv[40] = {(char *)tu_bin("inectl"), "--data-dir", cp_dd[i]};
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

char *cp_log_path(int i, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "%s-%d.log", what, i + 1);
    return tu_path(cp_tmp, name);
}

void cp_start_mirror(int i)
{
    char *bin = strdup(tu_bin("ine-mirror")), *log = cp_log_path(i, "mirror");
    char *argv[] = {bin, "--data-dir", cp_dd[i], NULL};
    cp_mirror[i] = svc_spawn(argv, NULL, log);
    cr_assert_gt(cp_mirror[i], 0, "%s", svc_why());
    free(bin);
    free(log);
}

uint64_t cp_last_seq(int i)
{
    uint64_t s = 0;
    char *p = tu_path(cp_dd[i], "log/data.mdb");
    int there = access(p, F_OK) == 0;
    free(p);
    if (there) cr_assert_eq(svc_last_seq(cp_dd[i], &s), 0, "%s", svc_why());
    return s;
}

/* The last seq, 0 while the log is not there or not yet set up (a mirror creating it). */
uint64_t cp_try_last_seq(int i)
{
    uint64_t s = 0;
    return svc_last_seq(cp_dd[i], &s) == 0 ? s : 0;
}

void cp_wait_seq(int i, uint64_t seq)
{
    int64_t end = cp_now_ms() + CP_WAIT_MS;
    while (cp_try_last_seq(i) < seq) {
        char *log = cp_log_path(i, "mirror");
        cr_assert_lt(cp_now_ms(), end, "node %d's log holds %llu, not %llu, after %d ms; mirror: %s", i + 1,
                     (unsigned long long)cp_try_last_seq(i), (unsigned long long)seq, CP_WAIT_MS, svc_tail(log));
        free(log);
        cp_sleep_ms(20);
    }
}

void cp_start_policy(int i)
{
    char *bin = strdup(tu_bin("ine-policy")), *log = cp_log_path(i, "policy"), *sock = tu_path(cp_dd[i], "run/policy.sock");
    char *argv[] = {bin, "--data-dir", cp_dd[i], "--rest-port", "0", NULL};
    int64_t end = cp_now_ms() + CP_WAIT_MS;
    cp_policy[i] = svc_spawn(argv, NULL, log);
    cr_assert_gt(cp_policy[i], 0, "%s", svc_why());
    while (access(sock, F_OK) != 0) {
        cr_assert(svc_running(cp_policy[i], NULL), "ine-policy on node %d exited: %s", i + 1, svc_tail(log));
        cr_assert_lt(cp_now_ms(), end, "ine-policy on node %d not up: %s", i + 1, svc_tail(log));
        cp_sleep_ms(20);
    }
    free(bin);
    free(log);
    free(sock);
}

void cp_start_policy_rest(int i)
{
    char *bin = strdup(tu_bin("ine-policy")), *log = cp_log_path(i, "policy"), port[16], node[16];
    int64_t end = cp_now_ms() + CP_WAIT_MS;
    cp_rest_port[i] = svc_free_port();
    snprintf(port, sizeof port, "%d", cp_rest_port[i]);
    snprintf(node, sizeof node, "%d", i + 1);
    char *argv[] = {bin, "--data-dir", cp_dd[i], "--rest-addr", "127.0.0.1", "--rest-port", port, "--rest-node", node, NULL};
    cp_policy[i] = svc_spawn(argv, NULL, log);
    cr_assert_gt(cp_policy[i], 0, "%s", svc_why());
    while (!svc_port_accepts(cp_rest_port[i])) {
        cr_assert(svc_running(cp_policy[i], NULL), "ine-policy on node %d exited: %s", i + 1, svc_tail(log));
        cr_assert_lt(cp_now_ms(), end, "ine-policy on node %d not serving REST: %s", i + 1, svc_tail(log));
        cp_sleep_ms(20);
    }
    free(bin);
    free(log);
}

void cp_copy_seal_key(int to)
{
    char *from = tu_path(cp_dd[0], "seal.key"), *dst = tu_path(cp_dd[to], "seal.key");
    size_t len;
    char *key = tu_read_file(from, &len);
    cr_assert(key);
    cr_assert_eq(tu_write_file(dst, key, len), 0);
    cr_assert_eq(chmod(dst, 0600), 0);
    free(key);
    free(from);
    free(dst);
}

uint64_t cp_created;

/* Three members, three nodes; the cluster created through node 1; every mirror caught up. */
void cp_setup(const char *nodes)
{
    char *out = NULL, *err = NULL;
    cp_tmp = tu_tmpdir();
    cr_assert(cp_tmp);
    cr_assert_eq(ef_start(&cp_ec, cp_tmp, CP_NODES, 30000), 0, "%s", ef_why());
    for (int i = 0; i < CP_NODES; i++) cp_make_dd(i);
    cr_assert_eq(cp_inectl(0, &out, &err, "--json", "cluster", "create", "name", "cp", "nodes", nodes,
                        "ca_key_bits", "2048", "username", CP_ADMIN, "password", CP_PASSWORD, NULL),
                 0, "cluster create: %s", err);
    {
        json_t *j = json_loads(out, 0, NULL);
        cr_assert(j, "not JSON: %s", out);
        cp_created = (uint64_t)json_integer_value(json_object_get(j, "last_seq"));
        json_decref(j);
    }
    cr_assert_gt(cp_created, 3);
    free(out);
    free(err);
    for (int i = 1; i < CP_NODES; i++) cp_copy_seal_key(i);
    for (int i = 0; i < CP_NODES; i++) cp_start_mirror(i);
    for (int i = 0; i < CP_NODES; i++) cp_wait_seq(i, cp_created);
}

void cp_teardown(void)
{
    if (!cp_tmp) return; /* torn down already */
    for (int i = 0; i < CP_NODES; i++)
        if (cp_ca[i] > 0) svc_stop(cp_ca[i], 5000), cp_ca[i] = 0;
    for (int i = 0; i < CP_NODES + 2; i++) {
        if (cp_policy[i] > 0) svc_stop(cp_policy[i], 5000);
        if (cp_mirror[i] > 0) svc_stop(cp_mirror[i], 5000);
        cp_policy[i] = cp_mirror[i] = 0;
        free(cp_dd[i]);
        cp_dd[i] = NULL;
    }
    ef_stop(&cp_ec);
    if (getenv("INE_TEST_KEEP")) fprintf(stderr, "kept %s\n", cp_tmp);
    else tu_rmrf(cp_tmp);
    free(cp_tmp);
    cp_tmp = NULL;
}


/* --- checks on the logs ---------------------------------------------------------------------- */

/* ine-log verify on node i passes. */
void cp_verify(int i)
{
    char *bin = strdup(tu_bin("ine-log")), *out = NULL, *err = NULL;
    char *argv[] = {bin, "--data-dir", cp_dd[i], "verify", NULL};
    int rc = tu_run(argv, NULL, &out, &err);
    cr_assert_eq(rc, 0, "ine-log verify on node %d: %s%s", i + 1, out, err);
    free(out);
    free(err);
    free(bin);
}

/* Every record of node a's log equals node b's, byte for byte. */
void cp_same_logs(int a, int b)
{
    evlog_opts o = {.read_only = 1};
    evlog_t *la, *lb;
    char *pa = tu_path(cp_dd[a], "log"), *pb = tu_path(cp_dd[b], "log");
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

static int cp__count_db(const evlog_record *rec, void *ud)
{
    cp_db_count *c = ud;
    cr_assert_gt(rec->seq, c->last);
    c->last = rec->seq;
    if (rec->ev && rec->ev->body_case == INE__V1__EVENT__BODY_DATABASE_CREATED) {
        int k = atoi(rec->ev->database_created->name + 2);
        if (k >= 0 && k < 400) c->names[k]++;
    }
    return 0;
}

void cp_count_dbs(int i, cp_db_count *c)
{
    evlog_opts o = {.read_only = 1};
    evlog_t *l;
    char *p = tu_path(cp_dd[i], "log");
    memset(c, 0, sizeof *c);
    cr_assert_eq(evlog_open(p, &o, &l), 0);
    cr_assert_eq(evlog_iterate(l, 1, 0, 0, cp__count_db, c), 0);
    evlog_close(l);
    free(p);
}

/* inectl --json status on node i: its "consensus" object (the caller decrefs the whole). */
json_t *cp_status_json(int i, json_t **consensus)
{
    char *out = NULL, *err = NULL;
    cr_assert_eq(cp_inectl(i, &out, &err, "--json", "status", NULL), 0, "status: %s", err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "status is not JSON: %s", out);
    *consensus = json_object_get(j, "consensus");
    cr_assert(json_is_object(*consensus), "status has no consensus: %s", out);
    free(out);
    free(err);
    return j;
}

/* --- the CA --------------------------------------------------------------------------------------- */

void cp_start_ca(int i, const char *lease_ttl)
{
    char *bin = strdup(tu_bin("ine-ca")), *log = cp_log_path(i, "ca");
    char *argv[] = {bin, "--data-dir", cp_dd[i], "--ca-key-bits", "2048", "--check-interval", "1", "--lease-ttl", (char *)lease_ttl, NULL};
    cp_ca[i] = svc_spawn(argv, NULL, log);
    cr_assert_gt(cp_ca[i], 0, "%s", svc_why());
    free(bin);
    free(log);
}

int cp_log_has(int i, const char *what, const char *text)
{
    char *p = cp_log_path(i, what);
    size_t len;
    char *s = tu_read_file(p, &len);
    int n = 0;
    for (const char *q = s; q && (q = strstr(q, text)); q += strlen(text)) n++;
    free(s);
    free(p);
    return n;
}

int cp_count_all(int i, int body_case)
{
    int n = svc_count_events(cp_dd[i], body_case);
    cr_assert_geq(n, 0, "%s", svc_why());
    return n;
}

void cp_wait_count(int i, int body_case, int want)
{
    int64_t end = cp_now_ms() + 60000;
    while (cp_count_all(i, body_case) < want) {
        cr_assert_lt(cp_now_ms(), end, "node %d's log has %d events of type %d, not %d", i + 1, cp_count_all(i, body_case), body_case, want);
        cp_sleep_ms(50);
    }
}

/* Which node's ine-ca acts now (the last to say so), -1 if none within the wait. */
int cp_acting_ca(int64_t wait_ms)
{
    int64_t end = cp_now_ms() + wait_ms;
    for (;;) {
        int best = -1, most = 0;
        for (int i = 0; i < CP_NODES; i++) {
            int a = cp_ca[i] > 0 ? cp_log_has(i, "ca", "acting as the cluster CA") : 0;
            int s = cp_ca[i] > 0 ? cp_log_has(i, "ca", "standing by") : 0;
            if (a > s && a > most) best = i, most = a;
        }
        if (best >= 0 || cp_now_ms() > end) return best;
        cp_sleep_ms(50);
    }
}

void cp_stop_cas(void)
{
    for (int i = 0; i < CP_NODES; i++)
        if (cp_ca[i] > 0) svc_stop(cp_ca[i], 5000), cp_ca[i] = 0;
}
