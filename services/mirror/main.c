/* ine-mirror — keeps a node's LMDB log the verified local copy of the log etcd commits.
 *
 * The only writer of the LMDB log when the data dir has an etcd.conf. It reads every committed
 * event after the local head (a range read, in pages), then watches etcd from the revision that
 * read was served at, and appends the events with evlog_append_raw_n, which checks that each
 * seq is head + 1 and links to the head's hash: a record that does not fit stops the mirror
 * with the seq named, never silently. The node's services keep replaying LMDB and get a ZeroMQ
 * hint after each batch; a process of this node that just committed also hands the records
 * over directly (commit.h, COMMIT_NOTES_FILE), which the watch then confirms.
 *
 * What one read brings (a page of the range read, or all the watch has ready) is written in
 * one LMDB transaction: one sync for the lot, so a mirror that fell behind catches up in pages
 * rather than a sync a record. Nothing waits to be grouped. A watch that ends, breaks, or is canceled by a compaction is
 * reopened after another range read: events are never deleted from etcd, so the range read
 * always finds what a compaction took from the watch. Reads are serializable (the local
 * member's view): a node cut off from quorum keeps its log and catches up when it returns.
 * One instance per data dir (flock). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "commit.h"
#include "datadir.h"
#include "err.h"
#include "etcd.h"
#include "evlog.h"
#include "follow.h"
#include "logline.h"

static const char *usage_text =
    "usage: ine-mirror [--data-dir DIR]\n"
    "\n"
    "Copies every event the cluster commits through etcd into this node's event log, in order,\n"
    "checking each record's seq and hash link. The data dir must hold etcd.conf (the etcd\n"
    "members to read from, the node's own first).\n"
    "\n"
    "  --data-dir DIR   node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  -h, --help       this text\n";

#define MIRROR_PAGE 256
#define MIRROR_GROUP_MAX 256  /* the most records one LMDB transaction takes */
#define MIRROR_ERR_DIVERGED 3 /* exit status: the local log disagrees with the cluster's */

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

