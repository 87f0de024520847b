/* transport.h — the transport worker's internals, shared by its files:
 *   main.c     arguments, start-up, the libevent loop
 *   conn.c     connections: non-blocking TLS or plain I/O, handshakes with a deadline, the
 *              relay between two connections (bounded buffers, released when idle; an EOF
 *              is passed on and the other direction goes on: half-close)
 *   mux.c      the multiplexed data plane: one TLS connection per node pair carrying every
 *              encrypted stream between them (frames, per-stream credit, draining on rotation)
 *   streams.c  port 3342: accepting streams (handshake, identity, header) and opening them
 *              to other nodes; database endpoints; control-plane heartbeats
 *   state.c    the log: TLS contexts from the node's certificates and the trust bundle
 *              (hot reload), endpoint listeners per database, toggles, activations
 * One process per node, one thread, event-driven. */
#ifndef INE_TRANSPORT_H
#define INE_TRANSPORT_H

#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "datadir.h"
#include "commit.h"
#include "evlog.h"
#include "follow.h"
#include "proj.h"
#include "seal.h"

#include "ine/v1/transport.pb-c.h"

#define TP_BUF_SIZE (64 * 1024)          /* relay buffer per direction, allocated while busy */
#define TP_FRAME_MAX 4096                 /* largest header / heartbeat frame */
#define TP_DEFAULT_PORT 3342
#define TP_DEFAULT_MAX_CONNS 20000
#define TP_DEFAULT_HANDSHAKE_MS 10000
#define TP_HEARTBEAT_MS 2000
#define TP_HEARTBEAT_DEAD_MS 7000          /* an outgoing control stream silent this long is closed */
#define TP_LINGER_MS 30000               /* a half-closed relay idle this long is closed */
/* Bytes a mux stream may have in flight unacknowledged: what a receiver buffers at most for a
 * stream whose local socket does not keep up. Smaller windows stall bulk transfers while the
 * two cores are busy elsewhere (1 MiB: 6 Gbit/s, 4 MiB: 7.5, 8 MiB: 7.5 on the benchmark). */
#define TP_MUX_WINDOW (4096 * 1024)
#define TP_MUX_IDLE_MS 60000             /* a mux connection without streams this long is closed */
/* The longest a stream's admission waits for this node's log to reach the sender's view (the
 * mirror applies a commit in ~1-3 ms; a node cut off from etcd decides with what it has). */
#define TP_VIEW_WAIT_MS 100

typedef struct tp tp_t;
typedef struct tp_conn tp_conn;
typedef struct tp_mux tp_mux;
typedef struct tp_activator tp_activator;

typedef enum {
    TP_S_ACCEPT_HS,   /* 3342 server: TLS handshake */
    TP_S_ACCEPT_HDR,  /* 3342 server: waiting for the StreamHeader */
    TP_S_CONNECTING,  /* outgoing TCP connect in progress */
    TP_S_CLIENT_HS,   /* outgoing TLS handshake */
    TP_S_CLIENT_ACK,  /* outgoing: header sent, waiting for StreamAccept */
    TP_S_RELAY,       /* bytes flow to/from the peer connection */
    TP_S_CONTROL,     /* control-plane stream: heartbeat frames */
    TP_S_WAIT_PEER,   /* endpoint client: waiting for its upstream to be ready */
    TP_S_MUX,         /* a TLS connection carrying mux frames (mux.c) */
    TP_S_MSTREAM,     /* a local socket whose bytes cross in a mux stream */
} tp_state;

typedef enum {
    TP_K_ENDPOINT,
    TP_K_UPSTREAM,
    TP_K_STREAM_IN,
    TP_K_SHARD,
    TP_K_CONTROL_OUT,
    TP_K_CONTROL_IN,
    TP_K_MUX_OUT, /* the mux connection we opened to a peer */
    TP_K_MUX_IN,  /* a mux connection a peer opened to us */
    TP_K_ETCD_IN,    /* a peer's etcd member, in TLS on our peer port (etcdpeer.c) */
    TP_K_ETCD_LOCAL, /* ... relayed to our member on loopback */
} tp_kind;

