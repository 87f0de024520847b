/* cafixture.c — see cafixture.h. Test-only: every failure is a Criterion assertion. */
#include "cafixture.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "err.h"
#include "seal.h"
#include "testutil.h"

#define CF_MAX_PROCS 128

char *cf_dir;
char *cf_dd;

typedef struct {
    pid_t pid;
    int live;
} cf__proc;

static cf__proc cf__procs[CF_MAX_PROCS];

static void cf__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

void cf_setup(void)
{
    memset(cf__procs, 0, sizeof cf__procs);
    signal(SIGPIPE, SIG_IGN);
    cf_dir = tu_tmpdir();
    cr_assert_not_null(cf_dir);
    cf_dd = tu_path(cf_dir, "node1");
}

/* Wait for `pid` (our child) up to ms; its status, or -1 if it is still running. */
static int cf__reap(pid_t pid, int ms)
{
    int st;
    for (int waited = 0;; waited += 20) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
        if (r < 0 && errno != EINTR) return -2; /* not ours, or already reaped */
        if (waited >= ms) return -1;
        cf__sleep_ms(20);
    }
}

static cf__proc *cf__find(pid_t pid)
{
    for (int i = 0; i < CF_MAX_PROCS; i++)
        if (cf__procs[i].live && cf__procs[i].pid == pid) return &cf__procs[i];
    return NULL;
}

static void cf__track(pid_t pid)
{
    for (int i = 0; i < CF_MAX_PROCS; i++)
        if (!cf__procs[i].live) {
            cf__procs[i] = (cf__proc){pid, 1};
            return;
        }
    kill(pid, SIGKILL);
    cr_assert_fail("more than %d processes spawned by one test", CF_MAX_PROCS);
}

/* SIGKILL one tracked process and reap it. */
static int cf__kill_entry(cf__proc *p)
{
    int st;
    kill(p->pid, SIGKILL);
    st = cf__reap(p->pid, 10000);
    p->live = 0;
    return st;
}

void cf_teardown(void)
{
    for (int i = 0; i < CF_MAX_PROCS; i++)
        if (cf__procs[i].live) cf__kill_entry(&cf__procs[i]);
    if (getenv("INE_TEST_KEEP")) fprintf(stderr, "kept %s\n", cf_dir);
    else tu_rmrf(cf_dir);
    free(cf_dir);
    free(cf_dd);
    cf_dir = cf_dd = NULL;
}

/* libfaketime is preloaded ahead of the ASan runtime: tell ASan that is fine, keeping whatever
 * options the runner set. */
static const char *cf__asan_env(void)
{
    static char buf[1024];
    const char *cur = getenv("ASAN_OPTIONS");
    snprintf(buf, sizeof buf, "ASAN_OPTIONS=%s%sverify_asan_link_order=0", cur ? cur : "", cur && *cur ? ":" : "");
    return buf;
}

/* fork + exec with output to `out_path` (appended) or /dev/null and extra environment. */
static pid_t cf__fork_exec(char *const argv[], char *const env[], const char *out_path)
{
    pid_t parent = getpid(), pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* A test that dies without its teardown must not leave services behind. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(126);
        int in = open("/dev/null", O_RDONLY);
        int out = out_path ? open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600) : open("/dev/null", O_WRONLY);
        if (in < 0 || out < 0) _exit(125);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        close(in);
        close(out);
        for (int i = 0; env && env[i]; i++) putenv(env[i]);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int cf__starts_logged(void)
{
    char *log = cf_ca_log();
    int n = 0;
    for (const char *p = log; (p = strstr(p, " started on ")); p++) n++;
    free(log);
    return n;
}

