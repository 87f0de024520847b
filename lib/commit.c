/* commit.c — the front door (commit.h): the envelope stamped in one place, the choice of
 * backend from the data dir, the local backend (straight into LMDB), waiting for the mirror,
 * and the data dir's etcd.conf. */
#include "commit_int.h"

#include "datadir.h"
#include "err.h"
#include "logline.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- etcd.conf ------------------------------------------------------------------------------ */

static char *commit__trim(char *s)
{
    char *e;
    while (isspace((unsigned char)*s)) s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int commit__conf_set(commit_etcd_conf *c, const char *k, const char *v, const char *path, int line)
{
    struct { const char *name; char *dst; size_t len; } strs[] = {
        {"endpoints", c->endpoints, sizeof c->endpoints}, {"cacert", c->cacert, sizeof c->cacert},
        {"cert", c->cert, sizeof c->cert},                {"key", c->key, sizeof c->key},
        {"prefix", c->prefix, sizeof c->prefix},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (strcmp(k, strs[i].name)) continue;
        if (strlen(v) >= strs[i].len) return ine_err(INE_EINVAL, "%s:%d: %s is too long", path, line, k);
        strcpy(strs[i].dst, v);
        return INE_OK;
    }
    if (!strcmp(k, "quota_bytes")) {
        char *end;
        long long q = strtoll(v, &end, 10);
        if (*end || q < (1LL << 20) || q > (64LL << 30))
            return ine_err(INE_EINVAL, "%s:%d: quota_bytes must be 1 MiB to 64 GiB in bytes, not '%s'", path, line, v);
        c->quota_bytes = q;
        return INE_OK;
    }
    if (!strcmp(k, "timeout_ms")) {
        char *end;
        long ms = strtol(v, &end, 10);
        if (*end || ms < 50 || ms > 60000)
            return ine_err(INE_EINVAL, "%s:%d: timeout_ms must be 50 to 60000, not '%s'", path, line, v);
        c->timeout_ms = (int)ms;
        return INE_OK;
    }
    return ine_err(INE_EINVAL, "%s:%d: unknown setting '%s'", path, line, k);
}

int commit_conf_load(const char *data_dir, commit_etcd_conf *out)
{
    char path[4096], buf[2048];
    FILE *f;
    int line = 0, rc = INE_OK;

    memset(out, 0, sizeof *out);
    strcpy(out->prefix, "/ine/");
    out->quota_bytes = 2LL << 30; /* etcd's own default */
    GUARD(datadir_path(data_dir, COMMIT_CONF_NAME, path, sizeof path));
    if (!(f = fopen(path, "r"))) {
        if (errno == ENOENT) return ine_err(INE_ENOTFOUND, "%s does not exist", path);
        return ine_err(INE_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    while (fgets(buf, sizeof buf, f)) {
        char *s = commit__trim(buf), *eq;
        line++;
        if (!*s || *s == '#') continue;
        if (!(eq = strchr(s, '='))) {
            rc = ine_err(INE_EINVAL, "%s:%d: expected key=value", path, line);
            break;
        }
        *eq = 0;
        if ((rc = commit__conf_set(out, commit__trim(s), commit__trim(eq + 1), path, line)) < 0) break;
    }
    fclose(f);
    if (rc == INE_OK && !out->endpoints[0]) rc = ine_err(INE_EINVAL, "%s names no endpoints", path);
    if (rc == INE_OK && (out->prefix[0] != '/' || out->prefix[strlen(out->prefix) - 1] != '/'))
        rc = ine_err(INE_EINVAL, "%s: prefix must start and end with '/', not '%s'", path, out->prefix);
    return rc;
}

int commit_conf_etcd_open(const commit_etcd_conf *conf, int timeout_ms, etcd_t **out)
{
    etcd_opts eo = {.endpoints = conf->endpoints,
                    .cacert = conf->cacert[0] ? conf->cacert : NULL,
                    .cert = conf->cert[0] ? conf->cert : NULL,
                    .key = conf->key[0] ? conf->key : NULL,
                    .timeout_ms = timeout_ms ? timeout_ms : conf->timeout_ms};
    return etcd_open(&eo, out);
}

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
