/* control.c — the control role: a control-plane stream to every other node, each carrying
 * heartbeats that name the certificates the sender serves; the accepting side answers each
 * with its own. A peer silent for TP_HEARTBEAT_DEAD_MS is dropped (TCP alone would never
 * say), and its mux is not reused. What peers say they serve is recorded as their
 * activation (a node cut off from etcd is recorded by one that is not). */
#include "transport.h"
#include "clock.h"
#include "err.h"
#include "logline.h"
#include "skew.h"

#include <stdio.h>
#include <string.h>

/* -1 when writing it failed and c is closed (freed): the caller must not touch c again. */
static int tp__heartbeat_send(tp_conn *c)
{
    tp_t *tp = c->tp;
    Ine__V1__Heartbeat hb = INE__V1__HEARTBEAT__INIT;
    Ine__V1__ServedCertificate sc[2] = {INE__V1__SERVED_CERTIFICATE__INIT, INE__V1__SERVED_CERTIFICATE__INIT};
    Ine__V1__ServedCertificate *scp[2] = {&sc[0], &sc[1]};
    hb.node_uid = tp->node_uid;
    hb.time_us = ine_clock_now_us();
    TP_FOR_PLANES(p) {
        sc[p - 1].plane = (Ine__V1__Plane)p;
        sc[p - 1].fingerprint_sha256 = tp->serving_fp[p];
        sc[p - 1].serial_hex = tp->serving_serial[p];
    }
    hb.served = scp;
    hb.n_served = 2;
    if (tp_send_frame(c, &hb.base) != 0) return 0;
    {
        /* Ours (not an answer): the answer's time against this one's measures the peer's clock. */
        tp_peer *pr = tp_peer_find(tp, c->peer_node);
        if (pr && pr->conn == c) pr->hb_sent_us = hb.time_us;
    }
    return tp_flush(c);
}

/* NTP's estimate from one exchange: the peer stamped its answer at the midpoint of our send
 * and our receipt, give or take half the round trip. */
static void tp__clock_measure(tp_peer *pr, int64_t peer_us)
{
    int64_t now = ine_clock_now_us();
    if (!pr->hb_sent_us || now < pr->hb_sent_us) return;
    pr->offset_ms = (peer_us - (pr->hb_sent_us + now) / 2) / 1000;
    pr->offset_at = now / 1000000;
    pr->hb_sent_us = 0;
}

/* Heartbeat frames on a control stream; the accepting side answers each with its own. */
static void tp__control_read(tp_conn *c, int answer)
{
    const uint8_t *msg;
    int n;
    if (tp_read_frame_bytes(c) < 0) {
        tp_conn_close(c, "control stream ended");
        return;
    }
    while ((n = tp_frame_ready(c, &msg)) != 0) {
        Ine__V1__Heartbeat *hb = n > 0 ? ine__v1__heartbeat__unpack(NULL, (size_t)n, msg) : NULL;
        tp_peer *pr;
        if (!hb || hb->node_uid != c->peer_node) {
            if (hb) ine__v1__heartbeat__free_unpacked(hb, NULL);
            tp_conn_refuse(c, "malformed heartbeat on the control plane");
            return;
        }
        if ((pr = tp_peer_find(c->tp, hb->node_uid))) {
            pr->last_heartbeat_ms = ine_clock_mono_ms();
            if (!answer && pr->conn == c) tp__clock_measure(pr, hb->time_us);
            for (size_t i = 0; i < hb->n_served; i++) {
                tp_plane p = (tp_plane)hb->served[i]->plane;
                int known = p == TP_PLANE_CONTROL || p == TP_PLANE_DATA;
                if (known && strcmp(pr->served[p], hb->served[i]->fingerprint_sha256)) {
                    snprintf(pr->served[p], sizeof pr->served[p], "%s", hb->served[i]->fingerprint_sha256);
                    logline(LOGLINE_INFO, 0, "node %u serves %s-plane certificate %s", hb->node_uid, p == 2 ? "data" : "control",
                            hb->served[i]->serial_hex);
                }
                /* Also the peer's: one that cannot reach etcd now is recorded by whoever can (the
                 * request id makes the second record of one activation a no-op). */
                if (known) tp_record_activation(c->tp, hb->node_uid, p, hb->served[i]->fingerprint_sha256, hb->served[i]->serial_hex);
            }
        }
        ine__v1__heartbeat__free_unpacked(hb, NULL);
        tp_frame_consume(c);
        if (answer && tp__heartbeat_send(c) < 0) return;
    }
    tp_conn_want(c, 1, c->out.data != NULL);
}


