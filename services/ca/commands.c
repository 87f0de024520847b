/* commands.c — the CA's request/reply commands (ine.v1.CaRequest over ipc://<run>/ca.sock):
 *   rotate  record a RotationRequested (idempotent by request id), then complete it;
 *   upload  check every customer certificate first, then record them all in one append;
 *   status  every node/plane's certificate: source, serial, validity, fingerprint, reason.
 * Replies never carry key material: keys travel in requests only, over the local socket. */
#include "ca.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ine/v1/command.pb-c.h"

typedef Ine__V1__Reply ca_reply;

typedef struct {
    const char *rotation_id;
    uint64_t seq;
} ca__find_ctx;

static int ca__find_rotated(const evlog_record *rec, void *ud)
{
    ca__find_ctx *c = ud;
    if (rec->ev && rec->ev->body_case == INE__V1__EVENT__BODY_CERTIFICATES_ROTATED &&
        !strcmp(rec->ev->certificates_rotated->rotation_id, c->rotation_id)) {
        c->seq = rec->seq;
        return 1;
    }
    return 0;
}

static void ca__reply_err(ca_reply *r, Ine__V1__ErrorCode code, const char *why)
{
    free(r->description);
    r->code = code;
    r->description = strdup(why);
}

static Ine__V1__ErrorCode ca__code_of(int rc)
{
    switch (rc) {
    case INE_EINVAL: return INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
    case INE_ENOTFOUND: return INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND;
    case INE_EFULL: return INE__V1__ERROR_CODE__ERROR_CODE_LOG_FULL;
    case INE_EUNAVAIL: return INE__V1__ERROR_CODE__ERROR_CODE_NO_QUORUM;
    case INE_ESTALE: case INE_EAGAIN: return INE__V1__ERROR_CODE__ERROR_CODE_BUSY;
    case INE_EEXIST: return INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT;
    default: return INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL;
    }
}

static int ca__planes(size_t n, const Ine__V1__Plane *planes, unsigned *mask, ca_reply *r)
{
    *mask = 0;
    for (size_t i = 0; i < n; i++) {
        if (planes[i] != INE__V1__PLANE__PLANE_CONTROL && planes[i] != INE__V1__PLANE__PLANE_DATA) {
            ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                          "unknown plane: use ccs_internode_encryption (control) or data_internode_encryption (data)");
            return -1;
        }
        *mask |= PROJ_PLANE_BIT(planes[i]);
    }
    return 0;
}

/* A recorded rotation, done: by us when we act as the CA (deciding again when another writer's
 * event landed first), else by the CA that does, which we wait for. */
#define CA_STALE_RETRIES 20
#define CA_STANDBY_WAIT_MS 60000

static int ca__complete(ca_t *ca, const char *rid, uint64_t *done)
{
    int64_t end = ine_clock_mono_ms() + CA_STANDBY_WAIT_MS;
    int tries = 0, rc;
    for (;;) {
        GUARD(ca_catch_up(ca));
        if (!proj_rotation_find(&ca->st, rid)) break; /* done, by us or by the acting CA */
        /* Waiting keeps the lease too: when the holder is gone, this ine-ca may take over. */
        (void)ca_elect_tick(ca);
        if (ca->acting) {
            if (tries++ == CA_STALE_RETRIES)
                return ine_err(INE_ESTALE, "rotation %s is recorded; the log kept changing under it (%d tries): it completes in "
                               "the next round", rid, CA_STALE_RETRIES);
            rc = ca_complete_rotation(ca, rid, done);
            if (rc == INE_OK) return INE_OK;
            if (rc != INE_ESTALE && rc != INE_EPERM) return rc;
            continue;
        }
        if (ine_clock_mono_ms() >= end)
            return ine_err(INE_EAGAIN, "rotation %s is recorded; the acting CA (%s) has not completed it within %d s", rid,
                           ca->elect ? elect_holder(ca->elect) : "?", CA_STANDBY_WAIT_MS / 1000);
        if ((rc = follow_poll(ca->follow, 100)) < 0) return rc;
    }
    {
        ca__find_ctx fc = {rid, 0};
        GUARD(evlog_iterate(ca->log, 1, 0, 1, ca__find_rotated, &fc));
        *done = fc.seq;
    }
    return INE_OK;
}

