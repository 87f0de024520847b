/* evlog.c — the LMDB event log: durable appends that link the hash chain, idempotent request
 * ids, bounded read transactions for iteration, and chain verification that names the first
 * bad seq. See evlog.h for the on-disk layout. */
#include "evlog.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define EVLOG__BATCH_RECORDS 1024
#define EVLOG__BATCH_BYTES (4u << 20)
#define EVLOG__HEAD_LEN (8 + EVLOG_HASH_LEN)

struct evlog {
    MDB_env *env;
    MDB_dbi events, meta, reqids;
    int read_only;
    int stale_cleared;
};

static const uint8_t evlog__zero_hash[EVLOG_HASH_LEN];

/* Free space below which an I/O error at commit is the disk being full. */
#define EVLOG__FULL_SLACK (1u << 20)

/* LMDB reports a write the file system cut short (it filled part-way through) as EIO, not
 * ENOSPC: tell the operator the disk is full when it is. */
static int evlog__commit_err(evlog_t *log, int mrc)
{
    const char *path = NULL;
    struct statvfs sv;
    if (mrc == EIO && mdb_env_get_path(log->env, &path) == 0 && path && statvfs(path, &sv) == 0 &&
        (unsigned long long)sv.f_bavail * sv.f_frsize < EVLOG__FULL_SLACK)
        mrc = ENOSPC;
    return ine__err_mdb(mrc, "commit of the event log append");
}

static void evlog__put_be64(uint8_t b[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) b[i] = (uint8_t)v;
}

static uint64_t evlog__get_be64(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | b[i];
    return v;
}

/* OpenSSL 3's one-shot SHA256() looks the digest up (locks, name lookup, refcounts) on every
 * call, half its cost on a 100-byte record: fetch it once per process instead. */
