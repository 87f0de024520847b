/* inectl — the operator CLI, in rladmin's grammar (keyword value pairs).
 *
 * This file owns the command dispatch, the global options and what every command shares
 * (errors, talking to a service). Commands live in inectl_<area>.c. */
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <zmq.h>

#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "proj.h"
#include "inectl.h"
#include "logline.h"
#include "rpc.h"

static const char *usage_text =
    "usage: inectl [--data-dir DIR] [--json] [--request-id ID] [--timeout SECONDS] <command>\n"
    "\n"
    "commands:\n"
    "  cluster create name <name> nodes <addr>[,<addr>...]\n"
    "                 [username <user> password <password|->]\n"
    "                 [data_internode_encryption enabled|disabled] [ca_key_bits N]\n"
    "      Create a new cluster in DIR: the seal key and the first events of its log.\n"
    "      'password -' reads the password from the first line of standard input.\n"
    "      Refuses a directory that already holds a cluster. Also creates the cluster CA\n"
    "      (ca_key_bits N, or $INE_CA_KEY_BITS; default 3072) and prints its fingerprint and a\n"
    "      first join token (single use, 24 h).\n"
    "  node remove <uid>\n"
    "      Take a node out of the cluster for good (a dead one too): its etcd member leaves\n"
    "      the consensus, then the node leaves the cluster. Refused while it holds a shard.\n"
    "  etcd prepare [addresses A,B]\n"
    "      Before this node's etcd member first starts: make the node-local CA and certificates\n"
    "      of its client port (etcd/client/; mutual TLS on 127.0.0.1, so only this node's ine\n"
    "      processes get in), and print the member.env and etcd.conf lines that use them.\n"
    "  node token create [ttl SECONDS]\n"
    "      On any node: a new join token (single use; default 24 h) and the CA fingerprint.\n"
    "  node join via <addr> token <token|-> ca_fingerprint <hex> address <this node's addr>\n"
    "            [rest_port 9443] [etcd_client https://127.0.0.1:2379] [name <name>]\n"
    "      On a new machine, into an empty DIR, through any node of the cluster: checks its CA\n"
    "      against the fingerprint before sending anything, joins with the token ('-': read it\n"
    "      from standard input), and writes seal.key, etcd.conf and etcd/member.env: this\n"
    "      node's etcd member (added as a learner) listening for clients on etcd_client (a\n"
    "      loopback address; https: mutual TLS with this node's own CA, as `etcd prepare`)\n"
    "      and for peers behind this node's transport on <addr>:<the cluster's peer port>.\n"
    "      Start that member, then ine-mirror, which brings the whole log from it.\n"
    "  cluster certificate rotate [all|ccs_internode_encryption|data_internode_encryption]\n"
    "      Replace the cluster-issued certificates of every node now (customer ones are kept).\n"
    "  cluster certificate set internal [cpine_certificate_file F cpine_key_file F]\n"
    "                                   [dpine_certificate_file F dpine_key_file F]\n"
    "      Use your own certificates: control plane (cpine), data plane (dpine), or both. Each\n"
    "      certificate file holds the leaf then its chain up to the root; keys are RSA, PEM,\n"
    "      without a passphrase. Checked completely before anything changes.\n"
    "  watch [since SEQ] [count N] [topic] <prefix>... [pub EP] [req EP]\n"
    "      The policy update stream of this node (ine-updates; docs/UPDATES.md) as JSON lines,\n"
    "      one per change, in seq order, none missing, none twice: from SEQ on (default: from\n"
    "      now), only topics starting with a prefix (\"db.1.\", \"cert.\", ...; none: all), and\n"
    "      stops after N updates (default: at Ctrl-C). To resume, pass the last seq printed.\n"
    "  status certificates\n"
    "      The CA and every node's certificate per plane, as ine-ca reports them.\n"
    "  status\n"
    "      Nodes, databases with their encryption state, certificates with days left and\n"
    "      whether each node serves them yet, active alerts (read from the local log).\n"
    "  create db name <name> port <port> shard_node <uid> shard_address <host:port>\n"
    "            [data_internode_encryption enabled|disabled]\n"
    "      A new database; without data_internode_encryption it takes the cluster default.\n"
    "  delete db <uid|name>\n"
    "  tune db <uid|name> data_internode_encryption enabled|disabled\n"
    "  tune cluster data_internode_encryption enabled|disabled\n"
    "      The cluster default for databases created from now on (existing ones keep theirs).\n"
    "  tune cluster alert <name> [enabled true|false] [threshold <n>]\n"
    "      Enable or disable one cluster alert, or set its threshold, at run time (ine-policy\n"
    "      records it; ine-alerting applies it at once). Alerts and threshold units:\n"
    "        node_internal_certs_about_to_expire  days left (default 45)\n"
    "        cluster_certs_about_to_expire        days left of the cluster CA (default 45)\n"
    "        node_cert_rotation_overdue           hours past the rotation period (default 1)\n"
    "        node_cert_not_activated              minutes after issuance (default 10)\n"
    "        customer_cert_expiry_fallback        no threshold (a notice)\n"
    "        consensus_storage_near_quota         percent of etcd's quota used (default 75)\n"
    "        node_clock_skew                      seconds off the cluster's clock (default 120)\n"
    "      e.g. inectl tune cluster alert cluster_certs_about_to_expire enabled true threshold 45\n"
    "  status alerts\n"
    "      Every alert's setting and the alerts in force (read from the local log).\n"
    "  info db <uid|name>\n"
    "  info cluster\n"
    "\n"
    "options:\n"
    "  --data-dir DIR      node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --json              machine-readable output\n"
    "  --request-id ID     make a retried command idempotent (default: a fresh id)\n"
    "  --timeout SECONDS   how long to wait for a service (default 120)\n"
    "  -h, --help          this text\n";

