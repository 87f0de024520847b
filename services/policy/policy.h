/* policy.h — the policy service's internals, shared by its files:
 *   main.c   arguments, start-up, the libevent loop (log follow + ZeroMQ commands on a timer)
 *   ops.c    the policy operations: validate against the projection, append, reply
 *   rest.c   the HTTPS REST API (libevent evhttp over OpenSSL bufferevents)
 *   join.c   GET /v1/cluster/ca and POST /v1/nodes/join (no credentials: the join token)
 *   reqids.c the request ids already recorded, so a retry answers with its first outcome
 * The service owns nodes, databases and the cluster policy. Every change is validated against
 * the caught-up projection and written as one append whose request id makes retries safe. */
#ifndef INE_POLICY_H
#define INE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "datadir.h"
#include "commit.h"
#include "evlog.h"
#include "follow.h"
#include "proj.h"
#include "etcd.h"
#include "rpc.h"
#include "seal.h"

#include "ine/v1/command.pb-c.h"

struct event_base;
struct policy_rest;
struct policy_reqids;

/* Request ids of policy events are stored as "policy/<request id>", within the log's limit
 * (EVLOG_MAX_REQUEST_ID). A client's id has at most POLICY_MAX_REQUEST_ID bytes (inectl's
 * --request-id rule, and REST's), which leaves room for the prefix and for the ids derived
 * from it (REST's "<id>/encryption", the CA's "rotate/<id>"). */
#define POLICY_REQID_PREFIX "policy/"
#define POLICY_MAX_REQUEST_ID 200

typedef struct {
    char data_dir[DATADIR_MAX];
    char run_dir[DATADIR_MAX];
    evlog_t *log;
    seal_key *seal;
    void *zctx;
    follow_t *follow;
    follow_pub *pub;
    commit_t *commit;       /* the front door for every append */
    etcd_t *etcd;           /* membership (joins, learners' promotion); NULL without etcd.conf */
    int etcd_peer_port;     /* etcd.conf's peer_port and peer_local_port: where a joining */
    int etcd_peer_local_port; /* node's member is reached and listens (lib/etcdtls.h) */
    char etcd_prefix[128];
    int64_t next_promote_ms;
    rpc_server *rpc;
    proj_state st;
    struct policy_reqids *reqids;
    struct event_base *base;
    struct policy_rest *rest;
    /* REST options */
    const char *rest_addr;
    int rest_port;            /* 0: REST disabled */
    uint32_t rest_node;       /* whose control-plane certificate serves HTTPS */
    const char *rest_cert_file, *rest_key_file; /* operator-provided instead */
} policy_t;

/* The outcome of one policy operation, as a Reply carries it. */
typedef struct {
    Ine__V1__ErrorCode code;
    char description[512];
    uint64_t seq;             /* last seq written (or the original one, for a retried request) */
    uint32_t uid;             /* the database or node the operation created or touched */
    int stale;                /* another node's change landed between our checks and our append */
} policy_result;

/* --- ops.c --- */
int policy_catch_up(policy_t *p);
/* Validate and apply one request; res says what happened (never fails without saying why). */
void policy_execute(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *res);
/* Answer every waiting ZeroMQ request. */
int policy_serve(policy_t *p);

/* --- reqids.c --- */
typedef struct {
    char *request_id;         /* as stored: POLICY_REQID_PREFIX + the client's id */
    uint64_t seq;             /* the event the request wrote */
    uint32_t uid;             /* the database or node it was about (0: cluster-wide) */
} policy_reqid;

/* Remember the outcome of an event ine-policy wrote with a request id (others are ignored). */
int policy_reqids_note(policy_t *p, const evlog_event *ev, uint64_t seq);
const policy_reqid *policy_reqids_find(const policy_t *p, const char *stored_id);
void policy_reqids_free(policy_t *p);
uint32_t policy_event_uid(const evlog_event *ev);

/* --- rest.c --- */
int policy_rest_start(policy_t *p);
/* Called on the timer: (re)load the serving certificate when it changed. */
void policy_rest_tick(policy_t *p);
void policy_rest_stop(policy_t *p);
/* At shutdown: answer requests still waiting (joins) with 503; how many there were. */
int policy_rest_drain(policy_t *p);

#endif
