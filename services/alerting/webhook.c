/* webhook.c — every raise and clear as an HTTP POST of JSON, delivered by one worker thread
 * through libcurl so the service loop never waits on a receiver.
 *
 * The loop only appends to a bounded queue. The worker posts the oldest body; a 2xx answer
 * delivers it (the cursor file then records its seq, so a restart does not post it again),
 * anything else is retried with exponential back-off, in order, for as long as the service
 * runs. Delivery is at least once: a crash between a post and its cursor write repeats it.
 * Receivers tell repeats apart by "seq". */
#include "alerting.h"
#include "err.h"
#include "logline.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HOOK_QUEUE_MAX 4096
#define HOOK_BACKOFF_MIN_MS 250
#define HOOK_CONNECT_TIMEOUT_MS 3000L
#define HOOK_TIMEOUT_MS 10000L

typedef struct {
    uint64_t seq;
    char *body;
} hook_item;

struct alerting_hook {
    char *url;
    char url_shown[256];
    char *cursor_path;
    int backoff_max_ms;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* queue grew, or stop */
    hook_item q[HOOK_QUEUE_MAX]; /* ring */
    size_t head, n;
    atomic_int stop;
    uint64_t delivered, failures, dropped;
};

void alerting_url_redact(const char *url, char *buf, size_t len)
{
    const char *scheme = strstr(url, "://"), *host = scheme ? scheme + 3 : url;
    const char *end = host + strcspn(host, "/?#"), *at = memchr(host, '@', (size_t)(end - host));
    size_t path = strcspn(end, "?#");
    snprintf(buf, len, "%.*s%s%.*s%.*s%s", (int)(host - url), url, at ? "***@" : "", (int)(end - (at ? at + 1 : host)),
             at ? at + 1 : host, (int)path, end, end[path] ? "?..." : "");
}

int alerting_hook_cursor_read(const char *path, uint64_t *seq)
{
    char buf[32] = {0}, *end;
    FILE *f = fopen(path, "r");
    unsigned long long v;
    if (!f) {
        if (errno == ENOENT) return INE_ENOTFOUND;
        return ine_err(INE_EIO, "cannot read the webhook cursor %s: %s", path, strerror(errno));
    }
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    v = strtoull(buf, &end, 10);
    if (end == buf || (*end && *end != '\n')) return ine_err(INE_ECORRUPT, "webhook cursor %s does not hold a seq", path);
    *seq = v;
    return INE_OK;
}

/* Replace the cursor file in one step, so a crash leaves the old or the new seq. */
static void hook__cursor_write(alerting_hook *h, uint64_t seq)
{
    char tmp[DATADIR_MAX + 8];
    FILE *f;
    snprintf(tmp, sizeof tmp, "%s.tmp", h->cursor_path);
    if (!(f = fopen(tmp, "w"))) goto fail;
    fprintf(f, "%llu\n", (unsigned long long)seq);
    if (fclose(f) != 0 || rename(tmp, h->cursor_path) != 0) goto fail;
    return;
fail:
    logline(LOGLINE_WARN, seq, "webhook: cannot record delivery in %s: %s (it may be posted again after a restart)",
            h->cursor_path, strerror(errno));
}

static size_t hook__discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

/* Abandon a transfer in progress when the service stops. */
static int hook__progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    alerting_hook *h = ud;
    (void)a; (void)b; (void)c; (void)d;
    return atomic_load(&h->stop) ? 1 : 0;
}

/* One attempt: 1 delivered, 0 not (why in `why`). */
static int hook__post(alerting_hook *h, CURL *c, const hook_item *it, char *why, size_t whylen)
{
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    char seqh[64], err[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode cc;
    snprintf(seqh, sizeof seqh, "X-Ine-Seq: %llu", (unsigned long long)it->seq);
    hdr = curl_slist_append(hdr, seqh);
    /* No "Expect: 100-continue" pause before larger bodies. */
    hdr = curl_slist_append(hdr, "Expect:");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, h->url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, it->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(it->body));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "ine-alerting");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, HOOK_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, HOOK_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hook__discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, hook__progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    cc = curl_easy_perform(c);
    curl_slist_free_all(hdr);
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "%s", *err ? err : curl_easy_strerror(cc));
        return 0;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        snprintf(why, whylen, "the receiver answered HTTP %ld", status);
        return 0;
    }
    return 1;
}