static pid_t cf__ca_spawn(const char *faketime, const char *ftfile)
{
    char *log = tu_path(cf_dir, "ca.log");
    char *argv[16];
    char *env[5] = {(char *)cf__asan_env(), NULL, NULL, NULL, NULL};
    char ft[1024];
    int i = 0;
    pid_t pid;
    argv[i++] = strdup(tu_bin("ine-ca"));
    argv[i++] = "--data-dir";
    argv[i++] = cf_dd;
    argv[i++] = "--ca-key-bits";
    argv[i++] = "2048";
    argv[i++] = "--check-interval";
    argv[i++] = "1";
    argv[i] = NULL;
    if (faketime || ftfile) {
        const char *pre = tu_faketime_preload(0);
        cr_assert_not_null(pre, "libfaketime is installed by scripts/install-deps.sh");
        env[1] = (char *)pre;
        if (faketime) snprintf(ft, sizeof ft, "FAKETIME=%s", faketime);
        else snprintf(ft, sizeof ft, "FAKETIME_TIMESTAMP_FILE=%s", ftfile);
        env[2] = ft;
        env[3] = ftfile ? "FAKETIME_NO_CACHE=1" : NULL;
    }
    int starts = cf__starts_logged();
    pid = cf__fork_exec(argv, env, log);
    free(argv[0]);
    free(log);
    cf__track(pid);
    /* Ready once it says so: its socket is bound and it has replayed the log. */
    for (int waited = 0; cf__starts_logged() == starts; waited += 10) {
        int st = cf__reap(pid, 0);
        if (st != -1) {
            cf__find(pid)->live = 0;
            cr_assert_fail("ine-ca exited (status %d) at start:\n%s", st, cf_ca_log());
        }
        cr_assert_lt(waited, CF_WAIT_S * 1000, "ine-ca did not start:\n%s", cf_ca_log());
        cf__sleep_ms(10);
    }
    return pid;
}

pid_t cf_ca_start(const char *faketime) { return cf__ca_spawn(faketime, NULL); }
pid_t cf_ca_start_ftfile(const char *file) { return cf__ca_spawn(NULL, file); }

