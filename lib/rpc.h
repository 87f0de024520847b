/* rpc.h — local request/reply between the CLI and the services over ZeroMQ ipc sockets in
 * <data-dir>/run/, found by service name ("ca" -> ipc://<run>/ca.sock), so an operator never
 * types an endpoint. Messages are protobuf bytes; this module only moves them.
 *
 * A service also holds an exclusive lock (<run>/<name>.lock, flock) for as long as it runs:
 * a second instance is refused with a clear sentence instead of stealing the socket. */
#ifndef INE_RPC_H
#define INE_RPC_H

#include <stddef.h>
#include <stdint.h>

#define RPC_MAX_MSG (4u << 20) /* requests larger than this are refused */

typedef struct rpc_server rpc_server;

/* Lock the instance and bind ipc://<run_dir>/<name>.sock (REP). */
int rpc_server_open(void *zctx, const char *run_dir, const char *name, rpc_server **out);
void rpc_server_close(rpc_server *s);
/* The socket, for zmq_poll. */
void *rpc_server_socket(rpc_server *s);
/* Receive one request without blocking: 1 and a malloc'd buffer if one was waiting, 0 if
 * none, negative on error. Oversized requests are answered by the caller's refusal. */
int rpc_server_recv(rpc_server *s, uint8_t **buf, size_t *len);
int rpc_server_send(rpc_server *s, const uint8_t *buf, size_t len);

/* One request, one reply (malloc'd), waiting at most timeout_ms. A service that is not
 * running or does not answer gives INE_EAGAIN with a sentence naming the endpoint. */
int rpc_call(void *zctx, const char *run_dir, const char *name, const uint8_t *req, size_t len,
             int timeout_ms, uint8_t **reply, size_t *reply_len);

#endif
