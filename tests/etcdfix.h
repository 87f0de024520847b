/* etcdfix.h — real etcd members for tests: 1..5 members of one new cluster on 127.0.0.1 with
 * free client and peer ports, each with its data dir and log file under a directory the test
 * owns, started so they die with the test process; readiness means a real POST /v3/kv/range
 * answered (not /health: shared/etcd-notes.md, "TLS details"); kill -9 one, restart it on its
 * data, stop everything and reap.
 *
 * Plain http on loopback. Functions return 0 on success and -1 on failure with the reason in
 * ef_why() (for the assertion message). */
#ifndef INE_ETCDFIX_H
#define INE_ETCDFIX_H

#include <sys/types.h>

#define EF_MAX_MEMBERS 5

typedef struct {
    pid_t pid;            /* 0 when not running */
    int client_port, peer_port;
    char name[8];         /* node1, node2, ...: ine's naming of node N's member */
    char url[64];         /* http://127.0.0.1:<client_port> */
    char *data_dir;       /* <dir>/mN.etcd */
    char *log;            /* <dir>/mN.log: etcd's stderr (zap) */
} ef_member;

typedef struct ef_cluster_s {
    char *dir;
    int n;
    char token[64];       /* --initial-cluster-token: unique per start */
    char *initial_cluster;
    char endpoints[EF_MAX_MEMBERS * 64]; /* every member's url, comma-separated */
    ef_member m[EF_MAX_MEMBERS];
} ef_cluster;

/* Why the last ef_* call failed. */
const char *ef_why(void);

/* Start n members (1..EF_MAX_MEMBERS) in dir (which must exist) and wait until every one
 * answers a linearizable range. A port taken in between is retried with new ports. */
int ef_start(ef_cluster *c, const char *dir, int n, int timeout_ms);
/* "http://127.0.0.1:C1,http://127.0.0.1:C2,..." */
const char *ef_endpoints(const ef_cluster *c);
/* Member i's (0-based) client URL. */
const char *ef_endpoint(const ef_cluster *c, int i);
/* SIGKILL member i and reap it. */
int ef_kill(ef_cluster *c, int i);
/* Start member i again on its data dir and ports; waits until it answers a linearizable
 * range, which needs a quorum of live members. */
int ef_restart(ef_cluster *c, int i, int timeout_ms);
/* Wait until member i answers POST /v3/kv/range (serializable: without needing quorum). */
int ef_wait_ready(const ef_cluster *c, int i, int serializable, int timeout_ms);
/* Kill whatever still runs, reap, free. The dir itself is left to the caller. Safe on a
 * zeroed struct. */
void ef_stop(ef_cluster *c);
/* The last lines of member i's log (static buffer). */
const char *ef_tail(const ef_cluster *c, int i);

/* One raw POST with libcurl (for what the library under test does not offer, such as
 * /v3/kv/compaction): *status is the HTTP status (0 if none), *reply (may be NULL) the body,
 * malloc'd. Returns 0 when an HTTP answer came back. */
int ef_post(const char *endpoint, const char *path, const char *body, int timeout_ms, long *status, char **reply);

#endif
