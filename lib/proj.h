/* proj.h — the projection: the one fold of the event log into the cluster's current state.
 *
 * Every service and the `ine-log state --at SEQ|TIME` inspector build their view of the
 * cluster here, so they all agree on what a sequence of events means. The state is a plain
 * struct with dynamic arrays, readable directly by services; only this module writes it.
 *
 * Secrets never enter the state: of a sealed blob (CA key, node key) only its length and the
 * seq of the event that carries it are kept, so a service that needs the key reads that event
 * from the log and unseals it there. The admin password hash is not kept at all.
 *
 * Leniency: the log is the truth. An event naming an unknown node or database never fails
 * and never crashes: updates to an unknown database are ignored, a certificate or activation
 * for a node the log never added is recorded as is (one for a removed node is dropped).
 * Strings of every listed entry, and of the cluster and CA once present, are never NULL
 * (possibly ""); the one exception is proj_root.pem when the log never carried that root's PEM.
 * A state belongs to one thread at a time; readers that share it must lock around it.
 *
 * Trust bundle (the roots every node must trust now, so the mesh never splits mid-change):
 *   current  = the root of every current certificate (CertInfo.root_fingerprint_sha256; a
 *              self-signed certificate without one chains to the CA of its time), plus the
 *              cluster CA root unless there are live nodes and every plane of every one holds
 *              a customer certificate that no CustomerExpiryFallback has named (so a renewed
 *              CA, a new node, or a fallback is trusted before the first certificate under
 *              it is served);
 *   retiring = a root that was in the bundle and is no longer current. It stays until every
 *              live node has activated (CertificateActivated), on every plane that has a
 *              current certificate, exactly that certificate's fingerprint; then every
 *              retiring root leaves the bundle at once. A removed node holds nothing back.
 * A CA renewal, a customer upload and a fallback to self-signed each move roots between these
 * states; trust_changed_seq records the last seq at which a root entered or changed state. */
#ifndef INE_PROJ_H
#define INE_PROJ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "evlog.h"

/* Planes are indexed by their ine.v1.Plane value: 1 control (CPINE), 2 data (DPINE). */
#define PROJ_PLANE_MIN 1
#define PROJ_PLANE_MAX 2
#define PROJ_PLANE_BIT(p) (1u << (p))
#define PROJ_PLANES_ALL (PROJ_PLANE_BIT(1) | PROJ_PLANE_BIT(2))

/* The public part of an ine.v1.CertInfo (all of it: no field there is secret). */
typedef struct {
    char *cert_pem;
    char *chain_pem;
    char *serial_hex;
    char *fingerprint;       /* lowercase hex SHA-256 of the DER leaf */
    int64_t not_before;      /* unix seconds */
    int64_t not_after;
    char *subject;
    char *issuer;
    char *root_fingerprint;  /* the trust anchor it chains to */
} proj_certinfo;

typedef struct {
    int present;
    char *uid;
    char *name;
    char *admin_username;    /* the password hash is deliberately not kept */
    int64_t created_us;
    uint64_t created_seq;
    int default_data_internode_encryption;
    int64_t rotation_period_s;
    int64_t cert_validity_s;
} proj_cluster;

typedef struct {
    int present;
    proj_certinfo cert;
    char *reason;            /* "initial", "renewal" */
    uint64_t seq;            /* the CaCreated whose sealed_key holds the CA key */
    size_t sealed_key_len;
    int64_t created_us;
} proj_ca;

typedef struct {
    uint32_t uid;
    char *address;
    char *name;
    char *join_token_id;     /* the join token it used; "" for nodes listed at creation */
    int removed;             /* removed nodes stay listed, flagged, for the record */
    uint64_t added_seq;
    uint64_t removed_seq;
} proj_node;

typedef struct {
    uint32_t uid;
    char *name;
    uint32_t port;
    uint32_t shard_node_uid;
    char *shard_address;
    int data_internode_encryption;
    int deleted;             /* deleted databases stay listed, flagged */
    uint64_t created_seq;
    uint64_t updated_seq;    /* last event that changed it (created, updated, toggled, deleted) */
} proj_db;

/* The certificate a node serves (or is about to serve) on one plane. */
typedef struct {
    uint32_t node_uid;
    int plane;               /* Ine__V1__Plane */
    int source;              /* Ine__V1__CertSource */
    int reason;              /* Ine__V1__IssueReason */
    proj_certinfo cert;
    char *root_fingerprint;  /* resolved: cert.root_fingerprint, or the CA's for self-signed */
    char *rotation_id;       /* the rotation it fulfils, "" if none */
    uint64_t issued_seq;     /* the CertificateIssued or CustomerCertificateUploaded carrying the key */
    int64_t issued_us;
    size_t sealed_key_len;
} proj_cert;

