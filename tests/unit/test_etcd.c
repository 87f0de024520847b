/* test_etcd.c — the etcd gateway client against real etcd 3.4 members: binary keys and
 * values, prefix ranges with limits, compare-and-put transactions and their failure branch,
 * a 300-op transaction, leases, member list and status, watches (replay, deletes, compaction,
 * a broken stream), endpoint failover, timeouts, lost quorum, and etcd's own 400. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "etcd.h"
#include "etcdfix.h"
#include "svc.h"
#include "testutil.h"

#define START_MS 20000

static char *dir;
static ef_cluster cl;
static etcd_t *E;
static etcd_watch *W;
static int listen_fd = -1;

static void setup(void)
{
    dir = tu_tmpdir();
    cr_assert(dir);
}

static void teardown(void)
{
    etcd_watch_close(W);
    W = NULL;
    etcd_close(E);
    E = NULL;
    ef_stop(&cl);
    if (listen_fd >= 0) close(listen_fd);
    listen_fd = -1;
    tu_rmrf(dir);
    free(dir);
}

TestSuite(etcd, .init = setup, .fini = teardown, .timeout = 90);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start(int n)
{
    cr_assert_eq(ef_start(&cl, dir, n, START_MS), 0, "%s", ef_why());
}

static etcd_t *open_eps(const char *endpoints, int timeout_ms)
{
    etcd_t *e = NULL;
    etcd_opts o = {.endpoints = endpoints, .timeout_ms = timeout_ms};
    int rc = etcd_open(&o, &e);
    cr_assert_eq(rc, INE_OK, "etcd_open(%s): %s", endpoints, ine_err_msg());
    return e;
}

static int64_t put_s(const char *k, const char *v)
{
    int64_t rev = 0;
    int rc = etcd_put(E, k, strlen(k), v, strlen(v), 0, &rev);
    cr_assert_eq(rc, INE_OK, "put %s: %s", k, ine_err_msg());
    cr_assert_gt(rev, 0);
    return rev;
}

static void range_s(const char *k, int serializable, etcd_range_result *r)
{
    etcd_range_req q = {.key = k, .key_len = strlen(k), .serializable = serializable};
    int rc = etcd_range(E, &q, r);
    cr_assert_eq(rc, INE_OK, "range %s: %s", k, ine_err_msg());
}

static int64_t del_s(const char *k)
{
    etcd_op op = {.type = ETCD_OP_DELETE, .key = k, .key_len = strlen(k)};
    etcd_txn_result r = {0};
    int64_t rev;
    int rc = etcd_txn(E, NULL, 0, &op, 1, NULL, 0, &r);
    cr_assert_eq(rc, INE_OK, "delete %s: %s", k, ine_err_msg());
    rev = r.revision;
    etcd_txn_result_free(&r);
    return rev;
}

static void assert_kv(const etcd_kv *kv, const char *k, const char *v)
{
    cr_assert_eq(kv->key_len, strlen(k));
    cr_assert(memcmp(kv->key, k, kv->key_len) == 0, "key %.*s, expected %s", (int)kv->key_len, kv->key, k);
    cr_assert_eq(kv->value_len, strlen(v), "value of %s: %zu bytes, expected %zu", k, kv->value_len, strlen(v));
    cr_assert(memcmp(kv->value, v, kv->value_len) == 0);
}

/* A port nothing listens on (bound, then closed). */
static int dead_port(void)
{
    int p = svc_free_port();
    cr_assert_gt(p, 0, "%s", svc_why());
    return p;
}

/* --- key-values ----------------------------------------------------------------------------- */

