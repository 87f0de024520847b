/* evlog.h — the append-only event log on LMDB: the cluster's single source of truth.
 *
 * Layout (one LMDB environment, <data-dir>/log/):
 *   "events"  8-byte big-endian seq -> serialized ine.v1.Event (written with MDB_APPEND)
 *   "meta"    "head" -> 8-byte BE seq + SHA-256 of the last record (detects truncation)
 *   "reqids"  request id -> 8-byte BE seq of the first event its append wrote (idempotency)
 *
 * Every record carries the SHA-256 of the record before it, so an altered, removed or
 * truncated record breaks the chain at a seq that evlog_verify() names. Appends commit with a
 * full sync (no event is acknowledged before it is on disk). Several processes may append at
 * once: LMDB's writer lock serialises them. Open the log after fork/exec, never before. */
#ifndef INE_EVLOG_H
#define INE_EVLOG_H

#include <stddef.h>
#include <stdint.h>

#include "ine/v1/event.pb-c.h"

typedef Ine__V1__Event evlog_event;
typedef struct evlog evlog_t;

#define EVLOG_HASH_LEN 32
#define EVLOG_DEFAULT_MAP_SIZE (4ULL << 30) /* sparse: costs nothing until used */
#define EVLOG_MAX_REQUEST_ID 256

typedef struct {
    size_t map_size;   /* 0: EVLOG_DEFAULT_MAP_SIZE; fixed for the life of the handle */
    int read_only;     /* open without creating; appends fail */
    int copy;          /* this log copies one kept elsewhere (ine-mirror copying etcd): one
                          sync per commit instead of two (MDB_NOMETASYNC). A system crash may
                          undo the last commit, never corrupt: the copier fetches it again. */
} evlog_opts;

/* Options from the environment: INE_LOG_MAP_SIZE (bytes, or with a K/M/G suffix, 4096 to 1T)
 * caps the map — operators size it, tests provoke a full map with a tiny one. Unset: the
 * default. INE_EINVAL with a sentence for a malformed value. */
int evlog_opts_from_env(evlog_opts *o);

/* Open (creating if needed, unless read_only) the log in directory `dir`. */
int evlog_open(const char *dir, const evlog_opts *opts, evlog_t **out);
void evlog_close(evlog_t *log);

/* How many stale reader slots (from dead processes) evlog_open cleared. */
int evlog_stale_readers_cleared(const evlog_t *log);
/* Clear the slots of readers that died since (long-running services call it on a timer);
 * *cleared (may be NULL) says how many. */
int evlog_reader_check(evlog_t *log, int *cleared);

/* Called for each event inside the append transaction once its seq is assigned and before it
 * is serialized: the place to seal secrets with the seq in their additional data. A negative
 * return aborts the whole append. */
typedef int (*evlog_prepare_fn)(evlog_event *ev, void *ud);

typedef struct {
    const char *request_id; /* NULL/"": not idempotent; else stamped on every event */
    evlog_prepare_fn prepare;
    void *prepare_ud;
    uint64_t expect_head;   /* 0: any; else append only if the head is this seq (INE_ESTALE) */
} evlog_append_opts;

/* Append `n` events as one all-or-nothing, durable transaction. Sets each event's seq,
 * prev_sha256, request_id and (if 0) time_us in place. On success *first_seq is the seq of
 * evs[0]. If request_id was already used, nothing is written, *first_seq is the original seq
 * and the return is 1 (a duplicate), not 0. */
int evlog_append(evlog_t *log, evlog_event **evs, size_t n, const evlog_append_opts *opts,
                 uint64_t *first_seq);

/* The bytes evlog_append would store for `ev` as record `seq` linking to `prev`: stamps seq and
 * time (if 0), runs the prepare hook, packs into *out (malloc'd; caller frees). The event's
 * prev_sha256 and request_id are left as they were. For writers that commit elsewhere first
 * (lib/commit.h) and must know a record's exact bytes and hash before it reaches this log. */