static EVP_MD *evlog__sha256_md;
static pthread_once_t evlog__sha256_once = PTHREAD_ONCE_INIT;
static void evlog__sha256_fetch(void) { evlog__sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

void evlog_hash(const uint8_t *raw, size_t len, uint8_t out[EVLOG_HASH_LEN])
{
    pthread_once(&evlog__sha256_once, evlog__sha256_fetch);
    if (!evlog__sha256_md || !EVP_Digest(raw, len, out, NULL, evlog__sha256_md, NULL)) SHA256(raw, len, out);
}

/* Records decoded during iteration live only for their callback, so they come from a bump
 * arena: no malloc/free per field, and freeing one is a reset. What does not fit spills to
 * malloc until the reset, which then doubles the block. */
typedef struct {
    uint8_t *buf;
    size_t cap, used;
    void **spill;
    size_t nspill, spillcap;
} evlog__arena;

static void *evlog__arena_alloc(void *ud, size_t size)
{
    evlog__arena *a = ud;
    size_t need = (size + 15) & ~(size_t)15;
    void *p;
    if (a->used + need <= a->cap) {
        p = a->buf + a->used;
        a->used += need;
        return p;
    }
    if (a->nspill == a->spillcap) {
        size_t cap = a->spillcap ? 2 * a->spillcap : 16;
        void **ns = realloc(a->spill, cap * sizeof *ns);
        if (!ns) return NULL;
        a->spill = ns;
        a->spillcap = cap;
    }
    if ((p = malloc(size))) a->spill[a->nspill++] = p;
    return p;
}

static void evlog__arena_free(void *ud, void *p)
{
    (void)ud;
    (void)p;
}

static void evlog__arena_reset(evlog__arena *a)
{
    for (size_t i = 0; i < a->nspill; i++) free(a->spill[i]);
    if (a->nspill) {
        uint8_t *nb = malloc(2 * a->cap);
        if (nb) {
            free(a->buf);
            a->buf = nb;
            a->cap *= 2;
        }
    }
    a->nspill = 0;
    a->used = 0;
}

/* Begin a transaction; if another process grew the map since we opened, adopt its size. */
static int evlog__txn_begin(evlog_t *log, unsigned flags, MDB_txn **txn)
{
    int mrc = mdb_txn_begin(log->env, NULL, flags, txn);
    if (mrc == MDB_MAP_RESIZED) {
        mrc = mdb_env_set_mapsize(log->env, 0);
        if (mrc == 0) mrc = mdb_txn_begin(log->env, NULL, flags, txn);
    }
    if (mrc != 0) return ine__err_mdb(mrc, "mdb_txn_begin");
    return INE_OK;
}

int evlog_opts_from_env(evlog_opts *o)
{
    const char *s = getenv("INE_LOG_MAP_SIZE");
    char *end;
    unsigned long long v;
    memset(o, 0, sizeof *o);
    if (!s || !*s) return INE_OK;
    v = strtoull(s, &end, 10);
    if (*end == 'K' || *end == 'k') v <<= 10, end++;
    else if (*end == 'M' || *end == 'm') v <<= 20, end++;
    else if (*end == 'G' || *end == 'g') v <<= 30, end++;
    if (*end || v < 4096 || v > (1ULL << 40))
        return ine_err(INE_EINVAL, "INE_LOG_MAP_SIZE takes 4096 bytes to 1T (e.g. 64M), not '%s'", s);
    o->map_size = (size_t)v;
    return INE_OK;
}

int evlog_open(const char *dir, const evlog_opts *opts, evlog_t **out)
{
    evlog_t *log;
    MDB_txn *txn = NULL;
    int rc = INE_OK, dead = 0;
    unsigned envflags = MDB_NOTLS;
    size_t map_size = opts && opts->map_size ? opts->map_size : EVLOG_DEFAULT_MAP_SIZE;

    *out = NULL;
    if (!(log = calloc(1, sizeof *log))) return ine_err(INE_ENOMEM, "out of memory");
    log->read_only = opts && opts->read_only;
    if (log->read_only) {
        struct stat st;
        if (stat(dir, &st) != 0) {
            free(log);
            return ine_err(INE_ENOTFOUND, "no event log at %s: %s", dir, strerror(errno));
        }
    } else if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        free(log);
        return ine_err(INE_EIO, "cannot create %s: %s", dir, strerror(errno));
    }

    GUARD_MDB(mdb_env_create(&log->env), err);
    GUARD_MDB(mdb_env_set_maxdbs(log->env, 4), err);
    GUARD_MDB(mdb_env_set_mapsize(log->env, map_size), err);
    GUARD_MDB(mdb_env_set_maxreaders(log->env, 256), err);
    /* MDB_RDONLY still records readers in lock.mdb, so an inspector never blocks writers. */
    if (log->read_only) envflags |= MDB_RDONLY;
    if (opts && opts->copy) envflags |= MDB_NOMETASYNC;
    GUARD_MDB(mdb_env_open(log->env, dir, envflags, 0600), err);
    /* A process that died inside a read transaction leaves its slot behind; a stale slot
     * keeps old pages from being reused and the file grows without bound. */
    GUARD_MDB(mdb_reader_check(log->env, &dead), err);
    log->stale_cleared = dead;
    if (dead) logline(LOGLINE_WARN, 0, "event log %s: cleared %d stale reader slot(s)", dir, dead);

    GUARD_GOTO(evlog__txn_begin(log, log->read_only ? MDB_RDONLY : 0, &txn), err);
    {
        unsigned dflags = log->read_only ? 0 : MDB_CREATE;
        int mrc = mdb_dbi_open(txn, "events", dflags, &log->events);
        if (mrc == MDB_NOTFOUND) {
            rc = ine_err(INE_ENOTFOUND, "%s holds no event log", dir);
            goto err;
        }
        GUARD_MDB(mrc, err);
        GUARD_MDB(mdb_dbi_open(txn, "meta", dflags, &log->meta), err);
        GUARD_MDB(mdb_dbi_open(txn, "reqids", dflags, &log->reqids), err);
    }
    GUARD_MDB(mdb_txn_commit(txn), err);
    *out = log;
    return INE_OK;

err:
    if (txn) mdb_txn_abort(txn);
    if (log->env) mdb_env_close(log->env);
    free(log);
    return rc;
}

void evlog_close(evlog_t *log)
{
    if (!log) return;
    mdb_env_close(log->env);
    free(log);
}

int evlog_stale_readers_cleared(const evlog_t *log) { return log->stale_cleared; }

