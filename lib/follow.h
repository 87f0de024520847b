/* follow.h — following the event log: ZeroMQ "the log grew" hints from the processes that
 * append, and a follower that applies every event exactly once, in order, whatever hints are
 * lost, duplicated or wrong.
 *
 * A hint is only a wake-up call. The follower never uses its content to decide what to apply:
 * it always reads the log itself from its last applied seq, and it also does so on a timer, so
 * a lost hint costs latency, never data.
 *
 * Each appending process binds its own PUB socket at ipc://<run_dir>/hint-<producer>-<pid>.sock;
 * a follower's SUB socket connects to every such file it finds in run_dir (rescanned on each
 * poll, so publishers started later are found). The zmq context is the caller's (one per
 * process); create it, and open the log, after fork, never before. */
#ifndef INE_FOLLOW_H
#define INE_FOLLOW_H

#include <stdint.h>

#include "evlog.h"

/* The longest wait follow_wait_seq() makes between two reads of the log: the timer that
 * guarantees progress when every hint is lost. */
#define FOLLOW_TIMER_MS 200
/* Producer names go into a file name: 1..FOLLOW_MAX_PRODUCER bytes of [A-Za-z0-9._-]. */
#define FOLLOW_MAX_PRODUCER 64

/* --- publisher ------------------------------------------------------------------------------ */

typedef struct follow_pub follow_pub;

/* Bind ipc://<run_dir>/hint-<producer>-<pid>.sock (run_dir is created 0700 if missing). */
int follow_pub_open(void *zctx, const char *run_dir, const char *producer, follow_pub **out);
/* Announce that the log now ends at last_seq. Never blocks: a hint that cannot be queued is
 * dropped (followers catch up on their timer), and that is still INE_OK. */
int follow_pub_hint(follow_pub *p, uint64_t last_seq);
/* Close the socket and remove its file. NULL is a no-op. */
void follow_pub_close(follow_pub *p);

/* --- follower ------------------------------------------------------------------------------- */

typedef struct follow follow_t;

/* Apply one event. Return >= 0 when it is applied, negative (an INE_E* code, message set) to
 * stop: the follower then retries this same event on its next catch-up. */
typedef int (*follow_fn)(const evlog_event *ev, uint64_t seq, void *ud);

/* A follower of `log` (not owned; must outlive it) that has already applied everything up to
 * applied_seq and connects to the hint sockets in run_dir (which need not exist yet).
 * INE_ECHAIN if applied_seq lies beyond the log's end. One follower belongs to one thread, and
 * fn must not call back into it (it may append to the log). */
int follow_new(void *zctx, evlog_t *log, const char *run_dir, uint64_t applied_seq,
               follow_fn fn, void *ud, follow_t **out);
/* The same, for a follower that needs each record as stored: fn gets every record, its raw
 * bytes with the decoded event (valid only during the call), events of types this version does
 * not know included (ine-updates publishes one message per record). Same error rules. */
typedef int (*follow_record_fn)(const evlog_record *rec, void *ud);
int follow_new_records(void *zctx, evlog_t *log, const char *run_dir, uint64_t applied_seq, follow_record_fn fn, void *ud,
                       follow_t **out);
void follow_free(follow_t *f);

/* Read the log from applied+1 to its end and apply each event in order. An event of a type
 * this version does not know is skipped with a warning and counted as applied. Returns how
 * many records it consumed (applied or skipped), or: fn's negative code (applied stays at the
 * last event fn accepted; the message names the seq), INE_ECORRUPT for a record that does not
 * decode, INE_ECHAIN for a gap in the log's seqs. Nothing is ever skipped silently. */
int follow_catch_up(follow_t *f);

/* Catch up until ready(ud) says the state has what the caller needs, polling every 200 ms
 * and saying once (logline) that it waits for `what`: a node whose log ine-mirror is still
 * bringing from etcd starts its services anyway, and they wait instead of crash-looping.
 * INE_OK once ready; a catch-up error as follow_catch_up's. A signal's default action ends
 * the wait (no handler is installed yet where it is used). */
int follow_wait_ready(follow_t *f, int (*ready)(void *ud), void *ud, const char *what) __attribute__((warn_unused_result));

/* Connect to newly appeared publishers, wait up to timeout_ms (>= 0) for a hint, drain every
 * pending hint, then always catch up. Returns follow_catch_up()'s result. */
int follow_poll(follow_t *f, int timeout_ms);

/* Poll until applied >= seq: INE_OK, or INE_EAGAIN after timeout_ms. */
int follow_wait_seq(follow_t *f, uint64_t seq, int timeout_ms);

/* The last seq applied (or skipped as unknown). */
uint64_t follow_applied(const follow_t *f);
/* How many hints arrived so far (for metrics and tests; never used to decide anything). */
uint64_t follow_hints(const follow_t *f);

/* The SUB socket's ZMQ_FD for an event loop, or a negative INE_E* code. It is edge-triggered:
 * when it turns readable call follow_poll(f, 0), and call it on a timer too. */
int follow_fd(follow_t *f);

#endif
