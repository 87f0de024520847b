/* bench_enforce — enforcement on commit (issue #23): how long after a toggle of a database's
 * data_internode_encryption is committed its existing remote clients are closed by every node,
 * and how long after a certificate is committed every node serves it.
 *
 *   bench_enforce --data-dir D --db UID --via HOST:PORT [--via ...] [--count N]
 *       Per round: one client through each --via endpoint (a PING answered, so its stream is
 *       up), then the toggle committed through the front door as ine-policy commits it (with
 *       the log's hint); from the moment the commit returns, the time until each client's
 *       connection is closed. Rounds alternate off and on. p50/p99/max per endpoint and for
 *       the last one closed.
 *   bench_enforce --data-dir D --rotations
 *       From the log: for every CertificateIssued of a rotation, the time until the node's
 *       CertificateActivated for it (the transport serves it and says so): p50/p99/max, and
 *       per rotation until the last node served its certificates. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_stats.h"
#include "commit.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "follow.h"
#include "proj.h"

#define MAX_VIA 8

/* A client of the endpoint whose stream is up: connected, PING answered. -1 if not. */
static int client_open(const char *hp)
{
    char host[64], buf[64];
    const char *colon = strrchr(hp, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd;
    if (!colon || (size_t)(colon - hp) >= sizeof host) return -1;
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = 0;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || (fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) return -1;
    for (int tries = 0; connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0; tries++) {
        close(fd);
        if (tries > 100 || (fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) return -1;
        usleep(20000);
    }
    if (send(fd, "PING\r\n", 6, MSG_NOSIGNAL) != 6 || recv(fd, buf, sizeof buf, 0) <= 0 || strncmp(buf, "+PONG", 5)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int toggles(const char *dd, uint32_t db, const char **via, size_t n_via, size_t count)
{
    char p[DATADIR_MAX], run_dir[DATADIR_MAX];
    evlog_t *log = NULL;
    void *z = zmq_ctx_new();
    follow_pub *pub = NULL;
    commit_t *c = NULL;
    proj_state st;
    double *lat[MAX_VIA] = {0}, *worst = calloc(count, sizeof *worst);
    int on, rc = 1;

    proj_init(&st);
    if (!z || !worst || datadir_path(dd, "log", p, sizeof p) < 0 || datadir_path(dd, "run", run_dir, sizeof run_dir) < 0 ||
        evlog_open(p, NULL, &log) < 0 || follow_pub_open(z, run_dir, "bench_enforce", &pub) < 0)
        goto out;
    {
        commit_cfg cc = {.data_dir = dd, .producer = "bench_enforce", .log = log, .pub = pub, .zctx = z, .run_dir = run_dir};
        if (commit_open(&cc, &c) < 0) goto out;
    }
    if (proj_build(log, 0, &st) < 0) goto out;
    if (!proj_db_find(&st, db)) {
        ine_err(INE_ENOTFOUND, "no database %u in %s", db, dd);
        goto out;
    }
    on = proj_db_find(&st, db)->data_internode_encryption;
    for (size_t i = 0; i < n_via; i++)
        if (!(lat[i] = calloc(count, sizeof *lat[i]))) goto out;
    usleep(300 * 1000); /* the services find the new hint socket on their next rescan */
    for (size_t k = 0; k < count; k++) {
        int fds[MAX_VIA];
        Ine__V1__DataInternodeEncryptionChanged t = INE__V1__DATA_INTERNODE_ENCRYPTION_CHANGED__INIT;
        evlog_event ev = INE__V1__EVENT__INIT, *evs[1] = {&ev};
        commit_opts o = {.actor = "bench"};
        uint64_t seq;
        double t0;
        size_t left = n_via;
        /* A client opened while a node still applies the last toggle may be closed by it, as an
         * existing client: try again (what is timed is the next toggle). */
        for (size_t i = 0; i < n_via; i++) {
            for (int tries = 0; tries < 20 && (fds[i] = client_open(via[i])) < 0; tries++) usleep(10000);
            if (fds[i] < 0) {
                ine_err(INE_EIO, "round %zu: no answer through %s", k, via[i]);
                for (size_t j = 0; j < i; j++) close(fds[j]);
                goto out;
            }
        }
        t.db_uid = db;
        t.enabled = on = !on;
        ev.body_case = INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED;
        ev.data_internode_encryption_changed = &t;
        if (commit_append(c, evs, 1, &o, &seq) < 0) goto out;
        t0 = bench_now_ms();
        for (size_t i = 0; i < n_via; i++) lat[i][k] = -1;
        while (left) {
            struct pollfd pf[MAX_VIA];
            for (size_t i = 0; i < n_via; i++) pf[i] = (struct pollfd){lat[i][k] < 0 ? fds[i] : -1, POLLIN, 0};
            (void)poll(pf, n_via, 100);
            for (size_t i = 0; i < n_via; i++) {
                char b[64];
                if (lat[i][k] >= 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                if (recv(fds[i], b, sizeof b, MSG_DONTWAIT) > 0) continue; /* not ours to read: keep waiting */
                lat[i][k] = bench_now_ms() - t0;
                if (lat[i][k] > worst[k]) worst[k] = lat[i][k];
                left--;
            }
            if (left && bench_now_ms() - t0 > 10000) {
                ine_err(INE_EAGAIN, "round %zu: a client was still open 10 s after the toggle", k);
                goto out;
            }
        }
        for (size_t i = 0; i < n_via; i++) close(fds[i]);
    }
    for (size_t i = 0; i < n_via; i++) bench_report("toggle->closed", via[i], lat[i], count);
    bench_report("toggle->closed", "all", worst, count);
    rc = 0;
out:
    if (rc) fprintf(stderr, "bench_enforce: %s\n", ine_err_msg());
    for (size_t i = 0; i < n_via; i++) free(lat[i]);
    free(worst);
    proj_free(&st);
    commit_close(c);
    follow_pub_close(pub);
    evlog_close(log);
    if (z) zmq_ctx_term(z);
    return rc;
}

typedef struct {
    char fp[65];
    char rotation[64];
    int64_t issued_us;
} issued_t;

typedef struct {
    issued_t *iss;
    size_t n, cap;
    double *lat;
    size_t n_lat;
    char rot[256][64];
    double rot_max[256];
    size_t n_rot;
} rot_ctx;

static int rot_rec(const evlog_record *rec, void *ud)
{
    rot_ctx *x = ud;
    const evlog_event *ev = rec->ev;
    if (!ev) return 0;
    if (ev->body_case == INE__V1__EVENT__BODY_CERTIFICATE_ISSUED && ev->certificate_issued->cert &&
        ev->certificate_issued->rotation_id && *ev->certificate_issued->rotation_id) {
        if (x->n == x->cap) {
            x->cap = x->cap ? x->cap * 2 : 64;
            x->iss = realloc(x->iss, x->cap * sizeof *x->iss);
            x->lat = realloc(x->lat, x->cap * sizeof *x->lat);
        }
        snprintf(x->iss[x->n].fp, sizeof x->iss[x->n].fp, "%s", ev->certificate_issued->cert->fingerprint_sha256);
        snprintf(x->iss[x->n].rotation, sizeof x->iss[x->n].rotation, "%s", ev->certificate_issued->rotation_id);
        x->iss[x->n++].issued_us = ev->time_us;
    } else if (ev->body_case == INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED) {
        for (size_t i = 0; i < x->n; i++) {
            double d;
            size_t r;
            if (strcmp(x->iss[i].fp, ev->certificate_activated->fingerprint_sha256) || !x->iss[i].issued_us) continue;
            d = (double)(ev->time_us - x->iss[i].issued_us) / 1000.0;
            x->lat[x->n_lat++] = d;
            for (r = 0; r < x->n_rot && strcmp(x->rot[r], x->iss[i].rotation); r++) {
            }
            if (r == x->n_rot && r < 256) snprintf(x->rot[x->n_rot++], sizeof x->rot[0], "%s", x->iss[i].rotation);
            if (r < 256 && d > x->rot_max[r]) x->rot_max[r] = d;
            x->iss[i].issued_us = 0;
        }
    }
    return 0;
}

static int rotations(const char *dd)
{
    char p[DATADIR_MAX];
    evlog_t *log = NULL;
    evlog_opts lo = {.read_only = 1};
    rot_ctx x = {0};
    if (datadir_path(dd, "log", p, sizeof p) < 0 || evlog_open(p, &lo, &log) < 0 ||
        evlog_iterate(log, 1, 0, 0, rot_rec, &x) < 0) {
        fprintf(stderr, "bench_enforce: %s\n", ine_err_msg());
        evlog_close(log);
        return 1;
    }
    bench_report("issued->served", "each certificate", x.lat, x.n_lat);
    bench_report("issued->served", "rotation, last node", x.rot_max, x.n_rot);
    free(x.iss);
    free(x.lat);
    evlog_close(log);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"db", required_argument, 0, 'b'},
                                       {"via", required_argument, 0, 'v'},      {"count", required_argument, 0, 'n'},
                                       {"rotations", no_argument, 0, 'r'},      {0, 0, 0, 0}};
    const char *dd = NULL, *via[MAX_VIA];
    size_t n_via = 0, count = 100;
    uint32_t db = 0;
    int ch, rot = 0;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': dd = optarg; break;
        case 'b': db = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'v':
            if (n_via < MAX_VIA) via[n_via++] = optarg;
            break;
        case 'n': count = strtoul(optarg, NULL, 10); break;
        case 'r': rot = 1; break;
        default:
            fprintf(stderr, "usage: bench_enforce --data-dir D --db UID --via HOST:PORT... [--count N] | --data-dir D --rotations\n");
            return 2;
        }
    }
    if (!dd) return fprintf(stderr, "bench_enforce: --data-dir is required\n"), 2;
    if (rot) return rotations(dd);
    if (!db || !n_via || !count) return fprintf(stderr, "bench_enforce: --db, --via and --count are required\n"), 2;
    return toggles(dd, db, via, n_via, count);
}
