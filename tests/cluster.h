/* cluster.h — a whole local ine cluster for integration tests, from the real binaries:
 * `inectl cluster create` with nodes 127.0.0.1-3 (all on loopback, one data dir), ine-ca
 * (2048-bit CA, 1 s checks), ine-policy (no REST), one ine-transport per node on a free port,
 * redis-server instances as shards, and a RESP client for connections held open by a test.
 *
 * Every child is started with PR_SET_PDEATHSIG, so a test worker that dies takes its cluster
 * with it; cl_stop (call it from .fini) kills whatever is left and removes the temp dir.
 * Waits poll the projection of the log and the services' log files with generous timeouts:
 * a test never passes or fails on a sleep. */
#ifndef INE_TEST_CLUSTER_H
#define INE_TEST_CLUSTER_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "evlog.h"
#include "proj.h"
#include "seal.h"

#define CL_NODES 3
#define CL_MAX_PROCS 16
#define CL_WAIT_MS 60000 /* the default patience of every wait */

typedef struct {
    pid_t pid;     /* 0: not running */
    char name[32];
    char *log;     /* its stdout+stderr */
    int status;    /* exit status once reaped (128+signal if killed) */
} cl_proc;

typedef struct {
    char *dir;     /* temp dir holding everything */
    char *dd;      /* the cluster's data dir */
    int port;      /* the transport port P, the same on every node's address */
    int handshake_ms;
    cl_proc ca, policy, tp[CL_NODES + 1];   /* tp[1..3] */
    char *tp_dd[CL_NODES + 1];               /* each transport's data dir (default dd) */
    cl_proc procs[CL_MAX_PROCS];             /* redis servers and other helpers */
    size_t n_procs;
    evlog_t *log;  /* read-only view of dd's log */
    seal_key *seal;
    proj_state st; /* refreshed by cl_state() */
} cl_t;

typedef struct {
    int handshake_ms;       /* --handshake-timeout of the transports (default 3000) */
    int no_transports;      /* start only CA and policy */
} cl_opts;

/* The address of node n ("127.0.0.n"). */
const char *cl_addr(int node);

/* A port in 20000-29999 free on 127.0.0.1-3 (and not handed out before by this process). */
int cl_free_port(void);

/* Create the cluster, start CA, policy and (unless told not to) the three transports, and wait
 * until every node serves its certificates on both planes and hears the others' heartbeats.
 * Asserts on failure (Criterion). */
void cl_start(cl_t *c, const cl_opts *o);
/* Kill everything still running, free, remove the temp dir. Safe to call twice. */
void cl_stop(cl_t *c);
/* Stop the transports with SIGTERM and assert that each exited cleanly (status 0: no crash,
 * no sanitizer report). Call at the end of a test that succeeded. */
void cl_finish(cl_t *c);

/* Spawn argv (argv[0] a path) with extra environment entries (may be NULL), output to
 * <dir>/<name>.log. Returns the process slot. */
cl_proc *cl_spawn(cl_t *c, cl_proc *slot, const char *name, char *const argv[], char *const env[]);
/* Signal a process and reap it (waits up to 10 s, then SIGKILL). Returns its status. */
int cl_kill(cl_proc *p, int sig);

/* Transport of node n: start (data dir: c->tp_dd[n] or c->dd) / stop with a signal. */
void cl_tp_start(cl_t *c, int n);
/* The same with extra environment ("K=V", NULL-terminated), e.g. a clock offset by libfaketime. */
void cl_tp_start_env(cl_t *c, int n, char *const env[]);
int cl_tp_stop(cl_t *c, int n, int sig);
/* The size of a process's log now: a mark to search after. */
size_t cl_log_mark(const cl_proc *p);
/* Wait until text appears in p's log after mark; 1 if it did, 0 on timeout. */
int cl_wait_log(const cl_proc *p, size_t mark, const char *text, int timeout_ms);
/* How many times text occurs in p's log after mark. */
int cl_log_count(const cl_proc *p, size_t mark, const char *text);
/* The log from mark on (malloc'd). */
char *cl_log_since(const cl_proc *p, size_t mark);

/* A lagging replica of the log for node n's transport (as a follower node on another machine
 * keeps one): a data dir of its own with the seal key and records 1..to of the cluster's log
 * (0: all). cl_tp_start(c, n) then runs that transport on it; cl_replica_sync feeds it more. */
void cl_replica_make(cl_t *c, int n, uint64_t to);
void cl_replica_sync(cl_t *c, int n, uint64_t to);

