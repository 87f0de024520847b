/* netns.h — test hosts on separate network stacks: each host is a network namespace with its
 * own loopback and one veth link ("eth0", 10.X.0.<host>/24) to a bridge that lives in a
 * namespace of its own, so nothing ever touches the root namespace's interfaces. The real
 * binaries run inside a host (nn_spawn), the test talks to them from inside a host too
 * (nn_run, nn_redis_cli, nn_resp_open), and tshark captures a host's link (nn_capture_*).
 *
 * Names are per test process: ine<pid>h1..hN and ine<pid>sw. Namespaces left behind by a test
 * process that no longer exists are removed by the next nn_create. A guard process removes this
 * test's namespaces if the test process dies without nn_destroy (crash, Criterion timeout);
 * every spawned process also dies with the test (PR_SET_PDEATHSIG).
 *
 * nn_create skips the test (cr_skip_test, with the reason) only when not root or when
 * `ip netns` cannot be used at all; any later failure is a test failure. */
#ifndef INE_TEST_NETNS_H
#define INE_TEST_NETNS_H

#include <stddef.h>
#include <sys/types.h>

#include "cluster.h"

#define NN_MAX_HOSTS 4
#define NN_MAX_PROCS 24
#define NN_DEV "eth0" /* a host's link, in its namespace */

typedef struct {
    int host;      /* 1..n; 0: free slot */
    cl_proc p;     /* pid, name, log: cl_wait_log and friends work on it */
} nn_proc;

typedef struct {
    int n;                                  /* hosts 1..n */
    char prefix[24];                        /* "ine<pid>" */
    char ns[NN_MAX_HOSTS + 1][48];          /* ns[0]: the bridge's namespace */
    char addr[NN_MAX_HOSTS + 1][32];        /* addr[h]: host h's address */
    int ns_fd[NN_MAX_HOSTS + 1];            /* open /run/netns/<ns[h]> */
    int self_fd;                            /* the test's own network namespace */
    char *dir;                              /* temp dir: logs, captures, data dirs */
    pid_t guard;
    int guard_fd;                           /* its pipe: EOF = the test died, clean up */
    nn_proc procs[NN_MAX_PROCS];
} nn_t;

/* Create n hosts (1..NN_MAX_HOSTS) in a fresh temp dir and wait until each reaches the others.
 * Asserts on failure; skips when not root or `ip netns` is unusable. */
void nn_create(nn_t *nn, int n);
/* Kill every process started on any host, delete the namespaces (and the veths and bridge with
 * them), remove the temp dir (kept with INE_KEEP_TEST_DIR). Safe on a zeroed struct and twice. */
void nn_destroy(nn_t *nn);

const char *nn_addr(const nn_t *nn, int host);
/* <dir>/name (malloc'd). */
char *nn_path(const nn_t *nn, const char *name);

/* Move the calling thread into host's network stack (sockets it creates and processes it forks
 * belong there; files are shared) and back. For a library call that connects (repl_sync);
 * nn_destroy moves back if an assertion jumped out in between. */
void nn_enter(nn_t *nn, int host);
void nn_leave(nn_t *nn);

/* Run argv (argv[0] a path) inside host, output to <dir>/<name>.log. The process dies with the
 * test. Returns its slot. */
cl_proc *nn_spawn(nn_t *nn, int host, const char *name, char *const argv[]);
/* Signal every process the test started on host and reap it (SIGKILL after 10 s); how many. */
int nn_kill_host(nn_t *nn, int host, int sig);

/* Take host's link down (its cable pulled: nothing reaches it, not even a refusal) or up again. */
void nn_link_set(nn_t *nn, int host, int up);

/* Run argv inside host and wait: its exit status; stdout/stderr in out/err (may be NULL). */
int nn_run(nn_t *nn, int host, char *const argv[], char **out, char **err);
/* redis-cli -h addr -p port ARGS... (NULL-terminated) run inside host: its stdout (trimmed,
 * malloc'd), NULL when it could not connect or failed. */
char *nn_redis_cli(nn_t *nn, int host, const char *addr, int port, ...);
/* A RESP connection opened from inside host (the socket stays in that namespace). 0 or -1. */
int nn_resp_open(nn_t *nn, int host, cl_resp *r, const char *addr, int port);
/* cl_load_start from inside host. */
void nn_load_start(nn_t *nn, int host, cl_load *l, const char *addr, int port, const char *key);

/* --- captures on a host's link --------------------------------------------------------------- */

typedef struct {
    cl_proc *p;
    char *file;    /* the pcapng file */
    int tls_port;  /* decoded as TLS by the queries */
} nn_capture;

/* tshark -i eth0 -f filter inside host, writing <dir>/<name>.pcapng; returns once tshark says it
 * captures (see nn_capture_seen). */
void nn_capture_start(nn_t *nn, int host, nn_capture *cap, const char *name, const char *filter, int tls_port);
/* Whether text shows in the file within timeout_ms. tshark reports that it captures a moment
 * before packets really reach the file: a test sends probes until one shows before it relies
 * on the capture. */
int nn_capture_seen(const nn_capture *cap, const char *text, int timeout_ms);
/* Wait until `sentinel` shows in the file (every packet before it has been written), then stop
 * tshark. Asserts that it showed. */
void nn_capture_stop(nn_capture *cap, const char *sentinel);
/* The number of packets matching a display filter. */
int nn_capture_count(const nn_capture *cap, const char *display_filter);
/* Whether any packet matching scope (a display filter, NULL: all) carries text, per packet or
 * across a reassembled TCP stream (so a value split across segments is found too). */
int nn_capture_has(const nn_capture *cap, const char *scope, const char *text);
void nn_capture_free(nn_capture *cap);

#endif
