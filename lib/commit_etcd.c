/* commit_etcd.c — the front door's etcd backend: an append is one etcd transaction that
 * compares the head key's revision (and that the request id is unused), and puts the events
 * under their own keys, the new head and the request id. A lost race re-reads the head from
 * the failed transaction's own answer and tries again; a transaction whose answer never came
 * is resolved by reading back what is at our seq (our bytes, or someone else's). Then it waits
 * for the node's mirror to apply what was committed (read-your-writes).
 *
 * The head (seq, hash, mod_revision) is cached between appends, so a writer that keeps winning
 * pays one round trip per append; after any failure the next append reads it again, with a
 * linearizable read, so a node without quorum learns it before it sends a write. */
#include "commit_int.h"

#include "err.h"
#include "etcd.h"
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    etcd_t *etcd;
    char prefix[128];
    int head_known;        /* 0: read it first; 1: cached from a txn; 2: just read */
    uint64_t seq;
    uint8_t hash[EVLOG_HASH_LEN];
    int64_t mod_rev;       /* the head key's mod_revision; 0: no head yet */
} commit__etcd;

static int64_t commit__ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void commit__be64(uint8_t b[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) b[i] = (uint8_t)v;
}

static uint64_t commit__get_be64(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | b[i];
    return v;
}

static void commit__event_key(const commit__etcd *e, uint64_t seq, char *out, size_t len)
{
    snprintf(out, len, "%s" COMMIT_KEY_EVENTS "%020llu", e->prefix, (unsigned long long)seq);
}

/* The head from a range answer (absent: an empty log). */
static int commit__head_from(commit__etcd *e, const etcd_range_result *r)
{
    if (r->n == 0) {
        e->seq = 0;
        memset(e->hash, 0, sizeof e->hash);
        e->mod_rev = 0;
    } else {
        if (r->kvs[0].value_len != COMMIT_HEAD_LEN)
            return ine_err(INE_ECORRUPT, "etcd's log head holds %zu bytes, expected %d", r->kvs[0].value_len, COMMIT_HEAD_LEN);
        e->seq = commit__get_be64(r->kvs[0].value);
        memcpy(e->hash, r->kvs[0].value + 8, EVLOG_HASH_LEN);
        e->mod_rev = r->kvs[0].mod_revision;
    }
    e->head_known = 1;
    return INE_OK;
}

/* A linearizable read of the head; head_known becomes 2 ("just read") until the next txn. */
static int commit__read_head(commit__etcd *e)
{
    char key[256];
    etcd_range_result r = {0};
    etcd_range_req q = {0};
    int rc;
    snprintf(key, sizeof key, "%s" COMMIT_KEY_HEAD, e->prefix);
    q.key = key;
    q.key_len = strlen(key);
    GUARD(etcd_range(e->etcd, &q, &r));
    rc = commit__head_from(e, &r);
    etcd_range_result_free(&r);
    if (rc == INE_OK) e->head_known = 2;
    return rc;
}

/* After a transaction whose answer was lost: 1 if the record at `seq` is ours (same hash). */
static int commit__landed(commit__etcd *e, uint64_t seq, const uint8_t hash[EVLOG_HASH_LEN])
{
    char key[256];
    uint8_t h[EVLOG_HASH_LEN];
    etcd_range_result r = {0};
    etcd_range_req q = {0};
    int rc;
    commit__event_key(e, seq, key, sizeof key);
    q.key = key;
    q.key_len = strlen(key);
    GUARD(etcd_range(e->etcd, &q, &r));
    rc = 0;
    if (r.n == 1) {
        evlog_hash(r.kvs[0].value, r.kvs[0].value_len, h);
        rc = memcmp(h, hash, EVLOG_HASH_LEN) == 0;
    }
    etcd_range_result_free(&r);
    return rc;
}

typedef struct {
    uint8_t **bufs;
    size_t *lens;
    char (*keys)[256];
    uint8_t *restamp;          /* events whose time the call stamps (0 on entry): on each try */
    uint8_t last_hash[EVLOG_HASH_LEN];
    size_t n;
} commit__batch;

