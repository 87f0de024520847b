/* bench_updates — commit -> update received: how long after etcd acknowledged an append a
 * subscriber of every node's ine-updates has its Update (lib/updates_sub.c, as a consumer
 * would use it). Appends one event at a time through the front door of the first data dir
 * without waiting for its mirror; each node's subscriber is polled until it returns that seq.
 * Prints p50/p99/max per node and for the last node to deliver; with --applied, the same
 * appends' commit -> applied in each node's LMDB log side by side (what ine-updates waits on).
 *
 *   bench_updates --data-dir D1 [--data-dir D2 ...] [--count N] [--size BYTES] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "bench_stats.h"
#include "commit.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "updates.h"

#define MAX_DIRS 5

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"count", required_argument, 0, 'n'},
                                       {"size", required_argument, 0, 's'},     {0, 0, 0, 0}};
    const char *dirs[MAX_DIRS];
    evlog_t *logs[MAX_DIRS] = {0};
    updates_sub *subs[MAX_DIRS] = {0};
    double *lat[MAX_DIRS] = {0}, *app[MAX_DIRS] = {0}, *worst = NULL, *worst_app = NULL;
    size_t n_dirs = 0, count = 500, size = 3000;
    commit_t *c = NULL;
    void *z = NULL;
    char p[DATADIR_MAX], pub[DATADIR_MAX + 16], req[DATADIR_MAX + 16], *desc = NULL, id[64];
    int ch, rc = 1;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd':
            if (n_dirs < MAX_DIRS) dirs[n_dirs++] = optarg;
            break;
        case 'n': count = strtoul(optarg, NULL, 10); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        default: fprintf(stderr, "usage: bench_updates --data-dir D [--data-dir D ...] [--count N] [--size B]\n"); return 2;
        }
    }
    if (!n_dirs || !count || size < 200) return fprintf(stderr, "bench_updates: --data-dir is required\n"), 2;
    if (!(z = zmq_ctx_new())) return fprintf(stderr, "bench_updates: no ZeroMQ context\n"), 1;
    for (size_t i = 0; i < n_dirs; i++) {
        uint64_t head;
        if (datadir_path(dirs[i], "log", p, sizeof p) < 0 || evlog_open(p, NULL, &logs[i]) < 0) goto fail;
        if (evlog_last_seq(logs[i], &head) < 0) goto fail;
        if (updates_default_endpoints(dirs[i], pub, sizeof pub, req, sizeof req) < 0) goto fail;
        if (updates_sub_open(z, pub, req, head, NULL, 0, &subs[i]) < 0) goto fail;
        if (!(lat[i] = calloc(count, sizeof *lat[i])) || !(app[i] = calloc(count, sizeof *app[i]))) goto fail;
    }
    if (!(worst = calloc(count, sizeof *worst)) || !(worst_app = calloc(count, sizeof *worst_app)) || !(desc = malloc(size)))
        goto fail;
    memset(desc, 'x', size - 150);
    desc[size - 150] = 0;
    {
        commit_cfg cc = {.data_dir = dirs[0], .producer = "bench_updates", .log = logs[0]};
        if (commit_open(&cc, &c) < 0) goto fail;
    }
    for (size_t k = 0; k < count; k++) {
        Ine__V1__AlertRaised ar = INE__V1__ALERT_RAISED__INIT;
        evlog_event ev = INE__V1__EVENT__INIT;
        commit_opts o = {.actor = "bench", .no_wait = 1};
        evlog_event *evs[1] = {&ev};
        uint64_t seq, last;
        double t0;
        int left;
        snprintf(id, sizeof id, "bench-updates/%zu", k);
        ar.alert_id = id;
        ar.name = "bench";
        ar.description = desc;
        ev.body_case = INE__V1__EVENT__BODY_ALERT_RAISED;
        ev.alert_raised = &ar;
        if (commit_append(c, evs, 1, &o, &seq) < 0) goto fail;
        t0 = bench_now_ms();
        left = (int)(2 * n_dirs);
        for (size_t i = 0; i < n_dirs; i++) lat[i][k] = app[i][k] = -1;
        while (left > 0) {
            for (size_t i = 0; i < n_dirs; i++) {
                updates_msg *u = NULL;
                if (app[i][k] < 0) {
                    if (evlog_last_seq(logs[i], &last) < 0) goto fail;
                    if (last >= seq) {
                        app[i][k] = bench_now_ms() - t0;
                        if (app[i][k] > worst_app[k]) worst_app[k] = app[i][k];
                        left--;
                    }
                }
                if (lat[i][k] >= 0) continue;
                if (updates_sub_next(subs[i], 0, &u) == INE_EAGAIN) continue;
                if (!u) goto fail;
                if (u->seq != seq) {
                    ine_err(INE_ECHAIN, "node %zu's subscriber returned seq %llu, expected %llu", i + 1,
                            (unsigned long long)u->seq, (unsigned long long)seq);
                    ine__v1__update__free_unpacked(u, NULL);
                    goto fail;
                }
                ine__v1__update__free_unpacked(u, NULL);
                lat[i][k] = bench_now_ms() - t0;
                if (lat[i][k] > worst[k]) worst[k] = lat[i][k];
                left--;
            }
            if (bench_now_ms() - t0 > 10000) {
                ine_err(INE_EAGAIN, "seq %llu not delivered everywhere within 10 s", (unsigned long long)seq);
                goto fail;
            }
            {
                struct timespec ts = {0, 50000};
                nanosleep(&ts, NULL);
            }
        }
    }
    for (size_t i = 0; i < n_dirs; i++) {
        char who[32];
        snprintf(who, sizeof who, "node%zu", i + 1);
        bench_report("applied", who, app[i], count);
        bench_report("received", who, lat[i], count);
    }
    bench_report("applied", "all", worst_app, count);
    bench_report("received", "all", worst, count);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_updates: %s\n", ine_err_msg());
out:
    commit_close(c);
    for (size_t i = 0; i < n_dirs; i++) {
        updates_sub_close(subs[i]);
        evlog_close(logs[i]);
        free(lat[i]);
        free(app[i]);
    }
    if (z) zmq_ctx_term(z);
    free(worst);
    free(worst_app);
    free(desc);
    return rc;
}
