/* cluster.c — see cluster.h. Owns spawning and reaping the cluster's processes, the waits on
 * the log and the projection, key export for openssl, and the RESP client. */
#include "cluster.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "datadir.h"
#include "err.h"
#include "sealed.h"

int64_t cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cl__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

const char *cl_addr(int node)
{
    static const char *a[] = {"127.0.0.0", "127.0.0.1", "127.0.0.2", "127.0.0.3"};
    return node >= 1 && node <= CL_NODES ? a[node] : "127.0.0.1";
}

char *cl_path(cl_t *c, const char *name) { return tu_path(c->dir, name); }

/* --- ports ------------------------------------------------------------------------------------ */

static int cl__bindable(const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, ok;
    if (fd < 0) return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    inet_pton(AF_INET, addr, &sa.sin_addr);
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

int cl_free_port(void)
{
    static int used[256], n_used;
    static unsigned seed;
    if (!seed) seed = (unsigned)getpid() * 2654435761u ^ (unsigned)cl_now_ms();
    for (int tries = 0; tries < 1000; tries++) {
        int p = 20000 + (int)(rand_r(&seed) % 10000), dup = 0;
        for (int i = 0; i < n_used; i++) dup |= used[i] == p;
        if (dup) continue;
        if (cl__bindable("127.0.0.1", p) && cl__bindable("127.0.0.2", p) && cl__bindable("127.0.0.3", p)) {
            if (n_used < 256) used[n_used++] = p;
            return p;
        }
    }
    cr_assert_fail("no free port in 20000-29999");
    return -1;
}

/* --- processes -------------------------------------------------------------------------------- */

cl_proc *cl_spawn(cl_t *c, cl_proc *slot, const char *name, char *const argv[], char *const env[])
{
    char *logname, *log;
    pid_t pid;
    int fd;
    if (!slot) {
        cr_assert_lt(c->n_procs, CL_MAX_PROCS, "too many helper processes");
        slot = &c->procs[c->n_procs++];
    }
    if (asprintf(&logname, "%s.log", name) < 0) cr_assert_fail("oom");
    log = cl_path(c, logname);
    free(logname);
    fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "cannot open %s", log);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* The test worker may die on an assertion: its cluster goes with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGPIPE, SIG_DFL);
        dup2(fd, 1);
        dup2(fd, 2);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
        for (int i = 0; env && env[i]; i++) putenv(env[i]);
        execv(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    free(slot->log);
    memset(slot, 0, sizeof *slot);
    slot->pid = pid;
    slot->log = log;
    snprintf(slot->name, sizeof slot->name, "%s", name);
    return slot;
}

int cl_kill(cl_proc *p, int sig)
{
    int status = 0;
    if (!p->pid) return p->status;
    kill(p->pid, sig);
    for (int64_t end = cl_now_ms() + 10000;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid || (r < 0 && errno == ECHILD)) break;
        if (cl_now_ms() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            break;
        }
        cl__sleep_ms(20);
    }
    p->pid = 0;
    p->status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    return p->status;
}

size_t cl_log_mark(const cl_proc *p)
{
    struct stat st;
    return p->log && stat(p->log, &st) == 0 ? (size_t)st.st_size : 0;
}

char *cl_log_since(const cl_proc *p, size_t mark)
{
    size_t len = 0;
    char *all = p->log ? tu_read_file(p->log, &len) : NULL, *out;
    if (!all) return strdup("");
    if (mark > len) mark = len;
    out = strdup(all + mark);
    free(all);
    return out;
}

int cl_log_count(const cl_proc *p, size_t mark, const char *text)
{
    char *s = cl_log_since(p, mark);
    int n = 0;
    for (char *q = s; (q = strstr(q, text)); q += strlen(text)) n++;
    free(s);
    return n;
}