inectl_opts inectl_g;

int inectl_fail(const char *fmt, ...)
{
    va_list ap;
    fputs("inectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

/* Send packed request bytes to a service and decode its Reply. */
static Ine__V1__Reply *inectl__call(const char *service, uint8_t *buf, size_t len)
{
    char run[DATADIR_MAX];
    uint8_t *out = NULL;
    size_t olen = 0;
    Ine__V1__Reply *r = NULL;
    void *z;
    int rc;

    if (datadir_path(inectl_g.data_dir, "run", run, sizeof run) < 0) {
        inectl_fail("%s", ine_err_msg());
        return NULL;
    }
    z = zmq_ctx_new();
    rc = rpc_call(z, run, service, buf, len, inectl_g.timeout_ms, &out, &olen);
    zmq_ctx_term(z);
    if (rc < 0) {
        inectl_fail("%s", ine_err_msg());
        return NULL;
    }
    if (!(r = ine__v1__reply__unpack(NULL, olen, out))) inectl_fail("ine-%s sent a reply that does not decode", service);
    free(out);
    return r;
}

Ine__V1__Reply *inectl_ca_call(Ine__V1__CaRequest *req)
{
    uint8_t *buf;
    size_t len;
    Ine__V1__Reply *r;
    req->request_id = (char *)inectl_g.request_id;
    req->actor = (char *)inectl_g.actor;
    len = ine__v1__ca_request__get_packed_size(req);
    if (!(buf = malloc(len ? len : 1))) return inectl_fail("out of memory"), NULL;
    ine__v1__ca_request__pack(req, buf);
    r = inectl__call("ca", buf, len);
    /* The request may hold a private key: wipe our copy. */
    OPENSSL_cleanse(buf, len);
    free(buf);
    return r;
}

Ine__V1__Reply *inectl_policy_call(Ine__V1__PolicyRequest *req)
{
    uint8_t *buf;
    size_t len;
    Ine__V1__Reply *r;
    req->request_id = (char *)inectl_g.request_id;
    req->actor = (char *)inectl_g.actor;
    len = ine__v1__policy_request__get_packed_size(req);
    if (!(buf = malloc(len ? len : 1))) return inectl_fail("out of memory"), NULL;
    ine__v1__policy_request__pack(req, buf);
    r = inectl__call("policy", buf, len);
    free(buf);
    return r;
}

int inectl_policy_send(Ine__V1__PolicyRequest *req, const char *what, uint32_t *uid, uint64_t *seq)
{
    Ine__V1__Reply *r = inectl_policy_call(req);
    int rc = 0;
    if (!r) return 1;
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK) {
        rc = inectl_reply_fail(what, r);
    } else {
        if (uid) *uid = r->uid;
        if (seq) *seq = r->seq;
    }
    if (!rc && inectl_g.json) printf("{\"uid\": %u, \"seq\": %llu}\n", r->uid, (unsigned long long)r->seq);
    ine__v1__reply__free_unpacked(r, NULL);
    return rc;
}

int inectl_reply_fail(const char *what, const Ine__V1__Reply *r)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&ine__v1__error_code__descriptor, r->code);
    return inectl_fail("%s: %s [%s]", what, r->description && *r->description ? r->description : "refused",
                       v ? v->name + strlen("ERROR_CODE_") : "?");
}

