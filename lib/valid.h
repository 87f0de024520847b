/* valid.h — the input rules every interface shares (CLI, REST, ZeroMQ commands), so a name
 * or an address accepted in one place is accepted in all. Each returns 1 when valid. */
#ifndef INE_VALID_H
#define INE_VALID_H

#include <stddef.h>

/* Cluster, database and node names: 1-64 of [A-Za-z0-9._-]. */
int valid_name(const char *s);
/* REST users, often e-mail addresses: 1-128 of [A-Za-z0-9._@+-]. */
int valid_username(const char *s);
/* An IPv4/IPv6 literal or an RFC 1123 host name. */
int valid_address(const char *s);
/* "host:port" or "[v6]:port" with a valid address and a port 1-65535. */
int valid_hostport(const char *s);

#endif
