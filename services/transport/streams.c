/* streams.c — what happens on port 3342 and on the database endpoints:
 *   a connection accepted on 3342 (accept.c: handshake, identity) sends a StreamHeader (plane,
 *   database) that names its role: a control-plane stream (control.c), a connection carrying
 *   streams (mux.c), or one stream to a local shard (relayed, relay.c), admitted by the one
 *   rule of view.c;
 *   a database endpoint's client is carried to the shard's node in a mux stream (encryption
 *   on), in a TLS connection of its own (INE_TRANSPORT_MUX=0), or straight to the shard in
 *   plaintext (off, or a shard on this node). Every refusal is logged with its reason. */
#include "transport.h"
#include "logline.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void tp__header_io(tp_conn *c, int readable, int writable);
static void tp__header_deadline(tp_conn *c) { tp_conn_refuse(c, "no stream header in time"); }
static const tp_conn_ops tp__header_ops = {"accept: stream header", tp__header_io, tp__header_deadline, NULL, 1};

/* The shard of a stream accepted on its own connection: answer the stream, then relay. */
static void tp__shard_dialed(tp_conn *shard, tp_dial_result r, const char *why)
{
    tp_conn *in = shard->peer;
    if (r != TP_DIAL_OK) return tp_conn_refuse(shard, why);
    if (!in) return tp_conn_close(shard, "client gone");
    shard->tp->accepted++;
    /* A failed write closed both ends: nothing left to relay. */
    if (tp_stream_accept(in) < 0) return;
    tp_relay_start(in, shard);
}

/* --- database endpoints ---------------------------------------------------------------------- */

void tp_endpoint_accept(tp_t *tp, uint32_t db_uid, int fd, const struct sockaddr *sa)
{
    const proj_db *d = proj_db_find(&tp->st, db_uid);
    const proj_node *self = tp_self(tp);
    tp_conn *cl, *up;
    char host[256];
    int port;

    if (tp->n_conns + 2 > tp->max_conns) {
        logline(LOGLINE_WARN, 0, "refused client of db %u: connection limit (%d) reached", db_uid, tp->max_conns);
        close(fd);
        return;
    }
    if (!d || d->deleted || !self) {
        close(fd);
        return;
    }
    tp_nodelay(fd);
    if (!(cl = tp_conn_new(tp, fd, NULL, &tp_wait_ops))) {
        close(fd);
        return;
    }
    tp_describe(cl, sa);
    cl->db_uid = db_uid;
    cl->plane = TP_PLANE_DATA;
    if (d->shard_node_uid != self->uid && d->data_internode_encryption && !tp->mux_off) {
        /* Remote: crosses nodes, so a toggle of this database closes it. */
        cl->remote = 1;
        if (tp_mux_open_stream(tp, cl, d->shard_node_uid, db_uid) == 0) return;
        up = NULL;
    } else if (d->shard_node_uid != self->uid && d->data_internode_encryption) {
        up = tp_dial_stream(tp, d->shard_node_uid, TP_PLANE_DATA, db_uid, 0, tp_relay_upstream_done);
    } else {
        up = tp_split_hostport(d->shard_address, host, sizeof host, &port) == 0 ? tp_dial_tcp(tp, host, port, tp_relay_upstream_done)
                                                                               : NULL;
        if (up) up->db_uid = db_uid;
    }
    if (!up) {
        logline(LOGLINE_WARN, 0, "db %u: cannot reach its shard on node %u; client %s dropped", db_uid, d->shard_node_uid, cl->desc);
        tp_conn_close(cl, NULL);
        return;
    }
    /* Remote: crosses nodes, so a toggle of this database closes it. */
    cl->remote = up->remote = d->shard_node_uid != self->uid;
    cl->peer = up;
    up->peer = cl;
    tp_conn_want(cl, 0, 0);
}

/* --- accepting streams on 3342 ---------------------------------------------------------------- */

static void tp__handshaken(tp_conn *c)
{
    c->ops = &tp__header_ops;
    tp_conn_want(c, 1, 0);
    tp__header_io(c, 1, 0);
}

void tp_on_accept(tp_t *tp, int fd, const struct sockaddr *sa) { tp_accept_tls(tp, fd, sa, tp__handshaken); }

static void tp__header_io(tp_conn *c, int readable, int writable)
{
    tp_t *tp = c->tp;
    const uint8_t *msg;
    Ine__V1__StreamHeader *h;
    char host[256], why[160];
    int n, port = 0;
    tp_conn *shard;

    (void)readable;
    (void)writable;
    if (tp_read_frame_bytes(c) < 0) return tp_conn_refuse(c, "closed before sending a stream header");
    if ((n = tp_frame_ready(c, &msg)) == 0) return;
    if (n < 0 || !(h = ine__v1__stream_header__unpack(NULL, (size_t)n, msg))) return tp_conn_refuse(c, "malformed stream header");
    tp_frame_consume(c);
    /* A customer certificate names no node (one certificate serves them all): the node is
     * the one the header names, if it is a node of this cluster. A node certificate must
     * agree with the header. */
    if (!c->peer_node) {
        const proj_node *from = proj_node_find(&tp->st, h->from_node_uid);
        if (!from || from->removed) snprintf(why, sizeof why, "the stream header names node %u, not a node of this cluster", h->from_node_uid);
        else c->peer_node = h->from_node_uid;
    } else if (h->from_node_uid != c->peer_node) {
        snprintf(why, sizeof why, "the stream header names node %u but the certificate is node %u's", h->from_node_uid, c->peer_node);
    }
    if (!c->peer_node || h->from_node_uid != c->peer_node) {
        ine__v1__stream_header__free_unpacked(h, NULL);
        return tp_stream_refuse(c, why);
    }
    if ((tp_plane)h->plane != c->plane) {
        snprintf(why, sizeof why, "a %s-plane certificate cannot open a %s-plane stream", c->plane == TP_PLANE_DATA ? "data" : "control",
                 (tp_plane)h->plane == TP_PLANE_DATA ? "data" : "control");
        ine__v1__stream_header__free_unpacked(h, NULL);
        return tp_stream_refuse(c, why);
    }
    /* Past the identity checks: a client that resumes gets its ticket with our answer, even
     * if what it asks for next is refused (an unknown database is no reason to make its next
     * stream a full handshake); one refused for who it is gets none. */
    tp_ticket_offer(c, !h->no_ticket);
    if (h->mux) {
        int data = (tp_plane)h->plane == TP_PLANE_DATA;
        ine__v1__stream_header__free_unpacked(h, NULL);
        if (!data) return tp_stream_refuse(c, "only the data plane carries streams in one connection");
        tp_conn_deadline(c, 0);
        tp_mux_accepted(c);
        return;
    }
    if ((tp_plane)h->plane == TP_PLANE_CONTROL) {
        ine__v1__stream_header__free_unpacked(h, NULL);
        return tp_control_accepted(c);
    }
    c->db_uid = h->db_uid;
    {
        uint64_t log_seq = h->log_seq;
        ine__v1__stream_header__free_unpacked(h, NULL);
        if (tp_admit_data_stream(tp, c->db_uid, log_seq, host, sizeof host, &port, why, sizeof why) < 0)
            return tp_stream_refuse(c, why);
    }
    if (!(shard = tp_dial_tcp(tp, host, port, tp__shard_dialed))) return tp_stream_refuse(c, "the shard is unreachable");
    shard->db_uid = c->db_uid;
    c->remote = shard->remote = 1;
    c->peer = shard;
    shard->peer = c;
    c->ops = &tp_wait_ops;
    tp_conn_want(c, 0, 0);
}
