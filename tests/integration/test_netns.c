/* test_netns.c — nodes on separate network stacks (issue #8, parts 2-4; issue #21): three hosts
 * made with `ip netns` and veth pairs to a bridge (tests/netns.h), each running its node's real
 * binaries on its own address and the default ports, and its own etcd member (clients on the
 * host's 127.0.0.1:2379 only, in mutual TLS with the node's own CA; peers through the node's
 * transport, in TLS on its address, 2380). h1 starts the cluster: its member
 * alone, `inectl cluster create`, its ine-mirror, ine-ca, ine-policy (REST on h1's address) and
 * ine-transport. h2 and h3 join from their own stacks with `inectl node join via h1` (the first
 * token from cluster create, the second from `node token create`, the CA fingerprint pinned),
 * start the member it describes (a learner, promoted once caught up), their ine-mirror, which
 * brings the whole log from that member, and their ine-transport; a redis-server in h2 is the
 * database's shard. A capture of h2's link shows that a marker written through h3's endpoint
 * crosses it only inside TLS on 3342 while the database's encryption is on, and in clear once it
 * is off. With every process of h1 killed (its member too) and its cable pulled, data keeps
 * flowing between h3 and h2 and the majority (h2, h3) still commits; once h1 is back it catches
 * up by itself, and a database created on it reaches every node. Every log ends identical. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "netns.h"
#include "proj.h"
#include "seal.h"
#include "svc.h"
#include "testutil.h"

#define TP_PORT 3342    /* each host has its own stack: the real ports */
#define SHARD_PORT 6379
#define DB_PORT 12000

static nn_t nn;
static char *dd[4];          /* dd[1]: the master's data dir; dd[2], dd[3]: the followers' */
static evlog_t *mlog;        /* read-only view of the master's log */
static proj_state st;
static cl_proc *tp[4], *mir[4], *member[4]; /* each host's transport, ine-mirror, etcd member */

static void tp_start(int h, const char *data_dir);

static void setup(void) { proj_init(&st); }
static void teardown(void)
{
    nn_destroy(&nn);
    evlog_close(mlog);
    mlog = NULL;
    proj_free(&st);
    for (int h = 1; h <= 3; h++) {
        free(dd[h]);
        dd[h] = NULL;
    }
}
TestSuite(netns, .init = setup, .fini = teardown, .timeout = 240);

static const proj_state *state(void)
{
    cr_assert_eq(proj_update(mlog, &st), INE_OK, "%s", ine_err_msg());
    return &st;
}

