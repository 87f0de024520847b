/* etcd.h — a client of etcd 3.4's v3 JSON gateway (libcurl + jansson): ranges, compare-and-put
 * transactions, leases, member lists and watches, over one kept-alive HTTP/1.1 connection per
 * handle, with mutual TLS when the endpoints are https://.
 *
 * Why the gateway and not gRPC: Debian 12 ships no C gRPC binding for etcd, and the gateway's
 * JSON is stable across 3.4 and 3.5 under /v3/ (shared/etcd-notes.md, "Gateway JSON facts").
 * Keys and values are bytes (base64 on the wire); int64 fields travel as JSON strings and are
 * parsed with strtoll; fields left out by the gateway read as 0/false/empty.
 *
 * Time: every request has the handle's own timeout (default 1000 ms), far below etcd's 7 s
 * server-side one, so a caller learns "no quorum" in about a second, not seven. An endpoint
 * that refuses the connection is skipped for the next one within the same call (nothing was
 * sent); a request that timed out after it was sent is NOT retried here (a transaction may
 * still commit): it fails with INE_EUNAVAIL and the caller, whose transactions compare
 * revisions, decides.
 *
 * Errors: INE_EUNAVAIL (no endpoint answered in time, HTTP 503/500, no leader), INE_EFULL (HTTP
 * 429, etcd's quota), INE_EINVAL (HTTP 400: bad request, request too large), INE_ENOTFOUND
 * (HTTP 404: lease not found), INE_EPERM (401/403), INE_ECORRUPT (a reply that is not the JSON
 * etcd sends), INE_ECOMPACTED... (see etcd_watch_poll). The message names the endpoint and
 * etcd's own words. A handle belongs to one thread. */
#ifndef INE_ETCD_H
#define INE_ETCD_H

#include <stddef.h>
#include <stdint.h>

#define ETCD_DEFAULT_TIMEOUT_MS 1000
#define ETCD_MAX_ENDPOINTS 7

typedef struct etcd etcd_t;

typedef struct {
    const char *endpoints; /* comma-separated base URLs: "https://127.0.0.1:2379,https://..." */
    const char *cacert;    /* PEM file of the CA that signs the members' certificates (https) */
    const char *cert;      /* this client's certificate and key (PEM files; https) */
    const char *key;
    int timeout_ms;        /* per request; 0: ETCD_DEFAULT_TIMEOUT_MS */
} etcd_opts;

int etcd_open(const etcd_opts *o, etcd_t **out) __attribute__((warn_unused_result));
void etcd_close(etcd_t *e);
/* The endpoint that answered last (the one the next request tries first). */
const char *etcd_endpoint(const etcd_t *e);

/* --- key-values ------------------------------------------------------------------------------ */

typedef struct {
    uint8_t *key;
    size_t key_len;
    uint8_t *value;        /* NUL-terminated for convenience (not counted in value_len) */
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
} etcd_kv;

typedef struct {
    int64_t revision;      /* the store's revision when the read was served (header) */
    etcd_kv *kvs;
    size_t n;
    int more;              /* more keys in the range than `limit` returned */
    int64_t count;         /* keys in the range */
} etcd_range_result;

void etcd_range_result_free(etcd_range_result *r);

typedef struct {
    const void *key;
    size_t key_len;
    const void *range_end; /* NULL: the key alone; else [key, range_end) */
    size_t range_end_len;
    int64_t limit;         /* 0: no limit */
    int64_t revision;      /* 0: the newest */
    int serializable;      /* 1: served by the local member without quorum (may be stale) */
    int keys_only;
} etcd_range_req;

int etcd_range(etcd_t *e, const etcd_range_req *req, etcd_range_result *out) __attribute__((warn_unused_result));

/* One put (convenience for tests and tools; the log itself only ever writes through etcd_txn). */
int etcd_put(etcd_t *e, const void *key, size_t key_len, const void *val, size_t val_len, int64_t lease,
             int64_t *revision) __attribute__((warn_unused_result));

/* The range_end that makes [prefix, end) cover every key starting with prefix (out: at least
 * len bytes; returns the end's length; 0 means "no end", i.e. "\0" for the whole keyspace). */
size_t etcd_prefix_end(const void *prefix, size_t len, uint8_t *out);

/* --- transactions ---------------------------------------------------------------------------- */

typedef enum { ETCD_CMP_MOD, ETCD_CMP_CREATE, ETCD_CMP_VERSION, ETCD_CMP_VALUE } etcd_cmp_target;
typedef enum { ETCD_CMP_EQUAL, ETCD_CMP_GREATER, ETCD_CMP_LESS, ETCD_CMP_NOT_EQUAL } etcd_cmp_result;

typedef struct {
    etcd_cmp_target target;
    etcd_cmp_result result;
    const void *key;
    size_t key_len;
    int64_t revision;      /* MOD/CREATE/VERSION: compared with this (an absent key has 0) */
    const void *value;     /* VALUE: compared with these bytes */
    size_t value_len;
} etcd_cmp;

typedef enum { ETCD_OP_PUT, ETCD_OP_RANGE, ETCD_OP_DELETE } etcd_op_type;

