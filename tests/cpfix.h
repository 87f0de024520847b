/* cpfix.h — the control plane on etcd in a test, from the real binaries: three etcd members
 * (tests/etcdfix.h), three node data dirs (each with its etcd.conf, its own member first), the
 * cluster created through node 1 and every node's ine-mirror caught up; then ine-policy and
 * ine-ca per node on request. Helpers assert (Criterion) on failure. One fixture per test
 * process: its state is these globals. INE_TEST_KEEP=1 keeps the temp dir for a post-mortem. */
#ifndef INE_TEST_CPFIX_H
#define INE_TEST_CPFIX_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "etcdfix.h"
#include "evlog.h"

#define CP_NODES 3
#define CP_WAIT_MS 30000
#define CP_ADMIN "admin@cp.test"  /* the cluster's REST user, made by cp_setup */
#define CP_PASSWORD "cp-password"


extern char *cp_tmp;
extern ef_cluster cp_ec;
extern char *cp_dd[CP_NODES + 2];       /* node data dirs; [3] and [4] for late or odd ones */
extern pid_t cp_mirror[CP_NODES + 2], cp_policy[CP_NODES + 2], cp_ca[CP_NODES];
extern uint64_t cp_created;             /* the last seq `cluster create` wrote */

/* Members, data dirs, `cluster create ... nodes <nodes>` through node 1, seal keys copied,
 * mirrors started and caught up. */
void cp_setup(const char *nodes);
/* Stop everything, remove the temp dir. */
void cp_teardown(void);

int64_t cp_now_ms(void);
void cp_sleep_ms(int ms);
/* etcd.conf for data dir i: member `first` first, then the others. */
void cp_write_conf(int i, int first);
/* cp_dd[i] = <tmp>/node<i+1>, with its etcd.conf. */
void cp_make_dd(int i);
/* inectl --data-dir cp_dd[i] args... (NULL-terminated); its exit status. */
int cp_inectl(int i, char **out, char **err, ...);
/* <tmp>/<what>-<i+1>.log (malloc'd): where a service of node i writes. */
char *cp_log_path(int i, const char *what);
void cp_start_mirror(int i);
void cp_start_policy(int i);
/* ine-policy on node i with REST on 127.0.0.1:cp_rest_port[i], served with node i's
 * control-plane certificate (so ine-ca must have issued it); returns once the port accepts. */
void cp_start_policy_rest(int i);
extern int cp_rest_port[CP_NODES + 2];
/* ine-ca on node i (2048-bit keys, 1 s checks) with this --lease-ttl. */
void cp_start_ca(int i, const char *lease_ttl);
void cp_stop_cas(void);
void cp_copy_seal_key(int to);

/* The last seq of node i's log (asserts it opens; 0 before the log exists). */
uint64_t cp_last_seq(int i);
/* The same, 0 while the log is not there or not yet set up. */
uint64_t cp_try_last_seq(int i);
void cp_wait_seq(int i, uint64_t seq);
/* ine-log verify on node i passes. */
void cp_verify(int i);
/* Every record of node a's log equals node b's, byte for byte. */
void cp_same_logs(int a, int b);

typedef struct {
    int names[400];   /* how often database dbN was created */
    uint64_t last;    /* seqs strictly increasing */
} cp_db_count;
void cp_count_dbs(int i, cp_db_count *c);
/* inectl --json status on node i: its "consensus" object (the caller decrefs the whole). */
json_t *cp_status_json(int i, json_t **consensus);

/* How often text occurs in node i's <what> log. */
int cp_log_has(int i, const char *what, const char *text);
/* Events of this body type in node i's log. */
int cp_count_all(int i, int body_case);
void cp_wait_count(int i, int body_case, int want);
/* Which node's ine-ca acts now (the last to say so), -1 if none within the wait. */
int cp_acting_ca(int64_t wait_ms);

#endif
