/* etcd_watch.c — etcd.h's watches: one chunked response per watch on its own easy handle,
 * driven by a multi handle so a poll can wait with a timeout, lines buffered until '\n', and
 * the sockets tracked by curl callbacks so an outside poll() can wait on them. */
#include "etcd_int.h"
#include "clock.h"
#include "err.h"
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct etcd_watch {
    CURLM *multi;
    CURL *easy;
    struct curl_slist *headers;
    char *ep;                /* the endpoint streaming to us, for messages */
    etcd__buf buf;
    size_t scanned;          /* bytes of buf already searched for '\n' */
    int done;                /* the transfer ended; `result` says how */
    CURLcode result;
    int too_long;
    int term_rc;             /* once the watch is over, every poll returns this */
    int64_t compact_rev;
    int socks[2];            /* sockets open for the stream, newest last; -1: none */
    char cerr[CURL_ERROR_SIZE];
};

/* --- watches -------------------------------------------------------------------------------------- */

static size_t etcd__watch_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    etcd_watch *w = ud;
    size_t n = size * nmemb;
    if (w->buf.len + n > ETCD__MAX_LINE && !memchr(w->buf.data ? w->buf.data : "", '\n', w->buf.len)) {
        w->too_long = 1;
        return 0;
    }
    return etcd__buf_add(&w->buf, ptr, n) == 0 ? n : 0;
}

/* CURLINFO_ACTIVESOCKET only knows a connection once its transfer is done (or with
 * CONNECT_ONLY), so the watch opens and closes its sockets itself and remembers the live
 * ones: a name with two addresses may race two connects, and the loser is closed. */
static curl_socket_t etcd__watch_open_cb(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    etcd_watch *w = ud;
    int s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    (void)purpose;
    if (s < 0) return CURL_SOCKET_BAD;
    if (w->socks[1] >= 0) w->socks[0] = w->socks[1];
    w->socks[1] = s;
    return s;
}

static int etcd__watch_close_cb(void *ud, curl_socket_t s)
{
    etcd_watch *w = ud;
    if (w->socks[1] == s) w->socks[1] = w->socks[0], w->socks[0] = -1;
    if (w->socks[0] == s) w->socks[0] = -1;
    return close(s);
}

static void etcd__watch_stop(etcd_watch *w)
{
    if (w->easy) {
        curl_multi_remove_handle(w->multi, w->easy);
        curl_easy_cleanup(w->easy);
        w->easy = NULL;
    }
    w->buf.len = 0;
    w->scanned = 0;
    w->done = 0;
    w->result = CURLE_OK;
    w->too_long = 0;
}

static int etcd__watch_start(etcd_watch *w, const etcd_t *e, const char *ep, const char *body, int64_t connect_ms)
{
    char url[1024];
    CURLcode cc;
    CURLMcode mc;
    etcd__watch_stop(w);
    free(w->ep);
    if (!(w->ep = strdup(ep)) || !(w->easy = curl_easy_init())) return ine_err(INE_ENOMEM, "out of memory");
    snprintf(url, sizeof url, "%s/v3/watch", ep);
    w->cerr[0] = 0;
    if (etcd__common_opts(w->easy, w->headers, w->cerr) < 0 || etcd__tls_opts(w->easy, e->cacert, e->cert, e->key) < 0)
        return ine_err(INE_ERR, "libcurl refused an option for an etcd watch");
    cc = curl_easy_setopt(w->easy, CURLOPT_URL, url);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_COPYPOSTFIELDS, body);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, etcd__watch_write_cb);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_OPENSOCKETFUNCTION, etcd__watch_open_cb);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_OPENSOCKETDATA, w);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_CLOSESOCKETFUNCTION, etcd__watch_close_cb);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_CLOSESOCKETDATA, w);
    /* No overall timeout (the stream lasts); a bounded connect, and TCP keepalives to notice a
     * member that vanished without a FIN. */
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_ms > 0 ? connect_ms : 1));
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPIDLE, 10L);
    if (cc == CURLE_OK) cc = curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPINTVL, 5L);
    if (cc != CURLE_OK) return ine_err(INE_ERR, "libcurl refused an option for an etcd watch: %s", curl_easy_strerror(cc));
    if ((mc = curl_multi_add_handle(w->multi, w->easy)) != CURLM_OK)
        return ine_err(INE_ERR, "libcurl cannot start an etcd watch: %s", curl_multi_strerror(mc));
    return INE_OK;
}