typedef struct {
    uint8_t *data;    /* NULL while empty: idle connections hold no buffer */
    size_t start, end;
} tp_buf;

struct tp_conn {
    tp_t *tp;
    tp_conn *prev, *next;         /* all connections, for toggles and shutdown */
    int fd;
    SSL *ssl;                     /* NULL: plaintext */
    struct event *rev, *wev, *timer;
    tp_state state;
    tp_kind kind;
    int plane;                    /* 1 control, 2 data */
    uint32_t db_uid;              /* data plane: the database; 0 for control */
    uint32_t peer_node;           /* the node at the other end (TLS), 0 if none */
    int remote;                   /* crosses nodes (subject to toggles) */
    tp_conn *peer;                /* the other end of a relay */
    tp_buf in;                    /* bytes read from this connection, to be written to peer */
    tp_buf out;                   /* frames this connection sends itself (headers, heartbeats) */
    uint8_t *frame;               /* TP_FRAME_MAX + 2 bytes while a frame is being read, else NULL */
    size_t frame_len;
    int rd_eof;                   /* this side sent EOF (it sends nothing more) */
    int wr_shut;                  /* we passed an EOF on to this side (shutdown / close_notify) */
    int shut_pending;             /* close_notify waits for writability */
    int lingering;                /* one direction of the pair has ended, the other goes on */
    int read_blocked;             /* reading paused: our buffer is full */
    int want_write_for_read;      /* SSL_read asked for writability */
    int rd_short;                 /* its last socket read got less than asked (tp_conn_watch_reads) */
    int want_read_for_write;      /* SSL_write asked for readability */
    char desc[96];                /* "127.0.0.2:51234" for log lines */
    /* mux.c. A TLS connection carrying streams has `trunk`; a local socket (endpoint client,
     * shard) whose stream it carries has `mux` and `sid`, and no relay peer. */
    tp_mux *trunk;
    tp_mux *mux;
    uint32_t sid;
    uint32_t credit;              /* bytes we may still send before the peer acknowledges */
    uint32_t unacked;             /* bytes delivered here, not yet returned to the peer as credit */
    uint8_t *rx;                  /* bytes from the peer not yet written to the socket */
    size_t rx_start, rx_end, rx_cap;
    int fin_in;                   /* the peer ended its direction: shut ours once rx drains */
    int fin_sent;
    int quiet;                    /* closing needs no RESET (the peer knows, or the mux is gone) */
    int accepted_by_peer;
};

/* One mux connection: its frames and the streams on it (a hash of stream ids). */
struct tp_mux {
    tp_t *tp;
    tp_mux *next;                 /* tp->muxes */
    tp_conn *c;                   /* the TLS connection */
    uint32_t peer_node;
    int outgoing;                 /* we opened it, so we open the streams */
    int ready;                    /* accepted: frames may be written */
    int draining;                 /* no new streams; closes after its last one */
    int closing;
    unsigned gen;                 /* tp->ctx_gen it was opened under */
    uint32_t next_sid, last_sid;
    tp_conn **slots;              /* open addressing on sid, backward-shift deletion */
    uint32_t cap, count;
    uint8_t *wq;                  /* frames not yet written (plaintext, before TLS) */
    size_t wq_start, wq_end, wq_cap;
    uint8_t *rq;                  /* decrypted bytes not yet dispatched: [rq_start, rq_len) */
    size_t rq_start, rq_len;
    int dirty;                    /* frames queued since the last flush */
    int write_blocked;            /* the socket said EAGAIN: wait for writability */
    int n_blocked;                /* streams that stopped reading because the queue was full */
    const char *broken;           /* why it must close after this round (set mid-dispatch) */
};

typedef struct {
    tp_t *tp;
    uint32_t db_uid;
    uint32_t port;
    struct evconnlistener *l;     /* NULL while the port could not be bound */
    int64_t retry_ms;             /* when to try binding again */
} tp_endpoint;

