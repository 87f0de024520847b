/* etcdtls.h — how a node's etcd member reaches its peers when nodes are on different machines.
 *
 * A member listens for peers on loopback only (plain HTTP, 127.0.0.1:peer_local_port) and
 * advertises https://<node address>:<peer_port>, where the node's ine-transport terminates TLS
 * with the internode policy (the four suites, mutual TLS with the cluster's control-plane
 * certificates, removed nodes refused) and relays to that loopback listener. The member dials
 * its peers' https URLs itself, with the node's control-plane certificate: the files below,
 * which `inectl node join` writes first (from the join's sealed secrets) and ine-transport
 * replaces on every rotation. etcd reads the certificate and key on each handshake, so the
 * directory holding them is swapped whole (a symlink renamed over the old one): no handshake
 * can see a new certificate with an old key. On one machine (node addresses on loopback, the
 * local demo) members talk plain HTTP on their node addresses and none of this is used. */
#ifndef INE_ETCDTLS_H
#define INE_ETCDTLS_H

#include <openssl/evp.h>
#include <stddef.h>

#define ETCDTLS_DIR "etcd/tls"           /* a symlink to etcd/tls.<tag>/ */
#define ETCDTLS_CERT "etcd/tls/peer.crt" /* leaf then chain */
#define ETCDTLS_KEY "etcd/tls/peer.key"  /* PKCS#8 PEM, 0600 */
#define ETCDTLS_CA "etcd/tls/peer-ca.crt"

/* 1 when address is a loopback address (127.0.0.0/8, ::1, "localhost"): members there talk
 * plain HTTP on it; 0 otherwise. */
int etcdtls_loopback(const char *address);

/* The member's advertised peer URL and the URL it listens on, for a node at `address`:
 * loopback: both http://address:peer_port; otherwise https://address:peer_port (the node's
 * ine-transport) and http://127.0.0.1:local_port. */
int etcdtls_peer_urls(const char *address, int peer_port, int local_port, char *advertise, size_t alen, char *listen,
                      size_t llen) __attribute__((warn_unused_result));

/* Install a certificate (leaf then chain, PEM), its key and the roots to trust (PEM) as the
 * member's peer files: written to a fresh etcd/tls.<tag>/ (0700; the key 0600), then
 * etcd/tls swapped to it; older directories are removed. */
int etcdtls_install(const char *data_dir, const char *tag, const char *cert_chain_pem, EVP_PKEY *key, const char *roots_pem)
    __attribute__((warn_unused_result));

/* --- the client port (etcdclient.c) ---
 * A member's client port is on loopback only, in mutual TLS with a CA of this node's own
 * (never the cluster's: any holder of a cluster certificate would otherwise have full access):
 * only processes that can read the data dir's client key — the node's ine processes — get in. */
#define ETCDTLS_CLIENT_DIR "etcd/client"  /* ca.crt, server.crt/.key (the member), client.crt/.key */

/* Make etcd/client/ unless it exists (all files or none; keys 0600; EC P-256, 10 years): the
 * CA, the member's certificate (127.0.0.1, ::1, localhost and the comma-separated extra_ips;
 * serverAuth and clientAuth, which etcd's gateway needs) and the client certificate. *created
 * says whether it made them now. */
int etcdtls_client_prepare(const char *data_dir, const char *extra_ips, int *created) __attribute__((warn_unused_result));

#endif