/* A transaction of ours that did not say "succeeded": its answer never came, or it failed its
 * compares. Either may hide a commit: a sent transaction may still commit while the head it
 * compared stays, and libcurl resends a request once on its own when a kept-alive connection
 * dies before any answer ("retrying a fresh connect"), so the copy that failed may have
 * followed one that succeeded. Whichever of our tries committed, its last record is here. */
#define COMMIT__MAX_UNRESOLVED 32
typedef struct {
    uint64_t last_seq, first_seq;
    uint8_t hash[EVLOG_HASH_LEN];
} commit__unresolved;

static void commit__batch_clear(commit__batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->bufs[i]);
        b->bufs[i] = NULL;
    }
}

/* Stamp and pack the events as records head+1.. linking to the cached head. */
static int commit__encode(commit__etcd *e, evlog_event **evs, size_t n, const commit_opts *o, commit__batch *b)
{
    uint8_t prev[EVLOG_HASH_LEN];
    memcpy(prev, e->hash, sizeof prev);
    for (size_t i = 0; i < n; i++) {
        if (b->restamp[i]) evs[i]->time_us = 0; /* a later seq gets a later time: seq order is time order */
        GUARD(evlog_encode(evs[i], e->seq + 1 + i, prev, o->request_id, o->prepare, o->prepare_ud, &b->bufs[i], &b->lens[i]));
        evlog_hash(b->bufs[i], b->lens[i], prev);
        commit__event_key(e, e->seq + 1 + i, b->keys[i], sizeof b->keys[i]);
    }
    memcpy(b->last_hash, prev, sizeof prev);
    return INE_OK;
}

static void commit__pause(void)
{
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
}

/* Did one of our unanswered tries commit? Only decidable once the head reached its seq. 1 with
 * *first set when one did; 0 when none did or none can be decided yet. */
static int commit__resolve(commit__etcd *e, commit__unresolved *u, size_t *n_u, uint64_t *first)
{
    size_t k = 0;
    for (size_t i = 0; i < *n_u; i++) {
        int landed;
        if (e->seq < u[i].last_seq) {
            u[k++] = u[i];
            continue;
        }
        /* The head itself names its last record's hash: no read when it is that record. */
        landed = e->seq == u[i].last_seq ? !memcmp(e->hash, u[i].hash, EVLOG_HASH_LEN) : commit__landed(e, u[i].last_seq, u[i].hash);
        if (landed < 0) return landed;
        if (landed) {
            *first = u[i].first_seq;
            *n_u = 0;
            return 1;
        }
    }
    *n_u = k;
    return 0;
}