/* What a node's transport last said it serves on one plane. */
typedef struct {
    uint32_t node_uid;
    int plane;
    char *fingerprint;
    char *serial_hex;
    uint64_t seq;
    int64_t time_us;
} proj_activation;

typedef struct {
    char *rotation_id;
    unsigned planes;         /* PROJ_PLANE_BIT mask; an empty request means PROJ_PLANES_ALL */
    int reason;              /* Ine__V1__IssueReason */
    uint32_t *node_uids;     /* empty: every live node */
    size_t n_node_uids;
    uint64_t seq;
    int64_t time_us;
} proj_rotation;

typedef struct {
    char *alert_id;
    char *name;
    int severity;            /* Ine__V1__AlertSeverity */
    uint32_t node_uid;       /* 0: cluster-wide */
    int plane;
    char *description;
    char *threshold;
    char *change_value;
    int64_t raised_us;       /* first raise; a re-raise of an active alert updates the rest */
    uint64_t raised_seq;
    uint64_t updated_seq;
} proj_alert;

/* An alert setting as operators changed it (AlertSettingsChanged). Alerts never changed have
 * no entry and take lib/alerts.h's defaults; the fold does not judge names or thresholds
 * (the log is the truth), lib/alerts.h does when it reads them. */
typedef struct {
    char *name;
    int has_enabled;         /* 0: enabling was never changed */
    int enabled;
    char *threshold;         /* "" when never changed */
    uint64_t seq;            /* the last event that changed it */
} proj_alert_setting;

/* The last CustomerExpiryFallback written for a plane (present == 0: none yet). */
typedef struct {
    int present;
    char *customer_fingerprint;
    int64_t customer_not_after;
    char *rotation_id;
    uint64_t seq;
    int64_t time_us;
} proj_fallback;

/* A join token as the log knows it: never the token, only its SHA-256. A token is used once,
 * by the first NodeAdded naming its id (later ones do not change who used it). */
typedef struct {
    char *token_id;
    unsigned char sha256[32];
    int sha_ok;              /* the event carried a 32-byte hash (else it matches nothing) */
    int64_t expires_at;      /* unix seconds */
    uint64_t issued_seq;
    int64_t issued_us;
    uint32_t used_by;        /* node uid; 0: not used */
    uint64_t used_seq;
} proj_join_token;

typedef enum { PROJ_ROOT_CURRENT = 0, PROJ_ROOT_RETIRING = 1 } proj_root_state;
typedef enum { PROJ_ROOT_CLUSTER_CA = 0, PROJ_ROOT_CUSTOMER = 1, PROJ_ROOT_UNKNOWN = 2 } proj_root_kind;

typedef struct {
    char *fingerprint;
    char *pem;               /* NULL if the log never carried it */
    char *subject;           /* "" when unknown (customer roots arrive as PEM only) */
    proj_root_kind kind;
    proj_root_state state;   /* unused in roots_known */
    uint64_t since_seq;      /* seq at which it entered its state (first seen, in roots_known) */
} proj_root;

typedef struct {
    uint64_t applied_seq;    /* the last event folded in (unknown types included) */
    int64_t last_time_us;    /* time of the last applied known event, 0 if none */

    proj_cluster cluster;
    proj_ca ca;
    proj_fallback fallbacks[PROJ_PLANE_MAX + 1];   /* indexed by plane */

    proj_node *nodes;            size_t n_nodes, cap_nodes;            /* sorted by uid */
    proj_db *dbs;                size_t n_dbs, cap_dbs;                /* sorted by uid */
    proj_cert *certs;            size_t n_certs, cap_certs;            /* sorted by node, plane */
    proj_activation *acts;       size_t n_acts, cap_acts;              /* sorted by node, plane */
    proj_rotation *rotations;    size_t n_rotations, cap_rotations;    /* pending, in request order */
    proj_alert *alerts;          size_t n_alerts, cap_alerts;          /* active, sorted by id */
    proj_alert_setting *alert_settings; size_t n_alert_settings, cap_alert_settings; /* sorted by name */
    proj_root *bundle;           size_t n_bundle, cap_bundle;          /* the trust bundle */
    proj_root *roots_known;      size_t n_roots_known, cap_roots_known; /* every root seen: PEM source */
    proj_join_token *join_tokens; size_t n_join_tokens, cap_join_tokens; /* in issue order */
    uint64_t trust_changed_seq;
} proj_state;