int cl_wait_log(const cl_proc *p, size_t mark, const char *text, int timeout_ms)
{
    for (int64_t end = cl_now_ms() + timeout_ms;;) {
        if (cl_log_count(p, mark, text) > 0) return 1;
        if (cl_now_ms() > end) return 0;
        cl__sleep_ms(50);
    }
}

void cl_tp_start(cl_t *c, int n) { cl_tp_start_env(c, n, NULL); }

void cl_tp_start_env(cl_t *c, int n, char *const env[])
{
    char node[16], port[16], hs[16], name[32];
    snprintf(node, sizeof node, "%d", n);
    snprintf(port, sizeof port, "%d", c->port);
    snprintf(hs, sizeof hs, "%d", c->handshake_ms);
    snprintf(name, sizeof name, "transport-%d", n);
    char *argv[] = {(char *)tu_bin("ine-transport"), "--data-dir", c->tp_dd[n] ? c->tp_dd[n] : c->dd, "--node", node,
                    "--port", port, "--handshake-timeout", hs, NULL};
    cl_spawn(c, &c->tp[n], name, argv, env);
}

int cl_tp_stop(cl_t *c, int n, int sig) { return cl_kill(&c->tp[n], sig); }

/* --- the projection ---------------------------------------------------------------------------- */

const proj_state *cl_state(cl_t *c)
{
    cr_assert_eq(proj_update(c->log, &c->st), INE_OK, "%s", ine_err_msg());
    return &c->st;
}

const proj_cert *cl_cert(cl_t *c, int node, int plane)
{
    const proj_cert *pc = proj_cert_find(cl_state(c), (uint32_t)node, plane);
    cr_assert(pc, "node %d has no %s-plane certificate", node, proj_plane_name(plane));
    return pc;
}

static int cl__converged(cl_t *c)
{
    const proj_state *st = cl_state(c);
    for (int n = 1; n <= CL_NODES; n++)
        for (int p = 1; p <= 2; p++) {
            const proj_cert *pc = proj_cert_find(st, (uint32_t)n, p);
            const proj_activation *a = proj_activation_find(st, (uint32_t)n, p);
            if (!pc || !a || !a->fingerprint || strcmp(a->fingerprint, pc->cert.fingerprint)) return 0;
        }
    return 1;
}

int cl_wait_converged(cl_t *c, int timeout_ms)
{
    for (int64_t end = cl_now_ms() + timeout_ms;;) {
        if (cl__converged(c)) return 1;
        if (cl_now_ms() > end) return 0;
        cl__sleep_ms(50);
    }
}

int cl_wait_links(cl_t *c, int n, size_t mark, int timeout_ms)
{
    for (int m = 1; m <= CL_NODES; m++) {
        char text[160];
        if (m == n) continue;
        snprintf(text, sizeof text, "control-plane stream to node %d up", m);
        if (!cl_wait_log(&c->tp[n], mark, text, timeout_ms)) return 0;
    }
    return 1;
}

int cl_wait_heartbeats(cl_t *c, int n, size_t mark, int timeout_ms)
{
    for (int m = 1; m <= CL_NODES; m++) {
        char text[160];
        if (m == n) continue;
        snprintf(text, sizeof text, "node %d serves data-plane certificate %s", m, cl_cert(c, m, 2)->cert.serial_hex);
        if (!cl_wait_log(&c->tp[n], mark, text, timeout_ms)) return 0;
    }
    return 1;
}

/* --- lagging replicas --------------------------------------------------------------------------- */

void cl_replica_sync(cl_t *c, int n, uint64_t to)
{
    char *p = tu_path(c->tp_dd[n], "log");
    evlog_t *dst = NULL;
    uint64_t have = 0, last = 0;
    cr_assert_eq(evlog_open(p, NULL, &dst), INE_OK, "%s", ine_err_msg());
    free(p);
    cr_assert_eq(evlog_last_seq(dst, &have), INE_OK);
    cr_assert_eq(evlog_last_seq(c->log, &last), INE_OK);
    if (!to || to > last) to = last;
    for (uint64_t s = have + 1; s <= to; s++) {
        uint8_t *raw = NULL;
        size_t len = 0;
        cr_assert_eq(evlog_read_raw(c->log, s, &raw, &len), INE_OK, "%s", ine_err_msg());
        cr_assert_eq(evlog_append_raw(dst, s, raw, len), INE_OK, "replicating seq %llu: %s", (unsigned long long)s, ine_err_msg());
        free(raw);
    }
    evlog_close(dst);
}