int evlog_reader_check(evlog_t *log, int *cleared)
{
    int dead = 0, rc = INE_OK;
    GUARD_MDB(mdb_reader_check(log->env, &dead), err);
    log->stale_cleared += dead;
    if (dead) logline(LOGLINE_WARN, 0, "event log: cleared %d stale reader slot(s)", dead);
    if (cleared) *cleared = dead;
err:
    return rc;
}

static int evlog__get_head(evlog_t *log, MDB_txn *txn, uint64_t *seq, uint8_t hash[EVLOG_HASH_LEN])
{
    MDB_val k = {4, "head"}, v;
    int mrc = mdb_get(txn, log->meta, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        *seq = 0;
        if (hash) memcpy(hash, evlog__zero_hash, EVLOG_HASH_LEN);
        return INE_OK;
    }
    if (mrc != 0) return ine__err_mdb(mrc, "read log head");
    if (v.mv_size != EVLOG__HEAD_LEN) return ine_err(INE_ECORRUPT, "log head record has %zu bytes, expected %d", v.mv_size, EVLOG__HEAD_LEN);
    *seq = evlog__get_be64(v.mv_data);
    if (hash) memcpy(hash, (uint8_t *)v.mv_data + 8, EVLOG_HASH_LEN);
    return INE_OK;
}

/* The record's own fields, set for packing: seq, time (if unset), whatever the prepare hook
 * seals with the seq, and the link and request id, which point into the caller's memory only
 * while packing (evlog__stamp_end puts the event's own pointers back). */
typedef struct {
    char *reqid;
    ProtobufCBinaryData prev;
} evlog__stamp;

static int evlog__stamp_begin(evlog_event *ev, uint64_t seq, uint8_t prev[EVLOG_HASH_LEN], const char *reqid,
                              evlog_prepare_fn prepare, void *ud, evlog__stamp *st)
{
    ev->seq = seq;
    if (ev->time_us == 0) ev->time_us = ine_clock_now_us();
    if (prepare) GUARD(prepare(ev, ud));
    st->reqid = ev->request_id;
    st->prev = ev->prev_sha256;
    ev->prev_sha256.data = prev;
    ev->prev_sha256.len = EVLOG_HASH_LEN;
    if (reqid) ev->request_id = (char *)reqid;
    return INE_OK;
}

static void evlog__stamp_end(evlog_event *ev, const evlog__stamp *st)
{
    ev->request_id = st->reqid;
    ev->prev_sha256 = st->prev;
}

int evlog_encode(evlog_event *ev, uint64_t seq, const uint8_t prev[EVLOG_HASH_LEN], const char *request_id,
                 evlog_prepare_fn prepare, void *prepare_ud, uint8_t **out, size_t *len)
{
    const char *reqid = request_id && *request_id ? request_id : NULL;
    uint8_t link[EVLOG_HASH_LEN];
    evlog__stamp st;
    size_t n;
    if (reqid && strlen(reqid) > EVLOG_MAX_REQUEST_ID)
        return ine_err(INE_EINVAL, "request id longer than %d bytes", EVLOG_MAX_REQUEST_ID);
    if (!ev || ev->body_case == INE__V1__EVENT__BODY__NOT_SET) return ine_err(INE_EINVAL, "an event without a body");
    memcpy(link, prev, EVLOG_HASH_LEN);
    GUARD(evlog__stamp_begin(ev, seq, link, reqid, prepare, prepare_ud, &st));
    n = protobuf_c_message_get_packed_size(&ev->base);
    if (!(*out = malloc(n ? n : 1))) {
        evlog__stamp_end(ev, &st);
        return ine_err(INE_ENOMEM, "out of memory");
    }
    protobuf_c_message_pack(&ev->base, *out);
    *len = n;
    evlog__stamp_end(ev, &st);
    return INE_OK;
}