static int commit__etcd_append(commit_t *c, evlog_event **evs, size_t n, const commit_opts *o, uint64_t *first_seq,
                               uint64_t *wait_seq)
{
    commit__etcd *e = c->backend;
    const char *reqid = o->request_id && *o->request_id ? o->request_id : NULL;
    int64_t deadline = commit__ms() + COMMIT_DEADLINE_MS;
    char head_key[256], req_key[512];
    uint8_t head_val[COMMIT_HEAD_LEN], req_val[8];
    commit__unresolved unres[COMMIT__MAX_UNRESOLVED];
    size_t n_unres = 0;
    commit__batch b = {0};
    etcd_op *ok_ops = NULL;
    etcd_txn_result r = {0};
    uint64_t first = 0;
    int rc = INE_OK, lost = 0;

    snprintf(head_key, sizeof head_key, "%s" COMMIT_KEY_HEAD, e->prefix);
    snprintf(req_key, sizeof req_key, "%s" COMMIT_KEY_REQIDS "%s", e->prefix, reqid ? reqid : "");
    b.n = n;
    b.bufs = calloc(n, sizeof *b.bufs);
    b.lens = calloc(n, sizeof *b.lens);
    b.keys = calloc(n, sizeof *b.keys);
    b.restamp = calloc(n, 1);
    ok_ops = calloc(n + 2, sizeof *ok_ops);
    if (!b.bufs || !b.lens || !b.keys || !b.restamp || !ok_ops) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) b.restamp[i] = evs[i]->time_us == 0;
    if (e->head_known == 2) e->head_known = 1; /* read during an earlier call: only cached now */
    for (;;) {
        etcd_cmp cmp[3];
        etcd_op fail_ops[3];
        size_t n_cmp = 0, n_ok = 0, n_fail = 0, i_req = 0, i_fence = 0;

        if (commit__ms() >= deadline) {
            rc = ine_err(INE_EUNAVAIL, "the cluster's consensus (etcd at %s) did not commit the change within %d ms%s",
                         etcd_endpoint(e->etcd), COMMIT_DEADLINE_MS,
                         n_unres   ? "; a try whose answer was lost may still commit: retry with the same request id"
                         : lost    ? " (it kept losing races with other writers)"
                                   : "");
            goto out;
        }
        if (!e->head_known) {
            rc = commit__read_head(e);
            if (rc == INE_EUNAVAIL) {
                commit__pause();
                continue; /* the deadline above ends this */
            }
            if (rc < 0) goto out;
        }
        if (n_unres) {
            rc = commit__resolve(e, unres, &n_unres, &first);
            if (rc == INE_EUNAVAIL) {
                commit__pause();
                continue;
            }
            if (rc < 0) goto out;
            if (rc == 1) {
                *wait_seq = first + n - 1;
                e->head_known = 0; /* the head moved past our record: read it afresh next time */
                rc = INE_OK;
                goto committed;
            }
        }
        if (o->based_on && e->seq < o->based_on) {
            if (e->head_known == 2) {
                rc = ine_err(INE_ECHAIN, "this node's log (seq %llu) is ahead of the cluster's in etcd (seq %llu)",
                             (unsigned long long)o->based_on, (unsigned long long)e->seq);
                goto out;
            }
            /* Our cached head is older than the node's own log: read it again. */
            e->head_known = 0;
            continue;
        }
        if (o->based_on && e->seq > o->based_on) {
            /* The caller decides again, once its log holds what beat it. */
            *wait_seq = e->seq;
            rc = ine_err(INE_ESTALE, "the cluster's log moved on to seq %llu since seq %llu", (unsigned long long)e->seq,
                         (unsigned long long)o->based_on);
            goto out;
        }
        if (o->expect_empty && e->seq != 0) {
            rc = ine_err(INE_EEXIST, "the cluster's log in etcd already holds %llu records", (unsigned long long)e->seq);
            goto out;
        }
        commit__batch_clear(&b);
        GUARD_GOTO(commit__encode(e, evs, n, o, &b), out);
        first = e->seq + 1;
        commit__be64(head_val, e->seq + n);
        memcpy(head_val + 8, b.last_hash, EVLOG_HASH_LEN);
        commit__be64(req_val, first);

        cmp[n_cmp++] = (etcd_cmp){.target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .key = head_key,
                                  .key_len = strlen(head_key), .revision = e->mod_rev};
        if (reqid)
            cmp[n_cmp++] = (etcd_cmp){.target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .key = req_key,
                                      .key_len = strlen(req_key), .revision = 0};
        if (o->fence_key)
            cmp[n_cmp++] = (etcd_cmp){.target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .key = o->fence_key,
                                      .key_len = strlen(o->fence_key), .revision = o->fence_rev};
        for (size_t i = 0; i < n; i++)
            ok_ops[n_ok++] = (etcd_op){.type = ETCD_OP_PUT, .key = b.keys[i], .key_len = strlen(b.keys[i]),
                                       .value = b.bufs[i], .value_len = b.lens[i]};
        ok_ops[n_ok++] = (etcd_op){.type = ETCD_OP_PUT, .key = head_key, .key_len = strlen(head_key),
                                   .value = head_val, .value_len = sizeof head_val};
        if (reqid)
            ok_ops[n_ok++] = (etcd_op){.type = ETCD_OP_PUT, .key = req_key, .key_len = strlen(req_key),
                                       .value = req_val, .value_len = sizeof req_val};
        fail_ops[n_fail++] = (etcd_op){.type = ETCD_OP_RANGE, .key = head_key, .key_len = strlen(head_key)};
        if (reqid) {
            i_req = n_fail;
            fail_ops[n_fail++] = (etcd_op){.type = ETCD_OP_RANGE, .key = req_key, .key_len = strlen(req_key)};
        }
        if (o->fence_key) {
            i_fence = n_fail;
            fail_ops[n_fail++] = (etcd_op){.type = ETCD_OP_RANGE, .key = o->fence_key, .key_len = strlen(o->fence_key)};
        }

        etcd_txn_result_free(&r);
        rc = etcd_txn(e->etcd, cmp, n_cmp, ok_ops, n_ok, fail_ops, n_fail, &r);
        if (rc == INE_EUNAVAIL || (rc == INE_OK && !r.succeeded)) {
            /* Remember how to recognise this try, should it (or a copy of it) have landed. */
            if (n_unres < COMMIT__MAX_UNRESOLVED) {
                unres[n_unres].last_seq = e->seq + n;
                unres[n_unres].first_seq = first;
                memcpy(unres[n_unres].hash, b.last_hash, EVLOG_HASH_LEN);
                n_unres++;
            }
        }
        if (rc == INE_EUNAVAIL) {
            /* Sent, answer lost: read the head again; the top decides once it reached us. */
            e->head_known = 0;
            continue;
        }
        if (rc < 0) {
            e->head_known = 0;
            goto out;
        }
        if (r.succeeded) {
            commit__note(c, e->seq + 1, b.bufs, b.lens, n);
            e->seq += n;
            memcpy(e->hash, b.last_hash, EVLOG_HASH_LEN);
            e->mod_rev = r.revision;
            e->head_known = 1;
            *wait_seq = e->seq;
            goto committed;
        }
        if (r.n_ranges < 1) {
            rc = ine_err(INE_ECORRUPT, "etcd's answer to a failed append carries no head");
            e->head_known = 0;
            goto out;
        }
        GUARD_GOTO(commit__head_from(e, &r.ranges[0]), out);
        /* One of our tries may be what moved the head (and used the request id): decide that
         * first, at the top, so our own write is neither repeated nor answered as another's. */
        {
            int decidable = 0;
            for (size_t i = 0; i < n_unres; i++) decidable |= unres[i].last_seq <= e->seq;
            if (decidable) continue;
        }
        if (reqid && r.n_ranges > i_req && r.ranges[i_req].n == 1 && r.ranges[i_req].kvs[0].value_len == 8) {
            /* Used before, maybe by one of our own unanswered tries: either way, its answer.
             * Wait for the head, at or past every record of that append. */
            first = commit__get_be64(r.ranges[i_req].kvs[0].value);
            *wait_seq = e->seq;
            rc = 1;
            goto committed;
        }
        if (o->fence_key && r.n_ranges > i_fence &&
            (r.ranges[i_fence].n != 1 || r.ranges[i_fence].kvs[0].create_revision != o->fence_rev)) {
            rc = ine_err(INE_EPERM, "fenced off: %s is no longer held by this process (revision %lld)", o->fence_key,
                         (long long)o->fence_rev);
            goto out;
        }
        lost++;
    }