void cl_replica_make(cl_t *c, int n, uint64_t to)
{
    char name[32], *key, *dst_key, *data;
    size_t len = 0;
    int fd;
    snprintf(name, sizeof name, "data-node%d", n);
    free(c->tp_dd[n]);
    c->tp_dd[n] = cl_path(c, name);
    cr_assert_eq(datadir_create(c->tp_dd[n]), INE_OK, "%s", ine_err_msg());
    key = tu_path(c->dd, "seal.key");
    dst_key = tu_path(c->tp_dd[n], "seal.key");
    cr_assert(data = tu_read_file(key, &len));
    fd = open(dst_key, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "cannot create %s", dst_key);
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
    free(data);
    free(key);
    free(dst_key);
    cl_replica_sync(c, n, to);
}

/* --- start and stop ---------------------------------------------------------------------------- */

static void cl__dump_tail(const cl_proc *p)
{
    char *s = cl_log_since(p, 0);
    size_t n = strlen(s);
    fprintf(stderr, "---- %s (exit %d), last lines:\n%s\n", p->name, p->status, s + (n > 4000 ? n - 4000 : 0));
    free(s);
}

static void cl__dump_all(const cl_t *c)
{
    for (int n = 1; n <= CL_NODES; n++)
        if (c->tp[n].pid) cl__dump_tail(&c->tp[n]);
}

void cl_start(cl_t *c, const cl_opts *o)
{
    char *out = NULL, *err = NULL, *p;
    memset(c, 0, sizeof *c);
    cr_assert(c->dir = tu_tmpdir());
    c->dd = tu_path(c->dir, "data");
    c->port = cl_free_port();
    c->handshake_ms = o && o->handshake_ms ? o->handshake_ms : 3000;
    proj_init(&c->st);
    cr_assert_eq(cl_inectl(c, &out, &err, "cluster", "create", "name", "tp", "nodes", "127.0.0.1,127.0.0.2,127.0.0.3",
                           "ca_key_bits", "2048", NULL), 0,
                 "cluster create: %s", err);
    free(out);
    free(err);
    {
        char *argv[] = {(char *)tu_bin("ine-ca"), "--data-dir", c->dd, "--ca-key-bits", "2048", "--check-interval", "1", NULL};
        cl_spawn(c, &c->ca, "ca", argv, NULL);
    }
    {
        char *argv[] = {(char *)tu_bin("ine-policy"), "--data-dir", c->dd, "--rest-port", "0", NULL};
        cl_spawn(c, &c->policy, "policy", argv, NULL);
    }
    p = tu_path(c->dd, "seal.key");
    cr_assert_eq(seal_key_load(p, &c->seal), INE_OK, "%s", ine_err_msg());
    free(p);
    p = tu_path(c->dd, "log");
    {
        evlog_opts eo = {.read_only = 1};
        cr_assert_eq(evlog_open(p, &eo, &c->log), INE_OK, "%s", ine_err_msg());
    }
    free(p);
    /* Certificates first: a transport without them has nothing to serve. */
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        const proj_state *st = cl_state(c);
        int have = 0;
        for (int n = 1; n <= CL_NODES; n++)
            for (int pl = 1; pl <= 2; pl++) have += proj_cert_find(st, (uint32_t)n, pl) != NULL;
        if (have == 2 * CL_NODES) break;
        cr_assert(cl_now_ms() < end, "the CA issued %d of %d certificates in time", have, 2 * CL_NODES);
        cl__sleep_ms(50);
    }
    if (o && o->no_transports) return;
    for (int n = 1; n <= CL_NODES; n++) cl_tp_start(c, n);
    /* A cluster that does not come up says why: each transport's log, not only which wait ran out. */
    if (!cl_wait_converged(c, CL_WAIT_MS)) {
        cl__dump_all(c);
        cr_assert_fail("every node activated its certificates");
    }
    for (int n = 1; n <= CL_NODES; n++) {
        int links = cl_wait_links(c, n, 0, CL_WAIT_MS), hb = links && cl_wait_heartbeats(c, n, 0, CL_WAIT_MS);
        if (!hb) cl__dump_all(c);
        cr_assert(links, "node %d has its control-plane streams up", n);
        cr_assert(hb, "node %d hears the others", n);
    }
}