int cf_ca_run(char **output, ...)
{
    char *argv[24], *log = tu_path(cf_dir, "once.log");
    char *env[] = {(char *)cf__asan_env(), NULL};
    int i = 0, st;
    va_list ap;
    unlink(log);
    argv[i++] = strdup(tu_bin("ine-ca"));
    argv[i++] = "--data-dir";
    argv[i++] = cf_dd;
    va_start(ap, output);
    for (char *a; (a = va_arg(ap, char *)) && i < 23;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    pid_t pid = cf__fork_exec(argv, env, log);
    cf__track(pid);
    st = cf__reap(pid, CF_WAIT_S * 1000);
    if (st == -1) cf__kill_entry(cf__find(pid));
    else cf__find(pid)->live = 0;
    *output = tu_read_file(log, NULL);
    if (!*output) *output = strdup("");
    free(argv[0]);
    free(log);
    return st;
}

int cf_ca_stop(pid_t pid)
{
    cf__proc *p = cf__find(pid);
    int st;
    cr_assert_not_null(p, "pid %d is not a running ine-ca of this test", (int)pid);
    kill(pid, SIGTERM);
    st = cf__reap(pid, CF_WAIT_S * 1000);
    if (st == -1) {
        cf__kill_entry(p);
        return -1;
    }
    p->live = 0;
    return st;
}

void cf_kill(pid_t pid)
{
    cf__proc *p = cf__find(pid);
    cr_assert_not_null(p, "pid %d is not a running process of this test", (int)pid);
    cf__kill_entry(p);
}

pid_t cf_spawn(char *const argv[])
{
    pid_t pid = cf__fork_exec(argv, NULL, NULL);
    cf__track(pid);
    return pid;
}

char *cf_ca_log(void)
{
    char *p = tu_path(cf_dir, "ca.log"), *s = tu_read_file(p, NULL);
    free(p);
    return s ? s : strdup("");
}

static int cf__inectl(const char *rid, char **out, char **err, va_list ap)
{
    char *argv[40];
    int i = 0;
    argv[i++] = strdup(tu_bin("inectl"));
    argv[i++] = "--data-dir";
    argv[i++] = cf_dd;
    if (rid) {
        argv[i++] = "--request-id";
        argv[i++] = (char *)rid;
    }
    for (char *a; (a = va_arg(ap, char *)) && i < 39;) argv[i++] = a;
    argv[i] = NULL;
    int rc = tu_run(argv, NULL, out, err);
    free(argv[0]);
    return rc;
}

int cf_inectl(char **out, char **err, ...)
{
    va_list ap;
    va_start(ap, err);
    int rc = cf__inectl(NULL, out, err, ap);
    va_end(ap);
    return rc;
}

int cf_inectl_rid(const char *rid, char **out, char **err, ...)
{
    va_list ap;
    va_start(ap, err);
    int rc = cf__inectl(rid, out, err, ap);
    va_end(ap);
    return rc;
}

int cf_verify(void)
{
    char *argv[] = {strdup(tu_bin("ine-log")), "--data-dir", cf_dd, "verify", NULL};
    char *out, *err;
    int rc = tu_run(argv, NULL, &out, &err);
    if (rc != 0) cr_log_error("ine-log verify: %s%s", out, err);
    free(out);
    free(err);
    free(argv[0]);
    return rc;
}

const char *cf_cluster(const char *name, const char *nodes)
{
    static char uid[64];
    char *out, *err;
    cr_assert_eq(cf_inectl(&out, &err, "cluster", "create", "name", name, "nodes", nodes, "ca_key_bits", "2048", NULL), 0, "%s", err);
    const char *u = strstr(out, "uid");
    cr_assert_not_null(u, "%s", out);
    cr_assert_eq(sscanf(u, "uid %63s", uid), 1, "%s", out);
    free(out);
    free(err);
    return uid;
}

char *cf_node_list(int n)
{
    char *s = calloc(1, (size_t)n * 16 + 1);
    cr_assert_not_null(s);
    for (int i = 1; i <= n; i++) sprintf(s + strlen(s), "%s127.0.1.%d", i > 1 ? "," : "", i);
    return s;
}

/* ---- the log ---------------------------------------------------------------------------------- */

static evlog_t *cf__open(int read_only)
{
    char *p = tu_path(cf_dd, "log");
    evlog_opts o = {.read_only = read_only};
    evlog_t *log = NULL;
    cr_assert_eq(evlog_open(p, &o, &log), INE_OK, "%s", ine_err_msg());
    free(p);
    return log;
}

typedef struct {
    int body_case;
    cf_recs *out;
    size_t cap;
} cf__collect;

static int cf__collect_fn(const evlog_record *rec, void *ud)
{
    cf__collect *c = ud;
    if (!rec->ev || (c->body_case && (int)rec->ev->body_case != c->body_case)) return 0;
    if (c->out->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->out->v = realloc(c->out->v, c->cap * sizeof *c->out->v);
        if (!c->out->v) return INE_ENOMEM;
    }
    evlog_event *copy = ine__v1__event__unpack(NULL, rec->raw_len, rec->raw);
    if (!copy) return INE_ECORRUPT;
    c->out->v[c->out->n++] = (cf_rec){rec->seq, copy};
    return 0;
}

cf_recs cf_events(int body_case, uint64_t from)
{
    cf_recs r = {0};
    cf__collect c = {body_case, &r, 0};
    evlog_t *log = cf__open(1);
    int rc = evlog_iterate(log, from ? from : 1, 0, 0, cf__collect_fn, &c);
    evlog_close(log);
    cr_assert_geq(rc, 0, "reading the log: %s", ine_err_msg());
    return r;
}

void cf_recs_free(cf_recs *r)
{
    for (size_t i = 0; i < r->n; i++) evlog_event_free(r->v[i].ev);
    free(r->v);
    *r = (cf_recs){0};
}

size_t cf_count(int body_case, uint64_t from)
{
    cf_recs r = cf_events(body_case, from);
    size_t n = r.n;
    cf_recs_free(&r);
    return n;
}

uint64_t cf_last_seq(void)
{
    evlog_t *log = cf__open(1);
    uint64_t last = 0;
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    evlog_close(log);
    return last;
}

size_t cf_wait_count(int body_case, uint64_t from, size_t n, int timeout_s)
{
    size_t got = 0;
    for (int waited = 0; (got = cf_count(body_case, from)) < n && waited < timeout_s * 1000; waited += 50)
        cf__sleep_ms(50);
    return got;
}

size_t cf_count_issued(uint32_t node, int plane, uint64_t from)
{
    cf_recs r = cf_events(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, from);
    size_t n = 0;
    for (size_t i = 0; i < r.n; i++) {
        const Ine__V1__CertificateIssued *ci = r.v[i].ev->certificate_issued;
        if (ci->node_uid == node && (!plane || (int)ci->plane == plane)) n++;
    }
    cf_recs_free(&r);
    return n;
}

void cf_state(proj_state *st)
{
    evlog_t *log = cf__open(1);
    cr_assert_eq(proj_build(log, 0, st), INE_OK, "%s", ine_err_msg());
    evlog_close(log);
}

char *cf_log_bytes(size_t *len)
{
    char *p = tu_path(cf_dd, "log/data.mdb"), *s = tu_read_file(p, len);
    cr_assert_not_null(s);
    free(p);
    return s;
}

static uint64_t cf__append(evlog_event *ev)
{
    evlog_t *log = cf__open(0);
    uint64_t seq = 0;
    cr_assert_eq(evlog_append_one(log, ev, NULL, &seq), INE_OK, "%s", ine_err_msg());
    evlog_close(log);
    tu_event_free(ev);
    return seq;
}

uint64_t cf_append_node(uint32_t uid, const char *address) { return cf__append(tu_ev_node_added(uid, address)); }

uint64_t cf_append_node_removed(uint32_t uid)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    Ine__V1__NodeRemoved *b = calloc(1, sizeof *b);
    cr_assert(ev && b);
    ine__v1__event__init(ev);
    ine__v1__node_removed__init(b);
    b->node_uid = uid;
    ev->producer = strdup("test");
    ev->actor = strdup("tester");
    ev->body_case = INE__V1__EVENT__BODY_NODE_REMOVED;
    ev->node_removed = b;
    return cf__append(ev);
}