typedef struct {
    evlog_t *log;
    etcd_t *etcd;
    follow_pub *pub;
    char prefix[160];      /* <conf prefix>log/ev/ */
    uint64_t last;         /* the local head */
    int64_t rev;           /* etcd revision the local log is complete up to */
    int diverged;
    void *notes;           /* PULL: records this node's processes just committed (commit.h) */
    /* The group: records last+1.. of one read, not yet in LMDB (copies of etcd's bytes). */
    uint8_t *grp_raw[MIRROR_GROUP_MAX];
    size_t grp_len[MIRROR_GROUP_MAX];
    size_t n_grp;
} mirror_t;

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (!stop_flag && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The seq an event key names; 0 if the key is not one. */
static uint64_t mirror__seq(const mirror_t *m, const etcd_kv *kv)
{
    size_t plen = strlen(m->prefix);
    char digits[24];
    char *end;
    unsigned long long v;
    if (kv->key_len != plen + 20 || memcmp(kv->key, m->prefix, plen)) return 0;
    memcpy(digits, kv->key + plen, 20);
    digits[20] = 0;
    v = strtoull(digits, &end, 10);
    return *end ? 0 : v;
}

/* 1 when the local record `seq` has these bytes (same SHA-256), 0 when it does not. */
static int mirror__matches(mirror_t *m, uint64_t seq, const uint8_t *val, size_t len)
{
    uint8_t here[EVLOG_HASH_LEN], there[EVLOG_HASH_LEN], *raw = NULL;
    size_t rlen;
    GUARD(evlog_read_raw(m->log, seq, &raw, &rlen));
    evlog_hash(raw, rlen, here);
    free(raw);
    evlog_hash(val, len, there);
    return memcmp(here, there, sizeof here) == 0;
}

static void mirror__group_drop(mirror_t *m)
{
    for (size_t i = 0; i < m->n_grp; i++) free(m->grp_raw[i]);
    m->n_grp = 0;
}

/* Write the group to LMDB in one transaction, then hint the node's services. A record that
 * does not fit the chain marks the mirror diverged; on any failure the group is dropped and
 * the next range read brings those records again. */
static int mirror__flush(mirror_t *m)
{
    int rc;
    if (m->n_grp == 0) return INE_OK;
    rc = evlog_append_raw_n(m->log, m->last + 1, (const uint8_t *const *)m->grp_raw, m->grp_len, m->n_grp);
    if (rc == INE_ECHAIN || rc == INE_ECORRUPT) m->diverged = 1;
    if (rc == INE_OK) m->last += m->n_grp;
    mirror__group_drop(m);
    GUARD(rc);
    (void)follow_pub_hint(m->pub, m->last);
    return INE_OK;
}

/* Take one committed record into the group; records the local log (or the group) already has
 * are checked, not copied. */
static int mirror__take(mirror_t *m, const etcd_kv *kv)
{
    uint64_t seq = mirror__seq(m, kv);
    int rc;
    if (seq == 0) return INE_OK; /* not an event key */
    if (seq <= m->last + m->n_grp) {
        /* Already here (a watch reopened over what the range read copied, or a note's record):
         * it must be the same record, or this node's history is not the cluster's. */
        if (seq <= m->last) GUARD(rc = mirror__matches(m, seq, kv->value, kv->value_len));
        else {
            size_t i = (size_t)(seq - m->last - 1);
            rc = m->grp_len[i] == kv->value_len && !memcmp(m->grp_raw[i], kv->value, kv->value_len);
        }
        if (rc) return INE_OK;
        m->diverged = 1;
        return ine_err(INE_ECHAIN, "record %llu differs from the cluster's record %llu", (unsigned long long)seq,
                       (unsigned long long)seq);
    }
    if (seq != m->last + m->n_grp + 1)
        return ine_err(INE_EAGAIN, "etcd delivered record %llu after %llu: reading the gap", (unsigned long long)seq,
                       (unsigned long long)(m->last + m->n_grp));
    if (m->n_grp == MIRROR_GROUP_MAX) GUARD(mirror__flush(m));
    if (!(m->grp_raw[m->n_grp] = malloc(kv->value_len ? kv->value_len : 1))) return ine_err(INE_ENOMEM, "out of memory");
    memcpy(m->grp_raw[m->n_grp], kv->value, kv->value_len);
    m->grp_len[m->n_grp] = kv->value_len;
    m->n_grp++;
    return INE_OK;
}

/* Records a process of this node just committed, with their bytes (COMMIT_NOTES_FILE): the
 * next one of the log is applied at once (evlog_append_raw checks its seq and link), anything
 * else is left to etcd. Either way the watch delivers each record again, and mirror__apply
 * then checks it byte for byte against what a note put here. */
static void mirror__notes(mirror_t *m)
{
    uint64_t before = m->last;
    for (;;) {
        zmq_msg_t msg;
        const uint8_t *d;
        size_t len;
        uint64_t seq = 0;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, m->notes, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            break;
        }
        d = zmq_msg_data(&msg);
        len = zmq_msg_size(&msg);
        for (int i = 0; len > 8 && i < 8; i++) seq = seq << 8 | d[i];
        if (len > 8 && seq == m->last + 1 && evlog_append_raw(m->log, seq, d + 8, len - 8) == INE_OK) m->last = seq;
        zmq_msg_close(&msg);
    }
    if (m->last > before) (void)follow_pub_hint(m->pub, m->last);
}

