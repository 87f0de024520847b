/* alerts.h — the alerts the suite knows: their names, what each one watches, its defaults,
 * what its threshold means, the cluster's effective settings (defaults overlaid with the
 * AlertSettingsChanged events in the log), and the evaluation: which alerts a state asks for
 * at a given time. ine-alerting raises and clears alerts from that evaluation; ine-policy,
 * the REST API and inectl use the same names, rules and settings, so every door accepts and
 * shows the same thing.
 *
 * One alert instance per thing it concerns, keyed by its alert id:
 *
 *   name                                 alert id               severity  threshold (default)
 *   node_internal_certs_about_to_expire  <name>/<node>/<cp|dp>  warning   days left (45)
 *   cluster_certs_about_to_expire        <name>                 warning   days left (45)
 *   node_cert_rotation_overdue           <name>/<node>/<cp|dp>  warning   hours past the rotation period (1)
 *   node_cert_not_activated              <name>/<node>/<cp|dp>  warning   minutes after issuance (10)
 *   customer_cert_expiry_fallback        <name>/<cp|dp>         info      none
 *   consensus_storage_near_quota         <name>                 warning   percent of etcd's quota used (75)
 *   node_clock_skew                      <name>/<node>          warning   seconds off the cluster's clock (120)
 *
 * - expiry: a live node's current certificate (any source) or the cluster CA certificate
 *   has less than `threshold` days of validity left;
 * - rotation overdue: a self-signed certificate's age (from notBefore + PKI_BACKDATE_S)
 *   passed the cluster's rotation period (30 days) by `threshold` hours and nothing replaced
 *   it (the CA is down, or failing);
 * - not activated: `threshold` minutes after a certificate was issued, its node has not
 *   reported (CertificateActivated) serving exactly that certificate;
 * - customer fallback: a CustomerExpiryFallback replaced the plane's customer certificate
 *   with self-signed ones; a notice until a customer certificate is uploaded again.
 * - storage: etcd's database (where the cluster's log commits) uses `threshold` percent of
 *   its quota or more; past the quota every write fails. Not a function of the log: the
 *   caller measures it (alerts_env) and an alert without a measure is never asked for.
 * - clock skew: a node's clock is `threshold` seconds or more off the cluster's, measured on
 *   control-plane heartbeats (lib/skew.h, in alerts_env): from each observer's measurements,
 *   the cluster's clock is the median of the observer's own (offset 0) and its peers', and a
 *   node's skew its offset from that median. Certificates are backdated PKI_BACKDATE_S (600 s):
 *   past that a node refuses new certificates as not yet valid, so the default (120 s) warns
 *   well before anything breaks. Measurements older than a minute are not used.
 *
 * The certificate an alert concerns is its *subject*: the slot's current certificate, the CA,
 * or the customer certificate the fallback replaced. An alert is raised once per subject and
 * cleared when the condition ends, the subject is replaced, the node leaves or the alert is
 * disabled. */
#ifndef INE_ALERTS_H
#define INE_ALERTS_H

#include <stddef.h>
#include <stdint.h>

#include "proj.h"
#include "skew.h"

typedef enum {
    ALERTS_NODE_EXPIRY = 0,
    ALERTS_CLUSTER_EXPIRY,
    ALERTS_ROTATION_OVERDUE,
    ALERTS_NOT_ACTIVATED,
    ALERTS_CUSTOMER_FALLBACK,
    ALERTS_STORAGE,
    ALERTS_CLOCK_SKEW,
    ALERTS_COUNT
} alerts_kind;

typedef enum {
    ALERTS_UNIT_NONE = 0,
    ALERTS_UNIT_DAYS,
    ALERTS_UNIT_HOURS,
    ALERTS_UNIT_MINUTES,
    ALERTS_UNIT_PERCENT,
    ALERTS_UNIT_SECONDS
} alerts_unit;

#define ALERTS_THRESHOLD_LEN 24   /* a canonical threshold: decimal digits, NUL */
#define ALERTS_ID_LEN 96
#define ALERTS_FPR_LEN 72

