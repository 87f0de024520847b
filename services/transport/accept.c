/* accept.c — the accept role: a TLS connection accepted on one of our ports (3342, etcd's
 * peer port), up to the point its listener takes it: the handshake (with the handshake
 * deadline; SNI picks the plane and our certificate), then the peer's identity on that plane
 * (a live node of this cluster, or a customer certificate uploaded for it). Then the
 * listener's callback. Also the StreamAccept answers every accepting role gives. */
#include "transport.h"
#include "logline.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <unistd.h>

static void tp__accept_io(tp_conn *c, int readable, int writable)
{
    char why[200];
    uint32_t node;
    int r = tp_tls_handshake(c, why, sizeof why);
    (void)readable;
    (void)writable;
    if (r == 0) return;
    if (r < 0) return tp_conn_refuse(c, why);
    if (tp_peer_identity(c->tp, c->ssl, c->plane, &node, why, sizeof why) < 0) return tp_conn_refuse(c, why);
    c->peer_node = node;
    c->accepted(c);
}
static void tp__accept_deadline(tp_conn *c) { tp_conn_refuse(c, "handshake timed out"); }
static const tp_conn_ops tp__accept_ops = {"accept: TLS handshake", tp__accept_io, tp__accept_deadline, NULL, 1};

void tp_accept_tls(tp_t *tp, int fd, const struct sockaddr *sa, tp_accept_done done)
{
    tp_conn *c;
    SSL *ssl;
    if (tp->n_conns >= tp->max_conns || !tp->srv[TP_PLANE_CONTROL]) {
        char host[INET6_ADDRSTRLEN] = "?";
        inet_ntop(sa->sa_family, sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                                           : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
                  host, sizeof host);
        tp->refused++;
        logline(LOGLINE_WARN, 0, "refused connection from %s: %s", host,
                tp->srv[TP_PLANE_CONTROL] ? "connection limit reached" : "no certificate to serve yet");
        close(fd);
        return;
    }
    tp_nodelay(fd);
    if (!(ssl = tp_tls_server(tp))) {
        close(fd);
        return;
    }
    if (!(c = tp_conn_new(tp, fd, ssl, &tp__accept_ops))) {
        SSL_free(ssl);
        close(fd);
        return;
    }
    tp_describe(c, sa);
    c->plane = TP_PLANE_CONTROL;
    c->accepted = done;
    SSL_set_fd(ssl, fd);
    tp_conn_deadline(c, tp->handshake_ms);
    tp_conn_want(c, 1, 0);
}

int tp_stream_accept(tp_conn *c)
{
    Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
    a.ok = 1;
    a.reason = "";
    tp_send_frame(c, &a.base);
    return tp_flush(c);
}

void tp_stream_refuse(tp_conn *c, const char *why)
{
    Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
    a.ok = 0;
    a.reason = (char *)why;
    if (tp_send_frame(c, &a.base) == 0) tp_flush_try(c);
    tp_conn_refuse(c, why);
}
