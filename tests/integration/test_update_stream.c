/* test_update_stream.c — the policy update stream end to end: the real ine-ca, ine-policy and
 * ine-updates on a fresh cluster, changes made with the real inectl, and real subscribers:
 * `inectl watch` processes (late, killed and restarted, filtering one database) and the
 * library in this process (paused past the high-water mark). Each ends with exactly the
 * updates it asked for, in seq order, none twice, none missing, checked against the log
 * itself; no key of an uploaded customer certificate appears in anything the stream sent. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "err.h"
#include "evlog.h"
#include "svc.h"
#include "testutil.h"
#include "updates.h"

static svc_cluster C;
static pid_t upd;
static char *upd_log;

static void start_updates(const char *hwm)
{
    char *argv[] = {(char *)tu_bin("ine-updates"), "--data-dir", C.dd, "--node", "1", "--hwm", (char *)hwm, NULL};
    char *sock = tu_path(C.dd, "run/updates.req");
    upd_log = tu_path(C.dir, "ine-updates.log");
    cr_assert_gt(upd = svc_spawn(argv, NULL, upd_log), 0, "%s", svc_why());
    for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++) usleep(50000);
    cr_assert_eq(access(sock, F_OK), 0, "ine-updates did not start: %s", svc_tail(upd_log));
    free(sock);
}

static void setup(void)
{
    upd = 0;
    upd_log = NULL;
    cr_assert_eq(svc_cluster_init(&C, NULL, NULL), 0, "%s", svc_why());
    cr_assert_eq(svc_start_ca(&C, 180000), 0, "%s", svc_why());
    cr_assert_eq(svc_start_policy(&C, 0, 60000), 0, "%s", svc_why());
}
static void teardown(void)
{
    if (upd > 0) svc_stop(upd, 5000);
    svc_cluster_free(&C);
    free(upd_log);
}
TestSuite(update_stream, .init = setup, .fini = teardown, .timeout = 400);

static uint64_t last_seq(void)
{
    uint64_t s = 0;
    cr_assert_eq(svc_last_seq(C.dd, &s), 0, "%s", svc_why());
    return s;
}

static void inectl_ok(const char *a, const char *b, const char *c3, const char *d, const char *e)
{
    char *out = NULL, *err = NULL;
    int rc = svc_inectl(&C, &out, &err, a, b, c3, d, e, NULL);
    cr_assert_eq(rc, 0, "inectl %s %s %s %s %s: %s", a, b, c3 ? c3 : "", d ? d : "", e ? e : "", err);
    free(out);
    free(err);
}

static void create_db(const char *name, const char *port)
{
    char *out = NULL, *err = NULL;
    int rc = svc_inectl(&C, &out, &err, "create", "db", "name", name, "port", port, "shard_node", "2", "shard_address",
                        "127.0.0.2:16379", "data_internode_encryption", "enabled", NULL);
    cr_assert_eq(rc, 0, "create db %s: %s", name, err);
    free(out);
    free(err);
}

/* Databases are created enabled: the i-th toggle of one (from 0) disables it when i is even. */
static void toggle(const char *db, int i) { inectl_ok("tune", "db", db, "data_internode_encryption", i % 2 ? "enabled" : "disabled"); }

/* The log's records after `from`, as (seq, topic) the stream must carry for them, built the
 * way ine-updates builds them; the topics of records no prefix matches are NULL. */
typedef struct {
    uint64_t seq;
    char topic[UPDATES_TOPIC_MAX];
} expect_t;

typedef struct {
    proj_state st;
    expect_t *e;
    size_t n;
    const char *prefix;
} expect_ctx;

static int expect_rec(const evlog_record *rec, void *ud)
{
    expect_ctx *x = ud;
    updates_out o;
    cr_assert_eq(updates_build(&x->st, rec->ev, rec->raw, rec->raw_len, 1, &o), INE_OK, "%s", ine_err_msg());
    if ((!x->prefix || !strncmp(o.topic, x->prefix, strlen(x->prefix)))) {
        x->e = realloc(x->e, (x->n + 1) * sizeof *x->e);
        x->e[x->n].seq = rec->seq;
        snprintf(x->e[x->n].topic, sizeof x->e[x->n].topic, "%s", o.topic);
        x->n++;
    }
    updates_out_free(&o);
    return 0;
}

