/* ine-updates — the node's policy update stream (docs/UPDATES.md): follows the node's event
 * log and publishes one Update per record on a ZeroMQ PUB socket, [topic][Update], then a
 * heartbeat with the log's end ("head", also every second); answers "everything after seq N"
 * from the log on a REP socket, so a subscriber that joined late, fell behind or restarted
 * gets what it missed (lib/updates_sub.c does that for consumers).
 *
 * Pages are built from the log and the projection as it stood at their first seq; a few such
 * states are kept between requests, so a subscriber paging through the history costs one
 * replay, not one per page. Woken by the log's "grew" hint, with a 100 ms timer as the safety
 * net. Read-only on the log. One instance per data dir (flock on run/updates.lock). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "follow.h"
#include "logline.h"
#include "proj.h"
#include "updates.h"

static const char *usage_text =
    "usage: ine-updates [--data-dir DIR] [--node N] [--pub ENDPOINT] [--req ENDPOINT] [--hwm N]\n"
    "\n"
    "Publishes one typed message per change committed to this node's event log (the policy\n"
    "update stream, docs/UPDATES.md) and answers requests for the changes after a given seq.\n"
    "\n"
    "  --data-dir DIR    node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --node N          the node this data dir serves: database updates then say whether this\n"
    "                    node enforces them (enforced_here); without it, only enforcing_nodes\n"
    "  --pub ENDPOINT    where to publish (default ipc://DIR/" UPDATES_PUB_FILE "); ipc://PATH or\n"
    "                    tcp://127.0.0.1:PORT (loopback only)\n"
    "  --req ENDPOINT    where to answer requests (default ipc://DIR/" UPDATES_REQ_FILE ")\n"
    "  --hwm N           messages queued per subscriber before ZeroMQ drops (default 1000);\n"
    "                    a subscriber that lost some fetches them again\n"
    "  -h, --help        this text\n";

#define UPD_TICK_MS 100
#define UPD_HEAD_EVERY_MS 1000
#define UPD_CACHE 4

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

typedef struct {
    int used;
    proj_state st;   /* at st.applied_seq */
    int64_t last_use;
} upd_cached;

