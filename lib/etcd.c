/* etcd.c — the client of etcd 3.4's v3 JSON gateway declared in etcd.h: one kept-alive libcurl
 * easy handle per etcd_t, requests with endpoint failover for refused connections, errors
 * mapped to INE_E* codes, and the JSON and base64 helpers etcd_kv.c and etcd_watch.c share. */
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

/* --- small helpers ------------------------------------------------------------------------ */

static pthread_once_t etcd__curl_once = PTHREAD_ONCE_INIT;
static CURLcode etcd__curl_init_rc;
static void etcd__curl_init(void) { etcd__curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int etcd__buf_add(etcd__buf *b, const void *d, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;
        while (cap < b->len + n + 1) cap *= 2;
        if (!(p = realloc(b->data, cap))) return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static size_t etcd__write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    etcd__buf *b = ud;
    size_t n = size * nmemb;
    return etcd__buf_add(b, ptr, n) == 0 ? n : 0;
}

static char *etcd__b64(const void *p, size_t len)
{
    char *out;
    if (len > (size_t)INT_MAX / 2) return NULL;
    if (!(out = malloc(4 * ((len + 2) / 3) + 1))) return NULL;
    EVP_EncodeBlock((unsigned char *)out, p, (int)len);
    return out;
}

/* Decode into a malloc'd, NUL-terminated buffer (the terminator is not counted). */
int etcd__unb64(const char *s, size_t slen, uint8_t **out, size_t *outlen)
{
    uint8_t *b;
    int n = 0;
    if (slen % 4 || slen > (size_t)INT_MAX) return -1;
    if (!(b = malloc(slen / 4 * 3 + 1))) return -1;
    if (slen) {
        /* EVP_DecodeBlock counts the zero bytes the padding stands for: take them back off. */
        n = EVP_DecodeBlock(b, (const unsigned char *)s, (int)slen);
        if (n < 0) {
            free(b);
            return -1;
        }
        n -= (s[slen - 1] == '=') + (s[slen - 2] == '=');
    }
    b[n] = 0;
    *out = b;
    *outlen = (size_t)n;
    return 0;
}

/* The gateway's proto names are snake_case for most fields but camelCase where the .proto
 * itself is (dbSize, peerURLs): look a field up under either spelling. */
json_t *etcd__get(const json_t *o, const char *name, const char *alt)
{
    json_t *v = json_object_get(o, name);
    if (!v && alt) v = json_object_get(o, alt);
    return v;
}

/* An int64 the gateway sends as a string (or, defensively, a number); absent is 0. */
int etcd__i64(const json_t *o, const char *name, const char *alt, int64_t *out)
{
    json_t *v = etcd__get(o, name, alt);
    *out = 0;
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        long long x;
        errno = 0;
        x = strtoll(s, &end, 10);
        if (errno || end == s || *end) return -1;
        *out = (int64_t)x;
        return 0;
    }
    return -1;
}

int etcd__u64(const json_t *o, const char *name, const char *alt, uint64_t *out)
{
    json_t *v = etcd__get(o, name, alt);
    *out = 0;
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        unsigned long long x;
        errno = 0;
        x = strtoull(s, &end, 10);
        if (errno || end == s || *end || *s == '-') return -1;
        *out = (uint64_t)x;
        return 0;
    }
    return -1;
}

int etcd__bool(const json_t *o, const char *name)
{
    return json_is_true(json_object_get(o, name));
}

/* Bytes as a base64 string member; returns -1 on allocation failure. */
int etcd__set_b64(json_t *o, const char *name, const void *p, size_t len)
{
    char *s = etcd__b64(p, len);
    int r;
    if (!s) return -1;
    r = json_object_set_new(o, name, json_string(s));
    free(s);
    return r;
}

int etcd__set_i64(json_t *o, const char *name, int64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)v);
    return json_object_set_new(o, name, json_string(s));
}

/* A range_end given with zero length means "to the end of the keyspace" (etcd_prefix_end's
 * 0): on the wire that is the single byte "\0", since an empty range_end means "key alone". */
int etcd__set_range_end(json_t *o, const void *end, size_t len)
{
    static const uint8_t zero = 0;
    if (!end) return 0;
    return len ? etcd__set_b64(o, "range_end", end, len) : etcd__set_b64(o, "range_end", &zero, 1);
}

