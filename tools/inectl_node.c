/* inectl_node.c — nodes joining a cluster:
 *   `inectl node token create [ttl SECONDS]` (on any node) records a new join token (its
 *   hash only) and shows the token once, with the CA fingerprint the new node must pin;
 *   `inectl node join via ADDR token T ca_fingerprint HEX address MYADDR ...` (on the new
 *   machine) fetches the CA and checks it against the pinned fingerprint before sending
 *   anything, joins over HTTPS verified against that CA only, opens the sealed secrets, writes
 *   seal.key (0600), etcd.conf and the settings of the node's etcd member (added as a learner by
 *   the node joined through): the log then comes from that member, through ine-mirror.
 * Neither ever prints a key; the token only where it is made. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "datadir.h"
#include "err.h"
#include "commit.h"
#include "etcdtls.h"
#include "evlog.h"
#include "inectl.h"
#include "jointoken.h"
#include "pki.h"
#include "seal.h"
#include "tlsconf.h"
#include "valid.h"

#include "ine/v1/join.pb-c.h"

#define NODE_HTTP_MAX (1u << 20)

/* --- node token create ------------------------------------------------------------------------ */

int inectl_node_token_create(int argc, char **argv)
{
    Ine__V1__JoinTokenIssued jt = INE__V1__JOIN_TOKEN_ISSUED__INIT;
    evlog_event ev = INE__V1__EVENT__INIT;
    char path[DATADIR_MAX], expires[40];
    long ttl = JOINTOKEN_TTL_DEFAULT_S;
    proj_state st;
    evlog_t *log = NULL;
    commit_t *commit = NULL;
    jointoken tok;
    uint64_t seq = 0;
    int rc = 1;

    for (int i = 0; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (!v) return inectl_fail("node token create: '%s' needs a value", k);
        if (strcmp(k, "ttl")) return inectl_fail("node token create: unknown keyword '%s' (see inectl --help)", k);
        ttl = strtol(v, &end, 10);
        if (*end || !*v || ttl < 1 || ttl > JOINTOKEN_TTL_MAX_S)
            return inectl_fail("node token create: ttl takes 1..%d seconds, not '%s'", JOINTOKEN_TTL_MAX_S, v);
    }
    if (inectl_load_state(&st)) {
        proj_free(&st);
        return 1;
    }
    if (datadir_path(inectl_g.data_dir, "log", path, sizeof path) < 0 || evlog_open(path, NULL, &log) < 0) {
        inectl_fail("cannot open the event log: %s", ine_err_msg());
        goto out;
    }
    if (jointoken_new(&tok) < 0) {
        inectl_fail("%s", ine_err_msg());
        goto out;
    }
    jt.token_id = tok.id;
    jt.token_sha256 = (ProtobufCBinaryData){sizeof tok.sha256, tok.sha256};
    jt.expires_at = ine_clock_now() + ttl;
    ev.body_case = INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED;
    ev.join_token_issued = &jt;
    /* No request id: a retried command must show a token whose hash is in the log, so every
     * run records its own. */
    {
        commit_cfg cc = {.data_dir = inectl_g.data_dir, .producer = "inectl", .log = log};
        if (commit_open(&cc, &commit) < 0 || commit_append_one(commit, &ev, inectl_g.actor, NULL, &seq) < 0) {
            inectl_fail("cannot record the join token: %s", ine_err_msg());
            goto wipe;
        }
    }
    ine_clock_fmt(jt.expires_at * INE_USEC_PER_SEC, expires, sizeof expires);
    if (inectl_g.json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "join_token", tok.token, "join_token_id", tok.id, "join_token_expires",
                              expires, "seq", (json_int_t)seq);
        json_object_set_new(o, "ca_fingerprint_sha256", st.ca.present ? json_string(st.ca.cert.fingerprint) : json_null());
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("join token %s (single use, expires %s)\n", tok.token, expires);
        if (st.ca.present) printf("ca fingerprint %s\n", st.ca.cert.fingerprint);
        else printf("ca fingerprint (none yet: start ine-ca)\n");
    }
    fflush(stdout);
    rc = 0;
wipe:
    jointoken_clear(&tok);
