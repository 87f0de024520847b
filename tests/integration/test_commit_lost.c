/* test_commit_lost.c — the front door when etcd commits an append but its answer never comes.
 *
 * A real etcd member sits behind a TCP proxy in this process. On request, the proxy lets the
 * next transaction through to etcd, reads etcd's answer and drops it, closing the client's
 * connection: the transaction committed, the writer saw nothing. The front door must find
 * that its own record landed, and neither append it a second time nor answer its own request
 * id as someone else's. A real ine-mirror keeps the node's log (through the proxy too). */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "commit.h"
#include "err.h"
#include "etcdfix.h"
#include "evlog.h"
#include "svc.h"
#include "testutil.h"

/* --- the proxy --------------------------------------------------------------------------------- */

typedef struct {
    int lfd, port, target_port;
    atomic_int drop_next_txn; /* set by the test; the next /v3/kv/txn's answer is dropped */
    atomic_int dropped;       /* how many answers were dropped */
    atomic_int stop;
    pthread_t th;
} proxy_t;

typedef struct {
    proxy_t *p;
    int c;
} proxy_conn;

static int write_all(int fd, const char *b, size_t n)
{
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *proxy_conn_run(void *arg)
{
    proxy_conn *pc = arg;
    proxy_t *p = pc->p;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->target_port)};
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), drop = 0;
    char buf[65536];
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        while (!atomic_load(&p->stop)) {
            struct pollfd f[2] = {{pc->c, POLLIN, 0}, {s, POLLIN, 0}};
            if (poll(f, 2, 200) < 0) break;
            if (f[0].revents) {
                ssize_t n = read(pc->c, buf, sizeof buf);
                if (n <= 0) break;
                if (!drop && memmem(buf, (size_t)n, "/v3/kv/txn", 10)) {
                    int one = 1;
                    drop = atomic_compare_exchange_strong(&p->drop_next_txn, &one, 0);
                }
                if (write_all(s, buf, (size_t)n)) break;
            }
            if (f[1].revents) {
                ssize_t n = read(s, buf, sizeof buf);
                if (n <= 0) break;
                if (drop) {
                    /* etcd answered: the transaction is done. The writer never hears of it. */
                    atomic_fetch_add(&p->dropped, 1);
                    break;
                }
                if (write_all(pc->c, buf, (size_t)n)) break;
            }
        }
    }
    if (s >= 0) close(s);
    close(pc->c);
    free(pc);
    return NULL;
}

static void *proxy_run(void *arg)
{
    proxy_t *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd f = {p->lfd, POLLIN, 0};
        pthread_t t;
        proxy_conn *pc;
        int c;
        if (poll(&f, 1, 200) <= 0) continue;
        if ((c = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) continue;
        if (!(pc = malloc(sizeof *pc))) {
            close(c);
            continue;
        }
        *pc = (proxy_conn){p, c};
        if (pthread_create(&t, NULL, proxy_conn_run, pc) == 0) pthread_detach(t);
        else close(c), free(pc);
    }
    return NULL;
}

static void proxy_start(proxy_t *p, int target_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    memset(p, 0, sizeof *p);
    p->target_port = target_port;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(p->lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(p->lfd, 64), 0);
    cr_assert_eq(getsockname(p->lfd, (struct sockaddr *)&a, &len), 0);
    p->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&p->th, NULL, proxy_run, p), 0);
}

static void proxy_stop(proxy_t *p)
{
    atomic_store(&p->stop, 1);
    pthread_join(p->th, NULL);
    close(p->lfd);
}

/* --- the fixture ------------------------------------------------------------------------------- */

static char *tmp, *dd;
static ef_cluster ec;
static proxy_t px;
static pid_t mirror;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t local_seq(void)
{
    uint64_t s = 0;
    return svc_last_seq(dd, &s) == 0 ? s : 0;
}

static void setup(void)
{
    char conf[256], *p, *out = NULL, *err = NULL;
    tmp = tu_tmpdir();
    cr_assert(tmp);
    cr_assert_eq(ef_start(&ec, tmp, 1, 30000), 0, "%s", ef_why());
    proxy_start(&px, ec.m[0].client_port);
    dd = tu_path(tmp, "node1");
    cr_assert_eq(mkdir(dd, 0700), 0);
    snprintf(conf, sizeof conf, "endpoints=http://127.0.0.1:%d\n", px.port);
    p = tu_path(dd, "etcd.conf");
    cr_assert_eq(tu_write_file(p, conf, strlen(conf)), 0);
    free(p);
    {
        char *argv[] = {strdup(tu_bin("inectl")), "--data-dir", dd, "cluster", "create", "name", "lost", "nodes", "127.0.0.1",
                        "ca_key_bits", "2048", NULL};
        cr_assert_eq(tu_run(argv, NULL, &out, &err), 0, "cluster create: %s", err);
        free(argv[0]);
    }
    free(out);
    free(err);
    {
        char *argv[] = {strdup(tu_bin("ine-mirror")), "--data-dir", dd, NULL}, *log = tu_path(tmp, "mirror.log");
        mirror = svc_spawn(argv, NULL, log);
        cr_assert_gt(mirror, 0, "%s", svc_why());
        free(argv[0]);
        free(log);
    }
    for (int i = 0; i < 3000 && local_seq() == 0; i++) sleep_ms(10);
    cr_assert_gt(local_seq(), 0, "the mirror copied nothing");
}