void cl_finish(cl_t *c)
{
    for (int n = 1; n <= CL_NODES; n++) {
        int st;
        if (!c->tp[n].pid) continue;
        st = cl_kill(&c->tp[n], SIGTERM);
        if (st != 0) cl__dump_tail(&c->tp[n]);
        cr_expect_eq(st, 0, "transport %d exited with status %d on SIGTERM (crash or sanitizer report, see above)", n, st);
    }
}

void cl_stop(cl_t *c)
{
    if (!c->dir) return;
    for (int n = 1; n <= CL_NODES; n++) {
        cl_kill(&c->tp[n], SIGKILL);
        free(c->tp[n].log);
        free(c->tp_dd[n]);
    }
    for (size_t i = 0; i < c->n_procs; i++) {
        cl_kill(&c->procs[i], SIGKILL);
        free(c->procs[i].log);
    }
    cl_kill(&c->policy, SIGKILL);
    cl_kill(&c->ca, SIGKILL);
    free(c->policy.log);
    free(c->ca.log);
    proj_free(&c->st);
    evlog_close(c->log);
    seal_key_free(c->seal);
    if (!getenv("INE_KEEP_TEST_DIR")) tu_rmrf(c->dir);
    else fprintf(stderr, "kept %s\n", c->dir);
    free(c->dir);
    free(c->dd);
    memset(c, 0, sizeof *c);
}

/* --- commands ---------------------------------------------------------------------------------- */

int cl_inectl(cl_t *c, char **out, char **err, ...)
{
    char *argv[40];
    int i = 0;
    va_list ap;
    argv[i++] = (char *)tu_bin("inectl");
    argv[i++] = "--data-dir";
    argv[i++] = c->dd;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && i < 39;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    return tu_run(argv, NULL, out, err);
}

uint32_t cl_create_db(cl_t *c, const char *name, int port, int shard_node, const char *shard_addr, int encryption)
{
    char ps[16], ns[16], *out = NULL, *err = NULL, text[160];
    size_t marks[CL_NODES + 1];
    const proj_db *d;
    uint32_t uid;
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(ns, sizeof ns, "%d", shard_node);
    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c->tp[n]);
    cr_assert_eq(cl_inectl(c, &out, &err, "create", "db", "name", name, "port", ps, "shard_node", ns, "shard_address", shard_addr,
                           "data_internode_encryption", encryption ? "enabled" : "disabled", NULL), 0, "create db: %s", err);
    free(out);
    free(err);
    d = proj_db_find_name(cl_state(c), name);
    cr_assert(d, "db %s is in the log", name);
    uid = d->uid;
    for (int n = 1; n <= CL_NODES; n++) {
        if (!c->tp[n].pid) continue;
        snprintf(text, sizeof text, "db %u (%s): endpoint on %s:%d", uid, name, cl_addr(n), port);
        cr_assert(cl_wait_log(&c->tp[n], marks[n], text, CL_WAIT_MS), "transport %d opened the endpoint of %s", n, name);
    }
    return uid;
}

