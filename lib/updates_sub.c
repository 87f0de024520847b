/* updates_sub.c — the subscriber's side of the update stream: ZeroMQ's Clone pattern over
 * ine-updates. The SUB socket connects (and subscribes to everything) before the first fetch,
 * so whatever is published while pages are fetched waits in the socket; every record has an
 * Update, so seq N+1 must follow N: a message past that, or a heartbeat naming a head past
 * what was seen, means ZeroMQ dropped some (high-water mark, a restart of either side), and
 * the missing range is fetched from the log through the request endpoint. Messages already
 * accounted for are dropped. Topic prefixes are matched here, after the seq check, which is
 * why the socket itself subscribes to every topic. */
#include "updates.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "err.h"

#define UPDATES__REQ_TIMEOUT_MS 5000

struct updates_sub {
    void *zctx;
    void *sub, *req;
    char req_ep[512];
    char **topics;
    size_t n_topics;
    uint64_t seq;                    /* accounted for up to here */
    uint8_t hash[EVLOG_HASH_LEN];    /* record `seq`'s, once known */
    int hash_known;
    int need_fetch;
    uint64_t fetches;
    updates_msg **queue;             /* matching updates of the last page, not yet returned */
    size_t n_queue, i_queue;
};

static int64_t updates__ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void updates__queue_clear(updates_sub *s)
{
    for (size_t i = s->i_queue; i < s->n_queue; i++) ine__v1__update__free_unpacked(s->queue[i], NULL);
    free(s->queue);
    s->queue = NULL;
    s->n_queue = s->i_queue = 0;
}

/* The REQ socket, made anew after a request that got no answer (its state is then unknown). */
static int updates__req_open(updates_sub *s)
{
    int zero = 0, tmo = UPDATES__REQ_TIMEOUT_MS;
    if (s->req) zmq_close(s->req);
    if (!(s->req = zmq_socket(s->zctx, ZMQ_REQ))) return ine_err(INE_EZMQ, "cannot create a ZeroMQ socket");
    if (zmq_setsockopt(s->req, ZMQ_LINGER, &zero, sizeof zero) || zmq_setsockopt(s->req, ZMQ_RCVTIMEO, &tmo, sizeof tmo) ||
        zmq_setsockopt(s->req, ZMQ_SNDTIMEO, &tmo, sizeof tmo) || zmq_connect(s->req, s->req_ep))
        return ine_err(INE_EZMQ, "cannot connect to the update requests at %s: %s", s->req_ep, zmq_strerror(zmq_errno()));
    return INE_OK;
}

/* Record `seq` with hash `h` is accounted for: it must follow, and a seq seen again must be
 * the same record. 1: new, 0: already accounted for, INE_ECHAIN: another log. */
static int updates__account(updates_sub *s, uint64_t seq, const ProtobufCBinaryData *h)
{
    int have = h->len == EVLOG_HASH_LEN;
    if (seq <= s->seq) {
        if (seq == s->seq && s->hash_known && have && memcmp(s->hash, h->data, EVLOG_HASH_LEN))
            return ine_err(INE_ECHAIN, "update %llu came again with another hash: the stream now comes from another log",
                           (unsigned long long)seq);
        return 0;
    }
    s->seq = seq;
    s->hash_known = have;
    if (have) memcpy(s->hash, h->data, EVLOG_HASH_LEN);
    return 1;
}

