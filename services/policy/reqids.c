/* reqids.c — what the policy service remembers of the requests it already recorded: request id
 * -> (seq, uid), fed by the follower from every event ine-policy wrote with a request id.
 *
 * A retried request must answer with its original outcome *before* validation runs: by then
 * the first attempt has changed the state, so validating again would refuse the retry
 * ("name taken") or, with a different body, act on something else. The log's own request-id
 * table only says "duplicate" at append time, after validation, so the service keeps this
 * index. It is rebuilt from the log at start-up, so it survives restarts like the log does. */
#include "policy.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

struct policy_reqids {
    policy_reqid *slots;  /* open addressing; request_id NULL = empty */
    size_t cap, n;        /* cap is a power of two, kept at most half full */
};

static uint64_t reqids__hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static policy_reqid *reqids__slot(policy_reqid *slots, size_t cap, const char *id)
{
    size_t i = (size_t)reqids__hash(id) & (cap - 1);
    while (slots[i].request_id && strcmp(slots[i].request_id, id)) i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int reqids__grow(struct policy_reqids *t)
{
    size_t cap = t->cap ? t->cap * 2 : 256;
    policy_reqid *slots = calloc(cap, sizeof *slots);
    if (!slots) return ine_err(INE_ENOMEM, "out of memory");
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].request_id) *reqids__slot(slots, cap, t->slots[i].request_id) = t->slots[i];
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return INE_OK;
}

/* The database or node an event of ours is about (0 for cluster-wide changes). */
uint32_t policy_event_uid(const evlog_event *ev)
{
    switch (ev->body_case) {
    case INE__V1__EVENT__BODY_DATABASE_CREATED: return ev->database_created->db_uid;
    case INE__V1__EVENT__BODY_DATABASE_UPDATED: return ev->database_updated->db_uid;
    case INE__V1__EVENT__BODY_DATABASE_DELETED: return ev->database_deleted->db_uid;
    case INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED: return ev->data_internode_encryption_changed->db_uid;
    case INE__V1__EVENT__BODY_NODE_ADDED: return ev->node_added->node_uid;
    case INE__V1__EVENT__BODY_NODE_REMOVED: return ev->node_removed->node_uid;
    default: return 0;
    }
}

int policy_reqids_note(policy_t *p, const evlog_event *ev, uint64_t seq)
{
    struct policy_reqids *t = p->reqids;
    policy_reqid *s;
    if (!ev->request_id || strncmp(ev->request_id, POLICY_REQID_PREFIX, strlen(POLICY_REQID_PREFIX))) return INE_OK;
    if (!t) {
        if (!(t = calloc(1, sizeof *t))) return ine_err(INE_ENOMEM, "out of memory");
        p->reqids = t;
    }
    if ((t->n + 1) * 2 > t->cap) GUARD(reqids__grow(t));
    s = reqids__slot(t->slots, t->cap, ev->request_id);
    if (s->request_id) return INE_OK; /* the first event of the request is its outcome */
    if (!(s->request_id = strdup(ev->request_id))) return ine_err(INE_ENOMEM, "out of memory");
    s->seq = seq;
    s->uid = policy_event_uid(ev);
    t->n++;
    return INE_OK;
}

const policy_reqid *policy_reqids_find(const policy_t *p, const char *stored_id)
{
    const policy_reqid *s;
    if (!p->reqids || !p->reqids->cap) return NULL;
    s = reqids__slot(p->reqids->slots, p->reqids->cap, stored_id);
    return s->request_id ? s : NULL;
}

void policy_reqids_free(policy_t *p)
{
    struct policy_reqids *t = p->reqids;
    if (!t) return;
    for (size_t i = 0; i < t->cap; i++) free(t->slots[i].request_id);
    free(t->slots);
    free(t);
    p->reqids = NULL;
}
