/* commit.h — the one front door for every write to the cluster's event log.
 *
 * Every writer (policy/REST, CA, transport activations, alerting, inectl, join) appends through
 * commit_append(). It stamps the envelope in one place — producer (the handle's), actor, request
 * id, time, seq and the link to the previous record — and commits the events as one
 * all-or-nothing append.
 *
 * Where the append commits depends on the data dir:
 *   - <data-dir>/etcd.conf present: through etcd, the cluster's consensus. One etcd transaction
 *     "if the head key is still at the revision I read (and the request id is unused), put the
 *     events under their own keys and the new head". Two writers on two nodes can never both
 *     write seq N+1. The call then waits (bounded) until the node's mirror (ine-mirror, the only
 *     writer of the LMDB log in this mode) has applied it, so the caller reads its own write.
 *   - absent: the single-node log, straight into LMDB (the mode of a cluster without etcd).
 *
 * Ownership: the caller owns the events and everything they point to, before and after. The
 * call borrows them: it sets seq and time_us (if 0) and whatever the prepare hook writes, and
 * leaves producer, actor, request_id and prev_sha256 as they were. The prepare hook may run
 * more than once for one event (a lost race re-stamps the events with the next seq). */
#ifndef INE_COMMIT_H
#define INE_COMMIT_H

#include <stddef.h>
#include <stdint.h>

#include "etcd.h"
#include "evlog.h"
#include "follow.h"

/* How long an append may take in all, quorum or not: etcd's own 7 s is far too long. */
#define COMMIT_DEADLINE_MS 1800
/* How long an append waits for the local mirror to apply what etcd committed. */
#define COMMIT_MIRROR_WAIT_MS 2000
#define COMMIT_CONF_NAME "etcd.conf"

typedef struct commit commit_t;

typedef struct {
    const char *data_dir;  /* where etcd.conf is looked for */
    const char *producer;  /* the process that writes: "ine-policy", "inectl", ... */
    evlog_t *log;          /* the node's LMDB log (not owned; must outlive the handle) */
    follow_pub *pub;       /* hints after a local append (may be NULL; not owned) */
    void *zctx;            /* with run_dir: wait for the mirror on its ZeroMQ hints (wakes when */
    const char *run_dir;   /* it applied); NULL: poll the log instead (a one-shot tool) */
} commit_cfg;

int commit_open(const commit_cfg *cfg, commit_t **out) __attribute__((warn_unused_result));
void commit_close(commit_t *c);
/* "etcd" or "local": where this handle's appends commit. */
const char *commit_backend(const commit_t *c);

typedef struct {
    const char *actor;       /* who asked; NULL/"": the producer. An event whose actor is
                                already set keeps its own. */
    const char *request_id;  /* NULL/"": not idempotent; else stamped on every event, and a
                                second append with the same id, on any node, writes nothing */
    evlog_prepare_fn prepare;/* per event once its seq is known (seals secrets), may be NULL */
    void *prepare_ud;
    int expect_empty;        /* only as the log's very first records (cluster create) */
    uint64_t based_on;       /* 0: append after whatever is there; else the seq of the log the
                                caller's checks read: commit only while it is still the head,
                                else INE_ESTALE (catch up, check again, retry) */
    const char *fence_key;   /* etcd only: commit only while this key's create_revision is */
    int64_t fence_rev;       /* fence_rev (an elected role, lib/elect.h), else INE_EPERM */
    int no_wait;             /* return once committed, without waiting for the local mirror
                                (a tool that reads nothing back) */
} commit_opts;

/* Append n events as one. 0 with *first_seq the seq of evs[0]; 1 when the request id was
 * already used (nothing written, *first_seq the original's seq, which the local log holds on
 * return); negative on failure, and then nothing was appended: INE_EUNAVAIL when etcd did not
 * answer or has no quorum (within COMMIT_DEADLINE_MS), INE_EEXIST for expect_empty on a log
 * that is not, INE_ESTALE when the head moved past based_on, INE_EPERM when the fence no longer
 * holds, INE_EFULL when the log (LMDB map
 * or etcd quota) is full. */
int commit_append(commit_t *c, evlog_event **evs, size_t n, const commit_opts *o, uint64_t *first_seq)
    __attribute__((warn_unused_result));

/* One event, optional request id: the common case. */
int commit_append_one(commit_t *c, evlog_event *ev, const char *actor, const char *request_id, uint64_t *seq)
    __attribute__((warn_unused_result));

/* --- the etcd configuration of a data dir ------------------------------------------------- */

/* <data-dir>/etcd.conf, "key=value" lines ('#' comments):
 *   endpoints=https://127.0.0.1:2379[,...]   the node's own member first
 *   cacert=/path  cert=/path  key=/path      mutual TLS (https endpoints)
 *   prefix=/ine/                             the keyspace of this cluster (default /ine/)
 *   timeout_ms=1000                          per request
 *   quota_bytes=4294967296                   the members' --quota-backend-bytes (default etcd's
 *                                            2 GiB): what the storage alert measures against
 *   peer_port=2380                           the peer port of the cluster's members: a node
 *                                            joining at ADDRESS advertises ADDRESS:peer_port
 *   peer_local_port=2390                     where a member on a non-loopback address listens
 *                                            (127.0.0.1 only; its ine-transport terminates TLS
 *                                            on ADDRESS:peer_port and relays there: etcdtls.h) */
typedef struct {
    char endpoints[1024];
    char cacert[512], cert[512], key[512];
    char prefix[128];
    int timeout_ms;
    int64_t quota_bytes;
    int peer_port, peer_local_port;
} commit_etcd_conf;

/* INE_ENOTFOUND when the data dir has no etcd.conf; INE_EINVAL naming the line when malformed. */
int commit_conf_load(const char *data_dir, commit_etcd_conf *out) __attribute__((warn_unused_result));

/* An etcd client on the conf's endpoints and TLS files, with this per-request timeout (0: the
 * conf's own, else etcd.h's default): every ine process reaches etcd the same way. */
int commit_conf_etcd_open(const commit_etcd_conf *conf, int timeout_ms, etcd_t **out) __attribute__((warn_unused_result));

/* The local mirror's inbox for records a process on this node just committed:
 * ipc://<run_dir>/COMMIT_NOTES_FILE, ZeroMQ PUSH -> PULL, each message an 8-byte big-endian
 * seq then the record's bytes exactly as committed. The mirror applies one only as the next
 * record of its log (chain checked); etcd's watch, which it keeps reading, confirms each one
 * byte for byte. */
#define COMMIT_NOTES_FILE "commit-notes.sock"

/* The keys of the log in etcd (prefix + ...): the head, an event, a request id. */
#define COMMIT_KEY_HEAD "log/head"
#define COMMIT_KEY_EVENTS "log/ev/"  /* + %020llu seq: lexical order is seq order */
#define COMMIT_KEY_REQIDS "log/req/"
#define COMMIT_HEAD_LEN (8 + EVLOG_HASH_LEN) /* big-endian seq, SHA-256 of that record */

#endif
