/* test_join.c — nodes joining a cluster, through the real binaries on loopback, the log
 * committed through a real etcd member: the CA and first join token printed by `inectl cluster
 * create`, REST POST /v1/nodes/join (node added, ine-ca issues its certificates, the secrets
 * arrive sealed under the token and open with it, the node's etcd member is added as a
 * learner), an idempotent retry (no second member), and every refusal changing nothing:
 * malformed, unknown, expired and reused tokens, an address already a node's, bad fields, a
 * cluster without etcd, and `inectl node join` with a wrong fingerprint (refused before
 * anything is sent) or a data dir already in use.
 *
 * `inectl node join` end to end: it writes seal.key, etcd.conf and etcd/member.env; the member
 * started from that file and the node's ine-mirror bring the whole log (record for record),
 * ine-policy promotes the learner, and the new node then commits through its own member. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cluster.h"
#include "err.h"
#include "evlog.h"
#include "jointoken.h"
#include "proj.h"
#include "etcd.h"
#include "etcdfix.h"
#include "seal.h"
#include "sealed.h"
#include "svc.h"
#include "testutil.h"

#include "ine/v1/join.pb-c.h"

static svc_cluster c;

static void setup(void)
{
    cr_assert_eq(svc_cluster_init_etcd(&c, "admin", "pw"), 0, "%s", svc_why());
    cr_assert_eq(svc_start_ca(&c, 60000), 0, "%s\n%s", svc_why(), svc_tail(c.ca_log));
    cr_assert_eq(svc_start_policy(&c, 1, 60000), 0, "%s\n%s", svc_why(), svc_tail(c.policy_log));
}

static void teardown(void) { svc_cluster_free(&c); }

TestSuite(join, .init = setup, .fini = teardown, .timeout = 300);

static void new_token(const char *ttl, char token[JOINTOKEN_STR_LEN + 1], char fpr[65])
{
    char *out, *err, f[65];
    int rc = ttl ? svc_inectl(&c, &out, &err, "node", "token", "create", "ttl", ttl, NULL)
                 : svc_inectl(&c, &out, &err, "node", "token", "create", NULL);
    cr_assert_eq(rc, 0, "%s", err);
    cl_scan_word(out, "join token", token, JOINTOKEN_STR_LEN + 1);
    cl_scan_word(out, "ca fingerprint", fpr ? fpr : f, 65);
    cr_assert(strstr(out, "(single use, expires "), "%s", out);
    free(out);
    free(err);
}

/* One HTTPS request with the curl tool (-k: these tests check the API, not the pinning, which
 * inectl node join does); the status, the body in *body (malloc'd). */
static long http(const char *method, const char *path, const char *data, char **body)
{
    char url[128], *out = NULL, *err = NULL, *nl;
    long status = 0;
    snprintf(url, sizeof url, "https://127.0.0.1:%d%s", c.port, path);
    char *argv[] = {"/usr/bin/curl", "-sk", "--noproxy", "*", "-X", (char *)method, "-H", "Content-Type: application/json",
                    "--max-time", "120", "-w", "\n%{http_code}", url, data ? "--data-binary" : NULL, (char *)data, NULL};
    cr_assert_eq(tu_run(argv, NULL, &out, &err), 0, "curl: %s", err);
    nl = strrchr(out, '\n');
    cr_assert_not_null(nl);
    status = atol(nl + 1);
    *nl = 0;
    *body = out;
    free(err);
    return status;
}

static long join_post(const char *token, const char *address, const char *name, char **body)
{
    char data[512];
    if (name) snprintf(data, sizeof data, "{\"token\":\"%s\",\"address\":\"%s\",\"name\":\"%s\"}", token, address, name);
    else snprintf(data, sizeof data, "{\"token\":\"%s\",\"address\":\"%s\"}", token, address);
    return http("POST", "/v1/nodes/join", data, body);
}

static const char *json_str(const char *body, const char *key)
{
    static char v[8192];
    json_t *o = json_loads(body, 0, NULL);
    cr_assert_not_null(o, "not JSON: %s", body);
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(v, sizeof v, "%s", s ? s : "");
    json_decref(o);
    return v;
}

static long json_int(const char *body, const char *key)
{
    json_t *o = json_loads(body, 0, NULL);
    cr_assert_not_null(o, "not JSON: %s", body);
    long v = (long)json_integer_value(json_object_get(o, key));
    json_decref(o);
    return v;
}

