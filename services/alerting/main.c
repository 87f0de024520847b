/* ine-alerting — the alerting service: certificate expiry, overdue rotation, activation and
 * customer-fallback alerts; Prometheus metrics; an optional webhook.
 *
 * Replays the node's event log into the projection, then runs a libevent loop: a 100 ms timer
 * follows the log (hints only wake it sooner) and evaluates the alerts whenever the log moved
 * and on the check timer (the clock alone can cross a threshold); the metrics endpoint is
 * served on the same loop. One instance per data directory (an flock on run/alerting.lock). */
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "alerting.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#define ALERTING_TICK_MS 100

static const char *usage_text =
    "usage: ine-alerting [--data-dir DIR] [--check-interval SECONDS] [--metrics-addr ADDR]\n"
    "                    [--metrics-port PORT|0] [--webhook URL] [--webhook-backoff-max SECONDS]\n"
    "\n"
    "The alerting service: raises and clears certificate alerts as events in the log, serves\n"
    "Prometheus metrics, and posts every raise and clear to an optional webhook.\n"
    "\n"
    "  --data-dir DIR              node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --check-interval SECS       how often the clock is checked against the thresholds (default 60);\n"
    "                              every change in the log is checked at once\n"
    "  --metrics-addr ADDR         metrics listen address (default 0.0.0.0)\n"
    "  --metrics-port PORT         metrics port, GET /metrics (default 8070; 0 disables)\n"
    "  --webhook URL               POST each raise and clear as JSON to URL (http or https);\n"
    "                              retried with back-off until the receiver accepts it (2xx)\n"
    "  --webhook-backoff-max SECS  the longest wait between two retries (default 60)\n"
    "  -h, --help                  this text\n"
    "\n"
    "alerts (thresholds and enabling: inectl tune cluster alert, or REST PUT /v1/cluster):\n";

