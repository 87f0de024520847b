/* test_evlog.c — the LMDB event log: append/read/iterate, all-or-nothing batches, the hash
 * chain and verify, idempotent request ids, several processes appending at once, SIGKILL in
 * the middle of appends, a full map, a map grown by another process, stale readers. */
#include <criterion/criterion.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "evlog.h"
#include "testutil.h"

static char *dir;
static char *logdir;

static void setup(void)
{
    dir = tu_tmpdir();
    cr_assert(dir);
    logdir = tu_path(dir, "log");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
    free(logdir);
}

TestSuite(evlog, .init = setup, .fini = teardown, .timeout = 300);

static evlog_t *open_log(size_t map_size)
{
    evlog_t *log = NULL;
    evlog_opts o = {.map_size = map_size};
    int rc = evlog_open(logdir, &o, &log);
    cr_assert_eq(rc, INE_OK, "evlog_open: %s", ine_err_msg());
    return log;
}

static uint64_t append_db(evlog_t *log, uint32_t uid, const char *reqid)
{
    evlog_event *ev = tu_ev_db_created(uid, "db");
    uint64_t seq = 0;
    int rc = evlog_append_one(log, ev, reqid, &seq);
    cr_assert(rc >= 0, "append: %s", ine_err_msg());
    tu_event_free(ev);
    return seq;
}

/* Rewrite one stored record's bytes (or delete it) behind the log's back, as an attacker or
 * a bad disk would. */
static void tamper(uint64_t seq, int flip_at, int delete_it)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t key[8];
    MDB_val k = {8, key}, v;
    for (int i = 7; i >= 0; i--) key[i] = (uint8_t)(seq >> (8 * (7 - i)));
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    cr_assert_eq(mdb_env_open(env, logdir, 0, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "events", 0, &dbi), 0);
    if (delete_it) {
        cr_assert_eq(mdb_del(txn, dbi, &k, NULL), 0);
    } else {
        cr_assert_eq(mdb_get(txn, dbi, &k, &v), 0);
        uint8_t *copy = malloc(v.mv_size);
        memcpy(copy, v.mv_data, v.mv_size);
        int at = flip_at >= 0 ? flip_at : (int)v.mv_size + flip_at;
        copy[at] ^= 0x01;
        MDB_val nv = {v.mv_size, copy};
        cr_assert_eq(mdb_put(txn, dbi, &k, &nv, 0), 0);
        free(copy);
    }
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

Test(evlog, append_read_iterate_seq_from_one)
{
    evlog_t *log = open_log(0);
    uint64_t last = 99;
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, 0);
    for (uint32_t i = 1; i <= 50; i++) cr_assert_eq(append_db(log, i, NULL), i);
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, 50);

    evlog_event *ev;
    cr_assert_eq(evlog_read(log, 17, &ev), INE_OK);
    cr_assert_eq(ev->seq, 17);
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY_DATABASE_CREATED);
    cr_assert_eq(ev->database_created->db_uid, 17);
    cr_assert_str_eq(ev->producer, "test");
    cr_assert_gt(ev->time_us, 0);
    cr_assert_eq(ev->prev_sha256.len, EVLOG_HASH_LEN);
    evlog_event_free(ev);
    cr_assert_eq(evlog_read(log, 51, &ev), INE_ENOTFOUND);

    /* The chain: record 17's link is the hash of record 16's bytes. */
    uint8_t *raw16;
    size_t len16;
    uint8_t h[EVLOG_HASH_LEN];
    cr_assert_eq(evlog_read_raw(log, 16, &raw16, &len16), INE_OK);
    evlog_hash(raw16, len16, h);
    cr_assert_eq(evlog_read(log, 17, &ev), INE_OK);
    cr_assert_arr_eq(ev->prev_sha256.data, h, EVLOG_HASH_LEN);
    evlog_event_free(ev);
    free(raw16);

    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_OK, "%s", rep.reason);
    cr_assert_eq(rep.records, 50);
    evlog_close(log);
}

typedef struct { uint64_t seqs[4096]; size_t n; uint64_t stop_at; } collect_ctx;

