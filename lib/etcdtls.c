/* etcdtls.c — the etcd member's peer URLs and peer files (etcdtls.h). */
#include "etcdtls.h"

#include "datadir.h"
#include "err.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int etcdtls_loopback(const char *address)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(address, "localhost")) return 1;
    if (inet_pton(AF_INET, address, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, address, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

int etcdtls_peer_urls(const char *address, int peer_port, int local_port, char *advertise, size_t alen, char *listen,
                      size_t llen)
{
    int v6 = strchr(address, ':') != NULL, loop = etcdtls_loopback(address), w1, w2;
    w1 = snprintf(advertise, alen, "%s://%s%s%s:%d", loop ? "http" : "https", v6 ? "[" : "", address, v6 ? "]" : "", peer_port);
    if (loop) w2 = snprintf(listen, llen, "%s", advertise);
    else w2 = snprintf(listen, llen, "http://127.0.0.1:%d", local_port);
    if (w1 < 0 || (size_t)w1 >= alen || w2 < 0 || (size_t)w2 >= llen) return ine_err(INE_EINVAL, "peer URLs for %s do not fit", address);
    return INE_OK;
}

/* Write text to dir/name with this mode, creating it (it must not exist). */
static int etcdtls__write(const char *dir, const char *name, const char *text, size_t len, mode_t mode)
{
    char p[DATADIR_MAX + 64];
    int fd, ok;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if ((fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0) return ine_err(INE_EIO, "cannot create %s: %s", p, strerror(errno));
    ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    ok &= close(fd) == 0;
    return ok ? INE_OK : ine_err(INE_EIO, "cannot write %s: %s", p, strerror(errno));
}

static int etcdtls__key_pem(EVP_PKEY *key, char **pem, size_t *len)
{
    BIO *b = BIO_new(BIO_s_secmem());
    BUF_MEM *m = NULL;
    if (!b || PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) != 1 || BIO_get_mem_ptr(b, &m) != 1 ||
        !(*pem = OPENSSL_secure_malloc(m->length + 1))) {
        BIO_free(b);
        return ine_err(INE_ECRYPTO, "cannot encode the peer key");
    }
    memcpy(*pem, m->data, m->length);
    (*pem)[m->length] = 0;
    *len = m->length;
    BIO_free(b);
    return INE_OK;
}

/* Remove etcd/tls.* except `keep` (a directory name). */
static void etcdtls__prune(const char *etcd_dir, const char *keep)
{
    DIR *d = opendir(etcd_dir);
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d))) {
        char p[DATADIR_MAX + 300], f[DATADIR_MAX + 600];
        if (strncmp(e->d_name, "tls.", 4) || !strcmp(e->d_name, keep)) continue;
        snprintf(p, sizeof p, "%s/%s", etcd_dir, e->d_name);
        if (unlink(p) == 0) continue; /* a stray symlink */
        for (const char *n = "peer.crt\0peer.key\0peer-ca.crt\0"; *n; n += strlen(n) + 1) {
            snprintf(f, sizeof f, "%s/%s", p, n);
            unlink(f);
        }
        rmdir(p);
    }
    closedir(d);
}

int etcdtls_install(const char *data_dir, const char *tag, const char *cert_chain_pem, EVP_PKEY *key, const char *roots_pem)
{
    char etcd_dir[DATADIR_MAX], dir[DATADIR_MAX + 80], name[80], link_tmp[DATADIR_MAX + 16], link[DATADIR_MAX];
    char *kpem = NULL;
    size_t klen = 0;
    int rc;
    for (const char *t = tag; *t; t++)
        if (!((*t >= '0' && *t <= '9') || (*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') || *t == '-'))
            return ine_err(INE_EINVAL, "peer file tag '%s' must be letters, digits or '-'", tag);
    GUARD(datadir_path(data_dir, "etcd", etcd_dir, sizeof etcd_dir));
    GUARD(datadir_path(data_dir, ETCDTLS_DIR, link, sizeof link));
    if (mkdir(etcd_dir, 0700) != 0 && errno != EEXIST) return ine_err(INE_EIO, "cannot create %s: %s", etcd_dir, strerror(errno));
    {
        /* A fresh name each time (the same certificate may be installed again), and the
         * directory in use now kept until the swap. */
        char cur[128] = "";
        struct timespec ts;
        ssize_t n = readlink(link, cur, sizeof cur - 1);
        cur[n > 0 ? n : 0] = 0;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(name, sizeof name, "tls.%.40s-%lld%09ld", tag, (long long)ts.tv_sec, ts.tv_nsec);
        etcdtls__prune(etcd_dir, cur);
    }
    snprintf(dir, sizeof dir, "%s/%s", etcd_dir, name);
    if (mkdir(dir, 0700) != 0) return ine_err(INE_EIO, "cannot create %s: %s", dir, strerror(errno));
    GUARD_GOTO(etcdtls__key_pem(key, &kpem, &klen), out);
    GUARD_GOTO(etcdtls__write(dir, "peer.key", kpem, klen, 0600), out);
    GUARD_GOTO(etcdtls__write(dir, "peer.crt", cert_chain_pem, strlen(cert_chain_pem), 0644), out);
    GUARD_GOTO(etcdtls__write(dir, "peer-ca.crt", roots_pem, strlen(roots_pem), 0644), out);
    snprintf(link_tmp, sizeof link_tmp, "%s.new", link);
    unlink(link_tmp);
    if (symlink(name, link_tmp) != 0 || rename(link_tmp, link) != 0) {
        rc = ine_err(INE_EIO, "cannot point %s at %s: %s", link, name, strerror(errno));
        unlink(link_tmp);
        goto out;
    }
    etcdtls__prune(etcd_dir, name);
    rc = INE_OK;
out:
    if (kpem) OPENSSL_secure_clear_free(kpem, klen);
    return rc;
}
