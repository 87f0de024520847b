/* inectl.h — what the inectl command files share. */
#ifndef INE_INECTL_H
#define INE_INECTL_H

#include <stddef.h>
#include <stdint.h>

#include "ine/v1/command.pb-c.h"
#include "proj.h"

/* Global options, set by main before a command runs. */
typedef struct {
    const char *data_dir;
    const char *request_id;  /* --request-id, or a fresh random one */
    const char *actor;       /* $INE_ACTOR, else $USER, else "operator" */
    int json;                /* --json */
    int timeout_ms;          /* --timeout */
} inectl_opts;

extern inectl_opts inectl_g;

/* Print "inectl: <sentence>" on stderr and return 1. */
int inectl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Send a CaRequest to ine-ca and return its reply (free with ine__v1__reply__free_unpacked).
 * A transport failure prints the reason and returns NULL. */
Ine__V1__Reply *inectl_ca_call(Ine__V1__CaRequest *req);
Ine__V1__Reply *inectl_policy_call(Ine__V1__PolicyRequest *req);
/* Send a policy request; on a refusal print `what: why [CODE]` and return 1. On success the
 * reply's uid and seq (either pointer may be NULL), and with --json {"uid", "seq"} printed. */
int inectl_policy_send(Ine__V1__PolicyRequest *req, const char *what, uint32_t *uid, uint64_t *seq);
/* The cluster state from this node's log (read-only, through the projection); prints why not
 * and returns 1 on failure. Free with proj_free in every case. */
int inectl_load_state(proj_state *st);
/* Print a refused reply ("inectl: <what>: <description> [<code>]") and return 1. */
int inectl_reply_fail(const char *what, const Ine__V1__Reply *r);

int inectl_cluster_create(const char *dd, int argc, char **argv);
int inectl_cert_rotate(int argc, char **argv);
int inectl_cert_set(int argc, char **argv);
int inectl_status_certificates(int argc, char **argv);
/* inectl_db.c: databases, cluster policy, info and status (reads from the local log). */
int inectl_tune(int argc, char **argv);
int inectl_create_db(int argc, char **argv);
int inectl_delete_db(int argc, char **argv);
int inectl_info(int argc, char **argv);
int inectl_status(int argc, char **argv);
/* inectl_alert.c: cluster alert settings and the alerts in force. */
int inectl_tune_alert(int argc, char **argv);
int inectl_status_alerts(int argc, char **argv);
/* inectl_node.c: join tokens (on the master) and joining a cluster (on the new node). */
int inectl_node_token_create(int argc, char **argv);
int inectl_node_join(int argc, char **argv);
int inectl_node_remove(int argc, char **argv);
int inectl_etcd_prepare(int argc, char **argv);
/* inectl_watch.c: the policy update stream as JSON lines. */
int inectl_watch(int argc, char **argv);

#endif