static int collect(const evlog_record *rec, void *ud)
{
    collect_ctx *c = ud;
    cr_assert_not_null(rec->ev);
    cr_assert_eq(rec->ev->seq, rec->seq);
    c->seqs[c->n++] = rec->seq;
    return c->stop_at && rec->seq == c->stop_at ? 7 : 0;
}

Test(evlog, iterate_ranges_cross_batches)
{
    evlog_t *log = open_log(0);
    /* More than one iterator batch (1024 records) in a handful of transactions. */
    for (int b = 0; b < 3; b++) {
        evlog_event *evs[1000];
        for (int i = 0; i < 1000; i++) evs[i] = tu_ev_db_created((uint32_t)(b * 1000 + i + 1), "x");
        cr_assert_eq(evlog_append(log, evs, 1000, NULL, NULL), INE_OK, "%s", ine_err_msg());
        for (int i = 0; i < 1000; i++) tu_event_free(evs[i]);
    }
    collect_ctx *c = calloc(1, sizeof *c);
    cr_assert_eq(evlog_iterate(log, 1, 0, 0, collect, c), 0);
    cr_assert_eq(c->n, 3000);
    for (size_t i = 0; i < c->n; i++) cr_assert_eq(c->seqs[i], i + 1);

    c->n = 0;
    cr_assert_eq(evlog_iterate(log, 1020, 2050, 0, collect, c), 0);
    cr_assert_eq(c->n, 2050 - 1020 + 1);
    cr_assert_eq(c->seqs[0], 1020);
    cr_assert_eq(c->seqs[c->n - 1], 2050);

    c->n = 0;
    c->stop_at = 5;
    cr_assert_eq(evlog_iterate(log, 3, 0, 0, collect, c), 7, "a positive return stops the walk and is passed back");
    cr_assert_eq(c->n, 3);
    free(c);
    evlog_close(log);
}

Test(evlog, batch_is_all_or_nothing)
{
    evlog_t *log = open_log(0);
    append_db(log, 1, NULL);
    evlog_event *evs[3] = {tu_ev_db_created(2, "a"), tu_ev_db_created(3, "b"), tu_ev_db_created(4, "c")};
    uint64_t first = 0;
    cr_assert_eq(evlog_append(log, evs, 3, NULL, &first), INE_OK);
    cr_assert_eq(first, 2);
    cr_assert_eq(evs[2]->seq, 4);

    /* A batch with a bad member writes none of it. */
    evs[1]->body_case = INE__V1__EVENT__BODY__NOT_SET;
    uint64_t last;
    cr_assert_eq(evlog_append(log, evs, 3, NULL, &first), INE_EINVAL);
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, 4);
    evs[1]->body_case = INE__V1__EVENT__BODY_DATABASE_CREATED;
    for (int i = 0; i < 3; i++) tu_event_free(evs[i]);
    evlog_close(log);
}

static int fail_on_third(evlog_event *ev, void *ud)
{
    int *calls = ud;
    (*calls)++;
    return ev->seq == 3 ? ine_err(INE_ECRYPTO, "sealing failed") : 0;
}

Test(evlog, batch_aborts_when_prepare_fails)
{
    evlog_t *log = open_log(0);
    evlog_event *evs[4];
    int calls = 0;
    for (int i = 0; i < 4; i++) evs[i] = tu_ev_db_created((uint32_t)i + 1, "x");
    evlog_append_opts o = {.prepare = fail_on_third, .prepare_ud = &calls};
    cr_assert_eq(evlog_append(log, evs, 4, &o, NULL), INE_ECRYPTO);
    cr_assert_eq(calls, 3);
    uint64_t last = 9;
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, 0, "nothing of the failed batch is in the log");
    for (int i = 0; i < 4; i++) cr_assert_eq(evs[i]->seq, 0);
    for (int i = 0; i < 4; i++) tu_event_free(evs[i]);
    evlog_close(log);
}

