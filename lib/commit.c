/* commit.c — the front door (commit.h): the envelope stamped in one place, the choice of
 * backend from the data dir, the local backend (straight into LMDB), and waiting for the
 * mirror. The data dir's etcd.conf is commit_conf.c's. */
#include "commit_int.h"

#include "err.h"
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include <time.h>

/* --- the local backend ------------------------------------------------------------------------ */

static int commit__local_append(commit_t *c, evlog_event **evs, size_t n, const commit_opts *o, uint64_t *first_seq,
                                uint64_t *wait_seq)
{
    evlog_append_opts ao = {.request_id = o->request_id, .prepare = o->prepare, .prepare_ud = o->prepare_ud,
                            .expect_head = o->based_on};
    uint64_t last;
    int rc;
    if (o->expect_empty && evlog_last_seq(c->log, &last) == INE_OK && last != 0)
        return ine_err(INE_EEXIST, "the event log already holds %llu records", (unsigned long long)last);
    *wait_seq = 0; /* written here: nothing to wait for */
    rc = evlog_append(c->log, evs, n, &ao, first_seq);
    if (rc == 0 && c->pub && evlog_last_seq(c->log, &last) == 0) (void)follow_pub_hint(c->pub, last);
    return rc;
}

static void commit__local_close(commit_t *c) { (void)c; }

const commit__ops commit__local_ops = {"local", commit__local_append, commit__local_close};

/* --- the handle --------------------------------------------------------------------------------- */

static int commit__wait_local(commit_t *c, uint64_t seq);

/* The waiting follower only counts: the caller's own follower applies the events. */
static int commit__skip(const evlog_event *ev, uint64_t seq, void *ud)
{
    (void)ev;
    (void)seq;
    (void)ud;
    return INE_OK;
}

int commit_open(const commit_cfg *cfg, commit_t **out)
{
    commit_etcd_conf conf;
    commit_t *c;
    int rc;

    if (!cfg->producer || !*cfg->producer || !cfg->log) return ine_err(INE_EINVAL, "commit_open needs a producer and a log");
    if (!(c = calloc(1, sizeof *c)) || !(c->producer = strdup(cfg->producer))) {
        free(c);
        return ine_err(INE_ENOMEM, "out of memory");
    }
    c->log = cfg->log;
    c->pub = cfg->pub;
    c->ops = &commit__local_ops;
    rc = cfg->data_dir ? commit_conf_load(cfg->data_dir, &conf) : INE_ENOTFOUND;
    if (rc == INE_OK) rc = commit__etcd_open(c, &conf);
    else if (rc == INE_ENOTFOUND) rc = INE_OK;
    if (rc == INE_OK && c->ops == &commit__etcd_ops && cfg->zctx && cfg->run_dir) {
        uint64_t last = 0;
        rc = evlog_last_seq(c->log, &last);
        if (rc == INE_OK) rc = follow_new(cfg->zctx, c->log, cfg->run_dir, last, commit__skip, NULL, &c->follow);
        if (rc == INE_OK) commit__notes_open(c, cfg->zctx, cfg->run_dir);
    }
    if (rc < 0) {
        commit_close(c);
        return rc;
    }
    *out = c;
    return INE_OK;
}

void commit_close(commit_t *c)
{
    if (!c) return;
    if (c->notes) zmq_close(c->notes);
    follow_free(c->follow);
    c->ops->close(c);
    free(c->producer);
    free(c);
}

const char *commit_backend(const commit_t *c) { return c->ops->name; }

typedef struct {
    char *producer, *actor;
} commit__saved;

int commit_append(commit_t *c, evlog_event **evs, size_t n, const commit_opts *o, uint64_t *first_seq)
{
    commit_opts none = {0};
    commit__saved *saved;
    const char *actor;
    uint64_t wait_seq = 0;
    int rc;

    if (!o) o = &none;
    if (n == 0) return ine_err(INE_EINVAL, "append of zero events");
    for (size_t i = 0; i < n; i++)
        if (!evs[i] || evs[i]->body_case == INE__V1__EVENT__BODY__NOT_SET)
            return ine_err(INE_EINVAL, "event %zu of the append has no body", i);
    if (o->request_id && strlen(o->request_id) > EVLOG_MAX_REQUEST_ID)
        return ine_err(INE_EINVAL, "request id longer than %d bytes", EVLOG_MAX_REQUEST_ID);
    if (!(saved = calloc(n, sizeof *saved))) return ine_err(INE_ENOMEM, "out of memory");
    /* The envelope, in one place: the producer is always this handle's. */
    actor = o->actor && *o->actor ? o->actor : c->producer;
    for (size_t i = 0; i < n; i++) {
        saved[i] = (commit__saved){evs[i]->producer, evs[i]->actor};
        evs[i]->producer = c->producer;
        if (!evs[i]->actor || !*evs[i]->actor) evs[i]->actor = (char *)actor;
    }
    rc = c->ops->append(c, evs, n, o, first_seq, &wait_seq);
    /* Read-your-writes: the node's log holds what was committed before the caller reads it.
     * A stale decision waits too, or it would be checked against the same old state again. */
    if (wait_seq && (rc == INE_ESTALE || (rc >= 0 && !o->no_wait))) {
        char why[512];
        snprintf(why, sizeof why, "%s", ine_err_msg());
        if (commit__wait_local(c, wait_seq) < 0) {
            if (rc == INE_ESTALE) rc = INE_EAGAIN; /* deciding again now would change nothing */
            else logline(LOGLINE_WARN, wait_seq, "%s", ine_err_msg());
        } else if (rc == INE_ESTALE) {
            ine_err(INE_ESTALE, "%s", why);
        }
    }
    for (size_t i = 0; i < n; i++) {
        evs[i]->producer = saved[i].producer;
        evs[i]->actor = saved[i].actor;
        if (rc < 0) evs[i]->seq = 0;
    }
    free(saved);
    return rc;
}

int commit_append_one(commit_t *c, evlog_event *ev, const char *actor, const char *request_id, uint64_t *seq)
{
    commit_opts o = {.actor = actor, .request_id = request_id};
    return commit_append(c, &ev, 1, &o, seq);
}

static int64_t commit__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until the local log holds seq (the mirror applied it), up to COMMIT_MIRROR_WAIT_MS. */
static int commit__wait_local(commit_t *c, uint64_t seq)
{
    int64_t deadline = commit__now_ms() + COMMIT_MIRROR_WAIT_MS;
    long sleep_us = 100;
    uint64_t last = 0;
    if (c->follow) {
        int rc = follow_wait_seq(c->follow, seq, COMMIT_MIRROR_WAIT_MS);
        if (rc != INE_EAGAIN) return rc;
        (void)evlog_last_seq(c->log, &last);
        return ine_err(INE_EAGAIN, "seq %llu is committed but this node's log holds only %llu after %d ms: is ine-mirror running?",
                       (unsigned long long)seq, (unsigned long long)last, COMMIT_MIRROR_WAIT_MS);
    }
    for (;;) {
        GUARD(evlog_last_seq(c->log, &last));
        if (last >= seq) return INE_OK;
        if (commit__now_ms() >= deadline) break;
        {
            struct timespec ts = {0, sleep_us * 1000};
            nanosleep(&ts, NULL);
        }
        if (sleep_us < 2000) sleep_us *= 2;
    }
    return ine_err(INE_EAGAIN, "seq %llu is committed but this node's log holds only %llu after %d ms: is ine-mirror running?",
                   (unsigned long long)seq, (unsigned long long)last, COMMIT_MIRROR_WAIT_MS);
}
