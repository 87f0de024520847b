/* follow.c — owns the "log grew" hint sockets (one PUB per appending process, bound in the run
 * directory) and the follower that turns hints and a timer into in-order, exactly-once
 * application of the log. The follower's only source of truth is the log: hints just wake it. */
#include "follow.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include "ine/v1/command.pb-c.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

/* A publisher hinting faster than we drain must not keep one poll busy forever. */
#define FOLLOW__MAX_DRAIN 10000

struct follow_pub {
    void *sock;
    char *path; /* the socket file, removed on close */
    char producer[FOLLOW_MAX_PRODUCER + 1];
};

typedef struct {
    char *endpoint; /* "ipc://<run_dir>/hint-....sock" */
    int seen;       /* found by the current rescan */
} follow__ep;

struct follow {
    void *sub;
    evlog_t *log;
    char *run_dir;
    uint64_t applied;
    uint64_t hints;
    follow_fn fn;
    follow_record_fn rfn;   /* instead of fn: every record, raw bytes and unknown types too */
    void *ud;
    follow__ep *eps;
    size_t n_eps, cap_eps;
    int scan_warned; /* one warning per failure streak, not one per poll */
};

/* --- publisher ------------------------------------------------------------------------------ */

static int follow__producer_ok(const char *producer)
{
    size_t n = producer ? strlen(producer) : 0;
    if (n == 0 || n > FOLLOW_MAX_PRODUCER) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = producer[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int follow_pub_open(void *zctx, const char *run_dir, const char *producer, follow_pub **out)
{
    follow_pub *p = NULL;
    char *endpoint = NULL;
    int rc = INE_OK, linger = 0;

    *out = NULL;
    if (!zctx || !run_dir || !*run_dir) return ine_err(INE_EINVAL, "hint publisher needs a zmq context and a run directory");
    if (!follow__producer_ok(producer))
        return ine_err(INE_EINVAL, "producer name must be 1..%d characters of [A-Za-z0-9._-]", FOLLOW_MAX_PRODUCER);
    if (mkdir(run_dir, 0700) != 0 && errno != EEXIST)
        return ine_err(INE_EIO, "cannot create run directory %s: %s", run_dir, strerror(errno));
    if (!(p = calloc(1, sizeof *p))) return ine_err(INE_ENOMEM, "out of memory");
    snprintf(p->producer, sizeof p->producer, "%s", producer);
    if (asprintf(&p->path, "%s/hint-%s-%ld.sock", run_dir, producer, (long)getpid()) < 0) {
        p->path = NULL;
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto err;
    }
    if (strlen(p->path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        rc = ine_err(INE_EINVAL, "hint socket path %s is longer than a unix socket allows (%zu bytes)", p->path,
                     sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        goto err;
    }
    if (asprintf(&endpoint, "ipc://%s", p->path) < 0) {
        endpoint = NULL;
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto err;
    }
    if (!(p->sock = zmq_socket(zctx, ZMQ_PUB))) {
        rc = ine__err_zmq("zmq_socket(ZMQ_PUB)");
        goto err;
    }
    /* Hints are disposable: closing must never wait for a slow subscriber. */
    GUARD_ZMQ(zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger), err);
    GUARD_ZMQ(zmq_bind(p->sock, endpoint), err);
    free(endpoint);
    *out = p;
    return INE_OK;

err:
    if (p->sock) zmq_close(p->sock);
    free(endpoint);
    free(p->path);
    free(p);
    return rc;
}

int follow_pub_hint(follow_pub *p, uint64_t last_seq)
{
    Ine__V1__LogHint h = INE__V1__LOG_HINT__INIT;
    uint8_t buf[16 + FOLLOW_MAX_PRODUCER];
    size_t len;

    h.last_seq = last_seq;
    h.producer = p->producer;
    len = ine__v1__log_hint__get_packed_size(&h);
    if (len > sizeof buf) return ine_err(INE_EINVAL, "log hint of %zu bytes does not fit", len);
    ine__v1__log_hint__pack(&h, buf);
    if (zmq_send(p->sock, buf, len, ZMQ_DONTWAIT) == -1) {
        /* A full queue drops the hint: followers still catch up on their timer. */
        if (errno == EAGAIN || errno == EINTR) return INE_OK;
        return ine__err_zmq("zmq_send(log hint)");
    }
    return INE_OK;
}

void follow_pub_close(follow_pub *p)
{
    if (!p) return;
    zmq_close(p->sock);
    /* A follower rescanning the directory then stops reconnecting to a dead endpoint. */
    if (unlink(p->path) != 0 && errno != ENOENT)
        logline(LOGLINE_WARN, 0, "cannot remove hint socket %s: %s", p->path, strerror(errno));
    free(p->path);
    free(p);
}

/* --- follower: publishers ------------------------------------------------------------------- */

static int follow__ep_add(follow_t *f, char *endpoint)
{
    if (f->n_eps == f->cap_eps) {
        size_t cap = f->cap_eps ? f->cap_eps * 2 : 8;
        follow__ep *n = realloc(f->eps, cap * sizeof *n);
        if (!n) return ine_err(INE_ENOMEM, "out of memory");
        f->eps = n;
        f->cap_eps = cap;
    }
    f->eps[f->n_eps].endpoint = endpoint;
    f->eps[f->n_eps].seen = 1;
    f->n_eps++;
    return INE_OK;
}

static follow__ep *follow__ep_find(follow_t *f, const char *endpoint)
{
    for (size_t i = 0; i < f->n_eps; i++)
        if (!strcmp(f->eps[i].endpoint, endpoint)) return &f->eps[i];
    return NULL;
}

/* Connect to hint sockets that appeared since the last scan and drop those whose file is
 * gone. readdir+fnmatch rather than glob(3): a run_dir with glob metacharacters still works. */
static int follow__scan(follow_t *f)
{
    DIR *d;
    struct dirent *de;
    int rc = INE_OK;

    for (size_t i = 0; i < f->n_eps; i++) f->eps[i].seen = 0;
    if (!(d = opendir(f->run_dir))) {
        /* No run directory yet: no publisher yet. */
        if (errno != ENOENT) return ine_err(INE_EIO, "cannot read run directory %s: %s", f->run_dir, strerror(errno));
    } else {
        while ((de = readdir(d))) {
            char *endpoint;
            follow__ep *ep;
            if (fnmatch("hint-*.sock", de->d_name, FNM_PERIOD) != 0) continue;
            if (asprintf(&endpoint, "ipc://%s/%s", f->run_dir, de->d_name) < 0) {
                rc = ine_err(INE_ENOMEM, "out of memory");
                break;
            }
            if ((ep = follow__ep_find(f, endpoint))) {
                ep->seen = 1;
                free(endpoint);
                continue;
            }
            /* Remembered even if the connect fails, so a bad endpoint warns once, not per poll. */
            if (zmq_connect(f->sub, endpoint) == -1)
                logline(LOGLINE_WARN, 0, "cannot subscribe to hints at %s: %s (following on the timer)", endpoint,
                        zmq_strerror(errno));
            if ((rc = follow__ep_add(f, endpoint)) < 0) {
                free(endpoint);
                break;
            }
        }
        closedir(d);
    }
    for (size_t i = 0; i < f->n_eps;) {
        if (f->eps[i].seen) {
            i++;
            continue;
        }
        /* May fail if the connect did; either way the endpoint is forgotten. */
        (void)zmq_disconnect(f->sub, f->eps[i].endpoint);
        free(f->eps[i].endpoint);
        f->eps[i] = f->eps[--f->n_eps];
    }
    return rc;
}

/* Hints are optional, progress is not: a scan failure is reported once, then polling goes on. */
static void follow__rescan(follow_t *f)
{
    if (follow__scan(f) < 0) {
        if (!f->scan_warned) logline(LOGLINE_WARN, 0, "%s (following on the timer)", ine_err_msg());
        f->scan_warned = 1;
    } else {
        f->scan_warned = 0;
    }
}

static int follow__new(void *zctx, evlog_t *log, const char *run_dir, uint64_t applied_seq, follow_fn fn,
                       follow_record_fn rfn, void *ud, follow_t **out)
{
    follow_t *f;
    uint64_t last;
    int rc = INE_OK, linger = 0;

    *out = NULL;
    if (!zctx || !log || !run_dir || !*run_dir || (!fn && !rfn))
        return ine_err(INE_EINVAL, "follower needs a zmq context, a log, a run directory and a function");
    /* State built beyond the log's end came from another log: following would silently wait
     * for seqs that already mean something else. */
    GUARD(evlog_last_seq(log, &last));
    if (applied_seq > last)
        return ine_err(INE_ECHAIN, "the follower has applied up to seq %llu but the log ends at seq %llu "
                                   "(the log was truncated or replaced)",
                       (unsigned long long)applied_seq, (unsigned long long)last);
    if (!(f = calloc(1, sizeof *f))) return ine_err(INE_ENOMEM, "out of memory");
    f->log = log;
    f->applied = applied_seq;
    f->fn = fn;
    f->rfn = rfn;
    f->ud = ud;
    if (!(f->run_dir = strdup(run_dir))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto err;
    }
    if (!(f->sub = zmq_socket(zctx, ZMQ_SUB))) {
        rc = ine__err_zmq("zmq_socket(ZMQ_SUB)");
        goto err;
    }
    GUARD_ZMQ(zmq_setsockopt(f->sub, ZMQ_LINGER, &linger, sizeof linger), err);
    GUARD_ZMQ(zmq_setsockopt(f->sub, ZMQ_SUBSCRIBE, "", 0), err);
    /* Connect now so subscriptions have propagated by the first poll. */
    follow__rescan(f);
    *out = f;
    return INE_OK;

err:
    if (f->sub) zmq_close(f->sub);
    free(f->run_dir);
    free(f);
    return rc;
}

void follow_free(follow_t *f)
{
    if (!f) return;
    zmq_close(f->sub);
    for (size_t i = 0; i < f->n_eps; i++) free(f->eps[i].endpoint);
    free(f->eps);
    free(f->run_dir);
    free(f);
}

/* --- follower: applying --------------------------------------------------------------------- */

/* fn's own sentence, prefixed with the seq it failed on. */
static int follow__fn_failed(int rc, uint64_t seq)
{
    char why[400];
    snprintf(why, sizeof why, "%s", ine_err_msg());
    if (!*why) snprintf(why, sizeof why, "applying the event failed (%s)", ine_strerror(rc));
    return ine_err(rc, "seq %llu: %s", (unsigned long long)seq, why);
}

int follow_new(void *zctx, evlog_t *log, const char *run_dir, uint64_t applied_seq, follow_fn fn, void *ud,
               follow_t **out)
{
    return follow__new(zctx, log, run_dir, applied_seq, fn, NULL, ud, out);
}

int follow_new_records(void *zctx, evlog_t *log, const char *run_dir, uint64_t applied_seq, follow_record_fn fn, void *ud,
                       follow_t **out)
{
    return follow__new(zctx, log, run_dir, applied_seq, NULL, fn, ud, out);
}

static int follow__apply(const evlog_record *rec, void *ud)
{
    follow_t *f = ud;
    unsigned long long s = rec->seq;
    int rc;

    /* The iterator seeks by range; a hole in the keys would otherwise pass unnoticed. */
    if (rec->seq != f->applied + 1)
        return ine_err(INE_ECHAIN, "seq %llu: record is missing from the log (the next record is %llu)",
                       (unsigned long long)(f->applied + 1), s);
    if (!rec->ev)
        return ine_err(INE_ECORRUPT, "seq %llu: record does not decode as an event; not skipped (run ine-log verify)", s);
    if (rec->ev->seq != rec->seq)
        return ine_err(INE_ECORRUPT, "seq %llu: record says it is seq %llu", s, (unsigned long long)rec->ev->seq);
    if (f->rfn) {
        if ((rc = f->rfn(rec, f->ud)) < 0) return follow__fn_failed(rc, rec->seq);
    } else if (rec->ev->body_case == INE__V1__EVENT__BODY__NOT_SET) {
        /* A newer version's event type: nothing here can apply it, and stalling on it forever
         * would stop every later event too. */
        logline(LOGLINE_WARN, rec->seq, "seq %llu: unknown event type, skipped", s);
    } else if ((rc = f->fn(rec->ev, rec->seq, f->ud)) < 0) {
        return follow__fn_failed(rc, rec->seq);
    }
    f->applied = rec->seq;
    return 0;
}

int follow_catch_up(follow_t *f)
{
    uint64_t before = f->applied;
    /* Corrupt records reach follow__apply (tolerated by the iterator) so it names them itself. */
    int rc = evlog_iterate(f->log, f->applied + 1, 0, 1, follow__apply, f);
    if (rc < 0) return rc;
    return f->applied - before > INT_MAX ? INT_MAX : (int)(f->applied - before);
}

int follow_wait_ready(follow_t *f, int (*ready)(void *ud), void *ud, const char *what)
{
    int said = 0;
    for (;;) {
        int rc = follow_catch_up(f);
        if (rc < 0) return rc;
        if (ready(ud)) {
            if (said) logline(LOGLINE_INFO, f->applied, "the log now holds %s", what);
            return INE_OK;
        }
        if (!said++) logline(LOGLINE_INFO, f->applied, "waiting for the log to hold %s (ine-mirror brings it from etcd)", what);
        {
            struct timespec ts = {0, 200 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}

static int follow__drain(follow_t *f)
{
    char buf[128];
    /* The content is deliberately ignored: only the log says what to apply. */
    for (int i = 0; i < FOLLOW__MAX_DRAIN; i++) {
        if (zmq_recv(f->sub, buf, sizeof buf, ZMQ_DONTWAIT) == -1) {
            if (errno == EAGAIN || errno == EINTR) return INE_OK;
            return ine__err_zmq("zmq_recv(log hint)");
        }
        f->hints++;
    }
    return INE_OK;
}

int follow_poll(follow_t *f, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = f->sub, .events = ZMQ_POLLIN};

    if (timeout_ms < 0) return ine_err(INE_EINVAL, "follow_poll needs a finite timeout: the timer is what survives lost hints");
    follow__rescan(f);
    /* A signal cutting the wait short only brings the catch-up forward. */
    if (zmq_poll(&it, 1, timeout_ms) == -1 && errno != EINTR) return ine__err_zmq("zmq_poll(hint socket)");
    GUARD(follow__drain(f));
    return follow_catch_up(f);
}

int follow_wait_seq(follow_t *f, uint64_t seq, int timeout_ms)
{
    int64_t deadline = ine_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);

    GUARD(follow_catch_up(f));
    while (f->applied < seq) {
        int64_t left = deadline - ine_clock_mono_ms();
        if (left <= 0)
            return ine_err(INE_EAGAIN, "the follower reached seq %llu, not %llu, within %d ms",
                           (unsigned long long)f->applied, (unsigned long long)seq, timeout_ms);
        GUARD(follow_poll(f, left < FOLLOW_TIMER_MS ? (int)left : FOLLOW_TIMER_MS));
    }
    return INE_OK;
}

uint64_t follow_applied(const follow_t *f) { return f->applied; }
uint64_t follow_hints(const follow_t *f) { return f->hints; }

int follow_fd(follow_t *f)
{
    int fd = -1, rc = INE_OK;
    size_t len = sizeof fd;
    GUARD_ZMQ(zmq_getsockopt(f->sub, ZMQ_FD, &fd, &len), err);
    return fd;
err:
    return rc;
}
