/* commit_conf.c — a data dir's etcd.conf (commit.h): parsing it, and the etcd client every
 * ine process opens from it; and the notes a committer hands its node's mirror. Below both
 * the front door and its etcd backend. */
#include "commit_int.h"

#include "datadir.h"
#include "err.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static char *commit__trim(char *s)
{
    char *e;
    while (isspace((unsigned char)*s)) s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int commit__conf_set(commit_etcd_conf *c, const char *k, const char *v, const char *path, int line)
{
    struct { const char *name; char *dst; size_t len; } strs[] = {
        {"endpoints", c->endpoints, sizeof c->endpoints}, {"cacert", c->cacert, sizeof c->cacert},
        {"cert", c->cert, sizeof c->cert},                {"key", c->key, sizeof c->key},
        {"prefix", c->prefix, sizeof c->prefix},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (strcmp(k, strs[i].name)) continue;
        if (strlen(v) >= strs[i].len) return ine_err(INE_EINVAL, "%s:%d: %s is too long", path, line, k);
        strcpy(strs[i].dst, v);
        return INE_OK;
    }
    if (!strcmp(k, "quota_bytes")) {
        char *end;
        long long q = strtoll(v, &end, 10);
        if (*end || q < (1LL << 20) || q > (64LL << 30))
            return ine_err(INE_EINVAL, "%s:%d: quota_bytes must be 1 MiB to 64 GiB in bytes, not '%s'", path, line, v);
        c->quota_bytes = q;
        return INE_OK;
    }
    if (!strcmp(k, "peer_port") || !strcmp(k, "peer_local_port")) {
        char *end;
        long port = strtol(v, &end, 10);
        if (*end || port < 1 || port > 65535) return ine_err(INE_EINVAL, "%s:%d: %s must be 1 to 65535, not '%s'", path, line, k, v);
        *(k[5] == 'l' ? &c->peer_local_port : &c->peer_port) = (int)port;
        return INE_OK;
    }
    if (!strcmp(k, "timeout_ms")) {
        char *end;
        long ms = strtol(v, &end, 10);
        if (*end || ms < 50 || ms > 60000)
            return ine_err(INE_EINVAL, "%s:%d: timeout_ms must be 50 to 60000, not '%s'", path, line, v);
        c->timeout_ms = (int)ms;
        return INE_OK;
    }
    return ine_err(INE_EINVAL, "%s:%d: unknown setting '%s'", path, line, k);
}

int commit_conf_load(const char *data_dir, commit_etcd_conf *out)
{
    char path[4096], buf[2048];
    FILE *f;
    int line = 0, rc = INE_OK;

    memset(out, 0, sizeof *out);
    strcpy(out->prefix, "/ine/");
    out->quota_bytes = 2LL << 30; /* etcd's own default */
    out->peer_port = 2380;
    out->peer_local_port = 2390;
    GUARD(datadir_path(data_dir, COMMIT_CONF_NAME, path, sizeof path));
    if (!(f = fopen(path, "r"))) {
        if (errno == ENOENT) return ine_err(INE_ENOTFOUND, "%s does not exist", path);
        return ine_err(INE_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    while (fgets(buf, sizeof buf, f)) {
        char *s = commit__trim(buf), *eq;
        line++;
        if (!*s || *s == '#') continue;
        if (!(eq = strchr(s, '='))) {
            rc = ine_err(INE_EINVAL, "%s:%d: expected key=value", path, line);
            break;
        }
        *eq = 0;
        if ((rc = commit__conf_set(out, commit__trim(s), commit__trim(eq + 1), path, line)) < 0) break;
    }
    fclose(f);
    if (rc == INE_OK && !out->endpoints[0]) rc = ine_err(INE_EINVAL, "%s names no endpoints", path);
    if (rc == INE_OK && (out->prefix[0] != '/' || out->prefix[strlen(out->prefix) - 1] != '/'))
        rc = ine_err(INE_EINVAL, "%s: prefix must start and end with '/', not '%s'", path, out->prefix);
    return rc;
}

int commit_conf_etcd_open(const commit_etcd_conf *conf, int timeout_ms, etcd_t **out)
{
    etcd_opts eo = {.endpoints = conf->endpoints,
                    .cacert = conf->cacert[0] ? conf->cacert : NULL,
                    .cert = conf->cert[0] ? conf->cert : NULL,
                    .key = conf->key[0] ? conf->key : NULL,
                    .timeout_ms = timeout_ms ? timeout_ms : conf->timeout_ms};
    return etcd_open(&eo, out);
}

/* The PUSH end of the mirror's inbox (COMMIT_NOTES_FILE). A missing mirror costs nothing: no
 * message is queued for a peer that is not connected (ZMQ_IMMEDIATE), none ever blocks. */
void commit__notes_open(commit_t *c, void *zctx, const char *run_dir)
{
    char ep[4200];
    int zero = 0, one = 1, hwm = 1024;
    snprintf(ep, sizeof ep, "ipc://%s/" COMMIT_NOTES_FILE, run_dir);
    if (!(c->notes = zmq_socket(zctx, ZMQ_PUSH))) return;
    if (zmq_setsockopt(c->notes, ZMQ_LINGER, &zero, sizeof zero) != 0 || zmq_setsockopt(c->notes, ZMQ_IMMEDIATE, &one, sizeof one) != 0 ||
        zmq_setsockopt(c->notes, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 || zmq_connect(c->notes, ep) != 0) {
        zmq_close(c->notes);
        c->notes = NULL;
    }
}

void commit__note(commit_t *c, uint64_t first_seq, uint8_t *const *bufs, const size_t *lens, size_t n)
{
    for (size_t i = 0; c->notes && i < n; i++) {
        /* One part per record: a multipart send that stopped half way would glue the next on. */
        uint8_t *msg = malloc(8 + lens[i]);
        uint64_t v = first_seq + i;
        int sent;
        if (!msg) return;
        for (int k = 7; k >= 0; k--, v >>= 8) msg[k] = (uint8_t)v;
        memcpy(msg + 8, bufs[i], lens[i]);
        sent = zmq_send(c->notes, msg, 8 + lens[i], ZMQ_DONTWAIT);
        free(msg);
        if (sent < 0) return;
    }
}