out:
    commit_close(commit);
    evlog_close(log);
    proj_free(&st);
    return rc;
}

/* --- node join: HTTP ---------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len;
} node_buf;

static size_t node__write(char *data, size_t size, size_t n, void *ud)
{
    node_buf *b = ud;
    size_t add = size * n;
    char *nb;
    if (b->len + add > NODE_HTTP_MAX) return 0;
    if (!(nb = realloc(b->buf, b->len + add + 1))) return 0;
    memcpy(nb + b->len, data, add);
    b->buf = nb;
    b->len += add;
    b->buf[b->len] = 0;
    return add;
}

static void node__buf_wipe(node_buf *b)
{
    if (b->buf) OPENSSL_cleanse(b->buf, b->len);
    free(b->buf);
    *b = (node_buf){0};
}

/* One HTTPS request to the node we join through. ca_pem NULL: the server is not verified (only for fetching
 * the public CA certificate, which is then checked against the pinned fingerprint). */
static int node__http(const char *url, const char *ca_pem, const char *post, long *status, node_buf *body)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    char err[CURL_ERROR_SIZE] = "";
    CURLcode cc;
    if (!h) return ine_err(INE_ENOMEM, "cannot set up HTTPS");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, node__write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)inectl_g.timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    if (ca_pem) {
        struct curl_blob blob = {(void *)ca_pem, strlen(ca_pem), CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    } else {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (post) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
    }
    cc = curl_easy_perform(h);
    if (cc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK) return ine_err(INE_EIO, "%s: %s", url, *err ? err : curl_easy_strerror(cc));
    return INE_OK;
}

/* "inectl: node join: refused: <description> [<error_code>]" from a JSON error. */
static int node__refused(long status, const node_buf *b)
{
    json_t *o = b->buf ? json_loads(b->buf, 0, NULL) : NULL;
    const char *code = o ? json_string_value(json_object_get(o, "error_code")) : NULL;
    const char *desc = o ? json_string_value(json_object_get(o, "description")) : NULL;
    int rc = inectl_fail("node join: refused (HTTP %ld): %s [%s]", status, desc ? desc : "no reason given",
                         code ? code : "?");
    json_decref(o);
    return rc;
}

/* --- node join ----------------------------------------------------------------------------------- */

typedef struct {
    const char *via, *token, *fingerprint, *address, *name, *etcd_client;
    int rest_port;
    char fpr[PKI_FPR_LEN + 1];
    char tokbuf[JOINTOKEN_STR_LEN + 2];
} join_args;

static int node__port(const char *k, const char *v, int *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || !*v || n < 1 || n > 65535) return inectl_fail("node join: %s takes 1..65535, not '%s'", k, v);
    *out = (int)n;
    return 0;
}