static int mirror__notes_open(mirror_t *m, void *zctx, const char *run_dir)
{
    char path[DATADIR_MAX + 64], ep[DATADIR_MAX + 80];
    int zero = 0, hwm = 1024;
    snprintf(path, sizeof path, "%s/" COMMIT_NOTES_FILE, run_dir);
    snprintf(ep, sizeof ep, "ipc://%s", path);
    unlink(path); /* a previous mirror's; flock says none runs now */
    if (!(m->notes = zmq_socket(zctx, ZMQ_PULL))) return ine_err(INE_EZMQ, "cannot create the commit notes socket");
    if (zmq_setsockopt(m->notes, ZMQ_LINGER, &zero, sizeof zero) != 0 || zmq_setsockopt(m->notes, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_bind(m->notes, ep) != 0)
        return ine_err(INE_EZMQ, "cannot listen for commit notes on %s: %s", ep, zmq_strerror(zmq_errno()));
    return INE_OK;
}

/* Whether record `seq` is the same in etcd and here: 1 same, 0 different, INE_ENOTFOUND when
 * etcd (the local member) does not hold it. */
static int mirror__same(mirror_t *m, uint64_t seq)
{
    char key[200];
    etcd_range_req q = {0};
    etcd_range_result r = {0};
    int rc;
    snprintf(key, sizeof key, "%s%020llu", m->prefix, (unsigned long long)seq);
    q.key = key;
    q.key_len = strlen(key);
    q.serializable = 1;
    GUARD(etcd_range(m->etcd, &q, &r));
    rc = r.n == 1 ? mirror__matches(m, seq, r.kvs[0].value, r.kvs[0].value_len) : INE_ENOTFOUND;
    etcd_range_result_free(&r);
    return rc;
}

/* Before copying anything: is the local log a prefix of the cluster's? The hash chain makes
 * "record k is the same" imply the same for every record before it, so when the head differs
 * a binary search finds the first record that does. */
static int mirror__check_prefix(mirror_t *m)
{
    uint64_t lo = 1, hi = m->last;
    int rc;
    if (m->last == 0) return INE_OK;
    rc = mirror__same(m, m->last);
    if (rc == 1 || rc == INE_ENOTFOUND) return INE_OK; /* not there: a lagging member, the watch waits */
    GUARD(rc);
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        rc = mirror__same(m, mid);
        if (rc < 0 && rc != INE_ENOTFOUND) return rc;
        if (rc == 1) lo = mid + 1;
        else hi = mid;
    }
    m->diverged = 1;
    return ine_err(INE_ECHAIN, "record %llu differs from the cluster's record %llu (local head %llu)", (unsigned long long)lo,
                   (unsigned long long)lo, (unsigned long long)m->last);
}

/* Everything after the local head, page by page, at one revision. */
static int mirror__catch_up(mirror_t *m)
{
    uint8_t end[200];
    char from[200];
    size_t plen = strlen(m->prefix), end_len = etcd_prefix_end(m->prefix, plen, end);
    int64_t at = 0;
    uint64_t before = m->last;
    int rc = INE_OK;
    for (;;) {
        etcd_range_req q = {0};
        etcd_range_result r = {0};
        snprintf(from, sizeof from, "%s%020llu", m->prefix, (unsigned long long)(m->last + 1));
        q.key = from;
        q.key_len = strlen(from);
        q.range_end = end;
        q.range_end_len = end_len;
        q.limit = MIRROR_PAGE;
        q.revision = at;
        q.serializable = 1;
        GUARD(etcd_range(m->etcd, &q, &r));
        if (!at) at = r.revision;
        for (size_t i = 0; i < r.n && rc == INE_OK; i++) rc = mirror__take(m, &r.kvs[i]);
        {
            int more = r.more && r.n > 0;
            etcd_range_result_free(&r);
            if (!m->diverged) {
                int frc = mirror__flush(m); /* a page is one transaction */
                if (rc == INE_OK) rc = frc;
            }
            if (rc < 0) return rc;
            if (!more) break;
        }
    }
    m->rev = at;
    if (m->last > before)
        logline(LOGLINE_INFO, m->last, "caught up: records %llu..%llu from etcd", (unsigned long long)before + 1,
                (unsigned long long)m->last);
    return INE_OK;
}

static int mirror__on_watch(const etcd_event *evs, size_t n, int64_t header_rev, void *ud)
{
    mirror_t *m = ud;
    (void)header_rev;
    for (size_t i = 0; i < n; i++) {
        if (evs[i].type != ETCD_EV_PUT) continue;
        GUARD(mirror__take(m, &evs[i].kv));
    }
    return INE_OK;
}

