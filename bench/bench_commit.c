/* bench_commit — appends through ine's front door (lib/commit.h: envelope, hash chain, one
 * etcd transaction, then the wait for the node's mirror) against raw compare-and-put
 * transactions of the same size sent straight to the same etcd members (the shape etcd-notes
 * measured: "if the head key's mod_revision is still R, put the event key and the new head").
 * Rounds alternate between them so all see the same machine; each prints appends/s, p50 and
 * p99 in ms. "ine" is the whole front door as the services call it (waking on the mirror's
 * ZeroMQ hint); "ine-nowait" the same without waiting for the mirror, which tells what the
 * read-your-writes wait costs. bench/etcd/run.sh starts the members and mirrors and runs this.
 *
 *   bench_commit --data-dir D --mode ine|raw|both|all [--count N] [--rounds R] [--size BYTES]
 *                [--writer-id ID]
 *
 * The data dir must hold an etcd.conf (and, for the ine mode, have an ine-mirror running).
 * --writer-id keeps the raw keys of concurrent writers apart, and names ine's events. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "commit.h"
#include "datadir.h"
#include "err.h"
#include "etcd.h"
#include "evlog.h"

typedef struct {
    double *lat_ms;
    size_t n;
    double secs;
} bench_run;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *mode, const char *writer, bench_run *r)
{
    qsort(r->lat_ms, r->n, sizeof *r->lat_ms, cmp_double);
    printf("%s writer=%s appends=%zu rate=%.1f p50_ms=%.3f p99_ms=%.3f\n", mode, writer, r->n, r->n / r->secs,
           r->lat_ms[r->n / 2], r->lat_ms[(size_t)(r->n * 0.99)]);
    fflush(stdout);
}

/* Raw: the head key and one key per event, as etcd-notes' benchmark wrote them. */
static int run_raw(etcd_t *e, const char *writer, int round, size_t count, size_t size, bench_run *r)
{
    char head[128], key[160];
    uint8_t *val = malloc(size), hv[40] = {0};
    int64_t rev = 0;
    int rc = INE_OK;
    if (!val) return ine_err(INE_ENOMEM, "out of memory");
    memset(val, 'x', size);
    snprintf(head, sizeof head, "/bench/raw/%s/%d/head", writer, round);
    double t0 = now_s();
    for (size_t i = 0; i < count; i++) {
        etcd_cmp c = {.target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .key = head, .key_len = strlen(head), .revision = rev};
        etcd_op ops[2];
        etcd_txn_result tr = {0};
        double t = now_s();
        snprintf(key, sizeof key, "/bench/raw/%s/%d/ev/%020zu", writer, round, i + 1);
        ops[0] = (etcd_op){.type = ETCD_OP_PUT, .key = key, .key_len = strlen(key), .value = val, .value_len = size};
        ops[1] = (etcd_op){.type = ETCD_OP_PUT, .key = head, .key_len = strlen(head), .value = hv, .value_len = sizeof hv};
        GUARD_GOTO(etcd_txn(e, &c, 1, ops, 2, NULL, 0, &tr), out);
        if (!tr.succeeded) {
            etcd_txn_result_free(&tr);
            rc = ine_err(INE_ERR, "raw append %zu lost its compare: another writer on the same head", i);
            goto out;
        }
        rev = tr.revision;
        etcd_txn_result_free(&tr);
        r->lat_ms[r->n++] = (now_s() - t) * 1e3;
    }
    r->secs = now_s() - t0;
out:
    free(val);
    return rc;
}