void proj_init(proj_state *st);
/* Free everything and leave an initialised, empty state. */
void proj_free(proj_state *st);

/* Fold one event in. Events must come in seq order: a non-zero seq at or below applied_seq
 * is refused (INE_EINVAL) so a follower never applies one twice; seq 0 (an event built in
 * memory, not read from the log) counts as applied_seq + 1. An event whose body is not set
 * (a type from a newer version) returns INE_EUNKNOWN and changes nothing but applied_seq —
 * the caller logs "seq N: unknown event type, skipped" and goes on. On INE_ENOMEM the state
 * is still consistent but may lack part of that event. */
int proj_apply(proj_state *st, const Ine__V1__Event *ev);

/* Replay seqs 1..at_seq (0: to the end) into *out, which need not be initialised. Unknown
 * types are skipped with a WARN log line naming the seq. at_seq beyond the end is
 * INE_ENOTFOUND. On failure *out is left empty (proj_free is safe either way). */
int proj_build(evlog_t *log, uint64_t at_seq, proj_state *out);

/* The state as of wall-clock time at_us: events are applied in seq order while their time_us
 * is <= at_us, and the replay stops at the first later one (even if some event after it bears
 * an earlier time: seq order is the truth, times are only stamps). A time before the first
 * event gives the empty state. Same contract for *out as proj_build. */
int proj_build_at_time(evlog_t *log, int64_t at_us, proj_state *out);

/* Follow the log: apply every event after st->applied_seq (a service's catch-up step; a
 * service using follow.h instead calls proj_apply from its follow_fn). INE_ECHAIN if the state
 * is ahead of the log's end (it was built from another log). */
int proj_update(evlog_t *log, proj_state *st);

/* Lookups (NULL if absent). Removed nodes and deleted databases are found too: check the flag. */
const proj_node *proj_node_find(const proj_state *st, uint32_t uid);
const proj_db *proj_db_find(const proj_state *st, uint32_t uid);
/* The live (not deleted) database with this name. */
const proj_db *proj_db_find_name(const proj_state *st, const char *name);
const proj_cert *proj_cert_find(const proj_state *st, uint32_t node_uid, int plane);
const proj_activation *proj_activation_find(const proj_state *st, uint32_t node_uid, int plane);
const proj_rotation *proj_rotation_find(const proj_state *st, const char *rotation_id);
const proj_alert *proj_alert_find(const proj_state *st, const char *alert_id);
const proj_alert_setting *proj_alert_setting_find(const proj_state *st, const char *name);
const proj_root *proj_bundle_find(const proj_state *st, const char *fingerprint);
/* The roots a node trusts, as one PEM (malloc'd; NULL out of memory): the cluster CA first,
 * then every other root of the bundle. A joining node gets these bytes and ine-transport
 * installs the same for etcd's peers, so both agree to the byte (ine-etcd restarts the
 * member when they change). */
char *proj_roots_pem(const proj_state *st);
const proj_join_token *proj_join_token_find(const proj_state *st, const char *token_id);

/* 1 when every live node serves, on every plane with a current certificate, exactly that
 * certificate (the condition for retiring roots to leave the bundle). */
int proj_trust_converged(const proj_state *st);

/* Names used in the JSON and in logs: "control"/"data", "self_signed"/"customer",
 * "initial"/"scheduled"/..., "info"/"warning"/"error", "current"/"retiring"; "unspecified"
 * for 0 and out-of-range values. */
const char *proj_plane_name(int plane);
const char *proj_source_name(int source);
const char *proj_reason_name(int reason);
const char *proj_severity_name(int severity);
const char *proj_root_state_name(proj_root_state s);

/* The whole state as a JSON document with keys in a fixed order (dump it with
 * JSON_PRESERVE_ORDER). Times appear as RFC 3339 strings with "_unix" seconds beside them.
 * It never holds key material or the password hash: sealed blobs appear only as their length
 * ("sealed_key_bytes"). Certificate PEMs are left out to keep it readable (serial,
 * fingerprint, subject, issuer and validity identify them); roots carry fingerprint, kind
 * and subject. "alert_settings" appears only once an operator changed one, "join_tokens" only
 * once a token was issued (and a node's "join_token_id" only if it joined with one), so
 * documents of logs without them stay as they were. NULL on allocation failure. */
json_t *proj_to_json(const proj_state *st);

#endif