/* inectl on the master's data dir, run inside h1; asserts success and returns its output. */
static char *inectl(const char *what, ...)
{
    char *argv[40], *out = NULL, *err = NULL;
    int i = 0, rc;
    va_list ap;
    argv[i++] = strdup(tu_bin("inectl"));
    argv[i++] = "--data-dir";
    argv[i++] = dd[1];
    va_start(ap, what);
    for (char *a; (a = va_arg(ap, char *)) && i < 39;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    rc = nn_run(&nn, 1, argv, &out, &err);
    cr_assert_eq(rc, 0, "inectl %s: %s%s", what, out, err);
    free(argv[0]);
    free(err);
    return out;
}

/* The size of <dir>/<name>.log now (a service restarted on a host logs on after it). */
static size_t log_size(const char *name)
{
    char fn[64], *p;
    struct stat sb;
    size_t n;
    snprintf(fn, sizeof fn, "%s.log", name);
    p = nn_path(&nn, fn);
    n = stat(p, &sb) == 0 ? (size_t)sb.st_size : 0;
    free(p);
    return n;
}

/* Host h's etcd member, run by ine-etcd from its data dir's etcd/member.env (what `inectl
 * node join` wrote, or h1's own): it adds the peer files once they exist, and restarts the
 * member when the peer roots appear or change. */
static void member_start(int h)
{
    char name[32];
    char *argv[] = {(char *)tu_bin("ine-etcd"), "--data-dir", dd[h], "--", "--max-txn-ops=4096", "--logger=zap",
                    "--log-outputs=stderr", NULL};
    snprintf(name, sizeof name, "h%d-etcd", h);
    member[h] = nn_spawn(&nn, h, name, argv);
}

static void mirror_start(int h)
{
    char name[32];
    snprintf(name, sizeof name, "h%d-mirror", h);
    char *argv[] = {(char *)tu_bin("ine-mirror"), "--data-dir", dd[h], NULL};
    mir[h] = nn_spawn(&nn, h, name, argv);
}

/* h1's data dir before the cluster exists: its member alone in a new etcd cluster, and
 * etcd.conf naming it. */
static void h1_prepare(void)
{
    char text[2048], *p, *out = NULL, *err = NULL;
    const char *a1 = nn_addr(&nn, 1);
    dd[1] = nn_path(&nn, "h1");
    p = tu_path(dd[1], "etcd");
    cr_assert_eq(mkdir(dd[1], 0700), 0);
    cr_assert_eq(mkdir(p, 0700), 0);
    free(p);
    /* The client port's own CA first (inectl etcd prepare), as deploy/README.md does. */
    {
        char *argv[] = {strdup(tu_bin("inectl")), "--data-dir", dd[1], "etcd", "prepare", NULL};
        cr_assert_eq(tu_run(argv, NULL, &out, &err), 0, "etcd prepare: %s%s", out, err);
        cr_assert(strstr(out, "made etcd's client certificates"), "%s", out);
        free(argv[0]);
        free(out);
        free(err);
    }
    snprintf(text, sizeof text,
             "ETCD_NAME=node1\nETCD_DATA_DIR=%s/etcd/member\nETCD_LISTEN_PEER_URLS=http://127.0.0.1:2390\n"
             "ETCD_INITIAL_ADVERTISE_PEER_URLS=https://%s:2380\nETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379\n"
             "ETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:2379\nETCD_INITIAL_CLUSTER=node1=https://%s:2380\n"
             "ETCD_INITIAL_CLUSTER_STATE=new\nETCD_INITIAL_CLUSTER_TOKEN=netns-%d\nETCD_CLIENT_CERT_AUTH=true\n"
             "ETCD_TRUSTED_CA_FILE=%s/etcd/client/ca.crt\nETCD_CERT_FILE=%s/etcd/client/server.crt\n"
             "ETCD_KEY_FILE=%s/etcd/client/server.key\n",
             dd[1], a1, a1, getpid(), dd[1], dd[1], dd[1]);
    p = tu_path(dd[1], "etcd/member.env");
    cr_assert_eq(tu_write_file(p, text, strlen(text)), 0);
    free(p);
    snprintf(text, sizeof text,
             "endpoints=https://127.0.0.1:2379\npeer_port=2380\npeer_local_port=2390\ncacert=%s/etcd/client/ca.crt\n"
             "cert=%s/etcd/client/client.crt\nkey=%s/etcd/client/client.key\n", dd[1], dd[1], dd[1]);
    p = tu_path(dd[1], "etcd.conf");
    cr_assert_eq(tu_write_file(p, text, strlen(text)), 0);
    free(p);
    member_start(1);
}

/* h1's member started before any certificate existed; once h1's transport wrote the peer
 * files, ine-etcd restarts it by itself to dial its peers with them. */
static void h1_peer_tls(void)
{
    cr_assert(cl_wait_log(member[1], 0, "the member's peer roots appeared: restarting it", CL_WAIT_MS),
              "h1's ine-etcd did not restart the member for its peer files");
    cr_assert(cl_wait_log(member[1], 0, "dialing its peers with the node's certificate", CL_WAIT_MS),
              "h1's member did not come back with its peer files");
}

/* What a TLS scanner in h2 sees on h1's etcd peer port (sslscan, presenting h2's certificate,
 * which its member dials with): TLS 1.2 and 1.3, exactly the four internode suites. */
static void scan_peer_port(void)
{
    static const char *four[] = {"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256",
                                 "TLS_AES_256_GCM_SHA384"};
    char target[64], certs[300], pk[300], *out = NULL, *err = NULL;
    int seen[4] = {0}, n = 0;
    snprintf(target, sizeof target, "%s:2380", nn_addr(&nn, 1));
    snprintf(certs, sizeof certs, "--certs=%s/etcd/tls/peer.crt", dd[2]);
    snprintf(pk, sizeof pk, "--pk=%s/etcd/tls/peer.key", dd[2]);
    char *argv[] = {"/usr/bin/sslscan", "--no-colour", "--no-groups", "--no-heartbleed", certs, pk, target, NULL};
    cr_assert_eq(nn_run(&nn, 2, argv, &out, &err), 0, "sslscan: %s%s", out, err);
    cr_assert(strstr(out, "TLSv1.0   disabled") && strstr(out, "TLSv1.1   disabled") && strstr(out, "TLSv1.2   enabled") &&
                  strstr(out, "TLSv1.3   enabled"),
              "%s", out);
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char what[32], ver[16], name[64];
        int bits, one = 0;
        if (sscanf(l, "%31s %15s %d bits %63s", what, ver, &bits, name) != 4 || (strcmp(what, "Preferred") && strcmp(what, "Accepted")))
            continue;
        n++;
        for (int k = 0; k < 4; k++)
            if (!strcmp(name, four[k])) seen[k] = one = 1;
        cr_assert(one, "h1's etcd peer port accepted %s %s:\n%s", ver, name, out);
    }
    cr_assert_eq(n, 4, "h1's etcd peer port accepted %d suites:\n%s", n, out);
    for (int k = 0; k < 4; k++) cr_assert(seen[k], "h1's etcd peer port did not accept %s:\n%s", four[k], out);
    cr_log_info("sslscan of h1's etcd peer port (%s):\n%s", target, out);
    free(out);
    free(err);
}

/* inectl (argv[0] filled in here) run inside host h; its exit status, with what it printed on
 * stdout then stderr in *out (malloc'd). */
static int inectl_in(int h, char *argv[], char **out)
{
    char *err = NULL, *both = NULL;
    int rc;
    argv[0] = strdup(tu_bin("inectl"));
    rc = nn_run(&nn, h, argv, out, &err);
    if (asprintf(&both, "%s%s", *out ? *out : "", err ? err : "") < 0) cr_assert_fail("oom");
    free(*out);
    free(err);
    free(argv[0]);
    *out = both;
    return rc;
}

/* Control-plane rotations: each one reaches every member's peer files (the transports install
 * them), and etcd keeps committing; then h2's member, killed, comes back dialing with the
 * rotated certificate through the rotated terminators, and a write made on h2 reaches h1. */