Test(etcd, put_range_binary)
{
    static const uint8_t key[] = {'b', 'i', 'n', 0, 'k', 0xff, 0x01};
    uint8_t val[3000];
    etcd_range_result r = {0};
    etcd_range_req q = {.key = key, .key_len = sizeof key};
    int64_t rev1, rev2;
    for (size_t i = 0; i < sizeof val; i++) val[i] = (uint8_t)(i * 7 + 3);
    val[0] = 0;
    val[1500] = 0;
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);

    cr_assert_eq(etcd_put(E, key, sizeof key, val, sizeof val, 0, &rev1), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(r.more, 0);
    cr_assert_geq(r.revision, rev1);
    cr_assert_eq(r.kvs[0].key_len, sizeof key);
    cr_assert(memcmp(r.kvs[0].key, key, sizeof key) == 0);
    cr_assert_eq(r.kvs[0].value_len, sizeof val);
    cr_assert(memcmp(r.kvs[0].value, val, sizeof val) == 0);
    cr_assert_eq(r.kvs[0].value[sizeof val], 0, "values are NUL-terminated");
    cr_assert_eq(r.kvs[0].mod_revision, rev1);
    cr_assert_eq(r.kvs[0].create_revision, rev1);
    cr_assert_eq(r.kvs[0].version, 1);
    cr_assert_eq(r.kvs[0].lease, 0);
    etcd_range_result_free(&r);

    /* An empty value over it: a new version, same creation. */
    cr_assert_eq(etcd_put(E, key, sizeof key, "", 0, 0, &rev2), INE_OK, "%s", ine_err_msg());
    cr_assert_gt(rev2, rev1);
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.kvs[0].value_len, 0);
    cr_assert_eq(r.kvs[0].version, 2);
    cr_assert_eq(r.kvs[0].create_revision, rev1);
    cr_assert_eq(r.kvs[0].mod_revision, rev2);
    etcd_range_result_free(&r);

    /* The old revision still reads the 3000 bytes. */
    q.revision = rev1;
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.kvs[0].value_len, sizeof val);
    etcd_range_result_free(&r);

    /* An absent key: nothing, count 0 (both left out by the gateway). */
    range_s("absent", 0, &r);
    cr_assert_eq(r.n, 0);
    cr_assert_eq(r.count, 0);
    cr_assert_null(r.kvs);
    cr_assert_geq(r.revision, rev2);
    etcd_range_result_free(&r);
    cr_assert_str_eq(etcd_endpoint(E), ef_endpoint(&cl, 0));
}

Test(etcd, prefix_end)
{
    uint8_t out[8];
    cr_assert_eq(etcd_prefix_end("p/", 2, out), 2);
    cr_assert(memcmp(out, "p0", 2) == 0);
    cr_assert_eq(etcd_prefix_end("a\xff\xff", 3, out), 1);
    cr_assert_eq(out[0], 'b');
    cr_assert_eq(etcd_prefix_end("\xff\xff", 2, out), 0);
    cr_assert_eq(etcd_prefix_end("", 0, out), 0);
}

Test(etcd, range_prefix_limit)
{
    uint8_t end[8];
    size_t end_len = etcd_prefix_end("p/", 2, end);
    etcd_range_result r = {0};
    etcd_range_req q = {.key = "p/", .key_len = 2, .range_end = end, .range_end_len = end_len, .limit = 3};
    int64_t first = 0;
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);
    put_s("p", "not in the prefix");
    for (int i = 0; i < 10; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "p/%02d", i);
        snprintf(v, sizeof v, "v%d", i);
        int64_t rev = put_s(k, v);
        if (!first) first = rev;
    }
    put_s("q/x", "after the prefix");

    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 3);
    cr_assert_eq(r.more, 1);
    cr_assert_eq(r.count, 10);
    assert_kv(&r.kvs[0], "p/00", "v0");
    assert_kv(&r.kvs[1], "p/01", "v1");
    assert_kv(&r.kvs[2], "p/02", "v2");
    etcd_range_result_free(&r);

    /* No limit, keys only. */
    q.limit = 0;
    q.keys_only = 1;
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 10);
    cr_assert_eq(r.more, 0);
    cr_assert_eq(r.kvs[9].key_len, 4);
    cr_assert(memcmp(r.kvs[9].key, "p/09", 4) == 0);
    for (size_t i = 0; i < r.n; i++) cr_assert_eq(r.kvs[i].value_len, 0);
    etcd_range_result_free(&r);

    /* As of the first put in the prefix, serializable. */
    q.keys_only = 0;
    q.revision = first;
    q.serializable = 1;
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 1);
    assert_kv(&r.kvs[0], "p/00", "v0");
    etcd_range_result_free(&r);

    /* A zero-length range_end: from the key to the end of the keyspace. */
    etcd_range_req all = {.key = "\0", .key_len = 1, .range_end = end, .range_end_len = 0};
    cr_assert_eq(etcd_range(E, &all, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.count, 12);
    assert_kv(&r.kvs[0], "p", "not in the prefix");
    assert_kv(&r.kvs[11], "q/x", "after the prefix");
    etcd_range_result_free(&r);
}

/* --- transactions ----------------------------------------------------------------------------- */

