/* svc.h — the real services in integration tests: a cluster in a fresh temp dir, ine-ca and
 * ine-policy spawned on it (stdout and stderr to a file each), waits that poll the log, a
 * free port, stopping that always reaps; snapshots of the log to prove a refused request
 * changed nothing; and customer certificates made at test time with a scan for their key.
 *
 * Functions return 0 on success and -1 on failure with the reason in svc_why() (for the
 * assertion message). Spawned services die with the test process (PR_SET_PDEATHSIG), and
 * svc_cluster_free kills whatever still runs, so a failed assertion leaves nothing behind. */
#ifndef INE_SVC_H
#define INE_SVC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Why the last svc_* call failed. */
const char *svc_why(void);

/* --- processes ----------------------------------------------------------------------------- */

/* Start argv (argv[0] a path) with stdin from /dev/null and stdout+stderr appended to
 * log_path; envadd ("K=V", NULL-terminated, may be NULL) is added to the environment.
 * Returns the pid, or -1. */
pid_t svc_spawn(char *const argv[], char *const envadd[], const char *log_path);
/* 1 while pid runs; 0 once it exited (reaped; *status as in svc_stop). */
int svc_running(pid_t pid, int *status);
/* SIGTERM, wait up to timeout_ms, then SIGKILL; always reaps. Returns the exit code, or
 * 128 + signal (so a clean stop is 0, a kill after the timeout 137). */
int svc_stop(pid_t pid, int timeout_ms);
/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed). */
int svc_free_port(void);
/* 1 once something takes TCP connections on 127.0.0.1:port. */
int svc_port_accepts(int port);

/* --- a cluster --------------------------------------------------------------------------- */

typedef struct {
    char *dir;          /* the test's temp dir, removed by svc_cluster_free */
    char *dd;           /* the data dir, <dir>/node1 */
    char *ca_log;       /* ine-ca's stderr, <dir>/ine-ca.log */
    char *policy_log;   /* ine-policy's stderr, <dir>/ine-policy.log */
    pid_t ca, policy;   /* 0 when not running */
    int port;           /* the REST port of the last ine-policy started */
    char *create_out;   /* what inectl cluster create printed (the CA fingerprint, a join token) */
    struct ef_cluster_s *etcd; /* svc_cluster_init_etcd: its one etcd member; NULL otherwise */
    pid_t mirror;       /* ... and the data dir's ine-mirror */
    int peer_port;      /* ... and etcd.conf's peer_port (a joining node's member listens there) */
} svc_cluster;

/* A fresh temp dir and `inectl cluster create name test nodes 127.0.0.1,127.0.0.2` with
 * `username user password password` when user is not NULL. */
int svc_cluster_init(svc_cluster *c, const char *user, const char *password);
/* The same with the log committed through etcd: one real member (tests/etcdfix.h) in the temp
 * dir, etcd.conf naming it (and a free peer_port), the cluster created through it, and
 * ine-mirror running (its output in <dir>/ine-mirror.log) and caught up. */
int svc_cluster_init_etcd(svc_cluster *c, const char *user, const char *password);
/* ine-ca with --ca-key-bits 2048 (speed), then wait until every live node has a certificate
 * on both planes (so the log is quiet afterwards). */
int svc_start_ca(svc_cluster *c, int timeout_ms);
/* ine-policy with REST on 127.0.0.1:<free port> (rest != 0; needs node 1's certificates, so
 * ine-ca first) or without REST (--rest-port 0); returns once the port accepts connections
 * (or, without REST, once its command socket is there). A port taken in between is retried
 * with another one. */
int svc_start_policy(svc_cluster *c, int rest, int timeout_ms);
/* Stop one service (SIGTERM): its exit status as svc_stop returns it; 0 if it was not running. */
int svc_stop_ca(svc_cluster *c);
int svc_stop_policy(svc_cluster *c);
/* Kill (SIGKILL) whatever still runs, remove the temp dir, free. Safe on a zeroed struct. */
void svc_cluster_free(svc_cluster *c);
/* The last lines of a file (a service's log), for assertion messages; static buffer. */
const char *svc_tail(const char *path);

/* inectl --data-dir <dd> args... (NULL-terminated); returns the exit status. */
int svc_inectl(const svc_cluster *c, char **out, char **err, ...);

/* --- the log ------------------------------------------------------------------------------- */

typedef struct {
    uint64_t last_seq;
    char *bytes;        /* <dd>/log/data.mdb */
    size_t len;
} svc_snap;

int svc_last_seq(const char *dd, uint64_t *out);
int svc_snap_take(const char *dd, svc_snap *s);
/* 0 when the log is exactly as in s (last seq and every byte of data.mdb), else -1 with how. */
int svc_snap_same(const char *dd, const svc_snap *s);
void svc_snap_free(svc_snap *s);
/* How many events of this body type (INE__V1__EVENT__BODY_*) the log holds. */
int svc_count_events(const char *dd, int body_case);

/* --- customer certificates ------------------------------------------------------------------- */

typedef struct {
    char *cert_pem;     /* the leaf, then the root */
    char *key_pem;      /* the leaf's key, PKCS#8 PEM */
    char *root_pem;
    char *leaf_fingerprint; /* lowercase hex SHA-256 of the leaf's DER */
    unsigned char *key_der;      size_t key_der_len;      /* PKCS#8 DER */
    unsigned char *key_rsa_der;  size_t key_rsa_der_len;  /* the RSAPrivateKey DER */
} svc_chain;

/* Root -> leaf, both RSA-2048; the leaf has EKU serverAuth+clientAuth, SAN IP 127.0.0.1 and
 * DNS localhost, and is valid from now+nb_s to now+na_s (seconds, may be negative). */
int svc_chain_make(svc_chain *ch, long nb_s, long na_s);
void svc_chain_free(svc_chain *ch);
/* NULL when no piece of the chain's key is in hay; else which piece was found: a base64
 * line of the PEM, a 24-byte window of either DER encoding, or the words "PRIVATE KEY". */
const char *svc_key_leak(const svc_chain *ch, const void *hay, size_t len);

#endif