static void ca__rotate(ca_t *ca, const Ine__V1__CaRequest *req, ca_reply *r)
{
    Ine__V1__RotationRequested *rr;
    ca_item it = {0};
    unsigned mask;
    char rid[64], dig[33], reqid[320];
    uint64_t seq = 0, done = 0;
    int rc;

    if (!req->request_id || !*req->request_id) {
        ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "a rotate request needs a request id");
        return;
    }
    if (ca__planes(req->rotate->n_planes, req->rotate->planes, &mask, r)) return;
    if (!ca->st.ca.present) {
        ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_BUSY, "the cluster CA does not exist yet; try again");
        return;
    }
    ca_digest_id(req->request_id, dig);
    snprintf(rid, sizeof rid, "manual-%s", dig);
    snprintf(reqid, sizeof reqid, "rotate/%s", req->request_id);
    if (!(rr = calloc(1, sizeof *rr))) goto oom;
    ine__v1__rotation_requested__init(rr);
    if (!(it.ev = ca_event_new(INE__V1__EVENT__BODY_ROTATION_REQUESTED, rr, req->actor))) {
        free(rr);
        goto oom;
    }
    rr->rotation_id = strdup(rid);
    rr->reason = INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL;
    rr->planes = calloc(2, sizeof *rr->planes);
    if (!rr->rotation_id || !rr->planes) goto oom;
    for (int p = PROJ_PLANE_MIN; p <= PROJ_PLANE_MAX; p++)
        if (mask & PROJ_PLANE_BIT(p)) rr->planes[rr->n_planes++] = p;
    /* Recorded first: a CA killed while generating keys finds the request on restart. */
    rc = ca_append_request(ca, &it, 1, reqid, &seq);
    if (rc < 0) goto fail;
    if (rc == 0) logline(LOGLINE_INFO, seq, "rotation %s requested by %s", rid, it.ev->actor);
    if (proj_rotation_find(&ca->st, rid)) {
        rc = ca__complete(ca, rid, &done);
        if (rc < 0) goto fail;
    } else {
        /* A retry of a rotation already done: answer with where it finished. */
        ca__find_ctx fc = {rid, seq};
        rc = evlog_iterate(ca->log, seq, 0, 1, ca__find_rotated, &fc);
        if (rc < 0) goto fail;
        done = fc.seq;
    }
    r->seq = done;
    free(r->description);
    r->description = strdup(rid);
    ca_items_free(&it, 1);
    return;
oom:
    rc = ine_err(INE_ENOMEM, "out of memory");
fail:
    ca__reply_err(r, ca__code_of(rc), ine_err_msg());
    ca_items_free(&it, 1);
}

