/* ine-replica — keeps a follower node's log a replica of the master's.
 *
 * Reads replica.conf (written by `inectl node join`), then loops: connect to the master's
 * transport port with this node's control-plane certificate from the local log, ask for
 * everything after the local head, append what arrives (lib/repl.c verifies each record's
 * chain link), and hint the node's other services (ine-transport) after each record. When the
 * master is away the stream breaks or falls silent (no keepalive within --io-timeout); we retry
 * with back-off, for ever, and catch up from wherever the replica stopped: the node keeps
 * serving with what its log already holds meanwhile. One instance per data dir (flock). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "datadir.h"
#include "err.h"
#include "follow.h"
#include "logline.h"
#include "repl.h"
#include "seal.h"

static const char *usage_text =
    "usage: ine-replica [--data-dir DIR] [--io-timeout MS] [--retry-max MS]\n"
    "\n"
    "Keeps this follower node's event log a replica of the master's, over the control plane\n"
    "(TLS on the master's transport port, with this node's control-plane certificate). The data\n"
    "dir must come from `inectl node join` (it holds replica.conf and the seal key).\n"
    "\n"
    "  --data-dir DIR   node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --io-timeout MS  a master silent this long (it sends a keepalive every 5 s) is taken\n"
    "                   for gone, and we reconnect (default 15000)\n"
    "  --retry-max MS   the longest wait between two connection attempts (default 5000)\n"
    "  -h, --help       this text\n";

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

typedef struct {
    follow_pub *pub;
    uint64_t appended;
} replica_t;

static void on_append(uint64_t seq, void *ud)
{
    replica_t *r = ud;
    r->appended++;
    follow_pub_hint(r->pub, seq);
}

static int parse_ms(const char *s, long lo, long hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* Sleep up to ms, waking early on a signal. */
static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (!stop_flag && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int replica_run(const char *dd, int io_timeout, int retry_max)
{
    char p[DATADIR_MAX], run_dir[DATADIR_MAX];
    repl_conf conf;
    seal_key *seal = NULL;
    evlog_t *log = NULL;
    evlog_opts lo = {0};
    void *zctx = NULL;
    replica_t r = {0};
    int rc, lock_fd = -1, backoff = 250;
    GUARD(repl_conf_load(dd, &conf));
    GUARD(datadir_path(dd, "run", run_dir, sizeof run_dir));
    GUARD(datadir_path(dd, "run/replica.lock", p, sizeof p));
    if ((lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) return ine_err(INE_EIO, "cannot open %s: %s", p, strerror(errno));
    if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        close(lock_fd);
        return ine_err(INE_EEXIST, "another ine-replica already runs for %s", dd);
    }
    GUARD_GOTO(datadir_path(dd, SEAL_KEY_FILE, p, sizeof p), out);
    GUARD_GOTO(seal_key_load(p, &seal), out);
    GUARD_GOTO(datadir_path(dd, "log", p, sizeof p), out);
    GUARD_GOTO(evlog_opts_from_env(&lo), out);
    GUARD_GOTO(evlog_open(p, &lo, &log), out);
    if (!(zctx = zmq_ctx_new())) {
        rc = ine_err(INE_EZMQ, "cannot create a ZeroMQ context");
        goto out;
    }
    GUARD_GOTO(follow_pub_open(zctx, run_dir, "ine-replica", &r.pub), out);
    logline(LOGLINE_INFO, 0, "node %u follows the master at %s:%d", conf.node_uid, conf.master_address, conf.master_port);
    while (!stop_flag) {
        repl_session_opts o = {.log = log, .conf = &conf, .seal = seal, .io_timeout_ms = io_timeout, .stop = &stop_flag,
                               .on_append = on_append, .ud = &r};
        uint64_t before = r.appended, head = 0;
        int64_t started = ine_clock_mono_ms();
        rc = repl_session(&o, &head);
        if (stop_flag) break;
        /* A session that lived a while was a working link: start the back-off over. */
        if (r.appended > before || ine_clock_mono_ms() - started > 2 * io_timeout) backoff = 250;
        logline(rc == INE_ECHAIN || rc == INE_ECORRUPT || rc == INE_EAUTH ? LOGLINE_ERROR : LOGLINE_WARN, head,
                "replication from %s:%d: %s; %llu records this session; retrying in %d ms", conf.master_address, conf.master_port,
                rc < 0 ? ine_err_msg() : "ended", (unsigned long long)(r.appended - before), backoff);
        nap(backoff);
        backoff = backoff * 2 > retry_max ? retry_max : backoff * 2;
    }
    logline(LOGLINE_INFO, 0, "stopping");
    rc = INE_OK;
out:
    follow_pub_close(r.pub);
    if (zctx) zmq_ctx_term(zctx);
    evlog_close(log);
    seal_key_free(seal);
    close(lock_fd);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"io-timeout", required_argument, 0, 't'},
                                       {"retry-max", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *dd_arg = NULL;
    int c, io_timeout = REPL_IO_TIMEOUT_MS, retry_max = 5000;
    struct sigaction sa;
    logline_init("ine-replica");
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 't':
            if (parse_ms(optarg, 1000, 600000, &io_timeout)) return fprintf(stderr, "ine-replica: --io-timeout takes 1000..600000 ms, not '%s'\n", optarg), 2;
            break;
        case 'r':
            if (parse_ms(optarg, 100, 600000, &retry_max)) return fprintf(stderr, "ine-replica: --retry-max takes 100..600000 ms, not '%s'\n", optarg), 2;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "ine-replica: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocking read returns at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (replica_run(datadir_resolve(dd_arg), io_timeout, retry_max) < 0) {
        fprintf(stderr, "ine-replica: %s\n", ine_err_msg());
        return 1;
    }
    return 0;
}