static void teardown(void)
{
    if (mirror > 0) svc_stop(mirror, 5000);
    proxy_stop(&px);
    ef_stop(&ec);
    tu_rmrf(tmp);
    free(tmp);
    free(dd);
}

TestSuite(commit_lost, .init = setup, .fini = teardown, .timeout = 120);

/* --- the test ------------------------------------------------------------------------------------ */

typedef struct {
    const char *id;
    int n;
} count_ctx;

static int count_cleared(const evlog_record *rec, void *ud)
{
    count_ctx *c = ud;
    if (rec->ev && rec->ev->body_case == INE__V1__EVENT__BODY_ALERT_CLEARED && !strcmp(rec->ev->alert_cleared->alert_id, c->id))
        c->n++;
    return 0;
}

static int copies(evlog_t *log, const char *id)
{
    count_ctx c = {id, 0};
    cr_assert_eq(evlog_iterate(log, 1, 0, 0, count_cleared, &c), 0);
    return c.n;
}

Test(commit_lost, a_committed_append_whose_answer_was_lost_is_found_not_repeated)
{
    char *logdir = tu_path(dd, "log"), *run = tu_path(dd, "run");
    void *zctx = zmq_ctx_new();
    evlog_t *log = NULL;
    commit_t *c = NULL;
    uint64_t seq = 0, before;
    Ine__V1__AlertCleared b = INE__V1__ALERT_CLEARED__INIT;
    evlog_event ev = INE__V1__EVENT__INIT;
    int rc;

    cr_assert_eq(evlog_open(logdir, NULL, &log), 0);
    commit_cfg cc = {.data_dir = dd, .producer = "test", .log = log, .zctx = zctx, .run_dir = run};
    cr_assert_eq(commit_open(&cc, &c), 0, "%s", ine_err_msg());
    ev.body_case = INE__V1__EVENT__BODY_ALERT_CLEARED;
    ev.alert_cleared = &b;

    /* Warm: the head is cached, so the next append is a transaction at once. */
    b.alert_id = "warm";
    cr_assert_eq(commit_append_one(c, &ev, NULL, NULL, &seq), 0, "%s", ine_err_msg());

    /* Without a request id: the retry would have appended the event a second time. */
    before = local_seq();
    ev.time_us = 0;
    b.alert_id = "lost-1";
    atomic_store(&px.drop_next_txn, 1);
    rc = commit_append_one(c, &ev, NULL, NULL, &seq);
    cr_assert_eq(rc, 0, "the lost append: rc %d (%s)", rc, ine_err_msg());
    cr_assert_eq(atomic_load(&px.dropped), 1, "the proxy dropped no answer: the path was not taken");
    cr_assert_eq(seq, before + 1, "seq %llu, the log was at %llu", (unsigned long long)seq, (unsigned long long)before);
    sleep_ms(500);
    cr_assert_eq(local_seq(), before + 1, "appended %llu records, not one", (unsigned long long)(local_seq() - before));
    cr_assert_eq(copies(log, "lost-1"), 1);

    /* With a request id: our own write, not "already used by someone". */
    before = local_seq();
    ev.time_us = 0;
    b.alert_id = "lost-2";
    atomic_store(&px.drop_next_txn, 1);
    rc = commit_append_one(c, &ev, NULL, "lost-request-2", &seq);
    cr_assert_eq(rc, 0, "our own write answered as a duplicate (rc %d: %s)", rc, ine_err_msg());
    cr_assert_eq(atomic_load(&px.dropped), 2);
    cr_assert_eq(seq, before + 1);
    sleep_ms(500);
    cr_assert_eq(local_seq(), before + 1);
    cr_assert_eq(copies(log, "lost-2"), 1);

    /* And a true retry of that id is a duplicate answered with the first seq. */
    ev.time_us = 0;
    cr_assert_eq(commit_append_one(c, &ev, NULL, "lost-request-2", &seq), 1);
    cr_assert_eq(seq, before + 1);
    {
        evlog_verify_report rep;
        cr_assert_eq(evlog_verify(log, &rep), 0, "%s", rep.reason);
    }
    commit_close(c);
    evlog_close(log);
    zmq_ctx_term(zctx);
    free(logdir);
    free(run);
}
