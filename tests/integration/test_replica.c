/* test_replica.c — a follower's replica of the log, fed over the control plane by the real
 * binaries: ine-replica catches up from an empty log and from any seq, follows new events,
 * resumes after the master's transport went away, and keeps byte-for-byte the master's
 * chain. A master's transport refuses a follower whose log diverged; a follower refuses a
 * stream that breaks the chain (a fake master sends one) and writes nothing of it. A follower's
 * transport appends nothing to its replica: the master records its activations from its
 * heartbeats. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "cluster.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "pki.h"
#include "repl.h"
#include "sealed.h"
#include "testutil.h"
#include "tlsconf.h"

#include "ine/v1/transport.pb-c.h"

static cl_t c;

static void teardown(void) { cl_stop(&c); }
TestSuite(replica, .fini = teardown, .timeout = 240);

/* A follower's data dir for node n: seal key, replica.conf pointing at `port` on 127.0.0.1, and
 * the master's log up to `to` (0: empty). */
static char *follower_make(int n, int port, uint64_t to)
{
    char name[32];
    repl_conf rc = {.node_uid = (uint32_t)n, .master_port = port};
    snprintf(name, sizeof name, "follower%d", n);
    char *dd = cl_path(&c, name);
    char *key = tu_path(c.dd, "seal.key"), *dst = tu_path(dd, "seal.key"), *data;
    size_t len = 0;
    cr_assert_eq(datadir_create(dd), INE_OK);
    cr_assert(data = tu_read_file(key, &len));
    cr_assert_eq(tu_write_file(dst, data, len), 0);
    cr_assert_eq(chmod(dst, 0600), 0);
    snprintf(rc.master_address, sizeof rc.master_address, "%s", cl_addr(1));
    snprintf(rc.cluster_uid, sizeof rc.cluster_uid, "%s", cl_state(&c)->cluster.uid);
    cr_assert_eq(repl_conf_save(dd, &rc), INE_OK, "%s", ine_err_msg());
    free(c.tp_dd[n]);
    c.tp_dd[n] = strdup(dd);
    if (to) cl_replica_sync(&c, n, to);
    free(key);
    free(dst);
    free(data);
    return dd;
}

/* The seq of node n's control-plane certificate: a follower needs at least that to connect. */
static uint64_t cert_seq(int n)
{
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; !proj_cert_find(cl_state(&c), (uint32_t)n, 1);)
        cr_assert(cl_now_ms() < end, "node %d got its certificates", n);
    return proj_cert_find(cl_state(&c), (uint32_t)n, 1)->issued_seq;
}

static cl_proc *replica_start(const char *dd, const char *name)
{
    char *argv[] = {(char *)tu_bin("ine-replica"), "--data-dir", (char *)dd, "--io-timeout", "3000", "--retry-max", "500", NULL};
    return cl_spawn(&c, NULL, name, argv, NULL);
}

static evlog_t *open_log(const char *dd)
{
    char *p = tu_path(dd, "log");
    evlog_t *l = NULL;
    cr_assert_eq(evlog_open(p, NULL, &l), INE_OK, "%s", ine_err_msg());
    free(p);
    return l;
}

static uint64_t last_of(const char *dd)
{
    evlog_t *l = open_log(dd);
    uint64_t s = 0;
    cr_assert_eq(evlog_last_seq(l, &s), INE_OK);
    evlog_close(l);
    return s;
}

/* Wait until the follower's log reaches the master's head, then check it is the same chain. */
static void wait_same(const char *dd, cl_proc *r)
{
    uint64_t mine = 0, master = 0;
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;; usleep(50000)) {
        cr_assert_eq(evlog_last_seq(c.log, &master), INE_OK);
        if ((mine = last_of(dd)) == master) break;
        cr_assert(cl_now_ms() < end, "the replica stayed at seq %llu, the master is at %llu; ine-replica said:\n%s",
                  (unsigned long long)mine, (unsigned long long)master, cl_log_since(r, 0));
    }
    evlog_t *l = open_log(dd);
    uint8_t h1[EVLOG_HASH_LEN], h2[EVLOG_HASH_LEN];
    uint64_t s1, s2;
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(l, &rep), INE_OK, "the replica verifies: %s", rep.reason);
    cr_assert_eq(evlog_head(l, &s1, h1), INE_OK);
    cr_assert_eq(evlog_head(c.log, &s2, h2), INE_OK);
    cr_assert(s1 == s2 && !memcmp(h1, h2, sizeof h1), "the replica's head is the master's, hash and all");
    evlog_close(l);
}