/* One page after s->seq: matching updates into the queue, s->seq to the page's end. */
static int updates__fetch(updates_sub *s)
{
    Ine__V1__UpdatesRequest q = INE__V1__UPDATES_REQUEST__INIT;
    Ine__V1__UpdatesPage *p = NULL;
    zmq_msg_t msg;
    uint8_t *buf;
    size_t len;
    int rc = INE_OK;

    q.since_seq = s->seq;
    q.limit = UPDATES_PAGE;
    q.topics = s->topics;
    q.n_topics = s->n_topics;
    len = ine__v1__updates_request__get_packed_size(&q);
    if (!(buf = malloc(len ? len : 1))) return ine_err(INE_ENOMEM, "out of memory");
    ine__v1__updates_request__pack(&q, buf);
    s->fetches++;
    if (zmq_send(s->req, buf, len, 0) < 0) {
        free(buf);
        (void)updates__req_open(s);
        return ine_err(INE_EUNAVAIL, "cannot send to the update requests at %s: %s", s->req_ep, zmq_strerror(zmq_errno()));
    }
    free(buf);
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s->req, 0) < 0) {
        zmq_msg_close(&msg);
        (void)updates__req_open(s);
        return ine_err(INE_EUNAVAIL, "ine-updates at %s did not answer within %d ms", s->req_ep, UPDATES__REQ_TIMEOUT_MS);
    }
    p = ine__v1__updates_page__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
    zmq_msg_close(&msg);
    if (!p) return ine_err(INE_ECORRUPT, "ine-updates at %s answered with something that is not an UpdatesPage", s->req_ep);
    if (p->error && *p->error) {
        rc = ine_err(INE_EINVAL, "ine-updates refused the request: %s", p->error);
        goto out;
    }
    if (p->through_seq < s->seq) {
        rc = ine_err(INE_ECHAIN, "ine-updates' log ends at %llu, before update %llu this subscriber already had",
                     (unsigned long long)p->head_seq, (unsigned long long)s->seq);
        goto out;
    }
    updates__queue_clear(s);
    if (p->n_updates && !(s->queue = calloc(p->n_updates, sizeof *s->queue))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < p->n_updates; i++) {
        updates_msg *u = p->updates[i];
        if (u->seq <= s->seq || u->seq > p->through_seq) {
            rc = ine_err(INE_ECORRUPT, "ine-updates sent update %llu in a page for %llu..%llu", (unsigned long long)u->seq,
                         (unsigned long long)s->seq + 1, (unsigned long long)p->through_seq);
            goto out;
        }
        GUARD_GOTO(updates__account(s, u->seq, &u->sha256), out);
        s->queue[s->n_queue++] = u;
        p->updates[i] = NULL; /* the queue owns it now */
    }
    s->seq = p->through_seq;
    s->hash_known = p->n_updates && s->queue[s->n_queue - 1]->seq == p->through_seq;
    s->need_fetch = p->through_seq < p->head_seq;
out:
    ine__v1__updates_page__free_unpacked(p, NULL);
    return rc;
}

/* One message from the live stream, waiting up to wait_ms: an update to return (*out), or
 * nothing to return (a heartbeat, a duplicate, one that does not match, or a gap found). */
static int updates__live(updates_sub *s, int wait_ms, updates_msg **out)
{
    zmq_pollitem_t it = {s->sub, 0, ZMQ_POLLIN, 0};
    zmq_msg_t topic, body;
    int more = 0, rc = INE_OK;
    size_t more_len = sizeof more;
    *out = NULL;
    if (zmq_poll(&it, 1, wait_ms) <= 0) return INE_OK;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&topic, s->sub, ZMQ_DONTWAIT) < 0) goto out;
    if (zmq_getsockopt(s->sub, ZMQ_RCVMORE, &more, &more_len) || !more) goto out; /* not ours: one frame */
    if (zmq_msg_recv(&body, s->sub, ZMQ_DONTWAIT) < 0) goto out;
    while (zmq_getsockopt(s->sub, ZMQ_RCVMORE, &more, &more_len) == 0 && more) { /* extra frames: drop */
        zmq_msg_t x;
        zmq_msg_init(&x);
        (void)zmq_msg_recv(&x, s->sub, ZMQ_DONTWAIT);
        zmq_msg_close(&x);
    }
    if (zmq_msg_size(&topic) == strlen(UPDATES_HEAD_TOPIC) && !memcmp(zmq_msg_data(&topic), UPDATES_HEAD_TOPIC, 4)) {
        Ine__V1__UpdatesHead *h = ine__v1__updates_head__unpack(NULL, zmq_msg_size(&body), zmq_msg_data(&body));
        if (h) {
            if (h->seq > s->seq) s->need_fetch = 1; /* the messages up to it were lost */
            ine__v1__updates_head__free_unpacked(h, NULL);
        }
        goto out;
    }
    {
        updates_msg *u = ine__v1__update__unpack(NULL, zmq_msg_size(&body), zmq_msg_data(&body));
        if (!u) goto out; /* not an Update: nothing this stream publishes; ignore it */
        if (u->seq > s->seq + 1) {
            s->need_fetch = 1;
            ine__v1__update__free_unpacked(u, NULL);
            goto out;
        }
        rc = updates__account(s, u->seq, &u->sha256);
        if (rc == 1 && updates_topic_match(u->topic, (const char *const *)s->topics, s->n_topics)) {
            *out = u;
            u = NULL;
        }
        if (u) ine__v1__update__free_unpacked(u, NULL);
        if (rc > 0) rc = INE_OK;
    }
