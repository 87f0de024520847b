/* svc.c — see svc.h. */
#include "svc.h"
#include "etcdfix.h"
#include "testutil.h"

#include "err.h"
#include "evlog.h"
#include "proj.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char svc__msg[2048];

const char *svc_why(void) { return svc__msg; }

static int svc__fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int svc__fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(svc__msg, sizeof svc__msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void svc__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static int64_t svc__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- processes ----------------------------------------------------------------------------- */

pid_t svc_spawn(char *const argv[], char *const envadd[], const char *log_path)
{
    pid_t parent = getpid(), pid;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return svc__fail("cannot open %s: %s", log_path, strerror(errno));
    pid = fork();
    if (pid < 0) {
        close(fd);
        return svc__fail("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        long max = sysconf(_SC_OPEN_MAX);
        /* Die with the test even when it crashes before its .fini runs. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        dup2(null, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        /* Criterion's own sockets must not live on in a service. */
        for (long i = 3; i < (max > 0 && max < 65536 ? max : 65536); i++) close((int)i);
        for (int i = 0; envadd && envadd[i]; i++) putenv(envadd[i]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    return pid;
}

static int svc__status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1; }

int svc_running(pid_t pid, int *status)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0) return 1;
    if (status) *status = r == pid ? svc__status(st) : -1;
    return 0;
}

int svc_stop(pid_t pid, int timeout_ms)
{
    int64_t end = svc__now_ms() + timeout_ms;
    int st;
    if (pid <= 0) return 0;
    kill(pid, SIGTERM);
    while (svc__now_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return svc__status(st);
        if (r < 0) return -1;
        svc__sleep_ms(20);
    }
    kill(pid, SIGKILL);
    return waitpid(pid, &st, 0) == pid ? svc__status(st) : -1;
}

int svc_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0) return svc__fail("socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    else
        svc__fail("bind 127.0.0.1:0: %s", strerror(errno));
    close(fd);
    return port;
}

int svc_port_accepts(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0) return 0;
    ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* --- a cluster --------------------------------------------------------------------------- */

const char *svc_tail(const char *path)
{
    static char buf[4096];
    size_t len = 0;
    char *d = tu_read_file(path, &len);
    if (!d) return snprintf(buf, sizeof buf, "(no %s)", path), buf;
    snprintf(buf, sizeof buf, "%s", len >= sizeof buf ? d + len - (sizeof buf - 1) : d);
    free(d);
    return buf;
}

int svc_inectl(const svc_cluster *c, char **out, char **err, ...)
{
    char *argv[48];
    int i = 0;
    va_list ap;
    argv[i++] = strdup(tu_bin("inectl"));
    argv[i++] = "--data-dir";
    argv[i++] = c->dd;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && i < 47;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    i = tu_run(argv, NULL, out, err);
    free(argv[0]);
    return i;
}

/* A zeroed c with its temp dir and the paths every cluster of this fixture has. */
static int svc__cluster_paths(svc_cluster *c)
{
    memset(c, 0, sizeof *c);
    if (!(c->dir = tu_tmpdir())) return svc__fail("no temp dir: %s", strerror(errno));
    c->dd = tu_path(c->dir, "node1");
    c->ca_log = tu_path(c->dir, "ine-ca.log");
    c->policy_log = tu_path(c->dir, "ine-policy.log");
    return 0;
}

int svc_cluster_init(svc_cluster *c, const char *user, const char *password)
{
    char *out = NULL, *err = NULL;
    int rc;
    if (svc__cluster_paths(c) < 0) return -1;
    if (user)
        rc = svc_inectl(c, &out, &err, "cluster", "create", "name", "test", "nodes", "127.0.0.1,127.0.0.2", "username", user,
                        "password", password, "ca_key_bits", "2048", NULL);
    else
        rc = svc_inectl(c, &out, &err, "cluster", "create", "name", "test", "nodes", "127.0.0.1,127.0.0.2", "ca_key_bits", "2048", NULL);
    if (rc != 0) svc__fail("inectl cluster create exited %d: %s", rc, err);
    c->create_out = out;
    free(err);
    return rc ? -1 : 0;
}

