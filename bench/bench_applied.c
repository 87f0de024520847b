/* bench_applied — commit -> applied: how long after etcd acknowledged an append every node's
 * mirror has it in that node's LMDB log. Appends one event at a time through the front door of
 * the first data dir without waiting for its mirror, then polls each data dir's log (every 50
 * µs) until it holds the seq. Prints p50/p99/max per node and for the last node to apply.
 *
 *   bench_applied --data-dir D1 [--data-dir D2 ...] [--count N] [--size BYTES] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_stats.h"
#include "commit.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"

#define MAX_DIRS 5

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"count", required_argument, 0, 'n'},
                                       {"size", required_argument, 0, 's'},     {0, 0, 0, 0}};
    const char *dirs[MAX_DIRS];
    evlog_t *logs[MAX_DIRS] = {0};
    double *lat[MAX_DIRS] = {0}, *worst = NULL;
    size_t n_dirs = 0, count = 500, size = 3000;
    commit_t *c = NULL;
    char p[DATADIR_MAX], *desc = NULL, id[64];
    int ch, rc = 1;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd':
            if (n_dirs < MAX_DIRS) dirs[n_dirs++] = optarg;
            break;
        case 'n': count = strtoul(optarg, NULL, 10); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        default: fprintf(stderr, "usage: bench_applied --data-dir D [--data-dir D ...] [--count N] [--size B]\n"); return 2;
        }
    }
    if (!n_dirs || !count || size < 200) return fprintf(stderr, "bench_applied: --data-dir is required\n"), 2;
    for (size_t i = 0; i < n_dirs; i++) {
        if (datadir_path(dirs[i], "log", p, sizeof p) < 0 || evlog_open(p, NULL, &logs[i]) < 0) goto fail;
        if (!(lat[i] = calloc(count, sizeof *lat[i]))) goto fail;
    }
    if (!(worst = calloc(count, sizeof *worst)) || !(desc = malloc(size))) goto fail;
    memset(desc, 'x', size - 150);
    desc[size - 150] = 0;
    {
        commit_cfg cc = {.data_dir = dirs[0], .producer = "bench_applied", .log = logs[0]};
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
        snprintf(id, sizeof id, "bench-applied/%zu", k);
        ar.alert_id = id;
        ar.name = "bench";
        ar.description = desc;
        ev.body_case = INE__V1__EVENT__BODY_ALERT_RAISED;
        ev.alert_raised = &ar;
        if (commit_append(c, evs, 1, &o, &seq) < 0) goto fail;
        t0 = bench_now_ms();
        left = (int)n_dirs;
        for (size_t i = 0; i < n_dirs; i++) lat[i][k] = -1;
        while (left > 0) {
            for (size_t i = 0; i < n_dirs; i++) {
                if (lat[i][k] >= 0) continue;
                if (evlog_last_seq(logs[i], &last) < 0) goto fail;
                if (last >= seq) {
                    lat[i][k] = bench_now_ms() - t0;
                    if (lat[i][k] > worst[k]) worst[k] = lat[i][k];
                    left--;
                }
            }
            if (bench_now_ms() - t0 > 10000) {
                ine_err(INE_EAGAIN, "seq %llu not applied everywhere within 10 s", (unsigned long long)seq);
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
        bench_report("applied", who, lat[i], count);
    }
    bench_report("applied", "all", worst, count);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_applied: %s\n", ine_err_msg());
out:
    commit_close(c);
    for (size_t i = 0; i < n_dirs; i++) {
        evlog_close(logs[i]);
        free(lat[i]);
    }
    free(worst);
    free(desc);
    return rc;
}