static int etcd__watch_perform(etcd_watch *w)
{
    int running = 0, left;
    CURLMcode mc;
    CURLMsg *msg;
    if ((mc = curl_multi_perform(w->multi, &running)) != CURLM_OK)
        return ine_err(INE_EIO, "etcd watch on %s: libcurl failed: %s", w->ep, curl_multi_strerror(mc));
    while ((msg = curl_multi_info_read(w->multi, &left)))
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == w->easy) {
            w->done = 1;
            w->result = msg->data.result;
        }
    return INE_OK;
}

/* The first '\n' in the buffer, or NULL. Bytes searched before are not searched again: a
 * multi-MB line arrives in many pieces. */
static char *etcd__watch_line_end(etcd_watch *w)
{
    char *nl;
    if (w->scanned >= w->buf.len) return NULL;
    nl = memchr(w->buf.data + w->scanned, '\n', w->buf.len - w->scanned);
    w->scanned = nl ? (size_t)(nl - w->buf.data) : w->buf.len;
    return nl;
}

/* Move the transfer on; unless a line is complete already, wait up to wait_ms for more. */
static int etcd__watch_pump(etcd_watch *w, int wait_ms)
{
    CURLMcode mc;
    if (w->done) return INE_OK;
    GUARD(etcd__watch_perform(w));
    if (w->done || wait_ms <= 0 || etcd__watch_line_end(w)) return INE_OK;
    if ((mc = curl_multi_poll(w->multi, NULL, 0, wait_ms, NULL)) != CURLM_OK)
        return ine_err(INE_EIO, "etcd watch on %s: waiting failed: %s", w->ep, curl_multi_strerror(mc));
    return etcd__watch_perform(w);
}

static long etcd__watch_status(const etcd_watch *w)
{
    long st = 0;
    if (w->easy) curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &st);
    return st;
}

/* Why a finished transfer finished, as the code the poll returns. */
static int etcd__watch_ended(etcd_watch *w)
{
    long st = etcd__watch_status(w);
    if (w->too_long)
        return ine_err(INE_ECORRUPT, "etcd watch on %s: a message longer than %u bytes", w->ep, ETCD__MAX_LINE);
    if (w->result == CURLE_OK && st != 200 && st != 0) return etcd__http_err(st, w->ep, "/v3/watch", w->buf.data, w->buf.len);
    if (w->result == CURLE_OK) return ine_err(INE_EUNAVAIL, "etcd at %s ended the watch stream", w->ep);
    return ine_err(etcd__curl_rc(w->result), "etcd watch on %s broke: %s", w->ep, etcd__cerr(w->cerr, w->result));
}

