/* ca.c — the CA service's state and plumbing: events built for protobuf-c to free, appends
 * that seal private keys inside the log transaction (the purpose binds each sealed key to its
 * event's seq, type and field), loading sealed keys back, and parallel key generation. */
#include "ca.h"
#include "cacreate.h"
#include "clock.h"
#include "err.h"
#include "logline.h"
#include "sealed.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

evlog_event *ca_event_new(int body_case, void *body, const char *actor)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    ine__v1__event__init(ev);
    /* The producer is the front door's to stamp (lib/commit.h); the actor is per event. */
    ev->actor = strdup(actor && *actor ? actor : "ine-ca");
    ev->body_case = body_case;
    ev->cluster_created = body; /* the body members share one union slot */
    if (!ev->actor) {
        free(ev);
        return NULL;
    }
    return ev;
}

void ca_items_free(ca_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (items[i].ev) protobuf_c_message_free_unpacked(&items[i].ev->base, NULL);
        pki_secret_free(items[i].key_der, items[i].key_der_len);
        items[i] = (ca_item){0};
    }
}

typedef struct {
    ca_t *ca;
    ca_item *items;
    size_t n;
} ca__seal_ctx;

/* Runs inside the append transaction, once the seq is known. */
static int ca__seal_hook(evlog_event *ev, void *ud)
{
    ca__seal_ctx *c = ud;
    for (size_t i = 0; i < c->n; i++)
        if (c->items[i].ev == ev && c->items[i].key_der)
            return sealed_seal_key(ev, c->ca->seal, c->items[i].key_der, c->items[i].key_der_len);
    return INE_OK;
}

int ca_catch_up(ca_t *ca)
{
    int rc = follow_catch_up(ca->follow);
    return rc < 0 ? rc : INE_OK;
}

static int ca__append(ca_t *ca, ca_item *items, size_t n, const char *request_id, int request, uint64_t *first_seq)
{
    evlog_event *evs[n ? n : 1];
    ca__seal_ctx sc = {ca, items, n};
    commit_opts o = {.request_id = request_id, .prepare = ca__seal_hook, .prepare_ud = &sc};
    /* What the acting CA decides is fenced on its holding and on the state it decided from;
     * a request (a rotation asked for, an upload) is recorded by whichever CA got it. */
    if (ca->elect && ca->acting && !request) {
        o.fence_key = elect_key(ca->elect);
        o.fence_rev = elect_fence(ca->elect);
        o.based_on = follow_applied(ca->follow); /* unknown types count: applied_seq skips them */
    }
    uint64_t first = 0;
    int rc;
    for (size_t i = 0; i < n; i++) evs[i] = items[i].ev;
    rc = commit_append(ca->commit, evs, n, &o, &first);
    if (rc == INE_EPERM && o.fence_key) {
        /* Our holding ended on etcd's side before our own clock said so: stand by now. */
        elect_fenced_off(ca->elect);
        ca->acting = 0;
        logline(LOGLINE_WARN, ca->st.applied_seq, "standing by: %s", ine_err_msg());
    }
    if (rc < 0) return rc;
    if (first_seq) *first_seq = first;
    GUARD(ca_catch_up(ca));
    return rc;
}

int ca_elect_tick(ca_t *ca)
{
    int holding = 0, changed = 0;
    if (!ca->elect) return 0;
    if (elect_tick(ca->elect, &holding, &changed) < 0) logline(LOGLINE_ERROR, 0, "election: %s", ine_err_msg());
    if (holding != ca->acting) changed = 1; /* a fenced-off append dropped it meanwhile */
    ca->acting = holding;
    if (!changed) return 0;
    logline(LOGLINE_INFO, ca->st.applied_seq, holding ? "acting as the cluster CA" : "standing by (the CA lease is elsewhere)");
    return holding;
}

int ca_append(ca_t *ca, ca_item *items, size_t n, const char *request_id, uint64_t *first_seq)
{
    return ca__append(ca, items, n, request_id, 0, first_seq);
}

int ca_append_request(ca_t *ca, ca_item *items, size_t n, const char *request_id, uint64_t *first_seq)
{
    return ca__append(ca, items, n, request_id, 1, first_seq);
}

int ca_load_key(ca_t *ca, uint64_t seq, pki_key **out) { return sealed_load_key(ca->log, ca->seal, seq, out); }

int ca_load_ca(ca_t *ca)
{
    evlog_event *ev = NULL;
    pki_cert *cert = NULL;
    pki_key *key = NULL;
    int rc = INE_OK;

    if (!ca->st.ca.present) return ine_err(INE_ENOTFOUND, "the cluster has no CA yet");
    if (ca->ca_cert && ca->ca_seq == ca->st.ca.seq) return INE_OK;
    GUARD(evlog_read(ca->log, ca->st.ca.seq, &ev));
    if (ev->body_case != INE__V1__EVENT__BODY_CA_CREATED || !ev->ca_created->ca) {
        rc = ine_err(INE_ECORRUPT, "event %llu is not a CA", (unsigned long long)ca->st.ca.seq);
        goto out;
    }
    GUARD_GOTO(pki_cert_from_pem(ev->ca_created->ca->cert_pem, &cert), out);
    GUARD_GOTO(ca_load_key(ca, ca->st.ca.seq, &key), out);
    pki_cert_free(ca->ca_cert);
    pki_key_free(ca->ca_key);
    ca->ca_cert = cert;
    ca->ca_key = key;
    ca->ca_seq = ca->st.ca.seq;
    cert = NULL;
    key = NULL;
out:
    pki_cert_free(cert);
    pki_key_free(key);
    evlog_event_free(ev);
    return rc;
}