typedef struct {
    alerts_kind kind;
    const char *name;
    int per_node;            /* shown under GET /v1/nodes/alerts; else cluster-wide */
    int severity;            /* Ine__V1__AlertSeverity */
    alerts_unit unit;        /* ALERTS_UNIT_NONE: the alert takes no threshold */
    long min_threshold, max_threshold, default_threshold;
    const char *summary;     /* one line: what it watches, for help texts */
} alerts_def;

/* The definitions, in the order of alerts_kind. */
const alerts_def *alerts_def_at(alerts_kind k);
/* By name; NULL for a name this version does not know. */
const alerts_def *alerts_def_find(const char *name);
/* "days", "hours", "minutes", "" */
const char *alerts_unit_name(alerts_unit u);
/* "cp" for the control plane, "dp" for the data plane (the alert id spelling). */
const char *alerts_plane_tag(int plane);

/* The effective setting of one alert. */
typedef struct {
    int enabled;
    long threshold;                      /* 0 for an alert without threshold */
    char threshold_str[ALERTS_THRESHOLD_LEN]; /* canonical text, "" without threshold */
    uint64_t seq;                        /* the event that last changed it, 0: all defaults */
} alerts_setting;

/* The default overlaid with what the log changed. A threshold in the log that does not parse
 * or lies out of range (the log is written by checked doors only, but it is the truth) is
 * ignored: the default stays. */
void alerts_setting_get(const proj_state *st, const alerts_def *d, alerts_setting *out);

/* An operator's threshold for d: a whole number (surrounding blanks refused) within the
 * alert's range. INE_EINVAL with a sentence naming the alert, the range and the unit. The
 * canonical text goes to canon (ALERTS_THRESHOLD_LEN bytes), may be NULL. */
int alerts_threshold_parse(const alerts_def *d, const char *s, long *out, char *canon);

/* Check one requested change: a known name, at least one of enabled/threshold, a threshold
 * only for alerts that take one and then a valid one. On success the threshold's canonical
 * text is in canon (untouched when no threshold was given). INE_EINVAL / INE_ENOTFOUND with
 * a sentence otherwise. */
int alerts_change_check(const char *name, int has_enabled, int has_threshold, const char *threshold, char *canon);

/* "<name>", "<name>/<node>/<cp|dp>" or "<name>/<cp|dp>" into buf (ALERTS_ID_LEN). */
void alerts_id(const alerts_def *d, uint32_t node, int plane, char *buf);

/* The fingerprint of the alert's subject in st now ("" when there is none). */
const char *alerts_subject(const proj_state *st, const alerts_def *d, uint32_t node, int plane);

/* One alert the state asks for. */
typedef struct {
    const alerts_def *def;
    char alert_id[ALERTS_ID_LEN];
    uint32_t node_uid;                   /* 0 for cluster-wide */
    int plane;                           /* 0 when it concerns no plane */
    char fingerprint[ALERTS_FPR_LEN];    /* its subject */
    char serial[80];                     /* of the subject, for log lines ("" if unknown) */
    char threshold[ALERTS_THRESHOLD_LEN];
    char change_value[24];               /* the measure now, in the threshold's unit */
    char description[400];
} alerts_want;

/* What the evaluation needs beyond the log: measured by the caller, 0 when not known. */
typedef struct {
    int64_t storage_used_bytes;   /* etcd's database size on the node's member */
    int64_t storage_quota_bytes;  /* its --quota-backend-bytes (etcd.conf quota_bytes) */
    const char *storage_where;    /* the member it was measured on, for the description */
    const skew_entry *clocks;     /* clock offsets measured on heartbeats (lib/skew.h) */
    size_t n_clocks;
} alerts_env;

/* Every enabled alert the state (and env, may be NULL) asks for at `now` (unix seconds),
 * sorted by alert id. *out is malloc'd (free() it; NULL when *n is 0). */
int alerts_evaluate(const proj_state *st, int64_t now, const alerts_env *env, alerts_want **out, size_t *n);

/* Why an active alert (of d, for node/plane, raised for subject fingerprint `raised_for`,
 * "" if unknown) is no longer asked for: "alert disabled", "node removed", "certificate
 * replaced", or what ended the condition. */
const char *alerts_clear_reason(const proj_state *st, const alerts_def *d, uint32_t node, int plane, const char *raised_for);

#endif