static int node__parse_join(int argc, char **argv, join_args *a)
{
    jointoken t;
    memset(a, 0, sizeof *a);
    a->rest_port = 9443;
    a->etcd_client = "https://127.0.0.1:2379";
    for (int i = 0; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return inectl_fail("node join: '%s' needs a value", k);
        if (!strcmp(k, "via") || !strcmp(k, "master")) a->via = v;
        else if (!strcmp(k, "token")) a->token = v;
        else if (!strcmp(k, "ca_fingerprint")) a->fingerprint = v;
        else if (!strcmp(k, "address")) a->address = v;
        else if (!strcmp(k, "name")) a->name = v;
        else if (!strcmp(k, "rest_port")) { if (node__port(k, v, &a->rest_port)) return 1; }
        else if (!strcmp(k, "etcd_client")) a->etcd_client = v;
        else return inectl_fail("node join: unknown keyword '%s' (see inectl --help)", k);
    }
    if (!a->via) return inectl_fail("node join: missing 'via <address of a node of the cluster>'");
    if (strncmp(a->etcd_client, "https://127.", 12) && strncmp(a->etcd_client, "https://[::1]", 13) &&
        strncmp(a->etcd_client, "http://127.", 11) && strncmp(a->etcd_client, "http://[::1]", 12))
        return inectl_fail("node join: etcd_client '%s' must be on a loopback address (127.x or [::1]): the member's client "
                           "port is this node's alone", a->etcd_client);
    if (!a->token) return inectl_fail("node join: missing 'token <token>'");
    if (!a->fingerprint) return inectl_fail("node join: missing 'ca_fingerprint <hex>' (printed by inectl cluster create)");
    if (!a->address) return inectl_fail("node join: missing 'address <this node's address>'");
    if (!valid_address(a->via)) return inectl_fail("node join: via '%s' is not an IP address or host name", a->via);
    if (!valid_address(a->address)) return inectl_fail("node join: address '%s' is not an IP address or host name", a->address);
    if (a->name && !valid_name(a->name))
        return inectl_fail("node join: name '%s' is invalid: use 1-64 letters, digits, '-', '_' or '.'", a->name);
    if (strlen(a->fingerprint) != PKI_FPR_LEN)
        return inectl_fail("node join: ca_fingerprint must be %d hex digits (SHA-256), not %zu characters", PKI_FPR_LEN,
                           strlen(a->fingerprint));
    for (int i = 0; i < PKI_FPR_LEN; i++) {
        char c = a->fingerprint[i];
        if (c >= 'A' && c <= 'F') c = (char)(c + 32);
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return inectl_fail("node join: ca_fingerprint is not hex");
        a->fpr[i] = c;
    }
    if (!strcmp(a->token, "-")) {
        /* From standard input, so it stays out of the process list and shell history. */
        if (!fgets(a->tokbuf, sizeof a->tokbuf, stdin)) return inectl_fail("node join: no token on standard input");
        a->tokbuf[strcspn(a->tokbuf, "\r\n")] = 0;
        a->token = a->tokbuf;
    }
    if (jointoken_parse(a->token, &t) < 0) return inectl_fail("node join: %s", ine_err_msg());
    return 0;
}

/* 1 (with the reason printed) when the data dir already holds something this would replace. */
static int node__dd_busy(const char *dd)
{
    char p[DATADIR_MAX];
    struct stat st;
    evlog_t *log = NULL;
    evlog_opts o = {.read_only = 1};
    uint64_t last = 0;
    if (datadir_path(dd, SEAL_KEY_FILE, p, sizeof p) == 0 && lstat(p, &st) == 0)
        return inectl_fail("node join: %s already has a seal key (%s): it belongs to a cluster; use an empty data dir", dd, p);
    if (datadir_path(dd, COMMIT_CONF_NAME, p, sizeof p) == 0 && lstat(p, &st) == 0)
        return inectl_fail("node join: %s already has %s: it belongs to a cluster; use an empty data dir", dd, p);
    if (datadir_path(dd, "log/data.mdb", p, sizeof p) == 0 && lstat(p, &st) == 0) {
        datadir_path(dd, "log", p, sizeof p);
        if (evlog_open(p, &o, &log) < 0 || evlog_last_seq(log, &last) < 0 || last > 0) {
            evlog_close(log);
            return inectl_fail("node join: %s already holds an event log; use an empty data dir", dd);
        }
        evlog_close(log);
    }
    return 0;
}

static void node__url(char *buf, size_t len, const join_args *a, const char *path)
{
    int v6 = strchr(a->via, ':') && a->via[0] != '[';
    snprintf(buf, len, "https://%s%s%s:%d%s", v6 ? "[" : "", a->via, v6 ? "]" : "", a->rest_port, path);
}