static void usage(FILE *f)
{
    fputs(usage_text, f);
    for (int k = 0; k < ALERTS_COUNT; k++) {
        const alerts_def *d = alerts_def_at((alerts_kind)k);
        if (d->unit == ALERTS_UNIT_NONE) fprintf(f, "  %-36s %s\n", d->name, proj_severity_name(d->severity));
        else
            fprintf(f, "  %-36s %s, threshold %ld %s\n", d->name, proj_severity_name(d->severity), d->default_threshold,
                    alerts_unit_name(d->unit));
        fprintf(f, "      %s\n", d->summary);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    alerting_t *a = arg;
    int64_t now = ine_clock_mono_ms();
    (void)fd;
    (void)what;
    if (follow_poll(a->follow, 0) < 0) logline(LOGLINE_ERROR, a->st.applied_seq, "follow: %s", ine_err_msg());
    /* A failed evaluation waits for the next change or the next check, instead of spinning. */
    if (a->st.applied_seq != a->evaluated_seq || now >= a->next_eval_ms) {
        if (alerting_evaluate(a) < 0) {
            logline(LOGLINE_ERROR, a->st.applied_seq, "evaluate: %s", ine_err_msg());
            a->evaluated_seq = a->st.applied_seq;
        }
        if (now >= a->next_eval_ms) a->next_eval_ms = now + a->check_interval_ms;
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopbreak(arg);
}

static int alerting_lock(alerting_t *a)
{
    char p[DATADIR_MAX];
    GUARD(datadir_path(a->data_dir, "run/alerting.lock", p, sizeof p));
    if (mkdir(a->run_dir, 0700) != 0 && errno != EEXIST)
        return ine_err(INE_EIO, "cannot create %s: %s", a->run_dir, strerror(errno));
    if ((a->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) return ine_err(INE_EIO, "cannot open %s: %s", p, strerror(errno));
    if (flock(a->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return ine_err(INE_EEXIST, "another ine-alerting is running on %s (it holds %s)", a->data_dir, p);
    return INE_OK;
}

/* Where the webhook resumes: the recorded cursor, or (first start with this webhook) the log's
 * end now, recorded at once so alerts raised before the first delivery are not skipped by a
 * restart. History is never replayed into a new webhook. */
static int alerting_hook_open(alerting_t *a)
{
    char dir[DATADIR_MAX], cur[DATADIR_MAX];
    uint64_t last;
    int rc;
    GUARD(datadir_path(a->data_dir, "alerting", dir, sizeof dir));
    GUARD(datadir_path(a->data_dir, "alerting/webhook.cursor", cur, sizeof cur));
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return ine_err(INE_EIO, "cannot create %s: %s", dir, strerror(errno));
    GUARD(evlog_last_seq(a->log, &last));
    rc = alerting_hook_cursor_read(cur, &a->hook_cursor);
    if (rc == INE_ENOTFOUND || (rc == INE_OK && a->hook_cursor > last)) {
        FILE *f;
        if (rc == INE_OK) logline(LOGLINE_WARN, last, "webhook cursor %llu is beyond the log's end: starting from %llu",
                                  (unsigned long long)a->hook_cursor, (unsigned long long)last);
        a->hook_cursor = last;
        if (!(f = fopen(cur, "w")) || fprintf(f, "%llu\n", (unsigned long long)last) < 0 || fclose(f) != 0) {
            if (f) fclose(f);
            return ine_err(INE_EIO, "cannot write the webhook cursor %s: %s", cur, strerror(errno));
        }
    } else if (rc < 0) {
        return rc;
    }
    return alerting_hook_start(a->webhook_url, cur, a->webhook_backoff_max_ms, &a->hook);
}

static int alerting__has_cluster(void *ud) { return ((alerting_t *)ud)->st.cluster.present; }

static int alerting_open(alerting_t *a)
{
    evlog_opts lo;
    char p[DATADIR_MAX];
    GUARD(datadir_path(a->data_dir, "run", a->run_dir, sizeof a->run_dir));
    GUARD(alerting_lock(a));
    GUARD(datadir_path(a->data_dir, "log", p, sizeof p));
    GUARD(evlog_opts_from_env(&lo));
    GUARD(evlog_open(p, &lo, &a->log));
    if (!(a->zctx = zmq_ctx_new())) return ine_err(INE_EZMQ, "cannot create a ZeroMQ context");
    GUARD(follow_pub_open(a->zctx, a->run_dir, "ine-alerting", &a->pub));
    {
        commit_cfg cc = {.data_dir = a->data_dir, .producer = "ine-alerting", .log = a->log, .pub = a->pub,
                         .zctx = a->zctx, .run_dir = a->run_dir};
        GUARD(commit_open(&cc, &a->commit));
    }
    if (!strcmp(commit_backend(a->commit), "etcd")) {
        commit_etcd_conf conf;
        GUARD(commit_conf_load(a->data_dir, &conf));
        GUARD(commit_conf_etcd_open(&conf, 500, &a->etcd));
        a->storage_quota = conf.quota_bytes;
    }
    if (a->webhook_url) GUARD(alerting_hook_open(a));
    proj_init(&a->st);
    GUARD(follow_new(a->zctx, a->log, a->run_dir, 0, alerting_apply, a, &a->follow));
    GUARD(alerting_catch_up(a));
    if (a->etcd) GUARD(follow_wait_ready(a->follow, alerting__has_cluster, a, "the cluster"));
    if (!a->st.cluster.present) return ine_err(INE_ENOTFOUND, "%s holds no cluster (run inectl cluster create first)", a->data_dir);
    if (!(a->base = event_base_new())) return ine_err(INE_ENOMEM, "cannot create the event loop");
    /* The first evaluation comes before the metrics endpoint answers: a scrape that succeeds
     * always reflects at least one. */
    if (alerting_evaluate(a) < 0) logline(LOGLINE_ERROR, a->st.applied_seq, "evaluate: %s", ine_err_msg());
    a->next_eval_ms = ine_clock_mono_ms() + a->check_interval_ms;
    return a->metrics_port ? alerting_metrics_start(a) : INE_OK;
}

static void alerting_close(alerting_t *a)
{
    alerting_metrics_stop(a);
    if (a->base) event_base_free(a->base);
    alerting_hook_stop(a->hook);
    follow_free(a->follow);
    etcd_close(a->etcd);
    commit_close(a->commit);
    follow_pub_close(a->pub);
    if (a->zctx) zmq_ctx_term(a->zctx);
    evlog_close(a->log);
    proj_free(&a->st);
    alerting_memo_free(a);
    if (a->lock_fd >= 0) close(a->lock_fd);
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, 0, 'd'},      {"check-interval", required_argument, 0, 'i'},
        {"metrics-addr", required_argument, 0, 'a'},  {"metrics-port", required_argument, 0, 'p'},
        {"webhook", required_argument, 0, 'w'},       {"webhook-backoff-max", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
    alerting_t a = {.check_interval_ms = 60000, .metrics_addr = "0.0.0.0", .metrics_port = 8070,
                    .webhook_backoff_max_ms = 60000, .lock_fd = -1};
    const char *dd_arg = NULL;
    struct event *tick = NULL, *hint = NULL, *sigint = NULL, *sigterm = NULL;
    struct timeval tv = {0, ALERTING_TICK_MS * 1000};
    long v;
    int c, rc = 0;

    logline_init("ine-alerting");
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'i':
            if (parse_int(optarg, 1, 86400, &v)) return fprintf(stderr, "ine-alerting: --check-interval takes 1..86400 seconds, not '%s'\n", optarg), 2;
            a.check_interval_ms = (int)v * 1000;
            break;
        case 'a': a.metrics_addr = optarg; break;
        case 'p':
            if (parse_int(optarg, 0, 65535, &v)) return fprintf(stderr, "ine-alerting: --metrics-port takes 0..65535, not '%s'\n", optarg), 2;
            a.metrics_port = (int)v;
            break;
        case 'w':
            if (strncmp(optarg, "http://", 7) && strncmp(optarg, "https://", 8))
                return fprintf(stderr, "ine-alerting: --webhook takes an http:// or https:// URL\n"), 2;
            a.webhook_url = optarg;
            break;
        case 'b':
            if (parse_int(optarg, 1, 3600, &v)) return fprintf(stderr, "ine-alerting: --webhook-backoff-max takes 1..3600 seconds, not '%s'\n", optarg), 2;
            a.webhook_backoff_max_ms = (int)v * 1000;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "ine-alerting: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    snprintf(a.data_dir, sizeof a.data_dir, "%s", datadir_resolve(dd_arg));
    signal(SIGPIPE, SIG_IGN);
    /* Before any thread exists: libcurl's global state is not thread-safe to set up. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return fprintf(stderr, "ine-alerting: cannot initialise libcurl\n"), 1;
    if (alerting_open(&a) < 0) {
        fprintf(stderr, "ine-alerting: cannot start: %s\n", ine_err_msg());
        alerting_close(&a);
        curl_global_cleanup();
        return 1;
    }
    tick = event_new(a.base, -1, EV_PERSIST, on_tick, &a);
    /* The log's "grew" hint wakes the loop at once: the timer is only the safety net. */
    {
        int hfd = follow_fd(a.follow);
        if (hfd >= 0 && (!(hint = event_new(a.base, hfd, EV_READ | EV_PERSIST, on_tick, &a)) || event_add(hint, NULL))) {
            fprintf(stderr, "ine-alerting: cannot watch the log's hints\n");
            rc = 1;
            goto out;
        }
    }
    sigint = evsignal_new(a.base, SIGINT, on_signal, a.base);
    sigterm = evsignal_new(a.base, SIGTERM, on_signal, a.base);
    if (!tick || !sigint || !sigterm || event_add(tick, &tv) || event_add(sigint, NULL) || event_add(sigterm, NULL)) {
        fprintf(stderr, "ine-alerting: cannot set up the event loop\n");
        rc = 1;
        goto out;
    }
    {
        char shown[256] = "none";
        if (a.webhook_url) alerting_url_redact(a.webhook_url, shown, sizeof shown);
        logline(LOGLINE_INFO, a.st.applied_seq, "started on %s (log at seq %llu, %zu alerts active, metrics %s:%d, webhook %s)",
                a.data_dir, (unsigned long long)a.st.applied_seq, a.st.n_alerts, a.metrics_addr, a.metrics_port, shown);
    }
    if (event_base_dispatch(a.base) < 0) rc = 1;
    logline(LOGLINE_INFO, a.st.applied_seq, "stopping");
out:
    if (tick) event_free(tick);
    if (hint) event_free(hint);
    if (sigint) event_free(sigint);
    if (sigterm) event_free(sigterm);
    alerting_close(&a);
    curl_global_cleanup();
    return rc;
}