int etcd_watch_open(etcd_t *e, const void *key, size_t key_len, const void *range_end, size_t range_end_len,
                    int64_t start_revision, etcd_watch **out)
{
    etcd_watch *w = NULL;
    json_t *req = NULL, *create;
    char *body = NULL;
    int64_t deadline;
    int rc = INE_EUNAVAIL;
    *out = NULL;
    if (!(w = calloc(1, sizeof *w)) || !(w->multi = curl_multi_init()) || !(w->headers = etcd__headers()) ||
        !(req = json_object()) || !(create = json_object()) || json_object_set_new(req, "create_request", create) != 0 ||
        etcd__set_b64(create, "key", key ? key : "", key_len) != 0 || etcd__set_range_end(create, range_end, range_end_len) != 0 ||
        (start_revision && etcd__set_i64(create, "start_revision", start_revision) != 0) ||
        json_object_set_new(create, "fragment", json_true()) != 0 || !(body = json_dumps(req, JSON_COMPACT))) {
        rc = ine_err(INE_ENOMEM, "out of memory opening an etcd watch");
        goto fail;
    }
    w->socks[0] = w->socks[1] = -1;
    /* Wait for the first message (etcd's "created") so that a refused connection can move on
     * to the next endpoint, and an error comes back from here rather than from the first poll. */
    deadline = ine_clock_mono_ms() + e->timeout_ms;
    for (size_t i = 0; i < e->n_eps; i++) {
        size_t idx = (e->cur + i) % e->n_eps;
        int64_t left = deadline - ine_clock_mono_ms();
        char *nl = NULL;
        if (left <= 0 && i > 0) break;
        /* As for requests: the whole open keeps to the handle's timeout. */
        GUARD_GOTO(etcd__watch_start(w, e, e->eps[idx], body, left / (int64_t)(e->n_eps - i)), fail);
        while (!(nl = etcd__watch_line_end(w)) && !w->done) {
            left = deadline - ine_clock_mono_ms();
            if (left <= 0) break;
            GUARD_GOTO(etcd__watch_pump(w, (int)left), fail);
        }
        if (nl) {
            json_t *first = json_loadb(w->buf.data, (size_t)(nl - w->buf.data), 0, NULL);
            const char *words;
            long st = 200;
            if (first && (words = etcd__err_words(first, &st))) {
                rc = ine_err(etcd__http_rc(st == 200 ? 500 : st), "etcd at %s refused the watch: %s", w->ep, words);
                json_decref(first);
                goto fail;
            }
            json_decref(first);
            w->scanned = 0;
            e->cur = idx;
            *out = w;
            rc = INE_OK;
            goto out;
        }
        if (!w->done) {
            rc = ine_err(INE_EUNAVAIL, "etcd at %s did not start the watch within %d ms", w->ep, e->timeout_ms);
            goto fail;
        }
        if (w->result == CURLE_OK || !etcd__unsent(w->easy, w->result)) {
            rc = etcd__watch_ended(w);
            goto fail;
        }
        rc = ine_err(etcd__curl_rc(w->result), "no etcd endpoint took the watch (%zu tried; %s: %s)", i + 1, w->ep,
                     etcd__cerr(w->cerr, w->result));
    }
fail:
    etcd_watch_close(w);
out:
    free(body);
    json_decref(req);
    return rc;
}

/* Hand one line to fn: 1 if it was a batch of events, 0 if not, or a negative code. */
static int etcd__watch_line(etcd_watch *w, const char *line, size_t len, etcd_watch_fn fn, void *ud)
{
    json_error_t jerr;
    json_t *j = json_loadb(line, len, 0, &jerr), *res, *evs;
    etcd_event *ev = NULL;
    size_t n = 0, cnt;
    int64_t rev = 0;
    const char *words;
    long st = 200;
    int rc = 0;
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return ine_err(INE_ECORRUPT, "etcd watch on %s sent a line that is not a JSON object (%s)", w->ep,
                       j ? "not an object" : jerr.text);
    }
    if (json_object_get(j, "error") && (words = etcd__err_words(j, &st))) {
        rc = ine_err(etcd__http_rc(st == 200 ? 500 : st), "etcd at %s broke off the watch: %s", w->ep, words);
        goto out;
    }
    res = json_object_get(j, "result");
    evs = json_object_get(res, "events");
    if (!json_is_object(res) || etcd__header_rev(res, &rev) < 0 || (evs && !json_is_array(evs))) {
        rc = ine_err(INE_ECORRUPT, "etcd watch on %s sent a message that does not decode", w->ep);
        goto out;
    }
    if (etcd__bool(res, "canceled")) {
        const char *why = json_string_value(json_object_get(res, "cancel_reason"));
        if (etcd__i64(res, "compact_revision", "compactRevision", &w->compact_rev) < 0) w->compact_rev = 0;
        if (w->compact_rev > 0)
            rc = ine_err(INE_ENOTFOUND, "etcd at %s canceled the watch: its start revision was compacted (up to %lld)", w->ep,
                         (long long)w->compact_rev);
        else
            rc = ine_err(INE_EUNAVAIL, "etcd at %s canceled the watch%s%s", w->ep, why ? ": " : "", why ? why : "");
        w->term_rc = rc;
        goto out;
    }
    if (!(cnt = json_array_size(evs))) goto out;
    if (!(ev = calloc(cnt, sizeof *ev))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    for (; n < cnt; n++) {
        json_t *je = json_array_get(evs, n);
        const char *type = json_string_value(json_object_get(je, "type"));
        if (!json_is_object(je) || etcd__kv_decode(json_object_get(je, "kv"), &ev[n].kv) < 0) {
            rc = ine_err(INE_ECORRUPT, "etcd watch on %s sent event %zu that does not decode", w->ep, n);
            goto out;
        }
        ev[n].type = type && !strcmp(type, "DELETE") ? ETCD_EV_DELETE : ETCD_EV_PUT;
    }
    rc = fn(ev, n, rev, ud);
    if (rc >= 0) rc = 1;
out:
    for (size_t i = 0; i < n; i++) etcd__kv_free(&ev[i].kv);
    free(ev);
    json_decref(j);
    return rc;
}