uint32_t cl_redis_db(cl_t *c, const char *name, int port, int node, int shard_port)
{
    char addr[64];
    cl_redis_start(c, cl_addr(node), shard_port, NULL);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(node), shard_port);
    return cl_create_db(c, name, port, node, addr, 1);
}

void cl_set_encryption(cl_t *c, const char *db, int on)
{
    char *out = NULL, *err = NULL;
    cr_assert_eq(cl_inectl(c, &out, &err, "tune", "db", db, "data_internode_encryption", on ? "enabled" : "disabled", NULL), 0,
                 "tune db: %s", err);
    free(out);
    free(err);
}

cl_proc *cl_redis_start(cl_t *c, const char *addr, int port, ...)
{
    char ps[16], name[48], *argv[40];
    int i = 0;
    va_list ap;
    cl_proc *p;
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(name, sizeof name, "redis-%s-%d", addr, port);
    argv[i++] = "/usr/bin/redis-server";
    argv[i++] = "--bind";
    argv[i++] = (char *)addr;
    argv[i++] = "--port";
    argv[i++] = ps;
    argv[i++] = "--save";
    argv[i++] = "";
    argv[i++] = "--appendonly";
    argv[i++] = "no";
    argv[i++] = "--protected-mode";
    argv[i++] = "no";
    argv[i++] = "--dir";
    argv[i++] = c->dir;
    argv[i++] = "--dbfilename";
    argv[i++] = name; /* a replica writes its RDB here */
    va_start(ap, port);
    for (char *a; (a = va_arg(ap, char *)) && i < 39;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    cr_assert_eq(access(argv[0], X_OK), 0, "redis-server is installed by scripts/install-deps.sh");
    p = cl_spawn(c, NULL, name, argv, NULL);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        char *pong = cl_redis_cli(addr, port, "PING", NULL);
        int ok = pong && !strcmp(pong, "PONG");
        free(pong);
        if (ok) break;
        cr_assert(cl_now_ms() < end, "redis-server on %s:%d did not start", addr, port);
        cl__sleep_ms(50);
    }
    return p;
}

static int cl__run_here(void *ctx, char **argv, char **out)
{
    (void)ctx;
    return tu_run(argv, NULL, out, NULL);
}

char *cl_redis_cli_with(int (*run)(void *ctx, char **argv, char **out), void *ctx, const char *addr, int port, va_list ap)
{
    char ps[16], *argv[40], *out = NULL;
    int i = 0, rc;
    snprintf(ps, sizeof ps, "%d", port);
    argv[i++] = "/usr/bin/timeout";
    argv[i++] = "20";
    argv[i++] = "/usr/bin/redis-cli";
    argv[i++] = "-h";
    argv[i++] = (char *)addr;
    argv[i++] = "-p";
    argv[i++] = ps;
    for (char *a; (a = va_arg(ap, char *)) && i < 39;) argv[i++] = a;
    argv[i] = NULL;
    rc = run(ctx, argv, &out);
    if (rc != 0 || !out) {
        free(out);
        return NULL;
    }
    out[strcspn(out, "\r\n")] = 0;
    /* redis-cli prints errors on stdout with exit 0 when it could not connect. */
    if (!strncmp(out, "Could not connect", 17) || !strncmp(out, "Error:", 6)) {
        free(out);
        return NULL;
    }
    return out;
}

void cl_scan_word(const char *out, const char *label, char *v, size_t len)
{
    const char *p = strstr(out, label);
    size_t n = 0;
    cr_assert_not_null(p, "no '%s' in:\n%s", label, out);
    p += strlen(label);
    while (*p == ' ') p++;
    while (p[n] && p[n] != ' ' && p[n] != '\n' && n + 1 < len) n++;
    cr_assert_gt(n, 0, "%s", out);
    memcpy(v, p, n);
    v[n] = 0;
}

char *cl_redis_cli(const char *addr, int port, ...)
{
    va_list ap;
    va_start(ap, port);
    char *out = cl_redis_cli_with(cl__run_here, NULL, addr, port, ap);
    va_end(ap);
    return out;
}

