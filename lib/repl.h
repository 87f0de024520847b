/* repl.h — a follower node's replica of the master's event log, fed over the control plane.
 *
 * A follower's data dir holds replica.conf (which master, which node it is), the cluster's
 * seal.key (received at join) and log/, a byte-for-byte copy of the master's log up to some
 * seq. The follower connects to the master's transport port with its control-plane
 * certificate (SNI control.ine, mutual TLS exactly as every stream), sends a StreamHeader with
 * `replicate` set, the first seq it wants and the hash of its head, and then appends every
 * record that arrives with evlog_append_raw — which refuses a record that does not decode, does
 * not come next, or does not link to the head's hash. So a replica is never anything but a
 * prefix of the master's chain: a stream that breaks it is cut, and nothing of it is written.
 *
 * Wire format after the accept (transport.proto): 8-byte BE seq, 4-byte BE length, record.
 * seq 0 / length 0 is a keepalive. */
#ifndef INE_REPL_H
#define INE_REPL_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "evlog.h"
#include "seal.h"

#define REPL_CONF_FILE "replica.conf"
#define REPL_REC_HDR 12                   /* seq (8) + length (4) */
#define REPL_MAX_RECORD (16u << 20)       /* a record larger than this is refused */
#define REPL_KEEPALIVE_MS 5000            /* the master's keepalive when nothing is appended */
#define REPL_IO_TIMEOUT_MS 15000          /* no byte for this long: the master is gone */

typedef struct {
    uint32_t node_uid;
    char master_address[256];
    int master_port;
    char cluster_uid[65];
} repl_conf;

/* <dd>/replica.conf. INE_ENOTFOUND when absent (the data dir is not a replica: its log is
 * authoritative); INE_EINVAL naming the line for anything malformed. */
int repl_conf_load(const char *data_dir, repl_conf *c);
/* Write it atomically (temp file, fsync, rename, fsync of the directory). */
int repl_conf_save(const char *data_dir, const repl_conf *c);
/* Whether <dd> is a replica (replica.conf exists). */
int repl_is_replica(const char *data_dir);

/* The credentials a follower presents and the roots it trusts (borrowed by repl_sync). */
typedef struct {
    X509 *cert;
    STACK_OF(X509) *chain;
    EVP_PKEY *key;
    X509_STORE *trust;
} repl_creds;

/* The node's current control-plane certificate and key, and the trust bundle, from the local
 * log (INE_ENOTFOUND when the log has no certificate for the node yet). Owned: free with
 * repl_creds_free. */
int repl_creds_from_log(evlog_t *log, const seal_key *seal, uint32_t node_uid, repl_creds *out);
void repl_creds_free(repl_creds *c);

/* Record framing, shared with the master's side in ine-transport. */
void repl_rec_header(uint8_t out[REPL_REC_HDR], uint64_t seq, uint32_t len);
void repl_rec_parse(const uint8_t in[REPL_REC_HDR], uint64_t *seq, uint32_t *len);

typedef struct {
    evlog_t *log;                    /* the local replica */
    const repl_conf *conf;
    const repl_creds *creds;         /* NULL: repl_creds_from_log(log, seal, conf->node_uid) */
    const seal_key *seal;            /* needed when creds is NULL */
    int io_timeout_ms;               /* 0: REPL_IO_TIMEOUT_MS */
    int until_head;                  /* return once the master's head at connect is reached */
    volatile sig_atomic_t *stop;     /* set (by a signal handler) to end the session */
    void (*on_append)(uint64_t last_seq, void *ud); /* after each appended record */
    void *ud;
} repl_session_opts;

/* One connection to the master: handshake, header, accept, then records until the master's
 * head as of the connect (until_head), or until the stream ends, fails, times out or *stop is
 * set. Returns INE_OK when until_head was reached (or on *stop); otherwise a negative code
 * with a message (INE_ECHAIN: the master's stream broke the chain, nothing of it written;
 * INE_EAUTH: the master refused us or we refused its certificate; INE_EIO: the connection).
 * *head (may be NULL) receives the local head seq at return. */
int repl_session(const repl_session_opts *o, uint64_t *head);

/* The catch-up `inectl node join` runs: open <dd>/log, one session with until_head. */
int repl_sync(const char *data_dir, const repl_conf *c, const repl_creds *creds, int timeout_ms,
              uint64_t *head);

#endif