static int commit_from(int h, char **out);
static void rotations_keep_etcd(void)
{
    char text[160], *out = NULL;
    for (int r = 0; r < 3; r++) {
        size_t marks[4];
        for (int h = 1; h <= 3; h++) marks[h] = cl_log_mark(tp[h]);
        free(inectl("rotate", "cluster", "certificate", "rotate", "ccs_internode_encryption", NULL));
        for (int h = 1; h <= 3; h++) {
            snprintf(text, sizeof text, "etcd peers: the member dials with control-plane certificate %s",
                     proj_cert_find(state(), (uint32_t)h, INE__V1__PLANE__PLANE_CONTROL)->cert.serial_hex);
            cr_assert(cl_wait_log(tp[h], marks[h], text, CL_WAIT_MS), "rotation %d: h%d's member has its new certificate", r + 1, h);
        }
        /* Retried as a client would: on a busy host a rotation (three new keys) can cost etcd
         * an election; what must not happen is etcd staying unable to commit. */
        int tries = 1;
        for (int64_t end = cl_now_ms() + CL_WAIT_MS; commit_from(3, &out) != 0; tries++, usleep(200 * 1000)) {
            cr_assert(cl_now_ms() < end, "no write on h3 commits after rotation %d: %s", r + 1, out);
            free(out);
        }
        free(out);
        cr_log_info("rotation %d: a write on h3 committed at try %d", r + 1, tries);
    }
    /* Same roots throughout: ine-etcd restarted no member for the rotations. */
    for (int h = 2; h <= 3; h++) cr_assert_eq(cl_log_count(member[h], 0, "peer roots"), 0, "h%d's member was restarted", h);
    cl_kill(member[2], SIGTERM); /* ine-etcd stops the member and waits for it */
    member_start(2);
    {
        uint64_t before = 0, after = 0;
        cr_assert_eq(evlog_last_seq(mlog, &before), INE_OK);
        for (int64_t end = cl_now_ms() + CL_WAIT_MS; commit_from(2, &out) != 0; usleep(200 * 1000)) {
            cr_assert(cl_now_ms() < end, "h2's restarted member never took a write: %s", out);
            free(out);
        }
        free(out);
        for (int64_t end = cl_now_ms() + CL_WAIT_MS; evlog_last_seq(mlog, &after) == INE_OK && after <= before; usleep(50 * 1000))
            cr_assert(cl_now_ms() < end, "h2's write after the rotations did not reach h1");
    }
}

/* Node `gone` was removed: etcd (as h2 sees it) has no member of it, and h1's transport refuses
 * its certificate, presented from h2's stack, on 3342 and on etcd's peer port. */
static void removed_everywhere(int gone)
{
    char name[16], crt[300], key[300], target[64];
    snprintf(name, sizeof name, "\"node%d\"", gone);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;; usleep(200 * 1000)) {
        char *o = NULL, *e = NULL, *argv[] = {strdup(tu_bin("inectl")), "--data-dir", dd[2], "--json", "status", NULL};
        int rc = nn_run(&nn, 2, argv, &o, &e);
        json_t *j = o ? json_loads(o, 0, NULL) : NULL;
        char *ms = j ? json_dumps(json_object_get(json_object_get(j, "consensus"), "members"), 0) : NULL;
        int gone_there = ms && !strstr(ms, name);
        free(ms);
        json_decref(j);
        free(argv[0]);
        free(o);
        free(e);
        if (gone_there) break;
        cr_assert(cl_now_ms() < end, "node %d's etcd member is still listed (inectl status exit %d)", gone, rc);
    }
    /* The member goes first, then the node (services/policy/ops.c): wait for both. */
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;; usleep(50 * 1000)) {
        const proj_node *n = proj_node_find(state(), (uint32_t)gone);
        if (n && n->removed) break;
        cr_assert(cl_now_ms() < end, "node %d is not removed in h1's log", gone);
    }
    snprintf(crt, sizeof crt, "%s/etcd/tls/peer.crt", dd[gone]);
    snprintf(key, sizeof key, "%s/etcd/tls/peer.key", dd[gone]);
    for (int port = 0; port < 2; port++) {
        char want[96];
        int refused = 0;
        snprintf(target, sizeof target, "%s:%d", nn_addr(&nn, 1), port ? 2380 : TP_PORT);
        snprintf(want, sizeof want, "node %d is not a node of this cluster", gone);
        /* Again until h1's transport, which follows its log on a timer, has seen the removal. */
        for (int64_t end = cl_now_ms() + CL_WAIT_MS; !refused;) {
            size_t mark = cl_log_mark(tp[1]);
            char *o = NULL, *e = NULL;
            char *argv[] = {"/usr/bin/openssl", "s_client", "-connect", target, "-servername", "control.ine", "-cert", crt, "-key",
                            key, NULL};
            (void)nn_run(&nn, 2, argv, &o, &e);
            free(o);
            free(e);
            refused = cl_wait_log(tp[1], mark, want, 1000);
            cr_assert(refused || cl_now_ms() < end, "h1 did not refuse removed node %d's certificate on %s", gone, target);
        }
    }
}

/* A write committed from host h's data dir (a join token: inectl commits it itself, through h's
 * own member); its exit status. */
static int commit_from(int h, char **out)
{
    char *argv[] = {NULL, "--data-dir", dd[h], "--timeout", "10", "node", "token", "create", NULL};
    return inectl_in(h, argv, out);
}

/* Wait until etcd, as h2 sees it, has n voting members (each joined one is promoted
 * by ine-policy once it caught up): only then does the majority survive h1's loss. */