/* GET the CA and check it against the pin; *ca_pem (malloc'd) is the one certificate only. */
static int node__fetch_ca(const join_args *a, char **ca_pem)
{
    node_buf b = {0};
    char url[512], got[PKI_FPR_LEN + 1];
    long status = 0;
    json_t *o = NULL;
    const char *pem;
    pki_cert *ca = NULL;
    int rc = 1;

    *ca_pem = NULL;
    node__url(url, sizeof url, a, "/v1/cluster/ca");
    if (node__http(url, NULL, NULL, &status, &b) < 0) {
        inectl_fail("node join: cannot reach %s: %s", a->via, ine_err_msg());
        goto out;
    }
    if (status != 200) {
        node__refused(status, &b);
        goto out;
    }
    if (!(o = json_loads(b.buf, 0, NULL)) || !(pem = json_string_value(json_object_get(o, "ca_pem"))) ||
        pki_cert_from_pem(pem, &ca) < 0) {
        inectl_fail("node join: %s's /v1/cluster/ca answer holds no certificate", a->via);
        goto out;
    }
    if (pki_cert_fingerprint(ca, got) < 0) {
        inectl_fail("node join: %s", ine_err_msg());
        goto out;
    }
    if (CRYPTO_memcmp(got, a->fpr, PKI_FPR_LEN) != 0) {
        inectl_fail("node join: the CA of %s has fingerprint %s, not the pinned %s: refusing to join (nothing was sent)",
                    a->via, got, a->fpr);
        goto out;
    }
    /* Re-encoded from the one certificate checked, so nothing else rides along as a trust anchor. */
    if (pki_cert_to_pem(ca, ca_pem) < 0) {
        inectl_fail("node join: %s", ine_err_msg());
        goto out;
    }
    rc = 0;
out:
    pki_cert_free(ca);
    json_decref(o);
    node__buf_wipe(&b);
    return rc;
}

/* POST the join; on success *secrets (malloc'd JoinSecrets) and the node and cluster uids. */
static int node__post_join(const join_args *a, const char *ca_pem, uint32_t *uid, char *cluster, size_t clen,
                           Ine__V1__JoinSecrets **secrets, char **answer)
{
    node_buf b = {0};
    char url[512], purpose[64], *req = NULL;
    long status = 0;
    json_t *o = NULL, *in = NULL;
    const char *b64, *cu;
    unsigned char *blob = NULL;
    uint8_t *plain = NULL;
    size_t blen = 0, plen = 0, n;
    seal_key *ek = NULL;
    int rc = 1;

    *secrets = NULL;
    *answer = NULL;
    if (!(in = json_pack("{s:s, s:s}", "token", a->token, "address", a->address)) ||
        (a->name && json_object_set_new(in, "name", json_string(a->name))) || !(req = json_dumps(in, JSON_COMPACT))) {
        inectl_fail("out of memory");
        goto out;
    }
    node__url(url, sizeof url, a, "/v1/nodes/join");
    if (node__http(url, ca_pem, req, &status, &b) < 0) {
        inectl_fail("node join: %s", ine_err_msg());
        goto out;
    }
    if (status != 200) {
        node__refused(status, &b);
        goto out;
    }
    if (!(o = json_loads(b.buf, 0, NULL)) || !json_is_integer(json_object_get(o, "node_uid")) ||
        !(cu = json_string_value(json_object_get(o, "cluster_uid"))) || !(b64 = json_string_value(json_object_get(o, "secrets")))) {
        inectl_fail("node join: the answer lacks node_uid, cluster_uid or secrets");
        goto out;
    }
    *uid = (uint32_t)json_integer_value(json_object_get(o, "node_uid"));
    snprintf(cluster, clen, "%s", cu);
    n = strlen(b64);
    if (n == 0 || n % 4 || !(blob = malloc(n / 4 * 3 + 1)) || EVP_DecodeBlock(blob, (const unsigned char *)b64, (int)n) < 0) {
        inectl_fail("node join: the sealed secrets are not base64");
        goto out;
    }
    blen = n / 4 * 3 - (b64[n - 1] == '=') - (b64[n - 2] == '=');
    if (jointoken_envelope_key(a->token, &ek) < 0 || jointoken_envelope_purpose(purpose, sizeof purpose, *uid) < 0 ||
        seal_open(ek, purpose, blob, blen, &plain, &plen) < 0) {
        inectl_fail("node join: cannot open the sealed secrets: %s", ine_err_msg());
        goto out;
    }
    if (!(*secrets = ine__v1__join_secrets__unpack(NULL, plen, plain)) || (*secrets)->node_uid != *uid ||
        strcmp((*secrets)->cluster_uid, cluster) || (*secrets)->seal_key.len != SEAL_KEY_LEN) {
        inectl_fail("node join: the sealed secrets do not match the answer (node %u, cluster %s)", *uid, cluster);
        goto out;
    }
    if (!(*answer = strdup(b.buf))) {
        inectl_fail("out of memory");
        goto out;
    }
    rc = 0;
out:
    if (rc && *secrets) {
        ine__v1__join_secrets__free_unpacked(*secrets, NULL);
        *secrets = NULL;
    }
    seal_free_secret(plain, plen);
    seal_key_free(ek);
    free(blob);
    if (req) OPENSSL_cleanse(req, strlen(req));
    free(req);
    json_decref(in);
    json_decref(o);
    node__buf_wipe(&b);
    return rc;
}

