/* seal.h — sealing secrets with the cluster seal key (AES-256-GCM), so private keys can live
 * in the event log without ever being stored in clear.
 *
 * The key is 32 random bytes in <data-dir>/seal.key, a regular file readable by its owner only.
 *
 * Blob layout (version 1):
 *   version (1 byte, = 1) || nonce (12 random bytes) || ciphertext (= plaintext length) || tag (16)
 * The GCM additional data is the version byte followed by a caller-chosen "purpose" string
 * (e.g. "ine.v1/event/42/certificate_issued/sealed_key"): a blob opens only under the purpose it
 * was sealed for, so it cannot be moved to another event, field or record.
 *
 * Nonces are random, so one key should seal fewer than 2^32 blobs (NIST SP 800-38D); a cluster
 * seals a handful of keys per rotation, far below that. */
#ifndef INE_SEAL_H
#define INE_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY_LEN 32
#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16
#define SEAL_VERSION 1
#define SEAL_KEY_FILE "seal.key" /* its name inside the data directory */

typedef struct seal_key seal_key;

/* Create a new key file at `path` (mode 0600 whatever the umask, fsynced, as is its directory
 * entry). Never overwrites: INE_EEXIST if anything, even a dangling symlink, is at `path`. */
int seal_key_create(const char *path);

/* The same for a key received from elsewhere (a node joining a cluster gets the cluster's):
 * `len` must be SEAL_KEY_LEN; same mode, durability and never-overwrite guarantees. */
int seal_key_write(const char *path, const uint8_t *bytes, size_t len);

/* A copy of the key's bytes, for handing the cluster key to a joining node inside a sealed
 * envelope only. Cleanse `out` after use. */
int seal_key_bytes(const seal_key *k, uint8_t out[SEAL_KEY_LEN]);

/* Load a key file. Refuses a symlink (INE_EPERM), anything but a regular file (INE_EINVAL), a
 * file group or others may read or write (INE_EPERM, the message names the mode), and a file
 * that is not exactly SEAL_KEY_LEN bytes (INE_EINVAL). A missing file is INE_ENOTFOUND. */
int seal_key_load(const char *path, seal_key **out);

/* A key from raw bytes (len must be SEAL_KEY_LEN); for tests and tools. */
int seal_key_from_bytes(const uint8_t *bytes, size_t len, seal_key **out);

/* Cleanse and free; NULL is fine. */
void seal_key_free(seal_key *k);

/* Bytes a blob adds to its plaintext: 1 + 12 + 16. */
size_t seal_overhead(void);

/* Seal `len` bytes (len may be 0; plain may then be NULL) for `purpose` (non-empty). On success
 * *blob (malloc'd, caller frees) holds len + seal_overhead() bytes. On failure *blob is NULL. */
int seal_seal(const seal_key *k, const char *purpose, const uint8_t *plain, size_t len,
              uint8_t **blob, size_t *blob_len);

/* Open a blob sealed for `purpose`. On success *plain (malloc'd; free with seal_free_secret)
 * holds *len bytes. A blob shorter than seal_overhead() is INE_EINVAL; an unknown version, an
 * altered byte, another key or another purpose is INE_EAUTH. On failure *plain is NULL and *len 0
 * (no unauthenticated byte is ever handed out). */
int seal_open(const seal_key *k, const char *purpose, const uint8_t *blob, size_t blob_len,
              uint8_t **plain, size_t *len);

/* Cleanse then free a secret buffer (such as seal_open's output); NULL is fine. */
void seal_free_secret(void *p, size_t len);

/* The purpose for a secret carried by an event: "ine.v1/event/<seq>/<event_type>/<field>", e.g.
 * seal_purpose_event(buf, sizeof buf, ev->seq, evlog_type_name(ev), "sealed_key"). Seal inside
 * evlog_append's prepare hook, where ev->seq is known. `event_type` and `field` must be
 * non-empty and contain no '/', so distinct inputs never give the same string; seq must be
 * non-zero. INE_EINVAL if not, or if `len` is too small. */
#define SEAL_PURPOSE_MAX 192
int seal_purpose_event(char *buf, size_t len, uint64_t seq, const char *event_type,
                       const char *field);

#endif