static void voters_all(int n)
{
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;; usleep(200 * 1000)) {
        char *o = NULL, *e = NULL, *argv[] = {strdup(tu_bin("inectl")), "--data-dir", dd[2], "--json", "status", NULL};
        int rc = nn_run(&nn, 2, argv, &o, &e), voters = 0;
        json_error_t jerr;
        json_t *j = o ? json_loads(o, 0, &jerr) : NULL, *ms = json_object_get(json_object_get(j, "consensus"), "members");
        size_t members = json_array_size(ms);
        for (size_t i = 0; i < members; i++) voters += json_is_false(json_object_get(json_array_get(ms, i), "learner"));
        json_decref(j);
        free(argv[0]);
        if (voters >= n) {
            free(o);
            free(e);
            return;
        }
        cr_assert(cl_now_ms() < end, "etcd has not %d voting members (%d voters of %zu; inectl status exit %d, %s): %.300s%s", n, voters, members, rc,
                  j ? "parsed" : jerr.text, o, e);
        free(o);
        free(e);
    }
}

/* The services of h1, on a cluster of `nodes` nodes (its member and mirror already run): the
 * CA first, since the REST server needs node 1's certificate. */
static void master_start(int nodes)
{
    char *ca[] = {(char *)tu_bin("ine-ca"), "--data-dir", dd[1], "--ca-key-bits", "2048", "--check-interval", "1", NULL};
    nn_spawn(&nn, 1, "h1-ca", ca);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        int have = 0;
        for (int h = 1; h <= nodes; h++)
            for (int p = 1; p <= 2; p++) have += proj_cert_find(state(), (uint32_t)h, p) != NULL;
        if (have == 2 * nodes) break;
        cr_assert(cl_now_ms() < end, "the CA issued %d of %d certificates in time", have, 2 * nodes);
        usleep(50 * 1000);
    }
    char *pol[] = {(char *)tu_bin("ine-policy"), "--data-dir", dd[1], "--rest-addr", (char *)nn_addr(&nn, 1), "--rest-port", "9443", NULL};
    size_t pmark = log_size("h1-policy"), tmark = log_size("h1-transport");
    cl_proc *policy = nn_spawn(&nn, 1, "h1-policy", pol);
    tp_start(1, dd[1]);
    cr_assert(cl_wait_log(policy, pmark, "started on", CL_WAIT_MS), "h1's ine-policy started");
    cr_assert(cl_wait_log(tp[1], tmark, "node 1 listening on", CL_WAIT_MS), "h1's transport listens");
}

/* inectl node join, run inside host h on a fresh data dir; its exit status, output in *out. */
static int node_join(int h, const char *token, const char *fpr, char **out)
{
    char *argv[] = {NULL, "--data-dir", dd[h], "node", "join", "via", (char *)nn_addr(&nn, 1), "token", (char *)token,
                    "ca_fingerprint", (char *)fpr, "address", (char *)nn_addr(&nn, h), "etcd_client", "https://127.0.0.1:2379", NULL};
    return inectl_in(h, argv, out);
}

/* Host h joins the cluster from its own stack: it becomes node h, with the cluster's seal key,
 * etcd.conf and its member's settings in its data dir; then its member, mirror and transport. */
static void follower_join(int h, const char *token, const char *fpr)
{
    char name[16], want[96], *out = NULL;
    snprintf(name, sizeof name, "h%d", h);
    dd[h] = nn_path(&nn, name);
    cr_assert_eq(node_join(h, token, fpr, &out), 0, "h%d's node join: %s", h, out);
    snprintf(want, sizeof want, "node %d joined cluster %s as etcd member node%d", h, state()->cluster.uid, h);
    cr_assert(strstr(out, want), "h%d's node join said: %s", h, out);
    free(out);
    member_start(h);
    mirror_start(h);
}

/* Wait until host h's log holds h1's whole log, and check it is h1's byte for byte. */
static void log_caught_up(int h)
{
    char *p = tu_path(dd[h], "log");
    evlog_opts eo = {.read_only = 1};
    evlog_t *r = NULL;
    uint64_t have = 0, last = 0;
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; evlog_open(p, &eo, &r) != INE_OK; usleep(50 * 1000))
        cr_assert(cl_now_ms() < end, "h%d's log never appeared: %s", h, ine_err_msg());
    free(p);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;; usleep(50 * 1000)) {
        cr_assert_eq(evlog_last_seq(mlog, &last), INE_OK);
        cr_assert_eq(evlog_last_seq(r, &have), INE_OK);
        if (have == last) break;
        cr_assert(cl_now_ms() < end, "h%d's log stayed at seq %llu, h1's is at %llu", h, (unsigned long long)have,
                  (unsigned long long)last);
    }
    for (uint64_t s = 1; s <= have; s++) {
        uint8_t *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        cr_assert_eq(evlog_read_raw(r, s, &a, &al), INE_OK, "%s", ine_err_msg());
        cr_assert_eq(evlog_read_raw(mlog, s, &b, &bl), INE_OK, "%s", ine_err_msg());
        cr_assert(al == bl && !memcmp(a, b, al), "h%d's record %llu is not h1's", h, (unsigned long long)s);
        free(a);
        free(b);
    }
    evlog_close(r);
}

/* --- transports -------------------------------------------------------------------------------- */