Test(evlog, request_id_is_idempotent)
{
    evlog_t *log = open_log(0);
    append_db(log, 1, NULL);
    evlog_event *evs[2] = {tu_ev_db_created(2, "a"), tu_ev_db_created(3, "b")};
    evlog_append_opts o = {.request_id = "req-42"};
    uint64_t first = 0, last = 0;
    cr_assert_eq(evlog_append(log, evs, 2, &o, &first), INE_OK);
    cr_assert_eq(first, 2);
    /* The retry writes nothing and answers with the original seq. */
    cr_assert_eq(evlog_append(log, evs, 2, &o, &first), 1);
    cr_assert_eq(first, 2);
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, 3);

    evlog_event *ev;
    cr_assert_eq(evlog_read(log, 3, &ev), INE_OK);
    cr_assert_str_eq(ev->request_id, "req-42");
    evlog_event_free(ev);
    /* The caller's struct does not keep pointers into the log's memory. */
    cr_assert_str_eq(evs[0]->request_id, "");
    cr_assert_eq(evs[0]->prev_sha256.data, NULL);

    /* The idempotency survives a reopen. */
    evlog_close(log);
    log = open_log(0);
    cr_assert_eq(evlog_append(log, evs, 2, &o, &first), 1);
    cr_assert_eq(first, 2);
    for (int i = 0; i < 2; i++) tu_event_free(evs[i]);
    evlog_close(log);
}

Test(evlog, verify_names_flipped_byte_in_body)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 20; i++) append_db(log, i, NULL);
    evlog_close(log);
    tamper(7, -3, 0); /* a byte inside the body, near the end */
    log = open_log(0);
    evlog_verify_report rep;
    cr_assert_lt(evlog_verify(log, &rep), 0);
    cr_assert_eq(rep.bad_seq, 7, "reported %llu: %s", (unsigned long long)rep.bad_seq, rep.reason);
    evlog_close(log);
}

Test(evlog, verify_names_flipped_byte_in_link)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 20; i++) append_db(log, i, NULL);
    uint8_t *raw;
    size_t len;
    cr_assert_eq(evlog_read_raw(log, 12, &raw, &len), INE_OK);
    /* Find the link field: tag 0x32 (field 6, bytes) followed by length 32. */
    int at = -1;
    for (size_t i = 0; i + 1 < len; i++)
        if (raw[i] == 0x32 && raw[i + 1] == 32) { at = (int)i + 10; break; }
    free(raw);
    cr_assert_geq(at, 0);
    evlog_close(log);
    tamper(12, at, 0);
    log = open_log(0);
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_ECHAIN);
    cr_assert_eq(rep.bad_seq, 12, "reported %llu: %s", (unsigned long long)rep.bad_seq, rep.reason);
    evlog_close(log);
}

Test(evlog, verify_names_flipped_last_record)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 5; i++) append_db(log, i, NULL);
    evlog_close(log);
    tamper(5, -2, 0);
    log = open_log(0);
    evlog_verify_report rep;
    cr_assert_lt(evlog_verify(log, &rep), 0);
    cr_assert_eq(rep.bad_seq, 5, "%s", rep.reason);
    evlog_close(log);
}

Test(evlog, verify_names_deleted_record)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 20; i++) append_db(log, i, NULL);
    evlog_close(log);
    tamper(9, 0, 1);
    log = open_log(0);
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_ECHAIN);
    cr_assert_eq(rep.bad_seq, 9, "%s", rep.reason);
    cr_assert(strstr(rep.reason, "missing"), "%s", rep.reason);
    evlog_close(log);
}

Test(evlog, verify_detects_truncation)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 20; i++) append_db(log, i, NULL);
    evlog_close(log);
    tamper(20, 0, 1);
    tamper(19, 0, 1);
    log = open_log(0);
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_ECHAIN);
    cr_assert_eq(rep.bad_seq, 19, "%s", rep.reason);
    cr_assert(strstr(rep.reason, "truncated"), "%s", rep.reason);
    evlog_close(log);
}