static void ca__upload(ca_t *ca, const Ine__V1__CaRequest *req, ca_reply *r)
{
    const Ine__V1__Upload *up = req->upload;
    pki_upload *chk = NULL;
    ca_item *items = NULL;
    unsigned seen = 0;
    char why[512], reqid[320];
    uint64_t seq = 0;
    size_t n = up->n_certificates;
    int rc = INE_OK;

    if (n == 0) {
        ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "an upload needs at least one certificate");
        return;
    }
    if (!(chk = calloc(n, sizeof *chk)) || !(items = calloc(n, sizeof *items))) {
        ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL, "out of memory");
        goto out;
    }
    /* Every rule for every certificate, before anything is written. */
    for (size_t i = 0; i < n; i++) {
        const Ine__V1__UploadCertificate *uc = up->certificates[i];
        unsigned mask;
        char *key = NULL;
        if (uc->n_planes == 0) {
            ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "an uploaded certificate must name the plane(s) it serves");
            goto out;
        }
        if (ca__planes(uc->n_planes, uc->planes, &mask, r)) goto out;
        if (mask & seen) {
            ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "two uploaded certificates name the same plane");
            goto out;
        }
        seen |= mask;
        if (!(key = calloc(1, uc->key_pem.len + 1))) {
            ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL, "out of memory");
            goto out;
        }
        if (uc->key_pem.len) memcpy(key, uc->key_pem.data, uc->key_pem.len);
        rc = pki_upload_check(uc->cert_pem, key, ine_clock_now(), &chk[i], why, sizeof why);
        pki_secret_free(key, uc->key_pem.len + 1);
        if (rc < 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "%s certificate: %s",
                     mask == PROJ_PLANES_ALL ? "the" : (mask & PROJ_PLANE_BIT(1)) ? "the control-plane" : "the data-plane", why);
            ca__reply_err(r, (Ine__V1__ErrorCode)pki_upload_err_code(chk[i].error_code), msg);
            logline(LOGLINE_WARN, 0, "upload by %s refused: %s", req->actor, msg);
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const Ine__V1__UploadCertificate *uc = up->certificates[i];
        Ine__V1__CustomerCertificateUploaded *cu = calloc(1, sizeof *cu);
        if (!cu) goto oom;
        ine__v1__customer_certificate_uploaded__init(cu);
        if (!(items[i].ev = ca_event_new(INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED, cu, req->actor))) {
            free(cu);
            goto oom;
        }
        cu->planes = calloc(uc->n_planes, sizeof *cu->planes);
        cu->root_pem = strdup(chk[i].root_pem);
        cu->cert = ca_certinfo(chk[i].leaf, chk[i].root_fingerprint, chk[i].chain_pem);
        if (!cu->planes || !cu->root_pem || !cu->cert) goto oom;
        for (size_t k = 0; k < uc->n_planes; k++) cu->planes[cu->n_planes++] = uc->planes[k];
        GUARD_GOTO(pki_key_to_der(chk[i].key, &items[i].key_der, &items[i].key_der_len), fail);
    }
    snprintf(reqid, sizeof reqid, "upload/%s", req->request_id ? req->request_id : "");
    rc = ca_append_request(ca, items, n, req->request_id && *req->request_id ? reqid : NULL, &seq);
    if (rc < 0) goto fail;
    for (size_t i = 0; rc == 0 && i < n; i++)
        logline(LOGLINE_INFO, seq + i, "customer certificate %s uploaded by %s (valid until %s)", chk[i].info.serial_hex,
                req->actor, ine_clock_fmt(chk[i].info.not_after * INE_USEC_PER_SEC, why, sizeof why));
    r->seq = seq + n - 1;
    goto out;
oom:
    rc = ine_err(INE_ENOMEM, "out of memory");
fail:
    ca__reply_err(r, ca__code_of(rc), ine_err_msg());
out:
    for (size_t i = 0; chk && i < n; i++) pki_upload_free(&chk[i]);
    if (items) ca_items_free(items, n);
    free(items);
    free(chk);
}

static Ine__V1__CertInfo *ca__info_of(const proj_certinfo *c)
{
    Ine__V1__CertInfo *ci = calloc(1, sizeof *ci);
    if (!ci) return NULL;
    ine__v1__cert_info__init(ci);
    ci->cert_pem = strdup(c->cert_pem ? c->cert_pem : "");
    ci->chain_pem = strdup(c->chain_pem ? c->chain_pem : "");
    ci->serial_hex = strdup(c->serial_hex ? c->serial_hex : "");
    ci->fingerprint_sha256 = strdup(c->fingerprint ? c->fingerprint : "");
    ci->not_before = c->not_before;
    ci->not_after = c->not_after;
    ci->subject = strdup(c->subject ? c->subject : "");
    ci->issuer = strdup(c->issuer ? c->issuer : "");
    ci->root_fingerprint_sha256 = strdup(c->root_fingerprint ? c->root_fingerprint : "");
    return ci;
}