/* --- errors ----------------------------------------------------------------------------------- */

int etcd__http_rc(long status)
{
    switch (status) {
    case 400: return INE_EINVAL;
    case 401: case 403: return INE_EPERM;
    case 404: return INE_ENOTFOUND;
    case 429: return INE_EFULL;
    case 500: case 502: case 503: case 504: return INE_EUNAVAIL;
    default: return INE_ERR;
    }
}

/* etcd's own words from an error body: {"error":"...","message":"...","code":N} for unary
 * calls, {"error":{"http_code":N,"message":"..."}} inside a stream. */
const char *etcd__err_words(const json_t *j, long *status)
{
    json_t *e = json_object_get(j, "error");
    const char *w = NULL;
    if (json_is_object(e)) {
        json_t *hc = json_object_get(e, "http_code");
        if (status && json_is_integer(hc)) *status = (long)json_integer_value(hc);
        w = json_string_value(json_object_get(e, "message"));
    } else if (json_is_string(e)) {
        w = json_string_value(e);
    }
    if (!w || !*w) w = json_string_value(json_object_get(j, "message"));
    return w && *w ? w : NULL;
}

int etcd__http_err(long status, const char *ep, const char *path, const char *body, size_t len)
{
    json_t *j = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
    const char *w = j ? etcd__err_words(j, NULL) : NULL;
    int rc = etcd__http_rc(status);
    if (w)
        ine_err(rc, "etcd at %s refused %s (HTTP %ld): %s", ep, path, status, w);
    else
        ine_err(rc, "etcd at %s refused %s (HTTP %ld): %.200s", ep, path, status,
                body && len ? body : "(no body)");
    json_decref(j);
    return rc;
}

/* Nothing of the request left this host: another endpoint may take it safely. */
int etcd__unsent(CURL *c, CURLcode cc)
{
    curl_off_t t = 0;
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    case CURLE_OPERATION_TIMEDOUT:
        /* Timed out before the request could go out (connecting, or the TLS handshake): a dead
         * host. The pre-transfer mark is set on a reused connection too, unlike connect time. */
        return curl_easy_getinfo(c, CURLINFO_PRETRANSFER_TIME_T, &t) == CURLE_OK && t == 0;
    default:
        return 0;
    }
}

/* A transfer that never got its answer. TLS failures are about our configuration or the
 * member's certificate, not the cluster's health: say so by the code. */
int etcd__curl_rc(CURLcode cc)
{
    switch (cc) {
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER:
        return INE_EINVAL;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
        return INE_EAUTH;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_WRITE_ERROR:
        return INE_ENOMEM;
    default:
        return INE_EUNAVAIL;
    }
}

/* --- the handle -------------------------------------------------------------------------------- */

int etcd__tls_opts(CURL *c, const char *cacert, const char *cert, const char *key)
{
    CURLcode cc = CURLE_OK;
    if (cacert && cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_CAINFO, cacert);
    if (cert && cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_SSLCERT, cert);
    if (key && cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_SSLKEY, key);
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    return cc == CURLE_OK ? 0 : -1;
}

/* Options every request and watch shares. */
int etcd__common_opts(CURL *c, struct curl_slist *headers, char *cerr)
{
    CURLcode cc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, etcd__write_cb);
    return cc == CURLE_OK ? 0 : -1;
}

struct curl_slist *etcd__headers(void)
{
    /* No "Expect: 100-continue" round trip for large bodies. */
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json"), *h2;
    if (!h) return NULL;
    if (!(h2 = curl_slist_append(h, "Expect:"))) {
        curl_slist_free_all(h);
        return NULL;
    }
    return h2;
}

static int etcd__parse_endpoints(etcd_t *e, const char *list)
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (len && (*s == ' ' || *s == '\t')) s++, len--;
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '/')) len--;
        if (len) {
            if (e->n_eps == ETCD_MAX_ENDPOINTS)
                return ine_err(INE_EINVAL, "etcd endpoints \"%s\": more than %d", list, ETCD_MAX_ENDPOINTS);
            if (!(len > 7 && !strncmp(s, "http://", 7)) && !(len > 8 && !strncmp(s, "https://", 8)))
                return ine_err(INE_EINVAL, "etcd endpoint \"%.*s\" is not an http:// or https:// URL", (int)len, s);
            if (!(e->eps[e->n_eps] = strndup(s, len))) return ine_err(INE_ENOMEM, "out of memory");
            e->n_eps++;
        }
        if (!end) break;
        p = end + 1;
    }
    if (!e->n_eps) return ine_err(INE_EINVAL, "no etcd endpoint given");
    return INE_OK;
}