/* A refused join: the status and error_code, and the log byte-for-byte as before. */
static void refused(const char *token, const char *address, const char *name, long status, const char *code)
{
    svc_snap s;
    char *body;
    cr_assert_eq(svc_snap_take(c.dd, &s), 0, "%s", svc_why());
    long st = join_post(token, address, name, &body);
    cr_assert_eq(st, status, "%s: HTTP %ld: %s", code, st, body);
    cr_assert_str_eq(json_str(body, "error_code"), code, "%s", body);
    cr_assert_neq(strlen(json_str(body, "description")), 0);
    cr_assert_null(strstr(body, token), "the reply does not repeat the token");
    cr_assert_eq(svc_snap_same(c.dd, &s), 0, "%s: %s", code, svc_why());
    svc_snap_free(&s);
    free(body);
}

/* The envelope opened with the token. */
static Ine__V1__JoinSecrets *open_secrets(const char *body, const char *token)
{
    const char *b64 = json_str(body, "secrets");
    size_t n = strlen(b64), blen;
    unsigned char *blob = malloc(n);
    uint8_t *plain = NULL;
    size_t plen = 0;
    seal_key *k;
    char purpose[64];
    cr_assert(n > 0 && n % 4 == 0, "%s", body);
    cr_assert_geq(EVP_DecodeBlock(blob, (const unsigned char *)b64, (int)n), 0);
    blen = n / 4 * 3 - (b64[n - 1] == '=') - (b64[n - 2] == '=');
    cr_assert_eq(jointoken_envelope_key(token, &k), INE_OK);
    cr_assert_eq(jointoken_envelope_purpose(purpose, sizeof purpose, (uint32_t)json_int(body, "node_uid")), INE_OK);
    cr_assert_eq(seal_open(k, purpose, blob, blen, &plain, &plen), INE_OK, "the envelope opens with the token: %s",
                 ine_err_msg());
    Ine__V1__JoinSecrets *s = ine__v1__join_secrets__unpack(NULL, plen, plain);
    cr_assert_not_null(s);
    seal_free_secret(plain, plen);
    seal_key_free(k);
    free(blob);
    return s;
}

/* The reply's "etcd" object: member node3 at peer, an --initial-cluster naming node 1's member
 * and this one, the key prefix. */
static void check_member_answer(const char *body, const char *peer)
{
    json_t *o = json_loads(body, 0, NULL), *e = json_object_get(o, "etcd");
    char want[128];
    cr_assert(json_is_object(e), "no etcd object: %s", body);
    cr_assert_str_eq(json_string_value(json_object_get(e, "name")), "node3");
    cr_assert_str_eq(json_string_value(json_object_get(e, "peer_url")), peer);
    cr_assert_str_eq(json_string_value(json_object_get(e, "prefix")), "/ine/");
    const char *ic = json_string_value(json_object_get(e, "initial_cluster"));
    snprintf(want, sizeof want, "node3=%s", peer);
    cr_assert(ic && strstr(ic, want) && strstr(ic, "node1=http://127.0.0.1:"), "%s", ic ? ic : "(none)");
    json_decref(o);
}

