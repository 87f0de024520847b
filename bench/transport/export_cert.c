/* export_cert.c — the transport benchmark's key export: writes a node's data-plane
 * certificate (leaf + chain), its private key (unsealed from the log with seal.key) and the
 * cluster CA certificate as PEM files, so stunnel and HAProxy can run the same mutual-TLS
 * tunnel as ine with the same identities. Benchmark-only: it handles private keys, writes
 * them 0600 into the benchmark's scratch directory and never prints them.
 *
 * Built by bench/transport/run.sh against build-rel's static libraries (it is not part of
 * the CMake build): export_cert DATA_DIR NODE CERT_OUT KEY_OUT CA_OUT */
#include <fcntl.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "err.h"
#include "evlog.h"
#include "pki.h"
#include "proj.h"
#include "seal.h"
#include "sealed.h"

static int xc__write_text(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "w");
    if (!f) return ine_err(INE_EIO, "cannot create %s", path);
    fputs(a ? a : "", f);
    fputs(b ? b : "", f);
    if (fclose(f)) return ine_err(INE_EIO, "cannot write %s", path);
    return INE_OK;
}

static int xc__write_key(const pki_key *k, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok;
    if (!f) {
        if (fd >= 0) close(fd);
        return ine_err(INE_EIO, "cannot create %s", path);
    }
    ok = PEM_write_PrivateKey(f, pki_evp(k), NULL, NULL, 0, NULL, NULL) == 1;
    if (fclose(f) || !ok) return ine_err(INE_EIO, "cannot write %s", path);
    return INE_OK;
}

int main(int argc, char **argv)
{
    char path[4096];
    seal_key *seal = NULL;
    evlog_t *log = NULL;
    pki_key *key = NULL;
    proj_state st;
    const proj_cert *pc;
    evlog_opts eo = {.read_only = 1};
    int rc = INE_OK;

    if (argc != 6) {
        fprintf(stderr, "usage: export_cert DATA_DIR NODE CERT_OUT KEY_OUT CA_OUT\n");
        return 2;
    }
    proj_init(&st);
    snprintf(path, sizeof path, "%s/seal.key", argv[1]);
    GUARD_GOTO(seal_key_load(path, &seal), out);
    snprintf(path, sizeof path, "%s/log", argv[1]);
    GUARD_GOTO(evlog_open(path, &eo, &log), out);
    GUARD_GOTO(proj_update(log, &st), out);
    if (!(pc = proj_cert_find(&st, (uint32_t)strtoul(argv[2], NULL, 10), 2))) {
        rc = ine_err(INE_ENOTFOUND, "node %s has no data-plane certificate yet", argv[2]);
        goto out;
    }
    GUARD_GOTO(xc__write_text(argv[3], pc->cert.cert_pem, pc->cert.chain_pem), out);
    GUARD_GOTO(sealed_load_key(log, seal, pc->issued_seq, &key), out);
    GUARD_GOTO(xc__write_key(key, argv[4]), out);
    if (!st.ca.present) {
        rc = ine_err(INE_ENOTFOUND, "the cluster has no CA yet");
        goto out;
    }
    GUARD_GOTO(xc__write_text(argv[5], st.ca.cert.cert_pem, NULL), out);
out:
    if (rc < 0) fprintf(stderr, "export_cert: %s\n", ine_err_msg());
    pki_key_free(key);
    proj_free(&st);
    if (log) evlog_close(log);
    seal_key_free(seal);
    return rc < 0 ? 1 : 0;
}