int evlog_append(evlog_t *log, evlog_event **evs, size_t n, const evlog_append_opts *opts,
                 uint64_t *first_seq)
{
    MDB_txn *txn = NULL;
    const char *reqid = opts && opts->request_id && *opts->request_id ? opts->request_id : NULL;
    uint8_t hash[EVLOG_HASH_LEN], key[8], head[EVLOG__HEAD_LEN];
    uint64_t seq;
    size_t i;
    int rc = INE_OK;

    if (log->read_only) return ine_err(INE_EPERM, "event log opened read-only");
    if (n == 0) return ine_err(INE_EINVAL, "append of zero events");
    if (reqid && strlen(reqid) > EVLOG_MAX_REQUEST_ID)
        return ine_err(INE_EINVAL, "request id longer than %d bytes", EVLOG_MAX_REQUEST_ID);
    for (i = 0; i < n; i++)
        if (!evs[i] || evs[i]->body_case == INE__V1__EVENT__BODY__NOT_SET)
            return ine_err(INE_EINVAL, "event %zu of the append has no body", i);

    GUARD_GOTO(evlog__txn_begin(log, 0, &txn), err);
    if (reqid) {
        MDB_val k = {strlen(reqid), (void *)reqid}, v;
        int mrc = mdb_get(txn, log->reqids, &k, &v);
        if (mrc == 0 && v.mv_size == 8) {
            if (first_seq) *first_seq = evlog__get_be64(v.mv_data);
            mdb_txn_abort(txn);
            return 1;
        }
        if (mrc != MDB_NOTFOUND) GUARD_MDB(mrc, err);
    }
    GUARD_GOTO(evlog__get_head(log, txn, &seq, hash), err);
    if (opts && opts->expect_head && seq != opts->expect_head) {
        rc = ine_err(INE_ESTALE, "the log moved on to seq %llu since seq %llu", (unsigned long long)seq,
                     (unsigned long long)opts->expect_head);
        goto err;
    }
    if (first_seq) *first_seq = seq + 1;

    for (i = 0; i < n; i++) {
        evlog_event *ev = evs[i];
        evlog__stamp st;
        MDB_val k = {8, key}, v;
        int mrc;

        GUARD_GOTO(evlog__stamp_begin(ev, ++seq, hash, reqid, opts ? opts->prepare : NULL,
                                      opts ? opts->prepare_ud : NULL, &st), err);
        v.mv_size = protobuf_c_message_get_packed_size(&ev->base);
        evlog__put_be64(key, seq);
        /* MDB_RESERVE: pack straight into the page, no intermediate copy. */
        mrc = mdb_put(txn, log->events, &k, &v, MDB_APPEND | MDB_RESERVE);
        if (mrc == 0) {
            protobuf_c_message_pack(&ev->base, v.mv_data);
            evlog_hash(v.mv_data, v.mv_size, hash);
        }
        evlog__stamp_end(ev, &st);
        if (mrc == MDB_KEYEXIST) {
            rc = ine_err(INE_ECHAIN, "record %llu already exists beyond the recorded head; run ine-log verify",
                         (unsigned long long)seq);
            goto err;
        }
        GUARD_MDB(mrc, err);
    }
    {
        MDB_val k = {4, "head"}, v = {sizeof head, head};
        evlog__put_be64(head, seq);
        memcpy(head + 8, hash, EVLOG_HASH_LEN);
        GUARD_MDB(mdb_put(txn, log->meta, &k, &v, 0), err);
    }
    if (reqid) {
        MDB_val k = {strlen(reqid), (void *)reqid}, v = {8, key};
        evlog__put_be64(key, *first_seq);
        GUARD_MDB(mdb_put(txn, log->reqids, &k, &v, MDB_NOOVERWRITE), err);
    }
    /* Durable: LMDB syncs data then meta before returning (no MDB_NOSYNC/NOMETASYNC). */
    {
        int mrc = mdb_txn_commit(txn);
        txn = NULL;
        if (mrc != 0) {
            rc = evlog__commit_err(log, mrc);
            goto err;
        }
    }
    return INE_OK;

err:
    if (txn) mdb_txn_abort(txn);
    /* Seqs assigned in place belong to nothing now. */
    for (i = 0; i < n; i++) evs[i]->seq = 0;
    return rc;
}

