/* cacreate.c — see cacreate.h. */
#include "cacreate.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Ine__V1__CertInfo *cacreate_certinfo(const pki_cert *c, const char *root_fp, const char *chain_pem)
{
    Ine__V1__CertInfo *ci = calloc(1, sizeof *ci);
    pki_info info;
    char *pem = NULL;
    if (!ci) return NULL;
    ine__v1__cert_info__init(ci);
    if (pki_cert_info(c, &info) < 0 || pki_cert_to_pem(c, &pem) < 0) {
        pki_info_clear(&info);
        free(ci);
        return NULL;
    }
    ci->cert_pem = pem;
    ci->chain_pem = strdup(chain_pem ? chain_pem : "");
    ci->serial_hex = strdup(info.serial_hex);
    ci->fingerprint_sha256 = strdup(info.fingerprint);
    ci->not_before = info.not_before;
    ci->not_after = info.not_after;
    ci->subject = strdup(info.subject);
    ci->issuer = strdup(info.issuer);
    ci->root_fingerprint_sha256 = strdup(root_fp ? root_fp : info.fingerprint);
    pki_info_clear(&info);
    if (!ci->chain_pem || !ci->serial_hex || !ci->fingerprint_sha256 || !ci->subject || !ci->issuer ||
        !ci->root_fingerprint_sha256) {
        protobuf_c_message_free_unpacked(&ci->base, NULL);
        return NULL;
    }
    return ci;
}

int cacreate_event(const pki_ca_params *p, const char *producer, const char *actor, evlog_event **ev_out,
                   uint8_t **key_der, size_t *key_len, char fingerprint[PKI_FPR_LEN + 1])
{
    pki_cert *cert = NULL;
    pki_key *key = NULL;
    evlog_event *ev = NULL;
    Ine__V1__CaCreated *cc;
    int rc = INE_OK;

    *ev_out = NULL;
    *key_der = NULL;
    *key_len = 0;
    GUARD(pki_ca_create(p, &cert, &key));
    if (!(ev = calloc(1, sizeof *ev)) || !(cc = calloc(1, sizeof *cc))) {
        free(ev);
        ev = NULL;
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    ine__v1__event__init(ev);
    ine__v1__ca_created__init(cc);
    ev->body_case = INE__V1__EVENT__BODY_CA_CREATED;
    ev->ca_created = cc;
    ev->producer = strdup(producer);
    ev->actor = strdup(actor && *actor ? actor : producer);
    cc->reason = strdup("initial");
    cc->ca = cacreate_certinfo(cert, NULL, NULL);
    if (!ev->producer || !ev->actor || !cc->reason || !cc->ca) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    if (fingerprint) snprintf(fingerprint, PKI_FPR_LEN + 1, "%s", cc->ca->fingerprint_sha256);
    GUARD_GOTO(pki_key_to_der(key, key_der, key_len), out);
    *ev_out = ev;
    ev = NULL;
out:
    if (ev) protobuf_c_message_free_unpacked(&ev->base, NULL);
    pki_cert_free(cert);
    pki_key_free(key);
    return rc;
}