out:
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    return rc;
}

int updates_sub_next(updates_sub *s, int timeout_ms, updates_msg **out)
{
    int64_t deadline = timeout_ms < 0 ? -1 : updates__ms() + timeout_ms;
    *out = NULL;
    for (;;) {
        int wait;
        if (s->i_queue < s->n_queue) {
            *out = s->queue[s->i_queue];
            s->queue[s->i_queue++] = NULL;
            return INE_OK;
        }
        if (s->need_fetch) {
            GUARD(updates__fetch(s));
            continue;
        }
        if (deadline < 0) wait = 1000;
        else {
            int64_t left = deadline - updates__ms();
            wait = left <= 0 ? 0 : left > 1000 ? 1000 : (int)left;
        }
        /* Read at least once, also with no time left: what is already queued counts. */
        GUARD(updates__live(s, wait, out));
        if (*out) return INE_OK;
        if (wait == 0 && !s->need_fetch) {
            zmq_pollitem_t it = {s->sub, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 0) <= 0) return INE_EAGAIN;
        }
    }
}

int updates_sub_open(void *zctx, const char *pub_ep, const char *req_ep, uint64_t since_seq, const char *const *topics,
                     size_t n_topics, updates_sub **out)
{
    updates_sub *s;
    int zero = 0, hwm = 10000;
    *out = NULL;
    GUARD(updates_endpoint_check(pub_ep));
    GUARD(updates_endpoint_check(req_ep));
    if (n_topics > UPDATES_MAX_TOPICS) return ine_err(INE_EINVAL, "at most %d topic prefixes, not %zu", UPDATES_MAX_TOPICS, n_topics);
    for (size_t i = 0; i < n_topics; i++) GUARD(updates_topic_check(topics[i]));
    if (strlen(req_ep) >= sizeof s->req_ep) return ine_err(INE_EINVAL, "endpoint '%.60s...' is too long", req_ep);
    if (!(s = calloc(1, sizeof *s))) return ine_err(INE_ENOMEM, "out of memory");
    s->zctx = zctx;
    s->seq = since_seq;
    s->need_fetch = 1;
    strcpy(s->req_ep, req_ep);
    if (n_topics && !(s->topics = calloc(n_topics, sizeof *s->topics))) goto nomem;
    for (; s->n_topics < n_topics; s->n_topics++)
        if (!(s->topics[s->n_topics] = strdup(topics[s->n_topics]))) goto nomem;
    if (!(s->sub = zmq_socket(zctx, ZMQ_SUB)) || zmq_setsockopt(s->sub, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(s->sub, ZMQ_RCVHWM, &hwm, sizeof hwm) || zmq_setsockopt(s->sub, ZMQ_SUBSCRIBE, "", 0) ||
        zmq_connect(s->sub, pub_ep)) {
        int e = zmq_errno();
        updates_sub_close(s);
        return ine_err(INE_EZMQ, "cannot subscribe to the update stream at %s: %s", pub_ep, zmq_strerror(e));
    }
    if (updates__req_open(s) < 0) {
        updates_sub_close(s);
        return INE_EZMQ;
    }
    *out = s;
    return INE_OK;
nomem:
    updates_sub_close(s);
    return ine_err(INE_ENOMEM, "out of memory");
}

uint64_t updates_sub_seq(const updates_sub *s)
{
    /* Updates fetched but not yet returned are not accounted for by the caller yet. */
    return s->i_queue < s->n_queue ? s->queue[s->i_queue]->seq - 1 : s->seq;
}

uint64_t updates_sub_fetches(const updates_sub *s) { return s->fetches; }

void updates_sub_close(updates_sub *s)
{
    if (!s) return;
    updates__queue_clear(s);
    if (s->sub) zmq_close(s->sub);
    if (s->req) zmq_close(s->req);
    for (size_t i = 0; i < s->n_topics; i++) free(s->topics[i]);
    free(s->topics);
    free(s);
}