static int etcd__dup_file(const char *path, const char *what, char **out)
{
    *out = NULL;
    if (!path || !*path) return INE_OK;
    if (access(path, R_OK) != 0)
        return ine_err(INE_EINVAL, "etcd client %s %s cannot be read: %s", what, path, strerror(errno));
    if (!(*out = strdup(path))) return ine_err(INE_ENOMEM, "out of memory");
    return INE_OK;
}

int etcd_open(const etcd_opts *o, etcd_t **out)
{
    etcd_t *e = NULL;
    int rc;
    *out = NULL;
    if (!o || !o->endpoints) return ine_err(INE_EINVAL, "etcd_open: no endpoints");
    if (o->timeout_ms < 0) return ine_err(INE_EINVAL, "etcd_open: negative timeout %d ms", o->timeout_ms);
    pthread_once(&etcd__curl_once, etcd__curl_init);
    if (etcd__curl_init_rc != CURLE_OK)
        return ine_err(INE_ERR, "libcurl initialisation failed: %s", curl_easy_strerror(etcd__curl_init_rc));
    if (!(e = calloc(1, sizeof *e))) return ine_err(INE_ENOMEM, "out of memory");
    e->timeout_ms = o->timeout_ms ? o->timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
    GUARD_GOTO(etcd__parse_endpoints(e, o->endpoints), fail);
    GUARD_GOTO(etcd__dup_file(o->cacert, "CA certificate", &e->cacert), fail);
    GUARD_GOTO(etcd__dup_file(o->cert, "certificate", &e->cert), fail);
    GUARD_GOTO(etcd__dup_file(o->key, "key", &e->key), fail);
    if (!(e->headers = etcd__headers()) || !(e->curl = curl_easy_init())) {
        rc = ine_err(INE_ENOMEM, "cannot create a libcurl handle for etcd");
        goto fail;
    }
    if (etcd__common_opts(e->curl, e->headers, e->cerr) < 0 ||
        curl_easy_setopt(e->curl, CURLOPT_WRITEDATA, &e->resp) != CURLE_OK ||
        etcd__tls_opts(e->curl, e->cacert, e->cert, e->key) < 0) {
        rc = ine_err(INE_ERR, "libcurl refused an option for etcd (is it built with TLS?)");
        goto fail;
    }
    *out = e;
    return INE_OK;
fail:
    etcd_close(e);
    return rc;
}

void etcd_close(etcd_t *e)
{
    if (!e) return;
    if (e->curl) curl_easy_cleanup(e->curl);
    curl_slist_free_all(e->headers);
    for (size_t i = 0; i < e->n_eps; i++) free(e->eps[i]);
    free(e->cacert);
    free(e->cert);
    free(e->key);
    free(e->resp.data);
    free(e);
}

const char *etcd_endpoint(const etcd_t *e) { return e->eps[e->cur]; }

/* --- requests --------------------------------------------------------------------------------- */

