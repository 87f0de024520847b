/* etcdfix.c — see etcdfix.h. Owns the etcd member processes a test starts: their flags, ports,
 * data dirs and logs, the readiness probe, and reaping them. */
#include "etcdfix.h"
#include "svc.h"
#include "testutil.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EF__BIN "/usr/bin/etcd"
#define EF__START_TRIES 3

static char ef__msg[4096];

const char *ef_why(void) { return ef__msg; }

static int ef__fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int ef__fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ef__msg, sizeof ef__msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int64_t ef__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ef__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

typedef struct {
    char *data;
    size_t len;
} ef__buf;

static size_t ef__write(char *p, size_t size, size_t nmemb, void *ud)
{
    ef__buf *b = ud;
    size_t n = size * nmemb;
    char *d = realloc(b->data, b->len + n + 1);
    if (!d) return 0;
    memcpy(d + b->len, p, n);
    b->data = d;
    b->len += n;
    d[b->len] = 0;
    return n;
}

int ef_post(const char *endpoint, const char *path, const char *body, int timeout_ms, long *status, char **reply)
{
    char url[512];
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    ef__buf b = {0};
    CURLcode cc;
    *status = 0;
    if (reply) *reply = NULL;
    if (!c) return ef__fail("curl_easy_init failed");
    snprintf(url, sizeof url, "%s%s", endpoint, path);
    h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ef__write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    cc = curl_easy_perform(c);
    if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        free(b.data);
        return ef__fail("POST %s: %s", url, curl_easy_strerror(cc));
    }
    if (reply)
        *reply = b.data ? b.data : strdup("");
    else
        free(b.data);
    return 0;
}

const char *ef_endpoints(const ef_cluster *c) { return c->endpoints; }

const char *ef_endpoint(const ef_cluster *c, int i) { return c->m[i].url; }

const char *ef_tail(const ef_cluster *c, int i)
{
    return i >= 0 && i < c->n && c->m[i].log ? svc_tail(c->m[i].log) : "(no such member)";
}

static pid_t ef__spawn(const ef_cluster *c, int i)
{
    const ef_member *m = &c->m[i];
    char listen_client[64], listen_peer[64];
    const char *bin = getenv("INE_ETCD_BIN") ? getenv("INE_ETCD_BIN") : EF__BIN;
    snprintf(listen_client, sizeof listen_client, "http://127.0.0.1:%d", m->client_port);
    snprintf(listen_peer, sizeof listen_peer, "http://127.0.0.1:%d", m->peer_port);
    char *argv[] = {(char *)bin,
                    "--name", (char *)m->name,
                    "--data-dir", m->data_dir,
                    "--listen-client-urls", listen_client,
                    "--advertise-client-urls", listen_client,
                    "--listen-peer-urls", listen_peer,
                    "--initial-advertise-peer-urls", listen_peer,
                    "--initial-cluster", c->initial_cluster,
                    "--initial-cluster-state", "new",
                    "--initial-cluster-token", (char *)c->token,
                    "--snapshot-count", "10000",
                    "--max-txn-ops", "4096",
                    "--enable-pprof=false",
                    "--logger", "zap",
                    "--log-outputs", "stderr",
                    NULL};
    pid_t pid = svc_spawn(argv, NULL, m->log);
    if (pid < 0) ef__fail("cannot start etcd %s: %s", m->name, svc_why());
    return pid;
}

/* 1: member i answered the range; 0: not yet (why in last); -1: it exited (why in ef_why()). */
static int ef__probe(const ef_cluster *c, int i, int serializable, char *last, size_t lastlen)
{
    const char *body = serializable ? "{\"key\":\"AA==\",\"serializable\":true}" : "{\"key\":\"AA==\"}";
    long status = 0;
    char *reply = NULL;
    int st = 0;
    if (c->m[i].pid <= 0 || !svc_running(c->m[i].pid, &st))
        return ef__fail("etcd %s exited (status %d) before it answered: %s", c->m[i].name, st, ef_tail(c, i));
    if (ef_post(c->m[i].url, "/v3/kv/range", body, 500, &status, &reply) == 0) {
        free(reply);
        if (status == 200) return 1;
        snprintf(last, lastlen, "%s: HTTP %ld", c->m[i].name, status);
    } else {
        snprintf(last, lastlen, "%s: %s", c->m[i].name, ef__msg);
    }
    return 0;
}

/* Wait until every member in [from, to) answers. */
static int ef__wait(const ef_cluster *c, int from, int to, int serializable, int timeout_ms)
{
    int64_t end = ef__now_ms() + timeout_ms;
    int ready[EF_MAX_MEMBERS] = {0};
    char last[512] = "no answer yet";
    for (;;) {
        int all = 1;
        for (int i = from; i < to; i++) {
            if (ready[i]) continue;
            /* Every member is checked for having exited, so a dead one ends the wait early. */
            if ((ready[i] = ef__probe(c, i, serializable, last, sizeof last)) < 0) return -1;
            all &= ready[i];
        }
        if (all) return 0;
        if (ef__now_ms() >= end) {
            int i = from;
            while (i < to - 1 && ready[i]) i++;
            return ef__fail("etcd did not answer a%s range within %d ms (last: %s); %s's log: %s",
                            serializable ? " serializable" : " linearizable", timeout_ms, last, c->m[i].name, ef_tail(c, i));
        }
        ef__sleep_ms(50);
    }
}

int ef_wait_ready(const ef_cluster *c, int i, int serializable, int timeout_ms)
{
    if (i < 0 || i >= c->n) return ef__fail("ef_wait_ready: no member %d", i);
    return ef__wait(c, i, i + 1, serializable, timeout_ms);
}