typedef struct {
    etcd_op_type type;
    const void *key;
    size_t key_len;
    const void *value;     /* PUT */
    size_t value_len;
    int64_t lease;         /* PUT: 0 for none */
    const void *range_end; /* RANGE/DELETE: NULL for the key alone */
    size_t range_end_len;
} etcd_op;

typedef struct {
    int succeeded;         /* the compares held: `success` ran, else `failure` did */
    int64_t revision;      /* header revision after the txn (a successful put's mod_revision) */
    etcd_range_result *ranges; /* one per op of the branch that ran, in order; only RANGE ops
                                  fill theirs (others are zeroed) */
    size_t n_ranges;
} etcd_txn_result;

void etcd_txn_result_free(etcd_txn_result *r);

int etcd_txn(etcd_t *e, const etcd_cmp *cmp, size_t n_cmp, const etcd_op *success, size_t n_success,
             const etcd_op *failure, size_t n_failure, etcd_txn_result *out) __attribute__((warn_unused_result));

/* --- leases ---------------------------------------------------------------------------------- */

int etcd_lease_grant(etcd_t *e, int64_t ttl_s, int64_t *id, int64_t *granted_ttl) __attribute__((warn_unused_result));
/* One keepalive (a short POST: the gateway answers one per request). *ttl_left is the TTL
 * restarted by it; INE_ENOTFOUND when the lease is gone (expired or revoked). */
int etcd_lease_keepalive(etcd_t *e, int64_t id, int64_t *ttl_left) __attribute__((warn_unused_result));
int etcd_lease_revoke(etcd_t *e, int64_t id) __attribute__((warn_unused_result));

/* --- cluster --------------------------------------------------------------------------------- */

typedef struct {
    uint64_t id;
    char name[64];
    char peer_urls[256];   /* comma-separated */
    char client_urls[256];
    int is_learner;
} etcd_member;

/* Members as the answering member knows them (malloc'd array; free()). */
int etcd_member_list(etcd_t *e, etcd_member **out, size_t *n) __attribute__((warn_unused_result));
/* Remove a member from the cluster (needs quorum). INE_ENOTFOUND when there is no such member. */
int etcd_member_remove(etcd_t *e, uint64_t id) __attribute__((warn_unused_result));
/* Add a member reached at peer_url (needs quorum); a learner (is_learner) does not count for
 * quorum until promoted. *id is the new member's id. */
int etcd_member_add(etcd_t *e, const char *peer_url, int is_learner, uint64_t *id) __attribute__((warn_unused_result));
/* Make learner `id` a voting member. etcd refuses (INE_EPERM) while the learner lags the leader. */
int etcd_member_promote(etcd_t *e, uint64_t id) __attribute__((warn_unused_result));

typedef struct {
    uint64_t member_id;    /* the member that answered */
    uint64_t leader;       /* its leader (0: none known) */
    int64_t db_size;       /* bytes of its backend file */
    int64_t raft_term;
    int64_t revision;
} etcd_status_info;

/* /v3/maintenance/status of one endpoint (not the handle's failover list). */
int etcd_status(etcd_t *e, const char *endpoint, etcd_status_info *out) __attribute__((warn_unused_result));

/* --- watches --------------------------------------------------------------------------------- */

/* A watch is one long chunked response on its own connection: create it, then poll it from an
 * event loop. Events arrive in revision order; a fragment of a huge revision arrives like any
 * other batch. */
typedef struct etcd_watch etcd_watch;

typedef enum { ETCD_EV_PUT = 0, ETCD_EV_DELETE = 1 } etcd_ev_type;

typedef struct {
    etcd_ev_type type;
    etcd_kv kv;
} etcd_event;

/* Called with every batch in order; return 0 to go on, negative to stop the poll with that code. */
typedef int (*etcd_watch_fn)(const etcd_event *evs, size_t n, int64_t header_revision, void *ud);

/* Watch [key, range_end) from start_revision (0: from now). progress_notify asks etcd for
 * empty batches now and then that carry the current revision. */
int etcd_watch_open(etcd_t *e, const void *key, size_t key_len, const void *range_end, size_t range_end_len,
                    int64_t start_revision, etcd_watch **out) __attribute__((warn_unused_result));
/* Wait up to timeout_ms for data and hand every complete batch to fn. Returns the number of
 * batches delivered (0 on a quiet timeout), fn's negative code, INE_EUNAVAIL when the stream
 * ended or broke (reopen it from the last revision seen + 1), or INE_ENOTFOUND when etcd
 * canceled the watch because start_revision was compacted (etcd_watch_compact_revision()
 * says up to where: read what is left with etcd_range, then watch again). */
int etcd_watch_poll(etcd_watch *w, int timeout_ms, etcd_watch_fn fn, void *ud) __attribute__((warn_unused_result));
int64_t etcd_watch_compact_revision(const etcd_watch *w);
/* The watch's socket for an outside poll()/epoll (-1 while it has none). */
int etcd_watch_fd(const etcd_watch *w);
void etcd_watch_close(etcd_watch *w);

#endif