/* A certificate this node can present: leaf, chain, key, and the name of the root it chains
 * to (what a peer lists among the CAs it trusts, TLS certificate_authorities). */
typedef struct {
    X509 *leaf;
    STACK_OF(X509) *chain;
    EVP_PKEY *key;
    X509_NAME *root_name;
    char root_fp[65];
    char serial[64];
} tp_cred;

typedef struct {
    uint32_t node_uid;
    tp_conn *conn;                /* the control-plane stream we opened to it */
    int64_t next_try_ms;
    int64_t last_heartbeat_ms;
    char served[3][65];           /* what it said it serves, per plane 1..2 (fingerprints) */
    SSL_SESSION *session[3];      /* per plane: the last session it gave us, to resume streams */
} tp_peer;

struct tp {
    char data_dir[DATADIR_MAX];
    char run_dir[DATADIR_MAX];
    uint32_t node_uid;
    int port;
    int max_conns, n_conns;
    int handshake_ms;
    evlog_t *log;
    seal_key *seal;
    void *zctx;
    follow_t *follow;
    follow_pub *pub;
    commit_t *commit;       /* the front door for every append (the activator's thread's, with etcd) */
    tp_activator *activator;/* activate.c; NULL without etcd */
    proj_state st;
    struct event_base *base;
    struct evconnlistener *listener;   /* :3342 */
    tp_conn *conns;
    /* TLS contexts per plane (index 1, 2); swapped on change, open connections keep theirs. */
    SSL_CTX *srv[3], *cli[3];
    uint64_t ctx_cert_seq[3];
    unsigned ctx_gen;             /* bumped on every rebuild: tickets from before are refused */
    char trust_key[4096];         /* the bundle's fingerprints the contexts were built with */
    char serving_fp[3][65], serving_serial[3][64];
    /* What the contexts serve (cur), and the certificate served before a change of root
     * (prev), kept while its root is in the bundle: a peer that has not learnt the new root
     * yet (its log lags) lists only the old one, and is shown the old certificate. */
    tp_cred cur[3], prev[3];
    /* Customer certificates ever uploaded per plane (fingerprints): their holders are
     * identified by fingerprint, having no SPIFFE identity. */
    char **customer_fps[3];
    size_t n_customer_fps[3];
    tp_endpoint **eps;            /* one listener per database, on this node's address */
    size_t n_eps;
    tp_peer *peers;
    size_t n_peers;
    uint64_t refused, accepted;   /* counters for logs and tests */
    /* Databases whose remote connections an applied event closes: the follower only queues
     * them (state.c), the tick closes them, so catching up inside an admission never frees
     * connections under the caller. */
    struct { uint32_t db_uid; uint64_t seq; const char *why; } *closing;
    size_t n_closing, cap_closing;
    struct event *kick;           /* runs a tick at the next loop round */
    uint8_t *pool[64];            /* free relay buffers, so busy connections do not malloc */
    int n_pool;
    tp_mux *muxes;
    int mux_off;                  /* INE_TRANSPORT_MUX=0: one TLS connection per stream */
    /* etcdpeer.c: etcd's peer traffic, when this node's address is not loopback */
    int etcd_on;
    int etcd_peer_port, etcd_local_port;
    struct evconnlistener *etcd_listener;
    int64_t etcd_retry_ms;
    char etcd_files_fp[65];       /* the certificate and trust last installed as the member's files */
    char etcd_files_trust[4096];
};

/* --- conn.c --- */
tp_conn *tp_conn_new(tp_t *tp, int fd, SSL *ssl, tp_state st, tp_kind kind);
void tp_conn_close(tp_conn *c, const char *why);     /* closes its relay peer too */
void tp_conn_refuse(tp_conn *c, const char *reason); /* log "refused ... reason", count, close */
void tp_conn_want(tp_conn *c, int read, int write);
void tp_conn_deadline(tp_conn *c, int ms);            /* 0 clears */
/* Start relaying between a and b (both connected and past their headers). */
void tp_relay_start(tp_conn *a, tp_conn *b);
/* Frames: queue one message (2-byte length + bytes) into c's output (the peer-less buffer). */
int tp_send_frame(tp_conn *c, const ProtobufCMessage *m);
/* Parse one whole frame out of c->frame if present; returns the message length, 0 if more is
 * needed, negative if the frame is too large. */