/* ine: one AlertRaised per append, its description padded so the record is `size` bytes. */
static int run_ine(commit_t *c, const char *writer, int round, size_t count, size_t size, int no_wait, bench_run *r)
{
    Ine__V1__AlertRaised ar = INE__V1__ALERT_RAISED__INIT;
    evlog_event ev = INE__V1__EVENT__INIT;
    char id[128];
    char *desc = malloc(size + 1);
    int rc = INE_OK;
    if (!desc) return ine_err(INE_ENOMEM, "out of memory");
    /* ~150 bytes of envelope and fields besides the description. */
    memset(desc, 'x', size > 150 ? size - 150 : 1);
    desc[size > 150 ? size - 150 : 1] = 0;
    ar.name = "bench";
    ar.description = desc;
    ar.alert_id = id;
    ev.body_case = INE__V1__EVENT__BODY_ALERT_RAISED;
    ev.alert_raised = &ar;
    double t0 = now_s();
    for (size_t i = 0; i < count; i++) {
        uint64_t seq;
        double t = now_s();
        evlog_event *evs[1] = {&ev};
        commit_opts o = {.actor = "bench", .no_wait = no_wait};
        snprintf(id, sizeof id, "bench/%s/%d/%zu", writer, round, i);
        ev.time_us = 0;
        GUARD_GOTO(commit_append(c, evs, 1, &o, &seq), out);
        r->lat_ms[r->n++] = (now_s() - t) * 1e3;
    }
    r->secs = now_s() - t0;
out:
    free(desc);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"mode", required_argument, 0, 'm'},
                                       {"count", required_argument, 0, 'n'},    {"rounds", required_argument, 0, 'r'},
                                       {"size", required_argument, 0, 's'},     {"writer-id", required_argument, 0, 'w'},
                                       {0, 0, 0, 0}};
    const char *dd = NULL, *mode = "both", *writer = "w1";
    size_t count = 2000, size = 3000;
    int rounds = 3, ch, rc = 1;
    commit_etcd_conf conf;
    etcd_t *e = NULL;
    evlog_t *log = NULL;
    commit_t *c = NULL;
    bench_run r = {0};
    char p[DATADIR_MAX], run_dir[DATADIR_MAX];
    void *zctx = zmq_ctx_new();

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': dd = optarg; break;
        case 'm': mode = optarg; break;
        case 'n': count = strtoul(optarg, NULL, 10); break;
        case 'r': rounds = atoi(optarg); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        case 'w': writer = optarg; break;
        default: fprintf(stderr, "usage: bench_commit --data-dir D [--mode ine|raw|both] [--count N] [--rounds R] [--size B] [--writer-id ID]\n"); return 2;
        }
    }
    if (!dd || !count || rounds < 1 || size < 200) {
        fprintf(stderr, "bench_commit: --data-dir is required; count, rounds >= 1 and size >= 200\n");
        return 2;
    }
    if (commit_conf_load(dd, &conf) < 0) goto fail;
    {
        etcd_opts eo = {.endpoints = conf.endpoints, .timeout_ms = 5000};
        if (etcd_open(&eo, &e) < 0) goto fail;
    }
    if (datadir_path(dd, "log", p, sizeof p) < 0 || evlog_open(p, NULL, &log) < 0) goto fail;
    {
        commit_cfg cc = {.data_dir = dd, .producer = "bench_commit", .log = log, .zctx = zctx, .run_dir = run_dir};
        if (datadir_path(dd, "run", run_dir, sizeof run_dir) < 0 || commit_open(&cc, &c) < 0) goto fail;
    }
    if (!(r.lat_ms = calloc(count, sizeof *r.lat_ms))) goto fail;
    for (int round = 0; round < rounds; round++) {
        if (strcmp(mode, "ine")) {
            r.n = 0;
            if (run_raw(e, writer, round, count, size, &r) < 0) goto fail;
            report("raw", writer, &r);
        }
        if (strcmp(mode, "raw")) {
            r.n = 0;
            if (run_ine(c, writer, round, count, size, 0, &r) < 0) goto fail;
            report("ine", writer, &r);
        }
        if (!strcmp(mode, "all")) {
            r.n = 0;
            if (run_ine(c, writer, round, count, size, 1, &r) < 0) goto fail;
            report("ine-nowait", writer, &r);
        }
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_commit: %s\n", ine_err_msg());
out:
    free(r.lat_ms);
    commit_close(c);
    evlog_close(log);
    etcd_close(e);
    if (zctx) zmq_ctx_term(zctx);
    return rc;
}