/* Check record `seq` against the head it must follow and put it; the head moves to it. */
static int evlog__put_raw(evlog_t *log, MDB_txn *txn, uint64_t seq, const uint8_t *raw, size_t len,
                          uint64_t *head_seq, uint8_t hash[EVLOG_HASH_LEN])
{
    evlog_event *ev;
    uint8_t key[8], head[EVLOG__HEAD_LEN];
    int rc = INE_OK;

    if (!(ev = ine__v1__event__unpack(NULL, len, raw)))
        return ine_err(INE_ECORRUPT, "record %llu does not decode as an event", (unsigned long long)seq);
    if (ev->seq != seq || seq != *head_seq + 1) {
        rc = ine_err(INE_ECHAIN, "record %llu (says seq %llu) does not follow the head %llu",
                     (unsigned long long)seq, (unsigned long long)ev->seq, (unsigned long long)*head_seq);
        goto out;
    }
    if (ev->prev_sha256.len != EVLOG_HASH_LEN || memcmp(ev->prev_sha256.data, hash, EVLOG_HASH_LEN) != 0) {
        rc = ine_err(INE_ECHAIN, "record %llu does not link to record %llu (hash chain broken)",
                     (unsigned long long)seq, (unsigned long long)*head_seq);
        goto out;
    }
    {
        MDB_val k = {8, key}, v = {len, (void *)raw};
        evlog__put_be64(key, seq);
        GUARD_MDB(mdb_put(txn, log->events, &k, &v, MDB_APPEND), out);
    }
    evlog_hash(raw, len, hash);
    *head_seq = seq;
    {
        MDB_val k = {4, "head"}, v = {sizeof head, head};
        evlog__put_be64(head, seq);
        memcpy(head + 8, hash, EVLOG_HASH_LEN);
        GUARD_MDB(mdb_put(txn, log->meta, &k, &v, 0), out);
    }
    if (ev->request_id && *ev->request_id) {
        MDB_val k = {strlen(ev->request_id), ev->request_id}, v = {8, key}, old;
        /* Only the first event of a request maps its id. */
        if (mdb_get(txn, log->reqids, &k, &old) == MDB_NOTFOUND) GUARD_MDB(mdb_put(txn, log->reqids, &k, &v, 0), out);
    }
out:
    evlog_event_free(ev);
    return rc;
}

int evlog_append_raw_n(evlog_t *log, uint64_t first_seq, const uint8_t *const *raws, const size_t *lens, size_t n)
{
    MDB_txn *txn = NULL;
    uint8_t hash[EVLOG_HASH_LEN];
    uint64_t head_seq;
    int rc = INE_OK;

    if (log->read_only) return ine_err(INE_EPERM, "event log opened read-only");
    if (n == 0) return INE_OK;
    GUARD_GOTO(evlog__txn_begin(log, 0, &txn), err);
    GUARD_GOTO(evlog__get_head(log, txn, &head_seq, hash), err);
    for (size_t i = 0; i < n; i++) GUARD_GOTO(evlog__put_raw(log, txn, first_seq + i, raws[i], lens[i], &head_seq, hash), err);
    {
        int mrc = mdb_txn_commit(txn);
        txn = NULL;
        if (mrc != 0) {
            rc = evlog__commit_err(log, mrc);
            goto err;
        }
    }
err:
    if (txn) mdb_txn_abort(txn);
    return rc;
}

int evlog_append_raw(evlog_t *log, uint64_t seq, const uint8_t *raw, size_t len)
{
    return evlog_append_raw_n(log, seq, &raw, &len, 1);
}

int evlog_head(evlog_t *log, uint64_t *seq, uint8_t hash[EVLOG_HASH_LEN])
{
    MDB_txn *txn;
    int rc;
    GUARD(evlog__txn_begin(log, MDB_RDONLY, &txn));
    rc = evlog__get_head(log, txn, seq, hash);
    mdb_txn_abort(txn);
    return rc;
}

int evlog_append_one(evlog_t *log, evlog_event *ev, const char *request_id, uint64_t *seq)
{
    evlog_append_opts o = {.request_id = request_id};
    return evlog_append(log, &ev, 1, &o, seq);
}

