/* repl.h — a follower node's replica of the master's event log.
 *
 * TEMPORARY STUB (join helper's branch): the lead owns this module and lands the real
 * repl_sync; this branch only needs the interface agreed for issue #8 and implements
 * repl_conf_load / repl_conf_save (replica.conf), which `inectl node join` writes. */
#ifndef INE_REPL_H
#define INE_REPL_H

#include <openssl/x509.h>
#include <stdint.h>

#define REPL_CONF_FILE "replica.conf"

typedef struct { uint32_t node_uid; char master_address[256]; int master_port; char cluster_uid[64]; } repl_conf;
int repl_conf_load(const char *data_dir, repl_conf *c);        /* INE_ENOTFOUND: not a replica */
int repl_conf_save(const char *data_dir, const repl_conf *c);
typedef struct { X509 *cert; STACK_OF(X509) *chain; EVP_PKEY *key; X509_STORE *trust; } repl_creds; /* borrowed */
/* Connect to the master's 3342 (control plane, SNI control.ine, mutual TLS with creds), ask for
 * everything after the local head, append what arrives (chain verified), return once the local
 * log reached the master's head as of the connect (or timeout_ms passed: INE_ETIMEDOUT).
 * creds == NULL: the node's control-plane certificate and key from the local log. */
int repl_sync(const char *data_dir, const repl_conf *c, const repl_creds *creds, int timeout_ms, uint64_t *head);

#endif
