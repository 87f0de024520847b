/* rpc.c — ZeroMQ REQ/REP over ipc sockets in the data directory, with an instance lock. */
#include "rpc.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

struct rpc_server {
    void *sock;
    int lock_fd;
    char path[4096];
};

static int rpc__paths(const char *run_dir, const char *name, char *sock_path, size_t slen, char *ep, size_t elen)
{
    int n = snprintf(sock_path, slen, "%s/%s.sock", run_dir, name);
    if (n < 0 || (size_t)n >= slen || (size_t)n + 6 >= elen || n > 100)
        /* ipc endpoints are Unix socket paths: 107 bytes at most. */
        return ine_err(INE_EINVAL, "run directory %s is too long for an ipc socket path", run_dir);
    snprintf(ep, elen, "ipc://%s", sock_path);
    return INE_OK;
}

int rpc_server_open(void *zctx, const char *run_dir, const char *name, rpc_server **out)
{
    rpc_server *s;
    char lock_path[4096], ep[4200];
    int rc = INE_OK, linger = 0;

    *out = NULL;
    if (!(s = calloc(1, sizeof *s))) return ine_err(INE_ENOMEM, "out of memory");
    s->lock_fd = -1;
    GUARD_GOTO(rpc__paths(run_dir, name, s->path, sizeof s->path, ep, sizeof ep), err);
    if (mkdir(run_dir, 0700) != 0 && errno != EEXIST) {
        rc = ine_err(INE_EIO, "cannot create %s: %s", run_dir, strerror(errno));
        goto err;
    }
    snprintf(lock_path, sizeof lock_path, "%s/%s.lock", run_dir, name);
    s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        rc = ine_err(INE_EIO, "cannot open %s: %s", lock_path, strerror(errno));
        goto err;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = ine_err(INE_EEXIST, "another ine-%s is already running for this data directory (%s is locked)", name,
                     lock_path);
        goto err;
    }
    /* We hold the lock: a socket file left by a dead instance is stale. */
    unlink(s->path);
    if (!(s->sock = zmq_socket(zctx, ZMQ_REP))) {
        rc = ine__err_zmq("zmq_socket");
        goto err;
    }
    GUARD_ZMQ(zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger), err);
    {
        int64_t max = RPC_MAX_MSG;
        GUARD_ZMQ(zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &max, sizeof max), err);
    }
    GUARD_ZMQ(zmq_bind(s->sock, ep), err);
    chmod(s->path, 0600);
    *out = s;
    return INE_OK;
err:
    if (s->sock) zmq_close(s->sock);
    if (s->lock_fd >= 0) close(s->lock_fd);
    free(s);
    return rc;
}

void rpc_server_close(rpc_server *s)
{
    if (!s) return;
    zmq_close(s->sock);
    unlink(s->path);
    close(s->lock_fd);
    free(s);
}

void *rpc_server_socket(rpc_server *s) { return s->sock; }

static int rpc__recv(void *sock, int flags, uint8_t **buf, size_t *len)
{
    zmq_msg_t m;
    int rc;
    *buf = NULL;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, flags) < 0) {
        zmq_msg_close(&m);
        if (errno == EAGAIN) return 0;
        return ine__err_zmq("zmq_msg_recv");
    }
    *len = zmq_msg_size(&m);
    if ((*buf = malloc(*len ? *len : 1))) memcpy(*buf, zmq_msg_data(&m), *len);
    rc = *buf ? 1 : ine_err(INE_ENOMEM, "out of memory");
    zmq_msg_close(&m);
    return rc;
}

int rpc_server_recv(rpc_server *s, uint8_t **buf, size_t *len) { return rpc__recv(s->sock, ZMQ_DONTWAIT, buf, len); }

int rpc_server_send(rpc_server *s, const uint8_t *buf, size_t len)
{
    if (zmq_send(s->sock, buf, len, 0) < 0) return ine__err_zmq("zmq_send");
    return INE_OK;
}

/* 1 when nothing listens on the ipc socket file (left by an instance that was killed). */
static int rpc__refused(const char *sock_path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd, refused;
    if (strlen(sock_path) >= sizeof a.sun_path) return 0;
    strcpy(a.sun_path, sock_path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) return 0;
    refused = connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno == ECONNREFUSED;
    close(fd);
    return refused;
}

int rpc_call(void *zctx, const char *run_dir, const char *name, const uint8_t *req, size_t len, int timeout_ms,
             uint8_t **reply, size_t *reply_len)
{
    char sock_path[4096], ep[4200];
    void *sock = NULL;
    int rc = INE_OK, linger = 0;
    struct stat st;

    *reply = NULL;
    GUARD(rpc__paths(run_dir, name, sock_path, sizeof sock_path, ep, sizeof ep));
    /* ZeroMQ would connect to a missing ipc path and wait silently: say it plainly instead. */
    if (stat(sock_path, &st) != 0)
        return ine_err(INE_EAGAIN, "ine-%s is not running (no %s)", name, sock_path);
    /* A socket left by a killed instance: ZeroMQ would queue the request and wait out the timeout. */
    if (rpc__refused(sock_path))
        return ine_err(INE_EAGAIN, "ine-%s is not running (%s is left from an instance that stopped)", name, sock_path);
    if (!(sock = zmq_socket(zctx, ZMQ_REQ))) return ine__err_zmq("zmq_socket");
    GUARD_ZMQ(zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger), out);
    GUARD_ZMQ(zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms), out);
    GUARD_ZMQ(zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms), out);
    GUARD_ZMQ(zmq_connect(sock, ep), out);
    if (zmq_send(sock, req, len, 0) < 0) {
        rc = errno == EAGAIN ? ine_err(INE_EAGAIN, "ine-%s did not take the request within %d ms", name, timeout_ms)
                             : ine__err_zmq("zmq_send");
        goto out;
    }
    rc = rpc__recv(sock, 0, reply, reply_len);
    if (rc == 0) rc = ine_err(INE_EAGAIN, "ine-%s did not answer within %d ms (%s)", name, timeout_ms, ep);
    else if (rc == 1) rc = INE_OK;
out:
    zmq_close(sock);
    return rc;
}