Test(evlog, read_reports_undecodable_record_with_seq)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 3; i++) append_db(log, i, NULL);
    evlog_close(log);
    tamper(2, 0, 0); /* the first tag byte: no longer a valid field key */
    log = open_log(0);
    evlog_event *ev;
    int rc = evlog_read(log, 2, &ev);
    if (rc == INE_ECORRUPT) cr_assert(strstr(ine_err_msg(), "record 2"), "%s", ine_err_msg());
    evlog_verify_report rep;
    cr_assert_lt(evlog_verify(log, &rep), 0);
    cr_assert_eq(rep.bad_seq, 2, "%s", rep.reason);
    if (rc == INE_OK) evlog_event_free(ev);
    evlog_close(log);
}

static void child_appender(uint32_t base, int count)
{
    evlog_t *log = NULL;
    /* Open after fork: an LMDB environment must never cross a fork. */
    if (evlog_open(logdir, NULL, &log) != INE_OK) _exit(2);
    for (int i = 0; i < count; i++) {
        evlog_event *ev = tu_ev_db_created(base + (uint32_t)i, "p");
        if (evlog_append_one(log, ev, NULL, NULL) != INE_OK) _exit(3);
        tu_event_free(ev);
    }
    evlog_close(log);
    _exit(0);
}

Test(evlog, two_processes_append_concurrently)
{
    const int per = 10000;
    evlog_t *log = open_log(0);
    evlog_close(log);
    pid_t a = fork();
    if (a == 0) child_appender(1000000, per);
    pid_t b = fork();
    if (b == 0) child_appender(2000000, per);
    int sa, sb;
    waitpid(a, &sa, 0);
    waitpid(b, &sb, 0);
    cr_assert(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    cr_assert(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);

    log = open_log(0);
    uint64_t last;
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, 2 * (uint64_t)per);
    /* Every event of each child is there exactly once, and each child's are in its order. */
    collect_ctx *c = calloc(1, sizeof *c);
    uint8_t *seen = calloc(2 * (size_t)per, 1);
    uint32_t next_a = 1000000, next_b = 2000000;
    for (uint64_t s = 1; s <= last; s++) {
        evlog_event *ev;
        cr_assert_eq(evlog_read(log, s, &ev), INE_OK);
        uint32_t uid = ev->database_created->db_uid;
        if (uid >= 2000000) { cr_assert_eq(uid, next_b++); seen[per + uid - 2000000]++; }
        else { cr_assert_eq(uid, next_a++); seen[uid - 1000000]++; }
        evlog_event_free(ev);
    }
    for (int i = 0; i < 2 * per; i++) cr_assert_eq(seen[i], 1);
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_OK, "%s", rep.reason);
    cr_assert_eq(rep.records, last);
    free(seen);
    free(c);
    evlog_close(log);
}

Test(evlog, sigkill_mid_append_keeps_every_acknowledged_event)
{
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    evlog_close(open_log(0));
    pid_t pid = fork();
    if (pid == 0) {
        evlog_t *log = NULL;
        close(pfd[0]);
        if (evlog_open(logdir, NULL, &log) != INE_OK) _exit(2);
        for (uint32_t i = 1;; i++) {
            evlog_event *ev = tu_ev_db_created(i, "k");
            if (evlog_append_one(log, ev, NULL, NULL) != INE_OK) _exit(3);
            tu_event_free(ev);
            /* Acknowledge only after the durable commit returned. */
            if (write(pfd[1], &i, sizeof i) != sizeof i) _exit(4);
        }
    }
    close(pfd[1]);
    uint32_t acked = 0, v;
    while (acked < 300 && read(pfd[0], &v, sizeof v) == sizeof v) acked = v;
    kill(pid, SIGKILL);
    while (read(pfd[0], &v, sizeof v) == sizeof v) acked = v; /* acks written before death */
    int st;
    waitpid(pid, &st, 0);
    close(pfd[0]);
    cr_assert(WIFSIGNALED(st));

    evlog_t *log = open_log(0);
    uint64_t last;
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_geq(last, acked, "acknowledged %u but the log ends at %llu", acked, (unsigned long long)last);
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_OK, "%s", rep.reason);
    for (uint64_t s = 1; s <= acked; s++) {
        evlog_event *ev;
        cr_assert_eq(evlog_read(log, s, &ev), INE_OK);
        cr_assert_eq(ev->database_created->db_uid, s);
        evlog_event_free(ev);
    }
    /* And the log takes appends again. */
    cr_assert_eq(append_db(log, 999999, NULL), last + 1);
    evlog_close(log);
}

