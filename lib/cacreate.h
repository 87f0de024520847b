/* cacreate.h — the cluster CA as an event: generate the CA (lib/pki) and build the CaCreated
 * that records it, its private key handed back as PKCS#8 DER to be sealed into the event at
 * append time (sealed_seal_key, in the prepare hook, once the seq is known). One code path
 * for `inectl cluster create` (which creates the CA with the cluster) and ine-ca (which
 * creates it only for a log that has none, such as one written by an older inectl). */
#ifndef INE_CACREATE_H
#define INE_CACREATE_H

#include <stddef.h>
#include <stdint.h>

#include "evlog.h"
#include "pki.h"

/* A CertInfo for a certificate, heap-allocated for protobuf_c_message_free_unpacked. root_fp
 * NULL: the certificate is its own root; chain_pem NULL: "". NULL when out of memory. */
Ine__V1__CertInfo *cacreate_certinfo(const pki_cert *c, const char *root_fp, const char *chain_pem);

/* A new cluster CA (p as pki_ca_create takes it) and its CaCreated event (reason "initial",
 * sealed_key still empty), allocated for protobuf_c_message_free_unpacked. *key_der receives
 * the CA key (free it with pki_secret_free(*key_der, *key_len)); *fingerprint (may be NULL)
 * the CA's lowercase hex SHA-256. */
int cacreate_event(const pki_ca_params *p, const char *producer, const char *actor, evlog_event **ev,
                   uint8_t **key_der, size_t *key_len, char fingerprint[PKI_FPR_LEN + 1]);

#endif