static void tp_start(int h, const char *data_dir)
{
    char node[8], name[32];
    snprintf(node, sizeof node, "%d", h);
    snprintf(name, sizeof name, "h%d-transport", h);
    char *argv[] = {(char *)tu_bin("ine-transport"), "--data-dir", (char *)data_dir, "--node", node, "--handshake-timeout", "3000", NULL};
    tp[h] = nn_spawn(&nn, h, name, argv);
}

/* Node h's current certificates are recorded as served (the master records the followers'
 * from their heartbeats). */
static int activated(int h)
{
    for (int p = 1; p <= 2; p++) {
        const proj_cert *pc = proj_cert_find(state(), (uint32_t)h, p);
        const proj_activation *a = proj_activation_find(&st, (uint32_t)h, p);
        if (!pc || !a || !a->fingerprint || strcmp(a->fingerprint, pc->cert.fingerprint)) return 0;
    }
    return 1;
}

/* Transport h has its control-plane streams to the other hosts up and hears their heartbeats
 * (naming their current data-plane certificates), after mark. */
static void wait_mesh(int h, size_t mark)
{
    char text[200];
    for (int m = 1; m <= 3; m++) {
        if (m == h) continue;
        snprintf(text, sizeof text, "control-plane stream to node %d up", m);
        cr_assert(cl_wait_log(tp[h], mark, text, CL_WAIT_MS), "h%d: %s", h, text);
        snprintf(text, sizeof text, "node %d serves data-plane certificate %s", m, proj_cert_find(state(), (uint32_t)m, 2)->cert.serial_hex);
        cr_assert(cl_wait_log(tp[h], mark, text, CL_WAIT_MS), "h%d: %s", h, text);
    }
}

/* Tune the database on the master; every live transport applies it (the followers once their
 * ine-replica brought it). */
static void set_encryption(int on)
{
    const char *text = on ? "data_internode_encryption enabled" : "data_internode_encryption disabled";
    size_t marks[4];
    for (int h = 1; h <= 3; h++) marks[h] = cl_log_mark(tp[h]);
    free(inectl("tune db", "tune", "db", "cache", "data_internode_encryption", on ? "enabled" : "disabled", NULL));
    for (int h = 1; h <= 3; h++)
        if (tp[h]->pid) cr_assert(cl_wait_log(tp[h], marks[h], text, CL_WAIT_MS), "h%d's transport applied the toggle", h);
}

/* --- data -------------------------------------------------------------------------------------- */

static void marker(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "ine-marker-%s-%d-%ld", tag, getpid(), (long)cl_now_ms());
}

/* SET through host `via`'s endpoint (the client inside that host), asserting it worked. */
static void db_set(int via, const char *key, const char *val)
{
    char *r = nn_redis_cli(&nn, via, nn_addr(&nn, via), DB_PORT, "SET", key, val, NULL);
    cr_assert(r && !strcmp(r, "OK"), "SET %s through h%d's endpoint: %s", key, via, r ? r : "(failed)");
    free(r);
}

static void db_get(int via, const char *addr, int port, const char *key, const char *want, const char *what)
{
    char *r = nn_redis_cli(&nn, via, addr, port, "GET", key, NULL);
    cr_assert(r && !strcmp(r, want), "GET %s %s: %s", key, what, r ? r : "(failed)");
    free(r);
}

/* A value that crosses h3 -> h2 in clear whatever the database's setting (a redis-cli in h3
 * straight to the shard): once the capture holds it, it holds everything before it. */
static void sentinel(char *buf, size_t len, const char *tag)
{
    char *r;
    marker(buf, len, tag);
    r = nn_redis_cli(&nn, 3, nn_addr(&nn, 2), SHARD_PORT, "ECHO", buf, NULL);
    cr_assert(r && !strcmp(r, buf), "ECHO to the shard from h3: %s", r ? r : "(failed)");
    free(r);
}

/* Probe until the capture demonstrably holds what crosses h2's link. */
static void capture_ready(nn_capture *cap)
{
    char probe[96];
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        sentinel(probe, sizeof probe, "probe");
        if (nn_capture_seen(cap, probe, 1000)) return;
        cr_assert(cl_now_ms() < end, "the capture on h2's link never showed a probe");
    }
}

