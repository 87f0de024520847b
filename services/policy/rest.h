/* rest.h — what the REST server (rest.c: HTTPS, auth, JSON replies) shares with the
 * endpoint handlers (rest_routes.c). */
#ifndef INE_POLICY_REST_H
#define INE_POLICY_REST_H

#include <event2/http.h>
#include <jansson.h>

#include "policy.h"

#define REST_MAX_BODY (1u << 20) /* larger bodies get 413 */

typedef struct {
    policy_t *p;
    struct evhttp_request *req;
    const char *user;          /* the authenticated user (the actor of what the request changes) */
    const char *request_id;    /* X-Request-Id, or NULL */
    char *body;                /* NUL-terminated copy of the body (wiped and freed after) */
    size_t body_len;
} rest_ctx;

/* Send `j` (stolen) with the status. */
void rest_reply(rest_ctx *c, int status, json_t *j);
/* Send {"error_code": code, "description": ...} with the status. */
void rest_error(rest_ctx *c, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Map a policy/CA ErrorCode to an HTTP status and a lowercase error_code, and send it. */
void rest_error_code(rest_ctx *c, Ine__V1__ErrorCode code, const char *description);

/* Parse the body as one JSON object whose keys are all in `allowed` (NULL-terminated); an
 * empty body gives an empty object when `empty_ok`. On failure the 400 is already sent and
 * NULL is returned. */
json_t *rest_body_object(rest_ctx *c, const char *const *allowed, int empty_ok);
/* Typed fields: 0 absent, 1 present (value stored), -1 wrong type (400 already sent). */
int rest_get_bool(rest_ctx *c, json_t *o, const char *k, int *out);
int rest_get_uint(rest_ctx *c, json_t *o, const char *k, uint32_t max, uint32_t *out);
int rest_get_string(rest_ctx *c, json_t *o, const char *k, const char **out);

/* Route one authenticated request. */
void rest_route(rest_ctx *c, const char *path);

/* --- join.c: the endpoints a joining node uses, without REST credentials --- */
/* 1 for a path served without authentication (the join token, or nothing, is the credential). */
int rest_join_public(const char *path);
void rest_join_route(rest_ctx *c, const char *path);
/* Answer (503) and drop joins still waiting for certificates; how many there were. */
int rest_join_stop(policy_t *p);

#endif