Test(evlog, full_map_is_a_clear_error_and_writes_nothing)
{
    evlog_t *log = open_log(256 * 1024);
    uint64_t last = 0, before;
    int rc = INE_OK;
    uint32_t i;
    for (i = 1; i < 100000; i++) {
        evlog_event *ev = tu_ev_db_created(i, "filling-the-map-with-a-reasonably-long-database-name");
        rc = evlog_append_one(log, ev, NULL, NULL);
        tu_event_free(ev);
        if (rc != INE_OK) break;
    }
    cr_assert_eq(rc, INE_EFULL, "got %s: %s", ine_strerror(rc), ine_err_msg());
    cr_assert(strstr(ine_err_msg(), "full"), "%s", ine_err_msg());
    cr_assert_eq(evlog_last_seq(log, &before), INE_OK);
    cr_assert_eq(before, i - 1);

    /* A batch that does not fit writes none of its events. */
    evlog_event *evs[50];
    for (int j = 0; j < 50; j++) evs[j] = tu_ev_db_created(500000 + (uint32_t)j, "batch");
    cr_assert_eq(evlog_append(log, evs, 50, NULL, NULL), INE_EFULL);
    for (int j = 0; j < 50; j++) tu_event_free(evs[j]);
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, before);
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_OK, "%s", rep.reason);
    evlog_close(log);

    /* Reopened with a larger map, the same log accepts appends again. */
    log = open_log(8 << 20);
    cr_assert_eq(append_db(log, 1, NULL), before + 1);
    evlog_close(log);
}

Test(evlog, adopts_map_grown_by_another_process)
{
    evlog_t *log = open_log(1 << 20);
    append_db(log, 1, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Another process opens with a bigger map and fills past our size. */
        evlog_t *big = NULL;
        evlog_opts o = {.map_size = 32 << 20};
        if (evlog_open(logdir, &o, &big) != INE_OK) _exit(2);
        for (uint32_t i = 0; i < 40; i++) {
            evlog_event *evs[100];
            for (int j = 0; j < 100; j++) evs[j] = tu_ev_db_created(i * 100 + (uint32_t)j, "grow-grow-grow-grow-grow");
            if (evlog_append(big, evs, 100, NULL, NULL) != INE_OK) _exit(3);
            for (int j = 0; j < 100; j++) tu_event_free(evs[j]);
        }
        evlog_close(big);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* Our handle still has the old size: the next transaction must adopt the new one. */
    cr_assert_eq(append_db(log, 2, NULL), 4002, "%s", ine_err_msg());
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_OK, "%s", rep.reason);
    evlog_close(log);
}

Test(evlog, stale_reader_is_cleared)
{
    /* Keep our handle open: the first process to open an environment resets the reader
     * table wholesale, so a stale slot only matters (and is only countable) while others
     * still have the log open — as services do. */
    evlog_t *log = open_log(0);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        MDB_env *env;
        MDB_txn *txn;
        mdb_env_create(&env);
        mdb_env_set_maxdbs(env, 4);
        if (mdb_env_open(env, logdir, MDB_RDONLY, 0600)) _exit(2);
        if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) _exit(3);
        char c = 'r';
        if (write(pfd[1], &c, 1) != 1) _exit(4);
        pause(); /* holds the reader slot until killed */
        _exit(0);
    }
    char c;
    cr_assert_eq(read(pfd[0], &c, 1), 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    int cleared = 0;
    cr_assert_eq(evlog_reader_check(log, &cleared), INE_OK);
    cr_assert_eq(cleared, 1);
    cr_assert_eq(evlog_reader_check(log, &cleared), INE_OK);
    cr_assert_eq(cleared, 0);
    evlog_close(log);
    close(pfd[0]);
    close(pfd[1]);
}