static void tp__control_io(tp_conn *c, int readable, int writable, int answer)
{
    if (writable && tp_flush(c) < 0) return;
    if (readable) return tp__control_read(c, answer);
    tp_conn_want(c, 1, c->out.data != NULL);
}
static void tp__control_in_io(tp_conn *c, int r, int w) { tp__control_io(c, r, w, 1); }
static void tp__control_out_io(tp_conn *c, int r, int w) { tp__control_io(c, r, w, 0); }
static void tp__control_deadline(tp_conn *c) { tp_conn_close(c, "control stream timed out"); }

/* Our stream to a peer: its entry lets go of it; one that was up forgets what the peer
 * served, so the next heartbeat after a reconnect is logged again. */
static void tp__control_release(tp_conn *c, const char *why)
{
    tp_peer *pr = tp_peer_find(c->tp, c->peer_node);
    if (!pr || pr->conn != c) return;
    pr->conn = NULL;
    if (c->frames_only) {
        logline(LOGLINE_INFO, 0, "control-plane stream to node %u lost: %s", pr->node_uid, why ? why : "closed");
        memset(pr->served, 0, sizeof pr->served);
    }
}

static const tp_conn_ops tp__control_in_ops = {"control (accepted)", tp__control_in_io, tp__control_deadline, NULL, 1};
static const tp_conn_ops tp__control_out_ops = {"control", tp__control_out_io, tp__control_deadline, tp__control_release, 0};

void tp_control_accepted(tp_conn *c)
{
    c->ops = &tp__control_in_ops;
    c->frames_only = 1;
    tp_conn_deadline(c, 0);
    c->tp->accepted++;
    if (tp_stream_accept(c) < 0) return;
    tp_conn_want(c, 1, c->out.data != NULL);
}

static void tp__control_dialed(tp_conn *c, tp_dial_result r, const char *why)
{
    tp_peer *pr;
    if (r == TP_DIAL_UNREACHABLE) return tp_conn_close(c, why);
    if (r != TP_DIAL_OK) return tp_conn_refuse(c, why);
    c->ops = &tp__control_out_ops;
    c->frames_only = 1;
    if ((pr = tp_peer_find(c->tp, c->peer_node))) pr->last_heartbeat_ms = ine_clock_mono_ms();
    logline(LOGLINE_INFO, 0, "control-plane stream to node %u up", c->peer_node);
    if (tp__heartbeat_send(c) < 0) return;
    tp_conn_want(c, 1, c->out.data != NULL);
}


/* What this node measured of its peers' clocks, for ine-alerting (lib/skew.h). */
static void tp__clock_write(tp_t *tp)
{
    skew_entry e[64];
    size_t n = 0;
    int64_t now = ine_clock_now();
    for (size_t i = 0; i < tp->n_peers && n < sizeof e / sizeof e[0]; i++) {
        const tp_peer *p = &tp->peers[i];
        if (!p->offset_at || p->offset_at < now - 60) continue;
        e[n++] = (skew_entry){tp->node_uid, p->node_uid, p->offset_ms, p->offset_at};
    }
    if (skew_write(tp->run_dir, tp->node_uid, e, n) < 0) logline(LOGLINE_WARN, 0, "clock offsets: %s", ine_err_msg());
}

void tp_heartbeat_tick(tp_t *tp)
{
    int64_t now = ine_clock_mono_ms();
    tp__clock_write(tp);
    for (size_t i = 0; i < tp->n_peers; i++) {
        tp_peer *p = &tp->peers[i];
        if (p->conn) {
            /* A peer that stopped answering (hung, or the network between us dropped packets
             * without a reset) would keep a dead stream open for ever: TCP alone never says. */
            int up = p->conn->ops == &tp__control_out_ops;
            if (up && now - p->last_heartbeat_ms > TP_HEARTBEAT_DEAD_MS) {
                char why[96];
                snprintf(why, sizeof why, "no heartbeat for %lld ms", (long long)(now - p->last_heartbeat_ms));
                tp_conn_close(p->conn, why);
                tp_mux_peer_lost(tp, p->node_uid);
                continue;
            }
            if (up) (void)tp__heartbeat_send(p->conn);
            continue;
        }
        if (now < p->next_try_ms) continue;
        p->next_try_ms = now + TP_HEARTBEAT_MS;
        if ((p->conn = tp_dial_stream(tp, p->node_uid, TP_PLANE_CONTROL, 0, 0, tp__control_dialed))) {
            p->conn->remote = 0;
            p->conn->dial.release = tp__control_release;
        }
    }
}