Test(replica, catches_up_from_empty_and_from_any_seq_and_follows_new_events)
{
    cl_opts o = {0};
    cl_start(&c, &o);
    /* From nothing, as `inectl node join` does: with the credentials the join handed over. */
    char *empty = follower_make(2, c.port, 0);
    repl_conf conf;
    repl_creds cr;
    uint64_t got = 0, head = 0;
    cr_assert_eq(repl_conf_load(empty, &conf), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(repl_creds_from_log(c.log, c.seal, 2, &cr), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(repl_sync(empty, &conf, &cr, 10000, &got), INE_OK, "%s", ine_err_msg());
    repl_creds_free(&cr);
    cr_assert_eq(evlog_last_seq(c.log, &head), INE_OK);
    cr_assert_geq(got, cert_seq(2), "the sync reached the master's head as of its connect");
    /* From any seq: node 3's replica starts where its certificate is, ine-replica does the rest. */
    char *partial = follower_make(3, c.port, cert_seq(3));
    cl_proc *r2 = replica_start(empty, "replica-2"), *r3 = replica_start(partial, "replica-3");
    wait_same(empty, r2);
    wait_same(partial, r3);
    cr_assert(cl_wait_log(r3, 0, "follows the master", CL_WAIT_MS));
    /* New events reach both. */
    cl_create_db(&c, "after", cl_free_port(), 2, "127.0.0.2:1", 1);
    wait_same(empty, r2);
    wait_same(partial, r3);
    /* The master's transport said who replicates what. */
    cr_assert(cl_wait_log(&c.tp[1], 0, "node 2 replicates the log from seq 1 ", CL_WAIT_MS));
    /* Operators read a follower's state from its own log; changes go to the master. */
    {
        char *out = NULL, *err = NULL;
        char *info[] = {(char *)tu_bin("inectl"), "--data-dir", partial, "info", "db", "after", NULL};
        char *tune[] = {(char *)tu_bin("inectl"), "--data-dir", partial, "tune", "db", "after", "data_internode_encryption", "disabled", NULL};
        cr_assert_eq(tu_run(info, NULL, &out, &err), 0, "%s", err);
        cr_assert(strstr(out, "after"), "%s", out);
        free(out);
        free(err);
        cr_assert_neq(tu_run(tune, NULL, &out, &err), 0);
        cr_assert(strstr(err, "follower node 3") && strstr(err, "run this on the master"), "%s", err);
        free(out);
        free(err);
    }
    free(empty);
    free(partial);
}

Test(replica, resumes_after_the_master_hung_or_died_and_came_back)
{
    cl_opts o = {0};
    cl_start(&c, &o);
    char *dd = follower_make(3, c.port, cert_seq(3));
    cl_proc *r = replica_start(dd, "replica-3");
    uint64_t master = 0;
    wait_same(dd, r);

    /* Hung: the master's transport stops answering but its connections stay open. */
    size_t mark = cl_log_mark(r), mark2 = cl_log_mark(&c.tp[2]);
    cr_assert_eq(kill(c.tp[1].pid, SIGSTOP), 0);
    cr_assert(cl_wait_log(r, mark, "sent nothing for 3000 ms", CL_WAIT_MS), "the follower noticed: %s", cl_log_since(r, mark));
    cr_assert(cl_wait_log(&c.tp[2], mark2, "control-plane stream to node 1 lost: no heartbeat", CL_WAIT_MS),
              "node 2 noticed the hung peer: %s", cl_log_since(&c.tp[2], mark2));
    {
        char port[16], *out = NULL, *err = NULL;
        snprintf(port, sizeof port, "%d", cl_free_port());
        cr_assert_eq(cl_inectl(&c, &out, &err, "create", "db", "name", "while-hung", "port", port, "shard_node", "2", "shard_address",
                               "127.0.0.2:1", NULL), 0, "%s", err);
        free(out);
        free(err);
    }
    cr_assert_eq(evlog_last_seq(c.log, &master), INE_OK);
    cr_assert_lt(last_of(dd), master, "the follower cannot have it yet");
    cr_assert_eq(kill(c.tp[1].pid, SIGCONT), 0);
    wait_same(dd, r);

    /* Dead: killed, the log moves on, it comes back. */
    mark = cl_log_mark(r);
    cl_tp_stop(&c, 1, SIGKILL);
    cr_assert(cl_wait_log(r, mark, "retrying", CL_WAIT_MS), "the follower noticed: %s", cl_log_since(r, mark));
    cl_create_db(&c, "while-away", cl_free_port(), 2, "127.0.0.2:1", 1);
    cr_assert_eq(evlog_last_seq(c.log, &master), INE_OK);
    cr_assert_lt(last_of(dd), master, "the follower cannot have it yet");
    cl_tp_start(&c, 1);
    wait_same(dd, r);
    free(dd);
}

Test(replica, a_follower_whose_log_diverged_is_refused_and_keeps_its_log)
{
    cl_opts o = {0};
    cl_start(&c, &o);
    cl_create_db(&c, "before", cl_free_port(), 2, "127.0.0.2:1", 1);
    char *dd = follower_make(3, c.port, cert_seq(3));
    /* A record the master never wrote, linked correctly to the follower's own head. */
    {
        char *p = tu_path(dd, "log");
        evlog_t *l = NULL;
        cr_assert_eq(evlog_open(p, NULL, &l), INE_OK);
        evlog_event *ev = tu_ev_db_created(77, "forged");
        cr_assert_eq(evlog_append_one(l, ev, NULL, NULL), INE_OK, "%s", ine_err_msg());
        tu_event_free(ev);
        evlog_close(l);
        free(p);
    }
    uint64_t before = last_of(dd);
    cl_proc *r = replica_start(dd, "replica-3");
    cr_assert(cl_wait_log(r, 0, "diverged", CL_WAIT_MS), "the master refused: %s", cl_log_since(r, 0));
    cr_assert(cl_wait_log(&c.tp[1], 0, "refused stream", CL_WAIT_MS), "the master logged its refusal");
    cr_assert_eq(last_of(dd), before, "nothing was written");
    free(dd);
}

/* --- a fake master that sends a record that does not link ------------------------------------- */

typedef struct {
    int lfd;
    SSL_CTX *ctx;
    uint8_t *raw;
    size_t len;
    uint64_t seq;
    int served;
} fake_master;

static void *fake_serve(void *arg)
{
    fake_master *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    SSL *ssl = SSL_new(f->ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
        uint8_t hdr[2], msg[512], out[2 + 64], rh[REPL_REC_HDR];
        size_t n, put;
        if (SSL_read_ex(ssl, hdr, 2, &n) == 1 && SSL_read_ex(ssl, msg, ((size_t)hdr[0] << 8) | hdr[1], &n) == 1) {
            Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
            a.ok = 1;
            a.reason = "";
            a.head_seq = f->seq;
            n = ine__v1__stream_accept__pack(&a, out + 2);
            out[0] = (uint8_t)(n >> 8);
            out[1] = (uint8_t)n;
            SSL_write_ex(ssl, out, n + 2, &put);
            repl_rec_header(rh, f->seq, (uint32_t)f->len);
            SSL_write_ex(ssl, rh, sizeof rh, &put);
            SSL_write_ex(ssl, f->raw, f->len, &put);
            f->served = 1;
            SSL_read_ex(ssl, msg, sizeof msg, &n); /* until the follower hangs up */
        }
    }
    SSL_free(ssl);
    close(fd);
    return NULL;
}

Test(replica, a_stream_that_breaks_the_chain_is_refused_and_nothing_of_it_written)
{
    cl_opts o = {.no_transports = 1};
    cl_start(&c, &o);
    cert_seq(1);
    uint64_t head = cert_seq(3) + 1;
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; evlog_last_seq(c.log, &head) == 0 && head <= cert_seq(3);)
        cr_assert(cl_now_ms() < end, "a record after node 3's certificate");
    int port = cl_free_port();
    char *dd = follower_make(3, port, head - 1);

    /* The fake master presents node 1's real control-plane certificate. */
    fake_master f = {.seq = head};
    {
        const proj_cert *pc = cl_cert(&c, 1, 1);
        X509 *leaf = NULL;
        STACK_OF(X509) *chain = NULL;
        pki_key *k = NULL;
        X509_STORE *trust = tlsconf_trust_from_bundle(cl_state(&c));
        cr_assert_eq(tlsconf_pem_certs(pc->cert.cert_pem, &leaf, &chain), INE_OK);
        cr_assert_eq(sealed_load_key(c.log, c.seal, pc->issued_seq, &k), INE_OK);
        cr_assert(f.ctx = tlsconf_ctx_new(TLSCONF_SERVER, leaf, chain, pki_evp(k), trust));
        X509_free(leaf);
        sk_X509_pop_free(chain, X509_free);
        pki_key_free(k);
        X509_STORE_free(trust);
    }
    /* The master's last record with its link to the previous record altered. */
    {
        uint8_t *raw = NULL;
        size_t len = 0;
        cr_assert_eq(evlog_read_raw(c.log, head, &raw, &len), INE_OK);
        evlog_event *ev = ine__v1__event__unpack(NULL, len, raw);
        cr_assert(ev && ev->prev_sha256.len == EVLOG_HASH_LEN);
        ev->prev_sha256.data[0] ^= 0x55;
        f.len = ine__v1__event__get_packed_size(ev);
        f.raw = malloc(f.len);
        ine__v1__event__pack(ev, f.raw);
        ine__v1__event__free_unpacked(ev, NULL);
        free(raw);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, cl_addr(1), &sa.sin_addr);
    int one = 1;
    cr_assert_geq(f.lfd = socket(AF_INET, SOCK_STREAM, 0), 0);
    setsockopt(f.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    cr_assert_eq(bind(f.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(f.lfd, 4), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, fake_serve, &f), 0);

    uint64_t before = last_of(dd);
    cl_proc *r = replica_start(dd, "replica-3");
    cr_assert(cl_wait_log(r, 0, "stream cut", CL_WAIT_MS), "the follower refused the stream: %s", cl_log_since(r, 0));
    pthread_join(th, NULL);
    cr_assert(f.served, "the fake master sent its record");
    cr_assert_eq(last_of(dd), before, "nothing of the stream was written");
    {
        evlog_t *l = open_log(dd);
        evlog_verify_report rep;
        cr_assert_eq(evlog_verify(l, &rep), INE_OK, "%s", rep.reason);
        evlog_close(l);
    }
    close(f.lfd);
    SSL_CTX_free(f.ctx);
    free(f.raw);
    free(dd);
}

Test(replica, a_follower_transport_appends_nothing_and_the_master_records_its_activations)
{
    cl_opts o = {0};
    cl_start(&c, &o);
    char *dd = follower_make(3, c.port, cert_seq(3));
    cl_proc *r = replica_start(dd, "replica-3");
    wait_same(dd, r);
    /* Node 3's transport now runs from its replica. */
    cr_assert_eq(cl_tp_stop(&c, 3, SIGTERM), 0);
    size_t mark1 = cl_log_mark(&c.tp[1]), mark2 = cl_log_mark(&c.tp[2]);
    cl_tp_start(&c, 3);
    cr_assert(cl_wait_heartbeats(&c, 3, 0, CL_WAIT_MS), "node 3 runs from its replica");
    /* A rotation: node 3 learns of its new certificates through the replica only. */
    char *out = NULL, *err = NULL;
    cr_assert_eq(cl_inectl(&c, &out, &err, "cluster", "certificate", "rotate", NULL), 0, "%s", err);
    free(out);
    free(err);
    cr_assert(cl_wait_converged(&c, CL_WAIT_MS), "every node activated its new certificates, node 3 included");
    /* Nodes 1 and 2 run from the master's log: either may be first to record it. */
    cr_assert(cl_log_count(&c.tp[1], mark1, "recorded that node 3 serves") + cl_log_count(&c.tp[2], mark2, "recorded that node 3 serves") > 0,
              "a node running from the master's log recorded node 3's activation from its heartbeat");
    wait_same(dd, r); /* still a prefix of the master's chain: node 3 wrote nothing of its own */
    (void)r;
    free(dd);
}