static void hook__deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *hook__worker(void *arg)
{
    alerting_hook *h = arg;
    CURL *c = curl_easy_init();
    int backoff = HOOK_BACKOFF_MIN_MS, failing = 0;
    if (!c) {
        logline(LOGLINE_ERROR, 0, "webhook: cannot create a libcurl handle; nothing will be posted");
        return NULL;
    }
    pthread_mutex_lock(&h->mu);
    while (!atomic_load(&h->stop)) {
        hook_item it;
        char why[CURL_ERROR_SIZE + 64];
        if (h->n == 0) {
            pthread_cond_wait(&h->cv, &h->mu);
            continue;
        }
        it = h->q[h->head]; /* stays queued until delivered */
        pthread_mutex_unlock(&h->mu);
        if (hook__post(h, c, &it, why, sizeof why)) {
            pthread_mutex_lock(&h->mu);
            free(h->q[h->head].body);
            h->head = (h->head + 1) % HOOK_QUEUE_MAX;
            h->n--;
            h->delivered++;
            pthread_mutex_unlock(&h->mu);
            hook__cursor_write(h, it.seq);
            if (failing) logline(LOGLINE_INFO, it.seq, "webhook: %s receives again", h->url_shown);
            logline(LOGLINE_DEBUG, it.seq, "webhook: posted seq %llu", (unsigned long long)it.seq);
            failing = 0;
            backoff = HOOK_BACKOFF_MIN_MS;
            pthread_mutex_lock(&h->mu);
            continue;
        }
        if (atomic_load(&h->stop)) {
            pthread_mutex_lock(&h->mu);
            break;
        }
        /* One line when a receiver starts failing, then one per back-off at its ceiling. */
        if (!failing || backoff >= h->backoff_max_ms)
            logline(LOGLINE_WARN, it.seq, "webhook: POST to %s failed: %s; retrying (every %d ms at most)", h->url_shown, why,
                    h->backoff_max_ms);
        failing = 1;
        pthread_mutex_lock(&h->mu);
        h->failures++;
        {
            struct timespec ts;
            hook__deadline(&ts, backoff);
            while (!atomic_load(&h->stop) && pthread_cond_timedwait(&h->cv, &h->mu, &ts) == 0) {
            }
        }
        backoff = backoff * 2 > h->backoff_max_ms ? h->backoff_max_ms : backoff * 2;
    }
    pthread_mutex_unlock(&h->mu);
    curl_easy_cleanup(c);
    return NULL;
}

int alerting_hook_start(const char *url, const char *cursor_path, int backoff_max_ms, alerting_hook **out)
{
    alerting_hook *h = calloc(1, sizeof *h);
    pthread_condattr_t ca;
    *out = NULL;
    if (!h) return ine_err(INE_ENOMEM, "out of memory");
    h->url = strdup(url);
    h->cursor_path = strdup(cursor_path);
    h->backoff_max_ms = backoff_max_ms < HOOK_BACKOFF_MIN_MS ? HOOK_BACKOFF_MIN_MS : backoff_max_ms;
    alerting_url_redact(url, h->url_shown, sizeof h->url_shown);
    pthread_mutex_init(&h->mu, NULL);
    /* Back-off waits on the monotonic clock: a wall clock moved by an operator (or faketime)
     * must not stretch or skip them. */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!h->url || !h->cursor_path) {
        alerting_hook_stop(h);
        return ine_err(INE_ENOMEM, "out of memory");
    }
    if (pthread_create(&h->thread, NULL, hook__worker, h) != 0) {
        alerting_hook_stop(h);
        return ine_err(INE_ERR, "cannot start the webhook thread");
    }
    h->started = 1;
    *out = h;
    return INE_OK;
}

void alerting_hook_push(alerting_hook *h, uint64_t seq, char *body)
{
    pthread_mutex_lock(&h->mu);
    if (h->n == HOOK_QUEUE_MAX) {
        h->dropped++;
        pthread_mutex_unlock(&h->mu);
        logline(LOGLINE_WARN, seq, "webhook: %d posts are waiting for %s; seq %llu is dropped", HOOK_QUEUE_MAX, h->url_shown,
                (unsigned long long)seq);
        free(body);
        return;
    }
    h->q[(h->head + h->n) % HOOK_QUEUE_MAX] = (hook_item){seq, body};
    h->n++;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void alerting_hook_get_stats(alerting_hook *h, alerting_hook_stats *s)
{
    pthread_mutex_lock(&h->mu);
    s->pending = h->n;
    s->delivered = h->delivered;
    s->failures = h->failures;
    s->dropped = h->dropped;
    pthread_mutex_unlock(&h->mu);
}

void alerting_hook_stop(alerting_hook *h)
{
    if (!h) return;
    if (h->started) {
        pthread_mutex_lock(&h->mu);
        atomic_store(&h->stop, 1);
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->thread, NULL);
    }
    if (h->n) logline(LOGLINE_INFO, 0, "webhook: %zu posts not delivered yet; the next start posts them", h->n);
    for (size_t i = 0; i < h->n; i++) free(h->q[(h->head + i) % HOOK_QUEUE_MAX].body);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h->url);
    free(h->cursor_path);
    free(h);
}
