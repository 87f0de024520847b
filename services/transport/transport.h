/* transport.h — the transport worker's internals, shared by its files, bottom to top. A file
 * calls only files above it in this list, never one below (scripts/transport-layers.sh
 * checks it on the object files; it runs as the test transport_layers):
 *   view.c      this node's view of the log: itself, its peers, waiting for a seq, and the one
 *               admission rule of a data-plane stream
 *   conn.c      the I/O floor: a connection's socket, TLS or plain I/O, event interest,
 *               deadlines, frames, listeners; every event goes to the connection's role
 *               (c->ops), and conn.c never names a role
 *   tls.c       the only room that builds an SSL_CTX, checks a peer's identity, drives a
 *               handshake, or swaps credentials and sessions
 *   activate.c  recording CertificateActivated (off the event loop with etcd)
 *   relay.c     the relay role: bytes between two connections (and the role of one that waits
 *               for the other end of its pair)
 *   dial.c      the dial role: an outgoing connection up to the point its opener takes it
 *               (connected, or TLS + StreamHeader + StreamAccept), then the opener's callback
 *   accept.c    the accept role: a TLS connection accepted on one of our ports, up to its
 *               peer's identity, then the listener's callback; StreamAccept answers
 *   mux.c       the mux trunk and mux stream roles: every encrypted stream between two nodes
 *               in one TLS connection
 *   control.c   the control role: heartbeats on control-plane streams
 *   etcdpeer.c  etcd's peer traffic: accepted in TLS, relayed to the local member
 *   streams.c   port 3342 (the StreamHeader, then the role it asks for) and the database
 *               endpoints
 *   state.c     the log: contexts, endpoints, peers, toggles; the tick
 *   main.c      arguments, start-up, the libevent loop
 * One process per node, one thread (and activate.c's), event-driven. */
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

/* The planes, by their ine.v1.Plane values; arrays indexed by plane have TP_PLANES slots. */
typedef enum { TP_PLANE_NONE = 0, TP_PLANE_CONTROL = 1, TP_PLANE_DATA = 2, TP_PLANES = 3 } tp_plane;
#define TP_FOR_PLANES(p) for (tp_plane p = TP_PLANE_CONTROL; p <= TP_PLANE_DATA; p = (tp_plane)(p + 1))

/* A connection's role: what its events mean. conn.c calls only these. */
typedef struct {
    const char *name;                                  /* for logs: "relay", "mux trunk", ... */
    void (*io)(tp_conn *c, int readable, int writable);
    void (*deadline)(tp_conn *c);                      /* its timer fired */
    void (*release)(tp_conn *c, const char *why);      /* it is being freed (NULL: nothing to do) */
    int inbound;                                       /* refusals say "stream from", else "connection to" */
} tp_conn_ops;

/* How a dial ended: for its opener's callback. */
typedef enum {
    TP_DIAL_OK,          /* connected (plain), or the peer accepted the stream (TLS) */
    TP_DIAL_UNREACHABLE, /* the TCP connect failed or timed out */
    TP_DIAL_FAILED,      /* the handshake, the peer's identity, or its answer said no */
} tp_dial_result;
typedef void (*tp_dial_done)(tp_conn *c, tp_dial_result r, const char *why);
/* An accepted TLS connection whose peer passed the identity checks. */
typedef void (*tp_accept_done)(tp_conn *c);

typedef struct {
    uint8_t *data;    /* NULL while empty: idle connections hold no buffer */
    size_t start, end;
} tp_buf;

