/* etcd_int.h — what lib/etcd.c (the handle, requests, errors, JSON helpers) shares with
 * etcd_kv.c (ranges, transactions, leases, cluster) and etcd_watch.c (watches). Not for use
 * outside lib/etcd*.c. */
#ifndef INE_ETCD_INT_H
#define INE_ETCD_INT_H

#include "etcd.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdint.h>

/* A watch line past this is not something etcd sends (4.3 MB measured, 2.9 MB fragmented). */
#define ETCD__MAX_LINE (64u << 20)

typedef struct {
    char *data;
    size_t len, cap;
} etcd__buf;

struct etcd {
    CURL *curl;
    struct curl_slist *headers;
    char *eps[ETCD_MAX_ENDPOINTS];
    size_t n_eps, cur;
    char *cacert, *cert, *key;
    int timeout_ms;
    etcd__buf resp;
    char cerr[CURL_ERROR_SIZE];
};

int etcd__buf_add(etcd__buf *b, const void *d, size_t n);
int etcd__unb64(const char *s, size_t slen, uint8_t **out, size_t *outlen);
json_t *etcd__get(const json_t *o, const char *name, const char *alt);
int etcd__i64(const json_t *o, const char *name, const char *alt, int64_t *out);
int etcd__u64(const json_t *o, const char *name, const char *alt, uint64_t *out);
int etcd__bool(const json_t *o, const char *name);
int etcd__set_b64(json_t *o, const char *name, const void *p, size_t len);
int etcd__set_i64(json_t *o, const char *name, int64_t v);
int etcd__set_range_end(json_t *o, const void *end, size_t len);
int etcd__http_rc(long status);
const char *etcd__err_words(const json_t *j, long *status);
int etcd__http_err(long status, const char *ep, const char *path, const char *body, size_t len);
int etcd__unsent(CURL *c, CURLcode cc);
int etcd__curl_rc(CURLcode cc);
int etcd__tls_opts(CURL *c, const char *cacert, const char *cert, const char *key);
int etcd__common_opts(CURL *c, struct curl_slist *headers, char *cerr);
struct curl_slist *etcd__headers(void);
const char *etcd__cerr(const char *cerr, CURLcode cc);
int etcd__post_at(etcd_t *e, const char *only_ep, const char *path, json_t *req, json_t **reply);
int etcd__post(etcd_t *e, const char *path, json_t *req, json_t **reply);
void etcd__kv_free(etcd_kv *kv);
int etcd__kv_decode(const json_t *j, etcd_kv *kv);
int etcd__header_rev(const json_t *j, int64_t *rev);

#endif
