/* ine-policy — the policy service: nodes, databases, the cluster policy, and the REST API.
 *
 * A libevent loop carries the HTTPS REST API; a 50 ms timer follows the log (hints only wake
 * us sooner), answers ZeroMQ policy requests from inectl, and swaps in a new REST certificate
 * after a rotation. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "err.h"
#include "logline.h"
#include "policy.h"
#include "quorum.h"

static const char *usage_text =
    "usage: ine-policy [--data-dir DIR] [--rest-addr ADDR] [--rest-port PORT|0] [--rest-node UID]\n"
    "                  [--rest-cert FILE --rest-key FILE]\n"
    "\n"
    "The policy service: databases, nodes and the cluster policy; the REST API over HTTPS.\n"
    "\n"
    "  --data-dir DIR     node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --rest-addr ADDR   REST listen address (default 0.0.0.0)\n"
    "  --rest-port PORT   REST port (default 9443; 0 disables REST)\n"
    "  --rest-node UID    serve HTTPS with this node's control-plane certificate (default 1)\n"
    "  --rest-cert FILE   serve HTTPS with this certificate chain instead (PEM) ...\n"
    "  --rest-key FILE    ... and this key (PEM, unencrypted; the file must be mode 0600)\n"
    "  -h, --help         this text\n";

static int follow_apply(const evlog_event *ev, uint64_t seq, void *ud)
{
    policy_t *p = ud;
    int rc;
    /* First, so a failure retries both (noting twice is harmless; applying twice is refused). */
    GUARD(policy_reqids_note(p, ev, seq));
    rc = proj_apply(&p->st, ev);
    return rc == INE_EUNKNOWN ? INE_OK : rc;
}

/* A joined node's member starts as a learner (services/policy/join.c); once etcd finds it caught
 * up, it becomes a voting member. Every node's ine-policy tries, so no single node is needed;
 * a second promotion of the same member is refused by etcd and changes nothing. */
#define POLICY_PROMOTE_MS 2000

static void policy_promote_tick(policy_t *p)
{
    int64_t now = ine_clock_now_us() / 1000;
    int n = 0;
    if (!p->etcd || now < p->next_promote_ms) return;
    p->next_promote_ms = now + POLICY_PROMOTE_MS;
    if (quorum_promote_learners(p->etcd, &n) == INE_OK && n > 0)
        logline(LOGLINE_INFO, p->st.applied_seq, "etcd: %d learner(s) caught up and promoted to voting members", n);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    policy_t *p = arg;
    (void)fd;
    (void)what;
    if (follow_poll(p->follow, 0) < 0) logline(LOGLINE_ERROR, p->st.applied_seq, "follow: %s", ine_err_msg());
    if (policy_serve(p) < 0) logline(LOGLINE_ERROR, p->st.applied_seq, "commands: %s", ine_err_msg());
    policy_rest_tick(p);
    policy_promote_tick(p);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    policy_t *p = arg;
    struct timeval flush = {0, 200 * 1000};
    (void)sig;
    (void)what;
    /* Joins waiting for certificates get their 503 on the wire before the loop ends. */
    if (policy_rest_drain(p) > 0) event_base_loopexit(p->base, &flush);
    else event_base_loopbreak(p->base);
}

static int policy__has_cluster(void *ud) { return ((policy_t *)ud)->st.cluster.present; }

static int policy_open(policy_t *p)
{
    evlog_opts lo;
    char path[DATADIR_MAX];
    GUARD(datadir_path(p->data_dir, "seal.key", path, sizeof path));
    GUARD(seal_key_load(path, &p->seal));
    GUARD(datadir_path(p->data_dir, "log", path, sizeof path));
    GUARD(evlog_opts_from_env(&lo));
    GUARD(evlog_open(path, &lo, &p->log));
    GUARD(datadir_path(p->data_dir, "run", p->run_dir, sizeof p->run_dir));
    if (!(p->zctx = zmq_ctx_new())) return ine_err(INE_EZMQ, "cannot create a ZeroMQ context");
    GUARD(rpc_server_open(p->zctx, p->run_dir, "policy", &p->rpc));
    GUARD(follow_pub_open(p->zctx, p->run_dir, "ine-policy", &p->pub));
    {
        commit_cfg cc = {.data_dir = p->data_dir, .producer = "ine-policy", .log = p->log, .pub = p->pub,
                         .zctx = p->zctx, .run_dir = p->run_dir};
        commit_etcd_conf conf;
        int rc;
        GUARD(commit_open(&cc, &p->commit));
        if ((rc = commit_conf_load(p->data_dir, &conf)) == INE_OK) {
            GUARD(commit_conf_etcd_open(&conf, 0, &p->etcd));
            p->etcd_peer_port = conf.peer_port;
            p->etcd_peer_local_port = conf.peer_local_port;
            snprintf(p->etcd_prefix, sizeof p->etcd_prefix, "%s", conf.prefix);
        } else if (rc != INE_ENOTFOUND) {
            return rc;
        }
    }
    proj_init(&p->st);
    GUARD(follow_new(p->zctx, p->log, p->run_dir, 0, follow_apply, p, &p->follow));
    GUARD(policy_catch_up(p));
    if (p->etcd) GUARD(follow_wait_ready(p->follow, policy__has_cluster, p, "the cluster"));
    if (!p->st.cluster.present) return ine_err(INE_ENOTFOUND, "%s holds no cluster (run inectl cluster create first)", p->data_dir);
    if (!(p->base = event_base_new())) return ine_err(INE_ENOMEM, "cannot create the event loop");
    return p->rest_port ? policy_rest_start(p) : INE_OK;
}