/* What the stream must carry after `from` (matching `prefix`, NULL: all), up to `to`. */
static expect_t *expected(uint64_t from, uint64_t to, const char *prefix, size_t *n)
{
    char *dir = tu_path(C.dd, "log");
    evlog_t *log = NULL;
    evlog_opts lo = {.read_only = 1};
    expect_ctx x = {.prefix = prefix};
    cr_assert_eq(evlog_open(dir, &lo, &log), INE_OK, "%s", ine_err_msg());
    proj_init(&x.st);
    cr_assert_eq(evlog_iterate(log, 1, to, 0, expect_rec, &x), INE_OK, "%s", ine_err_msg());
    proj_free(&x.st);
    evlog_close(log);
    free(dir);
    /* Drop what came before `from` (the state had to be built from seq 1 all the same). */
    size_t k = 0;
    for (size_t i = 0; i < x.n; i++)
        if (x.e[i].seq > from) x.e[k++] = x.e[i];
    *n = k;
    return x.e;
}

/* JSON lines from inectl watch: each line's seq and topic, in order. */
static size_t parse_lines(const char *out, uint64_t *seqs, char (*topics)[UPDATES_TOPIC_MAX], size_t max)
{
    size_t n = 0;
    const char *p = out;
    while (p && *p && n < max) {
        const char *nl = strchr(p, '\n');
        if (!nl) break; /* a line cut by a kill */
        json_error_t je;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, &je);
        cr_assert_not_null(j, "not JSON: %.*s (%s)", (int)(nl - p), p, je.text);
        seqs[n] = (uint64_t)json_integer_value(json_object_get(j, "seq"));
        snprintf(topics[n], UPDATES_TOPIC_MAX, "%s", json_string_value(json_object_get(j, "topic")));
        json_decref(j);
        n++;
        p = nl + 1;
    }
    return n;
}

static void assert_exactly(const expect_t *e, size_t ne, const uint64_t *seqs, char (*topics)[UPDATES_TOPIC_MAX], size_t n,
                           const char *who)
{
    for (size_t i = 0; i < n && i < ne; i++) {
        cr_assert_eq(seqs[i], e[i].seq, "%s: update %zu has seq %llu, the log says %llu", who, i, (unsigned long long)seqs[i],
                     (unsigned long long)e[i].seq);
        cr_assert_str_eq(topics[i], e[i].topic, "%s: seq %llu", who, (unsigned long long)seqs[i]);
    }
    cr_assert_eq(n, ne, "%s: %zu updates, the log has %zu for it", who, n, ne);
}

static char *watch(const char *since, const char *count, const char *topic)
{
    char *out = NULL, *err = NULL;
    int rc;
    if (topic) rc = svc_inectl(&C, &out, &err, "watch", "since", since, "count", count, "topic", topic, NULL);
    else rc = svc_inectl(&C, &out, &err, "watch", "since", since, "count", count, NULL);
    cr_assert_eq(rc, 0, "inectl watch: %s", err);
    free(err);
    return out;
}

Test(update_stream, a_late_subscriber_gets_everything_and_no_key)
{
    svc_chain ch;
    char *cf = tu_path(C.dir, "cust.pem"), *kf = tu_path(C.dir, "cust.key");
    start_updates("1000");
    create_db("alpha", "12001");
    for (int i = 0; i < 99; i++) toggle("alpha", i);
    cr_assert_eq(svc_chain_make(&ch, -60, 86400 * 200), 0, "%s", svc_why());
    cr_assert_eq(tu_write_file(cf, ch.cert_pem, strlen(ch.cert_pem)), 0);
    cr_assert_eq(tu_write_file(kf, ch.key_pem, strlen(ch.key_pem)), 0);
    {
        char *out = NULL, *err = NULL;
        int rc = svc_inectl(&C, &out, &err, "cluster", "certificate", "set", "internal", "dpine_certificate_file", cf,
                            "dpine_key_file", kf, NULL);
        cr_assert_eq(rc, 0, "upload: %s", err);
        free(out);
        free(err);
    }
    uint64_t head = last_seq();
    char count[32];
    snprintf(count, sizeof count, "%llu", (unsigned long long)head);
    char *out = watch("0", count, NULL);
    size_t ne, n;
    expect_t *e = expected(0, head, NULL, &ne);
    uint64_t *seqs = calloc(head + 1, sizeof *seqs);
    char(*topics)[UPDATES_TOPIC_MAX] = calloc(head + 1, sizeof *topics);
    n = parse_lines(out, seqs, topics, head + 1);
    assert_exactly(e, ne, seqs, topics, n, "late subscriber");
    cr_assert_eq(ne, head, "every record has an update");
    cr_assert(strstr(out, "\"topic\":\"db.1.encryption\""), "toggles are published");
    cr_assert(strstr(out, "\"topic\":\"cert.all.dp.uploaded\""), "the upload is published");
    cr_assert(strstr(out, "\"enforced_here\":true"), "an enabled database says node 1 enforces it");
    cr_assert_null(svc_key_leak(&ch, out, strlen(out)), "the stream carried the customer key: %s", svc_key_leak(&ch, out, strlen(out)));
    cr_assert_null(strstr(out, "PRIVATE KEY"));
    cr_assert_null(strstr(out, "sealed"));
    free(seqs);
    free(topics);
    free(e);
    free(out);
    svc_chain_free(&ch);
    free(cf);
    free(kf);
    cr_assert_eq(svc_stop(upd, 5000), 0, "ine-updates did not stop cleanly: %s", svc_tail(upd_log));
    upd = 0;
}

