/* test_alerting.c — ine-alerting end to end, with the real binaries on real sockets: inectl
 * creates the cluster, ine-ca (2048-bit CA, 1 s checks) issues and rotates, ine-alerting raises
 * and clears, ine-policy carries REST where needed. Time moves for whole processes through
 * libfaketime (LD_PRELOAD + FAKETIME, the mechanism /usr/bin/faketime uses; preloading it
 * directly keeps the service itself as our child, so it is signalled and reaped by its pid).
 *
 * Waits poll the log (or a scrape) until a condition holds; the deadline only turns a hang into
 * a failure. "Nothing happened" is asserted after the service reports (ine_alerting_evaluated_seq)
 * that it has judged the log up to a given seq. Every spawned process dies with the test
 * (PR_SET_PDEATHSIG) and is killed in .fini if still running. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "evlog.h"
#include "proj.h"
#include "testutil.h"

#define CP INE__V1__PLANE__PLANE_CONTROL
#define DP INE__V1__PLANE__PLANE_DATA
#define WAIT_MS 180000
#define MAX_KIDS 16
#define NODE_EXPIRY "node_internal_certs_about_to_expire"

static char *dir, *dd;
static pid_t kids[MAX_KIDS];

/* ---- webhook receiver: a tiny HTTP server on a thread of the test process ------------------ */

typedef struct {
    int fd;
    pthread_t th;
    int running;
    atomic_int stop;
    pthread_mutex_t mu;
    char *bodies[64];
    int n;
} t_receiver;

static t_receiver rcv = {.fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static int read_request(int c, char **body_out)
{
    char buf[65536];
    size_t len = 0;
    long clen = -1;
    char *hdr_end = NULL;
    for (;;) {
        struct pollfd p = {c, POLLIN, 0};
        ssize_t r;
        if (poll(&p, 1, 5000) <= 0) return -1;
        if ((r = read(c, buf + len, sizeof buf - 1 - len)) <= 0) return -1;
        len += (size_t)r;
        buf[len] = 0;
        if (!hdr_end && (hdr_end = strstr(buf, "\r\n\r\n"))) {
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            clen = cl && cl < hdr_end ? strtol(cl + 17, NULL, 10) : 0;
        }
        if (hdr_end && (long)(len - (size_t)(hdr_end + 4 - buf)) >= clen) break;
        if (len >= sizeof buf - 1) return -1;
    }
    *body_out = strndup(hdr_end + 4, (size_t)clen);
    return 0;
}

static void *receiver_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&rcv.stop)) {
        struct pollfd p = {rcv.fd, POLLIN, 0};
        char *body = NULL;
        int c;
        if (poll(&p, 1, 100) <= 0) continue;
        if ((c = accept(rcv.fd, NULL, NULL)) < 0) continue;
        if (read_request(c, &body) == 0) {
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            pthread_mutex_lock(&rcv.mu);
            if (rcv.n < 64) rcv.bodies[rcv.n++] = body, body = NULL;
            pthread_mutex_unlock(&rcv.mu);
            if (write(c, ok, sizeof ok - 1) < 0) { /* the sender sees a failure and retries */ }
        }
        free(body);
        close(c);
    }
    return NULL;
}

static void receiver_start(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rcv.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(rcv.fd, 0);
    setsockopt(rcv.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* A retry towards a closed port in the ephemeral range can, rarely, connect to itself and
     * hold the port for a moment: try the bind again for a while. */
    for (int i = 0; bind(rcv.fd, (struct sockaddr *)&a, sizeof a) != 0; i++) {
        cr_assert(errno == EADDRINUSE && i < 100, "bind 127.0.0.1:%d: %s", port, strerror(errno));
        usleep(100 * 1000);
    }
    cr_assert_eq(listen(rcv.fd, 16), 0);
    cr_assert_eq(pthread_create(&rcv.th, NULL, receiver_main, NULL), 0);
    rcv.running = 1;
}

static void receiver_stop(void)
{
    if (rcv.running) {
        atomic_store(&rcv.stop, 1);
        pthread_join(rcv.th, NULL);
        rcv.running = 0;
    }
    if (rcv.fd >= 0) close(rcv.fd);
    rcv.fd = -1;
    for (int i = 0; i < rcv.n; i++) free(rcv.bodies[i]);
    rcv.n = 0;
}

static int received(void)
{
    int n;
    pthread_mutex_lock(&rcv.mu);
    n = rcv.n;
    pthread_mutex_unlock(&rcv.mu);
    return n;
}

/* ---- processes --------------------------------------------------------------------------- */

static void setup(void)
{
    dir = tu_tmpdir();
    cr_assert(dir);
    dd = tu_path(dir, "node1");
}

static void teardown(void)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
            kids[i] = 0;
        }
    receiver_stop();
    tu_rmrf(dir);
    free(dir);
    free(dd);
}

TestSuite(alerting, .init = setup, .fini = teardown, .timeout = 600);

/* Start argv in the background with stdout and stderr appended to <dir>/<logname>; `offset`
 * (libfaketime syntax, "+46d") moves its clock, NULL keeps real time. */