static void policy_close(policy_t *p)
{
    policy_rest_stop(p);
    if (p->base) event_base_free(p->base);
    follow_free(p->follow);
    commit_close(p->commit);
    etcd_close(p->etcd);
    follow_pub_close(p->pub);
    rpc_server_close(p->rpc);
    if (p->zctx) zmq_ctx_term(p->zctx);
    evlog_close(p->log);
    seal_key_free(p->seal);
    proj_free(&p->st);
    policy_reqids_free(p);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, 0, 'd'}, {"rest-addr", required_argument, 0, 'a'},
        {"rest-port", required_argument, 0, 'p'}, {"rest-node", required_argument, 0, 'n'},
        {"rest-cert", required_argument, 0, 'c'}, {"rest-key", required_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    policy_t p = {.rest_addr = "0.0.0.0", .rest_port = 9443, .rest_node = 1};
    const char *dd_arg = NULL;
    struct event *tick = NULL, *hint = NULL, *sigint = NULL, *sigterm = NULL;
    struct timeval tv = {0, 50 * 1000};
    char *end;
    long v;
    int c, rc = 0;

    logline_init("ine-policy");
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'a': p.rest_addr = optarg; break;
        case 'p':
            v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 0 || v > 65535) return fprintf(stderr, "ine-policy: --rest-port takes 0..65535, not '%s'\n", optarg), 2;
            p.rest_port = (int)v;
            break;
        case 'n':
            v = strtol(optarg, &end, 10);
            if (*end || v < 1) return fprintf(stderr, "ine-policy: --rest-node takes a node uid, not '%s'\n", optarg), 2;
            p.rest_node = (uint32_t)v;
            break;
        case 'c': p.rest_cert_file = optarg; break;
        case 'k': p.rest_key_file = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "ine-policy: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    if (!p.rest_cert_file != !p.rest_key_file) return fprintf(stderr, "ine-policy: --rest-cert and --rest-key go together\n"), 2;
    snprintf(p.data_dir, sizeof p.data_dir, "%s", datadir_resolve(dd_arg));
    signal(SIGPIPE, SIG_IGN);
    if (policy_open(&p) < 0) {
        fprintf(stderr, "ine-policy: cannot start: %s\n", ine_err_msg());
        policy_close(&p);
        return 1;
    }
    tick = event_new(p.base, -1, EV_PERSIST, on_tick, &p);
    /* The log's "grew" hint wakes the loop at once: the timer is only the safety net. */
    {
        int hfd = follow_fd(p.follow);
        if (hfd >= 0 && (!(hint = event_new(p.base, hfd, EV_READ | EV_PERSIST, on_tick, &p)) || event_add(hint, NULL))) {
            fprintf(stderr, "ine-policy: cannot watch the log's hints\n");
            rc = 1;
            goto out;
        }
    }
    sigint = evsignal_new(p.base, SIGINT, on_signal, &p);
    sigterm = evsignal_new(p.base, SIGTERM, on_signal, &p);
    if (!tick || !sigint || !sigterm || event_add(tick, &tv) || event_add(sigint, NULL) || event_add(sigterm, NULL)) {
        fprintf(stderr, "ine-policy: cannot set up the event loop\n");
        rc = 1;
        goto out;
    }
    logline(LOGLINE_INFO, p.st.applied_seq, "started on %s (REST %s:%d)", p.data_dir, p.rest_addr, p.rest_port);
    if (event_base_dispatch(p.base) < 0) rc = 1;
    logline(LOGLINE_INFO, p.st.applied_seq, "stopping");
out:
    if (tick) event_free(tick);
    if (hint) event_free(hint);
    if (sigint) event_free(sigint);
    if (sigterm) event_free(sigterm);
    policy_close(&p);
    return rc;
}
