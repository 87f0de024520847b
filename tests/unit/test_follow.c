/* test_follow.c — the follower against real ZeroMQ ipc sockets and a real LMDB log in a fresh
 * temp dir: exactly-once in-order delivery, the timer path with no hints at all, hints from
 * another process, lying hints, unknown event types, failing appliers and corrupt records.
 * Unknown and corrupt records are written with liblmdb directly, keeping the layout of
 * lib/evlog.h (key, prev link, meta head), because evlog_append rightly refuses them. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <lmdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "err.h"
#include "evlog.h"
#include "follow.h"
#include "testutil.h"

#define MAX_SEQS 2000
#define CHILD_EVENTS 20

static char *g_tmp, *g_log_dir, *g_run_dir;
static evlog_t *g_log_for_raw; /* raw_fn reads the record back from it */

static void fx_init(void)
{
    /* Only directories here: LMDB and zmq are opened inside each test, after any fork. */
    g_tmp = tu_tmpdir();
    cr_assert_not_null(g_tmp);
    g_log_dir = tu_path(g_tmp, "log");
    g_run_dir = tu_path(g_tmp, "run");
    cr_assert_eq(mkdir(g_run_dir, 0700), 0);
}

static void fx_fini(void)
{
    tu_rmrf(g_tmp);
    free(g_tmp);
    free(g_log_dir);
    free(g_run_dir);
}

TestSuite(follow, .init = fx_init, .fini = fx_fini, .timeout = 60);

/* --- helpers -------------------------------------------------------------------------------- */

typedef struct {
    uint64_t seqs[MAX_SEQS]; /* every seq fn accepted, in delivery order */
    size_t n;
    uint64_t fail_at;        /* refuse this seq ... */
    int fail_times;          /* ... this many times */
} recorder;

static int record_fn(const evlog_event *ev, uint64_t seq, void *ud)
{
    recorder *r = ud;
    if (ev->seq != seq) return ine_err(INE_EINVAL, "event says seq %llu, follower says %llu",
                                       (unsigned long long)ev->seq, (unsigned long long)seq);
    if (seq == r->fail_at && r->fail_times > 0) {
        r->fail_times--;
        return ine_err(INE_EIO, "refused on purpose");
    }
    if (r->n == MAX_SEQS) return ine_err(INE_EFULL, "recorder full");
    r->seqs[r->n++] = seq;
    return 0;
}