struct tp_conn {
    tp_t *tp;
    tp_conn *prev, *next;         /* all connections, for toggles and shutdown */
    const tp_conn_ops *ops;       /* its role now */
    int fd;
    SSL *ssl;                     /* NULL: plaintext */
    struct event *rev, *wev, *timer;
    tp_plane plane;
    uint32_t db_uid;              /* data plane: the database; 0 for control */
    uint32_t peer_node;           /* the node at the other end (TLS), 0 if none */
    int remote;                   /* crosses nodes (subject to toggles) */
    tp_conn *peer;                /* paired with (a relay's other end, an endpoint client's
                                     upstream): closing one closes both */
    tp_buf out;                   /* frames this connection sends itself (headers, heartbeats) */
    uint8_t *frame;               /* TP_FRAME_MAX + 2 bytes while a frame is being read, else NULL */
    size_t frame_len;
    int frames_only;              /* every byte read is frames (control): read all there is */
    int want_write_for_read;      /* SSL_read asked for writability */
    int rd_short;                 /* its last socket read got less than asked (tp_conn_watch_reads) */
    int want_read_for_write;      /* SSL_write asked for readability */
    char desc[96];                /* "127.0.0.2:51234" for log lines */
    /* Bytes flowing through (relay and mux stream roles). */
    struct {
        int rd_eof;               /* this side sent EOF (it sends nothing more) */
        int wr_shut;              /* we passed an EOF on to this side (shutdown / close_notify) */
        int lingering;            /* one direction has ended, the other goes on */
        int read_blocked;         /* reading paused: no room for what it would read */
    } flow;
    /* A connection is one end of a relay or the socket of a mux stream, never both. */
    union {
    struct {                      /* relay.c */
        tp_buf in;                /* bytes read from this connection, to be written to peer */
        int shut_pending;         /* close_notify waits for writability */
    } relay;
    struct {                      /* mux.c: a local socket whose bytes cross in a mux stream */
        tp_mux *mux;
        uint32_t sid;
        uint32_t credit;          /* bytes we may still send before the peer acknowledges */
        uint32_t unacked;         /* bytes delivered here, not yet returned to the peer as credit */
        uint8_t *rx;              /* bytes from the peer not yet written to the socket */
        size_t rx_start, rx_end, rx_cap;
        int fin_in;               /* the peer ended its direction: shut ours once rx drains */
        int fin_sent;
        int quiet;                /* closing needs no RESET (the peer knows, or the mux is gone) */
    } ms;
    };
    tp_mux *trunk;                /* mux.c: the mux this TLS connection carries */
    /* Dialled out or accepted, never both. */
    union {
    struct {                      /* dial.c */
        tp_dial_done done;
        void (*release)(tp_conn *c, const char *why); /* the opener's, while it dials */
        int mux;                  /* the header asks for a mux connection */
    } dial;
    tp_accept_done accepted;      /* accept.c: the listener's callback */
    };
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
    char served[TP_PLANES][65];           /* what it said it serves, per plane 1..2 (fingerprints) */
    SSL_SESSION *session[TP_PLANES];      /* per plane: the last session it gave us, to resume streams */
    int64_t hb_sent_us;           /* our last heartbeat on conn, not yet answered (realtime) */
    int64_t offset_ms;            /* its clock minus ours, from the last answer (lib/skew.h) */
    int64_t offset_at;            /* when measured, unix seconds; 0: never */
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
    /* TLS contexts per plane; swapped on change, open connections keep theirs. */
    SSL_CTX *srv[TP_PLANES], *cli[TP_PLANES];
    uint64_t ctx_cert_seq[TP_PLANES];
    unsigned ctx_gen;             /* bumped on every rebuild: tickets from before are refused */
    char trust_key[4096];         /* the bundle's fingerprints the contexts were built with */
    char serving_fp[TP_PLANES][65], serving_serial[TP_PLANES][64];
    /* What the contexts serve (cur), and the certificate served before a change of root
     * (prev), kept while its root is in the bundle: a peer that has not learnt the new root
     * yet (its log lags) lists only the old one, and is shown the old certificate. */
    tp_cred cur[TP_PLANES], prev[TP_PLANES];
    /* Customer certificates ever uploaded per plane (fingerprints): their holders are
     * identified by fingerprint, having no SPIFFE identity. */
    char **customer_fps[TP_PLANES];
    size_t n_customer_fps[TP_PLANES];
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

/* --- view.c --- */
const proj_node *tp_self(tp_t *tp);
/* The peer entry of node uid `node`, or NULL. */
tp_peer *tp_peer_find(tp_t *tp, uint32_t node);
/* Bring this node's view of the log up to seq (waiting TP_VIEW_WAIT_MS at most); what it
 * applies takes effect at the next tick, which it schedules (tp->kick). */
void tp_view_wait(tp_t *tp, uint64_t seq);
/* The one admission rule of a data-plane stream for database db_uid, sent when the sender's
 * log was at log_seq: 0 with the shard's host and port, or -1 with why. May wait for the log
 * (tp_view_wait). */
int tp_admit_data_stream(tp_t *tp, uint32_t db_uid, uint64_t log_seq, char *host, size_t hlen, int *port, char *why,
                         size_t wlen);
int tp_split_hostport(const char *hp, char *host, size_t hlen, int *port);

/* --- conn.c --- */
/* A connection on fd (and ssl) in role `ops`; NULL if out of memory (fd is the caller's). */
tp_conn *tp_conn_new(tp_t *tp, int fd, SSL *ssl, const tp_conn_ops *ops);
void tp_conn_close(tp_conn *c, const char *why);     /* closes its paired peer too */
void tp_conn_refuse(tp_conn *c, const char *reason); /* log "refused ... reason", count, close */
void tp_conn_want(tp_conn *c, int read, int write);
void tp_conn_deadline(tp_conn *c, int ms);            /* 0 clears */
/* Describe an address for logs. */
void tp_describe(tp_conn *c, const struct sockaddr *sa);
void tp_nodelay(int fd);
struct evconnlistener *tp_listen(tp_t *tp, const char *host, int port, evconnlistener_cb cb, void *arg);
/* Relay buffers come from a small pool, so busy connections do not malloc. */
uint8_t *tp_buf_get(tp_t *tp);
void tp_buf_put(tp_t *tp, tp_buf *b);
/* Frames: queue one message (2-byte length + bytes) into c's output (the peer-less buffer). */
int tp_send_frame(tp_conn *c, const ProtobufCMessage *m);
/* Parse one whole frame out of c->frame if present; returns the message length, 0 if more is
 * needed, negative if the frame is too large. */
int tp_frame_ready(tp_conn *c, const uint8_t **msg);
void tp_frame_consume(tp_conn *c);
void tp_frame_drop(tp_conn *c);
/* Read what is available into c->frame (TLS or plain); 0 ok, -1 EOF/error (closed). */
int tp_read_frame_bytes(tp_conn *c);
/* Flush c's pending output (frames); 0 done or waiting, -1 closed (c is freed). */
int tp_flush(tp_conn *c);
/* The same, but a failed write only returns -1: c stays for the caller to close. */
int tp_flush_try(tp_conn *c);
/* Raw I/O for roles that manage their own buffers: > 0 bytes, 0 would block, -1 end of
 * stream (reads), -2 error (reads), -1 error (writes). */
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

/* --- tls.c --- */
/* Rebuild the contexts of the planes whose certificate or trust changed; a bit per plane
 * rebuilt (1 << plane). */
unsigned tp_tls_refresh(tp_t *tp);
void tp_tls_close(tp_t *tp);
/* Drive c's handshake: 1 done, 0 waiting (interest set), -1 failed (reason in why). */
int tp_tls_handshake(tp_conn *c, char *why, size_t len);
/* Identity of a TLS peer: 0 and *node if it is a node of this cluster on `plane` (node 0: a
 * customer certificate uploaded for that plane). */
int tp_peer_identity(tp_t *tp, SSL *ssl, tp_plane plane, uint32_t *node, char *why, size_t why_len);
/* A client SSL for a stream to node `node` on `plane` (SNI, a session to resume); NULL if
 * the plane has no context yet. */
SSL *tp_tls_client(tp_conn *c, tp_plane plane);
/* A server SSL for a connection accepted on one of our ports (the plane comes with SNI). */
SSL *tp_tls_server(tp_t *tp);
/* 1 unless INE_TRANSPORT_RESUME=0: we resume our outgoing streams' TLS sessions. */
int tp_resume(void);
/* Queue a TLS 1.3 session ticket for the client of c (an accepted incoming stream) if wanted. */
void tp_ticket_offer(tp_conn *c, int wanted);
/* Drop the sessions kept for `node` (0: every node). */
void tp_tls_forget(tp_t *tp, uint32_t node);

/* --- relay.c --- */
/* Start relaying between a and b (both connected and past their headers). */
void tp_relay_start(tp_conn *a, tp_conn *b);
/* An endpoint client (or a stream) waiting for its upstream: reads nothing meanwhile. */
extern const tp_conn_ops tp_wait_ops;
/* A dial callback for an upstream whose `peer` waits: relay them once it is up. */
void tp_relay_upstream_done(tp_conn *up, tp_dial_result r, const char *why);

/* --- dial.c --- */
/* A non-blocking TCP connection to host:port; `done` once it is connected or failed. NULL if
 * it cannot start. */
tp_conn *tp_dial_tcp(tp_t *tp, const char *host, int port, tp_dial_done done);
/* A TLS stream to node `node` on `plane`: connect, handshake, check the peer, send the
 * StreamHeader (db_uid; mux: a connection carrying streams), wait for its StreamAccept; then
 * `done`. NULL if it cannot start. */
tp_conn *tp_dial_stream(tp_t *tp, uint32_t node, tp_plane plane, uint32_t db_uid, int mux, tp_dial_done done);

/* --- accept.c --- */
/* A TLS connection accepted on one of our ports: handshake (deadline), the peer's identity
 * on the plane SNI named; then `done`. */
void tp_accept_tls(tp_t *tp, int fd, const struct sockaddr *sa, tp_accept_done done);
/* Accept a stream; -1 when the write failed and c (with its peer) is gone. */
int tp_stream_accept(tp_conn *c);
/* Refuse a stream after its header: tell the peer why (StreamAccept ok=false), log, close. */
void tp_stream_refuse(tp_conn *c, const char *why);

/* --- control.c --- */
/* An accepted control-plane stream (its header read): heartbeats both ways. */
void tp_control_accepted(tp_conn *c);
void tp_heartbeat_tick(tp_t *tp);

/* --- mux.c --- */
/* Carry endpoint client `cl` of database db_uid to `node` in a stream of the mux connection
 * to it (opened if there is none usable). -1: it cannot start (cl is left to the caller). */
int tp_mux_open_stream(tp_t *tp, tp_conn *cl, uint32_t node, uint32_t db_uid);
/* A mux connection was accepted on 3342 (its StreamHeader asked for mux); 0 ok, -1 closed. */
int tp_mux_accepted(tp_conn *c);
void tp_mux_flush_all(tp_t *tp);          /* after each event-loop round: write queued frames */
void tp_mux_rotated(tp_t *tp);            /* contexts rebuilt: new streams on new connections */
void tp_mux_peer_lost(tp_t *tp, uint32_t node); /* heartbeats stopped: do not reuse its mux */

/* --- etcdpeer.c --- */
void tp_etcd_open(tp_t *tp);              /* after the log is read: on or off, and the ports */
void tp_etcd_tick(tp_t *tp);              /* listen; keep the member's peer files current */
void tp_etcd_close(tp_t *tp);

/* --- streams.c --- */
/* A connection accepted on 3342 whose peer passed the identity checks: read its header. */
void tp_on_accept(tp_t *tp, int fd, const struct sockaddr *sa);
void tp_endpoint_accept(tp_t *tp, uint32_t db_uid, int fd, const struct sockaddr *sa);

/* --- activate.c --- */
int tp_activator_open(tp_t *tp);          /* with etcd: the thread that appends */
void tp_activator_close(tp_t *tp);
/* Record that `node` serves the certificate `fp` on `plane` (CertificateActivated), once per
 * fingerprint, and only its current certificate: queued to the thread with etcd, at once
 * without. */
void tp_record_activation(tp_t *tp, uint32_t node, tp_plane plane, const char *fp, const char *serial);

/* --- state.c --- */
int tp_state_open(tp_t *tp);
void tp_state_tick(tp_t *tp);                          /* follow the log, reconcile */
void tp_state_close(tp_t *tp);

#endif