committed:
    if (first_seq) *first_seq = first;
out:
    if (rc < 0 && rc != INE_EUNAVAIL && rc != INE_ESTALE && rc != INE_EPERM) e->head_known = 0;
    if (b.bufs) commit__batch_clear(&b);
    etcd_txn_result_free(&r);
    free(b.bufs);
    free(b.lens);
    free(b.keys);
    free(b.restamp);
    free(ok_ops);
    return rc;
}

static void commit__etcd_close(commit_t *c)
{
    commit__etcd *e = c->backend;
    if (!e) return;
    etcd_close(e->etcd);
    free(e);
    c->backend = NULL;
}

const commit__ops commit__etcd_ops = {"etcd", commit__etcd_append, commit__etcd_close};

int commit__etcd_open(commit_t *c, const commit_etcd_conf *conf)
{
    commit__etcd *e = calloc(1, sizeof *e);
    int rc;
    if (!e) return ine_err(INE_ENOMEM, "out of memory");
    snprintf(e->prefix, sizeof e->prefix, "%s", conf->prefix);
    if ((rc = commit_conf_etcd_open(conf, 0, &e->etcd)) < 0) {
        free(e);
        return rc;
    }
    c->backend = e;
    c->ops = &commit__etcd_ops;
    return INE_OK;
}