int svc_cluster_init_etcd(svc_cluster *c, const char *user, const char *password)
{
    char *out = NULL, *err = NULL, *conf, *mlog, text[512];
    uint64_t created = 0, have = 0;
    int rc;
    if (svc__cluster_paths(c) < 0) return -1;
    if (!(c->etcd = calloc(1, sizeof *c->etcd))) return svc__fail("out of memory");
    if (ef_start(c->etcd, c->dir, 1, 30000) < 0) return svc__fail("etcd: %s", ef_why());
    if (mkdir(c->dd, 0700) != 0) return svc__fail("mkdir %s: %s", c->dd, strerror(errno));
    c->peer_port = svc_free_port();
    snprintf(text, sizeof text, "endpoints=%s\npeer_port=%d\n", ef_endpoint(c->etcd, 0), c->peer_port);
    conf = tu_path(c->dd, "etcd.conf");
    rc = tu_write_file(conf, text, strlen(text));
    free(conf);
    if (rc != 0) return svc__fail("cannot write etcd.conf");
    if (user)
        rc = svc_inectl(c, &out, &err, "--json", "cluster", "create", "name", "test", "nodes", "127.0.0.1,127.0.0.2", "username",
                        user, "password", password, "ca_key_bits", "2048", NULL);
    else
        rc = svc_inectl(c, &out, &err, "--json", "cluster", "create", "name", "test", "nodes", "127.0.0.1,127.0.0.2",
                        "ca_key_bits", "2048", NULL);
    if (rc != 0) {
        svc__fail("inectl cluster create exited %d: %s", rc, err);
        free(out);
        free(err);
        return -1;
    }
    {
        json_t *j = json_loads(out, 0, NULL);
        const char *tok = json_string_value(json_object_get(j, "join_token"));
        const char *fpr = json_string_value(json_object_get(j, "ca_fingerprint_sha256"));
        created = (uint64_t)json_integer_value(json_object_get(j, "last_seq"));
        /* The text form the tests scan, as `cluster create` prints it without --json. */
        if (!tok || !fpr || !created) rc = -1;
        else if (asprintf(&c->create_out, "join token %s\nca fingerprint %s\n", tok, fpr) < 0) c->create_out = NULL;
        json_decref(j);
    }
    free(err);
    if (rc != 0 || !c->create_out) {
        svc__fail("inectl --json cluster create printed no join token, fingerprint or last seq: %s", out);
        free(out);
        return -1;
    }
    free(out);
    mlog = tu_path(c->dir, "ine-mirror.log");
    {
        char *argv[] = {(char *)tu_bin("ine-mirror"), "--data-dir", c->dd, NULL};
        c->mirror = svc_spawn(argv, NULL, mlog);
    }
    if (c->mirror < 0) {
        free(mlog);
        c->mirror = 0;
        return -1;
    }
    for (int64_t end = svc__now_ms() + 30000; svc_last_seq(c->dd, &have) != 0 || have < created; svc__sleep_ms(50)) {
        if (svc__now_ms() > end) {
            svc__fail("ine-mirror did not copy the %llu created events: %s", (unsigned long long)created, svc_tail(mlog));
            free(mlog);
            return -1;
        }
    }
    free(mlog);
    return 0;
}

/* 1 when every live node has a certificate on both planes. */
static int svc__certs_done(const char *dd)
{
    char *p = tu_path(dd, "log");
    evlog_t *log = NULL;
    evlog_opts o = {.read_only = 1};
    proj_state st;
    int done = 0;
    proj_init(&st);
    if (evlog_open(p, &o, &log) == INE_OK && proj_build(log, 0, &st) == INE_OK && st.n_nodes) {
        done = 1;
        for (size_t i = 0; i < st.n_nodes; i++)
            for (int plane = PROJ_PLANE_MIN; plane <= PROJ_PLANE_MAX; plane++)
                if (!st.nodes[i].removed && !proj_cert_find(&st, st.nodes[i].uid, plane)) done = 0;
    }
    proj_free(&st);
    evlog_close(log);
    free(p);
    return done;
}

