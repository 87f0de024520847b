/* sealed.c — see sealed.h. */
#include "sealed.h"
#include "err.h"

#include <stdlib.h>

ProtobufCBinaryData *sealed_key_field(evlog_event *ev)
{
    switch (ev->body_case) {
    case INE__V1__EVENT__BODY_CA_CREATED: return ev->ca_created ? &ev->ca_created->sealed_key : NULL;
    case INE__V1__EVENT__BODY_CERTIFICATE_ISSUED: return ev->certificate_issued ? &ev->certificate_issued->sealed_key : NULL;
    case INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED:
        return ev->customer_certificate_uploaded ? &ev->customer_certificate_uploaded->sealed_key : NULL;
    default: return NULL;
    }
}

int sealed_purpose(char *buf, size_t len, uint64_t seq, const char *type)
{
    return seal_purpose_event(buf, len, seq, type, "sealed_key");
}

int sealed_load_key(evlog_t *log, const seal_key *k, uint64_t seq, pki_key **out)
{
    evlog_event *ev = NULL;
    ProtobufCBinaryData *f;
    char purpose[SEAL_PURPOSE_MAX];
    uint8_t *der = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    GUARD(evlog_read(log, seq, &ev));
    if (!(f = sealed_key_field(ev)) || !f->len) {
        rc = ine_err(INE_ENOTFOUND, "event %llu carries no sealed key", (unsigned long long)seq);
        goto out;
    }
    GUARD_GOTO(sealed_purpose(purpose, sizeof purpose, seq, evlog_type_name(ev)), out);
    if ((rc = seal_open(k, purpose, f->data, f->len, &der, &len)) < 0) {
        rc = ine_err(rc, "cannot unseal the key in event %llu: %s", (unsigned long long)seq, ine_err_msg());
        goto out;
    }
    rc = pki_key_from_der(der, len, out);
out:
    seal_free_secret(der, len);
    evlog_event_free(ev);
    return rc;
}

int sealed_seal_key(evlog_event *ev, const seal_key *k, const uint8_t *der, size_t len)
{
    char purpose[SEAL_PURPOSE_MAX];
    ProtobufCBinaryData *f = sealed_key_field(ev);
    if (!f) return ine_err(INE_EINVAL, "event type %s carries no key", evlog_type_name(ev));
    if (!ev->seq) return ine_err(INE_EINVAL, "a key is sealed into an event once its seq is known (in the prepare hook)");
    free(f->data);
    *f = (ProtobufCBinaryData){0};
    GUARD(sealed_purpose(purpose, sizeof purpose, ev->seq, evlog_type_name(ev)));
    return seal_seal(k, purpose, der, len, &f->data, &f->len);
}