int evlog_last_seq(evlog_t *log, uint64_t *out)
{
    MDB_txn *txn;
    int rc;
    GUARD(evlog__txn_begin(log, MDB_RDONLY, &txn));
    rc = evlog__get_head(log, txn, out, NULL);
    mdb_txn_abort(txn);
    return rc;
}

static evlog_event *evlog__decode(const void *raw, size_t len)
{
    return ine__v1__event__unpack(NULL, len, raw);
}

void evlog_event_free(evlog_event *ev)
{
    if (ev) ine__v1__event__free_unpacked(ev, NULL);
}

int evlog_read_raw(evlog_t *log, uint64_t seq, uint8_t **buf, size_t *len)
{
    MDB_txn *txn = NULL;
    uint8_t key[8];
    MDB_val k = {8, key}, v;
    int rc = INE_OK, mrc;

    *buf = NULL;
    evlog__put_be64(key, seq);
    GUARD(evlog__txn_begin(log, MDB_RDONLY, &txn));
    mrc = mdb_get(txn, log->events, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        rc = ine_err(INE_ENOTFOUND, "no record %llu in the log", (unsigned long long)seq);
        goto err;
    }
    GUARD_MDB(mrc, err);
    if (!(*buf = malloc(v.mv_size ? v.mv_size : 1))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto err;
    }
    memcpy(*buf, v.mv_data, v.mv_size);
    *len = v.mv_size;
err:
    mdb_txn_abort(txn);
    return rc;
}

int evlog_read(evlog_t *log, uint64_t seq, evlog_event **out)
{
    uint8_t *raw;
    size_t len;
    *out = NULL;
    GUARD(evlog_read_raw(log, seq, &raw, &len));
    *out = evlog__decode(raw, len);
    free(raw);
    if (!*out) return ine_err(INE_ECORRUPT, "record %llu does not decode as an event", (unsigned long long)seq);
    return INE_OK;
}

/* A batch of raw records copied out of one short read transaction. */
typedef struct {
    uint8_t *buf;
    size_t cap, used;
    size_t n;
    uint64_t seqs[EVLOG__BATCH_RECORDS];
    size_t offs[EVLOG__BATCH_RECORDS + 1];
} evlog__batch;

static int evlog__batch_fill(evlog_t *log, evlog__batch *b, uint64_t from, uint64_t to)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    uint8_t key[8];
    MDB_val k = {8, key}, v;
    MDB_cursor_op op = MDB_SET_RANGE;
    int rc = INE_OK, mrc;

    b->n = 0;
    b->used = 0;
    evlog__put_be64(key, from);
    GUARD(evlog__txn_begin(log, MDB_RDONLY, &txn));
    GUARD_MDB(mdb_cursor_open(txn, log->events, &cur), err);
    while (b->n < EVLOG__BATCH_RECORDS && b->used < EVLOG__BATCH_BYTES) {
        uint64_t seq;
        mrc = mdb_cursor_get(cur, &k, &v, op);
        op = MDB_NEXT;
        if (mrc == MDB_NOTFOUND) break;
        GUARD_MDB(mrc, err);
        if (k.mv_size != 8) {
            rc = ine_err(INE_ECORRUPT, "event log holds a key of %zu bytes", k.mv_size);
            goto err;
        }
        seq = evlog__get_be64(k.mv_data);
        if (to && seq > to) break;
        if (b->used + v.mv_size > b->cap) {
            size_t cap = b->cap ? b->cap : 64 * 1024;
            uint8_t *nb;
            while (cap < b->used + v.mv_size) cap *= 2;
            if (!(nb = realloc(b->buf, cap))) {
                rc = ine_err(INE_ENOMEM, "out of memory");
                goto err;
            }
            b->buf = nb;
            b->cap = cap;
        }
        memcpy(b->buf + b->used, v.mv_data, v.mv_size);
        b->seqs[b->n] = seq;
        b->offs[b->n] = b->used;
        b->used += v.mv_size;
        b->n++;
    }
    b->offs[b->n] = b->used;
err:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

