/* inectl_db.c — databases and the cluster policy: `tune db|cluster`, `create db`,
 * `delete db` (sent to ine-policy, which validates and records them), and `info`, `status`
 * (read from this node's log through the projection, so they work even with the services
 * down). Nothing here prints key material: the projection holds none. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "inectl.h"
#include "proj.h"
#include "quorum.h"

/* A live database by uid or name; prints why not. */
static const proj_db *find_db(const proj_state *st, const char *key)
{
    char *end;
    unsigned long uid = strtoul(key, &end, 10);
    const proj_db *d = NULL;
    if (*key && !*end) {
        d = proj_db_find(st, (uint32_t)uid);
        if (d && d->deleted) d = NULL;
    }
    if (!d) d = proj_db_find_name(st, key);
    if (!d) inectl_fail("no database '%s' (give its uid or name; see inectl status)", key);
    return d;
}

static int parse_switch(const char *v, int *out)
{
    if (!strcmp(v, "enabled")) *out = 1;
    else if (!strcmp(v, "disabled")) *out = 0;
    else return inectl_fail("data_internode_encryption must be 'enabled' or 'disabled', not '%s'", v), -1;
    return 0;
}

int inectl_tune(int argc, char **argv)
{
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    int on, rc;
    if (argc == 3 && !strcmp(argv[0], "cluster") && !strcmp(argv[1], "data_internode_encryption")) {
        Ine__V1__SetClusterDefaultEncryption sd = INE__V1__SET_CLUSTER_DEFAULT_ENCRYPTION__INIT;
        if (parse_switch(argv[2], &on)) return 2;
        sd.enabled = on;
        req.op_case = INE__V1__POLICY_REQUEST__OP_SET_CLUSTER_DEFAULT_ENCRYPTION;
        req.set_cluster_default_encryption = &sd;
        if ((rc = inectl_policy_send(&req, "tune cluster refused", NULL, NULL))) return rc;
        if (!inectl_g.json) printf("cluster default data_internode_encryption: %s (for new databases)\n", argv[2]);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[0], "db") && !strcmp(argv[2], "data_internode_encryption")) {
        Ine__V1__SetDatabaseEncryption se = INE__V1__SET_DATABASE_ENCRYPTION__INIT;
        proj_state st;
        const proj_db *d;
        if (parse_switch(argv[3], &on)) return 2;
        if (inectl_load_state(&st)) return proj_free(&st), 1;
        if (!(d = find_db(&st, argv[1]))) return proj_free(&st), 1;
        se.db_uid = d->uid;
        se.enabled = on;
        req.op_case = INE__V1__POLICY_REQUEST__OP_SET_DATABASE_ENCRYPTION;
        req.set_database_encryption = &se;
        rc = inectl_policy_send(&req, "tune db refused", NULL, NULL);
        if (!rc && !inectl_g.json) printf("db:%u %s: data_internode_encryption %s\n", d->uid, d->name, argv[3]);
        proj_free(&st);
        return rc;
    }
    return inectl_fail("usage: tune db <uid|name> data_internode_encryption enabled|disabled, "
                       "or tune cluster data_internode_encryption enabled|disabled"), 2;
}

static int parse_u32(const char *k, const char *v, uint32_t max, uint32_t *out)
{
    char *end;
    unsigned long x;
    errno = 0;
    x = strtoul(v, &end, 10);
    if (!*v || *end || errno || x == 0 || x > max) return inectl_fail("%s must be a number from 1 to %u, not '%s'", k, max, v), -1;
    *out = (uint32_t)x;
    return 0;
}

int inectl_create_db(int argc, char **argv)
{
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__CreateDatabase cd = INE__V1__CREATE_DATABASE__INIT;
    uint32_t uid = 0;
    int on, rc;
    for (int i = 0; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return inectl_fail("create db: '%s' needs a value", k), 2;
        if (!strcmp(k, "name")) cd.name = (char *)v;
        else if (!strcmp(k, "port")) { if (parse_u32(k, v, 65535, &cd.port)) return 2; }
        else if (!strcmp(k, "shard_node")) { if (parse_u32(k, v, UINT32_MAX, &cd.shard_node_uid)) return 2; }
        else if (!strcmp(k, "shard_address")) cd.shard_address = (char *)v;
        else if (!strcmp(k, "uid")) { if (parse_u32(k, v, UINT32_MAX, &cd.db_uid)) return 2; }
        else if (!strcmp(k, "data_internode_encryption")) {
            if (parse_switch(v, &on)) return 2;
            cd.encryption_opt_case = INE__V1__CREATE_DATABASE__ENCRYPTION_OPT_DATA_INTERNODE_ENCRYPTION;
            cd.data_internode_encryption = on;
        } else return inectl_fail("create db: unknown keyword '%s' (see inectl --help)", k), 2;
    }
    if (!cd.name || !cd.port || !cd.shard_node_uid || !cd.shard_address)
        return inectl_fail("create db needs name, port, shard_node and shard_address"), 2;
    req.op_case = INE__V1__POLICY_REQUEST__OP_CREATE_DATABASE;
    req.create_database = &cd;
    if ((rc = inectl_policy_send(&req, "create db refused", &uid, NULL))) return rc;
    if (!inectl_g.json) printf("db:%u %s created (port %u, shard on node %u at %s)\n", uid, cd.name, cd.port, cd.shard_node_uid, cd.shard_address);
    return 0;
}