static int mirror_run(const char *dd)
{
    char p[DATADIR_MAX], run_dir[DATADIR_MAX];
    uint8_t end[200];
    commit_etcd_conf conf;
    evlog_opts lo = {0};
    mirror_t m = {0};
    void *zctx = NULL;
    int rc, lock_fd = -1, backoff = 100;

    GUARD(commit_conf_load(dd, &conf));
    GUARD(datadir_path(dd, "run", run_dir, sizeof run_dir));
    GUARD(datadir_create(dd));
    GUARD(datadir_path(dd, "run/mirror.lock", p, sizeof p));
    if ((lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) return ine_err(INE_EIO, "cannot open %s: %s", p, strerror(errno));
    if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        close(lock_fd);
        return ine_err(INE_EEXIST, "another ine-mirror already runs for %s", dd);
    }
    snprintf(m.prefix, sizeof m.prefix, "%s" COMMIT_KEY_EVENTS, conf.prefix);
    GUARD_GOTO(datadir_path(dd, "log", p, sizeof p), out);
    GUARD_GOTO(evlog_opts_from_env(&lo), out);
    lo.copy = 1; /* etcd holds what a crash could undo here */
    GUARD_GOTO(evlog_open(p, &lo, &m.log), out);
    GUARD_GOTO(evlog_last_seq(m.log, &m.last), out);
    /* A page of big records takes a while: 3 s unless etcd.conf says otherwise. */
    GUARD_GOTO(commit_conf_etcd_open(&conf, conf.timeout_ms ? 0 : 3000, &m.etcd), out);
    if (!(zctx = zmq_ctx_new())) {
        rc = ine_err(INE_EZMQ, "cannot create a ZeroMQ context");
        goto out;
    }
    GUARD_GOTO(follow_pub_open(zctx, run_dir, "ine-mirror", &m.pub), out);
    GUARD_GOTO(mirror__notes_open(&m, zctx, run_dir), out);
    logline(LOGLINE_INFO, m.last, "mirroring %s from etcd at %s into %s", conf.prefix, conf.endpoints, dd);
    while (!stop_flag) {
        etcd_watch *w = NULL;
        rc = mirror__check_prefix(&m);
        if (rc == INE_OK) rc = mirror__catch_up(&m);
        if (rc == INE_OK) {
            size_t plen = strlen(m.prefix);
            size_t end_len = etcd_prefix_end(m.prefix, plen, end);
            rc = etcd_watch_open(m.etcd, m.prefix, plen, end, end_len, m.rev + 1, &w);
        }
        while (rc >= 0 && !stop_flag) {
            /* Whichever comes first: a note from a local committer, or etcd's watch. */
            zmq_pollitem_t it[2] = {{m.notes, 0, ZMQ_POLLIN, 0}, {NULL, etcd_watch_fd(w), ZMQ_POLLIN, 0}};
            (void)zmq_poll(it, it[1].fd >= 0 ? 2 : 1, it[1].fd >= 0 ? 500 : 20);
            mirror__notes(&m);
            rc = etcd_watch_poll(w, 0, mirror__on_watch, &m);
            if (rc > 0) backoff = 100;
            if (rc >= 0) {
                int frc = mirror__flush(&m);
                if (frc < 0) rc = frc;
            }
        }
        /* What the group holds before a gap or a broken watch fits the log. */
        if (!m.diverged) (void)mirror__flush(&m);
        mirror__group_drop(&m);
        etcd_watch_close(w);
        if (stop_flag) break;
        if (m.diverged) {
            char why[512];
            snprintf(why, sizeof why, "%s", ine_err_msg());
            rc = ine_err(INE_ECHAIN, "this node's log disagrees with the cluster's: %s", why);
            goto out;
        }
        if (rc == INE_EAGAIN || rc == INE_ENOTFOUND) {
            /* A gap or a compaction: the range read fills it. */
            logline(LOGLINE_INFO, m.last, "%s", ine_err_msg());
            continue;
        }
        logline(LOGLINE_WARN, m.last, "etcd: %s; again in %d ms", ine_err_msg(), backoff);
        nap(backoff);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
    logline(LOGLINE_INFO, m.last, "stopping");
    rc = INE_OK;
out:
    mirror__group_drop(&m);
    if (m.notes) zmq_close(m.notes);
    follow_pub_close(m.pub);
    if (zctx) zmq_ctx_term(zctx);
    etcd_close(m.etcd);
    evlog_close(m.log);
    close(lock_fd);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *dd_arg = NULL;
    struct sigaction sa;
    int c, rc;
    logline_init("ine-mirror");
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "ine-mirror: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = mirror_run(datadir_resolve(dd_arg));
    if (rc < 0) {
        fprintf(stderr, "ine-mirror: %s\n", ine_err_msg());
        return rc == INE_ECHAIN ? MIRROR_ERR_DIVERGED : 1;
    }
    return 0;
}