/* Deliver every complete line buffered; returns batches delivered or a negative code. */
static int etcd__watch_drain(etcd_watch *w, etcd_watch_fn fn, void *ud)
{
    size_t start = 0;
    int delivered = 0, rc = 0;
    char *nl;
    while ((nl = etcd__watch_line_end(w))) {
        size_t end = (size_t)(nl - w->buf.data);
        /* An empty line carries nothing. */
        if (end > start) rc = etcd__watch_line(w, w->buf.data + start, end - start, fn, ud);
        start = w->scanned = end + 1;
        if (rc < 0) break;
        delivered += rc;
    }
    if (start) {
        memmove(w->buf.data, w->buf.data + start, w->buf.len - start);
        w->buf.len -= start;
        w->buf.data[w->buf.len] = 0;
    }
    /* After a stop, lines may be left: search them again next time. */
    w->scanned = rc < 0 ? 0 : w->buf.len;
    return rc < 0 ? rc : delivered;
}

int etcd_watch_poll(etcd_watch *w, int timeout_ms, etcd_watch_fn fn, void *ud)
{
    int64_t deadline = ine_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int got;
    if (w->term_rc) {
        return w->term_rc == INE_ENOTFOUND
                   ? ine_err(INE_ENOTFOUND, "etcd at %s canceled the watch: its start revision was compacted (up to %lld)",
                             w->ep, (long long)w->compact_rev)
                   : ine_err(w->term_rc, "etcd watch on %s is over; open it again", w->ep);
    }
    for (;;) {
        int64_t left = deadline - ine_clock_mono_ms();
        GUARD(etcd__watch_pump(w, left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left));
        if ((got = etcd__watch_drain(w, fn, ud)) != 0) return got;
        if (w->done) {
            /* A last message without its '\n'. */
            if (w->buf.len && etcd__watch_status(w) == 200) {
                got = etcd__watch_line(w, w->buf.data, w->buf.len, fn, ud);
                w->buf.len = w->scanned = 0;
                if (got != 0) return got;
            }
            if (!w->term_rc) w->term_rc = etcd__watch_ended(w);
            return w->term_rc;
        }
        if (ine_clock_mono_ms() >= deadline) return 0;
    }
}

int64_t etcd_watch_compact_revision(const etcd_watch *w) { return w ? w->compact_rev : 0; }

int etcd_watch_fd(const etcd_watch *w)
{
    curl_socket_t s = CURL_SOCKET_BAD;
    if (!w || !w->easy || w->done) return -1;
    if (curl_easy_getinfo(w->easy, CURLINFO_ACTIVESOCKET, &s) == CURLE_OK && s != CURL_SOCKET_BAD) return (int)s;
    return w->socks[1];
}

void etcd_watch_close(etcd_watch *w)
{
    if (!w) return;
    if (w->easy) {
        curl_multi_remove_handle(w->multi, w->easy);
        curl_easy_cleanup(w->easy);
    }
    if (w->multi) curl_multi_cleanup(w->multi);
    curl_slist_free_all(w->headers);
    free(w->ep);
    free(w->buf.data);
    free(w);
}