/* The recorder holds exactly `want` (n entries), in that order. */
static void expect_seqs(const recorder *r, const uint64_t *want, size_t n)
{
    cr_assert_eq(r->n, n, "fn saw %zu events, expected %zu", r->n, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(r->seqs[i], want[i], "delivery %zu was seq %llu, expected %llu", i,
                     (unsigned long long)r->seqs[i], (unsigned long long)want[i]);
}

static void expect_range(const recorder *r, uint64_t first, uint64_t last)
{
    cr_assert_eq(r->n, last - first + 1, "fn saw %zu events, expected %llu..%llu", r->n,
                 (unsigned long long)first, (unsigned long long)last);
    for (size_t i = 0; i < r->n; i++)
        cr_assert_eq(r->seqs[i], first + i, "delivery %zu was seq %llu, expected %llu (gap or duplicate)", i,
                     (unsigned long long)r->seqs[i], (unsigned long long)(first + i));
}

static evlog_t *open_log(void)
{
    evlog_t *log;
    int rc = evlog_open(g_log_dir, NULL, &log);
    cr_assert_eq(rc, INE_OK, "evlog_open: %s", ine_err_msg());
    return log;
}

static uint64_t append_n(evlog_t *log, size_t n)
{
    static uint32_t uid;
    evlog_event *evs[100];
    uint64_t first = 0;
    while (n) {
        size_t k = n < 100 ? n : 100;
        for (size_t i = 0; i < k; i++) evs[i] = tu_ev_db_created(++uid, "db");
        int rc = evlog_append(log, evs, k, NULL, &first);
        cr_assert_eq(rc, INE_OK, "evlog_append: %s", ine_err_msg());
        for (size_t i = 0; i < k; i++) tu_event_free(evs[i]);
        n -= k;
    }
    return evlog_last_seq(log, &first) == INE_OK ? first : 0;
}

static void put_be64(uint8_t b[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) b[i] = (uint8_t)v;
}

/* Append one raw record behind the log's head with liblmdb, linking the chain as evlog does.
 * unknown: a well-formed Event whose body is field 999 (a type from a "newer version");
 * otherwise bytes that do not decode. The log must be closed in this process meanwhile. */
static uint64_t raw_append(int unknown)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi events, meta;
    MDB_val k = {4, "head"}, v;
    uint8_t key[8], head[8 + EVLOG_HASH_LEN], prev[EVLOG_HASH_LEN], bytes[512];
    size_t len;
    uint64_t seq = 0;

    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_set_maxdbs(env, 4), 0);
    cr_assert_eq(mdb_env_set_mapsize(env, EVLOG_DEFAULT_MAP_SIZE), 0);
    cr_assert_eq(mdb_env_open(env, g_log_dir, 0, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "events", 0, &events), 0);
    cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    cr_assert_eq(mdb_get(txn, meta, &k, &v), 0, "the log has no head yet");
    cr_assert_eq(v.mv_size, sizeof head);
    for (int i = 0; i < 8; i++) seq = (seq << 8) | ((uint8_t *)v.mv_data)[i];
    memcpy(prev, (uint8_t *)v.mv_data + 8, EVLOG_HASH_LEN);
    seq++;

    if (unknown) {
        /* field 999, length-delimited (tag varint 0xba 0x3e), holding a tiny message {1: 1} */
        static const uint8_t future_body[] = {0xba, 0x3e, 0x02, 0x08, 0x01};
        Ine__V1__Event ev = INE__V1__EVENT__INIT;
        ev.seq = seq;
        ev.time_us = 1;
        ev.producer = "ine-from-the-future";
        ev.prev_sha256.data = prev;
        ev.prev_sha256.len = EVLOG_HASH_LEN;
        len = ine__v1__event__get_packed_size(&ev);
        cr_assert_leq(len + sizeof future_body, sizeof bytes);
        ine__v1__event__pack(&ev, bytes);
        memcpy(bytes + len, future_body, sizeof future_body);
        len += sizeof future_body;
    } else {
        /* field 3 (producer) claims 80 bytes and has 3 */
        static const uint8_t garbage[] = {0x1a, 0x50, 'a', 'b', 'c'};
        memcpy(bytes, garbage, sizeof garbage);
        len = sizeof garbage;
    }

    put_be64(key, seq);
    k = (MDB_val){8, key};
    v = (MDB_val){len, bytes};
    cr_assert_eq(mdb_put(txn, events, &k, &v, MDB_APPEND), 0);
    put_be64(head, seq);
    evlog_hash(bytes, len, head + 8);
    k = (MDB_val){4, "head"};
    v = (MDB_val){sizeof head, head};
    cr_assert_eq(mdb_put(txn, meta, &k, &v, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    return seq;
}

/* Remove one record with liblmdb, leaving a hole in the seqs (the log must be closed). */
static void raw_delete(uint64_t seq)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi events;
    uint8_t key[8];
    MDB_val k = {8, key};

    put_be64(key, seq);
    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_set_maxdbs(env, 4), 0);
    cr_assert_eq(mdb_env_set_mapsize(env, EVLOG_DEFAULT_MAP_SIZE), 0);
    cr_assert_eq(mdb_env_open(env, g_log_dir, 0, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "events", 0, &events), 0);
    cr_assert_eq(mdb_del(txn, events, &k, NULL), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Run follow_catch_up with stderr going to a file; returns its result, *err the text. */
static int catch_up_capturing(follow_t *f, char **err)
{
    char *path = tu_path(g_tmp, "stderr.txt");
    int saved = dup(STDERR_FILENO), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), rc;
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    rc = follow_catch_up(f);
    dup2(saved, STDERR_FILENO);
    close(saved);
    *err = tu_read_file(path, NULL);
    cr_assert_not_null(*err);
    free(path);
    return rc;
}