Test(update_stream, a_filter_on_one_database_gets_that_database_only)
{
    start_updates("1000");
    uint64_t from = last_seq();
    create_db("alpha", "12001");
    create_db("beta", "12002");
    int na = 0, nb = 0;
    for (int i = 0; i < 20; i++) {
        if (i % 3) toggle("alpha", na++);
        else toggle("beta", nb++);
    }
    inectl_ok("delete", "db", "beta", NULL, NULL);
    uint64_t head = last_seq();
    size_t ne, n;
    expect_t *e = expected(from, head, "db.2.", &ne);
    cr_assert_geq(ne, 9, "beta's changes are in the log");
    char since[32], count[32];
    snprintf(since, sizeof since, "%llu", (unsigned long long)from);
    snprintf(count, sizeof count, "%zu", ne);
    char *out = watch(since, count, "db.2.");
    uint64_t seqs[64];
    char topics[64][UPDATES_TOPIC_MAX];
    n = parse_lines(out, seqs, topics, 64);
    assert_exactly(e, ne, seqs, topics, n, "db.2. filter");
    cr_assert_str_eq(topics[n - 1], "db.2.deleted");
    cr_assert_null(strstr(out, "\"db_uid\":1,"), "nothing of database 1");
    free(e);
    free(out);
}

Test(update_stream, a_subscriber_killed_mid_stream_resumes_with_no_gap_and_no_repeat)
{
    start_updates("1000");
    create_db("alpha", "12001");
    uint64_t from = last_seq();
    char *file = tu_path(C.dir, "watch1.out");
    char since[32];
    snprintf(since, sizeof since, "%llu", (unsigned long long)from);
    char *argv[] = {(char *)tu_bin("inectl"), "--data-dir", C.dd, "watch", "since", since, NULL};
    pid_t w = svc_spawn(argv, NULL, file);
    cr_assert_gt(w, 0);
    for (int i = 0; i < 30; i++) toggle("alpha", i);
    /* Killed while the changes keep coming. */
    kill(w, SIGKILL);
    svc_stop(w, 1000);
    for (int i = 30; i < 60; i++) toggle("alpha", i);
    size_t len;
    char *first = tu_read_file(file, &len);
    cr_assert_not_null(first);
    uint64_t seqs[400];
    char topics[400][UPDATES_TOPIC_MAX];
    size_t n1 = parse_lines(first, seqs, topics, 400);
    cr_assert_gt(n1, 0, "the first watcher printed nothing: %s", first);
    /* Restarted from the last seq it printed. */
    uint64_t head = last_seq();
    char since2[32], count2[32];
    snprintf(since2, sizeof since2, "%llu", (unsigned long long)seqs[n1 - 1]);
    snprintf(count2, sizeof count2, "%llu", (unsigned long long)(head - seqs[n1 - 1]));
    char *second = watch(since2, count2, NULL);
    size_t n2 = parse_lines(second, seqs + n1, topics + n1, 400 - n1);
    size_t ne;
    expect_t *e = expected(from, head, NULL, &ne);
    assert_exactly(e, ne, seqs, topics, n1 + n2, "killed and restarted");
    free(e);
    free(first);
    free(second);
    free(file);
}