/* How many learners etcd lists at this peer URL (-1: at that URL, a voting member). */
static int learners(const char *peer)
{
    etcd_opts eo = {.endpoints = ef_endpoint(c.etcd, 0)};
    etcd_t *e;
    etcd_member *ms;
    size_t n;
    int found = 0;
    cr_assert_eq(etcd_open(&eo, &e), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(etcd_member_list(e, &ms, &n), INE_OK, "%s", ine_err_msg());
    for (size_t i = 0; i < n; i++)
        if (!strcmp(ms[i].peer_urls, peer)) found = ms[i].is_learner ? found + 1 : -1;
    free(ms);
    etcd_close(e);
    return found;
}

static void load_state(proj_state *st, evlog_t **log)
{
    char *p = tu_path(c.dd, "log");
    evlog_opts o = {.read_only = 1};
    cr_assert_eq(evlog_open(p, &o, log), INE_OK);
    cr_assert_eq(proj_build(*log, 0, st), INE_OK);
    free(p);
}

Test(join, cluster_create_token_joins_a_node_that_gets_its_certificates_sealed)
{
    char token[JOINTOKEN_STR_LEN + 1], fpr[65], *body;
    cl_scan_word(c.create_out, "ca fingerprint", fpr, sizeof fpr);
    cl_scan_word(c.create_out, "join token", token, sizeof token);
    cr_assert_eq(strncmp(token, "inejt_", 6), 0);

    /* The public CA endpoint needs no credentials and shows the printed fingerprint. */
    cr_assert_eq(http("GET", "/v1/cluster/ca", NULL, &body), 200, "%s", body);
    cr_assert_str_eq(json_str(body, "fingerprint_sha256"), fpr);
    cr_assert(strstr(json_str(body, "ca_pem"), "BEGIN CERTIFICATE"));
    free(body);

    long st = join_post(token, "127.0.0.3", "third", &body);
    cr_assert_eq(st, 200, "HTTP %ld: %s\n%s", st, body, svc_tail(c.policy_log));
    cr_assert_eq(json_int(body, "node_uid"), 3);
    cr_assert_null(strstr(body, "PRIVATE KEY"), "no key in clear: %s", body);
    cr_assert_null(strstr(body, token));

    /* The log: node 3 added with the token's id, and ine-ca issued both its certificates. */
    proj_state ps;
    evlog_t *log;
    jointoken t;
    load_state(&ps, &log);
    cr_assert_eq(jointoken_parse(token, &t), INE_OK);
    const proj_node *n = proj_node_find(&ps, 3);
    cr_assert_not_null(n);
    cr_assert_str_eq(n->address, "127.0.0.3");
    cr_assert_str_eq(n->name, "third");
    cr_assert_str_eq(n->join_token_id, t.id);
    cr_assert_eq(proj_join_token_find(&ps, t.id)->used_by, 3);
    const proj_cert *cp = proj_cert_find(&ps, 3, INE__V1__PLANE__PLANE_CONTROL);
    cr_assert_not_null(cp);
    cr_assert_not_null(proj_cert_find(&ps, 3, INE__V1__PLANE__PLANE_DATA));
    cr_assert_str_eq(json_str(body, "cluster_uid"), ps.cluster.uid);
    /* Its etcd member: added as a learner at the node's address and the cluster's peer port. */
    char peer[64];
    snprintf(peer, sizeof peer, "http://127.0.0.3:%d", c.peer_port);
    check_member_answer(body, peer);
    cr_assert_eq(learners(peer), 1, "one learner at %s", peer);

    /* The envelope holds the cluster's seal key, node 3's control-plane certificate and its key. */
    Ine__V1__JoinSecrets *s = open_secrets(body, token);
    char *kp = tu_path(c.dd, "seal.key");
    size_t klen;
    char *kb = tu_read_file(kp, &klen);
    cr_assert_eq(s->seal_key.len, klen);
    cr_assert_eq(memcmp(s->seal_key.data, kb, klen), 0);
    cr_assert_str_eq(s->cert_pem, cp->cert.cert_pem);
    cr_assert(strstr(s->ca_pem, ps.ca.cert.cert_pem), "the CA is among the roots");
    cr_assert_eq(s->node_uid, 3);
    seal_key *seal;
    pki_key *key;
    uint8_t *der;
    size_t dlen;
    cr_assert_eq(seal_key_load(kp, &seal), INE_OK);
    cr_assert_eq(sealed_load_key(log, seal, cp->issued_seq, &key), INE_OK);
    cr_assert_eq(pki_key_to_der(key, &der, &dlen), INE_OK);
    cr_assert_eq(s->key_der.len, dlen);
    cr_assert_eq(memcmp(s->key_der.data, der, dlen), 0, "the node key as sealed in the log");
    /* Nothing of the key or the seal key in the reply's text, in any encoding we would use. */
    char b64[4096];
    EVP_EncodeBlock((unsigned char *)b64, der, 48);
    cr_assert_null(strstr(body, b64));
    EVP_EncodeBlock((unsigned char *)b64, (unsigned char *)kb, 30);
    cr_assert_null(strstr(body, b64));
    pki_secret_free(der, dlen);
    pki_key_free(key);
    seal_key_free(seal);
    ine__v1__join_secrets__free_unpacked(s, NULL);
    free(kb);
    free(kp);
    uint64_t seq = ps.applied_seq;
    proj_free(&ps);
    evlog_close(log);
    free(body);

    /* A retry (the reply was lost) answers the same node and writes nothing. */
    svc_snap snap;
    cr_assert_eq(svc_snap_take(c.dd, &snap), 0);
    cr_assert_eq(snap.last_seq, seq);
    cr_assert_eq(join_post(token, "127.0.0.3", "third", &body), 200, "%s", body);
    cr_assert_eq(json_int(body, "node_uid"), 3);
    s = open_secrets(body, token);
    ine__v1__join_secrets__free_unpacked(s, NULL);
    check_member_answer(body, peer);
    free(body);
    cr_assert_eq(svc_snap_same(c.dd, &snap), 0, "%s", svc_why());
    cr_assert_eq(learners(peer), 1, "the retry added no second member");
    svc_snap_free(&snap);
    /* From another address the same token is used up. */
    refused(token, "127.0.0.4", NULL, 403, "token_used");
    cr_assert_eq(svc_count_events(c.dd, INE__V1__EVENT__BODY_NODE_ADDED), 3);
    /* Both services stop cleanly (no crash, no sanitizer report). */
    cr_assert_eq(svc_stop_policy(&c), 0, "%s", svc_tail(c.policy_log));
    cr_assert_eq(svc_stop_ca(&c), 0, "%s", svc_tail(c.ca_log));
}

Test(join, bad_tokens_and_bad_fields_are_refused_and_change_nothing)
{
    char token[JOINTOKEN_STR_LEN + 1], old[JOINTOKEN_STR_LEN + 1], unknown[JOINTOKEN_STR_LEN + 1], *body;
    jointoken u;
    cr_assert_eq(jointoken_new(&u), INE_OK);
    snprintf(unknown, sizeof unknown, "%s", u.token);
    new_token(NULL, token, NULL);
    new_token("1", old, NULL);
    {
        /* Let the 1 s token expire (setting up the case, not asserting on time). */
        struct timespec ts = {2, 100000000};
        nanosleep(&ts, NULL);
    }
    refused("inejt_0123", "127.0.0.3", NULL, 401, "token_malformed");
    refused(unknown, "127.0.0.3", NULL, 401, "token_unknown");
    refused(old, "127.0.0.3", NULL, 403, "token_expired");
    refused(token, "127.0.0.1", NULL, 409, "address_taken");
    refused(token, "300.1.2.3", NULL, 400, "bad_address");
    refused(token, "127.0.0.3", "bad name!", 400, "bad_name");
    {
        svc_snap s;
        cr_assert_eq(svc_snap_take(c.dd, &s), 0);
        cr_assert_eq(http("POST", "/v1/nodes/join", "{\"address\":\"127.0.0.3\"}", &body), 400, "%s", body);
        cr_assert_str_eq(json_str(body, "error_code"), "missing_field");
        free(body);
        cr_assert_eq(http("POST", "/v1/nodes/join", "{\"token\":\"x\",\"address\":\"127.0.0.3\",\"admin\":true}", &body), 400,
                     "%s", body);
        cr_assert_str_eq(json_str(body, "error_code"), "unknown_field");
        free(body);
        cr_assert_eq(http("GET", "/v1/nodes/join", NULL, &body), 405, "%s", body);
        free(body);
        cr_assert_eq(svc_snap_same(c.dd, &s), 0, "%s", svc_why());
        svc_snap_free(&s);
    }
    /* The other endpoints still want credentials. */
    cr_assert_eq(http("GET", "/v1/nodes", NULL, &body), 401, "%s", body);
    free(body);
    /* None of the refusals used the good token up. */
    cr_assert_eq(join_post(token, "127.0.0.3", NULL, &body), 200, "%s", body);
    cr_assert_eq(json_int(body, "node_uid"), 3);
    free(body);
    /* The token appears in no log line of the services. */
    char *pl = tu_read_file(c.policy_log, NULL), *cl = tu_read_file(c.ca_log, NULL);
    cr_assert_null(strstr(pl, token));
    cr_assert_null(strstr(pl, old));
    cr_assert_null(strstr(cl, token));
    free(pl);
    free(cl);
    cr_assert_eq(svc_stop_policy(&c), 0, "%s", svc_tail(c.policy_log));
}

static int joiner_client_port; /* the joining node's etcd member's client port */

/* inectl --data-dir <jdd> node join via node 1's REST port; status, out and err. */
static int node_join(const char *jdd, const char *token, const char *fpr, const char *address, const char *stdin_text,
                     char **out, char **err)
{
    char port[16], client[64];
    snprintf(port, sizeof port, "%d", c.port);
    if (!joiner_client_port) joiner_client_port = svc_free_port();
    snprintf(client, sizeof client, "https://%s:%d", address, joiner_client_port);
    char *argv[] = {(char *)tu_bin("inectl"), "--data-dir", (char *)jdd, "--timeout", "30", "node", "join", "via", "127.0.0.1",
                    "rest_port", port, "etcd_client", client, "token", (char *)token, "ca_fingerprint", (char *)fpr,
                    "address", (char *)address, NULL};
    return tu_run(argv, stdin_text, out, err);
}

Test(join, inectl_node_join_refuses_a_wrong_fingerprint_before_sending_anything)
{
    char token[JOINTOKEN_STR_LEN + 1], fpr[65], wrong[65], *out, *err;
    new_token(NULL, token, fpr);
    snprintf(wrong, sizeof wrong, "%s", fpr);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    char *jdd = tu_path(c.dir, "joiner"), *key = tu_path(jdd, "seal.key");
    svc_snap s;
    cr_assert_eq(svc_snap_take(c.dd, &s), 0);
    int rc = node_join(jdd, token, wrong, "127.0.0.3", NULL, &out, &err);
    cr_assert_eq(rc, 1, "%s%s", out, err);
    cr_assert(strstr(err, fpr) && strstr(err, wrong), "names both fingerprints: %s", err);
    cr_assert(strstr(err, "nothing was sent"), "%s", err);
    cr_assert_null(strstr(out, token));
    cr_assert_null(strstr(err, token));
    cr_assert_eq(svc_snap_same(c.dd, &s), 0, "the master's log is unchanged: %s", svc_why());
    struct stat st;
    cr_assert_neq(stat(key, &st), 0, "no seal.key in the joiner's data dir");
    free(out);
    free(err);
    /* The token was not spent: it still joins. */
    char *body;
    cr_assert_eq(join_post(token, "127.0.0.3", NULL, &body), 200, "%s", body);
    free(body);
    svc_snap_free(&s);
    free(jdd);
    free(key);
}

Test(join, inectl_node_join_writes_the_seal_key_and_its_etcd_settings)
{
    char token[JOINTOKEN_STR_LEN + 1], fpr[65], *out, *err;
    new_token(NULL, token, fpr);
    char *jdd = tu_path(c.dir, "joiner"), *key = tu_path(jdd, "seal.key"), *mkey = tu_path(c.dd, "seal.key");

    /* A data dir already holding a seal key is refused before anything is sent. */
    char *busy = tu_path(c.dir, "busy"), *bkey = tu_path(busy, "seal.key");
    cr_assert_eq(mkdir(busy, 0700), 0);
    cr_assert_eq(seal_key_create(bkey), INE_OK);
    svc_snap s;
    cr_assert_eq(svc_snap_take(c.dd, &s), 0);
    cr_assert_eq(node_join(busy, token, fpr, "127.0.0.3", NULL, &out, &err), 1, "%s", out);
    cr_assert(strstr(err, "already has a seal key"), "%s", err);
    cr_assert_eq(svc_snap_same(c.dd, &s), 0, "%s", svc_why());
    svc_snap_free(&s);
    free(out);
    free(err);

    /* The token from standard input, so it is not in the process list. */
    char line[JOINTOKEN_STR_LEN + 2];
    snprintf(line, sizeof line, "%s\n", token);
    int rc = node_join(jdd, "-", fpr, "127.0.0.3", line, &out, &err);
    cr_assert_eq(rc, 0, "exit %d: %s%s", rc, out, err);
    cr_assert(strstr(out, "node 3 joined cluster") && strstr(out, "as etcd member node3"), "%s", out);
    cr_assert(strstr(out, "ine-etcd --data-dir") && strstr(out, "ine-mirror --data-dir"), "what to start next: %s", out);
    cr_assert_null(strstr(out, token));
    cr_assert_null(strstr(err, token));
    cr_assert_null(strstr(out, "PRIVATE KEY"));
    struct stat st;
    cr_assert_eq(stat(key, &st), 0, "%s", err);
    cr_assert_eq(st.st_mode & 0777, 0600);
    size_t l1, l2;
    char *k1 = tu_read_file(key, &l1), *k2 = tu_read_file(mkey, &l2);
    cr_assert_eq(l1, 32);
    cr_assert_eq(l1, l2);
    cr_assert_eq(memcmp(k1, k2, l1), 0, "the cluster's seal key");
    /* etcd.conf: its own member as the endpoint, the cluster's prefix and peer port. */
    char *cpath = tu_path(jdd, "etcd.conf"), *epath = tu_path(jdd, "etcd/member.env"), want[256];
    char *conf = tu_read_file(cpath, NULL), *env = tu_read_file(epath, NULL);
    cr_assert(conf && env, "etcd.conf and etcd/member.env are written");
    snprintf(want, sizeof want, "endpoints=https://127.0.0.3:%d\n", joiner_client_port);
    cr_assert(strstr(conf, want) && strstr(conf, "prefix=/ine/\n"), "%s", conf);
    snprintf(want, sizeof want, "peer_port=%d\n", c.peer_port);
    cr_assert(strstr(conf, want), "%s", conf);
    /* member.env: etcd's own variables, the member joining an existing cluster. */
    snprintf(want, sizeof want, "ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.3:%d\n", c.peer_port);
    cr_assert(strstr(env, "ETCD_NAME=node3\n") && strstr(env, want) && strstr(env, "ETCD_INITIAL_CLUSTER_STATE=existing\n"), "%s", env);
    cr_assert(strstr(env, "\nETCD_INITIAL_CLUSTER=") && strstr(env, "node1=http://127.0.0.1:"), "%s", env);
    cr_assert_eq(stat(epath, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    /* The client port in mutual TLS with a CA of the node's own: its keys 0600, etcd.conf and
     * the member pointed at them. */
    cr_assert(strstr(env, "ETCD_CLIENT_CERT_AUTH=true\n") && strstr(env, "etcd/client/server.key\n"), "%s", env);
    cr_assert(strstr(conf, "cacert=") && strstr(conf, "etcd/client/client.key\n"), "%s", conf);
    {
        char *ck = tu_path(jdd, "etcd/client/client.key"), *sk = tu_path(jdd, "etcd/client/server.key");
        cr_assert_eq(stat(ck, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        cr_assert_eq(stat(sk, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        free(ck);
        free(sk);
    }
    cr_assert_null(strstr(env, token));
    cr_assert_null(strstr(conf, token));
    free(out);
    free(err);

    /* Running it again on the same data dir is refused (it is a cluster's now). */
    cr_assert_eq(node_join(jdd, token, fpr, "127.0.0.3", NULL, &out, &err), 1);
    cr_assert(strstr(err, "already has a seal key"), "%s", err);
    free(out);
    free(err);
    free(conf); free(env); free(cpath); free(epath);
    free(k1); free(k2); free(jdd); free(key); free(mkey); free(busy); free(bkey);
}

/* The whole file as text (malloc'd), "" if missing. */
static char *slurp(const char *path)
{
    char *s = tu_read_file(path, NULL);
    return s ? s : strdup("");
}

Test(join, a_join_waiting_for_the_ca_survives_a_policy_restart_as_a_retry)
{
    char token[JOINTOKEN_STR_LEN + 1], data[256], url[128], *body;
    new_token(NULL, token, NULL);
    /* Without ine-ca the join is recorded but its reply waits for the certificates. */
    cr_assert_eq(svc_stop_ca(&c), 0, "%s", svc_tail(c.ca_log));
    snprintf(data, sizeof data, "{\"token\":\"%s\",\"address\":\"127.0.0.3\"}", token);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/nodes/join", c.port);
    char *out = tu_path(c.dir, "curl.out");
    char *argv[] = {"/usr/bin/curl", "-sk", "--noproxy", "*", "-X", "POST", "--max-time", "120", "--data-binary", data, url, NULL};
    pid_t cp = svc_spawn(argv, NULL, out);
    cr_assert_gt(cp, 0);
    int waited = 0, st = 0;
    for (char *log = NULL;; waited += 50) {
        log = slurp(c.policy_log);
        int seen = strstr(log, "join: node 3 (127.0.0.3) added") != NULL;
        free(log);
        if (seen) break;
        cr_assert_lt(waited, 60000, "the join was not recorded:\n%s", svc_tail(c.policy_log));
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(svc_running(cp, &st), 1, "the reply waits for the certificates");
    /* Stopping ine-policy answers the waiting join (503) and exits cleanly. */
    cr_assert_eq(svc_stop_policy(&c), 0, "%s", svc_tail(c.policy_log));
    for (waited = 0; svc_running(cp, &st); waited += 50) {
        cr_assert_lt(waited, 60000, "curl still waits");
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    char *got = slurp(out);
    cr_assert(strstr(got, "shutting_down"), "%s", got);
    free(got);
    /* With the services back, the same token and address answer node 3 (nothing new written
     * by the join itself; ine-ca issues the certificates). */
    cr_assert_eq(svc_start_ca(&c, 60000), 0, "%s\n%s", svc_why(), svc_tail(c.ca_log));
    cr_assert_eq(svc_start_policy(&c, 1, 60000), 0, "%s\n%s", svc_why(), svc_tail(c.policy_log));
    cr_assert_eq(join_post(token, "127.0.0.3", NULL, &body), 200, "%s", body);
    cr_assert_eq(json_int(body, "node_uid"), 3);
    Ine__V1__JoinSecrets *s = open_secrets(body, token);
    ine__v1__join_secrets__free_unpacked(s, NULL);
    free(body);
    cr_assert_eq(svc_count_events(c.dd, INE__V1__EVENT__BODY_NODE_ADDED), 3, "one node added, not two");
    free(out);
}

/* The member as deploy/systemd/ine-etcd.service runs it: ine-etcd, from member.env. */
static pid_t start_member(const char *jdd, const char *log)
{
    char *argv[] = {(char *)tu_bin("ine-etcd"), "--data-dir", (char *)jdd, "--", "--max-txn-ops=4096", "--enable-pprof=false",
                    "--logger=zap", "--log-outputs=stderr", NULL};
    pid_t pid = svc_spawn(argv, NULL, log);
    cr_assert_gt(pid, 0);
    return pid;
}

Test(join, a_joined_node_gets_the_whole_log_from_its_own_member_and_becomes_a_voter)
{
    char token[JOINTOKEN_STR_LEN + 1], fpr[65], *out, *err, peer[64], client[64];
    new_token(NULL, token, fpr);
    char *jdd = tu_path(c.dir, "joiner"), *elog = tu_path(c.dir, "etcd-node3.log"), *mlog = tu_path(c.dir, "mirror-node3.log");
    int rc = node_join(jdd, token, fpr, "127.0.0.3", NULL, &out, &err);
    cr_assert_eq(rc, 0, "exit %d: %s%s", rc, out, err);
    free(out);
    free(err);
    snprintf(peer, sizeof peer, "http://127.0.0.3:%d", c.peer_port);
    snprintf(client, sizeof client, "https://127.0.0.3:%d", joiner_client_port);
    cr_assert_eq(learners(peer), 1, "added as a learner");

    /* Its transport first, as systemd may start it: with nothing in its log yet it waits for
     * the log (no crash loop) and serves once ine-mirror brought its node and certificate. */
    char *tlog = tu_path(c.dir, "transport-node3.log"), tport[16];
    snprintf(tport, sizeof tport, "%d", svc_free_port());
    char *targv0[] = {(char *)tu_bin("ine-transport"), "--data-dir", jdd, "--node", "3", "--port", tport, NULL};
    pid_t transport = svc_spawn(targv0, NULL, tlog);
    cr_assert_gt(transport, 0);
    for (int64_t end = ine_clock_mono_ms() + 30000;;) {
        char *t = tu_read_file(tlog, NULL);
        int waiting = t && strstr(t, "waiting for the log to hold this cluster's node 3");
        free(t);
        if (waiting) break;
        cr_assert(svc_running(transport, NULL), "node 3's transport exited instead of waiting: %s", svc_tail(tlog));
        cr_assert_lt(ine_clock_mono_ms(), end, "node 3's transport does not say it waits: %s", svc_tail(tlog));
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }

    /* Its member, then its mirror: the whole log comes from etcd, nothing from node 1. */
    pid_t member = start_member(jdd, elog);
    char *margv[] = {(char *)tu_bin("ine-mirror"), "--data-dir", jdd, NULL};
    pid_t mirror = svc_spawn(margv, NULL, mlog);
    cr_assert_gt(mirror, 0);
    uint64_t want = 0, have = 0;
    cr_assert_eq(svc_last_seq(c.dd, &want), 0);
    for (int64_t end = ine_clock_mono_ms() + 60000; svc_last_seq(jdd, &have) != 0 || have < want;) {
        cr_assert_lt(ine_clock_mono_ms(), end, "node 3's log stayed at %llu of %llu:\n%s\n%s", (unsigned long long)have,
                     (unsigned long long)want, svc_tail(mlog), svc_tail(elog));
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    /* Its client port takes only this node's processes: without the node's client certificate
     * TLS refuses (curl, even trusting the member's CA), with it a range answers. */
    {
        char url[96], ca[300], cert[300], key[300], *o = NULL, *e = NULL;
        snprintf(url, sizeof url, "%s/v3/kv/range", client);
        snprintf(ca, sizeof ca, "%s/etcd/client/ca.crt", jdd);
        snprintf(cert, sizeof cert, "%s/etcd/client/client.crt", jdd);
        snprintf(key, sizeof key, "%s/etcd/client/client.key", jdd);
        char *plain[] = {"/usr/bin/curl", "-s", "--noproxy", "*", "--max-time", "5", "--cacert", ca, "-d", "{\"key\":\"AA==\",\"serializable\":true}",
                         url, NULL};
        cr_assert_neq(tu_run(plain, NULL, &o, &e), 0, "a client without the node's certificate got in: %s", o);
        free(o);
        free(e);
        char *with[] = {"/usr/bin/curl", "-sf", "--noproxy", "*", "--max-time", "5", "--cacert", ca, "--cert", cert, "--key", key,
                        "-d", "{\"key\":\"AA==\",\"serializable\":true}", url, NULL};
        cr_assert_eq(tu_run(with, NULL, &o, &e), 0, "the node's own client was refused: %s%s", o, e);
        free(o);
        free(e);
        char *http[] = {"/usr/bin/curl", "-s", "--noproxy", "*", "--max-time", "5", "-d", "{\"key\":\"AA==\"}", url + 0, NULL};
        char hurl[96];
        snprintf(hurl, sizeof hurl, "http://%s/v3/kv/range", client + 8);
        http[8] = hurl;
        o = e = NULL;
        int hrc = tu_run(http, NULL, &o, &e);
        cr_assert(hrc != 0 || !strstr(o, "header"), "plain HTTP got an answer: %s", o);
        free(o);
        free(e);
    }
    /* Every node's ine-policy promotes a learner that caught up: node 1's here. */
    for (int64_t end = ine_clock_mono_ms() + 60000; learners(peer) != -1;) {
        cr_assert_lt(ine_clock_mono_ms(), end, "node 3's member was not promoted:\n%s", svc_tail(c.policy_log));
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    /* A write made on node 3 commits through its own member and reaches node 1's log. */
    char *targv[] = {(char *)tu_bin("inectl"), "--data-dir", jdd, "--timeout", "30", "node", "token", "create", NULL};
    rc = tu_run(targv, NULL, &out, &err);
    cr_assert_eq(rc, 0, "exit %d: %s%s\n%s", rc, out, err, svc_tail(mlog));
    free(out);
    free(err);
    cr_assert_eq(svc_last_seq(jdd, &have), 0);
    cr_assert_gt(have, want);
    for (int64_t end = ine_clock_mono_ms() + 30000; svc_last_seq(c.dd, &want) != 0 || want < have;) {
        cr_assert_lt(ine_clock_mono_ms(), end, "node 1's log did not get node 3's write");
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    /* Both logs, record for record, one valid chain. */
    proj_state ps;
    evlog_t *log, *flog;
    load_state(&ps, &log);
    char *fl = tu_path(jdd, "log");
    evlog_opts o = {.read_only = 1};
    cr_assert_eq(evlog_open(fl, &o, &flog), INE_OK, "%s", ine_err_msg());
    for (uint64_t s = 1; s <= have; s++) {
        uint8_t *a, *b;
        size_t al, bl;
        cr_assert_eq(evlog_read_raw(log, s, &a, &al), INE_OK);
        cr_assert_eq(evlog_read_raw(flog, s, &b, &bl), INE_OK, "seq %llu", (unsigned long long)s);
        cr_assert(al == bl && !memcmp(a, b, al), "seq %llu differs", (unsigned long long)s);
        free(a);
        free(b);
    }
    evlog_verify_report rep;
    cr_assert_eq(evlog_verify(flog, &rep), INE_OK, "%s", rep.reason);
    cr_assert_not_null(proj_cert_find(&ps, 3, INE__V1__PLANE__PLANE_CONTROL));
    evlog_close(flog);
    proj_free(&ps);
    evlog_close(log);
    {
        char listening[96];
        snprintf(listening, sizeof listening, "node 3 listening on 127.0.0.3:%s", tport);
        for (int64_t end = ine_clock_mono_ms() + 30000;;) {
            char *t = tu_read_file(tlog, NULL);
            int up = t && strstr(t, listening);
            free(t);
            if (up) break;
            cr_assert_lt(ine_clock_mono_ms(), end, "node 3's transport did not start serving: %s", svc_tail(tlog));
            struct timespec ts = {0, 50000000};
            nanosleep(&ts, NULL);
        }
    }
    cr_assert_eq(svc_stop(transport, 10000), 0, "%s", svc_tail(tlog));
    free(tlog);
    cr_assert_eq(svc_stop(mirror, 10000), 0, "%s", svc_tail(mlog));
    cr_assert_eq(svc_stop(member, 10000), 0, "ine-etcd stops its member and exits cleanly: %s", svc_tail(elog));
    free(fl); free(jdd); free(elog); free(mlog);
}

/* A cluster whose log is not committed through etcd cannot take a node: it would never get
 * the log. Refused after the token checks, and nothing changes. */
static svc_cluster lc;
static void local_setup(void)
{
    cr_assert_eq(svc_cluster_init(&lc, "admin", "pw"), 0, "%s", svc_why());
    cr_assert_eq(svc_start_ca(&lc, 60000), 0, "%s\n%s", svc_why(), svc_tail(lc.ca_log));
    cr_assert_eq(svc_start_policy(&lc, 1, 60000), 0, "%s\n%s", svc_why(), svc_tail(lc.policy_log));
}
static void local_teardown(void) { svc_cluster_free(&lc); }

Test(join_local, a_cluster_without_etcd_refuses_a_join_and_changes_nothing, .init = local_setup, .fini = local_teardown,
     .timeout = 300)
{
    char token[JOINTOKEN_STR_LEN + 1], data[256], url[128], *out, *err;
    cl_scan_word(lc.create_out, "join token", token, sizeof token);
    svc_snap s;
    cr_assert_eq(svc_snap_take(lc.dd, &s), 0);
    snprintf(data, sizeof data, "{\"token\":\"%s\",\"address\":\"127.0.0.3\"}", token);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/nodes/join", lc.port);
    char *argv[] = {"/usr/bin/curl", "-sk", "--noproxy", "*", "-X", "POST", "-w", "\n%{http_code}", "--max-time", "60",
                    "--data-binary", data, url, NULL};
    cr_assert_eq(tu_run(argv, NULL, &out, &err), 0, "curl: %s", err);
    cr_assert(strstr(out, "\n409") && strstr(out, "\"no_consensus\"") && strstr(out, "etcd"), "%s", out);
    cr_assert_eq(svc_snap_same(lc.dd, &s), 0, "%s", svc_why());
    svc_snap_free(&s);
    free(out);
    free(err);
}

