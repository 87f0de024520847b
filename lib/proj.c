/* proj.c — folds events into the cluster state (proj.h): the per-event rules, the trust
 * bundle, and replaying the log. The JSON rendering lives in proj_json.c.
 *
 * Arrays keyed by numbers are kept sorted so lookups stay logarithmic during a long replay;
 * the trust bundle is recomputed only by the events that can move it. */
#include "proj.h"
#include "err.h"
#include "logline.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- small helpers ----------------------------------------------------------------------- */

static char *proj__dup(const char *s) { return strdup(s ? s : ""); }

/* Replace *dst with a copy of src, leaving *dst untouched if the copy cannot be made. */
static int proj__set(char **dst, const char *src)
{
    char *c = proj__dup(src);
    if (!c) return ine_err(INE_ENOMEM, "out of memory in the projection");
    free(*dst);
    *dst = c;
    return INE_OK;
}

static int proj__grow(void **arr, size_t *cap, size_t need, size_t elsz)
{
    size_t ncap = *cap ? *cap : 8;
    void *p;
    if (need <= *cap) return INE_OK;
    while (ncap < need) ncap *= 2;
    p = realloc(*arr, ncap * elsz);
    if (!p) return ine_err(INE_ENOMEM, "out of memory growing the projection");
    *arr = p;
    *cap = ncap;
    return INE_OK;
}
#define PROJ__GROW(st, f) proj__grow((void **)&(st)->f, &(st)->cap_##f, (st)->n_##f + 1, sizeof *(st)->f)
/* Open a zeroed slot at pos (callers grew the array first). */
#define PROJ__OPEN(st, f, pos)                                                              \
    do {                                                                                    \
        memmove(&(st)->f[(pos) + 1], &(st)->f[pos], ((st)->n_##f - (pos)) * sizeof *(st)->f); \
        memset(&(st)->f[pos], 0, sizeof *(st)->f);                                          \
        (st)->n_##f++;                                                                      \
    } while (0)
#define PROJ__CLOSE(st, f, pos)                                                             \
    do {                                                                                    \
        (st)->n_##f--;                                                                      \
        memmove(&(st)->f[pos], &(st)->f[(pos) + 1], ((st)->n_##f - (pos)) * sizeof *(st)->f); \
    } while (0)

static int proj__plane_ok(int plane) { return plane >= PROJ_PLANE_MIN && plane <= PROJ_PLANE_MAX; }

static int proj__streq(const char *a, const char *b) { return a && b && strcasecmp(a, b) == 0; }

/* Binary search over an array sorted by a 64-bit key; returns the insertion position. */
typedef uint64_t (*proj__key_fn)(const void *el);
static size_t proj__bsearch(const void *base, size_t n, size_t elsz, proj__key_fn key, uint64_t k, int *found)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key((const char *)base + mid * elsz) < k) lo = mid + 1;
        else hi = mid;
    }
    *found = lo < n && key((const char *)base + lo * elsz) == k;
    return lo;
}

static uint64_t proj__node_key(const void *e) { return ((const proj_node *)e)->uid; }
static uint64_t proj__db_key(const void *e) { return ((const proj_db *)e)->uid; }
static uint64_t proj__slot(uint32_t node, int plane) { return ((uint64_t)node << 8) | (uint8_t)plane; }
static uint64_t proj__cert_key(const void *e) { return proj__slot(((const proj_cert *)e)->node_uid, ((const proj_cert *)e)->plane); }
static uint64_t proj__act_key(const void *e) { return proj__slot(((const proj_activation *)e)->node_uid, ((const proj_activation *)e)->plane); }

#define PROJ__POS(st, f, keyfn, k, found) proj__bsearch((st)->f, (st)->n_##f, sizeof *(st)->f, keyfn, (k), (found))

/* ---- element lifetimes ------------------------------------------------------------------- */

static void proj__ci_free(proj_certinfo *c)
{
    free(c->cert_pem); free(c->chain_pem); free(c->serial_hex); free(c->fingerprint);
    free(c->subject); free(c->issuer); free(c->root_fingerprint);
    memset(c, 0, sizeof *c);
}

/* A full copy of a CertInfo (NULL: the message left it unset, so all fields are empty). */
static int proj__ci_copy(proj_certinfo *dst, const Ine__V1__CertInfo *src)
{
    static const Ine__V1__CertInfo empty = INE__V1__CERT_INFO__INIT;
    if (!src) src = &empty;
    memset(dst, 0, sizeof *dst);
    dst->cert_pem = proj__dup(src->cert_pem);
    dst->chain_pem = proj__dup(src->chain_pem);
    dst->serial_hex = proj__dup(src->serial_hex);
    dst->fingerprint = proj__dup(src->fingerprint_sha256);
    dst->subject = proj__dup(src->subject);
    dst->issuer = proj__dup(src->issuer);
    dst->root_fingerprint = proj__dup(src->root_fingerprint_sha256);
    dst->not_before = src->not_before;
    dst->not_after = src->not_after;
    if (!dst->cert_pem || !dst->chain_pem || !dst->serial_hex || !dst->fingerprint || !dst->subject ||
        !dst->issuer || !dst->root_fingerprint) {
        proj__ci_free(dst);
        return ine_err(INE_ENOMEM, "out of memory copying a certificate");
    }
    return INE_OK;
}

static void proj__node_free(proj_node *n) { free(n->address); free(n->name); free(n->join_token_id); }
static void proj__db_free(proj_db *d) { free(d->name); free(d->shard_address); }
static void proj__cert_free(proj_cert *c) { proj__ci_free(&c->cert); free(c->root_fingerprint); free(c->rotation_id); }
static void proj__act_free(proj_activation *a) { free(a->fingerprint); free(a->serial_hex); }
static void proj__rot_free(proj_rotation *r) { free(r->rotation_id); free(r->node_uids); }
static void proj__root_free(proj_root *r) { free(r->fingerprint); free(r->pem); free(r->subject); }
static void proj__fallback_free(proj_fallback *f) { free(f->customer_fingerprint); free(f->rotation_id); memset(f, 0, sizeof *f); }

static void proj__alert_free(proj_alert *a)
{
    free(a->alert_id); free(a->name); free(a->description); free(a->threshold); free(a->change_value);
}

static void proj__setting_free(proj_alert_setting *s) { free(s->name); free(s->threshold); }

void proj_init(proj_state *st) { memset(st, 0, sizeof *st); }

void proj_free(proj_state *st)
{
    if (!st) return;
    free(st->cluster.uid); free(st->cluster.name); free(st->cluster.admin_username);
    proj__ci_free(&st->ca.cert);
    free(st->ca.reason);
    for (int p = 0; p <= PROJ_PLANE_MAX; p++) proj__fallback_free(&st->fallbacks[p]);
    for (size_t i = 0; i < st->n_nodes; i++) proj__node_free(&st->nodes[i]);
    for (size_t i = 0; i < st->n_dbs; i++) proj__db_free(&st->dbs[i]);
    for (size_t i = 0; i < st->n_certs; i++) proj__cert_free(&st->certs[i]);
    for (size_t i = 0; i < st->n_acts; i++) proj__act_free(&st->acts[i]);
    for (size_t i = 0; i < st->n_rotations; i++) proj__rot_free(&st->rotations[i]);
    for (size_t i = 0; i < st->n_alerts; i++) proj__alert_free(&st->alerts[i]);
    for (size_t i = 0; i < st->n_alert_settings; i++) proj__setting_free(&st->alert_settings[i]);
    for (size_t i = 0; i < st->n_bundle; i++) proj__root_free(&st->bundle[i]);
    for (size_t i = 0; i < st->n_roots_known; i++) proj__root_free(&st->roots_known[i]);
    for (size_t i = 0; i < st->n_join_tokens; i++) free(st->join_tokens[i].token_id);
    free(st->join_tokens);
    free(st->nodes); free(st->dbs); free(st->certs); free(st->acts); free(st->rotations);
    free(st->alerts); free(st->alert_settings); free(st->bundle); free(st->roots_known);
    proj_init(st);
}

/* ---- lookups ----------------------------------------------------------------------------- */

const proj_node *proj_node_find(const proj_state *st, uint32_t uid)
{
    int found;
    size_t i = PROJ__POS(st, nodes, proj__node_key, uid, &found);
    return found ? &st->nodes[i] : NULL;
}

const proj_db *proj_db_find(const proj_state *st, uint32_t uid)
{
    int found;
    size_t i = PROJ__POS(st, dbs, proj__db_key, uid, &found);
    return found ? &st->dbs[i] : NULL;
}

const proj_db *proj_db_find_name(const proj_state *st, const char *name)
{
    for (size_t i = 0; name && i < st->n_dbs; i++)
        if (!st->dbs[i].deleted && strcmp(st->dbs[i].name, name) == 0) return &st->dbs[i];
    return NULL;
}

const proj_cert *proj_cert_find(const proj_state *st, uint32_t node_uid, int plane)
{
    int found;
    size_t i = PROJ__POS(st, certs, proj__cert_key, proj__slot(node_uid, plane), &found);
    return found && proj__plane_ok(plane) ? &st->certs[i] : NULL;
}

const proj_activation *proj_activation_find(const proj_state *st, uint32_t node_uid, int plane)
{
    int found;
    size_t i = PROJ__POS(st, acts, proj__act_key, proj__slot(node_uid, plane), &found);
    return found && proj__plane_ok(plane) ? &st->acts[i] : NULL;
}

const proj_rotation *proj_rotation_find(const proj_state *st, const char *rotation_id)
{
    for (size_t i = 0; rotation_id && i < st->n_rotations; i++)
        if (strcmp(st->rotations[i].rotation_id, rotation_id) == 0) return &st->rotations[i];
    return NULL;
}

const proj_join_token *proj_join_token_find(const proj_state *st, const char *token_id)
{
    for (size_t i = 0; token_id && *token_id && i < st->n_join_tokens; i++)
        if (strcmp(st->join_tokens[i].token_id, token_id) == 0) return &st->join_tokens[i];
    return NULL;
}

/* Alerts are sorted by id; returns the insertion position. */
static size_t proj__alert_pos(const proj_state *st, const char *id, int *found)
{
    size_t lo = 0, hi = st->n_alerts;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(st->alerts[mid].alert_id, id) < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = lo < st->n_alerts && strcmp(st->alerts[lo].alert_id, id) == 0;
    return lo;
}

const proj_alert *proj_alert_find(const proj_state *st, const char *alert_id)
{
    int found;
    size_t i;
    if (!alert_id) return NULL;
    i = proj__alert_pos(st, alert_id, &found);
    return found ? &st->alerts[i] : NULL;
}

/* Settings are sorted by name; returns the insertion position. */
static size_t proj__setting_pos(const proj_state *st, const char *name, int *found)
{
    size_t lo = 0, hi = st->n_alert_settings;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(st->alert_settings[mid].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = lo < st->n_alert_settings && strcmp(st->alert_settings[lo].name, name) == 0;
    return lo;
}

const proj_alert_setting *proj_alert_setting_find(const proj_state *st, const char *name)
{
    int found;
    size_t i;
    if (!name) return NULL;
    i = proj__setting_pos(st, name, &found);
    return found ? &st->alert_settings[i] : NULL;
}

char *proj_roots_pem(const proj_state *st)
{
    const char *ca = st->ca.cert.cert_pem ? st->ca.cert.cert_pem : "";
    size_t n = strlen(ca) + 1;
    char *s;
    for (size_t i = 0; i < st->n_bundle; i++) n += st->bundle[i].pem ? strlen(st->bundle[i].pem) : 0;
    if (!(s = calloc(1, n))) return NULL;
    strcat(s, ca);
    for (size_t i = 0; i < st->n_bundle; i++)
        if (st->bundle[i].pem && (!st->ca.cert.fingerprint || strcmp(st->bundle[i].fingerprint, st->ca.cert.fingerprint)))
            strcat(s, st->bundle[i].pem);
    return s;
}

const proj_root *proj_bundle_find(const proj_state *st, const char *fingerprint)
{
    for (size_t i = 0; i < st->n_bundle; i++)
        if (proj__streq(st->bundle[i].fingerprint, fingerprint)) return &st->bundle[i];
    return NULL;
}

static const proj_root *proj__known_find(const proj_state *st, const char *fp)
{
    for (size_t i = 0; i < st->n_roots_known; i++)
        if (proj__streq(st->roots_known[i].fingerprint, fp)) return &st->roots_known[i];
    return NULL;
}

/* ---- trust bundle ------------------------------------------------------------------------ */

/* Record where a root's PEM came from; the first PEM the log carried for it wins. */
static int proj__known_add(proj_state *st, const char *fp, const char *pem, const char *subject,
                           proj_root_kind kind, uint64_t seq)
{
    proj_root *r;
    if (!fp || !*fp) return INE_OK;
    if ((r = (proj_root *)proj__known_find(st, fp))) {
        if (!r->pem && pem && *pem && !(r->pem = strdup(pem)))
            return ine_err(INE_ENOMEM, "out of memory recording a root");
        return INE_OK;
    }
    GUARD(PROJ__GROW(st, roots_known));
    r = &st->roots_known[st->n_roots_known];
    memset(r, 0, sizeof *r);
    r->fingerprint = proj__dup(fp);
    r->pem = pem && *pem ? strdup(pem) : NULL;
    r->subject = proj__dup(subject);
    r->kind = kind;
    r->since_seq = seq;
    if (!r->fingerprint || !r->subject || (pem && *pem && !r->pem)) {
        proj__root_free(r);
        return ine_err(INE_ENOMEM, "out of memory recording a root");
    }
    st->n_roots_known++;
    return INE_OK;
}

/* Does the cluster CA root have to be trusted, although maybe no certificate chains to it?
 * Yes, unless the customer's certificates fill every plane of every live node and none of
 * them is being replaced by a fallback. */
static int proj__ca_root_needed(const proj_state *st)
{
    size_t live = 0;
    for (size_t i = 0; i < st->n_nodes; i++) {
        if (st->nodes[i].removed) continue;
        live++;
        for (int p = PROJ_PLANE_MIN; p <= PROJ_PLANE_MAX; p++) {
            const proj_cert *c = proj_cert_find(st, st->nodes[i].uid, p);
            const proj_fallback *f = &st->fallbacks[p];
            if (!c || c->source != INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER) return 1;
            if (f->present && proj__streq(f->customer_fingerprint, c->cert.fingerprint)) return 1;
        }
    }
    return live == 0;
}

static int proj__root_in_use(const proj_state *st, const char *fp, int ca_needed)
{
    if (ca_needed && st->ca.present && proj__streq(st->ca.cert.fingerprint, fp)) return 1;
    for (size_t i = 0; i < st->n_certs; i++)
        if (proj__streq(st->certs[i].root_fingerprint, fp)) return 1;
    return 0;
}

int proj_trust_converged(const proj_state *st)
{
    for (size_t i = 0; i < st->n_certs; i++) {
        const proj_cert *c = &st->certs[i];
        const proj_activation *a = proj_activation_find(st, c->node_uid, c->plane);
        if (!a || !proj__streq(a->fingerprint, c->cert.fingerprint)) return 0;
    }
    return 1;
}

/* Put a root that is in use into the bundle as current (a change of trust if it was not). */
static int proj__bundle_need(proj_state *st, const char *fp, uint64_t seq)
{
    const proj_root *k;
    proj_root *r;
    if (!fp || !*fp || proj_bundle_find(st, fp)) return INE_OK;
    k = proj__known_find(st, fp);
    GUARD(PROJ__GROW(st, bundle));
    r = &st->bundle[st->n_bundle];
    memset(r, 0, sizeof *r);
    r->fingerprint = proj__dup(fp);
    r->subject = proj__dup(k ? k->subject : "");
    r->pem = k && k->pem ? strdup(k->pem) : NULL;
    r->kind = k ? k->kind : PROJ_ROOT_UNKNOWN;
    r->state = PROJ_ROOT_CURRENT;
    r->since_seq = seq;
    if (!r->fingerprint || !r->subject || (k && k->pem && !r->pem)) {
        proj__root_free(r);
        return ine_err(INE_ENOMEM, "out of memory adding a root to the trust bundle");
    }
    st->n_bundle++;
    st->trust_changed_seq = seq;
    return INE_OK;
}

static int proj__trust_update(proj_state *st, uint64_t seq)
{
    int ca_needed = proj__ca_root_needed(st), retiring = 0;

    for (size_t i = 0; i < st->n_bundle; i++) {
        proj_root *r = &st->bundle[i];
        const proj_root *k = r->pem ? NULL : proj__known_find(st, r->fingerprint);
        if (k && k->pem) {
            /* Trusted by fingerprint before the log carried its PEM: fill it in now. */
            if (!(r->pem = strdup(k->pem))) return ine_err(INE_ENOMEM, "out of memory filling in a root");
            GUARD(proj__set(&r->subject, k->subject));
            r->kind = k->kind;
        }
        proj_root_state want = proj__root_in_use(st, r->fingerprint, ca_needed) ? PROJ_ROOT_CURRENT : PROJ_ROOT_RETIRING;
        if (want != r->state) {
            r->state = want;
            r->since_seq = seq;
            st->trust_changed_seq = seq;
        }
        retiring |= want == PROJ_ROOT_RETIRING;
    }
    if (ca_needed && st->ca.present) GUARD(proj__bundle_need(st, st->ca.cert.fingerprint, seq));
    for (size_t i = 0; i < st->n_certs; i++) GUARD(proj__bundle_need(st, st->certs[i].root_fingerprint, seq));

    /* Every live node serves its current certificate, none of which chains to a retiring
     * root: nobody can present one any more, so they all go together. */
    if (retiring && proj_trust_converged(st)) {
        for (size_t i = st->n_bundle; i-- > 0;) {
            if (st->bundle[i].state != PROJ_ROOT_RETIRING) continue;
            proj__root_free(&st->bundle[i]);
            PROJ__CLOSE(st, bundle, i);
        }
    }
    return INE_OK;
}

/* ---- per-event rules: cluster, CA, nodes ------------------------------------------------- */

static int proj__cluster_created(proj_state *st, const Ine__V1__ClusterCreated *b, uint64_t seq, int64_t t)
{
    proj_cluster *c = &st->cluster;
    GUARD(proj__set(&c->uid, b->cluster_uid));
    GUARD(proj__set(&c->name, b->name));
    GUARD(proj__set(&c->admin_username, b->admin_username));
    c->present = 1;
    c->created_us = t;
    c->created_seq = seq;
    c->default_data_internode_encryption = !!b->default_data_internode_encryption;
    c->rotation_period_s = b->rotation_period_seconds;
    c->cert_validity_s = b->cert_validity_seconds;
    return INE_OK;
}

static int proj__policy_changed(proj_state *st, const Ine__V1__ClusterPolicyChanged *b)
{
    proj_cluster *c = &st->cluster;
    if (b->default_encryption_opt_case == INE__V1__CLUSTER_POLICY_CHANGED__DEFAULT_ENCRYPTION_OPT_DEFAULT_DATA_INTERNODE_ENCRYPTION)
        c->default_data_internode_encryption = !!b->default_data_internode_encryption;
    if (b->rotation_period_opt_case == INE__V1__CLUSTER_POLICY_CHANGED__ROTATION_PERIOD_OPT_ROTATION_PERIOD_SECONDS)
        c->rotation_period_s = b->rotation_period_seconds;
    if (b->cert_validity_opt_case == INE__V1__CLUSTER_POLICY_CHANGED__CERT_VALIDITY_OPT_CERT_VALIDITY_SECONDS)
        c->cert_validity_s = b->cert_validity_seconds;
    return INE_OK;
}

static int proj__ca_created(proj_state *st, const Ine__V1__CaCreated *b, uint64_t seq, int64_t t)
{
    proj_certinfo ci;
    int rc;
    GUARD(proj__ci_copy(&ci, b->ca));
    GUARD_GOTO(proj__known_add(st, ci.fingerprint, ci.cert_pem, ci.subject, PROJ_ROOT_CLUSTER_CA, seq), fail);
    GUARD_GOTO(proj__set(&st->ca.reason, b->reason), fail);
    proj__ci_free(&st->ca.cert);
    st->ca.cert = ci;
    st->ca.present = 1;
    st->ca.seq = seq;
    st->ca.sealed_key_len = b->sealed_key.len;
    st->ca.created_us = t;
    return proj__trust_update(st, seq);
fail:
    proj__ci_free(&ci);
    return rc;
}

static int proj__token_issued(proj_state *st, const Ine__V1__JoinTokenIssued *b, uint64_t seq, int64_t t)
{
    proj_join_token *k;
    char *id;
    /* An id issued twice keeps its first record: a token is never re-armed. */
    if (proj_join_token_find(st, b->token_id)) return INE_OK;
    if (!(id = proj__dup(b->token_id)) || PROJ__GROW(st, join_tokens) < 0) {
        free(id);
        return ine_err(INE_ENOMEM, "out of memory recording a join token");
    }
    k = &st->join_tokens[st->n_join_tokens++];
    *k = (proj_join_token){.token_id = id, .expires_at = b->expires_at, .issued_seq = seq, .issued_us = t};
    if (b->token_sha256.len == sizeof k->sha256) {
        memcpy(k->sha256, b->token_sha256.data, sizeof k->sha256);
        k->sha_ok = 1;
    }
    return INE_OK;
}

static int proj__node_added(proj_state *st, const Ine__V1__NodeAdded *b, uint64_t seq)
{
    int found;
    size_t i = PROJ__POS(st, nodes, proj__node_key, b->node_uid, &found);
    char *addr = proj__dup(b->address), *name = proj__dup(b->name), *tok = proj__dup(b->join_token_id);
    proj_join_token *k = (proj_join_token *)proj_join_token_find(st, b->join_token_id);
    if (!addr || !name || !tok || (!found && PROJ__GROW(st, nodes) < 0)) {
        free(addr); free(name); free(tok);
        return ine_err(INE_ENOMEM, "out of memory recording a node");
    }
    if (found) proj__node_free(&st->nodes[i]);
    else PROJ__OPEN(st, nodes, i);
    /* A re-added uid is the same node coming back: it starts over. */
    st->nodes[i] = (proj_node){.uid = b->node_uid, .address = addr, .name = name, .join_token_id = tok, .added_seq = seq};
    if (k && !k->used_by) {
        k->used_by = b->node_uid;
        k->used_seq = seq;
    }
    return proj__trust_update(st, seq);
}

static void proj__drop_node_slots(proj_state *st, uint32_t uid)
{
    for (size_t i = st->n_certs; i-- > 0;)
        if (st->certs[i].node_uid == uid) { proj__cert_free(&st->certs[i]); PROJ__CLOSE(st, certs, i); }
    for (size_t i = st->n_acts; i-- > 0;)
        if (st->acts[i].node_uid == uid) { proj__act_free(&st->acts[i]); PROJ__CLOSE(st, acts, i); }
}

static int proj__node_removed(proj_state *st, const Ine__V1__NodeRemoved *b, uint64_t seq)
{
    int found;
    size_t i = PROJ__POS(st, nodes, proj__node_key, b->node_uid, &found);
    if (found && !st->nodes[i].removed) {
        st->nodes[i].removed = 1;
        st->nodes[i].removed_seq = seq;
    }
    proj__drop_node_slots(st, b->node_uid);
    return proj__trust_update(st, seq);
}

/* ---- certificates ------------------------------------------------------------------------ */

/* Install a new current certificate for one slot, replacing the previous one. `c` is moved
 * into the state on success and freed on failure. */
static int proj__cert_put(proj_state *st, proj_cert *c)
{
    int found;
    size_t i = PROJ__POS(st, certs, proj__cert_key, proj__slot(c->node_uid, c->plane), &found);
    if (found) {
        proj__cert_free(&st->certs[i]);
    } else {
        int rc = PROJ__GROW(st, certs);
        if (rc < 0) { proj__cert_free(c); return rc; }
        PROJ__OPEN(st, certs, i);
    }
    st->certs[i] = *c;
    return INE_OK;
}

static int proj__cert_make(proj_cert *c, uint32_t node, int plane, int source, int reason,
                           const Ine__V1__CertInfo *ci, const char *root_fp, const char *rotation_id,
                           size_t sealed_len, uint64_t seq, int64_t t)
{
    memset(c, 0, sizeof *c);
    GUARD(proj__ci_copy(&c->cert, ci));
    c->node_uid = node;
    c->plane = plane;
    c->source = source;
    c->reason = reason;
    c->root_fingerprint = proj__dup(c->cert.root_fingerprint[0] ? c->cert.root_fingerprint : root_fp);
    c->rotation_id = proj__dup(rotation_id);
    c->sealed_key_len = sealed_len;
    c->issued_seq = seq;
    c->issued_us = t;
    if (!c->root_fingerprint || !c->rotation_id) {
        proj__cert_free(c);
        return ine_err(INE_ENOMEM, "out of memory recording a certificate");
    }
    return INE_OK;
}

static int proj__cert_issued(proj_state *st, const Ine__V1__CertificateIssued *b, uint64_t seq, int64_t t)
{
    const proj_node *n = proj_node_find(st, b->node_uid);
    const char *ca_fp = "";
    proj_cert c;
    if (!proj__plane_ok(b->plane) || (n && n->removed)) return INE_OK;
    /* A self-signed certificate chains to the CA of its day even if the event left it out. */
    if (b->source != INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER && st->ca.present) ca_fp = st->ca.cert.fingerprint;
    GUARD(proj__cert_make(&c, b->node_uid, b->plane, b->source, b->reason, b->cert, ca_fp, b->rotation_id,
                          b->sealed_key.len, seq, t));
    GUARD(proj__cert_put(st, &c));
    return proj__trust_update(st, seq);
}

static int proj__customer_uploaded(proj_state *st, const Ine__V1__CustomerCertificateUploaded *b, uint64_t seq, int64_t t)
{
    unsigned planes = 0;
    const char *root_fp = b->cert ? b->cert->root_fingerprint_sha256 : "";
    for (size_t i = 0; i < b->n_planes; i++)
        if (proj__plane_ok(b->planes[i])) planes |= PROJ_PLANE_BIT(b->planes[i]);
    GUARD(proj__known_add(st, root_fp, b->root_pem, "", PROJ_ROOT_CUSTOMER, seq));
    for (size_t i = 0; i < st->n_nodes; i++) {
        if (st->nodes[i].removed) continue;
        for (int p = PROJ_PLANE_MIN; p <= PROJ_PLANE_MAX; p++) {
            proj_cert c;
            if (!(planes & PROJ_PLANE_BIT(p))) continue;
            GUARD(proj__cert_make(&c, st->nodes[i].uid, p, INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER,
                                  INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_UPLOAD, b->cert, root_fp, "",
                                  b->sealed_key.len, seq, t));
            GUARD(proj__cert_put(st, &c));
        }
    }
    return proj__trust_update(st, seq);
}

static int proj__fallback(proj_state *st, const Ine__V1__CustomerExpiryFallback *b, uint64_t seq, int64_t t)
{
    proj_fallback f = {0};
    if (!proj__plane_ok(b->plane)) return INE_OK;
    f.customer_fingerprint = proj__dup(b->customer_fingerprint_sha256);
    f.rotation_id = proj__dup(b->rotation_id);
    if (!f.customer_fingerprint || !f.rotation_id) {
        proj__fallback_free(&f);
        return ine_err(INE_ENOMEM, "out of memory recording a fallback");
    }
    f.present = 1;
    f.customer_not_after = b->customer_not_after;
    f.seq = seq;
    f.time_us = t;
    proj__fallback_free(&st->fallbacks[b->plane]);
    st->fallbacks[b->plane] = f;
    return proj__trust_update(st, seq);
}

static int proj__activated(proj_state *st, const Ine__V1__CertificateActivated *b, uint64_t seq, int64_t t)
{
    const proj_node *n = proj_node_find(st, b->node_uid);
    char *fp, *serial;
    int found;
    size_t i;
    if (!proj__plane_ok(b->plane) || (n && n->removed)) return INE_OK;
    i = PROJ__POS(st, acts, proj__act_key, proj__slot(b->node_uid, b->plane), &found);
    fp = proj__dup(b->fingerprint_sha256);
    serial = proj__dup(b->serial_hex);
    if (!fp || !serial || (!found && PROJ__GROW(st, acts) < 0)) {
        free(fp); free(serial);
        return ine_err(INE_ENOMEM, "out of memory recording an activation");
    }
    if (found) proj__act_free(&st->acts[i]);
    else PROJ__OPEN(st, acts, i);
    st->acts[i] = (proj_activation){.node_uid = b->node_uid, .plane = b->plane, .fingerprint = fp,
                                    .serial_hex = serial, .seq = seq, .time_us = t};
    return proj__trust_update(st, seq);
}

/* ---- rotations and alerts ---------------------------------------------------------------- */

static int proj__rotation_requested(proj_state *st, const Ine__V1__RotationRequested *b, uint64_t seq, int64_t t)
{
    proj_rotation r = {0};
    const proj_rotation *old = proj_rotation_find(st, b->rotation_id);
    for (size_t i = 0; i < b->n_planes; i++)
        if (proj__plane_ok(b->planes[i])) r.planes |= PROJ_PLANE_BIT(b->planes[i]);
    if (!b->n_planes) r.planes = PROJ_PLANES_ALL;
    r.reason = b->reason;
    r.seq = seq;
    r.time_us = t;
    r.rotation_id = proj__dup(b->rotation_id);
    if (b->n_node_uids) r.node_uids = malloc(b->n_node_uids * sizeof *r.node_uids);
    if (!r.rotation_id || (b->n_node_uids && !r.node_uids)) {
        proj__rot_free(&r);
        return ine_err(INE_ENOMEM, "out of memory recording a rotation");
    }
    if (b->n_node_uids) memcpy(r.node_uids, b->node_uids, b->n_node_uids * sizeof *r.node_uids);
    r.n_node_uids = b->n_node_uids;
    if (old) {
        size_t i = (size_t)(old - st->rotations);
        proj__rot_free(&st->rotations[i]);
        st->rotations[i] = r;
        return INE_OK;
    }
    if (PROJ__GROW(st, rotations) < 0) {
        proj__rot_free(&r);
        return INE_ENOMEM;
    }
    st->rotations[st->n_rotations++] = r;
    return INE_OK;
}

static int proj__rotated(proj_state *st, const Ine__V1__CertificatesRotated *b)
{
    const proj_rotation *r = proj_rotation_find(st, b->rotation_id);
    if (r) {
        size_t i = (size_t)(r - st->rotations);
        proj__rot_free(&st->rotations[i]);
        PROJ__CLOSE(st, rotations, i);
    }
    return INE_OK;
}

static int proj__alert_raised(proj_state *st, const Ine__V1__AlertRaised *b, uint64_t seq, int64_t t)
{
    int found;
    size_t i = proj__alert_pos(st, b->alert_id ? b->alert_id : "", &found);
    proj_alert a = {.alert_id = proj__dup(b->alert_id), .name = proj__dup(b->name), .severity = b->severity,
                    .node_uid = b->node_uid, .plane = b->plane, .description = proj__dup(b->description),
                    .threshold = proj__dup(b->threshold), .change_value = proj__dup(b->change_value),
                    .raised_us = t, .raised_seq = seq, .updated_seq = seq};
    if (!a.alert_id || !a.name || !a.description || !a.threshold || !a.change_value ||
        (!found && PROJ__GROW(st, alerts) < 0)) {
        proj__alert_free(&a);
        return ine_err(INE_ENOMEM, "out of memory recording an alert");
    }
    if (found) {
        /* Still the same active alert: it keeps the time it was first raised. */
        a.raised_us = st->alerts[i].raised_us;
        a.raised_seq = st->alerts[i].raised_seq;
        proj__alert_free(&st->alerts[i]);
    } else {
        PROJ__OPEN(st, alerts, i);
    }
    st->alerts[i] = a;
    return INE_OK;
}

static int proj__alert_cleared(proj_state *st, const Ine__V1__AlertCleared *b)
{
    int found;
    size_t i = proj__alert_pos(st, b->alert_id ? b->alert_id : "", &found);
    if (found) {
        proj__alert_free(&st->alerts[i]);
        PROJ__CLOSE(st, alerts, i);
    }
    return INE_OK;
}

static int proj__alert_settings(proj_state *st, const Ine__V1__AlertSettingsChanged *b, uint64_t seq)
{
    for (size_t k = 0; k < b->n_settings; k++) {
        const Ine__V1__AlertSetting *in = b->settings[k];
        proj_alert_setting *s;
        int found;
        size_t i;
        if (!in || !in->name || !*in->name) continue;
        i = proj__setting_pos(st, in->name, &found);
        if (!found) {
            proj_alert_setting n = {.name = strdup(in->name), .threshold = strdup("")};
            if (!n.name || !n.threshold || PROJ__GROW(st, alert_settings) < 0) {
                proj__setting_free(&n);
                return ine_err(INE_ENOMEM, "out of memory recording an alert setting");
            }
            PROJ__OPEN(st, alert_settings, i);
            st->alert_settings[i] = n;
        }
        s = &st->alert_settings[i];
        if (in->enabled_opt_case == INE__V1__ALERT_SETTING__ENABLED_OPT_ENABLED) {
            s->has_enabled = 1;
            s->enabled = !!in->enabled;
        }
        if (in->threshold_opt_case == INE__V1__ALERT_SETTING__THRESHOLD_OPT_THRESHOLD) GUARD(proj__set(&s->threshold, in->threshold));
        s->seq = seq;
    }
    return INE_OK;
}

/* ---- databases --------------------------------------------------------------------------- */

static int proj__db_created(proj_state *st, const Ine__V1__DatabaseCreated *b, uint64_t seq)
{
    int found;
    size_t i = PROJ__POS(st, dbs, proj__db_key, b->db_uid, &found);
    char *name = proj__dup(b->name), *addr = proj__dup(b->shard_address);
    if (!name || !addr || (!found && PROJ__GROW(st, dbs) < 0)) {
        free(name); free(addr);
        return ine_err(INE_ENOMEM, "out of memory recording a database");
    }
    /* A re-created uid is a new database under an old number. */
    if (found) proj__db_free(&st->dbs[i]);
    else PROJ__OPEN(st, dbs, i);
    st->dbs[i] = (proj_db){.uid = b->db_uid, .name = name, .port = b->port, .shard_node_uid = b->shard_node_uid,
                           .shard_address = addr, .data_internode_encryption = !!b->data_internode_encryption,
                           .created_seq = seq, .updated_seq = seq};
    return INE_OK;
}

static proj_db *proj__db_mut(proj_state *st, uint32_t uid)
{
    return (proj_db *)proj_db_find(st, uid);
}

static int proj__db_updated(proj_state *st, const Ine__V1__DatabaseUpdated *b, uint64_t seq)
{
    proj_db *d = proj__db_mut(st, b->db_uid);
    if (!d) return INE_OK;
    d->updated_seq = seq;
    if (b->port_opt_case == INE__V1__DATABASE_UPDATED__PORT_OPT_PORT) d->port = b->port;
    if (b->shard_node_opt_case == INE__V1__DATABASE_UPDATED__SHARD_NODE_OPT_SHARD_NODE_UID) d->shard_node_uid = b->shard_node_uid;
    if (b->name_opt_case == INE__V1__DATABASE_UPDATED__NAME_OPT_NAME) GUARD(proj__set(&d->name, b->name));
    if (b->shard_address_opt_case == INE__V1__DATABASE_UPDATED__SHARD_ADDRESS_OPT_SHARD_ADDRESS)
        GUARD(proj__set(&d->shard_address, b->shard_address));
    return INE_OK;
}

/* ---- the fold ---------------------------------------------------------------------------- */

int proj_apply(proj_state *st, const Ine__V1__Event *ev)
{
    uint64_t seq;
    int64_t t;
    proj_db *d;
    int rc = INE_OK;

    if (!st || !ev) return ine_err(INE_EINVAL, "proj_apply: no state or no event");
    if (ev->seq && ev->seq <= st->applied_seq)
        return ine_err(INE_EINVAL, "seq %llu is already applied (the state is at seq %llu)",
                       (unsigned long long)ev->seq, (unsigned long long)st->applied_seq);
    seq = ev->seq ? ev->seq : st->applied_seq + 1;
    t = ev->time_us;
    /* All body members share one pointer; a set case without a body is as unknown as no case. */
    if (ev->body_case == INE__V1__EVENT__BODY__NOT_SET || !ev->cluster_created) {
        st->applied_seq = seq;
        return INE_EUNKNOWN;
    }

    switch (ev->body_case) {
    case INE__V1__EVENT__BODY_CLUSTER_CREATED: rc = proj__cluster_created(st, ev->cluster_created, seq, t); break;
    case INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED: rc = proj__policy_changed(st, ev->cluster_policy_changed); break;
    case INE__V1__EVENT__BODY_CA_CREATED: rc = proj__ca_created(st, ev->ca_created, seq, t); break;
    case INE__V1__EVENT__BODY_NODE_ADDED: rc = proj__node_added(st, ev->node_added, seq); break;
    case INE__V1__EVENT__BODY_NODE_REMOVED: rc = proj__node_removed(st, ev->node_removed, seq); break;
    case INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED: rc = proj__token_issued(st, ev->join_token_issued, seq, t); break;
    case INE__V1__EVENT__BODY_CERTIFICATE_ISSUED: rc = proj__cert_issued(st, ev->certificate_issued, seq, t); break;
    case INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED:
        rc = proj__customer_uploaded(st, ev->customer_certificate_uploaded, seq, t);
        break;
    case INE__V1__EVENT__BODY_CUSTOMER_EXPIRY_FALLBACK: rc = proj__fallback(st, ev->customer_expiry_fallback, seq, t); break;
    case INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED: rc = proj__activated(st, ev->certificate_activated, seq, t); break;
    case INE__V1__EVENT__BODY_ROTATION_REQUESTED: rc = proj__rotation_requested(st, ev->rotation_requested, seq, t); break;
    case INE__V1__EVENT__BODY_CERTIFICATES_ROTATED: rc = proj__rotated(st, ev->certificates_rotated); break;
    case INE__V1__EVENT__BODY_ALERT_RAISED: rc = proj__alert_raised(st, ev->alert_raised, seq, t); break;
    case INE__V1__EVENT__BODY_ALERT_CLEARED: rc = proj__alert_cleared(st, ev->alert_cleared); break;
    case INE__V1__EVENT__BODY_ALERT_SETTINGS_CHANGED: rc = proj__alert_settings(st, ev->alert_settings_changed, seq); break;
    case INE__V1__EVENT__BODY_DATABASE_CREATED: rc = proj__db_created(st, ev->database_created, seq); break;
    case INE__V1__EVENT__BODY_DATABASE_UPDATED: rc = proj__db_updated(st, ev->database_updated, seq); break;
    case INE__V1__EVENT__BODY_DATABASE_DELETED:
        if ((d = proj__db_mut(st, ev->database_deleted->db_uid))) {
            d->deleted = 1;
            d->updated_seq = seq;
        }
        break;
    case INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED:
        if ((d = proj__db_mut(st, ev->data_internode_encryption_changed->db_uid))) {
            d->data_internode_encryption = !!ev->data_internode_encryption_changed->enabled;
            d->updated_seq = seq;
        }
        break;
    default:
        /* A case this build's schema names but this fold does not handle yet. */
        st->applied_seq = seq;
        return INE_EUNKNOWN;
    }
    st->applied_seq = seq;
    st->last_time_us = t;
    return rc;
}

/* ---- replay ------------------------------------------------------------------------------ */

typedef struct {
    proj_state *st;
    int by_time;
    int64_t at_us;
} proj__replay;

static int proj__replay_one(const evlog_record *rec, void *ud)
{
    proj__replay *r = ud;
    int rc;
    if (r->by_time && rec->ev->time_us > r->at_us) return 1;
    rc = proj_apply(r->st, rec->ev);
    if (rc == INE_EUNKNOWN) {
        logline(LOGLINE_WARN, rec->seq, "seq %llu: unknown event type, skipped", (unsigned long long)rec->seq);
        return 0;
    }
    return rc;
}

static int proj__replay_into(evlog_t *log, uint64_t from, uint64_t to, proj__replay *r)
{
    int rc = evlog_iterate(log, from, to, 0, proj__replay_one, r);
    return rc > 0 ? INE_OK : rc;
}

int proj_build(evlog_t *log, uint64_t at_seq, proj_state *out)
{
    proj__replay r = {.st = out};
    uint64_t last;
    int rc;

    proj_init(out);
    GUARD(evlog_last_seq(log, &last));
    if (at_seq > last)
        return ine_err(INE_ENOTFOUND, "seq %llu is beyond the end of the log (the last is %llu)",
                       (unsigned long long)at_seq, (unsigned long long)last);
    GUARD_GOTO(proj__replay_into(log, 1, at_seq ? at_seq : last, &r), fail);
    return INE_OK;
fail:
    proj_free(out);
    return rc;
}

int proj_build_at_time(evlog_t *log, int64_t at_us, proj_state *out)
{
    proj__replay r = {.st = out, .by_time = 1, .at_us = at_us};
    int rc;

    proj_init(out);
    GUARD_GOTO(proj__replay_into(log, 1, 0, &r), fail);
    return INE_OK;
fail:
    proj_free(out);
    return rc;
}

int proj_update(evlog_t *log, proj_state *st)
{
    proj__replay r = {.st = st};
    uint64_t last;
    GUARD(evlog_last_seq(log, &last));
    if (st->applied_seq > last)
        return ine_err(INE_ECHAIN, "the state is at seq %llu but the log ends at seq %llu",
                       (unsigned long long)st->applied_seq, (unsigned long long)last);
    return proj__replay_into(log, st->applied_seq + 1, 0, &r);
}