Test(netns, encryption_on_the_link_data_flows_while_the_master_is_away_and_it_catches_up)
{
    char shard[64], text[200], m1[96], m2[96], sent[96], filter[128], fpr[80], wrong[80], token[160], *out = NULL;
    const char *a1, *a2, *a3;
    size_t marks[4];
    nn_capture cap;
    cl_load load;
    int64_t t0 = cl_now_ms();

    nn_create(&nn, 3);
    a1 = nn_addr(&nn, 1);
    a2 = nn_addr(&nn, 2);
    a3 = nn_addr(&nn, 3);

    /* h1 alone in its cluster at first: its etcd member, then the cluster, then its mirror. */
    h1_prepare();
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;; usleep(200 * 1000)) {
        char *o = NULL, *e = NULL, *argv[] = {strdup(tu_bin("inectl")), "--data-dir", dd[1], "cluster", "create", "name", "netns",
                                             "nodes", (char *)a1, NULL};
        int rc = nn_run(&nn, 1, argv, &o, &e);
        free(argv[0]);
        if (rc == 0) {
            out = o;
            free(e);
            break;
        }
        cr_assert(cl_now_ms() < end, "cluster create through h1's member: %s%s", o, e);
        free(o);
        free(e);
    }
    mirror_start(1);
    cl_scan_word(out, "ca fingerprint", fpr, sizeof fpr);
    cl_scan_word(out, "join token", token, sizeof token);
    free(out);
    {
        char *p = tu_path(dd[1], "log");
        evlog_opts eo = {.read_only = 1};
        for (int64_t end = cl_now_ms() + CL_WAIT_MS; evlog_open(p, &eo, &mlog) != INE_OK; usleep(50 * 1000))
            cr_assert(cl_now_ms() < end, "h1's mirror made no log: %s", ine_err_msg());
        free(p);
    }
    master_start(1);
    h1_peer_tls();

    /* A wrong fingerprint (another CA's, as a man in the middle would show) is refused from h3
     * before anything is sent: nothing written there, no node added. */
    snprintf(wrong, sizeof wrong, "%s", fpr);
    wrong[0] = wrong[0] == '0' ? '1' : '0';
    dd[3] = nn_path(&nn, "h3");
    cr_assert_neq(node_join(3, token, wrong, &out), 0, "a join pinning another fingerprint was refused: %s", out);
    cr_assert(strstr(out, wrong), "the refusal names the pinned fingerprint: %s", out);
    free(out);
    {
        char *k = tu_path(dd[3], "seal.key");
        cr_assert_neq(access(k, F_OK), 0, "no seal key written on h3");
        free(k);
    }
    cr_assert_eq(state()->n_nodes, 1, "no node was added");
    free(dd[3]);
    dd[3] = NULL;

    /* h2 joins with the token printed at creation; h3, with a new one, while h2's member is
     * still a learner, is told to wait (etcd takes one joining member at a time), then joins. */
    follower_join(2, token, fpr);
    log_caught_up(2);
    tp_start(2, dd[2]); /* its peer port: h1's member dials h2's through it */
    out = inectl("node token create", "node", "token", "create", NULL);
    cl_scan_word(out, "join token", token, sizeof token);
    free(out);
    {
        dd[3] = nn_path(&nn, "h3");
        int rc = node_join(3, token, fpr, &out);
        if (rc != 0) cr_assert(strstr(out, "[member_joining]") && strstr(out, "node2"), "h3's early join: %s", out);
        free(out);
        tu_rmrf(dd[3]);
        free(dd[3]);
        dd[3] = NULL;
        /* (It may also have gone through, had h2's member caught up already: then the retry below
         * is the same join again, answered the same.) */
    }
    voters_all(2);
    follower_join(3, token, fpr);
    log_caught_up(3);
    tp_start(3, dd[3]);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; !(activated(1) && activated(2) && activated(3)); usleep(50 * 1000))
        cr_assert(cl_now_ms() < end, "the master recorded that every node serves its certificates");
    for (int h = 1; h <= 3; h++) wait_mesh(h, 0);
    cr_log_info("three hosts meshed after %lld ms", (long long)(cl_now_ms() - t0));
    scan_peer_port();
    rotations_keep_etcd();

    /* The shard in h2, and a database whose endpoint every host serves. */
    {
        char *argv[] = {"/usr/bin/redis-server", "--bind", (char *)a2, "--port", "6379", "--save", "", "--appendonly", "no",
                        "--protected-mode", "no", "--dir", dd[2], NULL};
        cr_assert_eq(access(argv[0], X_OK), 0, "redis-server is installed by scripts/install-deps.sh");
        nn_spawn(&nn, 2, "h2-redis", argv);
        for (int64_t end = cl_now_ms() + CL_WAIT_MS;; usleep(50 * 1000)) {
            char *pong = nn_redis_cli(&nn, 2, a2, SHARD_PORT, "PING", NULL);
            int ok = pong && !strcmp(pong, "PONG");
            free(pong);
            if (ok) break;
            cr_assert(cl_now_ms() < end, "redis-server in h2 did not start");
        }
    }
    for (int h = 1; h <= 3; h++) marks[h] = cl_log_mark(tp[h]);
    snprintf(shard, sizeof shard, "%s:%d", a2, SHARD_PORT);
    free(inectl("create db", "create", "db", "name", "cache", "port", "12000", "shard_node", "2", "shard_address", shard,
                "data_internode_encryption", "enabled", NULL));
    for (int h = 1; h <= 3; h++) {
        snprintf(text, sizeof text, "(cache): endpoint on %s:%d", nn_addr(&nn, h), DB_PORT);
        cr_assert(cl_wait_log(tp[h], marks[h], text, CL_WAIT_MS), "h%d's transport opened the endpoint", h);
    }

    /* Encryption on: h3's transport reaches the shard through h2's 3342, in TLS. */
    snprintf(filter, sizeof filter, "tcp port %d or tcp port %d", TP_PORT, SHARD_PORT);
    nn_capture_start(&nn, 2, &cap, "capture-on", filter, TP_PORT);
    capture_ready(&cap);
    marker(m1, sizeof m1, "tls");
    db_set(3, "k1", m1);
    db_get(3, a3, DB_PORT, "k1", m1, "through h3's endpoint");
    db_get(2, a2, DB_PORT, "k1", m1, "through h2's endpoint");
    db_get(2, a2, SHARD_PORT, "k1", m1, "from the shard itself");
    sentinel(sent, sizeof sent, "sentinel-on");
    nn_capture_stop(&cap, sent);
    cr_assert(nn_capture_has(&cap, NULL, sent), "the capture holds what crossed the link in clear");
    cr_assert_not(nn_capture_has(&cap, NULL, m1), "the marker never crossed the link in clear");
    snprintf(text, sizeof text, "ip.src == %s && ip.dst == %s && tcp.dstport == %d && tls.handshake.type == 1 && "
                                "tls.handshake.extensions_server_name == \"data.ine\"", a3, a2, TP_PORT);
    /* Both clients' streams ride one data-plane connection from h3 to h2. */
    cr_assert_eq(nn_capture_count(&cap, text), 1, "h3 opened one data-plane TLS connection to h2's 3342 for its two clients");
    snprintf(text, sizeof text, "ip.src == %s && tcp.port == %d && (tls.record.opaque_type == 23 || tls.record.content_type == 23)", a3,
             TP_PORT);
    cr_assert_geq(nn_capture_count(&cap, text), 2, "h3's data crossed to 3342 in TLS application records");
    snprintf(text, sizeof text, "tcp.port == %d && frame contains \"k1\"", SHARD_PORT);
    cr_assert_eq(nn_capture_count(&cap, text), 0, "no command of the database crossed to the shard's port");
    nn_capture_free(&cap);

    /* Encryption off: h3's transport goes straight to the shard, the marker crosses in clear. */
    set_encryption(0);
    nn_capture_start(&nn, 2, &cap, "capture-off", filter, TP_PORT);
    capture_ready(&cap);
    marker(m2, sizeof m2, "plain");
    db_set(3, "k2", m2);
    db_get(3, a3, DB_PORT, "k2", m2, "through h3's endpoint");
    db_get(2, a2, SHARD_PORT, "k2", m2, "from the shard itself");
    nn_capture_stop(&cap, m2);
    snprintf(text, sizeof text, "ip.src == %s && ip.dst == %s && tcp.dstport == %d", a3, a2, SHARD_PORT);
    cr_assert(nn_capture_has(&cap, text, m2), "the marker crossed from h3 to the shard in clear");
    cr_assert_eq(nn_capture_count(&cap, "tls.handshake.extensions_server_name == \"data.ine\""), 0, "no data-plane stream crossed 3342");
    nn_capture_free(&cap);

    /* A partition: h1's cable pulled with all its processes running. h1 refuses writes with a
     * clear error; the majority elects a CA (h2's, standing by until now), rotates, and keeps
     * the data plane between h3 and h2 flowing; healed, h1 converges on the same log. */
    set_encryption(1);
    voters_all(3);
    {
        char *ca2[] = {(char *)tu_bin("ine-ca"), "--data-dir", dd[2], "--ca-key-bits", "2048", "--check-interval", "1", NULL};
        nn_spawn(&nn, 2, "h2-ca", ca2);
    }
    size_t pmarks[4];
    for (int h = 2; h <= 3; h++) pmarks[h] = cl_log_mark(tp[h]);
    nn_link_set(&nn, 1, 0);
    cr_assert_neq(commit_from(1, &out), 0, "h1 committed a write while cut off: %s", out);
    cr_assert(strstr(out, "consensus") && strstr(out, "etcd"), "h1's refusal does not say why: %s", out);
    free(out);
    {
        char *e = NULL, *argv[] = {strdup(tu_bin("inectl")), "--data-dir", dd[2], "--timeout", "60", "cluster", "certificate",
                                  "rotate", "ccs_internode_encryption", NULL};
        int rc = -1;
        for (int64_t end = cl_now_ms() + 2 * CL_WAIT_MS; (rc = nn_run(&nn, 2, argv, &out, &e)) != 0; usleep(500 * 1000)) {
            cr_assert(cl_now_ms() < end, "the majority did not rotate: %s%s", out, e);
            free(out);
            free(e);
            out = e = NULL;
        }
        cr_assert(strstr(out, "done"), "%s", out);
        free(out);
        free(e);
        free(argv[0]);
    }
    {
        char val[96];
        marker(val, sizeof val, "partition");
        db_set(3, "partition", val);
        db_get(2, a2, SHARD_PORT, "partition", val, "from the shard, h1 cut off");
    }
    /* The majority's control streams to h1 time out (no heartbeat), then come back once healed. */
    for (int h = 2; h <= 3; h++)
        cr_assert(cl_wait_log(tp[h], pmarks[h], "control-plane stream to node 1 lost", CL_WAIT_MS), "h%d noticed the partition", h);
    for (int h = 2; h <= 3; h++) pmarks[h] = cl_log_mark(tp[h]);
    nn_link_set(&nn, 1, 1);
    for (int h = 2; h <= 3; h++)
        cr_assert(cl_wait_log(tp[h], pmarks[h], "control-plane stream to node 1 up", CL_WAIT_MS), "h%d reconnected to h1", h);
    {
        uint64_t want = 0, have = 0;
        char *p2 = tu_path(dd[2], "log");
        evlog_t *l2 = NULL;
        evlog_opts eo = {.read_only = 1};
        cr_assert_eq(evlog_open(p2, &eo, &l2), INE_OK);
        cr_assert_eq(evlog_last_seq(l2, &want), INE_OK);
        for (int64_t end = cl_now_ms() + 2 * CL_WAIT_MS; evlog_last_seq(mlog, &have) == INE_OK && have < want; usleep(100 * 1000))
            cr_assert(cl_now_ms() < end, "h1 did not catch up after the partition (%llu of %llu)", (unsigned long long)have,
                      (unsigned long long)want);
        evlog_close(l2);
        free(p2);
    }
    for (int h = 2; h <= 3; h++) log_caught_up(h);
    cr_log_info("partition: h1 refused, the majority rotated, h1 converged");

    /* (On again since the partition.) Then h1 goes away: every process of it killed at once. */
    db_set(3, "k3", "on-again");
    db_get(2, a2, SHARD_PORT, "k3", "on-again", "from the shard itself");
    nn_load_start(&nn, 3, &load, a3, DB_PORT, "held-through-h3");
    cr_assert(cl_load_progress(&load, 20, CL_WAIT_MS), "the held connection flows: %s", load.last_error);
    for (int h = 2; h <= 3; h++) marks[h] = cl_log_mark(tp[h]);
    voters_all(3);
    cr_assert_eq(nn_kill_host(&nn, 1, SIGKILL), 5, "h1's etcd member, mirror, CA, policy and transport were killed");
    /* h2's CA holds or takes the lease; a database created later proves the majority works. */
    for (int h = 2; h <= 3; h++)
        cr_assert(cl_wait_log(tp[h], marks[h], "control-plane stream to node 1 lost", CL_WAIT_MS), "h%d saw the master go", h);
    /* And its cable pulled: the followers' attempts to reach it now go unanswered. */
    nn_link_set(&nn, 1, 0);

    /* Data keeps flowing between h3 and h2: on the held stream, and on new ones (new TLS
     * handshakes with the certificates and trust the followers last knew), for a few seconds. */
    {
        int rounds = 0;
        for (int64_t end = cl_now_ms() + 5000; rounds < 5 || cl_now_ms() < end; rounds++) {
            char key[32], val[96];
            snprintf(key, sizeof key, "away-%d", rounds);
            marker(val, sizeof val, key);
            db_set(3, key, val);
            db_get(3, a3, DB_PORT, key, val, "through h3's endpoint, master away");
            db_get(2, a2, SHARD_PORT, key, val, "from the shard, master away");
            usleep(200 * 1000);
        }
        cr_assert(cl_load_progress(&load, 50, CL_WAIT_MS), "the held connection still flows: %s", load.last_error);
        cr_assert_eq(cl_load_stop(&load), 0, "held connection: %s", load.last_error);
        cr_log_info("master away: %d rounds of new connections and %ld INCRs on a held one went through", rounds, load.ops);
    }
    /* The majority (h2's and h3's members) still commits: a write from h2 lands in h3's log. */
    {
        uint64_t before = 0, after = 0;
        evlog_t *l3 = NULL;
        char *p3 = tu_path(dd[3], "log");
        evlog_opts eo = {.read_only = 1};
        cr_assert_eq(evlog_open(p3, &eo, &l3), INE_OK);
        cr_assert_eq(evlog_last_seq(l3, &before), INE_OK);
        cr_assert_eq(commit_from(2, &out), 0, "a write on h2 with h1 away: %s", out);
        free(out);
        for (int64_t end = cl_now_ms() + CL_WAIT_MS; evlog_last_seq(l3, &after) == INE_OK && after <= before; usleep(50 * 1000))
            cr_assert(cl_now_ms() < end, "h2's write did not reach h3's log");
        evlog_close(l3);
        free(p3);
    }

    /* h1 comes back and catches up by itself; a database created there reaches every node. */
    nn_link_set(&nn, 1, 1);
    for (int h = 1; h <= 3; h++) marks[h] = cl_log_mark(tp[h]); /* h1's: the restarted one logs on after it */
    member_start(1);
    mirror_start(1);
    master_start(3);
    wait_mesh(1, marks[1]);
    free(inectl("create db", "create", "db", "name", "later", "port", "12001", "shard_node", "2", "shard_address", shard,
                "data_internode_encryption", "enabled", NULL));
    for (int h = 1; h <= 3; h++) {
        snprintf(text, sizeof text, "(later): endpoint on %s:%d", nn_addr(&nn, h), DB_PORT + 1);
        cr_assert(cl_wait_log(tp[h], marks[h], text, CL_WAIT_MS), "h%d's transport opened the new database's endpoint", h);
    }
    {
        char *r = nn_redis_cli(&nn, 3, a3, DB_PORT + 1, "SET", "after", "master-back", NULL);
        cr_assert(r && !strcmp(r, "OK"), "SET through h3's endpoint of the new database: %s", r ? r : "(failed)");
        free(r);
        db_get(1, a1, DB_PORT + 1, "after", "master-back", "through h1's endpoint of the new database");
    }
    for (int h = 2; h <= 3; h++) log_caught_up(h);
    cr_assert_eq(cl_kill(tp[3], SIGTERM), 0, "h3's transport exited cleanly (no crash, no sanitizer report)");
    cr_assert_eq(cl_kill(mir[3], SIGTERM), 0, "h3's ine-mirror exited cleanly");

    /* h3 dies for good and is removed: out of etcd and the cluster, and its certificate, still
     * valid, is refused on every port of h1 that takes node certificates (3342, etcd's peers). */
    nn_kill_host(&nn, 3, SIGKILL);
    free(inectl("node remove", "node", "remove", "3", NULL));
    removed_everywhere(3);
    for (int h = 1; h <= 2; h++) {
        cr_assert_eq(cl_kill(tp[h], SIGTERM), 0, "h%d's transport exited cleanly (no crash, no sanitizer report)", h);
        cr_assert_eq(cl_kill(mir[h], SIGTERM), 0, "h%d's ine-mirror exited cleanly", h);
    }
    cr_log_info("test_netns took %lld ms", (long long)(cl_now_ms() - t0));
}
