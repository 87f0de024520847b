/* deploy.h — the supervisord deployment in a test: deploy/supervisord.conf.in rendered as
 * scripts/run.sh renders it, but in a fresh temp dir with free ports, a 2048-bit CA and a 1 s
 * check interval; helpers to ask supervisorctl for pids, wait for the cluster, and tear it
 * all down (supervisord and every child) from .fini even after a failed assertion.
 *
 * Header-only (static functions): the build links every tests/ source file into every test, and this
 * helper is for the deploy tests alone. */
#ifndef INE_TEST_DEPLOY_H
#define INE_TEST_DEPLOY_H

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

typedef struct {
    char *dir, *dd, *conf;
    int tp_port, rest_port, metrics_port, redis_port;
    int up;
} dp_t;

static const char *dp_programs[] = {"ine-ca", "ine-policy", "ine-alerting", "ine-updates", "ine-transport-1",
                                    "ine-transport-2", "ine-transport-3", NULL};

/* supervisorctl pid NAME: its pid, 0 if not running. */
static pid_t dp_pid(dp_t *d, const char *name)
{
    char *out = NULL;
    pid_t pid = 0;
    if (cl_sh(&out, 20, "supervisorctl -c %s pid %s", d->conf, name) == 0 && out) pid = (pid_t)atol(out);
    free(out);
    return pid > 0 ? pid : 0;
}

/* How many node/plane certificates `inectl status` reports as served (run.sh's readiness). */
static int dp_active(dp_t *d)
{
    char *out = NULL;
    int n = 0;
    cl_sh(&out, 30, "%s/inectl --data-dir %s status | sed -n '/^CERTIFICATES/,/^ALERTS/p' | grep -c ' yes$'",
          INE_BIN_DIR, d->dd);
    if (out) n = atoi(out);
    free(out);
    return n;
}

/* Render the template and start supervisord (it daemonizes, as in run.sh). */
static void dp_start(dp_t *d)
{
    char *out = NULL;
    int rc;
    d->dir = tu_tmpdir();
    cr_assert(asprintf(&d->dd, "%s/dd", d->dir) > 0 && asprintf(&d->conf, "%s/dd/supervisord.conf", d->dir) > 0);
    d->tp_port = cl_free_port();
    d->rest_port = cl_free_port();
    d->metrics_port = cl_free_port();
    d->redis_port = cl_free_port();
    rc = cl_sh(&out, 60,
               "echo pw-deploy-test | %s/inectl --data-dir %s cluster create name deploy nodes 127.0.0.1,127.0.0.2,127.0.0.3 "
               "username admin@example.com password - && mkdir -p %s/redis %s/logs %s/run && "
               "sed -e 's|@BIN@|%s|g' -e 's|@DATA@|%s|g' -e 's|@REST_PORT@|%d|g' -e 's|@METRICS_PORT@|%d|g' "
               "-e 's|@REDIS_PORT@|%d|g' -e 's|@TP_PORT@|%d|g' -e 's|@CA_ARGS@|--ca-key-bits 2048 --check-interval 1|g' "
               "%s/deploy/supervisord.conf.in > %s",
               INE_BIN_DIR, d->dd, d->dd, d->dd, d->dd, INE_BIN_DIR, d->dd, d->rest_port, d->metrics_port,
               d->redis_port, d->tp_port, INE_SOURCE_DIR, d->conf);
    cr_assert_eq(rc, 0, "cluster create / render failed: %s", out ? out : "");
    free(out);
    out = NULL;
    rc = cl_sh(&out, 60, "INE_DATA_DIR=%s supervisord -c %s", d->dd, d->conf);
    cr_assert_eq(rc, 0, "supervisord did not start: %s", out ? out : "");
    free(out);
    d->up = 1;
}

/* Wait (generously) until all 6 certificates are served; 1 if they are. */
static int dp_wait_ready(dp_t *d, int timeout_ms)
{
    int64_t end = cl_now_ms() + timeout_ms;
    while (cl_now_ms() < end) {
        if (dp_active(d) >= 6) return 1;
        usleep(300 * 1000);
    }
    return 0;
}

/* Wait until supervisord runs `name` under a pid other than `old` (0: any). */
static pid_t dp_wait_restarted(dp_t *d, const char *name, pid_t old, int timeout_ms)
{
    int64_t end = cl_now_ms() + timeout_ms;
    while (cl_now_ms() < end) {
        pid_t p = dp_pid(d, name);
        if (p && p != old && kill(p, 0) == 0) return p;
        usleep(200 * 1000);
    }
    return 0;
}

/* Stop supervisord and every child; SIGKILL what survives; remove the temp dir. */
static void dp_stop(dp_t *d)
{
    if (d->up) {
        pid_t pids[16] = {0}, sup = 0;
        char *out = NULL, path[4096];
        FILE *f;
        int n = 0;
        for (int i = 0; dp_programs[i]; i++) pids[n++] = dp_pid(d, dp_programs[i]);
        pids[n++] = dp_pid(d, "redis-shard");
        snprintf(path, sizeof path, "%s/run/supervisord.pid", d->dd);
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%d", &sup) != 1) sup = 0;
            fclose(f);
        }
        cl_sh(&out, 40, "supervisorctl -c %s shutdown", d->conf);
        free(out);
        for (int t = 0; sup > 0 && kill(sup, 0) == 0 && t < 100; t++) usleep(100 * 1000);
        if (sup > 0) kill(sup, SIGKILL);
        for (int i = 0; i < n; i++)
            if (pids[i] > 0) kill(pids[i], SIGKILL);
        d->up = 0;
    }
    if (d->dir) tu_rmrf(d->dir);
    free(d->dir);
    free(d->dd);
    free(d->conf);
    memset(d, 0, sizeof *d);
}

#endif
