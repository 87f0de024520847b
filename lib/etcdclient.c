/* etcdclient.c — the node-local CA of etcd's client port (etcdtls.h, "client port"). */
#include "etcdtls.h"

#include "datadir.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ETCDCLIENT__DAYS 3650

static int etcdclient__ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    if (!(ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value))) return -1;
    ok = X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A certificate for key, signed by issuer (self-signed when issuer is NULL). */
static X509 *etcdclient__cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, const char *eku, const char *san)
{
    X509 *x = X509_new();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    int ok = x && RAND_bytes(serial, sizeof serial) == 1;
    serial[0] &= 0x7f;
    ok = ok && (bn = BN_bin2bn(serial, sizeof serial, NULL)) && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) &&
         X509_set_version(x, 2) == 1 && X509_gmtime_adj(X509_getm_notBefore(x), -300) &&
         X509_gmtime_adj(X509_getm_notAfter(x), (long)ETCDCLIENT__DAYS * 86400) && X509_set_pubkey(x, key) == 1 &&
         X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC, (const unsigned char *)"ine", -1, -1, 0) == 1 &&
         (!cn || X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1) &&
         X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x)) == 1;
    if (ok && !issuer)
        ok = !etcdclient__ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
             !etcdclient__ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             !etcdclient__ext(x, x, NID_subject_key_identifier, "hash");
    if (ok && issuer)
        ok = !etcdclient__ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
             !etcdclient__ext(x, issuer, NID_key_usage, "critical,digitalSignature") &&
             !etcdclient__ext(x, issuer, NID_ext_key_usage, eku) &&
             !etcdclient__ext(x, issuer, NID_authority_key_identifier, "keyid") && (!san || !etcdclient__ext(x, issuer, NID_subject_alt_name, san));
    ok = ok && X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int etcdclient__write(const char *dir, const char *name, X509 *x, EVP_PKEY *key)
{
    char p[DATADIR_MAX + 64];
    FILE *f;
    int fd, ok;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if ((fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, key ? 0600 : 0644)) < 0)
        return ine_err(INE_EIO, "cannot create %s: %s", p, strerror(errno));
    if (!(f = fdopen(fd, "w"))) {
        close(fd);
        return ine_err(INE_EIO, "cannot write %s", p);
    }
    ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1 : PEM_write_X509(f, x) == 1;
    ok = ok && fflush(f) == 0 && fsync(fd) == 0;
    ok &= fclose(f) == 0;
    return ok ? INE_OK : ine_err(INE_EIO, "cannot write %s", p);
}

int etcdtls_client_prepare(const char *data_dir, const char *extra_ips, int *created)
{
    char dir[DATADIR_MAX], tmp[DATADIR_MAX + 8], etcd_dir[DATADIR_MAX], san[1024];
    EVP_PKEY *ca_key = NULL, *srv_key = NULL, *cli_key = NULL;
    X509 *ca = NULL, *srv = NULL, *cli = NULL;
    struct stat st;
    int rc = INE_OK;
    *created = 0;
    GUARD(datadir_path(data_dir, "etcd", etcd_dir, sizeof etcd_dir));
    GUARD(datadir_path(data_dir, ETCDTLS_CLIENT_DIR, dir, sizeof dir));
    if (stat(dir, &st) == 0) return INE_OK; /* made before: the member and its clients already trust it */
    snprintf(san, sizeof san, "IP:127.0.0.1,IP:::1,DNS:localhost");
    for (const char *p = extra_ips ? extra_ips : ""; *p;) {
        size_t n = strcspn(p, ",");
        size_t off = strlen(san);
        if (n && n < 64) snprintf(san + off, sizeof san - off, ",IP:%.*s", (int)n, p);
        p += n + (p[n] == ',');
    }
    if (mkdir(etcd_dir, 0700) != 0 && errno != EEXIST) return ine_err(INE_EIO, "cannot create %s: %s", etcd_dir, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s.new", dir);
    {
        /* A half-made directory from a crash: remove it and start again. */
        const char *names[] = {"ca.crt", "server.crt", "server.key", "client.crt", "client.key"};
        for (size_t i = 0; i < 5; i++) {
            char f[DATADIR_MAX + 32];
            snprintf(f, sizeof f, "%s/%s", tmp, names[i]);
            unlink(f);
        }
        rmdir(tmp);
    }
    if (mkdir(tmp, 0700) != 0) return ine_err(INE_EIO, "cannot create %s: %s", tmp, strerror(errno));
    if (!(ca_key = EVP_EC_gen("P-256")) || !(srv_key = EVP_EC_gen("P-256")) || !(cli_key = EVP_EC_gen("P-256")) ||
        !(ca = etcdclient__cert(ca_key, "ine etcd client CA (this node only)", NULL, NULL, NULL, NULL)) ||
        /* The member's gateway presents the server certificate as a client to the member
         * itself (shared/etcd-notes.md): it needs clientAuth too. */
        !(srv = etcdclient__cert(srv_key, "ine etcd member", ca, ca_key, "serverAuth,clientAuth", san)) ||
        !(cli = etcdclient__cert(cli_key, NULL, ca, ca_key, "clientAuth", NULL))) {
        rc = ine_err(INE_ECRYPTO, "cannot make etcd's client certificates");
        goto out;
    }
    GUARD_GOTO(etcdclient__write(tmp, "ca.crt", ca, NULL), out);
    GUARD_GOTO(etcdclient__write(tmp, "server.crt", srv, NULL), out);
    GUARD_GOTO(etcdclient__write(tmp, "server.key", NULL, srv_key), out);
    GUARD_GOTO(etcdclient__write(tmp, "client.crt", cli, NULL), out);
    GUARD_GOTO(etcdclient__write(tmp, "client.key", NULL, cli_key), out);
    if (rename(tmp, dir) != 0) {
        rc = ine_err(INE_EIO, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
        goto out;
    }
    *created = 1;
out:
    X509_free(ca);
    X509_free(srv);
    X509_free(cli);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);
    EVP_PKEY_free(cli_key);
    return rc;
}
