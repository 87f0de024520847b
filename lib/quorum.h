/* quorum.h — what the cluster's consensus looks like from one node: the etcd members, which one
 * leads, which answer, whether a majority does, the log's head in etcd, and who holds the CA
 * lease. For `inectl status` and REST's GET /v1/cluster. Every member is asked with a short
 * timeout, so a dead one costs at most that. */
#ifndef INE_QUORUM_H
#define INE_QUORUM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "etcd.h"

#define QUORUM_TIMEOUT_MS 500

/* A JSON object: {"mode": "local"} for a data dir without etcd.conf; else {"mode": "etcd",
 * "members": [{"name", "id", "client_urls", "peer_urls", "learner", "healthy", "leader", "db_size_bytes",
 * "error"?}], "leader": name or null, "healthy_members" (voting ones), "quorum": bool, "log_head_seq",
 * "ca_holder": text or null, "error"?}. Never fails for an unreachable etcd: that is what it
 * reports. INE_EINVAL for a malformed etcd.conf. */
int quorum_status(const char *data_dir, json_t **out) __attribute__((warn_unused_result));

/* Node `uid`'s etcd member (by ine's naming: member "node<uid>") out of the cluster. 1 when it
 * was removed (*id its member id), 0 when there is none (a local log, or already removed),
 * negative when etcd refused or did not answer (no quorum). */
int quorum_member_remove(const char *data_dir, uint32_t uid, uint64_t *id) __attribute__((warn_unused_result));

/* Node `uid` (joining) as an etcd member reached at peer_url: added as a learner, so the
 * majority's quorum does not wait for it; again for a retried join, nothing is added twice.
 * *initial_cluster ("node1=URL,...,node<uid>=peer_url") is what the new member starts with
 * (--initial-cluster, state existing). INE_EEXIST when another member has that URL; INE_EAGAIN
 * while another joining member is still a learner (etcd 3.4 takes one at a time). */
int quorum_member_add(etcd_t *e, uint32_t uid, const char *peer_url, char *initial_cluster, size_t cap)
    __attribute__((warn_unused_result));

/* Every learner caught up with the leader made a voting member (etcd refuses the others: they
 * get their turn at a later call). *promoted counts the promotions. */
int quorum_promote_learners(etcd_t *e, int *promoted) __attribute__((warn_unused_result));

#endif