static CURLcode etcd__perform(etcd_t *e, const char *ep, const char *path, const char *body, size_t len,
                              int64_t timeout_ms, int64_t connect_ms, long *status)
{
    char url[1024];
    CURLcode cc;
    snprintf(url, sizeof url, "%s%s", ep, path);
    e->resp.len = 0;
    e->cerr[0] = 0;
    *status = 0;
    if (timeout_ms < 1) timeout_ms = 1;
    if (connect_ms < 1) connect_ms = 1;
    cc = curl_easy_setopt(e->curl, CURLOPT_URL, url);
    if (cc == CURLE_OK) cc = curl_easy_setopt(e->curl, CURLOPT_POSTFIELDS, body);
    if (cc == CURLE_OK) cc = curl_easy_setopt(e->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (cc == CURLE_OK) cc = curl_easy_setopt(e->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (cc == CURLE_OK) cc = curl_easy_setopt(e->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    if (cc == CURLE_OK) cc = curl_easy_perform(e->curl);
    if (cc == CURLE_OK) curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, status);
    return cc;
}

const char *etcd__cerr(const char *cerr, CURLcode cc)
{
    return cerr[0] ? cerr : curl_easy_strerror(cc);
}

/* A 200 answer as JSON; a stream-shaped one ({"result":...}) is unwrapped. */
static int etcd__reply(etcd_t *e, const char *ep, const char *path, long status, json_t **reply)
{
    json_error_t jerr;
    json_t *j, *res;
    long st = status;
    const char *w;
    if (status != 200) return etcd__http_err(status, ep, path, e->resp.data, e->resp.len);
    if (!(j = json_loadb(e->resp.data ? e->resp.data : "", e->resp.len, 0, &jerr)) || !json_is_object(j)) {
        json_decref(j);
        return ine_err(INE_ECORRUPT, "etcd at %s answered %s with something that is not a JSON object (%s): %.120s", ep,
                       path, j ? "not an object" : jerr.text, e->resp.len ? e->resp.data : "(empty)");
    }
    if (json_object_get(j, "error") && (w = etcd__err_words(j, &st))) {
        int rc = etcd__http_rc(st == 200 ? 500 : st);
        ine_err(rc, "etcd at %s refused %s: %s", ep, path, w);
        json_decref(j);
        return rc;
    }
    if (json_is_object(res = json_object_get(j, "result"))) {
        json_incref(res);
        json_decref(j);
        j = res;
    }
    *reply = j;
    return INE_OK;
}

/* POST body to path at one endpoint after another until one takes it (see etcd.h: only a
 * request that never left is retried elsewhere); the whole call keeps to the timeout. */
int etcd__post_at(etcd_t *e, const char *only_ep, const char *path, json_t *req, json_t **reply)
{
    char *body = json_dumps(req, JSON_COMPACT);
    size_t n = only_ep ? 1 : e->n_eps, len, tried = 0;
    int64_t deadline = ine_clock_mono_ms() + e->timeout_ms;
    int rc = INE_EUNAVAIL, seen = 0;
    *reply = NULL;
    if (!body) return ine_err(INE_ENOMEM, "out of memory encoding an etcd request for %s", path);
    len = strlen(body);
    for (size_t i = 0; i < n; i++) {
        size_t idx = (e->cur + i) % e->n_eps;
        const char *ep = only_ep ? only_ep : e->eps[idx];
        int64_t left = deadline - ine_clock_mono_ms();
        long status = 0;
        CURLcode cc;
        if (left <= 0 && i > 0) break;
        tried++;
        /* Leave every endpoint still to try its share of the time for connecting. */
        cc = etcd__perform(e, ep, path, body, len, left, left / (int64_t)(n - i), &status);
        if (cc == CURLE_OK) {
            if (!only_ep) e->cur = idx;
            rc = etcd__reply(e, ep, path, status, reply);
        } else if (!etcd__unsent(e->curl, cc)) {
            if (cc == CURLE_OPERATION_TIMEDOUT)
                rc = ine_err(INE_EUNAVAIL, "etcd at %s did not answer %s within %d ms (it may still apply it)", ep, path,
                             e->timeout_ms);
            else
                rc = ine_err(etcd__curl_rc(cc), "etcd at %s: %s failed after it was sent: %s", ep, path,
                             etcd__cerr(e->cerr, cc));
        } else {
            /* Keep a TLS failure's sentence over a refused connection's: an operator can fix it. */
            if (!seen || rc == INE_EUNAVAIL)
                rc = ine_err(etcd__curl_rc(cc), "etcd at %s: %s", ep, etcd__cerr(e->cerr, cc));
            seen = 1;
            continue;
        }
        /* Sent, and the member had no quorum or no time for it: the caller's retry starts at the
         * next member, which may be on the majority's side. */
        if (rc == INE_EUNAVAIL && !only_ep) e->cur = (idx + 1) % e->n_eps;
        goto out;
    }
    if (rc == INE_EUNAVAIL)
        rc = ine_err(INE_EUNAVAIL, "no etcd endpoint took %s within %d ms (%zu of %zu tried; last: %s)", path, e->timeout_ms,
                     tried, n, ine_err_msg());
    else
        rc = ine_err(rc, "no etcd endpoint took %s: %s", path, ine_err_msg());
out:
    free(body);
    return rc;
}

int etcd__post(etcd_t *e, const char *path, json_t *req, json_t **reply)
{
    return etcd__post_at(e, NULL, path, req, reply);
}