static size_t count_hint_files(void)
{
    glob_t g;
    char *pat = tu_path(g_run_dir, "hint-*.sock");
    size_t n = glob(pat, 0, NULL, &g) == 0 ? g.gl_pathc : 0;
    if (n) globfree(&g);
    free(pat);
    return n;
}

/* --- tests ---------------------------------------------------------------------------------- */

Test(follow, every_event_exactly_once_in_order)
{
    static recorder r;
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    follow_t *f;

    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_catch_up(f), 0, "an empty log applies nothing");
    append_n(log, 7);
    cr_assert_eq(follow_catch_up(f), 7);
    cr_assert_eq(follow_catch_up(f), 0, "a second catch-up re-delivered events");
    /* More than one iterator batch (1024 records), consumed through poll. */
    cr_assert_eq(append_n(log, 1493), 1500);
    cr_assert_eq(follow_poll(f, 0), 1493, "%s", ine_err_msg());
    cr_assert_eq(follow_poll(f, 0), 0);
    cr_assert_eq(follow_applied(f), 1500);
    expect_range(&r, 1, 1500);

    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, starts_after_the_applied_seq_it_is_given)
{
    static recorder r;
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    follow_t *f;

    append_n(log, 10);
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 11, record_fn, &r, &f), INE_ECHAIN,
                 "state beyond the log's end was accepted");
    cr_assert_null(f);
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 3, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_applied(f), 3);
    cr_assert_eq(follow_catch_up(f), 7);
    expect_range(&r, 4, 10);

    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, timer_alone_delivers_when_there_is_no_publisher)
{
    static recorder r, r2;
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    follow_t *f, *f2;
    char *missing = tu_path(g_tmp, "no-such-run-dir");

    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    /* A run directory that does not exist yet is "no publisher yet", not an error. */
    cr_assert_eq(follow_new(ctx, log, missing, 0, record_fn, &r2, &f2), INE_OK, "%s", ine_err_msg());
    append_n(log, 5);
    cr_assert_eq(follow_poll(f, 50), 5, "%s", ine_err_msg());
    cr_assert_eq(follow_poll(f2, 50), 5, "%s", ine_err_msg());
    cr_assert_eq(follow_hints(f), 0, "no publisher exists, yet a hint arrived");
    append_n(log, 3);
    cr_assert_eq(follow_wait_seq(f, 8, 10000), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_wait_seq(f2, 8, 10000), INE_OK, "%s", ine_err_msg());
    /* Waiting for a seq that never comes times out cleanly. */
    cr_assert_eq(follow_wait_seq(f, 9, 300), INE_EAGAIN);
    cr_assert_eq(follow_applied(f), 8);
    expect_range(&r, 1, 8);
    expect_range(&r2, 1, 8);
    cr_assert_eq(follow_poll(f, -1), INE_EINVAL, "an endless wait would defeat the timer");

    follow_free(f);
    follow_free(f2);
    free(missing);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

/* The child appends and hints; it keeps re-hinting the last seq until the parent is done. */
static int child_main(int ready_fd, int go_fd)
{
    evlog_t *log;
    void *ctx;
    follow_pub *p;
    uint64_t seq = 0;
    char c;

    if (evlog_open(g_log_dir, NULL, &log) != INE_OK) return 10;
    ctx = zmq_ctx_new();
    if (!ctx || follow_pub_open(ctx, g_run_dir, "child", &p) != INE_OK) return 11;
    if (write(ready_fd, "r", 1) != 1) return 12;
    if (read(go_fd, &c, 1) != 1) return 13;
    for (int i = 0; i < CHILD_EVENTS; i++) {
        evlog_event *ev = tu_ev_node_added((uint32_t)i + 1, "10.0.0.1");
        int rc = evlog_append_one(log, ev, NULL, &seq);
        tu_event_free(ev);
        if (rc != INE_OK) return 14;
        if (follow_pub_hint(p, seq) != INE_OK) return 15;
        usleep(20 * 1000);
    }
    for (int i = 0; i < 400; i++) { /* ~20 s at most; the parent's EOF also ends it */
        struct pollfd pf = {go_fd, POLLIN, 0};
        if (poll(&pf, 1, 50) > 0) break;
        if (follow_pub_hint(p, seq) != INE_OK) return 16;
    }
    follow_pub_close(p);
    zmq_ctx_term(ctx);
    evlog_close(log);
    return 0;
}

Test(follow, hints_from_another_process_reach_the_follower)
{
    static recorder r;
    int ready[2], go[2], status = -1, rc;
    evlog_t *log;
    void *ctx;
    follow_t *f;
    pid_t pid;
    char c;

    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(go), 0);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        _exit(child_main(ready[1], go[0]));
    }
    close(ready[1]);
    close(go[0]);
    /* The child has created the log and bound its socket before we open anything. */
    cr_assert_eq(read(ready[0], &c, 1), 1, "the child died before it was ready");
    log = open_log();
    ctx = zmq_ctx_new();
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(write(go[1], "g", 1), 1);

    rc = follow_wait_seq(f, CHILD_EVENTS, 10000);
    cr_assert_eq(rc, INE_OK, "follow_wait_seq: %s", ine_err_msg());
    cr_assert_eq(write(go[1], "d", 1), 1);
    close(go[1]);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed with status %d", status);

    cr_assert_eq(follow_catch_up(f), 0);
    expect_range(&r, 1, CHILD_EVENTS);
    cr_assert_gt(follow_hints(f), 0, "no hint from the child ever reached the follower");
    cr_assert_eq(count_hint_files(), 0, "the child's socket file was left behind");
    /* The follower forgets the vanished endpoint and keeps going. */
    cr_assert_eq(follow_poll(f, 0), 0, "%s", ine_err_msg());

    close(ready[0]);
    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, publishers_started_later_are_found)
{
    static recorder r;
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    follow_pub *p1, *p2;
    follow_t *f;
    uint64_t seen;

    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_pub_open(ctx, g_run_dir, "late", &p1), INE_OK, "%s", ine_err_msg());
    for (int i = 0; i < 200 && follow_hints(f) == 0; i++) {
        cr_assert_eq(follow_pub_hint(p1, 0), INE_OK);
        cr_assert_eq(follow_poll(f, 50), 0, "%s", ine_err_msg());
    }
    cr_assert_gt(follow_hints(f), 0, "a publisher bound after the follower was never found");
    /* A second one, once the first is gone: the rescan forgets and finds. */
    follow_pub_close(p1);
    cr_assert_eq(follow_poll(f, 0), 0, "%s", ine_err_msg());
    cr_assert_eq(follow_pub_open(ctx, g_run_dir, "later", &p2), INE_OK, "%s", ine_err_msg());
    seen = follow_hints(f);
    for (int i = 0; i < 200 && follow_hints(f) == seen; i++) {
        cr_assert_eq(follow_pub_hint(p2, 0), INE_OK);
        cr_assert_eq(follow_poll(f, 50), 0, "%s", ine_err_msg());
    }
    cr_assert_gt(follow_hints(f), seen, "the second publisher was never found");
    cr_assert_eq(r.n, 0);

    follow_pub_close(p2);
    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, lying_duplicated_and_stale_hints_change_nothing)
{
    static recorder r;
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    follow_pub *p;
    follow_t *f;
    uint64_t hints;
    int rc;

    append_n(log, 5);
    cr_assert_eq(follow_pub_open(ctx, g_run_dir, "liar", &p), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    /* Keep lying until the subscription is up and a lie has arrived. */
    for (int i = 0; i < 200 && follow_hints(f) == 0; i++) {
        cr_assert_eq(follow_pub_hint(p, 1000), INE_OK);
        rc = follow_poll(f, 50);
        cr_assert(rc >= 0, "follow_poll: %s", ine_err_msg());
    }
    cr_assert_gt(follow_hints(f), 0, "no hint arrived");
    cr_assert_eq(follow_applied(f), 5, "a hint of 1000 moved the follower past the log's end");
    expect_range(&r, 1, 5);
    cr_assert_eq(follow_wait_seq(f, 6, 300), INE_EAGAIN, "seq 6 does not exist, whatever the hints say");

    /* Duplicates and old seqs. */
    hints = follow_hints(f);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(follow_pub_hint(p, 5), INE_OK);
        cr_assert_eq(follow_pub_hint(p, 5), INE_OK);
        cr_assert_eq(follow_pub_hint(p, 2), INE_OK);
        cr_assert_eq(follow_pub_hint(p, 0), INE_OK);
    }
    for (int i = 0; i < 100 && follow_hints(f) < hints + 12; i++) cr_assert_eq(follow_poll(f, 50), 0);
    cr_assert_eq(follow_hints(f), hints + 12);
    expect_range(&r, 1, 5);

    /* New events announced by a stale hint still all arrive, once. */
    append_n(log, 3);
    cr_assert_eq(follow_pub_hint(p, 3), INE_OK);
    cr_assert_eq(follow_wait_seq(f, 8, 10000), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_pub_hint(p, 1000), INE_OK);
    cr_assert_eq(follow_poll(f, 100), 0);
    expect_range(&r, 1, 8);

    follow_free(f);
    follow_pub_close(p);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, unknown_event_type_is_skipped_with_a_warning)
{
    static recorder r;
    evlog_t *log = open_log();
    evlog_event *ev;
    evlog_verify_report rep;
    void *ctx;
    follow_t *f;
    char *err;
    static const uint64_t want[] = {1, 2, 3, 4, 5, 7, 8};

    append_n(log, 5);
    evlog_close(log);
    cr_assert_eq(raw_append(1), 6);
    log = open_log();
    cr_assert_eq(append_n(log, 2), 8);
    /* The crafted record is an honest one: it decodes, with no body we know, and chains. */
    cr_assert_eq(evlog_read(log, 6, &ev), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY__NOT_SET);
    cr_assert_eq(ev->seq, 6);
    evlog_event_free(ev);
    cr_assert_eq(evlog_verify(log, &rep), INE_OK, "%s", rep.reason);

    ctx = zmq_ctx_new();
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(catch_up_capturing(f, &err), 8, "%s", ine_err_msg());
    cr_assert(strstr(err, "seq 6: unknown event type, skipped") != NULL, "no warning; stderr was: %s", err);
    cr_assert(strstr(err, "warn") != NULL, "not a warning: %s", err);
    free(err);
    cr_assert_eq(follow_applied(f), 8, "the unknown event was not counted as applied");
    expect_seqs(&r, want, sizeof want / sizeof *want);

    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, failing_fn_stops_and_the_next_catch_up_retries)
{
    static recorder r;
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    follow_t *f;
    int rc;

    append_n(log, 5);
    r.fail_at = 3;
    r.fail_times = 1;
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    rc = follow_catch_up(f);
    cr_assert_eq(rc, INE_EIO, "fn's error was not returned (got %d)", rc);
    cr_assert(strstr(ine_err_msg(), "seq 3") && strstr(ine_err_msg(), "refused on purpose"),
              "message: %s", ine_err_msg());
    cr_assert_eq(follow_applied(f), 2);
    expect_range(&r, 1, 2);
    cr_assert_eq(follow_poll(f, 0), 3, "%s", ine_err_msg());
    cr_assert_eq(follow_applied(f), 5);
    expect_range(&r, 1, 5);

    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, corrupt_record_is_an_error_naming_its_seq)
{
    static recorder r;
    evlog_t *log = open_log();
    evlog_event *ev;
    void *ctx;
    follow_t *f;

    append_n(log, 3);
    evlog_close(log);
    cr_assert_eq(raw_append(0), 4);
    log = open_log();
    cr_assert_eq(evlog_read(log, 4, &ev), INE_ECORRUPT, "the crafted record decodes after all");

    ctx = zmq_ctx_new();
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    for (int i = 0; i < 2; i++) { /* and it stays an error: never skipped */
        cr_assert_eq(follow_catch_up(f), INE_ECORRUPT);
        cr_assert(strstr(ine_err_msg(), "seq 4") != NULL, "message: %s", ine_err_msg());
        cr_assert_eq(follow_applied(f), 3);
    }
    cr_assert_eq(follow_poll(f, 0), INE_ECORRUPT);
    expect_range(&r, 1, 3);

    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, missing_record_stops_instead_of_being_jumped)
{
    static recorder r;
    evlog_t *log = open_log();
    void *ctx;
    follow_t *f;

    append_n(log, 5);
    evlog_close(log);
    raw_delete(3);
    log = open_log();
    ctx = zmq_ctx_new();
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_catch_up(f), INE_ECHAIN);
    cr_assert(strstr(ine_err_msg(), "seq 3") != NULL, "message: %s", ine_err_msg());
    cr_assert_eq(follow_applied(f), 2);
    expect_range(&r, 1, 2);

    follow_free(f);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