/* The answer's "etcd" object: how this node's member starts. */
typedef struct {
    char name[32], peer_url[300], listen_url[300], initial_cluster[4096], prefix[128];
} node_etcd;

static int node__etcd_answer(const char *body, node_etcd *m)
{
    json_t *o = json_loads(body, 0, NULL), *e = json_object_get(o, "etcd");
    const char *name = json_string_value(json_object_get(e, "name")), *url = json_string_value(json_object_get(e, "peer_url"));
    const char *ic = json_string_value(json_object_get(e, "initial_cluster")), *pfx = json_string_value(json_object_get(e, "prefix"));
    const char *lurl = json_string_value(json_object_get(e, "listen_peer_url"));
    int ok = name && url && ic && pfx && lurl && strlen(lurl) < sizeof m->listen_url && !strpbrk(lurl, "\n\"'") &&
             strlen(name) < sizeof m->name && strlen(url) < sizeof m->peer_url &&
             strlen(ic) < sizeof m->initial_cluster && strlen(pfx) < sizeof m->prefix && !strpbrk(ic, "\n\"'") &&
             !strpbrk(url, "\n\"'") && !strpbrk(pfx, "\n\"'");
    if (ok) {
        strcpy(m->name, name);
        strcpy(m->peer_url, url);
        strcpy(m->listen_url, lurl);
        strcpy(m->initial_cluster, ic);
        strcpy(m->prefix, pfx);
    }
    json_decref(o);
    return ok ? 0 : inectl_fail("node join: the answer lacks a usable \"etcd\" object (name, peer_url, listen_peer_url, initial_cluster, prefix)");
}

/* Write path (in the data dir) from text, atomically, with this mode. */
static int node__write_file(const char *dd, const char *name, const char *text, mode_t mode)
{
    char path[DATADIR_MAX], tmp[DATADIR_MAX + 8];
    FILE *f;
    int fd, ok;
    if (datadir_path(dd, name, path, sizeof path) < 0) return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0) return ine_err(INE_EIO, "cannot write %s: %s", tmp, strerror(errno));
    if (!(f = fdopen(fd, "w"))) {
        close(fd);
        return ine_err(INE_EIO, "cannot write %s", tmp);
    }
    ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fd) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return ine_err(INE_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    return INE_OK;
}

/* The member's peer files (lib/etcdtls.h) from the join's secrets: it dials its peers with
 * the node's control-plane certificate before the node's own transport can run. */
static int node__write_peer_tls(const char *dd, const Ine__V1__JoinSecrets *s)
{
    char *chain = NULL;
    pki_key *key = NULL;
    int rc;
    if (asprintf(&chain, "%s%s", s->cert_pem, s->chain_pem ? s->chain_pem : "") < 0) return ine_err(INE_ENOMEM, "out of memory");
    rc = pki_key_from_der(s->key_der.data, s->key_der.len, &key);
    if (rc == INE_OK) rc = etcdtls_install(dd, "join", chain, pki_evp(key), s->ca_pem);
    pki_key_free(key);
    free(chain);
    return rc;
}

/* etcd.conf (this node's processes reach etcd through its own member) and etcd/member.env (the
 * member's settings, in etcd's own ETCD_* variables: ine-etcd runs it). */
