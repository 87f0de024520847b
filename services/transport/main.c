/* ine-transport — one TLS transport worker per node.
 *
 * Listens on <node address>:3342 for streams from other nodes, exposes every database's
 * endpoint on the node's address, carries control-plane heartbeats, and follows the log for
 * certificates, trust and toggles. One thread, libevent, non-blocking OpenSSL. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "logline.h"
#include "transport.h"

static const char *usage_text =
    "usage: ine-transport --node UID [--data-dir DIR] [--port PORT] [--max-conns N] [--handshake-timeout MS]\n"
    "\n"
    "The TLS transport worker of one node: port 3342 (control plane always in TLS, data plane per\n"
    "database), the database endpoints on the node's address, heartbeats to the other nodes.\n"
    "\n"
    "  --node UID               the node this worker serves (required)\n"
    "  --data-dir DIR           node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --port PORT              the transport port on the node's address (default 3342)\n"
    "  --max-conns N            connections at most; past it new ones are refused (default 20000)\n"
    "  --handshake-timeout MS   a peer that has not finished its TLS handshake and stream header\n"
    "                           by then is refused (default 10000)\n"
    "  -h, --help               this text\n"
    "\n"
    "Encrypted streams between two nodes share one TLS connection. For comparison (the\n"
    "benchmark): INE_TRANSPORT_MUX=0 gives every stream a TLS connection of its own, and\n"
    "INE_TRANSPORT_RESUME=0 makes each of those a full handshake (and asks peers for no\n"
    "session tickets).\n";

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    tp_t *tp = arg;
    static int64_t next_hb;
    (void)fd;
    (void)what;
    tp_state_tick(tp);
    if (ine_clock_mono_ms() >= next_hb) {
        tp_heartbeat_tick(tp);
        next_hb = ine_clock_mono_ms() + TP_HEARTBEAT_MS;
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopbreak(arg);
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"node", required_argument, 0, 'n'}, {"data-dir", required_argument, 0, 'd'}, {"port", required_argument, 0, 'p'},
        {"max-conns", required_argument, 0, 'm'}, {"handshake-timeout", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    tp_t tp = {.port = TP_DEFAULT_PORT, .max_conns = TP_DEFAULT_MAX_CONNS, .handshake_ms = TP_DEFAULT_HANDSHAKE_MS};
    const char *dd_arg = NULL;
    struct event *tick = NULL, *hint = NULL, *sigint = NULL, *sigterm = NULL;
    struct timeval tv = {0, 100 * 1000};
    long v;
    int c, rc = 0;

    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (parse_long(optarg, 1, UINT32_MAX, &v)) return fprintf(stderr, "ine-transport: --node takes a node uid, not '%s'\n", optarg), 2;
            tp.node_uid = (uint32_t)v;
            break;
        case 'd': dd_arg = optarg; break;
        case 'p':
            if (parse_long(optarg, 1, 65535, &v)) return fprintf(stderr, "ine-transport: --port takes 1..65535, not '%s'\n", optarg), 2;
            tp.port = (int)v;
            break;
        case 'm':
            if (parse_long(optarg, 4, 1000000, &v)) return fprintf(stderr, "ine-transport: --max-conns takes 4..1000000, not '%s'\n", optarg), 2;
            tp.max_conns = (int)v;
            break;
        case 't':
            if (parse_long(optarg, 100, 600000, &v)) return fprintf(stderr, "ine-transport: --handshake-timeout takes 100..600000 ms, not '%s'\n", optarg), 2;
            tp.handshake_ms = (int)v;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "ine-transport: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    if (!tp.node_uid) return fprintf(stderr, "ine-transport: --node UID is required (see --help)\n"), 2;
    {
        char svc[32];
        snprintf(svc, sizeof svc, "ine-transport-%u", tp.node_uid);
        logline_init(svc);
    }
    snprintf(tp.data_dir, sizeof tp.data_dir, "%s", datadir_resolve(dd_arg));
    {
        const char *mx = getenv("INE_TRANSPORT_MUX");
        tp.mux_off = mx && !strcmp(mx, "0");
    }
    signal(SIGPIPE, SIG_IGN);
    if (!(tp.base = event_base_new()) || tp_state_open(&tp) < 0) {
        fprintf(stderr, "ine-transport: cannot start: %s\n", ine_err_msg());
        tp_state_close(&tp);
        if (tp.base) event_base_free(tp.base);
        return 1;
    }
    tick = event_new(tp.base, -1, EV_PERSIST, on_tick, &tp);
    /* The log's "grew" hint wakes the loop at once: the timer is only the safety net. */
    {
        int hfd = follow_fd(tp.follow);
        if (hfd >= 0 && (!(hint = event_new(tp.base, hfd, EV_READ | EV_PERSIST, on_tick, &tp)) || event_add(hint, NULL))) {
            fprintf(stderr, "ine-transport: cannot watch the log's hints\n");
            rc = 1;
            goto out;
        }
    }
    sigint = evsignal_new(tp.base, SIGINT, on_signal, tp.base);
    sigterm = evsignal_new(tp.base, SIGTERM, on_signal, tp.base);
    if (!tick || !sigint || !sigterm || event_add(tick, &tv) || event_add(sigint, NULL) || event_add(sigterm, NULL)) {
        fprintf(stderr, "ine-transport: cannot set up the event loop\n");
        rc = 1;
        goto out;
    }
    on_tick(-1, 0, &tp);
    logline(LOGLINE_INFO, tp.st.applied_seq, "started for node %u on %s", tp.node_uid, tp.data_dir);
    /* One round at a time: after each, the frames every stream queued on a data-plane
     * connection leave together (one TLS record, one write for many clients). */
    while (!event_base_got_break(tp.base) && !event_base_got_exit(tp.base)) {
        if (event_base_loop(tp.base, EVLOOP_ONCE) < 0) {
            rc = 1;
            break;
        }
        tp_mux_flush_all(&tp);
    }
    logline(LOGLINE_INFO, tp.st.applied_seq, "stopping");
out:
    if (tick) event_free(tick);
    if (hint) event_free(hint);
    if (sigint) event_free(sigint);
    if (sigterm) event_free(sigterm);
    tp_state_close(&tp);
    event_base_free(tp.base);
    return rc;
}