Test(evlog, read_only_open_refuses_appends_and_missing_log)
{
    evlog_t *log = NULL;
    evlog_opts ro = {.read_only = 1};
    cr_assert_eq(evlog_open(logdir, &ro, &log), INE_ENOTFOUND);
    evlog_close(open_log(0));
    cr_assert_eq(evlog_open(logdir, &ro, &log), INE_OK, "%s", ine_err_msg());
    evlog_event *ev = tu_ev_db_created(1, "x");
    cr_assert_eq(evlog_append_one(log, ev, NULL, NULL), INE_EPERM);
    tu_event_free(ev);
    evlog_close(log);
}

Test(evlog, type_names_come_from_the_schema)
{
    evlog_event *ev = tu_ev_db_created(1, "x");
    cr_assert_str_eq(evlog_type_name(ev), "database_created");
    cr_assert_eq(evlog_type_from_name("database_created"), INE__V1__EVENT__BODY_DATABASE_CREATED);
    cr_assert_eq(evlog_type_from_name("producer"), 0, "envelope fields are not event types");
    cr_assert_eq(evlog_type_from_name("nope"), 0);
    ev->body_case = INE__V1__EVENT__BODY__NOT_SET;
    cr_assert_str_eq(evlog_type_name(ev), "unknown");
    ev->body_case = INE__V1__EVENT__BODY_DATABASE_CREATED;
    tu_event_free(ev);
}

Test(evlog, append_raw_replicates_and_refuses_breaks)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 5; i++) append_db(log, i, i == 3 ? "req-3" : NULL);
    uint64_t useq = tu_append_unknown(log, 1234);
    cr_assert_eq(useq, 6, "%s", ine_err_msg());
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(log, &rep), INE_OK, "%s", rep.reason);

    /* A replica fed record by record ends identical and verifies. */
    char *rdir = tu_path(dir, "replica");
    evlog_t *rep_log = NULL;
    cr_assert_eq(evlog_open(rdir, NULL, &rep_log), INE_OK);
    uint8_t *raw;
    size_t len;
    for (uint64_t s = 1; s <= 6; s++) {
        cr_assert_eq(evlog_read_raw(log, s, &raw, &len), INE_OK);
        if (s == 4) {
            /* Out of order, and a record whose link was altered, are refused and change
             * nothing. (An altered body shows only when the next record's link arrives.) */
            cr_assert_eq(evlog_append_raw(rep_log, 5, raw, len), INE_ECHAIN);
            uint8_t *link = memmem(raw, len, "\x32\x20", 2);
            cr_assert_not_null(link);
            link[10] ^= 1;
            cr_assert_eq(evlog_append_raw(rep_log, 4, raw, len), INE_ECHAIN);
            link[10] ^= 1;
        }
        cr_assert_eq(evlog_append_raw(rep_log, s, raw, len), INE_OK, "seq %llu: %s", (unsigned long long)s, ine_err_msg());
        free(raw);
    }
    uint8_t junk[] = {0xff, 0xff, 0xff};
    cr_assert_eq(evlog_append_raw(rep_log, 7, junk, sizeof junk), INE_ECORRUPT);
    cr_assert_eq(evlog_verify(rep_log, &rep), INE_OK, "%s", rep.reason);
    cr_assert_eq(rep.records, 6);
    uint8_t h1[EVLOG_HASH_LEN], h2[EVLOG_HASH_LEN];
    uint64_t s1, s2;
    evlog_head(log, &s1, h1);
    evlog_head(rep_log, &s2, h2);
    cr_assert_eq(s1, s2);
    cr_assert_arr_eq(h1, h2, EVLOG_HASH_LEN);
    /* The request id came along: a retry on the replica is a duplicate. */
    evlog_event *ev = tu_ev_db_created(9, "x");
    uint64_t first;
    cr_assert_eq(evlog_append_one(rep_log, ev, "req-3", &first), 1);
    cr_assert_eq(first, 3);
    tu_event_free(ev);

    /* The unknown record decodes with no body; its type reads as unknown. */
    cr_assert_eq(evlog_read(log, 6, &ev), INE_OK);
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY__NOT_SET);
    cr_assert_str_eq(evlog_type_name(ev), "unknown");
    evlog_event_free(ev);
    evlog_close(rep_log);
    free(rdir);
    evlog_close(log);
}