/* Many records written straight into the log (local mode), so the stream outruns a paused
 * subscriber by far more than every queue between them holds. */
static void append_alerts(size_t n, size_t desc_len)
{
    char *dir = tu_path(C.dd, "log");
    evlog_t *log = NULL;
    cr_assert_eq(evlog_open(dir, NULL, &log), INE_OK, "%s", ine_err_msg());
    char *desc = malloc(desc_len + 1);
    memset(desc, 'x', desc_len);
    desc[desc_len] = 0;
    for (size_t done = 0; done < n;) {
        evlog_event *evs[500];
        Ine__V1__AlertRaised ar[500];
        Ine__V1__AlertCleared ac[500];
        char ids[500][64];
        size_t k = n - done < 500 ? n - done : 500;
        for (size_t i = 0; i < k; i++) {
            evs[i] = calloc(1, sizeof *evs[i]);
            ine__v1__event__init(evs[i]);
            evs[i]->producer = "test";
            evs[i]->actor = "test";
            snprintf(ids[i], sizeof ids[i], "bulk/%zu", (done + i) / 2);
            if ((done + i) % 2 == 0) {
                ine__v1__alert_raised__init(&ar[i]);
                ar[i].alert_id = ids[i];
                ar[i].name = "bulk";
                ar[i].severity = INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO;
                ar[i].description = desc;
                evs[i]->body_case = INE__V1__EVENT__BODY_ALERT_RAISED;
                evs[i]->alert_raised = &ar[i];
            } else {
                ine__v1__alert_cleared__init(&ac[i]);
                ac[i].alert_id = ids[i];
                ac[i].reason = "bulk";
                evs[i]->body_case = INE__V1__EVENT__BODY_ALERT_CLEARED;
                evs[i]->alert_cleared = &ac[i];
            }
        }
        uint64_t first;
        cr_assert_eq(evlog_append(log, evs, k, NULL, &first), INE_OK, "%s", ine_err_msg());
        for (size_t i = 0; i < k; i++) free(evs[i]);
        done += k;
    }
    free(desc);
    evlog_close(log);
    free(dir);
}