int inectl_delete_db(int argc, char **argv)
{
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__DeleteDatabase dd = INE__V1__DELETE_DATABASE__INIT;
    proj_state st;
    const proj_db *d;
    int rc;
    if (argc != 1) return inectl_fail("usage: delete db <uid|name>"), 2;
    if (inectl_load_state(&st)) return proj_free(&st), 1;
    if (!(d = find_db(&st, argv[0]))) return proj_free(&st), 1;
    dd.db_uid = d->uid;
    req.op_case = INE__V1__POLICY_REQUEST__OP_DELETE_DATABASE;
    req.delete_database = &dd;
    rc = inectl_policy_send(&req, "delete db refused", NULL, NULL);
    if (!rc && !inectl_g.json) printf("db:%u %s deleted\n", d->uid, d->name);
    proj_free(&st);
    return rc;
}

static const char *onoff(int v) { return v ? "enabled" : "disabled"; }

static long days_left(int64_t not_after) { return (long)((not_after - ine_clock_now()) / INE_SEC_PER_DAY); }

int inectl_info(int argc, char **argv)
{
    proj_state st;
    char ts[40];
    int rc = 0;
    if (!(argc == 1 && !strcmp(argv[0], "cluster")) && !(argc == 2 && !strcmp(argv[0], "db")))
        return inectl_fail("usage: info cluster | info db <uid|name>"), 2;
    if (inectl_load_state(&st)) return proj_free(&st), 1;
    if (!strcmp(argv[0], "cluster")) {
        size_t nodes = 0, dbs = 0;
        for (size_t i = 0; i < st.n_nodes; i++) nodes += !st.nodes[i].removed;
        for (size_t i = 0; i < st.n_dbs; i++) dbs += !st.dbs[i].deleted;
        if (inectl_g.json) {
            json_t *j = proj_to_json(&st);
            json_dumpf(json_object_get(j, "cluster"), stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            putchar('\n');
            json_decref(j);
        } else {
            printf("cluster:                   %s\nuid:                       %s\ncreated:                   %s\n", st.cluster.name,
                   st.cluster.uid, ine_clock_fmt(st.cluster.created_us, ts, sizeof ts));
            printf("nodes:                     %zu\ndatabases:                 %zu\n", nodes, dbs);
            printf("data_internode_encryption: %s (default for new databases)\n", onoff(st.cluster.default_data_internode_encryption));
            printf("rotation:                  every %lld days, certificates valid %lld days\n",
                   (long long)(st.cluster.rotation_period_s / INE_SEC_PER_DAY), (long long)(st.cluster.cert_validity_s / INE_SEC_PER_DAY));
            if (st.ca.present)
                printf("cluster CA:                serial %s, expires %s (%ld days left)\n", st.ca.cert.serial_hex,
                       ine_clock_fmt(st.ca.cert.not_after * INE_USEC_PER_SEC, ts, sizeof ts), days_left(st.ca.cert.not_after));
            else
                printf("cluster CA:                not created yet (is ine-ca running?)\n");
            printf("log seq:                   %llu\n", (unsigned long long)st.applied_seq);
        }
    } else {
        const proj_db *d = find_db(&st, argv[1]);
        if (!d) rc = 1;
        else if (inectl_g.json)
            printf("{\"uid\": %u, \"name\": \"%s\", \"port\": %u, \"shard_node\": %u, \"shard_address\": \"%s\", "
                   "\"data_internode_encryption\": %s}\n",
                   d->uid, d->name, d->port, d->shard_node_uid, d->shard_address, d->data_internode_encryption ? "true" : "false");
        else
            printf("db:%u %s\n  port:                      %u\n  shard:                     node %u at %s\n"
                   "  data_internode_encryption: %s\n",
                   d->uid, d->name, d->port, d->shard_node_uid, d->shard_address, onoff(d->data_internode_encryption));
    }
    proj_free(&st);
    return rc;
}

/* The consensus section: where this node's log commits, and how that looks now. */
static void print_consensus(json_t *q)
{
    json_t *m, *v;
    size_t i;
    if (!strcmp(json_string_value(json_object_get(q, "mode")), "local")) {
        printf("CONSENSUS: none (this data dir's log is the only copy: no etcd.conf)\n\n");
        return;
    }
    v = json_object_get(q, "ca_holder");
    printf("CONSENSUS: etcd, %zu members, %lld healthy, leader %s, quorum %s\n  CA lease: %s\n",
           json_array_size(json_object_get(q, "members")), (long long)json_integer_value(json_object_get(q, "healthy_members")),
           json_is_string(json_object_get(q, "leader")) ? json_string_value(json_object_get(q, "leader")) : "none",
           json_is_true(json_object_get(q, "quorum")) ? "yes" : "NO (writes are refused)",
           json_is_string(v) ? json_string_value(v) : "nobody holds it");
    if ((v = json_object_get(q, "error"))) printf("  etcd: %s\n", json_string_value(v));
    printf("%-8s %-17s %-32s %-8s %s\n", "MEMBER", "ID", "CLIENT URLS", "HEALTHY", "LEADER");
    json_array_foreach(json_object_get(q, "members"), i, m)
        printf("%-8s %-17s %-32s %-8s %s\n", json_string_value(json_object_get(m, "name")),
               json_string_value(json_object_get(m, "id")), json_string_value(json_object_get(m, "client_urls")),
               json_is_true(json_object_get(m, "healthy")) ? "yes" : "no", json_is_true(json_object_get(m, "leader")) ? "yes" : "");
    putchar('\n');
}

int inectl_status(int argc, char **argv)
{
    json_t *q = NULL;
    proj_state st;
    char ts[40];
    (void)argv;
    if (argc) return inectl_fail("usage: status | status certificates"), 2;
    if (inectl_load_state(&st)) return proj_free(&st), 1;
    if (quorum_status(inectl_g.data_dir, &q) < 0) {
        proj_free(&st);
        return inectl_fail("%s", ine_err_msg());
    }
    if (inectl_g.json) {
        json_t *j = proj_to_json(&st);
        json_object_set_new(j, "consensus", q);
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
        proj_free(&st);
        return 0;
    }
    printf("CLUSTER: %s (uid %s), log at seq %llu\n\n", st.cluster.name, st.cluster.uid, (unsigned long long)st.applied_seq);
    print_consensus(q);
    json_decref(q);
    printf("NODES:\n%-5s %-40s %s\n", "UID", "ADDRESS", "NAME");
    for (size_t i = 0; i < st.n_nodes; i++)
        if (!st.nodes[i].removed) printf("%-5u %-40s %s\n", st.nodes[i].uid, st.nodes[i].address, st.nodes[i].name);
    printf("\nDATABASES:\n%-5s %-20s %-6s %-6s %-24s %s\n", "UID", "NAME", "PORT", "SHARD", "SHARD ADDRESS", "DATA_INTERNODE_ENCRYPTION");
    for (size_t i = 0; i < st.n_dbs; i++) {
        const proj_db *d = &st.dbs[i];
        if (!d->deleted)
            printf("%-5u %-20s %-6u %-6u %-24s %s\n", d->uid, d->name, d->port, d->shard_node_uid, d->shard_address,
                   onoff(d->data_internode_encryption));
    }
    printf("\nCERTIFICATES:\n%-5s %-8s %-12s %-34s %-21s %9s  %s\n", "NODE", "PLANE", "SOURCE", "SERIAL", "EXPIRES", "DAYS LEFT", "ACTIVE");
    for (size_t i = 0; i < st.n_certs; i++) {
        const proj_cert *c = &st.certs[i];
        const proj_activation *a = proj_activation_find(&st, c->node_uid, c->plane);
        const proj_node *n = proj_node_find(&st, c->node_uid);
        if (!n || n->removed) continue;
        printf("%-5u %-8s %-12s %-34s %-21s %9ld  %s\n", c->node_uid, proj_plane_name(c->plane), proj_source_name(c->source),
               c->cert.serial_hex, ine_clock_fmt(c->cert.not_after * INE_USEC_PER_SEC, ts, sizeof ts), days_left(c->cert.not_after),
               a && a->fingerprint && !strcmp(a->fingerprint, c->cert.fingerprint) ? "yes" : "not yet");
    }
    printf("\nALERTS:%s\n", st.n_alerts ? "" : " none");
    for (size_t i = 0; i < st.n_alerts; i++)
        printf("  %-8s %-40s %s\n", proj_severity_name(st.alerts[i].severity), st.alerts[i].name, st.alerts[i].description);
    proj_free(&st);
    return 0;
}