Test(etcd, txn_compare_and_put)
{
    etcd_txn_result r = {0};
    etcd_range_result rr = {0};
    int64_t rev1, rev2;
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);
    rev1 = put_s("head", "v1");

    etcd_cmp cmp = {.target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .key = "head", .key_len = 4, .revision = rev1};
    etcd_op ok[] = {
        {.type = ETCD_OP_PUT, .key = "head", .key_len = 4, .value = "v2", .value_len = 2},
        {.type = ETCD_OP_RANGE, .key = "head", .key_len = 4},
    };
    etcd_op fail[] = {{.type = ETCD_OP_RANGE, .key = "head", .key_len = 4}};

    cr_assert_eq(etcd_txn(E, &cmp, 1, ok, 2, fail, 1, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.succeeded, 1);
    cr_assert_gt(r.revision, rev1);
    rev2 = r.revision;
    cr_assert_eq(r.n_ranges, 2);
    cr_assert_eq(r.ranges[0].n, 0, "a PUT op's slot is zeroed");
    cr_assert_eq(r.ranges[1].n, 1);
    assert_kv(&r.ranges[1].kvs[0], "head", "v2");
    cr_assert_eq(r.ranges[1].kvs[0].mod_revision, rev2);
    cr_assert_eq(r.ranges[1].kvs[0].create_revision, rev1);
    etcd_txn_result_free(&r);
    cr_assert_null(r.ranges);

    /* The same compare again is stale: the failure branch's RANGE reads the head as it is. */
    cr_assert_eq(etcd_txn(E, &cmp, 1, ok, 2, fail, 1, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.succeeded, 0);
    cr_assert_eq(r.revision, rev2, "a failed txn writes nothing");
    cr_assert_eq(r.n_ranges, 1);
    cr_assert_eq(r.ranges[0].n, 1);
    cr_assert_eq(r.ranges[0].count, 1);
    assert_kv(&r.ranges[0].kvs[0], "head", "v2");
    cr_assert_eq(r.ranges[0].kvs[0].mod_revision, rev2);
    cr_assert_eq(r.ranges[0].kvs[0].version, 2);
    etcd_txn_result_free(&r);

    range_s("head", 0, &rr);
    cr_assert_eq(rr.n, 1);
    assert_kv(&rr.kvs[0], "head", "v2");
    cr_assert_eq(rr.revision, rev2);
    etcd_range_result_free(&rr);

    /* VALUE and VERSION compares; a DELETE op. */
    etcd_cmp cmp2[] = {
        {.target = ETCD_CMP_VALUE, .result = ETCD_CMP_EQUAL, .key = "head", .key_len = 4, .value = "v2", .value_len = 2},
        {.target = ETCD_CMP_VERSION, .result = ETCD_CMP_GREATER, .key = "head", .key_len = 4, .revision = 1},
        {.target = ETCD_CMP_MOD, .result = ETCD_CMP_LESS, .key = "head", .key_len = 4, .revision = rev2 + 1},
    };
    etcd_op del[] = {{.type = ETCD_OP_DELETE, .key = "head", .key_len = 4}};
    cr_assert_eq(etcd_txn(E, cmp2, 3, del, 1, NULL, 0, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.succeeded, 1);
    cr_assert_eq(r.n_ranges, 1);
    etcd_txn_result_free(&r);
    range_s("head", 0, &rr);
    cr_assert_eq(rr.n, 0);
    etcd_range_result_free(&rr);
}

Test(etcd, txn_absent_key)
{
    etcd_txn_result r = {0};
    etcd_cmp cmp[] = {
        {.target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .key = "req/1", .key_len = 5, .revision = 0},
        {.target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .key = "req/1", .key_len = 5, .revision = 0},
    };
    etcd_op ok[] = {{.type = ETCD_OP_PUT, .key = "req/1", .key_len = 5, .value = "x", .value_len = 1}};
    etcd_op fail[] = {{.type = ETCD_OP_RANGE, .key = "req/1", .key_len = 5}};
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);

    cr_assert_eq(etcd_txn(E, cmp, 2, ok, 1, fail, 1, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.succeeded, 1, "an absent key has MOD == 0 and CREATE == 0");
    etcd_txn_result_free(&r);

    cr_assert_eq(etcd_txn(E, cmp, 2, ok, 1, fail, 1, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.succeeded, 0, "the key exists now");
    cr_assert_eq(r.n_ranges, 1);
    cr_assert_eq(r.ranges[0].n, 1);
    assert_kv(&r.ranges[0].kvs[0], "req/1", "x");
    etcd_txn_result_free(&r);
}

Test(etcd, txn_300_puts)
{
    enum { N = 300 };
    static char keys[N][16], vals[N][16];
    etcd_op ops[N];
    etcd_txn_result r = {0};
    etcd_range_result rr = {0};
    uint8_t end[8];
    etcd_range_req q = {.key = "t/", .key_len = 2, .range_end = end, .range_end_len = etcd_prefix_end("t/", 2, end)};
    start(1);
    E = open_eps(ef_endpoints(&cl), 5000);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "t/%03d", i);
        snprintf(vals[i], sizeof vals[i], "value %d", i);
        ops[i] = (etcd_op){.type = ETCD_OP_PUT, .key = keys[i], .key_len = strlen(keys[i]), .value = vals[i],
                           .value_len = strlen(vals[i])};
    }
    cr_assert_eq(etcd_txn(E, NULL, 0, ops, N, NULL, 0, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.succeeded, 1);
    cr_assert_eq(r.n_ranges, N);
    cr_assert_gt(r.revision, 0);

    cr_assert_eq(etcd_range(E, &q, &rr), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(rr.n, N);
    cr_assert_eq(rr.count, N);
    for (int i = 0; i < N; i++) {
        assert_kv(&rr.kvs[i], keys[i], vals[i]);
        cr_assert_eq(rr.kvs[i].mod_revision, r.revision, "one revision for the whole txn");
    }
    etcd_range_result_free(&rr);
    etcd_txn_result_free(&r);
}

/* --- leases ----------------------------------------------------------------------------------- */

Test(etcd, lease_lifecycle)
{
    int64_t id = 0, ttl = 0, left = 0;
    etcd_range_result r = {0};
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);

    cr_assert_eq(etcd_lease_grant(E, 30, &id, &ttl), INE_OK, "%s", ine_err_msg());
    cr_assert_neq(id, 0);
    cr_assert_eq(ttl, 30);
    cr_assert_eq(etcd_lease_keepalive(E, id, &left), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(left, 30);

    cr_assert_eq(etcd_put(E, "leased", 6, "x", 1, id, NULL), INE_OK, "%s", ine_err_msg());
    range_s("leased", 0, &r);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.kvs[0].lease, id, "64-bit lease ids survive the round trip");
    etcd_range_result_free(&r);

    cr_assert_eq(etcd_lease_revoke(E, id), INE_OK, "%s", ine_err_msg());
    range_s("leased", 0, &r);
    cr_assert_eq(r.n, 0, "the key went with its lease");
    etcd_range_result_free(&r);

    cr_assert_eq(etcd_lease_keepalive(E, id, &left), INE_ENOTFOUND, "keepalive of a revoked lease: %s", ine_err_msg());
    cr_assert_eq(left, 0);
    cr_assert_eq(etcd_lease_revoke(E, id), INE_ENOTFOUND, "%s", ine_err_msg());
    cr_assert(strstr(ine_err_msg(), "lease not found"), "etcd's words: %s", ine_err_msg());
    cr_assert_eq(etcd_put(E, "leased", 6, "x", 1, id, NULL), INE_ENOTFOUND, "a put on a revoked lease: %s", ine_err_msg());
    cr_assert_eq(etcd_lease_grant(E, 0, &id, &ttl), INE_EINVAL);
}

/* --- cluster ------------------------------------------------------------------------------------ */

Test(etcd, members_and_status)
{
    etcd_member *m = NULL;
    size_t n = 0;
    etcd_status_info st[3];
    char dead[64];
    start(3);
    E = open_eps(ef_endpoints(&cl), 2000);

    cr_assert_eq(etcd_member_list(E, &m, &n), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(n, 3);
    for (int want = 0; want < 3; want++) {
        int found = 0;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(m[i].name, cl.m[want].name)) {
                found = 1;
                cr_assert_str_eq(m[i].client_urls, ef_endpoint(&cl, want));
                cr_assert(strstr(m[i].peer_urls, "127.0.0.1:"));
                cr_assert_neq(m[i].id, 0);
                cr_assert_eq(m[i].is_learner, 0);
            }
        cr_assert(found, "member %s is in the list", cl.m[want].name);
    }

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(etcd_status(E, ef_endpoint(&cl, i), &st[i]), INE_OK, "%s", ine_err_msg());
        cr_assert_neq(st[i].leader, 0);
        cr_assert_eq(st[i].leader, st[0].leader, "every member names the same leader");
        cr_assert_gt(st[i].db_size, 0);
        cr_assert_gt(st[i].raft_term, 0);
        cr_assert_gt(st[i].revision, 0);
        int known = 0;
        for (size_t k = 0; k < n; k++) known |= m[k].id == st[i].member_id;
        cr_assert(known, "status names a listed member");
    }
    cr_assert_neq(st[0].member_id, st[1].member_id);
    cr_assert_neq(st[1].member_id, st[2].member_id);
    free(m);

    /* Status is of that endpoint only: a dead one is not failed over. */
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", dead_port());
    cr_assert_eq(etcd_status(E, dead, &st[0]), INE_EUNAVAIL, "%s", ine_err_msg());
    cr_assert(strstr(ine_err_msg(), dead), "the message names the endpoint: %s", ine_err_msg());
}

/* --- watches ------------------------------------------------------------------------------------- */

typedef struct {
    etcd_ev_type type[16];
    char key[16][16];
    char val[16][16];
    int64_t mod[16];
    int64_t hdr[16];
    int n, batches;
} seen_t;

static int collect(const etcd_event *evs, size_t n, int64_t hdr, void *ud)
{
    seen_t *s = ud;
    s->batches++;
    for (size_t i = 0; i < n && s->n < 16; i++, s->n++) {
        s->type[s->n] = evs[i].type;
        snprintf(s->key[s->n], sizeof s->key[s->n], "%.*s", (int)evs[i].kv.key_len, evs[i].kv.key);
        snprintf(s->val[s->n], sizeof s->val[s->n], "%.*s", (int)evs[i].kv.value_len, evs[i].kv.value);
        s->mod[s->n] = evs[i].kv.mod_revision;
        s->hdr[s->n] = hdr;
    }
    return 0;
}

static void poll_until(seen_t *s, int want, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (s->n < want && now_ms() < end) {
        int rc = etcd_watch_poll(W, 200, collect, s);
        cr_assert_geq(rc, 0, "poll: %s", ine_err_msg());
    }
    cr_assert_eq(s->n, want, "%d events seen, expected %d", s->n, want);
}

Test(etcd, watch_replay_and_live)
{
    seen_t s = {0};
    uint8_t end[8];
    size_t end_len = etcd_prefix_end("w/", 2, end);
    int64_t r1, r2, r3, r4;
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);
    r1 = put_s("w/a", "1");
    r2 = put_s("w/b", "2");

    cr_assert_eq(etcd_watch_open(E, "w/", 2, end, end_len, r1, &W), INE_OK, "%s", ine_err_msg());
    cr_assert_geq(etcd_watch_fd(W), 0);
    put_s("x/outside", "not watched");
    r3 = put_s("w/c", "3");
    r4 = del_s("w/a");
    poll_until(&s, 4, 5000);

    cr_assert_str_eq(s.key[0], "w/a");
    cr_assert_str_eq(s.val[0], "1");
    cr_assert_eq(s.type[0], ETCD_EV_PUT);
    cr_assert_eq(s.mod[0], r1);
    cr_assert_str_eq(s.key[1], "w/b");
    cr_assert_eq(s.mod[1], r2);
    cr_assert_str_eq(s.key[2], "w/c");
    cr_assert_str_eq(s.val[2], "3");
    cr_assert_eq(s.mod[2], r3);
    cr_assert_str_eq(s.key[3], "w/a");
    cr_assert_eq(s.type[3], ETCD_EV_DELETE);
    cr_assert_eq(s.mod[3], r4, "a delete event carries the deleting revision");
    cr_assert_eq(s.val[3][0], 0);
    for (int i = 0; i < 4; i++) cr_assert_geq(s.hdr[i], s.mod[i]);

    /* Nothing more: a quiet poll returns 0 after about its timeout. */
    int64_t t0 = now_ms();
    cr_assert_eq(etcd_watch_poll(W, 300, collect, &s), 0, "%s", ine_err_msg());
    cr_assert_geq(now_ms() - t0, 250);
    cr_assert_eq(s.n, 4);

    /* The socket serves an outside poll(): it turns readable when the next event comes. */
    struct pollfd pfd = {.fd = etcd_watch_fd(W), .events = POLLIN};
    cr_assert_geq(pfd.fd, 0);
    put_s("w/d", "4");
    cr_assert_eq(poll(&pfd, 1, 5000), 1, "the watch's socket became readable");
    poll_until(&s, 5, 5000);
    cr_assert_str_eq(s.key[4], "w/d");
}

