/* inectl_etcd.c — `inectl etcd prepare [addresses A,B]`: the node-local CA and certificates of
 * its etcd member's client port (lib/etcdtls.h), made once, before the member first starts;
 * prints the settings that use them. `inectl node join` does the same for a joining node. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "datadir.h"
#include "err.h"
#include "etcdtls.h"
#include "inectl.h"

int inectl_etcd_prepare(int argc, char **argv)
{
    const char *dd = inectl_g.data_dir, *ips = NULL;
    char dir[DATADIR_MAX];
    int created = 0;
    for (int i = 0; i < argc; i += 2) {
        if (strcmp(argv[i], "addresses") || i + 1 >= argc)
            return inectl_fail("etcd prepare: unknown or incomplete keyword '%s' (usage: etcd prepare [addresses A,B])", argv[i]), 2;
        ips = argv[i + 1];
    }
    if (datadir_create(dd) < 0 || etcdtls_client_prepare(dd, ips, &created) < 0 ||
        datadir_path(dd, ETCDTLS_CLIENT_DIR, dir, sizeof dir) < 0)
        return inectl_fail("etcd prepare: %s", ine_err_msg());
    if (inectl_g.json) {
        json_t *o = json_pack("{s:b, s:s}", "created", created, "dir", dir);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
        return 0;
    }
    printf("%s etcd's client certificates in %s (keys 0600). The member (member.env):\n"
           "  ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379\n  ETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:2379\n"
           "  ETCD_CLIENT_CERT_AUTH=true\n  ETCD_TRUSTED_CA_FILE=%s/ca.crt\n  ETCD_CERT_FILE=%s/server.crt\n"
           "  ETCD_KEY_FILE=%s/server.key\n"
           "ine's processes (etcd.conf):\n  endpoints=https://127.0.0.1:2379\n  cacert=%s/ca.crt\n  cert=%s/client.crt\n"
           "  key=%s/client.key\n",
           created ? "made" : "kept", dir, dir, dir, dir, dir, dir, dir);
    return 0;
}