static int node__write_etcd(const char *dd, const join_args *a, const node_etcd *m, const Ine__V1__JoinSecrets *s)
{
    char text[8192], data[DATADIR_MAX], tls[3][DATADIR_MAX];
    const char *colon = strrchr(m->peer_url, ':'), *lcolon = strrchr(m->listen_url, ':');
    int peer_tls = !strncmp(m->peer_url, "https://", 8), client_tls = !strncmp(a->etcd_client, "https://", 8), made = 0, w;
    char cdir[DATADIR_MAX];
    if (datadir_path(dd, ETCDTLS_CLIENT_DIR, cdir, sizeof cdir) < 0) return -1;
    if (datadir_path(dd, "etcd/member", data, sizeof data) < 0 || datadir_path(dd, "etcd", text, sizeof text) < 0 ||
        datadir_path(dd, ETCDTLS_CERT, tls[0], sizeof tls[0]) < 0 || datadir_path(dd, ETCDTLS_KEY, tls[1], sizeof tls[1]) < 0 ||
        datadir_path(dd, ETCDTLS_CA, tls[2], sizeof tls[2]) < 0)
        return -1;
    if (mkdir(text, 0700) != 0 && errno != EEXIST) return ine_err(INE_EIO, "cannot create %s: %s", text, strerror(errno));
    if (peer_tls) GUARD(node__write_peer_tls(dd, s));
    if (client_tls) {
        /* The member's certificate names the host it listens on (beyond 127.0.0.1). */
        char host[64] = "";
        const char *h = a->etcd_client + 8;
        size_t n = strcspn(h, ":/");
        if (*h != '[' && n < sizeof host) snprintf(host, sizeof host, "%.*s", (int)n, h);
        GUARD(etcdtls_client_prepare(dd, host, &made));
    }
    w = snprintf(text, sizeof text,
             "# This node's member of the cluster's etcd, from `inectl node join` (no secret here).\n"
             "# ine-etcd --data-dir <data dir> starts it (deploy/systemd/ine-etcd.service does).\n"
             "ETCD_NAME=%s\nETCD_DATA_DIR=%s\nETCD_LISTEN_PEER_URLS=%s\nETCD_INITIAL_ADVERTISE_PEER_URLS=%s\n"
             "ETCD_LISTEN_CLIENT_URLS=%s\nETCD_ADVERTISE_CLIENT_URLS=%s\nETCD_INITIAL_CLUSTER=%s\n"
             "ETCD_INITIAL_CLUSTER_STATE=existing\n",
             m->name, data, m->listen_url, m->peer_url, a->etcd_client, a->etcd_client, m->initial_cluster);
    if (w < 0 || (size_t)w >= sizeof text) return ine_err(INE_EINVAL, "the member's settings do not fit");
    if (peer_tls) {
        size_t off = strlen(text);
        w = snprintf(text + off, sizeof text - off,
                 "# Peers over TLS: the member dials them with the node's control-plane certificate; they\n"
                 "# reach it through this node's ine-transport on %s (lib/etcdtls.h).\n"
                 "ETCD_PEER_CERT_FILE=%s\nETCD_PEER_KEY_FILE=%s\nETCD_PEER_TRUSTED_CA_FILE=%s\n",
                 m->peer_url, tls[0], tls[1], tls[2]);
        if (w < 0 || (size_t)w >= sizeof text - off) return ine_err(INE_EINVAL, "the member's settings do not fit");
    }
    if (client_tls) {
        size_t off = strlen(text);
        w = snprintf(text + off, sizeof text - off,
                 "# The client port in mutual TLS with this node's own CA (inectl etcd prepare).\n"
                 "ETCD_CLIENT_CERT_AUTH=true\nETCD_TRUSTED_CA_FILE=%s/ca.crt\nETCD_CERT_FILE=%s/server.crt\n"
                 "ETCD_KEY_FILE=%s/server.key\n", cdir, cdir, cdir);
        if (w < 0 || (size_t)w >= sizeof text - off) return ine_err(INE_EINVAL, "the member's settings do not fit");
    }
    GUARD(node__write_file(dd, "etcd/member.env", text, 0600));
    w = snprintf(text, sizeof text,
             "# The etcd member this node's ine processes commit through: its own (inectl node join)\n"
             "endpoints=%s\nprefix=%s\npeer_port=%s\npeer_local_port=%s\n", a->etcd_client, m->prefix,
             colon ? colon + 1 : "2380", peer_tls && lcolon ? lcolon + 1 : "2390");
    if (w < 0 || (size_t)w >= sizeof text) return ine_err(INE_EINVAL, "etcd.conf does not fit");
    if (client_tls) {
        size_t off = strlen(text);
        w = snprintf(text + off, sizeof text - off, "cacert=%s/ca.crt\ncert=%s/client.crt\nkey=%s/client.key\n", cdir, cdir, cdir);
        if (w < 0 || (size_t)w >= sizeof text - off) return ine_err(INE_EINVAL, "etcd.conf does not fit");
    }
    return node__write_file(dd, COMMIT_CONF_NAME, text, 0600);
}