/* The projection of the log now (c->st, refreshed). */
const proj_state *cl_state(cl_t *c);
/* Wait until every live node has activated its current certificate on both planes. */
int cl_wait_converged(cl_t *c, int timeout_ms);
/* Wait until transport `n` logs a heartbeat from every other node naming that node's current
 * data-plane serial (after mark). */
int cl_wait_heartbeats(cl_t *c, int n, size_t mark, int timeout_ms);
/* Wait until transport `n` logs its own control-plane stream to every other node up. */
int cl_wait_links(cl_t *c, int n, size_t mark, int timeout_ms);
/* The current certificate of a node/plane (asserts it exists). */
const proj_cert *cl_cert(cl_t *c, int node, int plane);

/* Run inectl --data-dir dd ... (NULL-terminated); returns its exit status; out/err may be NULL. */
int cl_inectl(cl_t *c, char **out, char **err, ...);
/* Create a database through ine-policy and wait until every transport has its endpoint. */
uint32_t cl_create_db(cl_t *c, const char *name, int port, int shard_node, const char *shard_addr, int encryption);
/* Toggle a database's data_internode_encryption (asserts inectl succeeded). */
void cl_set_encryption(cl_t *c, const char *db, int on);

/* A redis-server on addr:port (extra "--key value" args, NULL-terminated), waited for. */
cl_proc *cl_redis_start(cl_t *c, const char *addr, int port, ...);
/* A redis-server on node `node`'s address at `shard_port`, and database `name` on `port`
 * with it as its shard, encryption on (cl_redis_start + cl_create_db). The database's uid. */
uint32_t cl_redis_db(cl_t *c, const char *name, int port, int node, int shard_port);
/* The word after `label` in inectl's text output (e.g. "join token <token>"); asserts it is there. */
void cl_scan_word(const char *out, const char *label, char *v, size_t len);
/* redis-cli -h addr -p port ARGS... (NULL-terminated); stdout (malloc'd, trimmed), NULL on failure. */
char *cl_redis_cli(const char *addr, int port, ...);
/* The same, running redis-cli through run(ctx, argv, &out) (e.g. inside a network namespace). */
char *cl_redis_cli_with(int (*run)(void *ctx, char **argv, char **out), void *ctx, const char *addr, int port, va_list ap);

/* Write a node's current certificate (leaf + chain) and its unsealed key as PEM files (the
 * key file 0600), for openssl s_client and friends. */
void cl_export_cert(cl_t *c, int node, int plane, const char *cert_path, const char *key_path);
/* The cluster CA's certificate and key, likewise. */
void cl_export_ca(cl_t *c, const char *cert_path, const char *key_path);
/* <dir>/name (malloc'd). */
char *cl_path(cl_t *c, const char *name);
/* Run a shell command line (sh -c) with a timeout in seconds; its exit status, output in out. */
int cl_sh(char **out, int timeout_s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --- a RESP connection held open by the test ----------------------------------------------- */
typedef struct {
    int fd;
    char buf[8192];
    size_t len;
} cl_resp;

/* Connect (blocking, 10 s I/O timeouts); 0 or -1. */
int cl_resp_open(cl_resp *r, const char *addr, int port);
void cl_resp_close(cl_resp *r);
/* Send one inline command and read its reply into out: "+OK", ":5", "-ERR ...", or a bulk
 * string's bytes ("(nil)" for a null). 0, or -1 on EOF, error or timeout. */
int cl_resp_cmd(cl_resp *r, char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* 1 once the server closed the connection (EOF or reset) within timeout_ms, else 0. */
int cl_resp_wait_closed(cl_resp *r, int timeout_ms);

/* A connection kept busy by a thread: INCR key every few ms, each reply checked to be the
 * previous one plus one. Any failure (error reply, wrong value, EOF) is counted and stops it. */
typedef struct {
    cl_resp r;
    unsigned long th;
    volatile int stop;
    long ops, errors, value;
    char key[64], last_error[160];
} cl_load;

void cl_load_start(cl_load *l, const char *addr, int port, const char *key);
/* Stop and join; returns the number of errors. */
long cl_load_stop(cl_load *l);
/* Wait until at least `more` further operations succeeded (so it is demonstrably flowing);
 * 1 on success, 0 on timeout or if it failed. */
int cl_load_progress(cl_load *l, long more, int timeout_ms);

/* Open file descriptors of a process. */
int cl_open_fds(pid_t pid);
/* Wait until transport n holds at most `most` descriptors; 1 if it did. */
int cl_wait_fds_at_most(cl_t *c, int n, int most, int timeout_ms);

/* Milliseconds, monotonic. */
int64_t cl_now_ms(void);

#endif