int inectl_load_state(proj_state *st)
{
    char p[DATADIR_MAX];
    evlog_t *log = NULL;
    evlog_opts o = {.read_only = 1};
    int rc;
    proj_init(st);
    if (datadir_path(inectl_g.data_dir, "log", p, sizeof p) < 0 || evlog_open(p, &o, &log) < 0)
        return inectl_fail("cannot open the event log: %s", ine_err_msg());
    rc = proj_build(log, 0, st);
    evlog_close(log);
    if (rc < 0) return inectl_fail("cannot read the event log: %s", ine_err_msg());
    if (!st->cluster.present) return inectl_fail("%s holds no cluster (inectl cluster create)", inectl_g.data_dir);
    return 0;
}

static char *fresh_request_id(char *buf, size_t len)
{
    unsigned char b[12];
    if (RAND_bytes(b, sizeof b) != 1) memset(b, 0, sizeof b);
    snprintf(buf, len, "inectl-");
    for (size_t i = 0; i < sizeof b; i++) snprintf(buf + 7 + 2 * i, len - 7 - 2 * i, "%02x", b[i]);
    return buf;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, 0, 'd'}, {"json", no_argument, 0, 'j'},
        {"request-id", required_argument, 0, 'r'}, {"timeout", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *dd_arg = NULL, *user = getenv("USER"), *actor = getenv("INE_ACTOR");
    char reqid[64];
    int c;

    logline_init("inectl");
    inectl_g.timeout_ms = 120000;
    inectl_g.actor = actor && *actor ? actor : user && *user ? user : "operator";
    inectl_g.request_id = fresh_request_id(reqid, sizeof reqid);
    while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'j': inectl_g.json = 1; break;
        case 'r':
            if (!*optarg || strlen(optarg) > 200) return inectl_fail("--request-id takes 1-200 characters"), 2;
            inectl_g.request_id = optarg;
            break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 3600) return inectl_fail("--timeout takes 1..3600 seconds, not '%s'", optarg), 2;
            inectl_g.timeout_ms = (int)v * 1000;
            break;
        }
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        fputs(usage_text, stderr);
        return 2;
    }
    inectl_g.data_dir = datadir_resolve(dd_arg);
    if (!strcmp(argv[0], "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[0], "cluster") && !strcmp(argv[1], "create"))
        return inectl_cluster_create(inectl_g.data_dir, argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[0], "cluster") && !strcmp(argv[1], "certificate") && !strcmp(argv[2], "rotate"))
        return inectl_cert_rotate(argc - 3, argv + 3);
    if (argc >= 4 && !strcmp(argv[0], "cluster") && !strcmp(argv[1], "certificate") && !strcmp(argv[2], "set") &&
        !strcmp(argv[3], "internal"))
        return inectl_cert_set(argc - 4, argv + 4);
    if (argc >= 2 && !strcmp(argv[0], "status") && !strcmp(argv[1], "certificates"))
        return inectl_status_certificates(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[0], "status") && !strcmp(argv[1], "alerts")) return inectl_status_alerts(argc - 2, argv + 2);
    if (!strcmp(argv[0], "status")) return inectl_status(argc - 1, argv + 1);
    if (argc >= 3 && !strcmp(argv[0], "tune") && !strcmp(argv[1], "cluster") && !strcmp(argv[2], "alert"))
        return inectl_tune_alert(argc - 3, argv + 3);
    if (!strcmp(argv[0], "tune")) return inectl_tune(argc - 1, argv + 1);
    if (!strcmp(argv[0], "info")) return inectl_info(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[0], "create") && !strcmp(argv[1], "db")) return inectl_create_db(argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[0], "node") && !strcmp(argv[1], "token") && !strcmp(argv[2], "create"))
        return inectl_node_token_create(argc - 3, argv + 3);
    if (argc >= 2 && !strcmp(argv[0], "node") && !strcmp(argv[1], "join")) return inectl_node_join(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[0], "node") && !strcmp(argv[1], "remove")) return inectl_node_remove(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[0], "etcd") && !strcmp(argv[1], "prepare")) return inectl_etcd_prepare(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[0], "delete") && !strcmp(argv[1], "db")) return inectl_delete_db(argc - 2, argv + 2);
    if (!strcmp(argv[0], "watch")) return inectl_watch(argc - 1, argv + 1);
    inectl_fail("unknown command '%s%s%s' (see inectl --help)", argv[0], argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
    return 2;
}
