/* jointoken.h — join tokens: the single-use, expiring credential a new node presents to join
 * a cluster (REST POST /v1/nodes/join), and the key that seals what it receives in return.
 *
 * A token is "inejt_" followed by 64 lowercase hex digits (32 random bytes). It is shown once,
 * when it is made; the log only ever holds its SHA-256 (JoinTokenIssued) and its public id
 * (the hex of the first 8 bytes of that hash), and a presented token is matched by hash in
 * constant time. The master answers a join with the node's secrets sealed (lib/seal.h) under
 * HKDF-SHA256(token, info "ine.v1/join") for the purpose "ine.v1/join/<node uid>": only the
 * holder of the token can open them. */
#ifndef INE_JOINTOKEN_H
#define INE_JOINTOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "proj.h"
#include "seal.h"

#define JOINTOKEN_PREFIX "inejt_"
#define JOINTOKEN_BYTES 32
#define JOINTOKEN_STR_LEN (6 + 2 * JOINTOKEN_BYTES)
#define JOINTOKEN_ID_LEN 16
#define JOINTOKEN_TTL_DEFAULT_S 86400
#define JOINTOKEN_TTL_MAX_S (365 * 86400)
#define JOINTOKEN_ENVELOPE_INFO "ine.v1/join"

typedef struct {
    char token[JOINTOKEN_STR_LEN + 1];   /* the secret itself (empty after jointoken_parse) */
    char id[JOINTOKEN_ID_LEN + 1];
    uint8_t sha256[32];
} jointoken;

/* A new random token. Cleanse it with jointoken_clear once shown. */
int jointoken_new(jointoken *t);
void jointoken_clear(jointoken *t);

/* A presented token: checks its form (INE_EINVAL with a sentence that never repeats it) and
 * fills t->sha256 and t->id (t->token stays empty). */
int jointoken_parse(const char *s, jointoken *t);

typedef enum {
    JOINTOKEN_OK = 0,
    JOINTOKEN_MALFORMED,  /* not a token at all */
    JOINTOKEN_UNKNOWN,    /* well-formed, but this cluster never issued it */
    JOINTOKEN_EXPIRED,
    JOINTOKEN_USED,       /* a node already joined with it */
} jointoken_verdict;

/* Judge a presented token against the state at unix time `now`. *known (may be NULL) gets the
 * token's record for every verdict but MALFORMED and UNKNOWN. Every issued token's hash is
 * compared (constant time each), so timing does not tell which prefix matched. */
jointoken_verdict jointoken_check(const proj_state *st, const char *presented, int64_t now,
                                  const proj_join_token **known);
/* "token_malformed", "token_unknown", "token_expired", "token_used" ("ok" for JOINTOKEN_OK). */
const char *jointoken_verdict_code(jointoken_verdict v);

/* The envelope's seal key, HKDF-SHA256 of the token string (info JOINTOKEN_ENVELOPE_INFO). */
int jointoken_envelope_key(const char *token, seal_key **out);
/* "ine.v1/join/<node_uid>". */
int jointoken_envelope_purpose(char *buf, size_t len, uint32_t node_uid);

#endif
