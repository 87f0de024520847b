/* updates.h — the policy update stream (proto/ine/v1/update.proto, docs/UPDATES.md): what
 * one log record means to a program outside ine, built in one place from the event and the
 * projection; and the subscriber's side, which turns ine-updates' PUB stream plus its request
 * endpoint into one gapless, duplicate-free sequence (ZeroMQ's Clone pattern).
 *
 * Every record of the log becomes exactly one Update (records of no interest carry only the
 * envelope, topic "log.<type>"), so a subscriber checks that seqs follow each other; a gap
 * means ZeroMQ dropped messages (high-water mark), and the subscriber fetches the missing
 * range from the log through the request endpoint. Nothing built here carries key material:
 * bodies are copied field by field from the public parts of events. */
#ifndef INE_UPDATES_H
#define INE_UPDATES_H

#include <stddef.h>
#include <stdint.h>

#include "evlog.h"
#include "ine/v1/update.pb-c.h"
#include "proj.h"

#define UPDATES_TOPIC_MAX 192      /* bytes of a topic, and of a requested prefix */
#define UPDATES_MAX_TOPICS 32      /* prefixes in one request or subscription */
#define UPDATES_PAGE 1000          /* records one page covers at most */
#define UPDATES_HEAD_TOPIC "head"  /* the heartbeat: UpdatesHead, the log's end */
#define UPDATES_PUB_FILE "run/updates.pub"
#define UPDATES_REQ_FILE "run/updates.req"

typedef Ine__V1__Update updates_msg;

/* One record as the stream carries it: the topic and the packed Update. */
typedef struct {
    char topic[UPDATES_TOPIC_MAX];
    uint8_t *buf; /* malloc'd packed Update */
    size_t len;
} updates_out;

/* Build record `seq`'s Update (raw: its stored bytes, for the hash) and fold the event into
 * `st`, which must be the state just before it (what replaced what, and who enforces, are
 * read from the state around the event). self_node: the publishing node, 0 if none. */
int updates_build(proj_state *st, const evlog_event *ev, const uint8_t *raw, size_t raw_len, uint32_t self_node,
                  updates_out *out) __attribute__((warn_unused_result));
void updates_out_free(updates_out *o);

/* 1 when `topic` starts with one of the prefixes (no prefixes: every topic). */
int updates_topic_match(const char *topic, const char *const *prefixes, size_t n);

/* A prefix or topic as a request may carry one: 1..UPDATES_TOPIC_MAX-1 printable ASCII bytes,
 * no space. INE_EINVAL with a sentence naming it otherwise. */
int updates_topic_check(const char *prefix) __attribute__((warn_unused_result));

/* Where a node's ine-updates publishes and answers by default: ipc:// files in its run dir. */
int updates_default_endpoints(const char *data_dir, char *pub, size_t pub_len, char *req, size_t req_len)
    __attribute__((warn_unused_result));

/* An endpoint ine-updates may bind or a subscriber connect to: ipc://PATH, or tcp:// on a
 * loopback address (127.0.0.0/8, [::1], localhost) with a port. INE_EINVAL naming it else. */
int updates_endpoint_check(const char *ep) __attribute__((warn_unused_result));

/* --- subscriber ----------------------------------------------------------------------------- */

typedef struct updates_sub updates_sub;

/* Subscribe to the stream at pub_ep, fetching what came after since_seq from req_ep first.
 * topics: prefixes to deliver (none: all). The zmq context is the caller's. */
int updates_sub_open(void *zctx, const char *pub_ep, const char *req_ep, uint64_t since_seq, const char *const *topics,
                     size_t n_topics, updates_sub **out) __attribute__((warn_unused_result));

/* The next matching update after the last one returned, in seq order, never twice, none
 * skipped: INE_OK with *out (free with ine__v1__update__free_unpacked(*out, NULL)); INE_EAGAIN
 * when timeout_ms passed first (-1: wait for ever); INE_EUNAVAIL when the request endpoint
 * did not answer (try again: nothing was lost); INE_ECHAIN when the log the stream comes
 * from is not the one seen so far (the same seq with another hash, or a log that went back). */
int updates_sub_next(updates_sub *s, int timeout_ms, updates_msg **out) __attribute__((warn_unused_result));

/* The last seq the subscriber has accounted for (delivered or known not to match): what to
 * pass as since_seq to resume after a restart. */
uint64_t updates_sub_seq(const updates_sub *s);

/* How many times it fetched from the request endpoint (for tests and metrics). */
uint64_t updates_sub_fetches(const updates_sub *s);

void updates_sub_close(updates_sub *s);

#endif