typedef struct {
    size_t len;
    int same, n;
} big_t;

static const uint8_t *big_val;

static int check_big(const etcd_event *evs, size_t n, int64_t hdr, void *ud)
{
    big_t *b = ud;
    (void)hdr;
    for (size_t i = 0; i < n; i++, b->n++) {
        b->len = evs[i].kv.value_len;
        b->same = memcmp(evs[i].kv.value, big_val, b->len) == 0;
    }
    return 0;
}

Test(etcd, watch_big_value)
{
    enum { BIG = 1200 * 1024 };
    uint8_t *v = malloc(BIG);
    big_t b = {0};
    int64_t rev = 0, end;
    cr_assert(v);
    for (size_t i = 0; i < BIG; i++) v[i] = (uint8_t)(i * 31 + (i >> 9));
    big_val = v;
    start(1);
    E = open_eps(ef_endpoints(&cl), 5000);
    cr_assert_eq(etcd_put(E, "big", 3, v, BIG, 0, &rev), INE_OK, "%s", ine_err_msg());
    put_s("small", "after it");
    cr_assert_eq(etcd_watch_open(E, "big", 3, NULL, 0, rev, &W), INE_OK, "%s", ine_err_msg());
    for (end = now_ms() + 5000; b.n < 1 && now_ms() < end;)
        cr_assert_geq(etcd_watch_poll(W, 200, check_big, &b), 0, "%s", ine_err_msg());
    free(v);
    cr_assert_eq(b.n, 1, "one multi-MB line, one event");
    cr_assert_eq(b.len, BIG);
    cr_assert(b.same, "the value came through intact");
}

