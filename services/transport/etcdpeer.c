/* etcdpeer.c — etcd's peer traffic between machines under the internode TLS policy.
 *
 * A node whose address is not loopback runs its etcd member on 127.0.0.1:peer_local_port
 * (plain, loopback only) advertising https://<address>:peer_port (lib/etcdtls.h). This file
 * listens there: a TLS handshake with the control-plane context (the four suites, mutual TLS),
 * the peer identified as a live node of this cluster exactly as on 3342 (a removed node, a
 * data-plane certificate, another cluster's: refused), then its bytes are relayed to the local
 * member. It also keeps the member's own peer files (the certificate it dials its peers with)
 * the node's current control-plane certificate and the cluster's trust, through every
 * rotation. On loopback addresses (one machine) members talk plain HTTP and this stays off. */
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "commit.h"
#include "err.h"
#include "etcdtls.h"
#include "logline.h"
#include "transport.h"

void tp_etcd_open(tp_t *tp)
{
    commit_etcd_conf conf;
    const proj_node *self = tp_self(tp);
    int rc = commit_conf_load(tp->data_dir, &conf);
    if (rc == INE_ENOTFOUND || !self) return;
    if (rc < 0) {
        logline(LOGLINE_ERROR, 0, "etcd peers: %s; not terminating their TLS", ine_err_msg());
        return;
    }
    if (etcdtls_loopback(self->address)) return;
    tp->etcd_on = 1;
    tp->etcd_peer_port = conf.peer_port;
    tp->etcd_local_port = conf.peer_local_port;
}

/* Leaf then chain of a credential, PEM (malloc'd). */
static char *tp__cred_pem(const tp_cred *cr)
{
    BIO *b = BIO_new(BIO_s_mem());
    BUF_MEM *m = NULL;
    char *s = NULL;
    int ok = b && PEM_write_bio_X509(b, cr->leaf) == 1;
    for (int i = 0; ok && i < sk_X509_num(cr->chain); i++) ok = PEM_write_bio_X509(b, sk_X509_value(cr->chain, i)) == 1;
    if (ok && BIO_get_mem_ptr(b, &m) == 1 && (s = malloc(m->length + 1))) {
        memcpy(s, m->data, m->length);
        s[m->length] = 0;
    }
    BIO_free(b);
    return s;
}

static void tp__etcd_files(tp_t *tp)
{
    const tp_cred *cr = &tp->cur[TP_PLANE_CONTROL];
    char *chain, *roots;
    if (!cr->leaf || (!strcmp(tp->etcd_files_fp, tp->serving_fp[TP_PLANE_CONTROL]) && !strcmp(tp->etcd_files_trust, tp->trust_key))) return;
    chain = tp__cred_pem(cr);
    roots = proj_roots_pem(&tp->st);
    if (!chain || !roots || etcdtls_install(tp->data_dir, cr->serial, chain, cr->key, roots) < 0) {
        logline(LOGLINE_ERROR, tp->st.applied_seq, "etcd peers: cannot install certificate %s for the member: %s", cr->serial,
                chain && roots ? ine_err_msg() : "out of memory");
    } else {
        snprintf(tp->etcd_files_fp, sizeof tp->etcd_files_fp, "%s", tp->serving_fp[TP_PLANE_CONTROL]);
        snprintf(tp->etcd_files_trust, sizeof tp->etcd_files_trust, "%s", tp->trust_key);
        logline(LOGLINE_INFO, tp->st.applied_seq, "etcd peers: the member dials with control-plane certificate %s", cr->serial);
    }
    free(chain);
    free(roots);
}

/* A peer's member passed the identity checks: relay it to ours. */
static void tp__etcd_accepted(tp_conn *c)
{
    tp_conn *local = tp_dial_tcp(c->tp, "127.0.0.1", c->tp->etcd_local_port, tp_relay_upstream_done);
    if (!local) return tp_conn_refuse(c, "this node's etcd member is unreachable");
    tp_conn_deadline(c, 0);
    c->peer = local;
    local->peer = c;
    c->ops = &tp_wait_ops;
    c->tp->accepted++;
    tp_conn_want(c, 0, 0);
}

static void tp__on_etcd(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)l;
    (void)len;
    tp_accept_tls(arg, fd, sa, tp__etcd_accepted);
}

void tp_etcd_tick(tp_t *tp)
{
    const proj_node *self = tp_self(tp);
    if (!tp->etcd_on || !self || !tp->srv[TP_PLANE_CONTROL]) return;
    tp__etcd_files(tp);
    if (tp->etcd_listener || ine_clock_mono_ms() < tp->etcd_retry_ms) return;
    if (!(tp->etcd_listener = tp_listen(tp, self->address, tp->etcd_peer_port, tp__on_etcd, tp))) {
        tp->etcd_retry_ms = ine_clock_mono_ms() + 5000;
        logline(LOGLINE_ERROR, tp->st.applied_seq, "etcd peers: cannot listen on %s:%d (retrying every 5 s)", self->address,
                tp->etcd_peer_port);
        return;
    }
    logline(LOGLINE_INFO, tp->st.applied_seq, "etcd peers: TLS on %s:%d, relayed to the member on 127.0.0.1:%d", self->address,
            tp->etcd_peer_port, tp->etcd_local_port);
}

void tp_etcd_close(tp_t *tp)
{
    if (tp->etcd_listener) evconnlistener_free(tp->etcd_listener);
    tp->etcd_listener = NULL;
}
