/* cafixture.h — what the ine-ca integration tests share: one temp dir and data dir per test,
 * the real ine-ca / inectl / ine-log binaries (ine-ca optionally under libfaketime), every
 * spawned process tracked so teardown kills it even after a failed assertion, reading the log
 * from the outside while ine-ca writes it, unsealing keys with the data dir's seal.key, and
 * certificate fixtures made with plain OpenSSL calls (never with lib/pki, so a mistake there
 * cannot hide itself).
 *
 * Everything here asserts with Criterion on failure: a helper returns only what works.
 * INE_TEST_KEEP=1 keeps each test's temp dir (data dir, ca.log, fixtures) for a post-mortem. */
#ifndef INE_CAFIXTURE_H
#define INE_CAFIXTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "evlog.h"
#include "proj.h"

#define CF_DAY 86400LL
#define CF_WAIT_S 60 /* the longest any helper waits for ine-ca */

/* ---- per-test context (set up by cf_setup, removed by cf_teardown) -------------------------- */

extern char *cf_dir; /* fresh temp dir */
extern char *cf_dd;  /* cf_dir/node1: the data dir (created by cf_cluster) */

void cf_setup(void);
/* Kill every process still running, then remove cf_dir. */
void cf_teardown(void);

/* `inectl cluster create name <name> nodes <nodes>` in cf_dd; returns the cluster uid (static). */
const char *cf_cluster(const char *name, const char *nodes);
/* "127.0.1.1,...,127.0.1.<n>" (malloc'd). */
char *cf_node_list(int n);

/* ---- processes -------------------------------------------------------------------------------- */

/* Start ine-ca on cf_dd with --ca-key-bits 2048 --check-interval 1 (stdout and stderr appended to
 * cf_dir/ca.log). faketime NULL: real time; else libfaketime is preloaded with FAKETIME set to it
 * ("+10d"), as `faketime -f` would, but without that wrapper (see tu_faketime_preload). */
pid_t cf_ca_start(const char *faketime);
/* The same with libfaketime preloaded directly, reading its offset from `file` on every call
 * (FAKETIME_NO_CACHE): rewriting the file moves the clock of the running process. */
pid_t cf_ca_start_ftfile(const char *file);
/* Run ine-ca --data-dir cf_dd <args...> (NULL-terminated) in the foreground, for starts that must
 * fail: its exit status (killed and -1 if it still runs after CF_WAIT_S), its output in *output. */
int cf_ca_run(char **output, ...);
/* SIGTERM and wait (up to CF_WAIT_S): the exit status, 128+signal, or -1 on timeout (then killed). */
int cf_ca_stop(pid_t pid);
/* SIGKILL and reap. */
void cf_kill(pid_t pid);
/* Start any binary of the build in the background (output to /dev/null), tracked. */
pid_t cf_spawn(char *const argv[]);
/* Everything ine-ca wrote to cf_dir/ca.log so far (malloc'd). */
char *cf_ca_log(void);

/* Run inectl --data-dir cf_dd <args...> (NULL-terminated); exit status, output captured. */
int cf_inectl(char **out, char **err, ...);
/* The same with --request-id. */
int cf_inectl_rid(const char *rid, char **out, char **err, ...);
/* `ine-log --data-dir cf_dd verify`: its exit status. */
int cf_verify(void);

/* ---- the log, read (and appended to) from the test --------------------------------------------- */

typedef struct {
    uint64_t seq;
    evlog_event *ev;
} cf_rec;

typedef struct {
    cf_rec *v;
    size_t n;
} cf_recs;

/* Every event with seq >= from whose body is body_case (0: any), decoded (free with cf_recs_free). */
cf_recs cf_events(int body_case, uint64_t from);
void cf_recs_free(cf_recs *r);
size_t cf_count(int body_case, uint64_t from);
uint64_t cf_last_seq(void);
/* Poll the log until cf_count(body_case, from) >= n; returns the count (the caller asserts). */
size_t cf_wait_count(int body_case, uint64_t from, size_t n, int timeout_s);
/* CertificateIssued events with seq >= from for this node and plane (0: any plane). */
size_t cf_count_issued(uint32_t node, int plane, uint64_t from);
/* The projection of the whole log (free with proj_free). */
void cf_state(proj_state *st);
/* The log file's bytes (malloc'd). */
char *cf_log_bytes(size_t *len);

/* Append from the test, as another process would; returns the seq. */
uint64_t cf_append_node(uint32_t uid, const char *address);
uint64_t cf_append_node_removed(uint32_t uid);

/* A barrier that needs no sleep: append NodeAdded(uid), wait until ine-ca has issued both planes
 * for it, then make one status round trip. ine-ca is single-threaded and reconciles everything
 * (rotations, missing certificates, fallback, schedule) in one pass after serving requests, so
 * when this returns, whatever the pass that issued them decided is in the log. Returns the
 * NodeAdded's seq. */
uint64_t cf_barrier(uint32_t uid);

/* ---- keys and certificates ------------------------------------------------------------------- */

/* The private key sealed in the event at seq, opened with cf_dd/seal.key and the purpose
 * seal_purpose_event(seq, <its type>, "sealed_key"): PKCS#8 DER (free with seal_free_secret). */
uint8_t *cf_unseal_der(uint64_t seq, size_t *len);
EVP_PKEY *cf_unseal_key(uint64_t seq);

X509 *cf_x509(const char *pem);
/* 1 if `leaf` verifies against `root` (the only anchor) at time t, with `chain_pem` (may be
 * NULL/"") as untrusted intermediates. */
int cf_chains_to(X509 *leaf, const char *chain_pem, X509 *root, int64_t t);
/* PEM of the certificates given (NULL-terminated), malloc'd. */
char *cf_pem(X509 *first, ...);
/* PEM of a private key (PKCS#8), clear or encrypted with `pass` (AES-256-CBC). */
char *cf_key_pem(EVP_PKEY *k, const char *pass);
/* Write text to cf_dir/<name>; returns the path (malloc'd). */
char *cf_write(const char *name, const char *text);

enum { CF_SERVER = 1, CF_CLIENT = 2 };

/* A certificate for `key` (CN=cn, O=Customer) signed by issuer/ikey, self-signed when issuer is
 * NULL, valid [nb, na]. ca: CA:TRUE + keyCertSign; else CA:FALSE, digitalSignature +
 * keyEncipherment and the EKUs in `eku` (CF_SERVER | CF_CLIENT). */
X509 *cf_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, int ca, int eku, int64_t nb, int64_t na);

/* root -> [intermediate ->] leaf. */
typedef struct {
    EVP_PKEY *root_key, *mid_key, *leaf_key;
    X509 *root, *mid, *leaf;
} cf_chain;

typedef struct {
    int levels;           /* 2 or 3 */
    int ec_leaf;          /* the leaf's key is ECDSA P-256 */
    int eku;              /* 0: CF_SERVER | CF_CLIENT */
    int64_t nb, na;       /* the leaf's validity; 0: now - 1 day, now + 90 days */
} cf_chain_spec;

void cf_chain_make(cf_chain *c, cf_chain_spec s);
void cf_chain_free(cf_chain *c);
/* Write <name>.crt (leaf then its chain, root last) and <name>.key; paths malloc'd. */
void cf_chain_files(const cf_chain *c, const char *name, char **crt, char **key);

#endif
