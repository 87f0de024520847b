/* passwd.h — operator passwords, stored only as salted PBKDF2-HMAC-SHA256 hashes in the
 * text form "pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>". */
#ifndef INE_PASSWD_H
#define INE_PASSWD_H

#include <stddef.h>

#define PASSWD_ITERATIONS 100000
#define PASSWD_HASH_MAX 160

/* Hash `password` with a fresh random salt into out (>= PASSWD_HASH_MAX bytes). */
int passwd_hash(const char *password, char *out, size_t len);

/* INE_OK if `password` matches `stored`, INE_EAUTH if not, INE_EINVAL if stored is malformed.
 * Constant-time comparison. */
int passwd_verify(const char *password, const char *stored);

#endif