static void cl__write_key(const pki_key *k, const char *path)
{
    FILE *f;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0, "cannot create %s", path);
    f = fdopen(fd, "w");
    cr_assert(f);
    cr_assert_eq(PEM_write_PrivateKey(f, pki_evp(k), NULL, NULL, 0, NULL, NULL), 1, "cannot write %s", path);
    fclose(f);
}

static void cl__write_text(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot create %s", path);
    fputs(a ? a : "", f);
    fputs(b ? b : "", f);
    fclose(f);
}

void cl_export_cert(cl_t *c, int node, int plane, const char *cert_path, const char *key_path)
{
    const proj_cert *pc = cl_cert(c, node, plane);
    pki_key *k = NULL;
    cl__write_text(cert_path, pc->cert.cert_pem, pc->cert.chain_pem);
    cr_assert_eq(sealed_load_key(c->log, c->seal, pc->issued_seq, &k), INE_OK, "%s", ine_err_msg());
    cl__write_key(k, key_path);
    pki_key_free(k);
}

void cl_export_ca(cl_t *c, const char *cert_path, const char *key_path)
{
    const proj_state *st = cl_state(c);
    pki_key *k = NULL;
    cr_assert(st->ca.present);
    cl__write_text(cert_path, st->ca.cert.cert_pem, NULL);
    cr_assert_eq(sealed_load_key(c->log, c->seal, st->ca.seq, &k), INE_OK, "%s", ine_err_msg());
    cl__write_key(k, key_path);
    pki_key_free(k);
}

int cl_sh(char **out, int timeout_s, const char *fmt, ...)
{
    char *cmd, *full, *o = NULL;
    va_list ap;
    int rc;
    va_start(ap, fmt);
    if (vasprintf(&cmd, fmt, ap) < 0) cr_assert_fail("oom");
    va_end(ap);
    if (asprintf(&full, "{ %s\n} 2>&1", cmd) < 0) cr_assert_fail("oom");
    char ts[16];
    snprintf(ts, sizeof ts, "%d", timeout_s);
    char *argv[] = {"/usr/bin/timeout", "-k", "2", ts, "/bin/sh", "-c", full, NULL};
    rc = tu_run(argv, NULL, &o, NULL);
    free(cmd);
    free(full);
    if (out) *out = o;
    else free(o);
    return rc;
}

/* --- RESP -------------------------------------------------------------------------------------- */

int cl_resp_open(cl_resp *r, const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {10, 0};
    int one = 1;
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0) return -1;
    inet_pton(AF_INET, addr, &sa.sin_addr);
    setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(r->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(r->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    return 0;
}

void cl_resp_close(cl_resp *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
}

/* Fill until buf holds n bytes. */
static int cl__fill(cl_resp *r, size_t n)
{
    while (r->len < n) {
        ssize_t k;
        if (n > sizeof r->buf) return -1;
        k = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            return -1;
        }
        r->len += (size_t)k;
    }
    return 0;
}

static void cl__drop(cl_resp *r, size_t n)
{
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
}

int cl_resp_cmd(cl_resp *r, char *out, size_t len, const char *fmt, ...)
{
    char cmd[4096];
    char *eol;
    size_t line;
    va_list ap;
    int n;
    if (r->fd < 0) return -1;
    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof cmd - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd - 2) return -1;
    memcpy(cmd + n, "\r\n", 2);
    if (send(r->fd, cmd, (size_t)n + 2, MSG_NOSIGNAL) != n + 2) return -1;
    for (;;) {
        if ((eol = memmem(r->buf, r->len, "\r\n", 2))) break;
        if (cl__fill(r, r->len + 1) < 0) return -1;
    }
    line = (size_t)(eol - r->buf);
    if (r->buf[0] == '$') {
        long blen = strtol(r->buf + 1, NULL, 10);
        if (blen < 0) {
            snprintf(out, len, "(nil)");
            cl__drop(r, line + 2);
            return 0;
        }
        if (cl__fill(r, line + 2 + (size_t)blen + 2) < 0) return -1;
        snprintf(out, len, "%.*s", (int)blen, r->buf + line + 2);
        cl__drop(r, line + 2 + (size_t)blen + 2);
        return 0;
    }
    snprintf(out, len, "%.*s", (int)line, r->buf);
    cl__drop(r, line + 2);
    return 0;
}

