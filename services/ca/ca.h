/* ca.h — the CA service's internals, shared by its files:
 *   main.c       arguments, start-up, the loop
 *   ca.c         state, loading the CA key, building events, sealed appends
 *   reconcile.c  what the log asks for: the CA, missing certificates, rotations, fallbacks
 *   commands.c   rotate / upload / status over ZeroMQ
 * The service replays the log into a projection, follows it, and acts; every action is one
 * all-or-nothing append, so a SIGKILL at any point leaves each node/plane with its old or its
 * new certificate, and the next start finishes what a recorded request asked for. */
#ifndef INE_CA_H
#define INE_CA_H

#include <stddef.h>
#include <stdint.h>

#include "datadir.h"
#include "commit.h"
#include "elect.h"
#include "etcd.h"
#include "evlog.h"
#include "follow.h"
#include "pki.h"
#include "proj.h"
#include "rpc.h"
#include "seal.h"

#define CA_FALLBACK_BEFORE_S PKI_FALLBACK_BEFORE_S  /* customer certificate replaced this long before expiry (pki.h) */
#define CA_DEFAULT_ROTATION_S (30 * 86400LL)
#define CA_DEFAULT_VALIDITY_S (90 * 86400LL)

typedef struct {
    char data_dir[DATADIR_MAX];
    char run_dir[DATADIR_MAX];
    evlog_t *log;
    seal_key *seal;
    void *zctx;
    follow_t *follow;
    follow_pub *pub;
    commit_t *commit;        /* the front door for every append */
    /* Under etcd every CA-eligible node runs ine-ca; the one holding the election key acts
     * (issues, rotates, falls back) and fences its appends on it. NULL: a single-node log,
     * where this ine-ca always acts. */
    etcd_t *etcd;
    elect_t *elect;
    int acting;
    int lease_ttl_s;
    rpc_server *rpc;
    proj_state st;
    /* The CA as loaded from its CaCreated event (ca_seq); reloaded when that changes. */
    pki_cert *ca_cert;
    pki_key *ca_key;
    uint64_t ca_seq;
    int ca_key_bits;
    int check_interval_ms;
    int workers;             /* key generation threads */
} ca_t;

/* One event to append, with the plaintext private key (PKCS#8 DER) to seal into it. */
typedef struct {
    evlog_event *ev;
    uint8_t *key_der;        /* NULL: nothing to seal */
    size_t key_der_len;
} ca_item;

/* --- ca.c --- */
evlog_event *ca_event_new(int body_case, void *body, const char *actor);
void ca_items_free(ca_item *items, size_t n);
/* Append the items as one durable transaction, sealing each key with its event's seq, type
 * and field as purpose; then hint followers and fold the result into ca->st. Returns 1 for a
 * request id already used (nothing written), 0 on success. */
int ca_append(ca_t *ca, ca_item *items, size_t n, const char *request_id, uint64_t *first_seq);
/* Keep the CA lease (or campaign for it) when due, and say so when that changes. 1 when this
 * ine-ca has just started acting (the caller reconciles at once). 0 without etcd. */
int ca_elect_tick(ca_t *ca);
/* The same for what an operator asked (a rotation request, an upload): recorded by any ine-ca,
 * acting or standing by, never fenced; the acting CA acts on it. */
int ca_append_request(ca_t *ca, ca_item *items, size_t n, const char *request_id, uint64_t *first_seq);
/* Catch up with the log (ca->st follows it). */
int ca_catch_up(ca_t *ca);
/* Make sure ca_cert/ca_key match the projection's CA. */
int ca_load_ca(ca_t *ca);
/* The private key carried (sealed) by the event at `seq`. */
int ca_load_key(ca_t *ca, uint64_t seq, pki_key **out);
/* A CertInfo for a certificate (strings malloc'd, as protobuf-c frees them). */
Ine__V1__CertInfo *ca_certinfo(const pki_cert *c, const char *root_fp, const char *chain_pem);
/* Issue certificates for (node, plane) targets, keys generated in parallel; each result an
 * item holding a CertificateIssued. */
typedef struct { const proj_node *node; int plane; } ca_target;
int ca_issue(ca_t *ca, const ca_target *t, size_t n, int reason, const char *rotation_id,
             const char *actor, ca_item *out);
/* Hex of the first 16 bytes of SHA-256(s): short stable ids for request ids. */
void ca_digest_id(const char *s, char out[33]);

/* --- reconcile.c --- */
/* Do whatever the log and the clock ask for now. */
int ca_reconcile(ca_t *ca);
/* Complete one pending rotation request. */
int ca_complete_rotation(ca_t *ca, const char *rotation_id, uint64_t *done_seq);

/* --- commands.c --- */
/* Answer every waiting request. */
int ca_serve(ca_t *ca);

#endif