Test(update_stream, a_subscriber_paused_past_the_high_water_mark_misses_nothing)
{
    char pub[4096], req[4096];
    void *z = zmq_ctx_new();
    updates_sub *s = NULL;
    updates_msg *u = NULL;
    start_updates("20");
    create_db("alpha", "12001");
    uint64_t from = last_seq();
    cr_assert_eq(updates_default_endpoints(C.dd, pub, sizeof pub, req, sizeof req), INE_OK);
    cr_assert_eq(updates_sub_open(z, pub, req, from, NULL, 0, &s), INE_OK, "%s", ine_err_msg());
    /* Live first: one change, received. */
    toggle("alpha", 0);
    cr_assert_eq(updates_sub_next(s, 10000, &u), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(u->seq, from + 1);
    ine__v1__update__free_unpacked(u, NULL);
    uint64_t fetches = updates_sub_fetches(s);
    /* Paused (not reading) while 14,000 records, 600 bytes each, are published. */
    append_alerts(14000, 600);
    toggle("alpha", 1);
    uint64_t head = last_seq();
    sleep(2); /* ine-updates publishes them meanwhile, and the queues overflow */
    size_t ne;
    expect_t *e = expected(from + 1, head, NULL, &ne);
    for (size_t i = 0; i < ne; i++) {
        cr_assert_eq(updates_sub_next(s, 10000, &u), INE_OK, "after %zu of %zu: %s", i, ne, ine_err_msg());
        cr_assert_eq(u->seq, e[i].seq, "update %zu: seq %llu, the log says %llu", i, (unsigned long long)u->seq,
                     (unsigned long long)e[i].seq);
        cr_assert_str_eq(u->topic, e[i].topic);
        ine__v1__update__free_unpacked(u, NULL);
    }
    cr_assert_eq(updates_sub_next(s, 1500, &u), INE_EAGAIN, "an update beyond the log's end");
    cr_assert_gt(updates_sub_fetches(s), fetches, "the subscriber never had to fetch: nothing was dropped, the test proves nothing");
    free(e);
    updates_sub_close(s);
    zmq_ctx_term(z);
}

/* A record of a type this version does not know still has its message on the live stream:
 * the seqs have no hole, so the subscriber never has to fetch. */
Test(update_stream, a_record_of_an_unknown_type_is_published_too)
{
    char pub[4096], req[4096], *dir = tu_path(C.dd, "log");
    void *z = zmq_ctx_new();
    updates_sub *s = NULL;
    updates_msg *u = NULL;
    evlog_t *log = NULL;
    start_updates("1000");
    create_db("alpha", "12001");
    uint64_t from = last_seq();
    cr_assert_eq(updates_default_endpoints(C.dd, pub, sizeof pub, req, sizeof req), INE_OK);
    cr_assert_eq(updates_sub_open(z, pub, req, from, NULL, 0, &s), INE_OK, "%s", ine_err_msg());
    toggle("alpha", 0);
    cr_assert_eq(updates_sub_next(s, 10000, &u), INE_OK, "%s", ine_err_msg());
    ine__v1__update__free_unpacked(u, NULL);
    uint64_t fetches = updates_sub_fetches(s);
    cr_assert_eq(evlog_open(dir, NULL, &log), INE_OK, "%s", ine_err_msg());
    uint64_t unknown = tu_append_unknown(log, 1234);
    evlog_close(log);
    cr_assert_eq(unknown, from + 2, "%s", ine_err_msg());
    toggle("alpha", 1);
    cr_assert_eq(updates_sub_next(s, 10000, &u), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(u->seq, unknown);
    cr_assert_str_eq(u->topic, "log.unknown");
    cr_assert_eq(u->body_case, INE__V1__UPDATE__BODY__NOT_SET);
    ine__v1__update__free_unpacked(u, NULL);
    cr_assert_eq(updates_sub_next(s, 10000, &u), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(u->seq, unknown + 1);
    cr_assert_str_eq(u->topic, "db.1.encryption");
    ine__v1__update__free_unpacked(u, NULL);
    cr_assert_eq(updates_sub_fetches(s), fetches, "the live stream had a hole: the subscriber fetched");
    updates_sub_close(s);
    zmq_ctx_term(z);
    free(dir);
}

Test(update_stream, bad_requests_and_endpoints_are_refused)
{
    start_updates("1000");
    char *out = NULL, *err = NULL;
    /* A seq beyond the log. */
    int rc = svc_inectl(&C, &out, &err, "watch", "since", "999999", "count", "1", NULL);
    cr_assert_neq(rc, 0);
    cr_assert(strstr(err, "beyond this node's log"), "%s", err);
    free(out);
    free(err);
    rc = svc_inectl(&C, &out, &err, "watch", "topic", "a b", NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(err, "space"), "%s", err);
    free(out);
    free(err);
    /* Garbage on the request socket gets a refusal, and the service goes on. */
    void *z = zmq_ctx_new(), *r = zmq_socket(z, ZMQ_REQ);
    char pub[4096], req[4096];
    int tmo = 5000, zero = 0;
    cr_assert_eq(updates_default_endpoints(C.dd, pub, sizeof pub, req, sizeof req), INE_OK);
    zmq_setsockopt(r, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(r, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(r, req), 0);
    cr_assert_eq(zmq_send(r, "\xff\xff\xff", 3, 0), 3);
    char buf[4096];
    int n = zmq_recv(r, buf, sizeof buf, 0);
    cr_assert_gt(n, 0, "no answer to garbage");
    Ine__V1__UpdatesPage *p = ine__v1__updates_page__unpack(NULL, (size_t)n, (uint8_t *)buf);
    cr_assert_not_null(p);
    cr_assert(strstr(p->error, "not an UpdatesRequest"), "%s", p->error);
    ine__v1__updates_page__free_unpacked(p, NULL);
    zmq_close(r);
    zmq_ctx_term(z);
    cr_assert_eq(svc_running(upd, NULL), 1, "ine-updates died: %s", svc_tail(upd_log));
    /* A non-loopback TCP endpoint is refused at start. */
    char *argv[] = {(char *)tu_bin("ine-updates"), "--data-dir", C.dd, "--pub", "tcp://0.0.0.0:5999", NULL};
    char *o2 = NULL, *e2 = NULL;
    svc_stop(upd, 5000);
    upd = 0;
    rc = tu_run(argv, NULL, &o2, &e2);
    cr_assert_eq(rc, 1, "%s", e2);
    cr_assert(strstr(e2, "not on loopback"), "%s", e2);
    free(o2);
    free(e2);
}