/* A callback that stops the poll at the first batch. */
static int stop_first(const etcd_event *evs, size_t n, int64_t hdr, void *ud)
{
    (void)evs; (void)hdr;
    *(size_t *)ud += n;
    return INE_EAGAIN;
}

Test(etcd, watch_callback_stops)
{
    size_t got = 0;
    seen_t s = {0};
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);
    cr_assert_eq(etcd_watch_open(E, "k", 1, NULL, 0, 0, &W), INE_OK, "%s", ine_err_msg());
    put_s("k", "a");
    put_s("k", "b");
    int rc = 0;
    for (int64_t end = now_ms() + 5000; rc == 0 && now_ms() < end;) rc = etcd_watch_poll(W, 200, stop_first, &got);
    cr_assert_eq(rc, INE_EAGAIN, "fn's code comes back: %d %s", rc, ine_err_msg());
    cr_assert_eq(got, 1);
    /* The next batch is still there for the next poll. */
    poll_until(&s, 1, 5000);
    cr_assert_str_eq(s.val[0], "b");
}

Test(etcd, watch_compacted)
{
    seen_t s = {0};
    int64_t last = 0;
    long status = 0;
    char body[64], *reply = NULL;
    int rc = 0;
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);
    for (int i = 0; i < 5; i++) last = put_s("c", "v");
    snprintf(body, sizeof body, "{\"revision\":\"%lld\",\"physical\":true}", (long long)last);
    cr_assert_eq(ef_post(ef_endpoint(&cl, 0), "/v3/kv/compaction", body, 5000, &status, &reply), 0, "%s", ef_why());
    cr_assert_eq(status, 200, "compaction: %s", reply);
    free(reply);

    cr_assert_eq(etcd_watch_open(E, "c", 1, NULL, 0, 2, &W), INE_OK, "%s", ine_err_msg());
    for (int64_t end = now_ms() + 5000; rc == 0 && now_ms() < end;) rc = etcd_watch_poll(W, 200, collect, &s);
    cr_assert_eq(rc, INE_ENOTFOUND, "rc %d: %s", rc, ine_err_msg());
    cr_assert_eq(etcd_watch_compact_revision(W), last);
    cr_assert(strstr(ine_err_msg(), "compacted"), "%s", ine_err_msg());
    cr_assert_eq(s.n, 0);
    cr_assert_eq(etcd_watch_poll(W, 0, collect, &s), INE_ENOTFOUND, "it stays over");
}