int inectl_node_join(int argc, char **argv)
{
    const char *dd = inectl_g.data_dir;
    join_args a;
    char *ca_pem = NULL, *answer = NULL, cluster[64] = "", path[DATADIR_MAX];
    Ine__V1__JoinSecrets *s = NULL;
    node_etcd m;
    uint32_t uid = 0;
    int rc = 1;

    if (node__parse_join(argc, argv, &a) || node__dd_busy(dd)) goto out;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (node__fetch_ca(&a, &ca_pem) || node__post_join(&a, ca_pem, &uid, cluster, sizeof cluster, &s, &answer) ||
        node__etcd_answer(answer, &m))
        goto out;
    /* The cluster recorded the node: a failure from here on is fixed by running the same join
     * again (same token and address answer the same node) on a clean data dir. */
    if (datadir_create(dd) < 0 || datadir_path(dd, SEAL_KEY_FILE, path, sizeof path) < 0 ||
        seal_key_write(path, s->seal_key.data, s->seal_key.len) < 0) {
        inectl_fail("node join: node %u was added, but writing its seal key failed: %s", uid, ine_err_msg());
        goto out;
    }
    if (node__write_etcd(dd, &a, &m, s) < 0) {
        inectl_fail("node join: node %u was added, but writing its etcd settings failed: %s", uid, ine_err_msg());
        goto out;
    }
    if (inectl_g.json) {
        json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s}", "node_uid", (json_int_t)uid, "cluster_uid", cluster, "etcd_member",
                              m.name, "etcd_peer_url", m.peer_url, "data_dir", dd);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("node %u joined cluster %s as etcd member %s (peer %s; a learner until it has caught up)\n", uid, cluster,
               m.name, m.peer_url);
        printf("next, on this machine, in this order:\n"
               "  ine-etcd --data-dir %s                       its etcd member (deploy/systemd/ine-etcd.service)\n"
               "  ine-mirror --data-dir %s                     the log, from that member\n"
               "  ine-transport --data-dir %s --node %u\n",
               dd, dd, dd, uid);
    }
    rc = 0;
out:
    if (s) {
        if (s->seal_key.data) OPENSSL_cleanse(s->seal_key.data, s->seal_key.len);
        if (s->key_der.data) OPENSSL_cleanse(s->key_der.data, s->key_der.len);
        ine__v1__join_secrets__free_unpacked(s, NULL);
    }
    if (answer) OPENSSL_cleanse(answer, strlen(answer));
    free(answer);
    free(ca_pem);
    OPENSSL_cleanse(a.tokbuf, sizeof a.tokbuf);
    curl_global_cleanup();
    return rc;
}

int inectl_node_remove(int argc, char **argv)
{
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__RemoveNode rn = INE__V1__REMOVE_NODE__INIT;
    uint64_t seq = 0;
    char *end;
    unsigned long uid;
    int rc;
    if (argc != 1) return inectl_fail("usage: node remove <uid>"), 2;
    uid = strtoul(argv[0], &end, 10);
    if (!*argv[0] || *end || uid == 0 || uid > UINT32_MAX) return inectl_fail("node remove: '%s' is not a node uid", argv[0]), 2;
    rn.node_uid = (uint32_t)uid;
    req.op_case = INE__V1__POLICY_REQUEST__OP_REMOVE_NODE;
    req.remove_node = &rn;
    if ((rc = inectl_policy_send(&req, "node remove refused", NULL, &seq))) return rc;
    if (!inectl_g.json) printf("node %lu removed (seq %llu)\n", uid, (unsigned long long)seq);
    return 0;
}