int svc_start_ca(svc_cluster *c, int timeout_ms)
{
    char *argv[] = {strdup(tu_bin("ine-ca")), "--data-dir", c->dd, "--ca-key-bits", "2048", NULL};
    int64_t end = svc__now_ms() + timeout_ms;
    int st;
    c->ca = svc_spawn(argv, NULL, c->ca_log);
    free(argv[0]);
    if (c->ca < 0) return c->ca = 0, -1;
    while (!svc__certs_done(c->dd)) {
        if (!svc_running(c->ca, &st)) {
            c->ca = 0;
            return svc__fail("ine-ca exited with %d: %s", st, svc_tail(c->ca_log));
        }
        if (svc__now_ms() > end) return svc__fail("no certificates for every node after %d ms: %s", timeout_ms, svc_tail(c->ca_log));
        svc__sleep_ms(100);
    }
    return 0;
}

/* 1 when a process listens on the unix socket (a file left by a dead one refuses). */
static int svc__unix_accepts(const char *dir, const char *name)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd, ok;
    snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, name);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) return 0;
    ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

int svc_start_policy(svc_cluster *c, int rest, int timeout_ms)
{
    int64_t end = svc__now_ms() + timeout_ms;
    for (int attempt = 0; attempt < 5; attempt++) {
        char port[16];
        char *argv[] = {strdup(tu_bin("ine-policy")), "--data-dir", c->dd, "--rest-addr", "127.0.0.1", "--rest-port", port, NULL};
        int st;
        c->port = rest ? svc_free_port() : 0;
        if (c->port < 0) return free(argv[0]), -1;
        snprintf(port, sizeof port, "%d", c->port);
        c->policy = svc_spawn(argv, NULL, c->policy_log);
        free(argv[0]);
        if (c->policy < 0) return c->policy = 0, -1;
        for (;;) {
            int ready = rest ? svc_port_accepts(c->port) : svc__unix_accepts(c->dd, "run/policy.sock");
            if (ready && svc_running(c->policy, NULL)) return 0;
            if (!svc_running(c->policy, &st)) {
                c->policy = 0;
                if (strstr(svc_tail(c->policy_log), "cannot listen")) break; /* the port went to someone else */
                return svc__fail("ine-policy exited with %d: %s", st, svc_tail(c->policy_log));
            }
            if (svc__now_ms() > end) return svc__fail("ine-policy does not accept on port %d after %d ms: %s", c->port, timeout_ms,
                                                      svc_tail(c->policy_log));
            svc__sleep_ms(50);
        }
    }
    return svc__fail("ine-policy found no free port: %s", svc_tail(c->policy_log));
}

int svc_stop_ca(svc_cluster *c)
{
    int st = svc_stop(c->ca, 60000);
    c->ca = 0;
    return st;
}

int svc_stop_policy(svc_cluster *c)
{
    int st = svc_stop(c->policy, 60000);
    c->policy = 0;
    return st;
}

void svc_cluster_free(svc_cluster *c)
{
    int st;
    if (c->policy > 0) kill(c->policy, SIGKILL), waitpid(c->policy, &st, 0);
    if (c->ca > 0) kill(c->ca, SIGKILL), waitpid(c->ca, &st, 0);
    if (c->mirror > 0) kill(c->mirror, SIGKILL), waitpid(c->mirror, &st, 0);
    if (c->etcd) ef_stop(c->etcd);
    free(c->etcd);
    if (c->dir) tu_rmrf(c->dir);
    free(c->dir);
    free(c->dd);
    free(c->ca_log);
    free(c->policy_log);
    free(c->create_out);
    memset(c, 0, sizeof *c);
}

/* --- the log ------------------------------------------------------------------------------- */

static int svc__open(const char *dd, evlog_t **log)
{
    char *p = tu_path(dd, "log");
    evlog_opts o = {.read_only = 1};
    int rc = evlog_open(p, &o, log);
    free(p);
    return rc == INE_OK ? 0 : svc__fail("cannot open the log: %s", ine_err_msg());
}