static void ef__kill_all(ef_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        if (c->m[i].pid > 0) {
            kill(c->m[i].pid, SIGKILL);
            waitpid(c->m[i].pid, NULL, 0);
            c->m[i].pid = 0;
        }
}

/* Fresh, distinct ports for every member, and the flags built from them. */
static int ef__layout(ef_cluster *c)
{
    int ports[2 * EF_MAX_MEMBERS];
    size_t off = 0, eoff = 0;
    for (int k = 0; k < 2 * c->n; k++) {
        int again;
        do {
            again = 0;
            if ((ports[k] = svc_free_port()) < 0) return ef__fail("no free port: %s", svc_why());
            for (int j = 0; j < k; j++) again |= ports[j] == ports[k];
        } while (again);
    }
    free(c->initial_cluster);
    if (!(c->initial_cluster = calloc(1, (size_t)c->n * 64))) return ef__fail("out of memory");
    for (int i = 0; i < c->n; i++) {
        ef_member *m = &c->m[i];
        m->client_port = ports[2 * i];
        m->peer_port = ports[2 * i + 1];
        snprintf(m->url, sizeof m->url, "http://127.0.0.1:%d", m->client_port);
        off += (size_t)snprintf(c->initial_cluster + off, (size_t)c->n * 64 - off, "%s%s=http://127.0.0.1:%d", i ? "," : "",
                                m->name, m->peer_port);
        eoff += (size_t)snprintf(c->endpoints + eoff, sizeof c->endpoints - eoff, "%s%s", i ? "," : "", m->url);
    }
    return 0;
}

/* 1 when a member that exited said its port was taken (another process got it in between). */
static int ef__port_lost(const ef_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        size_t len = 0;
        char *log;
        int st, lost;
        if (c->m[i].pid <= 0 || svc_running(c->m[i].pid, &st)) continue;
        if (!(log = tu_read_file(c->m[i].log, &len))) continue;
        lost = strstr(log, "address already in use") != NULL;
        free(log);
        if (lost) return 1;
    }
    return 0;
}

int ef_start(ef_cluster *c, const char *dir, int n, int timeout_ms)
{
    static int counter;
    int64_t end = ef__now_ms() + timeout_ms;
    memset(c, 0, sizeof *c);
    if (n < 1 || n > EF_MAX_MEMBERS) return ef__fail("ef_start: %d members (1..%d)", n, EF_MAX_MEMBERS);
    if (!(c->dir = strdup(dir))) return ef__fail("out of memory");
    c->n = n;
    for (int i = 0; i < n; i++) {
        char name[32];
        /* ine's naming: member "node<uid>" is node <uid>'s (lib/quorum.h). */
        snprintf(c->m[i].name, sizeof c->m[i].name, "node%d", i + 1);
        snprintf(name, sizeof name, "m%d.etcd", i + 1);
        c->m[i].data_dir = tu_path(dir, name);
        snprintf(name, sizeof name, "m%d.log", i + 1);
        c->m[i].log = tu_path(dir, name);
    }
    for (int attempt = 1;; attempt++) {
        int ok = 1;
        snprintf(c->token, sizeof c->token, "ef-%d-%ld-%d", (int)getpid(), (long)time(NULL), ++counter);
        if (ef__layout(c) < 0) return -1;
        for (int i = 0; i < n; i++) {
            char *cmd;
            /* A retry starts the cluster anew: no member may keep the last attempt's identity. */
            tu_rmrf(c->m[i].data_dir);
            if (asprintf(&cmd, "=== %s attempt %d\n", c->token, attempt) > 0) {
                tu_write_file(c->m[i].log, cmd, strlen(cmd));
                free(cmd);
            }
            if ((c->m[i].pid = ef__spawn(c, i)) < 0) {
                c->m[i].pid = 0;
                ef__kill_all(c);
                return -1;
            }
        }
        {
            int64_t left = end - ef__now_ms();
            if (ef__wait(c, 0, n, 0, left > 0 ? (int)left : 1) < 0) ok = 0;
        }
        if (ok) return 0;
        if (attempt < EF__START_TRIES && ef__port_lost(c) && ef__now_ms() < end) {
            ef__kill_all(c);
            continue;
        }
        ef__kill_all(c);
        return -1;
    }
}

int ef_kill(ef_cluster *c, int i)
{
    int st;
    if (i < 0 || i >= c->n) return ef__fail("ef_kill: no member %d", i);
    if (c->m[i].pid <= 0) return ef__fail("ef_kill: %s is not running", c->m[i].name);
    kill(c->m[i].pid, SIGKILL);
    if (waitpid(c->m[i].pid, &st, 0) != c->m[i].pid) return ef__fail("waitpid %s: %s", c->m[i].name, strerror(errno));
    c->m[i].pid = 0;
    return 0;
}

int ef_restart(ef_cluster *c, int i, int timeout_ms)
{
    if (i < 0 || i >= c->n) return ef__fail("ef_restart: no member %d", i);
    if (c->m[i].pid > 0) return ef__fail("ef_restart: %s still runs", c->m[i].name);
    if ((c->m[i].pid = ef__spawn(c, i)) < 0) {
        c->m[i].pid = 0;
        return -1;
    }
    return ef_wait_ready(c, i, 0, timeout_ms);
}

void ef_stop(ef_cluster *c)
{
    ef__kill_all(c);
    for (int i = 0; i < EF_MAX_MEMBERS; i++) {
        free(c->m[i].data_dir);
        free(c->m[i].log);
    }
    free(c->initial_cluster);
    free(c->dir);
    memset(c, 0, sizeof *c);
}
