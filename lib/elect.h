/* elect.h — one holder at a time of a role (the acting CA), by an etcd key bound to a lease.
 *
 * A candidate keeps a lease of `ttl_s` alive and tries, every half second while it does not
 * hold the role, to create the role's key with that lease ("if the key does not exist, put it").
 * The one whose create won holds the role until its lease ends: it stops keeping it alive (it
 * died, or lost etcd), or a keepalive finds it gone. The key's create_revision is the fence:
 * every append the holder makes compares it (commit_opts.fence_*), so a holder that was paused
 * past its lease and wakes up believing it still holds the role cannot write anything.
 *
 * A holder also steps down by itself once it has gone a TTL without a successful keepalive,
 * before etcd could hand the role to someone else in the common case; the fence is what makes
 * it safe in every case. Driven by elect_tick() from the service's loop (no thread). */
#ifndef INE_ELECT_H
#define INE_ELECT_H

#include <stdint.h>

#include "etcd.h"

#define ELECT_DEFAULT_TTL_S 5

typedef struct elect elect_t;

/* A candidate for the role whose key is `key` (full etcd key, e.g. "/ine/ca/holder"), known to
 * others as `who` (a sentence: node, host, pid). The etcd handle is not owned. */
int elect_open(etcd_t *etcd, const char *key, const char *who, int ttl_s, elect_t **out) __attribute__((warn_unused_result));
/* Revokes the lease: a holder that stops cleanly hands the role over at once. */
void elect_close(elect_t *e);

/* Keep the lease alive and campaign when due; cheap when nothing is due. *holding says whether
 * we hold the role now; *changed (may be NULL) whether that just changed. Errors reaching etcd
 * are not failures: they count against the TTL (and are in ine_err_msg() when *holding drops). */
int elect_tick(elect_t *e, int *holding, int *changed) __attribute__((warn_unused_result));

/* An append fenced on our holding was refused: we no longer hold the role, whatever our clock
 * says. Campaign again (with a new lease) from the next tick. */
void elect_fenced_off(elect_t *e);

/* The fence of our holding (the key's create_revision), 0 when we do not hold the role. */
int64_t elect_fence(const elect_t *e);
const char *elect_key(const elect_t *e);
/* Who holds the role as we last saw it ("" if nobody we know of). */
const char *elect_holder(const elect_t *e);

#endif
