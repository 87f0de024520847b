/* ine-ca — the cluster's certificate authority service.
 *
 * Replays the node's event log into the projection, then loops: follow the log, answer
 * commands (rotate, upload, status), and reconcile — create the cluster CA, issue missing
 * node certificates, complete recorded rotations, replace customer certificates 5 days before
 * they expire, and rotate self-signed ones once they are 30 days old (checked at start and on
 * a timer, so a CA that was down for weeks catches up at once). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "ca.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

static const char *usage_text =
    "usage: ine-ca [--data-dir DIR] [--check-interval SECONDS] [--ca-key-bits N] [--workers N]\n"
    "              [--lease-ttl SECONDS]\n"
    "\n"
    "The cluster CA service: issues, rotates and replaces node certificates as the event log asks.\n"
    "\n"
    "  --data-dir DIR          node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --check-interval SECS   how often the rotation schedule is checked (default 60)\n"
    "  --ca-key-bits N         RSA size of a new cluster CA (default 3072)\n"
    "  --workers N             key generation threads (default: the number of CPUs)\n"
    "  --lease-ttl SECS        with etcd (etcd.conf in the data dir): the CA lease's TTL; the\n"
    "                          ine-ca holding it acts, the others stand by (default 5)\n"
    "  -h, --help              this text\n";

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int follow_apply(const evlog_event *ev, uint64_t seq, void *ud)
{
    ca_t *ca = ud;
    int rc = proj_apply(&ca->st, ev);
    (void)seq;
    return rc == INE_EUNKNOWN ? INE_OK : rc;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int ca_open(ca_t *ca)
{
    evlog_opts lo;
    char p[DATADIR_MAX];
    GUARD(datadir_path(ca->data_dir, "seal.key", p, sizeof p));
    GUARD(seal_key_load(p, &ca->seal));
    GUARD(datadir_path(ca->data_dir, "log", p, sizeof p));
    GUARD(evlog_opts_from_env(&lo));
    GUARD(evlog_open(p, &lo, &ca->log));
    GUARD(datadir_path(ca->data_dir, "run", ca->run_dir, sizeof ca->run_dir));
    if (!(ca->zctx = zmq_ctx_new())) return ine_err(INE_EZMQ, "cannot create a ZeroMQ context");
    GUARD(rpc_server_open(ca->zctx, ca->run_dir, "ca", &ca->rpc));
    GUARD(follow_pub_open(ca->zctx, ca->run_dir, "ine-ca", &ca->pub));
    {
        commit_cfg cc = {.data_dir = ca->data_dir, .producer = "ine-ca", .log = ca->log, .pub = ca->pub,
                         .zctx = ca->zctx, .run_dir = ca->run_dir};
        GUARD(commit_open(&cc, &ca->commit));
    }
    proj_init(&ca->st);
    GUARD(follow_new(ca->zctx, ca->log, ca->run_dir, 0, follow_apply, ca, &ca->follow));
    if (!strcmp(commit_backend(ca->commit), "etcd")) {
        commit_etcd_conf conf;
        char key[300], who[DATADIR_MAX + 300], host[128] = "";
        GUARD(commit_conf_load(ca->data_dir, &conf));
        GUARD(commit_conf_etcd_open(&conf, 0, &ca->etcd));
        gethostname(host, sizeof host - 1);
        snprintf(key, sizeof key, "%sca/holder", conf.prefix);
        snprintf(who, sizeof who, "ine-ca pid %ld on %s, data dir %s", (long)getpid(), host, ca->data_dir);
        GUARD(elect_open(ca->etcd, key, who, ca->lease_ttl_s, &ca->elect));
    } else {
        ca->acting = 1;
    }
    return ca_catch_up(ca);
}

static void ca_close(ca_t *ca)
{
    elect_close(ca->elect);
    etcd_close(ca->etcd);
    follow_free(ca->follow);
    commit_close(ca->commit);
    follow_pub_close(ca->pub);
    rpc_server_close(ca->rpc);
    if (ca->zctx) zmq_ctx_term(ca->zctx);
    evlog_close(ca->log);
    seal_key_free(ca->seal);
    pki_cert_free(ca->ca_cert);
    pki_key_free(ca->ca_key);
    proj_free(&ca->st);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, 0, 'd'}, {"check-interval", required_argument, 0, 'i'},
        {"ca-key-bits", required_argument, 0, 'b'}, {"workers", required_argument, 0, 'w'},
        {"lease-ttl", required_argument, 0, 'l'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    ca_t ca = {.ca_key_bits = PKI_CA_KEY_BITS_DEFAULT, .check_interval_ms = 60000, .lease_ttl_s = ELECT_DEFAULT_TTL_S};
    const char *dd_arg = NULL;
    int64_t next_check = 0;
    uint64_t reconciled_at = UINT64_MAX;
    int c, secs, rc = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    ca.workers = ncpu > 0 ? (int)ncpu : 1;
    logline_init("ine-ca");
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'i':
            if (parse_int(optarg, 1, 86400, &secs)) { fprintf(stderr, "ine-ca: --check-interval takes 1..86400 seconds, not '%s'\n", optarg); return 2; }
            ca.check_interval_ms = secs * 1000;
            break;
        case 'b':
            if (parse_int(optarg, 2048, 16384, &ca.ca_key_bits)) { fprintf(stderr, "ine-ca: --ca-key-bits takes 2048..16384, not '%s'\n", optarg); return 2; }
            break;
        case 'w':
            if (parse_int(optarg, 1, 16, &ca.workers)) { fprintf(stderr, "ine-ca: --workers takes 1..16, not '%s'\n", optarg); return 2; }
            break;
        case 'l':
            if (parse_int(optarg, 2, 600, &ca.lease_ttl_s)) { fprintf(stderr, "ine-ca: --lease-ttl takes 2..600 seconds, not '%s'\n", optarg); return 2; }
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ine-ca: unexpected argument '%s' (see ine-ca --help)\n", argv[optind]);
        return 2;
    }
    snprintf(ca.data_dir, sizeof ca.data_dir, "%s", datadir_resolve(dd_arg));
    if (ca_open(&ca) < 0) {
        fprintf(stderr, "ine-ca: cannot start: %s\n", ine_err_msg());
        ca_close(&ca);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    logline(LOGLINE_INFO, ca.st.applied_seq, "started on %s (log at seq %llu)", ca.data_dir,
            (unsigned long long)ca.st.applied_seq);
    while (!stop) {
        zmq_pollitem_t it[2] = {{rpc_server_socket(ca.rpc), 0, ZMQ_POLLIN, 0}, {NULL, follow_fd(ca.follow), ZMQ_POLLIN, 0}};
        int64_t now = ine_clock_mono_ms();
        /* A command or the log's "grew" hint wakes it at once; the timeout is the safety net. */
        if (zmq_poll(it, it[1].fd >= 0 ? 2 : 1, 100) < 0 && !stop) {
            logline(LOGLINE_ERROR, 0, "poll failed: %s", zmq_strerror(zmq_errno()));
            rc = 1;
            break;
        }
        /* A follow failure must not starve commands: each command catches up itself and
         * answers with the error if the log cannot be read. */
        if (follow_poll(ca.follow, 0) < 0) logline(LOGLINE_ERROR, ca.st.applied_seq, "follow: %s", ine_err_msg());
        if (ca_elect_tick(&ca)) {
            /* Carry on from the log: a rotation the last holder left half done completes. */
            reconciled_at = UINT64_MAX;
            next_check = 0;
        }
        if (ca_serve(&ca) < 0) logline(LOGLINE_ERROR, ca.st.applied_seq, "commands: %s", ine_err_msg());
        /* Reconcile when the log moved (someone else's event may ask for work), and on the
         * schedule timer. A failure waits for the next tick instead of spinning. */
        if (ca.acting && (now >= next_check || ca.st.applied_seq != reconciled_at)) {
            int rrc = ca_reconcile(&ca);
            /* Stale: another writer's event landed first; the next round decides again. */
            if (rrc < 0) logline(rrc == INE_ESTALE ? LOGLINE_INFO : LOGLINE_ERROR, ca.st.applied_seq, "reconcile: %s", ine_err_msg());
            reconciled_at = ca.st.applied_seq;
            if (now >= next_check) next_check = now + ca.check_interval_ms;
        }
    }
    logline(LOGLINE_INFO, ca.st.applied_seq, "stopping");
    ca_close(&ca);
    return rc;
}
