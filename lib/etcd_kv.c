/* etcd_kv.c — etcd.h's ranges, puts, compare-and-put transactions, leases, member list and
 * status: the JSON each sends and reads back (int64 as strings, absent as zero). */
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

/* --- key-values --------------------------------------------------------------------------------- */

static int etcd__b64_field(const json_t *o, const char *name, uint8_t **out, size_t *len)
{
    json_t *v = json_object_get(o, name);
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    if (v && !json_is_string(v)) return -1;
    return etcd__unb64(s, strlen(s), out, len);
}

void etcd__kv_free(etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

int etcd__kv_decode(const json_t *j, etcd_kv *kv)
{
    memset(kv, 0, sizeof *kv);
    if (!json_is_object(j) || etcd__b64_field(j, "key", &kv->key, &kv->key_len) < 0 ||
        etcd__b64_field(j, "value", &kv->value, &kv->value_len) < 0 ||
        etcd__i64(j, "create_revision", "createRevision", &kv->create_revision) < 0 ||
        etcd__i64(j, "mod_revision", "modRevision", &kv->mod_revision) < 0 ||
        etcd__i64(j, "version", NULL, &kv->version) < 0 || etcd__i64(j, "lease", NULL, &kv->lease) < 0) {
        etcd__kv_free(kv);
        return -1;
    }
    return 0;
}

void etcd_range_result_free(etcd_range_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) etcd__kv_free(&r->kvs[i]);
    free(r->kvs);
    memset(r, 0, sizeof *r);
}

int etcd__header_rev(const json_t *j, int64_t *rev)
{
    return etcd__i64(json_object_get(j, "header"), "revision", NULL, rev);
}

static int etcd__range_decode(const json_t *j, etcd_range_result *out, const char *ep, const char *what)
{
    json_t *kvs = json_object_get(j, "kvs");
    memset(out, 0, sizeof *out);
    if (etcd__header_rev(j, &out->revision) < 0 || etcd__i64(j, "count", NULL, &out->count) < 0 ||
        (kvs && !json_is_array(kvs)))
        goto bad;
    out->more = etcd__bool(j, "more");
    if (kvs && json_array_size(kvs)) {
        if (!(out->kvs = calloc(json_array_size(kvs), sizeof *out->kvs))) return ine_err(INE_ENOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(kvs); i++) {
            if (etcd__kv_decode(json_array_get(kvs, i), &out->kvs[i]) < 0) goto bad;
            out->n++;
        }
    }
    return INE_OK;
bad:
    etcd_range_result_free(out);
    return ine_err(INE_ECORRUPT, "etcd at %s answered %s with a range that does not decode", ep, what);
}

