/* dial.c — the dial role: an outgoing connection until its opener takes it. Plain: the TCP
 * connect. TLS (a stream to another node's 3342): the connect, the handshake, the peer's
 * identity (the node we dialled, on that plane), our StreamHeader, the peer's StreamAccept.
 * Each step has the handshake deadline. Then the opener's callback gets the connection, or
 * the reason it failed; until then the opener's release callback (if any) hears of a close,
 * so what the opener attached to the connection (a mux, a peer's entry) is let go. */
#include "transport.h"
#include "logline.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void tp__dial_release(tp_conn *c, const char *why)
{
    if (c->dial.release) c->dial.release(c, why);
}

/* --- TCP -------------------------------------------------------------------------------------- */

static void tp__hs_io(tp_conn *c, int readable, int writable);
static void tp__hs_deadline(tp_conn *c) { c->dial.done(c, TP_DIAL_FAILED, "handshake timed out"); }
static const tp_conn_ops tp__hs_ops = {"dial: TLS handshake", tp__hs_io, tp__hs_deadline, tp__dial_release, 0};

static void tp__connect_io(tp_conn *c, int readable, int writable)
{
    int err = 0;
    socklen_t el = sizeof err;
    char why[200];
    (void)readable;
    (void)writable;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
        snprintf(why, sizeof why, "connect failed: %s", strerror(err ? err : errno));
        return c->dial.done(c, TP_DIAL_UNREACHABLE, why);
    }
    if (c->ssl) {
        SSL_set_fd(c->ssl, c->fd);
        c->ops = &tp__hs_ops;
        return tp__hs_io(c, 0, 1);
    }
    tp_conn_deadline(c, 0);
    c->dial.done(c, TP_DIAL_OK, NULL);
}
static void tp__connect_deadline(tp_conn *c) { c->dial.done(c, TP_DIAL_UNREACHABLE, "connect timed out"); }
static const tp_conn_ops tp__connect_ops = {"dial: connecting", tp__connect_io, tp__connect_deadline, tp__dial_release, 0};

static int tp__resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    /* Numeric first (never blocks); a host name is resolved synchronously, which only node
     * addresses configured as names pay for. */
    if (getaddrinfo(host, ps, &hints, &res) != 0) {
        hints.ai_flags = AI_NUMERICSERV;
        if (getaddrinfo(host, ps, &hints, &res) != 0) return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

tp_conn *tp_dial_tcp(tp_t *tp, const char *host, int port, tp_dial_done done)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    tp_conn *c;
    int fd;
    if (tp__resolve(host, port, &ss, &sl) < 0) {
        logline(LOGLINE_WARN, 0, "cannot resolve %s", host);
        return NULL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    tp_nodelay(fd);
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
        logline(LOGLINE_WARN, 0, "cannot connect to %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!(c = tp_conn_new(tp, fd, NULL, &tp__connect_ops))) {
        close(fd);
        return NULL;
    }
    c->dial.done = done;
    snprintf(c->desc, sizeof c->desc, "%s:%d", host, port);
    tp_conn_want(c, 0, 1);
    tp_conn_deadline(c, tp->handshake_ms);
    return c;
}

/* --- TLS, header, accept ------------------------------------------------------------------------ */

static void tp__ack_io(tp_conn *c, int readable, int writable);
static void tp__ack_deadline(tp_conn *c) { c->dial.done(c, TP_DIAL_FAILED, "no stream header in time"); }
static const tp_conn_ops tp__ack_ops = {"dial: waiting for the stream accept", tp__ack_io, tp__ack_deadline, tp__dial_release, 0};

static void tp__handshaken(tp_conn *c)
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    char why[200];
    uint32_t node;
    if (tp_peer_identity(c->tp, c->ssl, c->plane, &node, why, sizeof why) < 0) return c->dial.done(c, TP_DIAL_FAILED, why);
    /* node 0: a customer certificate, which names no node; we dialled the node's address. */
    if (node && node != c->peer_node) {
        snprintf(why, sizeof why, "server presented node %u's certificate, not node %u's", node, c->peer_node);
        return c->dial.done(c, TP_DIAL_FAILED, why);
    }
    h.plane = (Ine__V1__Plane)c->plane;
    h.db_uid = c->db_uid;
    h.from_node_uid = c->tp->node_uid;
    h.mux = c->dial.mux;
    h.no_ticket = !tp_resume();
    h.log_seq = c->tp->st.applied_seq;
    c->ops = &tp__ack_ops;
    tp_send_frame(c, &h.base);
    if (tp_flush(c) < 0) return;
    tp_conn_want(c, 1, c->out.data != NULL);
}

static void tp__hs_io(tp_conn *c, int readable, int writable)
{
    char why[200];
    int r = tp_tls_handshake(c, why, sizeof why);
    (void)readable;
    (void)writable;
    if (r == 0) return;
    if (r < 0) return c->dial.done(c, TP_DIAL_FAILED, why);
    tp__handshaken(c);
}

static void tp__ack_io(tp_conn *c, int readable, int writable)
{
    const uint8_t *msg;
    Ine__V1__StreamAccept *a;
    int n;
    if (writable && tp_flush(c) < 0) return;
    if (!readable) return tp_conn_want(c, 1, c->out.data != NULL);
    if (tp_read_frame_bytes(c) < 0) return c->dial.done(c, TP_DIAL_FAILED, "stream closed before it was accepted");
    if ((n = tp_frame_ready(c, &msg)) == 0) return;
    if (n < 0 || !(a = ine__v1__stream_accept__unpack(NULL, (size_t)n, msg))) return c->dial.done(c, TP_DIAL_FAILED, "malformed stream accept");
    tp_frame_consume(c);
    if (!a->ok) {
        char why[300];
        snprintf(why, sizeof why, "node %u refused the stream: %s", c->peer_node, a->reason);
        ine__v1__stream_accept__free_unpacked(a, NULL);
        return c->dial.done(c, TP_DIAL_FAILED, why);
    }
    ine__v1__stream_accept__free_unpacked(a, NULL);
    tp_conn_deadline(c, 0);
    c->dial.done(c, TP_DIAL_OK, NULL);
}

tp_conn *tp_dial_stream(tp_t *tp, uint32_t node, tp_plane plane, uint32_t db_uid, int mux, tp_dial_done done)
{
    const proj_node *n = proj_node_find(&tp->st, node);
    tp_conn *c;
    if (!n || n->removed || !tp->cli[plane]) return NULL;
    if (!(c = tp_dial_tcp(tp, n->address, tp->port, done))) return NULL;
    c->db_uid = db_uid;
    c->peer_node = node;
    c->remote = 1;
    c->dial.mux = mux;
    if (!tp_tls_client(c, plane)) {
        tp_conn_close(c, "SSL_new failed");
        return NULL;
    }
    return c;
}