static pid_t spawn(const char *logname, const char *offset, char *const argv[])
{
    char *log = tu_path(dir, logname);
    const char *pre = offset ? tu_faketime_preload(0) : NULL, *asan = getenv("ASAN_OPTIONS");
    char asan_opts[512];
    int slot = -1;
    pid_t pid;
    for (int i = 0; i < MAX_KIDS && slot < 0; i++)
        if (!kids[i]) slot = i;
    cr_assert_geq(slot, 0, "too many children");
    cr_assert(!offset || pre, "libfaketime is not installed (scripts/install-deps.sh installs it)");
    snprintf(asan_opts, sizeof asan_opts, "%s%sverify_asan_link_order=0", asan ? asan : "", asan && *asan ? ":" : "");
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600), nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setenv("no_proxy", "127.0.0.1,localhost", 1);
        if (offset) {
            putenv((char *)pre);
            setenv("FAKETIME", offset, 1);
            setenv("ASAN_OPTIONS", asan_opts, 1);
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    kids[slot] = pid;
    free(log);
    return pid;
}

/* Reap a child, SIGTERM first when `term`; returns the exit status (128 + signal if it had to
 * be killed after 20 s). */
static int reap(pid_t pid, int term)
{
    int st = 0, i;
    for (i = 0; i < MAX_KIDS && kids[i] != pid; i++) {
    }
    cr_assert_lt(i, MAX_KIDS, "pid %d is not ours", (int)pid);
    if (term) kill(pid, SIGTERM);
    for (int k = 0; k < 400; k++) {
        if (waitpid(pid, &st, WNOHANG) == pid) goto done;
        usleep(50 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
done:
    kids[i] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *read_log(const char *name)
{
    char *p = tu_path(dir, name), *s = tu_read_file(p, NULL);
    free(p);
    return s ? s : strdup("");
}

/* The end of every service log, for failure messages (the temp dir goes with the test). */
static char *tails(void)
{
    static const char *names[] = {"alerting.log", "ca.log", "policy.log", NULL};
    char *out = strdup(""), *t;
    for (int i = 0; names[i]; i++) {
        char *text = read_log(names[i]);
        size_t n = strlen(text);
        if (n && asprintf(&t, "%s\n--- %s (end) ---\n%s", out, names[i], text + (n > 2000 ? n - 2000 : 0)) >= 0) {
            free(out);
            out = t;
        }
        free(text);
    }
    return out;
}

static int stop(pid_t pid) { return reap(pid, 1); }

static void stop_ok(pid_t pid, const char *what)
{
    int rc = stop(pid);
    cr_assert_eq(rc, 0, "%s exited with %d%s", what, rc, tails());
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t l = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static char *run_out(char *const argv[], const char *in, int *rc)
{
    char *out, *err;
    *rc = tu_run(argv, in, &out, &err);
    if (*rc) fprintf(stderr, "%s: exit %d: %s\n", argv[0], *rc, err);
    free(err);
    return out;
}

static void cluster_create(const char *nodes)
{
    char *argv[] = {(char *)tu_bin("inectl"), "--data-dir", dd, "cluster", "create", "name", "alerts", "nodes", (char *)nodes,
                    "username", "admin", "password", "pw", NULL};
    int rc;
    free(run_out(argv, NULL, &rc));
    cr_assert_eq(rc, 0);
}

static pid_t start_ca(const char *offset)
{
    char *argv[] = {(char *)tu_bin("ine-ca"), "--data-dir", dd, "--ca-key-bits", "2048", "--check-interval", "1", NULL};
    return spawn("ca.log", offset, argv);
}

static pid_t start_alerting(const char *offset, int metrics_port, const char *webhook)
{
    char port[16];
    char *argv[] = {(char *)tu_bin("ine-alerting"), "--data-dir", dd, "--check-interval", "1", "--metrics-addr", "127.0.0.1",
                    "--metrics-port", port, webhook ? "--webhook" : NULL, (char *)webhook, "--webhook-backoff-max", "1", NULL};
    snprintf(port, sizeof port, "%d", metrics_port);
    return spawn("alerting.log", offset, argv);
}

/* ---- the log, as the test sees it ------------------------------------------------------- */

static evlog_t *open_log(int rw)
{
    char *p = tu_path(dd, "log");
    evlog_t *log = NULL;
    evlog_opts o = {.read_only = !rw};
    cr_assert_eq(evlog_open(p, &o, &log), INE_OK, "%s", ine_err_msg());
    free(p);
    return log;
}

static void state(proj_state *st)
{
    evlog_t *log = open_log(0);
    cr_assert_eq(proj_build(log, 0, st), INE_OK, "%s", ine_err_msg());
    evlog_close(log);
}

static uint64_t last_seq(void)
{
    evlog_t *log = open_log(0);
    uint64_t s;
    cr_assert_eq(evlog_last_seq(log, &s), INE_OK);
    evlog_close(log);
    return s;
}

static uint64_t append(evlog_event *ev)
{
    evlog_t *log = open_log(1);
    uint64_t seq = 0;
    cr_assert_eq(evlog_append_one(log, ev, NULL, &seq), INE_OK, "%s", ine_err_msg());
    evlog_close(log);
    tu_event_free(ev);
    return seq;
}

static evlog_event *new_event(int body_case, void *body)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    ine__v1__event__init(ev);
    ev->producer = strdup("test");
    ev->actor = strdup("tester");
    ev->body_case = body_case;
    ev->cluster_created = body;
    return ev;
}

/* What each node's transport would report: it now serves its current certificates. */
static void activate(uint32_t only_node, int only_plane)
{
    proj_state st;
    state(&st);
    for (size_t i = 0; i < st.n_certs; i++) {
        Ine__V1__CertificateActivated *b;
        if ((only_node && st.certs[i].node_uid != only_node) || (only_plane && st.certs[i].plane != only_plane)) continue;
        b = calloc(1, sizeof *b);
        ine__v1__certificate_activated__init(b);
        b->node_uid = st.certs[i].node_uid;
        b->plane = st.certs[i].plane;
        b->fingerprint_sha256 = strdup(st.certs[i].cert.fingerprint);
        b->serial_hex = strdup(st.certs[i].cert.serial_hex);
        append(new_event(INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED, b));
    }
    proj_free(&st);
}

static void set_alert(const char *name, int enabled)
{
    Ine__V1__AlertSettingsChanged *b = calloc(1, sizeof *b);
    Ine__V1__AlertSetting *s = calloc(1, sizeof *s);
    ine__v1__alert_settings_changed__init(b);
    ine__v1__alert_setting__init(s);
    s->name = strdup(name);
    s->enabled_opt_case = INE__V1__ALERT_SETTING__ENABLED_OPT_ENABLED;
    s->enabled = enabled;
    b->settings = calloc(1, sizeof *b->settings);
    b->settings[0] = s;
    b->n_settings = 1;
    append(new_event(INE__V1__EVENT__BODY_ALERT_SETTINGS_CHANGED, b));
}

/* As ine-ca records it when a customer certificate nears expiry. */
static uint64_t fallback(int plane, const char *customer_fp)
{
    Ine__V1__CustomerExpiryFallback *b = calloc(1, sizeof *b);
    ine__v1__customer_expiry_fallback__init(b);
    b->plane = plane;
    b->customer_fingerprint_sha256 = strdup(customer_fp);
    b->customer_not_after = ine_clock_now() + 4 * INE_SEC_PER_DAY;
    b->rotation_id = strdup("fallback-test");
    return append(new_event(INE__V1__EVENT__BODY_CUSTOMER_EXPIRY_FALLBACK, b));
}

/* A customer upload as the projection folds it (nothing checks the certificate there). */
static uint64_t customer_upload(int plane, const char *fp)
{
    Ine__V1__CustomerCertificateUploaded *b = calloc(1, sizeof *b);
    Ine__V1__CertInfo *c = calloc(1, sizeof *c);
    ine__v1__customer_certificate_uploaded__init(b);
    ine__v1__cert_info__init(c);
    c->cert_pem = strdup("");
    c->serial_hex = strdup("c0ffee");
    c->fingerprint_sha256 = strdup(fp);
    c->subject = strdup("CN=customer");
    c->issuer = strdup("CN=customer-ca");
    c->root_fingerprint_sha256 = strdup("customer-root");
    c->not_before = ine_clock_now() - 60;
    c->not_after = ine_clock_now() + 365 * INE_SEC_PER_DAY;
    b->cert = c;
    b->planes = calloc(1, sizeof *b->planes);
    b->planes[0] = plane;
    b->n_planes = 1;
    b->root_pem = strdup("");
    return append(new_event(INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED, b));
}

/* Alert events in the log. */
typedef struct {
    uint64_t seq;
    int raised;
    char id[128], name[96], reason[128], value[32], threshold[32], desc[512], producer[32];
    int severity;
} t_alev;

typedef struct {
    t_alev *v;
    size_t n;
} t_alevs;

static int scan_one(const evlog_record *rec, void *ud)
{
    t_alevs *l = ud;
    t_alev *e;
    if (rec->ev->body_case != INE__V1__EVENT__BODY_ALERT_RAISED && rec->ev->body_case != INE__V1__EVENT__BODY_ALERT_CLEARED) return 0;
    l->v = realloc(l->v, (l->n + 1) * sizeof *l->v);
    e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    e->seq = rec->seq;
    snprintf(e->producer, sizeof e->producer, "%s", rec->ev->producer);
    if (rec->ev->body_case == INE__V1__EVENT__BODY_ALERT_RAISED) {
        const Ine__V1__AlertRaised *r = rec->ev->alert_raised;
        e->raised = 1;
        snprintf(e->id, sizeof e->id, "%s", r->alert_id);
        snprintf(e->name, sizeof e->name, "%s", r->name);
        snprintf(e->value, sizeof e->value, "%s", r->change_value);
        snprintf(e->threshold, sizeof e->threshold, "%s", r->threshold);
        snprintf(e->desc, sizeof e->desc, "%s", r->description);
        e->severity = r->severity;
    } else {
        snprintf(e->id, sizeof e->id, "%s", rec->ev->alert_cleared->alert_id);
        snprintf(e->reason, sizeof e->reason, "%s", rec->ev->alert_cleared->reason);
    }
    return 0;
}

static t_alevs scan(void)
{
    t_alevs l = {0};
    evlog_t *log = open_log(0);
    cr_assert_eq(evlog_iterate(log, 1, 0, 0, scan_one, &l), INE_OK, "%s", ine_err_msg());
    evlog_close(log);
    return l;
}

static size_t count(const t_alevs *l, int raised, const char *id_prefix)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) n += l->v[i].raised == raised && !strncmp(l->v[i].id, id_prefix, strlen(id_prefix));
    return n;
}

static size_t active(const char *id_prefix)
{
    proj_state st;
    size_t n = 0;
    state(&st);
    for (size_t i = 0; i < st.n_alerts; i++) n += !strncmp(st.alerts[i].alert_id, id_prefix, strlen(id_prefix));
    proj_free(&st);
    return n;
}

/* ---- waiting ----------------------------------------------------------------------------- */

typedef int (*t_cond)(const void *ud);

static int wait_for(t_cond c, const void *ud)
{
    int64_t end = ine_clock_mono_ms() + WAIT_MS;
    while (ine_clock_mono_ms() < end) {
        if (c(ud)) return 1;
        usleep(100 * 1000);
    }
    return c(ud);
}

typedef struct {
    const char *prefix;
    size_t n;
} t_want;

static int c_active(const void *ud)
{
    const t_want *w = ud;
    return active(w->prefix) == w->n;
}

static int c_certs(const void *ud)
{
    proj_state st;
    int ok;
    state(&st);
    ok = st.ca.present && st.n_certs == *(const size_t *)ud;
    proj_free(&st);
    return ok;
}

static void wait_certs(size_t n)
{
    cr_assert(wait_for(c_certs, &n), "ine-ca did not issue %zu certificates%s", n, tails());
}

static void wait_active(const char *prefix, size_t n)
{
    t_want w = {prefix, n};
    cr_assert(wait_for(c_active, &w), "expected %zu active alerts %s*, have %zu%s", n, prefix, active(prefix), tails());
}

/* ---- scraping ---------------------------------------------------------------------------- */

static char *scrape(int port)
{
    char url[64], *out, *err;
    char *argv[] = {"/usr/bin/curl", "-s", "--noproxy", "*", "--max-time", "10", url, NULL};
    int rc;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    rc = tu_run(argv, NULL, &out, &err);
    free(err);
    if (rc != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* The value of one series ("name" or "name{labels}") in a scrape; -1 if absent. */
static double metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
    return -1;
}

typedef struct {
    int port;
    uint64_t seq;
} t_eval_at;

static int c_evaluated(const void *ud)
{
    const t_eval_at *e = ud;
    char *m = scrape(e->port);
    int ok = m && metric(m, "ine_alerting_evaluated_seq") >= (double)e->seq;
    free(m);
    return ok;
}

/* Until the service says it judged the log up to (at least) its current end. */
static void wait_evaluated(int port)
{
    t_eval_at e = {port, last_seq()};
    cr_assert(wait_for(c_evaluated, &e), "ine-alerting did not evaluate seq %llu%s", (unsigned long long)e.seq, tails());
}

/* ---- tests ------------------------------------------------------------------------------- */

/* Node certificates live 90 days: 44 days on the clock leave 46 (no alert), 46 leave 44. */
Test(alerting, expiry_alert_by_moved_clock_raised_once_cleared_on_replacement)
{
    int port = free_port();
    pid_t ca, al;
    t_alevs l;
    proj_state st;
    char *text;

    cluster_create("127.0.0.1,127.0.0.2");
    ca = start_ca(NULL);
    wait_certs(4);
    stop_ok(ca, "ine-ca");
    activate(0, 0);
    /* The CA stays down past day 30 here; overdue rotation is the next test's story. */
    set_alert("node_cert_rotation_overdue", 0);

    al = start_alerting("+44d", port, NULL);
    wait_evaluated(port);
    stop_ok(al, "ine-alerting");
    l = scan();
    cr_assert_eq(l.n, 0, "46 days left: no alert at all, got %s", l.n ? l.v[0].id : "");
    free(l.v);

    al = start_alerting("+46d", port, NULL);
    wait_active(NODE_EXPIRY, 4);
    wait_evaluated(port);
    l = scan();
    cr_assert_eq(l.n, 4, "one alert per certificate and nothing else");
    state(&st);
    for (size_t i = 0; i < st.n_certs; i++) {
        char id[128];
        snprintf(id, sizeof id, NODE_EXPIRY "/%u/%s", st.certs[i].node_uid, st.certs[i].plane == CP ? "cp" : "dp");
        cr_assert_eq(count(&l, 1, id), 1, "%s raised once", id);
        for (size_t k = 0; k < l.n; k++) {
            if (strcmp(l.v[k].id, id)) continue;
            cr_assert(!strcmp(l.v[k].value, "43") || !strcmp(l.v[k].value, "44"), "days left %s", l.v[k].value);
            cr_assert_str_eq(l.v[k].threshold, "45");
            cr_assert_str_eq(l.v[k].producer, "ine-alerting");
            cr_assert_eq(l.v[k].severity, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING);
            cr_assert(strstr(l.v[k].desc, st.certs[i].cert.serial_hex), "names the certificate: %s", l.v[k].desc);
        }
    }
    proj_free(&st);
    free(l.v);

    /* Restart: the state comes back from the log, nothing is raised twice. */
    stop_ok(al, "ine-alerting");
    al = start_alerting("+46d", port, NULL);
    wait_evaluated(port);
    l = scan();
    cr_assert_eq(l.n, 4, "no duplicate after a restart");
    free(l.v);

    /* The CA comes back on day 46: it rotates (age > 30 days), the alerts clear. */
    ca = start_ca("+46d");
    wait_active(NODE_EXPIRY, 0);
    wait_evaluated(port);
    stop_ok(ca, "ine-ca");
    stop_ok(al, "ine-alerting");
    l = scan();
    cr_assert_eq(count(&l, 0, NODE_EXPIRY), 4);
    cr_assert_eq(count(&l, 1, NODE_EXPIRY), 4, "the new certificates raise nothing");
    for (size_t k = 0; k < l.n; k++)
        if (!l.v[k].raised) cr_assert_str_eq(l.v[k].reason, "certificate replaced", "%s", l.v[k].id);
    free(l.v);

    text = read_log("alerting.log");
    cr_assert(strstr(text, "raised " NODE_EXPIRY "/1/cp (warning)"), "a line per raise:\n%s", text);
    cr_assert(strstr(text, "cleared " NODE_EXPIRY "/2/dp: certificate replaced"), "a line per clear:\n%s", text);
    free(text);
}

Test(alerting, overdue_rotation_raised_while_the_ca_is_down_cleared_when_it_rotates)
{
    int port = free_port();
    pid_t ca, al;
    t_alevs l;

    cluster_create("127.0.0.1");
    ca = start_ca(NULL);
    wait_certs(2);
    stop_ok(ca, "ine-ca");
    activate(0, 0);

    al = start_alerting("+31d", port, NULL);
    wait_active("node_cert_rotation_overdue/1/", 2);
    wait_evaluated(port);
    l = scan();
    cr_assert_eq(l.n, 2, "59 days left: overdue rotation only");
    for (size_t k = 0; k < l.n; k++)
        cr_assert(strstr(l.v[k].desc, "is 31 days old and was due for rotation at 30 days"), "%s", l.v[k].desc);
    free(l.v);

    ca = start_ca("+31d");
    wait_active("node_cert_rotation_overdue", 0);
    stop_ok(ca, "ine-ca");
    stop_ok(al, "ine-alerting");
    l = scan();
    cr_assert_eq(count(&l, 0, "node_cert_rotation_overdue/1/"), 2);
    for (size_t k = 0; k < l.n; k++)
        if (!l.v[k].raised) cr_assert_str_eq(l.v[k].reason, "certificate replaced");
    free(l.v);
}

Test(alerting, node_that_does_not_activate_is_named_until_it_does)
{
    int port = free_port();
    pid_t ca, al;
    t_alevs l;

    cluster_create("127.0.0.1,127.0.0.2");
    ca = start_ca(NULL);
    wait_certs(4);
    stop_ok(ca, "ine-ca");
    activate(1, 0); /* node 1 serves its certificates; node 2 never reports */

    al = start_alerting("+20m", port, NULL);
    wait_active("node_cert_not_activated/2/", 2);
    wait_evaluated(port);
    cr_assert_eq(active("node_cert_not_activated/1/"), 0);
    l = scan();
    cr_assert_eq(l.n, 2);
    cr_assert(strstr(l.v[0].desc, "node 2 has not activated its"), "%s", l.v[0].desc);
    free(l.v);

    activate(2, CP);
    wait_active("node_cert_not_activated/2/cp", 0);
    wait_evaluated(port);
    cr_assert_eq(active("node_cert_not_activated/2/dp"), 1, "the data plane still waits");
    stop_ok(al, "ine-alerting");
    l = scan();
    cr_assert_eq(count(&l, 0, "node_cert_not_activated/2/cp"), 1);
    cr_assert_str_eq(l.v[l.n - 1].reason, "certificate activated");
    free(l.v);
}

static json_t *rest(int port, const char *method, const char *path, const char *body, long *status)
{
    char url[128], *out, *nl;
    char *argv[] = {"/usr/bin/curl", "-sk", "--noproxy", "*", "--max-time", "30", "-u", "admin:pw", "-X", (char *)method, "-H",
                    "Content-Type: application/json", "-w", "\n%{http_code}", url, body ? "-d" : NULL, (char *)body, NULL};
    json_t *j;
    int rc;
    snprintf(url, sizeof url, "https://127.0.0.1:%d%s", port, path);
    out = run_out(argv, NULL, &rc);
    cr_assert_eq(rc, 0, "curl %s %s%s", method, path, tails());
    nl = strrchr(out, '\n');
    cr_assert_not_null(nl);
    *status = strtol(nl + 1, NULL, 10);
    *nl = 0;
    j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s%s", out, tails());
    free(out);
    return j;
}

static int inectl(char **err, ...)
{
    char *argv[32], *out;
    int i = 0, rc;
    va_list ap;
    argv[i++] = (char *)tu_bin("inectl");
    argv[i++] = "--data-dir";
    argv[i++] = dd;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && i < 31;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    rc = tu_run(argv, NULL, &out, err);
    free(out);
    return rc;
}

static const char *jstr(json_t *o, const char *path1, const char *path2, const char *k)
{
    json_t *v = json_object_get(o, path1);
    if (path2) v = json_object_get(v, path2);
    return json_string_value(json_object_get(v, k));
}

Test(alerting, settings_at_run_time_through_rest_and_inectl_with_redis_enterprise_shapes)
{
    int mport = free_port(), rport = free_port();
    char rp[16], *err;
    long status;
    pid_t ca, po, al;
    json_t *j;
    t_alevs l;
    uint64_t before;

    cluster_create("127.0.0.1,127.0.0.2");
    ca = start_ca(NULL);
    wait_certs(4);
    activate(0, 0);
    snprintf(rp, sizeof rp, "%d", rport);
    {
        char *argv[] = {(char *)tu_bin("ine-policy"), "--data-dir", dd, "--rest-addr", "127.0.0.1", "--rest-port", rp, NULL};
        po = spawn("policy.log", NULL, argv);
    }
    al = start_alerting(NULL, mport, NULL);
    wait_evaluated(mport);
    cr_assert_eq(active(""), 0);

    /* REST: the cluster CA's threshold above its 10 years: the alert must fire. */
    for (int i = 0; i < 600; i++) { /* until ine-policy listens */
        char *m, *argv[] = {"/usr/bin/curl", "-sk", "--noproxy", "*", "-o", "/dev/null", "-u", "admin:pw", NULL, NULL};
        char url[64];
        int rc;
        snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/cluster", rport);
        argv[8] = url;
        m = run_out(argv, NULL, &rc);
        free(m);
        if (rc == 0) break;
        usleep(100 * 1000);
    }
    j = rest(rport, "PUT", "/v1/cluster", "{\"alert_settings\": {\"cluster_certs_about_to_expire\": {\"enabled\": true, \"threshold\": \"4000\"}}}",
             &status);
    cr_assert_eq(status, 200, "%s", json_dumps(j, 0));
    cr_assert_str_eq(jstr(j, "alert_settings", "cluster_certs_about_to_expire", "threshold"), "4000");
    json_decref(j);
    wait_active("cluster_certs_about_to_expire", 1);
    j = rest(rport, "GET", "/v1/cluster/alerts", NULL, &status);
    cr_assert_eq(status, 200);
    {
        json_t *a = json_object_get(j, "cluster_certs_about_to_expire");
        cr_assert(json_is_true(json_object_get(a, "state")));
        cr_assert(json_is_true(json_object_get(a, "enabled")));
        cr_assert_str_eq(json_string_value(json_object_get(a, "severity")), "WARNING");
        cr_assert_str_eq(json_string_value(json_object_get(a, "threshold")), "4000");
        cr_assert(json_is_string(json_object_get(a, "change_time")));
        cr_assert_str_eq(jstr(a, "change_value", NULL, "threshold"), "4000");
        cr_assert_geq(atoi(jstr(a, "change_value", NULL, "value")), 3650, "about ten years left");
        cr_assert(json_is_false(json_object_get(json_object_get(j, "customer_cert_expiry_fallback"), "state")));
    }
    json_decref(j);

    /* inectl: back to 45 days; the alert clears. */
    cr_assert_eq(inectl(&err, "tune", "cluster", "alert", "cluster_certs_about_to_expire", "threshold", "45", NULL), 0, "%s", err);
    free(err);
    wait_active("cluster_certs_about_to_expire", 0);
    j = rest(rport, "GET", "/v1/cluster/alerts", NULL, &status);
    cr_assert(json_is_false(json_object_get(json_object_get(j, "cluster_certs_about_to_expire"), "state")));
    cr_assert(json_is_null(json_object_get(json_object_get(j, "cluster_certs_about_to_expire"), "change_time")));
    json_decref(j);

    /* Node alerts, per node, in GET /v1/nodes/alerts. */
    cr_assert_eq(inectl(&err, "tune", "cluster", "alert", NODE_EXPIRY, "enabled", "true", "threshold", "100", NULL), 0, "%s", err);
    free(err);
    wait_active(NODE_EXPIRY, 4);
    j = rest(rport, "GET", "/v1/nodes/alerts", NULL, &status);
    cr_assert_eq(status, 200);
    for (const char *n = "1"; n; n = !strcmp(n, "1") ? "2" : NULL) {
        json_t *a = json_object_get(json_object_get(j, n), NODE_EXPIRY);
        cr_assert(json_is_true(json_object_get(a, "state")), "node %s: %s", n, json_dumps(j, 0));
        cr_assert_str_eq(json_string_value(json_object_get(a, "threshold")), "100");
        cr_assert_eq(json_array_size(json_object_get(a, "planes")), 2);
        cr_assert(json_is_false(json_object_get(json_object_get(json_object_get(j, n), "node_cert_not_activated"), "state")));
    }
    json_decref(j);
    j = rest(rport, "GET", "/v1/nodes/2/alerts", NULL, &status);
    cr_assert_eq(status, 200);
    cr_assert(json_is_true(json_object_get(json_object_get(j, NODE_EXPIRY), "state")));
    json_decref(j);
    j = rest(rport, "GET", "/v1/nodes/9/alerts", NULL, &status);
    cr_assert_eq(status, 404);
    json_decref(j);

    /* Disabling clears, with that reason. */
    cr_assert_eq(inectl(&err, "tune", "cluster", "alert", NODE_EXPIRY, "enabled", "false", NULL), 0, "%s", err);
    free(err);
    wait_active(NODE_EXPIRY, 0);
    l = scan();
    cr_assert_eq(count(&l, 0, NODE_EXPIRY), 4);
    for (size_t k = 0; k < l.n; k++)
        if (!l.v[k].raised && !strncmp(l.v[k].id, NODE_EXPIRY, strlen(NODE_EXPIRY))) cr_assert_str_eq(l.v[k].reason, "alert disabled");
    free(l.v);

    /* Refusals change nothing and say why. */
    before = last_seq();
    j = rest(rport, "PUT", "/v1/cluster", "{\"alert_settings\": {\"no_such_alert\": {\"enabled\": true}}}", &status);
    cr_assert_eq(status, 400);
    cr_assert(strstr(json_string_value(json_object_get(j, "description")), "unknown alert 'no_such_alert'"));
    json_decref(j);
    j = rest(rport, "PUT", "/v1/cluster", "{\"alert_settings\": {\"cluster_certs_about_to_expire\": {\"threshold\": \"soon\"}}}", &status);
    cr_assert_eq(status, 400);
    cr_assert(strstr(json_string_value(json_object_get(j, "description")), "not a whole number of days"));
    json_decref(j);
    j = rest(rport, "PUT", "/v1/cluster", "{\"alert_settings\": {\"cluster_certs_about_to_expire\": {\"colour\": 1}}}", &status);
    cr_assert_eq(status, 400);
    cr_assert_str_eq(json_string_value(json_object_get(j, "error_code")), "unknown_field");
    json_decref(j);
    j = rest(rport, "PUT", "/v1/cluster", "{\"name\": \"x\"}", &status);
    cr_assert_eq(status, 400);
    json_decref(j);
    cr_assert_eq(inectl(&err, "tune", "cluster", "alert", "cluster_certs_about_to_expire", "threshold", "0", NULL), 2);
    cr_assert(strstr(err, "out of range: 1 to 36500 days"), "%s", err);
    cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
    free(err);
    cr_assert_eq(inectl(&err, "tune", "cluster", "alert", "cluster_certs_about_to_expire", "enabled", "maybe", NULL), 2);
    free(err);
    cr_assert_eq(last_seq(), before, "a refused change writes nothing");

    {
        char *argv[] = {(char *)tu_bin("inectl"), "--data-dir", dd, "status", "alerts", NULL};
        int rc;
        char *out = run_out(argv, NULL, &rc);
        cr_assert_eq(rc, 0);
        cr_assert(strstr(out, NODE_EXPIRY "   no       warning   100 days"), "%s", out);
        cr_assert(strstr(out, "ACTIVE ALERTS: none"), "%s", out);
        free(out);
    }
    stop_ok(al, "ine-alerting");
    stop_ok(po, "ine-policy");
    stop_ok(ca, "ine-ca");
}

Test(alerting, metrics_pass_promtool_and_show_certificates_alerts_and_the_log)
{
    int port = free_port();
    pid_t ca, al, second;
    char *m, series[256], *out, *err;
    proj_state st;
    int rc;

    cluster_create("127.0.0.1,127.0.0.2");
    ca = start_ca(NULL);
    wait_certs(4);
    stop_ok(ca, "ine-ca");
    activate(1, CP);
    al = start_alerting(NULL, port, NULL);
    wait_evaluated(port);
    m = scrape(port);
    cr_assert_not_null(m);
    {
        char *argv[] = {"/usr/bin/promtool", "check", "metrics", NULL};
        cr_assert_eq(access(argv[0], X_OK), 0, "promtool is installed by scripts/install-deps.sh (Debian's prometheus)");
        rc = tu_run(argv, m, &out, &err);
        cr_assert_eq(rc, 0, "promtool check metrics:\n%s%s\n--- scrape ---\n%s", out, err, m);
        free(out);
        free(err);
    }
    state(&st);
    for (size_t i = 0; i < st.n_certs; i++) {
        double left;
        snprintf(series, sizeof series, "node_cert_expiration_seconds{node=\"%u\",plane=\"%s\",source=\"self_signed\"}",
                 st.certs[i].node_uid, proj_plane_name(st.certs[i].plane));
        left = metric(m, series);
        cr_assert(left > 89 * 86400.0 && left <= 90 * 86400.0, "%s = %f", series, left);
    }
    snprintf(series, sizeof series, "node_cert_activated_info{node=\"1\",plane=\"control\",serial=\"%s\",current=\"true\"}",
             proj_cert_find(&st, 1, CP)->cert.serial_hex);
    cr_assert_eq(metric(m, series), 1, "%s in\n%s", series, m);
    cr_assert_null(strstr(m, "node_cert_activated_info{node=\"2\""), "node 2 reported nothing");
    cr_assert_gt(metric(m, "cluster_ca_cert_expiration_seconds"), 3649 * 86400.0);
    cr_assert_eq(metric(m, "ine_log_last_seq"), (double)last_seq());
    cr_assert_eq(metric(m, "ine_alerts_active{name=\"" NODE_EXPIRY "\",severity=\"warning\"}"), 0);
    proj_free(&st);
    free(m);

    /* One instance per data directory. */
    {
        char p2[16], *argv[] = {(char *)tu_bin("ine-alerting"), "--data-dir", dd, "--metrics-port", p2, NULL};
        char *text;
        snprintf(p2, sizeof p2, "%d", free_port());
        second = spawn("second.log", NULL, argv);
        cr_assert_eq(reap(second, 0), 1, "the second instance refuses to start");
        text = read_log("second.log");
        cr_assert(strstr(text, "another ine-alerting is running"), "%s", text);
        free(text);
    }
    stop_ok(al, "ine-alerting");
}

typedef struct {
    int n;
} t_count;

static int c_received(const void *ud) { return received() >= ((const t_count *)ud)->n; }

static json_t *posted(int i)
{
    json_t *j;
    pthread_mutex_lock(&rcv.mu);
    j = json_loads(rcv.bodies[i], 0, NULL);
    pthread_mutex_unlock(&rcv.mu);
    cr_assert_not_null(j, "body %d is not JSON", i);
    return j;
}

typedef struct {
    int port;
    double failures;
} t_fail;

static int c_failures(const void *ud)
{
    const t_fail *f = ud;
    char *m = scrape(f->port);
    int ok = m && metric(m, "ine_alerting_webhook_failures_total") >= f->failures;
    free(m);
    return ok;
}

Test(alerting, webhook_gets_every_raise_and_clear_even_when_it_was_down)
{
    int port = free_port(), hport = free_port();
    char url[64], *m, *out, *err;
    pid_t al;
    uint64_t s1, s2, s3;
    t_count want;
    t_fail f = {port, 2};
    json_t *j;

    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", hport);
    cluster_create("127.0.0.1");
    al = start_alerting(NULL, port, url);
    wait_evaluated(port);

    /* The receiver is down: alerts are still raised, the loop goes on, posts wait. */
    s1 = fallback(DP, "cust-dp");
    wait_active("customer_cert_expiry_fallback/dp", 1);
    s2 = fallback(CP, "cust-cp");
    wait_active("customer_cert_expiry_fallback/cp", 1);
    cr_assert(wait_for(c_failures, &f), "posts to a closed port fail and are retried");
    m = scrape(port);
    cr_assert_eq(metric(m, "ine_alerting_webhook_pending"), 2, "%s", m);
    {
        char *argv[] = {"/usr/bin/promtool", "check", "metrics", NULL};
        cr_assert_eq(tu_run(argv, m, &out, &err), 0, "%s%s", out, err);
        free(out);
        free(err);
    }
    free(m);

    /* It comes up: both arrive, in order, thanks to the retries. */
    receiver_start(hport);
    want.n = 2;
    cr_assert(wait_for(c_received, &want), "the webhook got %d posts", received());
    j = posted(0);
    cr_assert_str_eq(json_string_value(json_object_get(j, "event")), "alert_raised");
    cr_assert_str_eq(json_string_value(json_object_get(j, "alert_id")), "customer_cert_expiry_fallback/dp");
    cr_assert_str_eq(json_string_value(json_object_get(j, "severity")), "INFO");
    cr_assert(json_is_true(json_object_get(j, "state")));
    cr_assert_eq(json_integer_value(json_object_get(j, "seq")), (json_int_t)s1 + 1, "the raise follows the fallback");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "cluster"), "name")), "alerts");
    json_decref(j);
    j = posted(1);
    cr_assert_str_eq(json_string_value(json_object_get(j, "alert_id")), "customer_cert_expiry_fallback/cp");
    cr_assert_gt(json_integer_value(json_object_get(j, "seq")), (json_int_t)s2);
    json_decref(j);

    /* A clear is posted too. */
    customer_upload(DP, "cust-dp-2");
    want.n = 3;
    cr_assert(wait_for(c_received, &want), "the webhook got %d posts", received());
    j = posted(2);
    cr_assert_str_eq(json_string_value(json_object_get(j, "event")), "alert_cleared");
    cr_assert_str_eq(json_string_value(json_object_get(j, "alert_id")), "customer_cert_expiry_fallback/dp");
    cr_assert(json_is_false(json_object_get(j, "state")));
    cr_assert_str_eq(json_string_value(json_object_get(j, "reason")), "customer certificate uploaded");
    json_decref(j);

    /* Restart: nothing delivered is posted again; a new episode of the same alert is. */
    stop_ok(al, "ine-alerting");
    al = start_alerting(NULL, port, url);
    s3 = fallback(DP, "cust-dp-2");
    want.n = 4;
    cr_assert(wait_for(c_received, &want), "the webhook got %d posts", received());
    j = posted(3);
    cr_assert_str_eq(json_string_value(json_object_get(j, "event")), "alert_raised");
    cr_assert_str_eq(json_string_value(json_object_get(j, "alert_id")), "customer_cert_expiry_fallback/dp");
    cr_assert_gt(json_integer_value(json_object_get(j, "seq")), (json_int_t)s3);
    json_decref(j);
    wait_evaluated(port);
    cr_assert_eq(received(), 4, "posts are not repeated");
    stop_ok(al, "ine-alerting");
}