int svc_last_seq(const char *dd, uint64_t *out)
{
    evlog_t *log;
    int rc;
    if (svc__open(dd, &log)) return -1;
    rc = evlog_last_seq(log, out);
    evlog_close(log);
    return rc == INE_OK ? 0 : svc__fail("cannot read the last seq: %s", ine_err_msg());
}

int svc_snap_take(const char *dd, svc_snap *s)
{
    char *p = tu_path(dd, "log/data.mdb");
    memset(s, 0, sizeof *s);
    s->bytes = tu_read_file(p, &s->len);
    free(p);
    if (!s->bytes) return svc__fail("cannot read data.mdb");
    return svc_last_seq(dd, &s->last_seq);
}

int svc_snap_same(const char *dd, const svc_snap *s)
{
    svc_snap now;
    int rc = 0;
    if (svc_snap_take(dd, &now)) return svc_snap_free(&now), -1;
    if (now.last_seq != s->last_seq)
        rc = svc__fail("the log grew from seq %llu to %llu", (unsigned long long)s->last_seq, (unsigned long long)now.last_seq);
    else if (now.len != s->len)
        rc = svc__fail("data.mdb changed size from %zu to %zu bytes", s->len, now.len);
    else if (memcmp(now.bytes, s->bytes, s->len)) {
        size_t i = 0;
        while (now.bytes[i] == s->bytes[i]) i++;
        rc = svc__fail("data.mdb changed at byte %zu (page %zu)", i, i / 4096);
    }
    svc_snap_free(&now);
    return rc;
}

void svc_snap_free(svc_snap *s)
{
    free(s->bytes);
    memset(s, 0, sizeof *s);
}

typedef struct { int body_case, n; } svc__count;

static int svc__count_cb(const evlog_record *rec, void *ud)
{
    svc__count *c = ud;
    if (rec->ev && (int)rec->ev->body_case == c->body_case) c->n++;
    return 0;
}

int svc_count_events(const char *dd, int body_case)
{
    evlog_t *log;
    svc__count c = {body_case, 0};
    if (svc__open(dd, &log)) return -1;
    if (evlog_iterate(log, 1, 0, 0, svc__count_cb, &c) < 0) c.n = svc__fail("cannot read the log: %s", ine_err_msg());
    evlog_close(log);
    return c.n;
}

/* --- customer certificates ------------------------------------------------------------------- */

static int svc__ext(X509 *issuer, X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    int ok;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    if (!(e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value))) return 0;
    ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok;
}