Test(follow, publisher_socket_file_lives_while_open)
{
    void *ctx = zmq_ctx_new();
    follow_pub *p, *bad = NULL;
    char name[64], *path;
    struct stat st;

    snprintf(name, sizeof name, "hint-ine-ca-%ld.sock", (long)getpid());
    path = tu_path(g_run_dir, name);
    cr_assert_eq(follow_pub_open(ctx, g_run_dir, "ine-ca", &p), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(stat(path, &st), 0, "no socket at %s", path);
    cr_assert(S_ISSOCK(st.st_mode));
    cr_assert_eq(follow_pub_hint(p, 1), INE_OK, "a hint nobody hears is not an error");
    follow_pub_close(p);
    cr_assert_eq(stat(path, &st), -1, "socket file left behind");
    cr_assert_eq(follow_pub_open(ctx, g_run_dir, "../evil", &bad), INE_EINVAL);
    cr_assert_eq(follow_pub_open(ctx, g_run_dir, "", &bad), INE_EINVAL);
    cr_assert_null(bad);

    free(path);
    zmq_ctx_term(ctx);
}

Test(follow, fd_is_pollable)
{
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    recorder *r = calloc(1, sizeof *r);
    follow_t *f;

    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, r, &f), INE_OK, "%s", ine_err_msg());
    int fd = follow_fd(f);
    cr_assert_geq(fd, 0, "follow_fd: %s", ine_err_msg());
    cr_assert_neq(fcntl(fd, F_GETFD), -1, "not an open descriptor");

    follow_free(f);
    free(r);
    zmq_ctx_term(ctx);
    evlog_close(log);
}