Test(evlog, append_raw_n_is_one_all_or_nothing_transaction)
{
    evlog_t *log = open_log(0);
    for (uint32_t i = 1; i <= 6; i++) append_db(log, i, i == 2 ? "req-2" : NULL);
    uint8_t *raws[6];
    size_t lens[6];
    for (uint64_t s = 1; s <= 6; s++) cr_assert_eq(evlog_read_raw(log, s, &raws[s - 1], &lens[s - 1]), INE_OK);

    char *rdir = tu_path(dir, "copy");
    evlog_t *cp = NULL;
    uint64_t head;
    cr_assert_eq(evlog_open(rdir, NULL, &cp), INE_OK);
    /* A batch whose fourth record does not link: nothing of it is written, the seq is named. */
    uint8_t *swapped[4] = {raws[0], raws[1], raws[2], raws[4]};
    size_t swapped_len[4] = {lens[0], lens[1], lens[2], lens[4]};
    cr_assert_eq(evlog_append_raw_n(cp, 1, (const uint8_t *const *)swapped, swapped_len, 4), INE_ECHAIN);
    cr_assert(strstr(ine_err_msg(), "record 4"), "%s", ine_err_msg());
    cr_assert_eq(evlog_last_seq(cp, &head), INE_OK);
    cr_assert_eq(head, 0, "a refused batch left %llu records", (unsigned long long)head);
    /* A batch that starts anywhere but head + 1 is refused too. */
    cr_assert_eq(evlog_append_raw_n(cp, 2, (const uint8_t *const *)raws + 1, lens + 1, 2), INE_ECHAIN);
    /* Two good batches make the same log, request ids included. */
    cr_assert_eq(evlog_append_raw_n(cp, 1, (const uint8_t *const *)raws, lens, 3), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(evlog_append_raw_n(cp, 4, (const uint8_t *const *)raws + 3, lens + 3, 3), INE_OK, "%s", ine_err_msg());
    uint8_t h1[EVLOG_HASH_LEN], h2[EVLOG_HASH_LEN];
    uint64_t s1, s2;
    cr_assert_eq(evlog_head(log, &s1, h1), INE_OK);
    cr_assert_eq(evlog_head(cp, &s2, h2), INE_OK);
    cr_assert_eq(s2, 6);
    cr_assert_arr_eq(h1, h2, EVLOG_HASH_LEN);
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(cp, &rep), INE_OK, "%s", rep.reason);
    evlog_event *ev = tu_ev_db_created(9, "x");
    uint64_t first;
    cr_assert_eq(evlog_append_one(cp, ev, "req-2", &first), 1);
    cr_assert_eq(first, 2);
    tu_event_free(ev);
    for (int i = 0; i < 6; i++) free(raws[i]);
    evlog_close(cp);
    free(rdir);
    evlog_close(log);
}

Test(evlog, map_size_from_the_environment)
{
    evlog_opts o;
    unsetenv("INE_LOG_MAP_SIZE");
    cr_assert_eq(evlog_opts_from_env(&o), INE_OK);
    cr_assert_eq(o.map_size, 0);
    setenv("INE_LOG_MAP_SIZE", "64M", 1);
    cr_assert_eq(evlog_opts_from_env(&o), INE_OK);
    cr_assert_eq(o.map_size, 64u << 20);
    setenv("INE_LOG_MAP_SIZE", "12x", 1);
    cr_assert_eq(evlog_opts_from_env(&o), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "INE_LOG_MAP_SIZE"), "%s", ine_err_msg());
    setenv("INE_LOG_MAP_SIZE", "100", 1);
    cr_assert_eq(evlog_opts_from_env(&o), INE_EINVAL);
    unsetenv("INE_LOG_MAP_SIZE");
}