static X509 *svc__cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long nb_s, long na_s, long serial)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    int ca = issuer == NULL, ok;
    if (!x || !n) goto err;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), nb_s);
    X509_gmtime_adj(X509_getm_notAfter(x), na_s);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"ine tests", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, ca ? n : X509_get_subject_name(issuer));
    X509_set_pubkey(x, key);
    ok = svc__ext(ca ? x : issuer, x, NID_subject_key_identifier, "hash") &&
         svc__ext(ca ? x : issuer, x, NID_authority_key_identifier, "keyid:always");
    if (ca)
        ok = ok && svc__ext(x, x, NID_basic_constraints, "critical,CA:TRUE") &&
             svc__ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    else
        ok = ok && svc__ext(issuer, x, NID_basic_constraints, "critical,CA:FALSE") &&
             svc__ext(issuer, x, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
             svc__ext(issuer, x, NID_ext_key_usage, "serverAuth,clientAuth") &&
             svc__ext(issuer, x, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
    if (!ok || !X509_sign(x, ca ? key : issuer_key, EVP_sha256())) goto err;
    X509_NAME_free(n);
    return x;
err:
    X509_NAME_free(n);
    X509_free(x);
    return NULL;
}

static char *svc__pem_x509(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *d = NULL, *s = NULL;
    long n;
    if (b && PEM_write_bio_X509(b, x) && (n = BIO_get_mem_data(b, &d)) > 0 && (s = malloc((size_t)n + 1))) {
        memcpy(s, d, (size_t)n);
        s[n] = 0;
    }
    BIO_free(b);
    return s;
}

int svc_chain_make(svc_chain *ch, long nb_s, long na_s)
{
    EVP_PKEY *rk = EVP_RSA_gen(2048), *lk = EVP_RSA_gen(2048);
    X509 *root = NULL, *leaf = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    char *leaf_pem = NULL, *d;
    unsigned char md[32], *p;
    unsigned int mdlen = 0;
    long n;
    int rc = -1, len;
    memset(ch, 0, sizeof *ch);
    if (!rk || !lk || !b) goto out;
    /* The root covers the leaf's whole validity, so only the leaf decides expiry. */
    if (!(root = svc__cert(rk, "ine test customer root", NULL, NULL, nb_s - 86400, (na_s > 0 ? na_s : 0) + 365L * 86400, 1)) ||
        !(leaf = svc__cert(lk, "ine test customer leaf", root, rk, nb_s, na_s, 2)))
        goto out;
    ch->root_pem = svc__pem_x509(root);
    leaf_pem = svc__pem_x509(leaf);
    if (!ch->root_pem || !leaf_pem || asprintf(&ch->cert_pem, "%s%s", leaf_pem, ch->root_pem) < 0) goto out;
    if (!PEM_write_bio_PrivateKey(b, lk, NULL, NULL, 0, NULL, NULL) || (n = BIO_get_mem_data(b, &d)) <= 0 ||
        !(ch->key_pem = strndup(d, (size_t)n)))
        goto out;
    {
        PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(lk);
        ch->key_der = NULL;
        len = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &ch->key_der) : -1;
        PKCS8_PRIV_KEY_INFO_free(p8);
        if (len <= 0) goto out;
        ch->key_der_len = (size_t)len;
    }
    p = NULL;
    if ((len = i2d_PrivateKey(lk, &p)) <= 0) goto out;
    ch->key_rsa_der = p;
    ch->key_rsa_der_len = (size_t)len;
    if (!X509_digest(leaf, EVP_sha256(), md, &mdlen) || !(ch->leaf_fingerprint = malloc(2 * mdlen + 1))) goto out;
    for (unsigned i = 0; i < mdlen; i++) sprintf(ch->leaf_fingerprint + 2 * i, "%02x", md[i]);
    rc = 0;
out:
    if (rc) {
        svc_chain_free(ch);
        svc__fail("cannot make the customer chain");
    }
    free(leaf_pem);
    BIO_free(b);
    X509_free(root);
    X509_free(leaf);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(lk);
    return rc;
}

void svc_chain_free(svc_chain *ch)
{
    free(ch->cert_pem);
    free(ch->key_pem);
    free(ch->root_pem);
    free(ch->leaf_fingerprint);
    OPENSSL_free(ch->key_der);
    OPENSSL_free(ch->key_rsa_der);
    memset(ch, 0, sizeof *ch);
}

const char *svc_key_leak(const svc_chain *ch, const void *hay, size_t len)
{
    static char what[160];
    const unsigned char *ders[2] = {ch->key_der, ch->key_rsa_der};
    size_t lens[2] = {ch->key_der_len, ch->key_rsa_der_len};
    if (memmem(hay, len, "PRIVATE KEY", 11)) return "the words PRIVATE KEY";
    /* Every base64 line of the PEM body (the short last one too, if it is not trivially short). */
    for (const char *l = ch->key_pem; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        if (n >= 16 && strncmp(l, "-----", 5) && memmem(hay, len, l, n)) {
            snprintf(what, sizeof what, "the PEM line %.*s", (int)n, l);
            return what;
        }
        l += n + (e ? 1 : 0);
    }
    for (int k = 0; k < 2; k++)
        for (size_t off = 0; off + 24 <= lens[k]; off += 24)
            if (memmem(hay, len, ders[k] + off, 24)) {
                snprintf(what, sizeof what, "%s DER bytes at offset %zu", k ? "RSAPrivateKey" : "PKCS#8", off);
                return what;
            }
    return NULL;
}