int tp_frame_ready(tp_conn *c, const uint8_t **msg);
void tp_frame_consume(tp_conn *c);
/* Read what is available into c->frame (TLS or plain); 0 ok, -1 EOF/error (closed). */
int tp_read_frame_bytes(tp_conn *c);
/* Flush c's pending output (frames); 0 done or waiting, -1 closed (c is freed). */
int tp_flush(tp_conn *c);
/* The same, but a failed write only returns -1: c stays for the caller to close. */
int tp_flush_try(tp_conn *c);
/* Raw I/O for streams that manage their own buffers: > 0 bytes, 0 would block, < 0 ended. */
ssize_t tp_conn_read(tp_conn *c, uint8_t *buf, size_t len);
ssize_t tp_conn_write(tp_conn *c, const uint8_t *buf, size_t len);
/* Let TLS connection c send several records per write(): tp_conn_write then leaves up to
 * 64 KiB in a buffer, which tp_conn_flush_records sends (1 all sent, 0 would block: wait for
 * writability and call it again, -1 failed). INE_OK or INE_ENOMEM. */
int tp_conn_coalesce(tp_conn *c);
int tp_conn_flush_records(tp_conn *c);
/* Note, for TLS connection c, whether each socket read came back short, so tp_conn_drained can
 * tell a reader to stop before the read that would only say "would block". */
void tp_conn_watch_reads(tp_conn *c);
/* 1 when c's socket had nothing more at its last read and TLS holds no bytes of it: the next
 * read would block, and new bytes will raise a read event (level-triggered). */
int tp_conn_drained(const tp_conn *c);
/* Describe an address for logs. */
void tp_describe(tp_conn *c, const struct sockaddr *sa);

/* --- streams.c --- */
void tp_on_accept(tp_t *tp, int fd, const struct sockaddr *sa);
/* A TLS connection accepted on one of our ports, as `kind` (its handshake follows). */
void tp_accept_tls(tp_t *tp, int fd, const struct sockaddr *sa, tp_kind kind);
void tp_conn_event(tp_conn *c, int readable, int writable);  /* state-machine dispatch */
void tp_endpoint_accept(tp_t *tp, uint32_t db_uid, int fd, const struct sockaddr *sa);
void tp_heartbeat_tick(tp_t *tp);
/* SNI picks the plane ("control.ine"/"data.ine") and with it the server certificate. */
int tp_servername_cb(SSL *ssl, int *al, void *arg);
/* Picks, per handshake, the certificate the peer can verify (cur, or prev when the peer's
 * certificate_authorities list names only prev's root). Both roles. */
int tp_cert_cb(SSL *ssl, void *arg);
/* The peer entry of node uid `node` in the current snapshot, or NULL. */
tp_peer *tp_peer_find(tp_t *tp, uint32_t node);
/* Identity of a TLS peer: 0 and *node if it is a node of this cluster on `plane`. */
int tp_peer_identity(tp_t *tp, SSL *ssl, int plane, uint32_t *node, char *why, size_t why_len);

/* A non-blocking TCP connection to host:port in state CONNECTING; NULL if it cannot start. */
tp_conn *tp_connect(tp_t *tp, const char *host, int port, tp_kind kind);
int tp_split_hostport(const char *hp, char *host, size_t hlen, int *port);
/* Open the TLS connection of `plane` to node `node` (handshake, then a StreamHeader). */
tp_conn *tp_open_stream(tp_t *tp, uint32_t node, int plane, uint32_t db_uid, tp_kind kind);

