/* inectl_cluster.c — `inectl cluster create`: the bootstrap that writes a new data directory —
 * the seal key (0600) and the first events (cluster created, one node added per address, the
 * cluster CA with its key sealed, a first join token) in one all-or-nothing append. Everything is checked before anything is written, and a failure
 * part-way removes what this command created. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cacreate.h"
#include "clock.h"
#include "datadir.h"
#include "err.h"
#include "commit.h"
#include "evlog.h"
#include "inectl.h"
#include "jointoken.h"
#include "passwd.h"
#include "seal.h"
#include "sealed.h"
#include "valid.h"

#include <jansson.h>

#define INECTL_MAX_NODES 256
#define INECTL_ROTATION_PERIOD (30 * INE_SEC_PER_DAY)
#define INECTL_CERT_VALIDITY (90 * INE_SEC_PER_DAY)

static int read_password_line(char *buf, size_t len)
{
    size_t n;
    if (!fgets(buf, (int)len, stdin)) return -1;
    n = strcspn(buf, "\r\n");
    buf[n] = 0;
    return n ? 0 : -1;
}

/* --- cluster create --------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    char *nodes[INECTL_MAX_NODES];
    size_t n_nodes;
    const char *username;
    const char *password;
    int encryption;
    int ca_key_bits;
} create_args;

static evlog_event *new_event(const char *actor)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    ine__v1__event__init(ev);
    ev->actor = (char *)actor;
    return ev;
}

static int parse_create(int argc, char **argv, create_args *a, char *nodes_buf, size_t nodes_len)
{
    const char *nodes = NULL, *enc = NULL, *bits = getenv("INE_CA_KEY_BITS");
    memset(a, 0, sizeof *a);
    for (int i = 0; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return inectl_fail("cluster create: '%s' needs a value", k);
        if (!strcmp(k, "name")) a->name = v;
        else if (!strcmp(k, "nodes")) nodes = v;
        else if (!strcmp(k, "username")) a->username = v;
        else if (!strcmp(k, "password")) a->password = v;
        else if (!strcmp(k, "data_internode_encryption")) enc = v;
        else if (!strcmp(k, "ca_key_bits")) bits = v;
        else return inectl_fail("cluster create: unknown keyword '%s' (see inectl --help)", k);
    }
    if (!a->name) return inectl_fail("cluster create: missing 'name <name>'");
    if (!valid_name(a->name))
        return inectl_fail("cluster create: name '%s' is invalid: use 1-64 letters, digits, '-', '_' or '.'", a->name);
    if (!nodes) return inectl_fail("cluster create: missing 'nodes <addr>[,<addr>...]'");
    if (strlen(nodes) >= nodes_len) return inectl_fail("cluster create: the node list is too long");
    strcpy(nodes_buf, nodes);
    for (char *save = NULL, *tok = strtok_r(nodes_buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!valid_address(tok)) return inectl_fail("cluster create: node address '%s' is not an IP address or host name", tok);
        for (size_t j = 0; j < a->n_nodes; j++)
            if (!strcmp(a->nodes[j], tok)) return inectl_fail("cluster create: node address '%s' is listed twice", tok);
        if (a->n_nodes == INECTL_MAX_NODES) return inectl_fail("cluster create: more than %d nodes", INECTL_MAX_NODES);
        a->nodes[a->n_nodes++] = tok;
    }
    if (a->n_nodes == 0) return inectl_fail("cluster create: 'nodes' lists no address");
    if (!a->username != !a->password) return inectl_fail("cluster create: 'username' and 'password' go together");
    if (a->username && !valid_username(a->username))
        return inectl_fail("cluster create: username '%s' is invalid: use 1-128 letters, digits, '-', '_', '.', '@' or '+'", a->username);
    if (enc && strcmp(enc, "enabled") && strcmp(enc, "disabled"))
        return inectl_fail("cluster create: data_internode_encryption must be 'enabled' or 'disabled', not '%s'", enc);
    a->encryption = enc && !strcmp(enc, "enabled");
    if (bits && *bits) {
        char *end;
        long b = strtol(bits, &end, 10);
        if (*end || b < 2048 || b > 16384)
            return inectl_fail("cluster create: ca_key_bits (or $INE_CA_KEY_BITS) takes 2048..16384, not '%s'", bits);
        a->ca_key_bits = (int)b;
    }
    return 0;
}

typedef struct {
    const seal_key *seal;
    const evlog_event *ca_ev;
    const uint8_t *der;
    size_t len;
} create_seal;

/* Inside the append, once the CA event's seq is known. */
static int create_seal_hook(evlog_event *ev, void *ud)
{
    create_seal *c = ud;
    return ev == c->ca_ev ? sealed_seal_key(ev, c->seal, c->der, c->len) : INE_OK;
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* 1 when the log at path holds no record (or cannot be read: then the create fails later). */
static int log_is_empty(const char *path)
{
    evlog_opts o = {.read_only = 1};
    evlog_t *log = NULL;
    uint64_t last = 1;
    if (evlog_open(path, &o, &log) == INE_OK) (void)evlog_last_seq(log, &last);
    evlog_close(log);
    return last == 0;
}

int inectl_cluster_create(const char *dd, int argc, char **argv)
{
    create_args a;
    char nodes_buf[8192], key_path[DATADIR_MAX], log_path[DATADIR_MAX], data_path[DATADIR_MAX];
    char lock_path[DATADIR_MAX], pwbuf[1024], pwhash[PASSWD_HASH_MAX], uid_hex[33], reqid[64];
    char ca_fpr[PKI_FPR_LEN + 1], expires[40];
    unsigned char uid[16];
    evlog_event *evs[3 + INECTL_MAX_NODES] = {0}, *ca_ev = NULL;
    Ine__V1__ClusterCreated cc = INE__V1__CLUSTER_CREATED__INIT;
    Ine__V1__JoinTokenIssued jt = INE__V1__JOIN_TOKEN_ISSUED__INIT;
    Ine__V1__NodeAdded na[INECTL_MAX_NODES];
    char node_names[INECTL_MAX_NODES][32];
    jointoken tok = {0};
    evlog_t *log = NULL;
    seal_key *seal = NULL;
    uint8_t *ca_der = NULL;
    size_t ca_der_len = 0;
    create_seal cs = {0};
    commit_opts ao = {0};
    commit_t *commit = NULL;
    uint64_t first = 0;
    int64_t now;
    int rc = 1, key_made = 0, log_made = 0;
    size_t n_ev = 0;

    if (parse_create(argc, argv, &a, nodes_buf, sizeof nodes_buf)) return 1;
    if (datadir_path(dd, "seal.key", key_path, sizeof key_path) < 0 ||
        datadir_path(dd, "log", log_path, sizeof log_path) < 0 ||
        datadir_path(dd, "log/data.mdb", data_path, sizeof data_path) < 0 ||
        datadir_path(dd, "log/lock.mdb", lock_path, sizeof lock_path) < 0)
        return inectl_fail("%s", ine_err_msg());
    /* Everything is checked before anything is written. An empty log is no cluster: a node's
     * ine-mirror creates one as it starts, before the cluster's first events exist. */
    if (exists(key_path) || (exists(data_path) && !log_is_empty(log_path)))
        return inectl_fail("%s already holds a cluster (found %s); refusing to overwrite it", dd,
                    exists(key_path) ? key_path : data_path);
    if (a.password && !strcmp(a.password, "-")) {
        if (read_password_line(pwbuf, sizeof pwbuf)) return inectl_fail("cluster create: no password on standard input");
        a.password = pwbuf;
    }
    if (a.password && passwd_hash(a.password, pwhash, sizeof pwhash) < 0) {
        OPENSSL_cleanse(pwbuf, sizeof pwbuf);
        return inectl_fail("cluster create: %s", ine_err_msg());
    }
    OPENSSL_cleanse(pwbuf, sizeof pwbuf);
    if (RAND_bytes(uid, sizeof uid) != 1) return inectl_fail("cluster create: no randomness for the cluster uid");
    for (size_t i = 0; i < sizeof uid; i++) sprintf(uid_hex + 2 * i, "%02x", uid[i]);
    now = ine_clock_now();
    {
        /* The CA (the slow part: its key) before anything is on disk. */
        pki_ca_params cp = {.cluster_name = a.name, .cluster_uid = uid_hex, .key_bits = a.ca_key_bits, .now = now};
        if (cacreate_event(&cp, "inectl", a.username ? a.username : "operator", &ca_ev, &ca_der, &ca_der_len, ca_fpr) < 0) {
            OPENSSL_cleanse(pwhash, sizeof pwhash);
            return inectl_fail("cluster create: cannot create the cluster CA: %s", ine_err_msg());
        }
    }
    if (jointoken_new(&tok) < 0) {
        inectl_fail("cluster create: %s", ine_err_msg());
        goto out;
    }

    if (datadir_create(dd) < 0) {
        inectl_fail("%s", ine_err_msg());
        goto out;
    }
    if (seal_key_create(key_path) < 0) {
        inectl_fail("cannot create the seal key: %s", ine_err_msg());
        goto err;
    }
    key_made = 1;
    if (seal_key_load(key_path, &seal) < 0) {
        inectl_fail("cannot read back the seal key: %s", ine_err_msg());
        goto err;
    }
    log_made = !exists(data_path); /* a mirror's empty log is the mirror's to keep */
    if (evlog_open(log_path, NULL, &log) < 0) {
        inectl_fail("cannot create the event log: %s", ine_err_msg());
        goto err;
    }

    cc.cluster_uid = uid_hex;
    cc.name = (char *)a.name;
    cc.admin_username = a.username ? (char *)a.username : "";
    cc.admin_password_hash = a.password ? pwhash : "";
    cc.default_data_internode_encryption = a.encryption;
    cc.rotation_period_seconds = INECTL_ROTATION_PERIOD;
    cc.cert_validity_seconds = INECTL_CERT_VALIDITY;
    if (!(evs[n_ev] = new_event(a.username ? (char *)a.username : "operator"))) goto oom;
    evs[n_ev]->body_case = INE__V1__EVENT__BODY_CLUSTER_CREATED;
    evs[n_ev++]->cluster_created = &cc;
    for (size_t i = 0; i < a.n_nodes; i++) {
        ine__v1__node_added__init(&na[i]);
        snprintf(node_names[i], sizeof node_names[i], "node:%u", (unsigned)(i + 1));
        na[i].node_uid = (uint32_t)(i + 1);
        na[i].address = a.nodes[i];
        na[i].name = node_names[i];
        if (!(evs[n_ev] = new_event(a.username ? (char *)a.username : "operator"))) goto oom;
        evs[n_ev]->body_case = INE__V1__EVENT__BODY_NODE_ADDED;
        evs[n_ev++]->node_added = &na[i];
    }
    evs[n_ev++] = ca_ev;
    jt.token_id = tok.id;
    jt.token_sha256 = (ProtobufCBinaryData){sizeof tok.sha256, tok.sha256};
    jt.expires_at = now + JOINTOKEN_TTL_DEFAULT_S;
    if (!(evs[n_ev] = new_event(a.username ? (char *)a.username : "operator"))) goto oom;
    evs[n_ev]->body_case = INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED;
    evs[n_ev++]->join_token_issued = &jt;
    cs = (create_seal){seal, ca_ev, ca_der, ca_der_len};
    snprintf(reqid, sizeof reqid, "cluster-create/%s", uid_hex);
    ao.request_id = reqid;
    ao.prepare = create_seal_hook;
    ao.prepare_ud = &cs;
    ao.expect_empty = 1;
    ao.no_wait = 1; /* nothing here reads them back; the node's mirror copies them in its time */
    {
        commit_cfg ccfg = {.data_dir = dd, .producer = "inectl", .log = log};
        if (commit_open(&ccfg, &commit) < 0 || commit_append(commit, evs, n_ev, &ao, &first) < 0) {
            inectl_fail("cannot write the first events: %s", ine_err_msg());
            goto err;
        }
    }
    ine_clock_fmt(jt.expires_at * INE_USEC_PER_SEC, expires, sizeof expires);
    if (inectl_g.json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "name", a.name, "uid", uid_hex, "data_dir", dd,
                              "first_seq", (json_int_t)first, "last_seq", (json_int_t)(first + n_ev - 1),
                              "ca_fingerprint_sha256", ca_fpr, "join_token", tok.token, "join_token_expires", expires);
        json_t *ns = json_array();
        for (size_t i = 0; i < a.n_nodes; i++)
            json_array_append_new(ns, json_pack("{s:I, s:s}", "uid", (json_int_t)na[i].node_uid, "address", na[i].address));
        json_object_set_new(o, "nodes", ns);
        if (a.username) json_object_set_new(o, "rest_user", json_string(a.username));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("cluster '%s' created\n  uid       %s\n  nodes     %zu", a.name, uid_hex, a.n_nodes);
        for (size_t i = 0; i < a.n_nodes; i++) printf("%s %u=%s", i ? "," : "", na[i].node_uid, na[i].address);
        printf("\n  data dir  %s\n  events    %llu..%llu\n", dd, (unsigned long long)first,
               (unsigned long long)(first + n_ev - 1));
        if (a.username) printf("  REST user %s (password stored hashed)\n", a.username);
        printf("  ca fingerprint  %s\n  join token      %s (single use, expires %s)\n", ca_fpr, tok.token, expires);
    }
    fflush(stdout);
    rc = 0;
    goto out;

oom:
    inectl_fail("out of memory");
err:
    /* Leave no half-created cluster behind: a later create must be able to start clean. */
    commit_close(commit);
    commit = NULL;
    if (log) evlog_close(log);
    log = NULL;
    if (log_made) {
        unlink(data_path);
        unlink(lock_path);
        rmdir(log_path);
    }
    if (key_made) unlink(key_path);
out:
    OPENSSL_cleanse(pwhash, sizeof pwhash);
    jointoken_clear(&tok);
    for (size_t i = 0; i < n_ev; i++)
        if (evs[i] != ca_ev) free(evs[i]);
    if (ca_ev) protobuf_c_message_free_unpacked(&ca_ev->base, NULL);
    pki_secret_free(ca_der, ca_der_len);
    seal_key_free(seal);
    commit_close(commit);
    evlog_close(log);
    return rc;
}