/* The body of a RangeRequest (also a txn's request_range). */
static json_t *etcd__range_body(const void *key, size_t key_len, const void *end, size_t end_len, int64_t limit,
                                int64_t revision, int serializable, int keys_only)
{
    json_t *o = json_object();
    int bad = !o;
    if (!bad) bad |= etcd__set_b64(o, "key", key, key_len) != 0;
    if (!bad) bad |= etcd__set_range_end(o, end, end_len) != 0;
    if (!bad && limit) bad |= etcd__set_i64(o, "limit", limit) != 0;
    if (!bad && revision) bad |= etcd__set_i64(o, "revision", revision) != 0;
    if (!bad && serializable) bad |= json_object_set_new(o, "serializable", json_true()) != 0;
    if (!bad && keys_only) bad |= json_object_set_new(o, "keys_only", json_true()) != 0;
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *etcd__put_body(const void *key, size_t key_len, const void *val, size_t val_len, int64_t lease)
{
    json_t *o = json_object();
    int bad = !o;
    if (!bad) bad |= etcd__set_b64(o, "key", key, key_len) != 0;
    if (!bad) bad |= etcd__set_b64(o, "value", val ? val : "", val ? val_len : 0) != 0;
    if (!bad && lease) bad |= etcd__set_i64(o, "lease", lease) != 0;
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int etcd_range(etcd_t *e, const etcd_range_req *req, etcd_range_result *out)
{
    json_t *body, *reply = NULL;
    int rc;
    memset(out, 0, sizeof *out);
    if (!req || (!req->key && req->key_len)) return ine_err(INE_EINVAL, "etcd_range: no key");
    if (!(body = etcd__range_body(req->key ? req->key : "", req->key_len, req->range_end, req->range_end_len, req->limit,
                                  req->revision, req->serializable, req->keys_only)))
        return ine_err(INE_ENOMEM, "out of memory");
    rc = etcd__post(e, "/v3/kv/range", body, &reply);
    if (rc == INE_OK) rc = etcd__range_decode(reply, out, etcd_endpoint(e), "/v3/kv/range");
    json_decref(reply);
    json_decref(body);
    return rc;
}

int etcd_put(etcd_t *e, const void *key, size_t key_len, const void *val, size_t val_len, int64_t lease,
             int64_t *revision)
{
    json_t *body, *reply = NULL;
    int64_t rev = 0;
    int rc;
    if (revision) *revision = 0;
    if (!(body = etcd__put_body(key ? key : "", key_len, val, val_len, lease))) return ine_err(INE_ENOMEM, "out of memory");
    rc = etcd__post(e, "/v3/kv/put", body, &reply);
    if (rc == INE_OK && etcd__header_rev(reply, &rev) < 0)
        rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/kv/put with a revision that is not a number", etcd_endpoint(e));
    if (rc == INE_OK && revision) *revision = rev;
    json_decref(reply);
    json_decref(body);
    return rc;
}

size_t etcd_prefix_end(const void *prefix, size_t len, uint8_t *out)
{
    const uint8_t *p = prefix;
    /* Drop trailing 0xff bytes, then bump the last byte left: the first key past the prefix. */
    for (size_t i = len; i > 0; i--) {
        if (p[i - 1] != 0xff) {
            memcpy(out, p, i);
            out[i - 1] = (uint8_t)(p[i - 1] + 1);
            return i;
        }
    }
    return 0;
}

/* --- transactions ------------------------------------------------------------------------------ */

static const char *const etcd__cmp_targets[] = {"MOD", "CREATE", "VERSION", "VALUE"};
static const char *const etcd__cmp_results[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static json_t *etcd__cmp_body(const etcd_cmp *c)
{
    static const char *const fields[] = {"mod_revision", "create_revision", "version"};
    json_t *o;
    int bad;
    if ((unsigned)c->target > ETCD_CMP_VALUE || (unsigned)c->result > ETCD_CMP_NOT_EQUAL) return NULL;
    bad = !(o = json_object());
    if (!bad) bad |= json_object_set_new(o, "target", json_string(etcd__cmp_targets[c->target])) != 0;
    if (!bad) bad |= json_object_set_new(o, "result", json_string(etcd__cmp_results[c->result])) != 0;
    if (!bad) bad |= etcd__set_b64(o, "key", c->key ? c->key : "", c->key_len) != 0;
    if (!bad && c->target == ETCD_CMP_VALUE)
        bad |= etcd__set_b64(o, "value", c->value ? c->value : "", c->value ? c->value_len : 0) != 0;
    else if (!bad)
        bad |= etcd__set_i64(o, fields[c->target], c->revision) != 0;
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *etcd__op_body(const etcd_op *op)
{
    json_t *inner = NULL, *o = NULL;
    const char *name;
    const void *key = op->key ? op->key : "";
    switch (op->type) {
    case ETCD_OP_PUT:
        name = "request_put";
        inner = etcd__put_body(key, op->key_len, op->value, op->value_len, op->lease);
        break;
    case ETCD_OP_RANGE:
        name = "request_range";
        inner = etcd__range_body(key, op->key_len, op->range_end, op->range_end_len, 0, 0, 0, 0);
        break;
    case ETCD_OP_DELETE:
        name = "request_delete_range";
        if ((inner = json_object()) &&
            (etcd__set_b64(inner, "key", key, op->key_len) || etcd__set_range_end(inner, op->range_end, op->range_end_len))) {
            json_decref(inner);
            inner = NULL;
        }
        break;
    default:
        return NULL;
    }
    if (!inner || !(o = json_object()) || json_object_set_new(o, name, inner) != 0) {
        if (!o) json_decref(inner);
        json_decref(o);
        return NULL;
    }
    return o;
}

static int etcd__ops_array(json_t *body, const char *name, const etcd_op *ops, size_t n)
{
    json_t *a = json_array();
    if (!a || json_object_set_new(body, name, a) != 0) return -1;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(a, etcd__op_body(&ops[i])) != 0) return -1;
    return 0;
}

void etcd_txn_result_free(etcd_txn_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_ranges; i++) etcd_range_result_free(&r->ranges[i]);
    free(r->ranges);
    memset(r, 0, sizeof *r);
}

int etcd_txn(etcd_t *e, const etcd_cmp *cmp, size_t n_cmp, const etcd_op *success, size_t n_success,
             const etcd_op *failure, size_t n_failure, etcd_txn_result *out)
{
    json_t *body = NULL, *reply = NULL, *cmps, *resps;
    const etcd_op *ran;
    size_t n_ran;
    int rc = INE_OK;
    memset(out, 0, sizeof *out);
    if ((n_cmp && !cmp) || (n_success && !success) || (n_failure && !failure))
        return ine_err(INE_EINVAL, "etcd_txn: a count without its array");
    if (!(body = json_object()) || !(cmps = json_array()) || json_object_set_new(body, "compare", cmps) != 0 ||
        etcd__ops_array(body, "success", success, n_success) < 0 || etcd__ops_array(body, "failure", failure, n_failure) < 0) {
        rc = ine_err(INE_ENOMEM, "out of memory building an etcd transaction");
        goto out;
    }
    for (size_t i = 0; i < n_cmp; i++) {
        json_t *c = etcd__cmp_body(&cmp[i]);
        if (!c) {
            rc = (unsigned)cmp[i].target > ETCD_CMP_VALUE || (unsigned)cmp[i].result > ETCD_CMP_NOT_EQUAL
                     ? ine_err(INE_EINVAL, "etcd_txn: compare %zu has an unknown target or result", i)
                     : ine_err(INE_ENOMEM, "out of memory building an etcd transaction");
            goto out;
        }
        if (json_array_append_new(cmps, c) != 0) {
            rc = ine_err(INE_ENOMEM, "out of memory building an etcd transaction");
            goto out;
        }
    }
    GUARD_GOTO(etcd__post(e, "/v3/kv/txn", body, &reply), out);
    out->succeeded = etcd__bool(reply, "succeeded");
    ran = out->succeeded ? success : failure;
    n_ran = out->succeeded ? n_success : n_failure;
    resps = json_object_get(reply, "responses");
    if (etcd__header_rev(reply, &out->revision) < 0 || (resps && !json_is_array(resps)) ||
        json_array_size(resps) != n_ran) {
        rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/kv/txn with %zu responses for a branch of %zu ops",
                     etcd_endpoint(e), json_array_size(resps), n_ran);
        goto out;
    }
    if (n_ran && !(out->ranges = calloc(n_ran, sizeof *out->ranges))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    out->n_ranges = n_ran;
    for (size_t i = 0; i < n_ran; i++) {
        json_t *rr;
        if (ran[i].type != ETCD_OP_RANGE) continue;
        if (!(rr = json_object_get(json_array_get(resps, i), "response_range"))) {
            rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/kv/txn's range op %zu without a range", etcd_endpoint(e), i);
            goto out;
        }
        GUARD_GOTO(etcd__range_decode(rr, &out->ranges[i], etcd_endpoint(e), "/v3/kv/txn"), out);
    }
out:
    if (rc < 0) etcd_txn_result_free(out);
    json_decref(reply);
    json_decref(body);
    return rc;
}

/* --- leases ------------------------------------------------------------------------------------- */

/* A body holding one int64 member. */
static json_t *etcd__i64_body(const char *name, int64_t v)
{
    json_t *o = json_object();
    if (o && etcd__set_i64(o, name, v) != 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

int etcd_lease_grant(etcd_t *e, int64_t ttl_s, int64_t *id, int64_t *granted_ttl)
{
    json_t *body, *reply = NULL;
    int64_t got_id = 0, got_ttl = 0;
    int rc;
    if (ttl_s <= 0) return ine_err(INE_EINVAL, "etcd lease TTL must be positive, not %lld", (long long)ttl_s);
    if (!(body = etcd__i64_body("TTL", ttl_s))) return ine_err(INE_ENOMEM, "out of memory");
    rc = etcd__post(e, "/v3/lease/grant", body, &reply);
    if (rc == INE_OK && (etcd__i64(reply, "ID", NULL, &got_id) < 0 || etcd__i64(reply, "TTL", NULL, &got_ttl) < 0 || !got_id))
        rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/lease/grant without a lease id", etcd_endpoint(e));
    if (rc == INE_OK) {
        if (id) *id = got_id;
        if (granted_ttl) *granted_ttl = got_ttl;
    }
    json_decref(reply);
    json_decref(body);
    return rc;
}

int etcd_lease_keepalive(etcd_t *e, int64_t id, int64_t *ttl_left)
{
    json_t *body, *reply = NULL;
    int64_t ttl = 0;
    int rc;
    if (ttl_left) *ttl_left = 0;
    if (!(body = etcd__i64_body("ID", id))) return ine_err(INE_ENOMEM, "out of memory");
    rc = etcd__post(e, "/v3/lease/keepalive", body, &reply);
    if (rc == INE_OK && etcd__i64(reply, "TTL", NULL, &ttl) < 0)
        rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/lease/keepalive with a TTL that is not a number",
                     etcd_endpoint(e));
    /* etcd answers a keepalive of a lease it no longer has with a TTL of 0 (left out). */
    if (rc == INE_OK && ttl <= 0)
        rc = ine_err(INE_ENOTFOUND, "etcd at %s: lease %lld not found (expired or revoked)", etcd_endpoint(e), (long long)id);
    if (rc == INE_OK && ttl_left) *ttl_left = ttl;
    json_decref(reply);
    json_decref(body);
    return rc;
}

int etcd_lease_revoke(etcd_t *e, int64_t id)
{
    json_t *body, *reply = NULL;
    int rc;
    if (!(body = etcd__i64_body("ID", id))) return ine_err(INE_ENOMEM, "out of memory");
    rc = etcd__post(e, "/v3/lease/revoke", body, &reply);
    json_decref(reply);
    json_decref(body);
    return rc;
}

/* --- cluster -------------------------------------------------------------------------------------- */

/* A JSON array of strings joined with commas into out; -1 if it is not one or does not fit. */
static int etcd__join(const json_t *a, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = 0;
    if (!a) return 0;
    if (!json_is_array(a)) return -1;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *s = json_string_value(json_array_get(a, i));
        int w;
        if (!s) return -1;
        w = snprintf(out + off, cap - off, "%s%s", i ? "," : "", s);
        if (w < 0 || (size_t)w >= cap - off) return -1;
        off += (size_t)w;
    }
    return 0;
}

int etcd_member_list(etcd_t *e, etcd_member **out, size_t *n)
{
    json_t *body, *reply = NULL, *ms;
    etcd_member *m = NULL;
    size_t cnt = 0;
    int rc;
    *out = NULL;
    *n = 0;
    if (!(body = json_object())) return ine_err(INE_ENOMEM, "out of memory");
    GUARD_GOTO(etcd__post(e, "/v3/cluster/member/list", body, &reply), out);
    ms = json_object_get(reply, "members");
    if (ms && !json_is_array(ms)) {
        rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/cluster/member/list without a member array", etcd_endpoint(e));
        goto out;
    }
    cnt = json_array_size(ms);
    if (cnt && !(m = calloc(cnt, sizeof *m))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < cnt; i++) {
        json_t *j = json_array_get(ms, i);
        const char *name = json_string_value(json_object_get(j, "name"));
        if (!json_is_object(j) || etcd__u64(j, "ID", "id", &m[i].id) < 0 ||
            etcd__join(etcd__get(j, "peerURLs", "peer_urls"), m[i].peer_urls, sizeof m[i].peer_urls) < 0 ||
            etcd__join(etcd__get(j, "clientURLs", "client_urls"), m[i].client_urls, sizeof m[i].client_urls) < 0) {
            rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/cluster/member/list with member %zu that does not decode",
                         etcd_endpoint(e), i);
            goto out;
        }
        /* A member added but not started yet has no name: it reads as "". */
        snprintf(m[i].name, sizeof m[i].name, "%s", name ? name : "");
        m[i].is_learner = json_is_true(etcd__get(j, "isLearner", "is_learner"));
    }
    *out = m;
    *n = cnt;
    m = NULL;
    rc = INE_OK;
out:
    free(m);
    json_decref(reply);
    json_decref(body);
    return rc;
}

/* POST {"ID": "<id>"} (a member id: unsigned 64 bits, as a JSON string) to path. */
static int etcd__member_post(etcd_t *e, const char *path, uint64_t id)
{
    json_t *body = json_object(), *reply = NULL;
    char ids[24];
    int rc;
    if (!body) return ine_err(INE_ENOMEM, "out of memory");
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    if (json_object_set_new(body, "ID", json_string(ids)) < 0) {
        json_decref(body);
        return ine_err(INE_ENOMEM, "out of memory");
    }
    rc = etcd__post(e, path, body, &reply);
    json_decref(reply);
    json_decref(body);
    return rc;
}

int etcd_member_remove(etcd_t *e, uint64_t id) { return etcd__member_post(e, "/v3/cluster/member/remove", id); }

int etcd_member_add(etcd_t *e, const char *peer_url, int is_learner, uint64_t *id)
{
    json_t *body = json_pack("{s:[s], s:b}", "peerURLs", peer_url, "isLearner", is_learner), *reply = NULL;
    int rc;
    *id = 0;
    if (!body) return ine_err(INE_ENOMEM, "out of memory");
    rc = etcd__post(e, "/v3/cluster/member/add", body, &reply);
    if (rc == INE_OK && (etcd__u64(json_object_get(reply, "member"), "ID", "id", id) < 0 || !*id))
        rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/cluster/member/add without the new member's id", etcd_endpoint(e));
    json_decref(reply);
    json_decref(body);
    return rc;
}

int etcd_member_promote(etcd_t *e, uint64_t id) { return etcd__member_post(e, "/v3/cluster/member/promote", id); }

int etcd_status(etcd_t *e, const char *endpoint, etcd_status_info *out)
{
    json_t *body, *reply = NULL, *hdr;
    const char *ep = endpoint ? endpoint : etcd_endpoint(e);
    char trimmed[512];
    size_t len = strlen(ep);
    int rc;
    memset(out, 0, sizeof *out);
    while (len && ep[len - 1] == '/') len--;
    if (len >= sizeof trimmed || (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8)))
        return ine_err(INE_EINVAL, "etcd endpoint \"%s\" is not an http:// or https:// URL", ep);
    memcpy(trimmed, ep, len);
    trimmed[len] = 0;
    if (!(body = json_object())) return ine_err(INE_ENOMEM, "out of memory");
    GUARD_GOTO(etcd__post_at(e, trimmed, "/v3/maintenance/status", body, &reply), out);
    hdr = json_object_get(reply, "header");
    if (etcd__u64(hdr, "member_id", "memberId", &out->member_id) < 0 || etcd__i64(hdr, "revision", NULL, &out->revision) < 0 ||
        etcd__u64(reply, "leader", NULL, &out->leader) < 0 || etcd__i64(reply, "dbSize", "db_size", &out->db_size) < 0 ||
        etcd__i64(reply, "raftTerm", "raft_term", &out->raft_term) < 0) {
        memset(out, 0, sizeof *out);
        rc = ine_err(INE_ECORRUPT, "etcd at %s answered /v3/maintenance/status with fields that do not decode", trimmed);
    }
out:
    json_decref(reply);
    json_decref(body);
    return rc;
}
