/* sealed.h — private keys stored sealed in the event log: which field of an event carries
 * one, and loading it back (read the event, unseal with the purpose that binds it to that
 * seq, type and field, parse the PKCS#8 DER). Used by every service that serves or signs with
 * a key: the CA, the REST API, the transport. */
#ifndef INE_SEALED_H
#define INE_SEALED_H

#include <stdint.h>

#include "evlog.h"
#include "pki.h"
#include "seal.h"

/* The sealed_key field of an event body that carries a key (CaCreated, CertificateIssued,
 * CustomerCertificateUploaded); NULL for other types. */
ProtobufCBinaryData *sealed_key_field(evlog_event *ev);

/* The purpose string a key sealed into event `seq` of type `type` is bound to. */
int sealed_purpose(char *buf, size_t len, uint64_t seq, const char *type);

/* Seal a PKCS#8 DER key into the event's sealed_key field, bound to its seq and type: call it
 * from evlog_append's prepare hook (ev->seq must be set). Replaces whatever the field held. */
int sealed_seal_key(evlog_event *ev, const seal_key *k, const uint8_t *der, size_t len);

/* The private key carried by the event at `seq`. */
int sealed_load_key(evlog_t *log, const seal_key *k, uint64_t seq, pki_key **out);

#endif