/* The records follower: every record with its stored bytes, an unknown type included (the
 * event follower skips it). */
static int raw_fn(const evlog_record *rec, void *ud)
{
    recorder *r = ud;
    uint8_t *stored = NULL;
    size_t len = 0;
    cr_assert_eq(evlog_read_raw(g_log_for_raw, rec->seq, &stored, &len), INE_OK);
    cr_assert_eq(len, rec->raw_len, "seq %llu: the bytes handed over are the record's", (unsigned long long)rec->seq);
    cr_assert_eq(memcmp(stored, rec->raw, len), 0);
    free(stored);
    if (r->n == MAX_SEQS) return ine_err(INE_EFULL, "recorder full");
    r->seqs[r->n++] = rec->seq;
    return 0;
}

Test(follow, a_records_follower_gets_every_record_as_stored_unknown_types_too)
{
    static recorder r, events;
    evlog_t *log = open_log();
    void *ctx = zmq_ctx_new();
    follow_t *f, *fe;
    g_log_for_raw = log;
    append_n(log, 3);
    cr_assert_eq(tu_append_unknown(log, 1234), 4, "%s", ine_err_msg());
    append_n(log, 2);
    cr_assert_eq(follow_new_records(ctx, log, g_run_dir, 0, raw_fn, &r, &f), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_new(ctx, log, g_run_dir, 0, record_fn, &events, &fe), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(follow_catch_up(f), 6);
    cr_assert_eq(follow_catch_up(fe), 6);
    expect_range(&r, 1, 6);
    const uint64_t skipped[] = {1, 2, 3, 5, 6};
    expect_seqs(&events, skipped, 5);
    follow_free(f);
    follow_free(fe);
    zmq_ctx_term(ctx);
    evlog_close(log);
}