static void ca__status(ca_t *ca, ca_reply *r)
{
    Ine__V1__CaStatus *s = calloc(1, sizeof *s);
    if (!s) return ca__reply_err(r, INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL, "out of memory");
    ine__v1__ca_status__init(s);
    r->result_case = INE__V1__REPLY__RESULT_CA_STATUS;
    r->ca_status = s;
    r->seq = ca->st.applied_seq;
    if (ca->st.ca.present) s->ca = ca__info_of(&ca->st.ca.cert);
    s->certificates = calloc(ca->st.n_certs + 1, sizeof *s->certificates);
    for (size_t i = 0; s->certificates && i < ca->st.n_certs; i++) {
        const proj_cert *c = &ca->st.certs[i];
        Ine__V1__NodeCertStatus *ns = calloc(1, sizeof *ns);
        if (!ns) break;
        ine__v1__node_cert_status__init(ns);
        ns->node_uid = c->node_uid;
        ns->plane = c->plane;
        ns->source = c->source;
        ns->reason = c->reason;
        ns->issued_seq = c->issued_seq;
        ns->cert = ca__info_of(&c->cert);
        s->certificates[s->n_certificates++] = ns;
    }
}

/* One request in, one reply out; a request that does not decode still gets an answer. */
static int ca__handle(ca_t *ca, const uint8_t *buf, size_t len)
{
    Ine__V1__CaRequest *req = ine__v1__ca_request__unpack(NULL, len, buf);
    ca_reply r = INE__V1__REPLY__INIT;
    uint8_t *out;
    size_t olen;
    int rc;

    r.description = strdup("");
    if (!req) {
        ca__reply_err(&r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "the request is not an ine.v1.CaRequest");
    } else if (ca_catch_up(ca) < 0) {
        ca__reply_err(&r, INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL, ine_err_msg());
    } else {
        switch (req->op_case) {
        case INE__V1__CA_REQUEST__OP_ROTATE: ca__rotate(ca, req, &r); break;
        case INE__V1__CA_REQUEST__OP_UPLOAD: ca__upload(ca, req, &r); break;
        case INE__V1__CA_REQUEST__OP_STATUS: ca__status(ca, &r); break;
        default: ca__reply_err(&r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "unknown CA command");
        }
    }
    if (!r.description) r.description = strdup("");
    olen = ine__v1__reply__get_packed_size(&r);
    if ((out = malloc(olen ? olen : 1))) {
        ine__v1__reply__pack(&r, out);
        rc = rpc_server_send(ca->rpc, out, olen);
        free(out);
    } else {
        rc = ine_err(INE_ENOMEM, "out of memory");
    }
    /* The reply lives on the stack; its pieces are malloc'd. The request's key bytes are
     * wiped before release. */
    free(r.description);
    if (r.ca_status) protobuf_c_message_free_unpacked(&r.ca_status->base, NULL);
    if (req && req->op_case == INE__V1__CA_REQUEST__OP_UPLOAD)
        for (size_t i = 0; i < req->upload->n_certificates; i++)
            OPENSSL_cleanse(req->upload->certificates[i]->key_pem.data, req->upload->certificates[i]->key_pem.len);
    if (req) ine__v1__ca_request__free_unpacked(req, NULL);
    return rc;
}

int ca_serve(ca_t *ca)
{
    for (;;) {
        uint8_t *buf;
        size_t len;
        int rc = rpc_server_recv(ca->rpc, &buf, &len);
        if (rc <= 0) return rc;
        rc = ca__handle(ca, buf, len);
        OPENSSL_cleanse(buf, len);
        free(buf);
        GUARD(rc);
    }
}