int evlog_encode(evlog_event *ev, uint64_t seq, const uint8_t prev[EVLOG_HASH_LEN], const char *request_id,
                 evlog_prepare_fn prepare, void *prepare_ud, uint8_t **out, size_t *len);

/* Convenience: one event, optional request id. */
int evlog_append_one(evlog_t *log, evlog_event *ev, const char *request_id, uint64_t *seq);

/* Append one record received as raw bytes (what ine-mirror copies from etcd, or a record of a
 * newer schema): it must decode, carry `seq` == head + 1, and link to the current head hash,
 * or nothing is written (INE_ECORRUPT / INE_ECHAIN naming the seq). Durable like any append. */
int evlog_append_raw(evlog_t *log, uint64_t seq, const uint8_t *raw, size_t len);

/* The same for `n` consecutive records first_seq.. in one durable transaction, all or nothing:
 * one sync for the lot (ine-mirror applies what etcd delivered together this way). */
int evlog_append_raw_n(evlog_t *log, uint64_t first_seq, const uint8_t *const *raws, const size_t *lens, size_t n);

/* The last seq and its record's hash (zeros for an empty log): what a new record must link to. */
int evlog_head(evlog_t *log, uint64_t *seq, uint8_t hash[EVLOG_HASH_LEN]);

/* The seq of the last record (0 for an empty log). */
int evlog_last_seq(evlog_t *log, uint64_t *out);

/* Read and decode one record; free with evlog_event_free(). INE_ENOTFOUND if absent,
 * INE_ECORRUPT (message names the seq) if it does not decode. */
int evlog_read(evlog_t *log, uint64_t seq, evlog_event **out);
void evlog_event_free(evlog_event *ev);

/* A copy of one record's raw bytes (malloc'd; caller frees). */
int evlog_read_raw(evlog_t *log, uint64_t seq, uint8_t **buf, size_t *len);

/* One record as the iterator hands it over. `ev` is NULL when the record does not decode
 * (then `rc` is INE_ECORRUPT); both pointers are valid only during the callback. */
typedef struct {
    uint64_t seq;
    const uint8_t *raw;
    size_t raw_len;
    evlog_event *ev;
} evlog_record;

/* Return 0 to go on, a positive value to stop (returned as is), negative to fail. */
typedef int (*evlog_iter_fn)(const evlog_record *rec, void *ud);

/* Visit records with from <= seq <= to (to == 0: up to the end) in order. Read transactions
 * are kept short (a bounded batch each), so a long replay never pins old pages. Records that
 * do not decode stop the walk with INE_ECORRUPT naming the seq, unless `tolerate_corrupt`. */
int evlog_iterate(evlog_t *log, uint64_t from, uint64_t to, int tolerate_corrupt,
                  evlog_iter_fn fn, void *ud);

typedef struct {
    uint64_t records;    /* records checked */
    uint64_t head_seq;   /* the head recorded in meta */
    uint64_t bad_seq;    /* first bad seq, 0 if intact */
    int rc;              /* INE_OK, INE_ECORRUPT or INE_ECHAIN */
    char reason[256];
} evlog_verify_report;

/* Check every record: decodes, its seq matches its key, seqs have no gap, each record's
 * prev_sha256 is the hash of the one before, the head matches the last record. Returns the
 * report's rc. */
int evlog_verify(evlog_t *log, evlog_verify_report *rep);

/* SHA-256 of a record's raw bytes (the chain link). */
void evlog_hash(const uint8_t *raw, size_t len, uint8_t out[EVLOG_HASH_LEN]);

/* The "events" body type name ("certificate_issued"), "unknown" if not set. */
const char *evlog_type_name(const evlog_event *ev);
/* Body case from a type name; 0 if unknown. */
int evlog_type_from_name(const char *name);

/* Disk bytes used by the environment (data file size). */
int evlog_disk_bytes(evlog_t *log, uint64_t *out);

#endif