int evlog_iterate(evlog_t *log, uint64_t from, uint64_t to, int tolerate_corrupt,
                  evlog_iter_fn fn, void *ud)
{
    evlog__batch *b = calloc(1, sizeof *b);
    evlog__arena arena = {.cap = 4096};
    ProtobufCAllocator alloc = {evlog__arena_alloc, evlog__arena_free, &arena};
    int rc = INE_OK;

    if (!b || !(arena.buf = malloc(arena.cap))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    if (from == 0) from = 1;
    for (;;) {
        GUARD_GOTO(evlog__batch_fill(log, b, from, to), out);
        if (b->n == 0) break;
        /* The read transaction is over: callbacks may append without deadlocking. */
        for (size_t i = 0; i < b->n; i++) {
            evlog_record rec = {.seq = b->seqs[i], .raw = b->buf + b->offs[i],
                                .raw_len = b->offs[i + 1] - b->offs[i]};
            rec.ev = ine__v1__event__unpack(&alloc, rec.raw_len, rec.raw);
            if (!rec.ev && !tolerate_corrupt) {
                rc = ine_err(INE_ECORRUPT, "record %llu does not decode as an event", (unsigned long long)rec.seq);
                goto out;
            }
            rc = fn(&rec, ud);
            evlog__arena_reset(&arena);
            if (rc != 0) goto out;
        }
        from = b->seqs[b->n - 1] + 1;
        if (to && from > to) break;
    }
out:
    evlog__arena_reset(&arena);
    free(arena.buf);
    free(arena.spill);
    if (b) free(b->buf);
    free(b);
    return rc;
}

/* Verification walks the chain once. A broken link between k-1 and k means either k-1's
 * bytes changed (its hash moved) or k's stored link changed (then k's own hash moved too,
 * so the link into k+1, or the head, breaks as well): one record of look-ahead tells which. */
typedef struct {
    evlog_verify_report *rep;
    uint64_t expect;
    uint8_t prev_hash[EVLOG_HASH_LEN];
    uint64_t pending; /* seq k whose incoming link broke; decided at k+1 */
} evlog__verify_ctx;

static int evlog__verify_fail(evlog__verify_ctx *c, int rc, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int evlog__verify_fail(evlog__verify_ctx *c, int rc, uint64_t seq, const char *fmt, ...)
{
    va_list ap;
    c->rep->rc = rc;
    c->rep->bad_seq = seq;
    va_start(ap, fmt);
    vsnprintf(c->rep->reason, sizeof c->rep->reason, fmt, ap);
    va_end(ap);
    return 1;
}

static int evlog__verify_one(const evlog_record *rec, void *ud)
{
    evlog__verify_ctx *c = ud;
    unsigned long long s = rec->seq;
    int link_ok;

    if (rec->seq != c->expect)
        return evlog__verify_fail(c, INE_ECHAIN, c->expect, "record %llu is missing (the next record is %llu)",
                                  (unsigned long long)c->expect, s);
    if (!rec->ev)
        return evlog__verify_fail(c, INE_ECORRUPT, s, "record %llu does not decode as an event", s);
    if (rec->ev->seq != rec->seq)
        return evlog__verify_fail(c, INE_ECORRUPT, s, "record %llu says it is seq %llu", s,
                                  (unsigned long long)rec->ev->seq);
    link_ok = rec->ev->prev_sha256.len == EVLOG_HASH_LEN &&
              memcmp(rec->ev->prev_sha256.data, c->prev_hash, EVLOG_HASH_LEN) == 0;
    if (c->pending) {
        if (!link_ok)
            return evlog__verify_fail(c, INE_ECHAIN, c->pending,
                                      "record %llu was altered (its link and its own hash both disagree with neighbours)",
                                      (unsigned long long)c->pending);
        return evlog__verify_fail(c, INE_ECHAIN, c->pending - 1,
                                  "record %llu was altered (its SHA-256 does not match the link in record %llu)",
                                  (unsigned long long)(c->pending - 1), (unsigned long long)c->pending);
    }
    if (!link_ok) {
        if (rec->seq == 1)
            return evlog__verify_fail(c, INE_ECHAIN, 1, "record 1 does not start the chain (its link is not all zeros)");
        c->pending = rec->seq;
    }
    evlog_hash(rec->raw, rec->raw_len, c->prev_hash);
    c->rep->records++;
    c->expect++;
    return 0;
}

/* The highest key stored and the head recorded, read in one transaction. */
static int evlog__last_key(evlog_t *log, uint64_t *last_key, uint64_t *head)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = INE_OK, mrc;
    *last_key = 0;
    GUARD(evlog__txn_begin(log, MDB_RDONLY, &txn));
    GUARD_GOTO(evlog__get_head(log, txn, head, NULL), err);
    GUARD_MDB(mdb_cursor_open(txn, log->events, &cur), err);
    mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (mrc == 0 && k.mv_size == 8) *last_key = evlog__get_be64(k.mv_data);
    else if (mrc != MDB_NOTFOUND) GUARD_MDB(mrc, err);
err:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

int evlog_verify(evlog_t *log, evlog_verify_report *rep)
{
    evlog__verify_ctx c = {.rep = rep, .expect = 1};
    uint8_t head_hash[EVLOG_HASH_LEN];
    uint64_t last_key = 0, head_now = 0;
    MDB_txn *txn;
    int rc;

    memset(rep, 0, sizeof *rep);
    GUARD(evlog__txn_begin(log, MDB_RDONLY, &txn));
    rc = evlog__get_head(log, txn, &rep->head_seq, head_hash);
    mdb_txn_abort(txn);
    /* Walk up to the head seen now: appends that land meanwhile are not this check's business,
     * and the walk never holds one read transaction for the whole log. */
    if (rc >= 0) rc = rep->head_seq ? evlog_iterate(log, 1, rep->head_seq, 1, evlog__verify_one, &c) : INE_OK;
    if (rc >= 0) rc = evlog__last_key(log, &last_key, &head_now);
    if (rc < 0) {
        rep->rc = rc;
        snprintf(rep->reason, sizeof rep->reason, "%s", ine_err_msg());
        return rc;
    }
    if (rep->rc) goto done;
    {
        uint64_t last = c.expect - 1;
        int head_ok = memcmp(head_hash, c.prev_hash, EVLOG_HASH_LEN) == 0;
        if (c.pending) {
            if (!head_ok)
                evlog__verify_fail(&c, INE_ECHAIN, c.pending, "record %llu (the last) was altered",
                                   (unsigned long long)c.pending);
            else
                evlog__verify_fail(&c, INE_ECHAIN, c.pending - 1,
                                   "record %llu was altered (its SHA-256 does not match the link in record %llu)",
                                   (unsigned long long)(c.pending - 1), (unsigned long long)c.pending);
        } else if (rep->head_seq > last) {
            evlog__verify_fail(&c, INE_ECHAIN, last + 1, "records %llu..%llu are missing (the log was truncated)",
                               (unsigned long long)(last + 1), (unsigned long long)rep->head_seq);
        } else if (last && !head_ok) {
            evlog__verify_fail(&c, INE_ECHAIN, last, "record %llu (the last) was altered: it does not match the head hash",
                               (unsigned long long)last);
        } else if (last_key > head_now) {
            evlog__verify_fail(&c, INE_ECHAIN, head_now + 1, "record %llu lies beyond the recorded head %llu",
                               (unsigned long long)last_key, (unsigned long long)head_now);
        }
    }
done:
    if (rep->rc) ine_err(rep->rc, "%s", rep->reason);
    return rep->rc;
}

const char *evlog_type_name(const evlog_event *ev)
{
    const ProtobufCFieldDescriptor *f;
    if (!ev || ev->body_case == INE__V1__EVENT__BODY__NOT_SET) return "unknown";
    f = protobuf_c_message_descriptor_get_field(&ine__v1__event__descriptor, (unsigned)ev->body_case);
    return f ? f->name : "unknown";
}

int evlog_type_from_name(const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(&ine__v1__event__descriptor, name);
    /* Only the body's members are types; envelope fields are not. */
    if (!f || !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) return 0;
    return (int)f->id;
}

int evlog_disk_bytes(evlog_t *log, uint64_t *out)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc = INE_OK;
    GUARD_MDB(mdb_env_info(log->env, &info), err);
    GUARD_MDB(mdb_env_stat(log->env, &st), err);
    *out = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
err:
    return rc;
}