uint64_t cf_barrier(uint32_t uid)
{
    char addr[32], *out, *err;
    snprintf(addr, sizeof addr, "127.0.2.%u", uid % 250 + 1);
    uint64_t seq = cf_append_node(uid, addr);
    int waited = 0;
    while ((cf_count_issued(uid, INE__V1__PLANE__PLANE_CONTROL, seq) == 0 ||
            cf_count_issued(uid, INE__V1__PLANE__PLANE_DATA, seq) == 0) && waited < CF_WAIT_S * 1000) {
        cf__sleep_ms(50);
        waited += 50;
    }
    cr_assert_lt(waited, CF_WAIT_S * 1000, "barrier node %u got no certificates; ine-ca said:\n%s", uid, cf_ca_log());
    cr_assert_eq(cf_inectl(&out, &err, "status", "certificates", NULL), 0, "%s", err);
    free(out);
    free(err);
    return seq;
}

/* ---- keys and certificates ---------------------------------------------------------------------- */

uint8_t *cf_unseal_der(uint64_t seq, size_t *len)
{
    evlog_t *log = cf__open(1);
    evlog_event *ev = NULL;
    seal_key *k = NULL;
    char *kp = tu_path(cf_dd, "seal.key"), purpose[SEAL_PURPOSE_MAX];
    const ProtobufCBinaryData *blob = NULL;
    uint8_t *plain = NULL;
    cr_assert_eq(evlog_read(log, seq, &ev), INE_OK, "%s", ine_err_msg());
    switch (ev->body_case) {
    case INE__V1__EVENT__BODY_CA_CREATED: blob = &ev->ca_created->sealed_key; break;
    case INE__V1__EVENT__BODY_CERTIFICATE_ISSUED: blob = &ev->certificate_issued->sealed_key; break;
    case INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED: blob = &ev->customer_certificate_uploaded->sealed_key; break;
    default: cr_assert_fail("event %llu (%s) carries no key", (unsigned long long)seq, evlog_type_name(ev));
    }
    cr_assert_gt(blob->len, seal_overhead(), "event %llu: sealed key is empty", (unsigned long long)seq);
    cr_assert_eq(seal_key_load(kp, &k), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(seal_purpose_event(purpose, sizeof purpose, seq, evlog_type_name(ev), "sealed_key"), INE_OK);
    cr_assert_eq(seal_open(k, purpose, blob->data, blob->len, &plain, len), INE_OK, "seq %llu: %s",
                 (unsigned long long)seq, ine_err_msg());
    seal_key_free(k);
    evlog_event_free(ev);
    evlog_close(log);
    free(kp);
    return plain;
}

EVP_PKEY *cf_unseal_key(uint64_t seq)
{
    size_t len;
    uint8_t *der = cf_unseal_der(seq, &len);
    const unsigned char *p = der;
    EVP_PKEY *k = d2i_AutoPrivateKey(NULL, &p, (long)len);
    cr_assert_not_null(k, "seq %llu: the unsealed key does not decode", (unsigned long long)seq);
    cr_assert_eq(p, der + len, "seq %llu: bytes after the key", (unsigned long long)seq);
    seal_free_secret(der, len);
    return k;
}

X509 *cf_x509(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    cr_assert_not_null(x, "not a PEM certificate: %.80s", pem);
    return x;
}

int cf_chains_to(X509 *leaf, const char *chain_pem, X509 *root, int64_t t)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *mid = sk_X509_new_null();
    int ok;
    cr_assert(store && ctx && mid);
    cr_assert_eq(X509_STORE_add_cert(store, root), 1);
    if (chain_pem && *chain_pem) {
        BIO *b = BIO_new_mem_buf(chain_pem, -1);
        for (X509 *x; (x = PEM_read_bio_X509(b, NULL, NULL, NULL));) sk_X509_push(mid, x);
        BIO_free(b);
    }
    cr_assert_eq(X509_STORE_CTX_init(ctx, store, leaf, mid), 1);
    X509_STORE_CTX_set_time(ctx, 0, (time_t)t);
    X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_CHECK_SS_SIGNATURE);
    ok = X509_verify_cert(ctx) == 1;
    if (!ok) cr_log_info("verify: %s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(mid, X509_free);
    ERR_clear_error();
    return ok;
}

