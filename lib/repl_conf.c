/* repl_conf.c — replica.conf, what makes a data dir a follower's: `key value` lines
 * (node_uid, master_address, master_port, cluster_uid), each validated on load, written
 * atomically (temporary file, fsync, rename, directory fsync) so a crash never leaves a
 * half-written one. Mode 0644: nothing in it is secret. */
#include "repl.h"
#include "datadir.h"
#include "err.h"
#include "valid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPL__CONF_MAX 4096

static int repl__uid_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n >= sizeof(((repl_conf *)0)->cluster_uid)) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_')) return 0;
    return 1;
}

static int repl__check(const repl_conf *c, const char *where)
{
    if (c->node_uid < 1) return ine_err(INE_EINVAL, "%s: node_uid must be a node uid (1 or more)", where);
    if (!valid_address(c->master_address) || strlen(c->master_address) >= sizeof c->master_address)
        return ine_err(INE_EINVAL, "%s: master_address '%s' is not an IP address or host name", where, c->master_address);
    if (c->master_port < 1 || c->master_port > 65535)
        return ine_err(INE_EINVAL, "%s: master_port %d is outside 1-65535", where, c->master_port);
    if (!repl__uid_ok(c->cluster_uid))
        return ine_err(INE_EINVAL, "%s: cluster_uid '%s' is invalid (lowercase letters, digits, '.', '-', '_')", where,
                       c->cluster_uid);
    return INE_OK;
}

static int repl__num(const char *v, long max, long *out)
{
    char *end;
    long n;
    if (!*v || *v == '-' || *v == '+') return -1;
    errno = 0;
    n = strtol(v, &end, 10);
    if (*end || errno || n > max) return -1;
    *out = n;
    return 0;
}

int repl_conf_load(const char *data_dir, repl_conf *c)
{
    char path[DATADIR_MAX], line[512];
    unsigned seen = 0;
    int lineno = 0, rc = INE_OK;
    FILE *f;

    memset(c, 0, sizeof *c);
    GUARD(datadir_path(data_dir, REPL_CONF_FILE, path, sizeof path));
    if (!(f = fopen(path, "r"))) {
        if (errno == ENOENT) return ine_err(INE_ENOTFOUND, "%s is not a replica (no %s)", data_dir, REPL_CONF_FILE);
        return ine_err(INE_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    while (fgets(line, sizeof line, f)) {
        char *k = line, *v, *e;
        unsigned bit;
        long n;
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = ine_err(INE_EINVAL, "%s line %d is too long", path, lineno);
            goto out;
        }
        line[strcspn(line, "\r\n")] = 0;
        while (*k == ' ' || *k == '\t') k++;
        if (!*k || *k == '#') continue;
        if (!(v = strpbrk(k, " \t"))) {
            rc = ine_err(INE_EINVAL, "%s line %d: expected 'key value'", path, lineno);
            goto out;
        }
        *v++ = 0;
        while (*v == ' ' || *v == '\t') v++;
        for (e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t');) *--e = 0;
        if (!strcmp(k, "node_uid")) bit = 1;
        else if (!strcmp(k, "master_address")) bit = 2;
        else if (!strcmp(k, "master_port")) bit = 4;
        else if (!strcmp(k, "cluster_uid")) bit = 8;
        else {
            rc = ine_err(INE_EINVAL, "%s line %d: unknown key '%s'", path, lineno, k);
            goto out;
        }
        if (seen & bit) {
            rc = ine_err(INE_EINVAL, "%s line %d: '%s' is set twice", path, lineno, k);
            goto out;
        }
        seen |= bit;
        if (bit == 1 || bit == 4) {
            if (repl__num(v, bit == 1 ? 4294967295L : 65535, &n) < 0) {
                rc = ine_err(INE_EINVAL, "%s line %d: %s takes a number, not '%s'", path, lineno, k, v);
                goto out;
            }
            if (bit == 1) c->node_uid = (uint32_t)n;
            else c->master_port = (int)n;
        } else {
            char *dst = bit == 2 ? c->master_address : c->cluster_uid;
            size_t cap = bit == 2 ? sizeof c->master_address : sizeof c->cluster_uid;
            if (strlen(v) >= cap) {
                rc = ine_err(INE_EINVAL, "%s line %d: %s is too long", path, lineno, k);
                goto out;
            }
            memcpy(dst, v, strlen(v) + 1);
        }
    }
    if (ferror(f)) {
        rc = ine_err(INE_EIO, "cannot read %s", path);
        goto out;
    }
    if (seen != 15) {
        rc = ine_err(INE_EINVAL, "%s lacks %s", path, !(seen & 1) ? "node_uid" : !(seen & 2) ? "master_address"
                                                     : !(seen & 4) ? "master_port" : "cluster_uid");
        goto out;
    }
    rc = repl__check(c, path);
out:
    fclose(f);
    if (rc < 0) memset(c, 0, sizeof *c);
    return rc;
}

int repl_conf_save(const char *data_dir, const repl_conf *c)
{
    char path[DATADIR_MAX], tmp[DATADIR_MAX + 32], buf[REPL__CONF_MAX];
    int fd = -1, n, rc = INE_OK;
    size_t off = 0;

    GUARD(datadir_path(data_dir, REPL_CONF_FILE, path, sizeof path));
    GUARD(repl__check(c, path));
    n = snprintf(buf, sizeof buf, "node_uid %u\nmaster_address %s\nmaster_port %d\ncluster_uid %s\n", c->node_uid,
                 c->master_address, c->master_port, c->cluster_uid);
    if (n < 0 || (size_t)n >= sizeof buf) return ine_err(INE_EINVAL, "replica configuration too long");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644)) < 0)
        return ine_err(INE_EIO, "cannot create %s: %s", tmp, strerror(errno));
    if (fchmod(fd, 0644) != 0) {
        rc = ine_err(INE_EIO, "cannot set the mode of %s: %s", tmp, strerror(errno));
        goto fail;
    }
    while (off < (size_t)n) {
        ssize_t w = write(fd, buf + off, (size_t)n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = ine_err(INE_EIO, "cannot write %s: %s", tmp, strerror(w < 0 ? errno : EIO));
            goto fail;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        rc = ine_err(INE_EIO, "cannot sync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = ine_err(INE_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    if ((fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(fd) != 0)
        rc = ine_err(INE_EIO, "cannot sync directory %s: %s", data_dir, strerror(errno));
    if (fd >= 0) close(fd);
    return rc;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    return rc;
}
