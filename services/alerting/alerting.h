/* alerting.h — the alerting service's internals, shared by its files:
 *   main.c     arguments, start-up, the libevent loop (log follow + evaluation on a timer)
 *   eval.c     following the log, and raising/clearing what lib/alerts asks for
 *   metrics.c  the Prometheus endpoint (plain HTTP through evhttp)
 *   webhook.c  JSON POSTs of every raise and clear, from a worker thread with a bounded queue
 * The service replays the log into a projection, follows it, and acts: each raise and each
 * clear is one append whose request id is derived from the alert and the certificate it
 * concerns, so a restart (or a crash mid-way) never records one twice. */
#ifndef INE_ALERTING_H
#define INE_ALERTING_H

#include <stddef.h>
#include <stdint.h>

#include "alerts.h"
#include "datadir.h"
#include "commit.h"
#include "etcd.h"
#include "evlog.h"
#include "follow.h"
#include "proj.h"

struct event_base;
struct evhttp;
typedef struct alerting_hook alerting_hook;

/* What the service remembers of each alert id it saw in the log, beyond the projection (which
 * keeps active alerts only): the certificate an active alert was raised for, and the last
 * clear, which makes the next raise of the same id a new request. */
typedef struct {
    char *alert_id;
    char subject[ALERTS_FPR_LEN];
    uint64_t raised_seq;
    uint64_t cleared_seq;
} alerting_memo;

typedef struct {
    char data_dir[DATADIR_MAX];
    char run_dir[DATADIR_MAX];
    evlog_t *log;
    void *zctx;
    follow_t *follow;
    follow_pub *pub;
    commit_t *commit;       /* the front door for every append */
    /* Under etcd: the storage its database uses on this node's member, measured at each
     * evaluation (kept when a measure fails: an unreachable member clears nothing). */
    etcd_t *etcd;
    int64_t storage_used, storage_quota;
    char storage_where[256];
    proj_state st;
    int lock_fd;
    alerting_memo *memo;
    size_t n_memo, cap_memo;          /* sorted by alert id */

    /* options */
    int check_interval_ms;
    const char *metrics_addr;
    int metrics_port;                 /* 0: no metrics endpoint */
    const char *webhook_url;          /* NULL: no webhook */
    int webhook_backoff_max_ms;

    /* running */
    struct event_base *base;
    struct evhttp *http;
    alerting_hook *hook;
    uint64_t hook_cursor;             /* alert events at or below it are not posted */
    uint64_t evaluations;
    uint64_t evaluated_seq;           /* the log seq the last evaluation judged */
    int64_t next_eval_ms;
} alerting_t;

/* --- eval.c --- */
/* The follow callback: remember alert history, queue webhook posts, fold into the state. */
int alerting_apply(const evlog_event *ev, uint64_t seq, void *ud);
int alerting_catch_up(alerting_t *a);
/* Raise what the state and the clock ask for and is not active; clear what is active and no
 * longer asked for (or now concerns another certificate). */
int alerting_evaluate(alerting_t *a);
void alerting_memo_free(alerting_t *a);

/* --- metrics.c --- */
int alerting_metrics_start(alerting_t *a);
void alerting_metrics_stop(alerting_t *a);

/* --- webhook.c --- */
typedef struct {
    uint64_t pending, delivered, failures, dropped;
} alerting_hook_stats;

/* Start the worker that POSTs to url. The cursor file records the seq of the last event
 * delivered; retries back off from 250 ms up to backoff_max_ms. */
int alerting_hook_start(const char *url, const char *cursor_path, int backoff_max_ms, alerting_hook **out);
/* The last delivered seq recorded in the cursor file; INE_ENOTFOUND when there is none. */
int alerting_hook_cursor_read(const char *cursor_path, uint64_t *seq);
/* Queue one JSON body (taken over, malloc'd) for the event at seq. Never blocks: a full
 * queue drops the body with a warning. */
void alerting_hook_push(alerting_hook *h, uint64_t seq, char *body);
void alerting_hook_get_stats(alerting_hook *h, alerting_hook_stats *s);
/* Stop the worker (an attempt in progress is abandoned) and free everything. NULL: no-op. */
void alerting_hook_stop(alerting_hook *h);
/* url without user info or query (tokens live there), for log lines. */
void alerting_url_redact(const char *url, char *buf, size_t len);

#endif