static char *cf__bio_str(BIO *b)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data ? data : "", n > 0 ? (size_t)n : 0);
    cr_assert_not_null(s);
    BIO_free(b);
    return s;
}

char *cf_pem(X509 *first, ...)
{
    BIO *b = BIO_new(BIO_s_mem());
    va_list ap;
    va_start(ap, first);
    for (X509 *x = first; x; x = va_arg(ap, X509 *)) cr_assert_eq(PEM_write_bio_X509(b, x), 1);
    va_end(ap);
    return cf__bio_str(b);
}

char *cf_key_pem(EVP_PKEY *k, const char *pass)
{
    BIO *b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PKCS8PrivateKey(b, k, pass ? EVP_aes_256_cbc() : NULL, pass ? (char *)pass : NULL,
                                               pass ? (int)strlen(pass) : 0, NULL, NULL), 1);
    return cf__bio_str(b);
}

char *cf_write(const char *name, const char *text)
{
    char *p = tu_path(cf_dir, name);
    cr_assert_eq(tu_write_file(p, text, strlen(text)), 0, "writing %s", p);
    return p;
}

static void cf__ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    cr_assert_not_null(e, "extension %d=%s", nid, value);
    cr_assert_eq(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

X509 *cf_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, int ca, int eku, int64_t nb, int64_t na)
{
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    cr_assert(x && bn);
    cr_assert_eq(X509_set_version(x, X509_VERSION_3), 1);
    cr_assert_eq(BN_rand(bn, 63, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY), 1);
    cr_assert_not_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
    BN_free(bn);
    cr_assert_not_null(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb));
    cr_assert_not_null(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na));
    cr_assert_eq(X509_set_pubkey(x, key), 1);
    X509_NAME *n = X509_get_subject_name(x);
    cr_assert_eq(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Customer", -1, -1, 0), 1);
    cr_assert_eq(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0), 1);
    cr_assert_eq(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n), 1);
    X509 *is = issuer ? issuer : x;
    cf__ext(x, is, NID_subject_key_identifier, "hash");
    cf__ext(x, is, NID_authority_key_identifier, "keyid:always");
    if (ca) {
        cf__ext(x, is, NID_basic_constraints, "critical,CA:TRUE");
        cf__ext(x, is, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        char ekus[64] = "";
        cf__ext(x, is, NID_basic_constraints, "critical,CA:FALSE");
        cf__ext(x, is, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        if (eku & CF_SERVER) strcat(ekus, "serverAuth,");
        if (eku & CF_CLIENT) strcat(ekus, "clientAuth,");
        cr_assert_gt(strlen(ekus), 0);
        ekus[strlen(ekus) - 1] = '\0';
        cf__ext(x, is, NID_ext_key_usage, ekus);
        cf__ext(x, is, NID_subject_alt_name, "DNS:node.customer.example");
    }
    cr_assert_gt(X509_sign(x, ikey ? ikey : key, EVP_sha256()), 0);
    return x;
}

void cf_chain_make(cf_chain *c, cf_chain_spec s)
{
    int64_t now = ine_clock_now();
    X509 *signer;
    EVP_PKEY *skey;
    memset(c, 0, sizeof *c);
    c->root_key = EVP_RSA_gen(2048);
    cr_assert_not_null(c->root_key);
    c->root = cf_cert("Customer Root CA", c->root_key, NULL, NULL, 1, 0, now - 365 * CF_DAY, now + 3650 * CF_DAY);
    signer = c->root;
    skey = c->root_key;
    if (s.levels == 3) {
        c->mid_key = EVP_RSA_gen(2048);
        cr_assert_not_null(c->mid_key);
        c->mid = cf_cert("Customer Issuing CA", c->mid_key, c->root, c->root_key, 1, 0, now - 300 * CF_DAY,
                         now + 1825 * CF_DAY);
        signer = c->mid;
        skey = c->mid_key;
    }
    c->leaf_key = s.ec_leaf ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
    cr_assert_not_null(c->leaf_key);
    c->leaf = cf_cert("ine.customer.example", c->leaf_key, signer, skey, 0, s.eku ? s.eku : CF_SERVER | CF_CLIENT,
                      s.nb ? s.nb : now - CF_DAY, s.na ? s.na : now + 90 * CF_DAY);
}

void cf_chain_free(cf_chain *c)
{
    X509_free(c->root);
    X509_free(c->mid);
    X509_free(c->leaf);
    EVP_PKEY_free(c->root_key);
    EVP_PKEY_free(c->mid_key);
    EVP_PKEY_free(c->leaf_key);
    memset(c, 0, sizeof *c);
}

void cf_chain_files(const cf_chain *c, const char *name, char **crt, char **key)
{
    char fn[256];
    char *pem = c->mid ? cf_pem(c->leaf, c->mid, c->root, NULL) : cf_pem(c->leaf, c->root, NULL);
    char *kp = cf_key_pem(c->leaf_key, NULL);
    snprintf(fn, sizeof fn, "%s.crt", name);
    *crt = cf_write(fn, pem);
    snprintf(fn, sizeof fn, "%s.key", name);
    *key = cf_write(fn, kp);
    free(pem);
    free(kp);
}
