/* activate.c — recording CertificateActivated without stalling the event loop.
 *
 * Under etcd an append waits for a quorum, and on a node whose etcd peers talk through this
 * very process (etcdpeer.c) a loop blocked in that wait also stops the raft traffic the commit
 * needs: rotations then cost etcd its leader. So with etcd, appends go to one worker thread
 * that owns the commit handle (no_wait: it never reads the log, which stays the main
 * thread's); the event loop only queues. Without etcd the append is local and immediate. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "logline.h"
#include "transport.h"

#define TP_ACT_QUEUE 64

typedef struct {
    uint32_t node;
    int plane;
    char fp[65], serial[64];
} tp_act;

struct tp_activator {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tp_act q[TP_ACT_QUEUE];
    size_t head, n;
    tp_act busy;           /* the one being appended (node 0: none) */
    int stop;
    commit_t *commit;
};

static int tp__act_same(const tp_act *a, uint32_t node, int plane, const char *fp)
{
    return a->node == node && a->plane == plane && !strcmp(a->fp, fp);
}

static void tp__act_append(commit_t *commit, const tp_act *a)
{
    Ine__V1__CertificateActivated b = INE__V1__CERTIFICATE_ACTIVATED__INIT;
    evlog_event ev = INE__V1__EVENT__INIT;
    commit_opts o = {0};
    char reqid[128];
    uint64_t seq = 0;
    int rc;
    b.node_uid = a->node;
    b.plane = a->plane;
    b.fingerprint_sha256 = (char *)a->fp;
    b.serial_hex = (char *)a->serial;
    ev.body_case = INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED;
    ev.certificate_activated = &b;
    /* One id per certificate: the node's own record and its peers' (from heartbeats) are one. */
    snprintf(reqid, sizeof reqid, "activate/%u/%d/%s", a->node, a->plane, a->fp);
    o.request_id = reqid;
    o.no_wait = commit_backend(commit)[0] == 'e';
    evlog_event *evs[1] = {&ev};
    rc = commit_append(commit, evs, 1, &o, &seq);
    if (rc < 0) logline(LOGLINE_ERROR, 0, "cannot record the activation: %s", ine_err_msg());
    else if (rc == 0)
        logline(LOGLINE_INFO, seq, "recorded that node %u serves %s-plane certificate %s", a->node, proj_plane_name(a->plane), a->serial);
}

static void *tp__act_main(void *arg)
{
    tp_activator *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && !w->n) pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop) break;
        w->busy = w->q[w->head];
        w->head = (w->head + 1) % TP_ACT_QUEUE;
        w->n--;
        pthread_mutex_unlock(&w->mu);
        tp__act_append(w->commit, &w->busy);
        pthread_mutex_lock(&w->mu);
        w->busy.node = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int tp_activator_open(tp_t *tp)
{
    tp_activator *w;
    if (strcmp(commit_backend(tp->commit), "etcd")) return INE_OK;
    if (!(w = calloc(1, sizeof *w))) return ine_err(INE_ENOMEM, "out of memory");
    w->commit = tp->commit;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, tp__act_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return ine_err(INE_ENOMEM, "cannot start the activation thread");
    }
    tp->activator = w;
    return INE_OK;
}

void tp_activator_close(tp_t *tp)
{
    tp_activator *w = tp->activator;
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    tp->activator = NULL;
}

static void tp__activation_append(tp_t *tp, uint32_t node, int plane, const char *fp, const char *serial)
{
    tp_activator *w = tp->activator;
    tp_act a = {.node = node, .plane = plane};
    snprintf(a.fp, sizeof a.fp, "%s", fp);
    snprintf(a.serial, sizeof a.serial, "%s", serial);
    if (!w) return tp__act_append(tp->commit, &a);
    pthread_mutex_lock(&w->mu);
    /* Heartbeats repeat what a peer serves every 2 s until the record is in our log: one at a
     * time per certificate. */
    int dup = tp__act_same(&w->busy, node, plane, fp);
    for (size_t i = 0; !dup && i < w->n; i++) dup = tp__act_same(&w->q[(w->head + i) % TP_ACT_QUEUE], node, plane, fp);
    if (!dup && w->n < TP_ACT_QUEUE) {
        w->q[(w->head + w->n) % TP_ACT_QUEUE] = a;
        w->n++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

/* Record that a node now serves a certificate (once per fingerprint, across restarts): our
 * own, and what peers' heartbeats say they serve (the request id makes a repeat a no-op).
 * Only the node's current certificate is recorded: a lagging node serving an older one is not
 * "activated". */
void tp_record_activation(tp_t *tp, uint32_t node, tp_plane plane, const char *fp, const char *serial)
{
    const proj_activation *a = proj_activation_find(&tp->st, node, plane);
    const proj_cert *cur = proj_cert_find(&tp->st, node, plane);
    if (!fp || !*fp || !cur || !cur->cert.fingerprint || strcmp(cur->cert.fingerprint, fp)) return;
    if (a && a->fingerprint && !strcmp(a->fingerprint, fp)) return;
    tp__activation_append(tp, node, plane, fp, serial);
}