typedef struct {
    evlog_t *log;
    follow_t *follow;
    void *pub, *rep;
    uint32_t self;
    proj_state live;           /* the state the published stream is at */
    uint64_t published;        /* the last seq published */
    uint8_t head_hash[EVLOG_HASH_LEN];
    int64_t next_head_ms;
    upd_cached cache[UPD_CACHE];
    int64_t uses;
} upd_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void upd__send_head(upd_t *u)
{
    Ine__V1__UpdatesHead h = INE__V1__UPDATES_HEAD__INIT;
    uint8_t buf[64];
    size_t len;
    h.seq = u->published;
    h.sha256.data = u->head_hash;
    h.sha256.len = u->published ? EVLOG_HASH_LEN : 0;
    len = ine__v1__updates_head__pack(&h, buf);
    if (zmq_send(u->pub, UPDATES_HEAD_TOPIC, strlen(UPDATES_HEAD_TOPIC), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        (void)zmq_send(u->pub, buf, len, ZMQ_DONTWAIT);
    u->next_head_ms = now_ms() + UPD_HEAD_EVERY_MS;
}

/* follow_record_fn: publish the record's Update (every record, unknown types too: seqs on the
 * stream have no hole). A PUB socket never blocks: a subscriber past its high-water mark loses
 * messages, finds the gap by seq and fetches it. */
static int upd__publish(const evlog_record *rec, void *ud)
{
    upd_t *u = ud;
    updates_out o;
    if (updates_build(&u->live, rec->ev, rec->raw, rec->raw_len, u->self, &o) < 0)
        return ine_err(INE_ERR, "seq %llu: %s", (unsigned long long)rec->seq, ine_err_msg());
    evlog_hash(rec->raw, rec->raw_len, u->head_hash);
    if (zmq_send(u->pub, o.topic, strlen(o.topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        (void)zmq_send(u->pub, o.buf, o.len, ZMQ_DONTWAIT);
    updates_out_free(&o);
    u->published = rec->seq;
    return INE_OK;
}

static int upd__advance_rec(const evlog_record *rec, void *ud)
{
    int rc;
    if (!rec->ev) return ine_err(INE_ECORRUPT, "record %llu does not decode", (unsigned long long)rec->seq);
    rc = proj_apply(ud, rec->ev);
    return rc == INE_EUNKNOWN ? 0 : rc;
}

/* A state at exactly `seq` for a page: a cached one at or before it, advanced; else a replay. */
static int upd__state_at(upd_t *u, uint64_t seq, upd_cached **out)
{
    upd_cached *best = NULL, *victim = &u->cache[0];
    for (int i = 0; i < UPD_CACHE; i++) {
        upd_cached *c = &u->cache[i];
        if (!c->used) {
            victim = c;
            continue;
        }
        if (c->st.applied_seq <= seq && (!best || c->st.applied_seq > best->st.applied_seq)) best = c;
        if (victim->used && c->last_use < victim->last_use) victim = c;
    }
    if (!best) {
        best = victim;
        if (best->used) proj_free(&best->st);
        best->used = 0;
        if (seq == 0) proj_init(&best->st);
        else GUARD(proj_build(u->log, seq, &best->st));
        best->used = 1;
    }
    if (best->st.applied_seq < seq) {
        int rc = evlog_iterate(u->log, best->st.applied_seq + 1, seq, 0, upd__advance_rec, &best->st);
        if (rc < 0) {
            proj_free(&best->st);
            best->used = 0;
            return rc;
        }
    }
    best->last_use = ++u->uses;
    *out = best;
    return INE_OK;
}

typedef struct {
    upd_t *u;
    proj_state *st;
    Ine__V1__UpdatesPage *page;
    char **topics;
    size_t n_topics;
    uint64_t through;
} upd_page_ctx;

static int upd__page_rec(const evlog_record *rec, void *ud)
{
    upd_page_ctx *p = ud;
    updates_out o;
    if (!rec->ev) return ine_err(INE_ECORRUPT, "record %llu does not decode", (unsigned long long)rec->seq);
    GUARD(updates_build(p->st, rec->ev, rec->raw, rec->raw_len, p->u->self, &o));
    p->through = rec->seq;
    if (updates_topic_match(o.topic, (const char *const *)p->topics, p->n_topics)) {
        Ine__V1__Update *m = ine__v1__update__unpack(NULL, o.len, o.buf);
        if (!m) {
            updates_out_free(&o);
            return ine_err(INE_ENOMEM, "out of memory");
        }
        p->page->updates[p->page->n_updates++] = m;
    }
    updates_out_free(&o);
    return 0;
}

/* Answer one request: a page, or the reason it was refused. */
static void upd__serve(upd_t *u)
{
    Ine__V1__UpdatesPage page = INE__V1__UPDATES_PAGE__INIT;
    Ine__V1__UpdatesRequest *q = NULL;
    upd_page_ctx pc = {0};
    upd_cached *c = NULL;
    zmq_msg_t msg;
    uint64_t head = 0;
    char err[300] = "";
    uint8_t *buf = NULL;
    size_t len;

    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, u->rep, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return;
    }
    q = ine__v1__updates_request__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
    zmq_msg_close(&msg);
    if (!q) {
        snprintf(err, sizeof err, "the request is not an UpdatesRequest");
        goto reply;
    }
    if (q->n_topics > UPDATES_MAX_TOPICS) {
        snprintf(err, sizeof err, "at most %d topic prefixes, not %zu", UPDATES_MAX_TOPICS, q->n_topics);
        goto reply;
    }
    for (size_t i = 0; i < q->n_topics; i++)
        if (updates_topic_check(q->topics[i]) < 0) {
            snprintf(err, sizeof err, "%s", ine_err_msg());
            goto reply;
        }
    if (evlog_last_seq(u->log, &head) < 0) {
        snprintf(err, sizeof err, "cannot read the log: %s", ine_err_msg());
        goto reply;
    }
    if (q->since_seq > head) {
        snprintf(err, sizeof err, "since_seq %llu is beyond this node's log, which ends at %llu",
                 (unsigned long long)q->since_seq, (unsigned long long)head);
        goto reply;
    }
    page.head_seq = head;
    page.through_seq = q->since_seq;
    if (q->since_seq < head) {
        uint64_t limit = q->limit && q->limit < UPDATES_PAGE ? q->limit : UPDATES_PAGE;
        uint64_t to = q->since_seq + limit < head ? q->since_seq + limit : head;
        if (upd__state_at(u, q->since_seq, &c) < 0 || !(page.updates = calloc(to - q->since_seq, sizeof *page.updates))) {
            snprintf(err, sizeof err, "cannot rebuild the state at seq %llu: %s", (unsigned long long)q->since_seq, ine_err_msg());
            goto reply;
        }
        pc = (upd_page_ctx){u, &c->st, &page, q->topics, q->n_topics, q->since_seq};
        if (evlog_iterate(u->log, q->since_seq + 1, to, 0, upd__page_rec, &pc) < 0) {
            snprintf(err, sizeof err, "reading the log after seq %llu: %s", (unsigned long long)pc.through, ine_err_msg());
            /* The cached state went past what it says: drop it. */
            proj_free(&c->st);
            c->used = 0;
            goto reply;
        }
        page.through_seq = pc.through;
    }
reply:
    if (*err) {
        for (size_t i = 0; i < page.n_updates; i++) ine__v1__update__free_unpacked(page.updates[i], NULL);
        page.n_updates = 0;
        page.through_seq = page.head_seq = 0;
        page.error = err;
        logline(LOGLINE_WARN, u->published, "request refused: %s", err);
    }
    len = ine__v1__updates_page__get_packed_size(&page);
    if ((buf = malloc(len ? len : 1))) {
        ine__v1__updates_page__pack(&page, buf);
        (void)zmq_send(u->rep, buf, len, 0);
    } else {
        (void)zmq_send(u->rep, "", 0, 0); /* REP must answer; the client reads this as garbage */
    }
    free(buf);
    for (size_t i = 0; i < page.n_updates; i++) ine__v1__update__free_unpacked(page.updates[i], NULL);
    free(page.updates);
    if (q) ine__v1__updates_request__free_unpacked(q, NULL);
}

static int upd__bind(void *zctx, int type, const char *ep, int hwm, void **out)
{
    int zero = 0;
    void *s;
    if (!strncmp(ep, "ipc://", 6)) unlink(ep + 6); /* a previous instance's; the flock says none runs */
    if (!(s = zmq_socket(zctx, type))) return ine_err(INE_EZMQ, "cannot create a ZeroMQ socket");
    *out = s;
    if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) || (hwm && zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm)) ||
        zmq_bind(s, ep))
        return ine_err(INE_EZMQ, "cannot listen on %s: %s", ep, zmq_strerror(zmq_errno()));
    if (!strncmp(ep, "ipc://", 6)) chmod(ep + 6, 0600);
    return INE_OK;
}

static int upd_run(const char *dd, uint32_t self, const char *pub_arg, const char *req_arg, int hwm)
{
    char pub_ep[DATADIR_MAX + 32], req_ep[DATADIR_MAX + 32], run_dir[DATADIR_MAX], p[DATADIR_MAX];
    evlog_opts lo = {0};
    upd_t u = {.self = self};
    void *zctx = NULL;
    int rc = INE_OK, lock_fd = -1, fd;

    GUARD(updates_default_endpoints(dd, pub_ep, sizeof pub_ep, req_ep, sizeof req_ep));
    if (pub_arg) snprintf(pub_ep, sizeof pub_ep, "%s", pub_arg);
    if (req_arg) snprintf(req_ep, sizeof req_ep, "%s", req_arg);
    GUARD(updates_endpoint_check(pub_ep));
    GUARD(updates_endpoint_check(req_ep));
    GUARD(datadir_path(dd, "run", run_dir, sizeof run_dir));
    if (mkdir(run_dir, 0700) != 0 && errno != EEXIST) return ine_err(INE_EIO, "cannot create %s: %s", run_dir, strerror(errno));
    GUARD(datadir_path(dd, "run/updates.lock", p, sizeof p));
    if ((lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) return ine_err(INE_EIO, "cannot open %s: %s", p, strerror(errno));
    if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        close(lock_fd);
        return ine_err(INE_EEXIST, "another ine-updates is running on %s (it holds %s)", dd, p);
    }
    proj_init(&u.live);
    GUARD_GOTO(datadir_path(dd, "log", p, sizeof p), out);
    GUARD_GOTO(evlog_opts_from_env(&lo), out);
    lo.read_only = 1;
    /* The log may not exist yet on a node whose mirror has not started: wait for it. */
    while ((rc = evlog_open(p, &lo, &u.log)) == INE_ENOTFOUND && !stop_flag) {
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (stop_flag) goto out;
    GUARD_GOTO(rc, out);
    if (!(zctx = zmq_ctx_new())) {
        rc = ine_err(INE_EZMQ, "cannot create a ZeroMQ context");
        goto out;
    }
    GUARD_GOTO(upd__bind(zctx, ZMQ_PUB, pub_ep, hwm, &u.pub), out);
    GUARD_GOTO(upd__bind(zctx, ZMQ_REP, req_ep, 0, &u.rep), out);
    /* Up to the log's end now, building the state without publishing: nobody can have
     * subscribed before the socket existed, and whoever did since asks for the history. */
    {
        uint64_t head;
        GUARD_GOTO(evlog_last_seq(u.log, &head), out);
        if (head) {
            uint8_t *raw = NULL;
            size_t len;
            GUARD_GOTO(proj_build(u.log, head, &u.live), out);
            GUARD_GOTO(evlog_read_raw(u.log, head, &raw, &len), out);
            evlog_hash(raw, len, u.head_hash);
            free(raw);
            u.published = head;
        }
    }
    GUARD_GOTO(follow_new_records(zctx, u.log, run_dir, u.published, upd__publish, &u, &u.follow), out);
    GUARD_GOTO(fd = follow_fd(u.follow), out);
    logline(LOGLINE_INFO, u.published, "publishing on %s, answering on %s%s", pub_ep, req_ep, self ? "" : " (no --node)");
    upd__send_head(&u);
    while (!stop_flag) {
        zmq_pollitem_t it[2] = {{u.rep, 0, ZMQ_POLLIN, 0}, {NULL, fd, ZMQ_POLLIN, 0}};
        uint64_t before = u.published;
        (void)zmq_poll(it, 2, UPD_TICK_MS);
        if (it[0].revents & ZMQ_POLLIN) upd__serve(&u);
        if (follow_poll(u.follow, 0) < 0) logline(LOGLINE_ERROR, u.published, "follow: %s", ine_err_msg());
        if (u.published != before || now_ms() >= u.next_head_ms) upd__send_head(&u);
    }
    logline(LOGLINE_INFO, u.published, "stopping");
    rc = INE_OK;
out:
    follow_free(u.follow);
    for (int i = 0; i < UPD_CACHE; i++)
        if (u.cache[i].used) proj_free(&u.cache[i].st);
    proj_free(&u.live);
    if (u.pub) zmq_close(u.pub);
    if (u.rep) zmq_close(u.rep);
    if (zctx) zmq_ctx_term(zctx);
    evlog_close(u.log);
    close(lock_fd);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"node", required_argument, 0, 'n'},
                                       {"pub", required_argument, 0, 'p'},      {"req", required_argument, 0, 'r'},
                                       {"hwm", required_argument, 0, 'w'},      {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *dd_arg = NULL, *pub = NULL, *req = NULL;
    struct sigaction sa;
    unsigned long node = 0, hwm = 1000;
    char *end;
    int c, rc;
    logline_init("ine-updates");
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'n':
            node = strtoul(optarg, &end, 10);
            if (!*optarg || *end || node < 1 || node > 0xffffffffUL || optarg[0] == '-' || optarg[0] == '0')
                return fprintf(stderr, "ine-updates: --node takes a node uid (1 or more), not '%s'\n", optarg), 2;
            break;
        case 'p': pub = optarg; break;
        case 'r': req = optarg; break;
        case 'w':
            hwm = strtoul(optarg, &end, 10);
            if (!*optarg || *end || hwm < 1 || hwm > 1000000 || optarg[0] == '-')
                return fprintf(stderr, "ine-updates: --hwm takes 1..1000000 messages, not '%s'\n", optarg), 2;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "ine-updates: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = upd_run(datadir_resolve(dd_arg), (uint32_t)node, pub, req, (int)hwm);
    if (rc < 0) {
        fprintf(stderr, "ine-updates: %s\n", ine_err_msg());
        return 1;
    }
    return 0;
}