int cl_resp_wait_closed(cl_resp *r, int timeout_ms)
{
    struct pollfd p = {r->fd, POLLIN, 0};
    char b[256];
    for (int64_t end = cl_now_ms() + timeout_ms;;) {
        int left = (int)(end - cl_now_ms());
        if (left <= 0) return 0;
        if (poll(&p, 1, left) <= 0) continue;
        ssize_t k = recv(r->fd, b, sizeof b, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) return 1;
    }
}

/* --- a busy connection -------------------------------------------------------------------------- */

static void *cl__load_main(void *arg)
{
    cl_load *l = arg;
    char reply[160];
    while (!l->stop) {
        long want = l->value + 1;
        if (cl_resp_cmd(&l->r, reply, sizeof reply, "INCR %s", l->key) < 0) {
            snprintf(l->last_error, sizeof l->last_error, "connection failed after %ld operations: %s", l->ops, strerror(errno));
            __atomic_add_fetch(&l->errors, 1, __ATOMIC_SEQ_CST);
            break;
        }
        if (reply[0] != ':' || atol(reply + 1) != want) {
            snprintf(l->last_error, sizeof l->last_error, "INCR answered '%.100s', expected :%ld", reply, want);
            __atomic_add_fetch(&l->errors, 1, __ATOMIC_SEQ_CST);
            break;
        }
        l->value = want;
        __atomic_add_fetch(&l->ops, 1, __ATOMIC_SEQ_CST);
        cl__sleep_ms(3);
    }
    return NULL;
}

void cl_load_start(cl_load *l, const char *addr, int port, const char *key)
{
    char reply[64];
    pthread_t th;
    memset(l, 0, sizeof *l);
    snprintf(l->key, sizeof l->key, "%s", key);
    cr_assert_eq(cl_resp_open(&l->r, addr, port), 0, "cannot connect to %s:%d", addr, port);
    cr_assert_eq(cl_resp_cmd(&l->r, reply, sizeof reply, "SET %s 0", key), 0);
    cr_assert_str_eq(reply, "+OK");
    cr_assert_eq(pthread_create(&th, NULL, cl__load_main, l), 0);
    l->th = (unsigned long)th;
}

long cl_load_stop(cl_load *l)
{
    if (!l->th) return l->errors;
    l->stop = 1;
    pthread_join((pthread_t)l->th, NULL);
    l->th = 0;
    cl_resp_close(&l->r);
    return l->errors;
}

int cl_load_progress(cl_load *l, long more, int timeout_ms)
{
    long target = __atomic_load_n(&l->ops, __ATOMIC_SEQ_CST) + more;
    for (int64_t end = cl_now_ms() + timeout_ms;;) {
        if (__atomic_load_n(&l->errors, __ATOMIC_SEQ_CST)) return 0;
        if (__atomic_load_n(&l->ops, __ATOMIC_SEQ_CST) >= target) return 1;
        if (cl_now_ms() > end) return 0;
        cl__sleep_ms(10);
    }
}

int cl_open_fds(pid_t pid)
{
    char path[64];
    DIR *d;
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    if (!(d = opendir(path))) return -1;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

int cl_wait_fds_at_most(cl_t *c, int n, int most, int timeout_ms)
{
    for (int64_t end = cl_now_ms() + timeout_ms;;) {
        if (cl_open_fds(c->tp[n].pid) <= most) return 1;
        if (cl_now_ms() > end) return 0;
        cl__sleep_ms(50);
    }
}