Test(etcd, watch_stream_breaks)
{
    seen_t s = {0};
    int rc = 0;
    int64_t t0;
    start(1);
    E = open_eps(ef_endpoints(&cl), 2000);
    cr_assert_eq(etcd_watch_open(E, "k", 1, NULL, 0, 0, &W), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(etcd_watch_poll(W, 100, collect, &s), 0, "%s", ine_err_msg());
    cr_assert_eq(ef_kill(&cl, 0), 0, "%s", ef_why());
    t0 = now_ms();
    while (rc == 0 && now_ms() - t0 < 5000) rc = etcd_watch_poll(W, 200, collect, &s);
    cr_assert_eq(rc, INE_EUNAVAIL, "rc %d: %s", rc, ine_err_msg());
    cr_assert_eq(etcd_watch_fd(W), -1);
    cr_assert_eq(etcd_watch_poll(W, 0, collect, &s), INE_EUNAVAIL);

    /* And a new watch on a dead cluster fails at once. */
    etcd_watch *w2 = NULL;
    cr_assert_eq(etcd_watch_open(E, "k", 1, NULL, 0, 0, &w2), INE_EUNAVAIL, "%s", ine_err_msg());
    cr_assert_null(w2);
}

/* --- failover and failures ------------------------------------------------------------------------ */

Test(etcd, failover_dead_endpoint_first)
{
    char eps[256];
    etcd_range_result r = {0};
    seen_t s = {0};
    start(1);
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d, %s/", dead_port(), ef_endpoint(&cl, 0));
    E = open_eps(eps, 1000);
    cr_assert_eq(etcd_put(E, "f", 1, "1", 1, 0, NULL), INE_OK, "%s", ine_err_msg());
    cr_assert_str_eq(etcd_endpoint(E), ef_endpoint(&cl, 0), "the live member answered and is tried first now");
    range_s("f", 0, &r);
    cr_assert_eq(r.n, 1);
    etcd_range_result_free(&r);

    /* A watch fails over the same way. */
    etcd_close(E);
    E = open_eps(eps, 1000);
    cr_assert_eq(etcd_watch_open(E, "f", 1, NULL, 0, 1, &W), INE_OK, "%s", ine_err_msg());
    poll_until(&s, 1, 5000);
    cr_assert_str_eq(s.key[0], "f");
}

Test(etcd, all_dead_and_timeouts)
{
    char eps[256];
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    etcd_range_result r = {0};
    etcd_range_req q = {.key = "k", .key_len = 1};
    int64_t t0, took;
    int rc;

    /* Refused everywhere: EUNAVAIL, at once. */
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d,http://127.0.0.1:%d", dead_port(), dead_port());
    E = open_eps(eps, 500);
    t0 = now_ms();
    rc = etcd_put(E, "k", 1, "v", 1, 0, NULL);
    took = now_ms() - t0;
    cr_assert_eq(rc, INE_EUNAVAIL, "%s", ine_err_msg());
    cr_assert_lt(took, 1500, "took %lld ms", (long long)took);
    cr_assert(strstr(ine_err_msg(), "/v3/kv/put"), "%s", ine_err_msg());
    etcd_close(E);
    E = NULL;

    /* A listener that never answers: the request is sent, then times out, and is not retried. */
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(listen_fd >= 0 && bind(listen_fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(listen_fd, 16) == 0 &&
              getsockname(listen_fd, (struct sockaddr *)&a, &alen) == 0);
    start(1);
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d,%s", ntohs(a.sin_port), ef_endpoint(&cl, 0));
    E = open_eps(eps, 500);
    t0 = now_ms();
    rc = etcd_range(E, &q, &r);
    took = now_ms() - t0;
    cr_assert_eq(rc, INE_EUNAVAIL, "%s", ine_err_msg());
    cr_assert_geq(took, 450, "took %lld ms", (long long)took);
    cr_assert_lt(took, 1500, "took %lld ms", (long long)took);
    cr_assert(strstr(ine_err_msg(), "did not answer"), "%s", ine_err_msg());
    /* The caller's retry starts at the next member. */
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_str_eq(etcd_endpoint(E), ef_endpoint(&cl, 0));
    etcd_range_result_free(&r);
}

Test(etcd, quorum_lost)
{
    etcd_range_result r = {0};
    etcd_range_req q = {.key = "k", .key_len = 1, .serializable = 1};
    etcd_txn_result t = {0};
    etcd_op put = {.type = ETCD_OP_PUT, .key = "k", .key_len = 1, .value = "2", .value_len = 1};
    int64_t t0, took, end;
    int rc;
    start(3);
    E = open_eps(ef_endpoints(&cl), 1000);
    put_s("k", "1");
    cr_assert_eq(ef_kill(&cl, 1), 0, "%s", ef_why());
    cr_assert_eq(ef_kill(&cl, 2), 0, "%s", ef_why());

    t0 = now_ms();
    rc = etcd_txn(E, NULL, 0, &put, 1, NULL, 0, &t);
    took = now_ms() - t0;
    cr_assert_eq(rc, INE_EUNAVAIL, "a write without quorum: %s", ine_err_msg());
    cr_assert_lt(took, 3000, "took %lld ms (the server alone would take 7 s)", (long long)took);
    cr_assert(strstr(ine_err_msg(), "did not answer"), "sent on the kept-alive connection, so not retried: %s", ine_err_msg());

    /* A serializable read is served by the surviving member alone. */
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 1);
    assert_kv(&r.kvs[0], "k", "1");
    etcd_range_result_free(&r);
    cr_assert_str_eq(etcd_endpoint(E), ef_endpoint(&cl, 0));
    q.serializable = 0;
    cr_assert_eq(etcd_range(E, &q, &r), INE_EUNAVAIL, "a linearizable read needs quorum: %s", ine_err_msg());

    /* One member back on its data: quorum again, and the write goes through. */
    cr_assert_eq(ef_restart(&cl, 1, START_MS), 0, "%s", ef_why());
    for (end = now_ms() + 10000, rc = -1; rc != INE_OK && now_ms() < end;) {
        etcd_txn_result_free(&t);
        rc = etcd_txn(E, NULL, 0, &put, 1, NULL, 0, &t);
        cr_assert(rc == INE_OK || rc == INE_EUNAVAIL, "%s", ine_err_msg());
    }
    cr_assert_eq(rc, INE_OK, "%s", ine_err_msg());
    cr_assert_eq(t.succeeded, 1);
    etcd_txn_result_free(&t);
    cr_assert_eq(etcd_range(E, &q, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.n, 1);
    assert_kv(&r.kvs[0], "k", "2");
    etcd_range_result_free(&r);
}

Test(etcd, http_400)
{
    size_t big = 1600 * 1024;
    uint8_t *v = calloc(1, big);
    int rc;
    cr_assert(v);
    start(1);
    E = open_eps(ef_endpoints(&cl), 5000);
    rc = etcd_put(E, "big", 3, v, big, 0, NULL);
    free(v);
    cr_assert_eq(rc, INE_EINVAL, "rc %d: %s", rc, ine_err_msg());
    cr_assert(strstr(ine_err_msg(), "request is too large"), "etcd's words: %s", ine_err_msg());
    cr_assert(strstr(ine_err_msg(), ef_endpoint(&cl, 0)), "the endpoint: %s", ine_err_msg());
    cr_assert(strstr(ine_err_msg(), "400"), "%s", ine_err_msg());

    cr_assert_eq(etcd_put(E, "", 0, "v", 1, 0, NULL), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "key is not provided"), "%s", ine_err_msg());
    /* The connection is still good afterwards. */
    put_s("small", "ok");
}

Test(etcd, open_rejects_bad_endpoints)
{
    etcd_t *e = NULL;
    etcd_opts o = {.endpoints = "ftp://127.0.0.1:1"};
    cr_assert_eq(etcd_open(&o, &e), INE_EINVAL);
    cr_assert_null(e);
    o.endpoints = " , ";
    cr_assert_eq(etcd_open(&o, &e), INE_EINVAL);
    o.endpoints = "http://a:1,http://a:2,http://a:3,http://a:4,http://a:5,http://a:6,http://a:7,http://a:8";
    cr_assert_eq(etcd_open(&o, &e), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "more than 7"), "%s", ine_err_msg());
    o.endpoints = "https://127.0.0.1:1";
    o.cacert = "/nonexistent/ca.pem";
    cr_assert_eq(etcd_open(&o, &e), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "/nonexistent/ca.pem"), "%s", ine_err_msg());
    o.cacert = NULL;
    o.endpoints = "http://127.0.0.1:1/";
    cr_assert_eq(etcd_open(&o, &e), INE_OK, "%s", ine_err_msg());
    cr_assert_str_eq(etcd_endpoint(e), "http://127.0.0.1:1");
    etcd_close(e);
}