Ine__V1__CertInfo *ca_certinfo(const pki_cert *c, const char *root_fp, const char *chain_pem)
{
    return cacreate_certinfo(c, root_fp, chain_pem);
}

void ca_digest_id(const char *s, char out[33])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, strlen(s), d);
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

/* --- parallel issuance: RSA key generation is the cost, and it parallelises perfectly --- */

typedef struct {
    ca_t *ca;
    const ca_target *t;
    size_t n;
    int64_t now;
    atomic_size_t next;
    pki_cert **certs;
    pki_key **keys;
    int rc;                  /* first failure */
    char why[256];
    pthread_mutex_t mu;
    atomic_int finished;     /* workers done */
} ca__issue_job;

static void *ca__issue_worker(void *arg)
{
    ca__issue_job *j = arg;
    for (size_t i; (i = atomic_fetch_add(&j->next, 1)) < j->n;) {
        pki_issue_params p = {
            .cluster_uid = j->ca->st.cluster.uid,
            .node_uid = j->t[i].node->uid,
            .address = j->t[i].node->address,
            .name = j->t[i].node->name,
            .plane = j->t[i].plane,
            .now = j->now,
            .validity_s = j->ca->st.cluster.cert_validity_s > 0 ? j->ca->st.cluster.cert_validity_s : CA_DEFAULT_VALIDITY_S,
        };
        int rc = pki_issue_node(&p, j->ca->ca_cert, j->ca->ca_key, &j->certs[i], &j->keys[i]);
        if (rc < 0) {
            pthread_mutex_lock(&j->mu);
            if (!j->rc) {
                j->rc = rc;
                snprintf(j->why, sizeof j->why, "node %u %s: %s", p.node_uid, proj_plane_name(p.plane), ine_err_msg());
            }
            pthread_mutex_unlock(&j->mu);
        }
    }
    atomic_fetch_add(&j->finished, 1);
    return NULL;
}

int ca_issue(ca_t *ca, const ca_target *t, size_t n, int reason, const char *rotation_id, const char *actor,
             ca_item *out)
{
    ca__issue_job j = {.ca = ca, .t = t, .n = n, .now = ine_clock_now()};
    pthread_t th[16];
    int workers = ca->workers < 1 ? 1 : ca->workers > 16 ? 16 : ca->workers, started = 0, rc = INE_OK;

    if (n == 0) return INE_OK;
    GUARD(ca_load_ca(ca));
    j.certs = calloc(n, sizeof *j.certs);
    j.keys = calloc(n, sizeof *j.keys);
    pthread_mutex_init(&j.mu, NULL);
    if (!j.certs || !j.keys) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    if ((size_t)workers > n) workers = (int)n;
    for (int i = 0; i < workers; i++)
        if (pthread_create(&th[started], NULL, ca__issue_worker, &j) == 0) started++;
    if (started == 0) ca__issue_worker(&j);
    /* Meanwhile this thread keeps the CA lease alive: a rotation of many nodes takes longer
     * than the lease's TTL, and one key can take seconds. */
    while (atomic_load(&j.finished) < started) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        (void)ca_elect_tick(ca);
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    if (j.rc) {
        rc = ine_err(j.rc, "cannot issue a certificate for %s", j.why);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        Ine__V1__CertificateIssued *ci = calloc(1, sizeof *ci);
        char fp[PKI_FPR_LEN + 1];
        if (!ci) goto oom;
        ine__v1__certificate_issued__init(ci);
        ci->node_uid = t[i].node->uid;
        ci->plane = t[i].plane;
        ci->source = INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED;
        ci->reason = reason;
        ci->rotation_id = strdup(rotation_id ? rotation_id : "");
        if (!(out[i].ev = ca_event_new(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, ci, actor))) {
            free(ci->rotation_id);
            free(ci);
            goto oom;
        }
        if (!ci->rotation_id || pki_cert_fingerprint(ca->ca_cert, fp) < 0 || !(ci->cert = ca_certinfo(j.certs[i], fp, NULL)))
            goto oom;
        GUARD_GOTO(pki_key_to_der(j.keys[i], &out[i].key_der, &out[i].key_der_len), out);
    }
    goto out;
oom:
    rc = ine_err(INE_ENOMEM, "out of memory");
out:
    if (rc < 0) ca_items_free(out, n);
    for (size_t i = 0; j.certs && i < n; i++) pki_cert_free(j.certs[i]);
    for (size_t i = 0; j.keys && i < n; i++) pki_key_free(j.keys[i]);
    free(j.certs);
    free(j.keys);
    pthread_mutex_destroy(&j.mu);
    return rc;
}