/* --- mux.c --- */
/* Carry endpoint client `cl` of database db_uid to `node` in a stream of the mux connection
 * to it (opened if there is none usable). -1: it cannot start (cl is left to the caller). */
int tp_mux_open_stream(tp_t *tp, tp_conn *cl, uint32_t node, uint32_t db_uid);
/* A mux connection was accepted on 3342 (its StreamHeader asked for mux); 0 ok, -1 closed. */
int tp_mux_accepted(tp_conn *c);
/* Our outgoing mux connection got its StreamAccept: flush what waited. */
void tp_mux_ready(tp_conn *c);
void tp_mux_event(tp_conn *c, int readable, int writable);           /* TP_S_MUX */
void tp_mux_stream_event(tp_conn *c, int readable, int writable);    /* TP_S_MSTREAM */
/* A shard connection opened for a mux stream: err 0 connected (accept it), else refuse. */
void tp_mux_shard_connected(tp_conn *c, const char *err);
void tp_mux_unlink(tp_conn *c);          /* from tp__free: a stream's socket closes */
void tp_mux_teardown(tp_conn *c, const char *why); /* from tp__free: a mux connection closes */
void tp_mux_flush_all(tp_t *tp);          /* after each event-loop round: write queued frames */
void tp_mux_rotated(tp_t *tp);            /* contexts rebuilt: new streams on new connections */
void tp_mux_peer_lost(tp_t *tp, uint32_t node); /* heartbeats stopped: do not reuse its mux */

/* The one admission rule of a data-plane stream from node `from` for database db_uid, sent
 * when the sender's log was at log_seq: 0 with the shard's host and port, or -1 with why.
 * May wait (TP_VIEW_WAIT_MS at most) for this node's log to reach log_seq. */
int tp_admit_data_stream(tp_t *tp, uint32_t db_uid, uint64_t log_seq, char *host, size_t hlen, int *port, char *why,
                         size_t wlen);

/* Refuse a stream after its header: tell the peer why (StreamAccept ok=false), log, close. */
void tp_stream_refuse(tp_conn *c, const char *why);


/* --- activate.c --- */
int tp_activator_open(tp_t *tp);          /* with etcd: the thread that appends */
void tp_activator_close(tp_t *tp);
/* Append CertificateActivated: queued to the thread with etcd, at once without. */
void tp_activation_append(tp_t *tp, uint32_t node, int plane, const char *fp, const char *serial);

/* --- etcdpeer.c --- */
void tp_etcd_open(tp_t *tp);              /* after the log is read: on or off, and the ports */
void tp_etcd_tick(tp_t *tp);              /* listen; keep the member's peer files current */
void tp_etcd_accepted(tp_conn *c);        /* a peer's member passed the identity checks */
void tp_etcd_close(tp_t *tp);

/* --- state.c --- */
struct evconnlistener *tp_listen(tp_t *tp, const char *host, int port, evconnlistener_cb cb, void *arg);
int tp_state_open(tp_t *tp);
void tp_state_tick(tp_t *tp);                          /* follow the log, reconcile */
/* Bring this node's view of the log up to seq (bounded wait); what it applies takes effect
 * at the next tick, which it schedules. */
void tp_state_view_wait(tp_t *tp, uint64_t seq);
void tp_state_close(tp_t *tp);
const proj_node *tp_self(tp_t *tp);
/* Offer the session last cached for c's peer node and plane (an outgoing stream). */
void tp_session_offer(tp_conn *c);
/* 1 unless INE_TRANSPORT_RESUME=0: we resume our outgoing streams' TLS sessions. */
int tp_resume(void);
/* Queue a TLS 1.3 session ticket for the client of c (an accepted incoming stream) if wanted. */
void tp_ticket_offer(tp_conn *c, int wanted);
/* Record that `node` serves the certificate `fp` on `plane` (CertificateActivated), once per
 * fingerprint; only a node whose log is authoritative appends. */
void tp_record_activation(tp_t *tp, uint32_t node, int plane, const char *fp, const char *serial);

#endif
