/* ine-log — the event log inspector: list, show, follow, verify, export, state.
 *
 * It opens the log read-only and never unseals anything: sealed fields print as
 * "<sealed, N bytes>", so nothing this tool prints can carry key material. It runs safely
 * beside services that are appending (LMDB readers never block the writer). */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "follow.h"
#include "logline.h"
#include "pbjson.h"
#include "proj.h"

static const char *usage_text =
    "usage: ine-log [--data-dir DIR] <command> [options]\n"
    "\n"
    "Inspect the event log of an ine node (read-only; secrets print as <sealed, N bytes>).\n"
    "\n"
    "commands:\n"
    "  list [--from N] [--to N] [--type T]   one line per event\n"
    "  show N                                one event in full (JSON)\n"
    "  follow [--from N]                     print events as they are appended (Ctrl-C stops)\n"
    "  verify                                check the hash chain; non-zero exit names the first bad seq\n"
    "  export [--from N] [--to N]            JSON Lines, one event per line\n"
    "  state [--at SEQ|TIME]                 the projected cluster state (JSON) after SEQ, or at TIME\n"
    "                                        (YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD or @unix); default: now\n"
    "\n"
    "options:\n"
    "  --data-dir DIR   node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  -h, --help       this text\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int die(const char *what)
{
    fprintf(stderr, "ine-log: %s%s%s\n", what, *ine_err_msg() ? ": " : "", ine_err_msg());
    return 1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "ine-log: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see ine-log --help)\n");
    return 2;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (!s || !*s || *s == '-') return -1;
    v = strtoull(s, &end, 10);
    if (*end) return -1;
    *out = v;
    return 0;
}

static int open_log(const char *dd, evlog_t **log)
{
    char p[DATADIR_MAX];
    evlog_opts o = {.read_only = 1};
    if (datadir_path(dd, "log", p, sizeof p) < 0 || evlog_open(p, &o, log) < 0) return -1;
    return 0;
}

/* --- list / export / follow share a printer -------------------------------------------------- */

typedef struct {
    int type;        /* body case filter, 0 = all */
    int json_lines;  /* export format */
} printer;

static int print_event(const evlog_event *ev, uint64_t seq, const printer *pr)
{
    if (!ev) {
        printf("%8llu  <record does not decode>\n", (unsigned long long)seq);
        return 0;
    }
    if (pr->type && (int)ev->body_case != pr->type) return 0;
    if (pr->json_lines) {
        json_t *j = pbjson_event(ev);
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(j);
        if (!s) return ine_err(INE_ENOMEM, "out of memory");
        puts(s);
        free(s);
    } else {
        char ts[40], summ[512];
        printf("%8llu  %s  %-12s %-12s %-34s %s\n", (unsigned long long)seq, ine_clock_fmt(ev->time_us, ts, sizeof ts),
               *ev->producer ? ev->producer : "-", *ev->actor ? ev->actor : "-", evlog_type_name(ev),
               pbjson_summary(ev, summ, sizeof summ));
    }
    return ferror(stdout) ? ine_err(INE_EIO, "cannot write to standard output") : 0;
}

static int print_rec(const evlog_record *rec, void *ud)
{
    if (!rec->ev) return ine_err(INE_ECORRUPT, "record %llu does not decode as an event", (unsigned long long)rec->seq);
    return print_event(rec->ev, rec->seq, ud);
}

static int range_opts(int argc, char **argv, uint64_t *from, uint64_t *to, int *type)
{
    static const struct option lo[] = {
        {"from", required_argument, 0, 'f'}, {"to", required_argument, 0, 't'},
        {"type", required_argument, 0, 'T'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'f': if (parse_u64(optarg, from)) return usage_error("--from takes a sequence number, not '%s'", optarg); break;
        case 't':
            if (!to || parse_u64(optarg, to)) return usage_error("--to takes a sequence number, not '%s'", optarg ? optarg : "");
            break;
        case 'T':
            if (!type) return usage_error("%s does not take --type", argv[0]);
            if (!(*type = evlog_type_from_name(optarg)))
                return usage_error("unknown event type '%s' (types are the body names in proto/ine/v1/event.proto, e.g. database_created)", optarg);
            break;
        default: return 2;
        }
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    return 0;
}

static int cmd_list(const char *dd, int argc, char **argv, int json_lines)
{
    uint64_t from = 1, to = 0;
    printer pr = {.json_lines = json_lines};
    evlog_t *log;
    int rc = range_opts(argc, argv, &from, &to, json_lines ? NULL : &pr.type);
    if (rc) return rc;
    if (open_log(dd, &log)) return die("cannot open the event log");
    rc = evlog_iterate(log, from, to, 0, print_rec, &pr);
    evlog_close(log);
    if (rc < 0) return die(json_lines ? "export failed" : "list failed");
    return 0;
}

static int cmd_show(const char *dd, int argc, char **argv)
{
    uint64_t seq;
    evlog_t *log;
    evlog_event *ev;
    json_t *j;
    if (argc != 2 || parse_u64(argv[1], &seq)) return usage_error("show takes one sequence number");
    if (open_log(dd, &log)) return die("cannot open the event log");
    if (evlog_read(log, seq, &ev) < 0) {
        evlog_close(log);
        return die("show failed");
    }
    j = pbjson_event(ev);
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(j);
    evlog_event_free(ev);
    evlog_close(log);
    return 0;
}

static int cmd_verify(const char *dd, int argc, char **argv)
{
    evlog_t *log;
    evlog_verify_report rep;
    (void)argv;
    if (argc != 1) return usage_error("verify takes no arguments");
    if (open_log(dd, &log)) return die("cannot open the event log");
    evlog_verify(log, &rep);
    evlog_close(log);
    if (rep.rc) {
        if (rep.bad_seq)
            fprintf(stderr, "ine-log: verify: FAILED at seq %llu: %s\n", (unsigned long long)rep.bad_seq, rep.reason);
        else
            fprintf(stderr, "ine-log: verify: FAILED: %s\n", rep.reason);
        return 1;
    }
    printf("ok: %llu records, hash chain intact, head at seq %llu\n", (unsigned long long)rep.records,
           (unsigned long long)rep.head_seq);
    return 0;
}

static int follow_print(const evlog_event *ev, uint64_t seq, void *ud)
{
    int rc = print_event(ev, seq, ud);
    fflush(stdout);
    return rc;
}

static int cmd_follow(const char *dd, int argc, char **argv)
{
    uint64_t from = 0, last = 0;
    printer pr = {0};
    char run[DATADIR_MAX];
    evlog_t *log;
    follow_t *f = NULL;
    void *z;
    int rc = range_opts(argc, argv, &from, NULL, &pr.type);
    if (rc) return rc;
    if (open_log(dd, &log)) return die("cannot open the event log");
    if (datadir_path(dd, "run", run, sizeof run) < 0) return die("bad data directory");
    /* Without --from, start at the end like tail -f: only new events. */
    if (!from && evlog_last_seq(log, &last) < 0) return die("cannot read the log head");
    z = zmq_ctx_new();
    if (follow_new(z, log, run, from ? from - 1 : last, follow_print, &pr, &f) < 0) {
        rc = die("cannot follow the log");
        goto out;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, on_signal);
    while (!stop_requested) {
        if (follow_poll(f, 500) < 0) {
            rc = die("follow failed");
            goto out;
        }
    }
out:
    follow_free(f);
    zmq_ctx_term(z);
    evlog_close(log);
    return rc;
}

static int cmd_state(const char *dd, int argc, char **argv)
{
    static const struct option lo[] = {{"at", required_argument, 0, 'a'}, {0, 0, 0, 0}};
    const char *at = NULL;
    evlog_t *log;
    proj_state st;
    json_t *j;
    uint64_t seq = 0;
    int64_t us = 0;
    int c, rc, by_time = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c != 'a') return 2;
        at = optarg;
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (at && parse_u64(at, &seq) != 0) {
        if (ine_clock_parse(at, &us) < 0)
            return usage_error("--at takes a sequence number or a time (YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD, @unix), not '%s'", at);
        by_time = 1;
    }
    if (open_log(dd, &log)) return die("cannot open the event log");
    proj_init(&st);
    rc = by_time ? proj_build_at_time(log, us, &st) : proj_build(log, seq, &st);
    evlog_close(log);
    if (rc < 0) {
        proj_free(&st);
        return die("cannot rebuild the state");
    }
    j = proj_to_json(&st);
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(j);
    proj_free(&st);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *dd_arg = NULL, *cmd, *dd;
    int c;

    logline_init("ine-log");
    /* '+': stop at the command so its own options are parsed by it. */
    while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind >= argc) {
        fputs(usage_text, stderr);
        return 2;
    }
    dd = datadir_resolve(dd_arg);
    cmd = argv[optind];
    argc -= optind;
    argv += optind;
    if (!strcmp(cmd, "list")) return cmd_list(dd, argc, argv, 0);
    if (!strcmp(cmd, "export")) return cmd_list(dd, argc, argv, 1);
    if (!strcmp(cmd, "show")) return cmd_show(dd, argc, argv);
    if (!strcmp(cmd, "verify")) return cmd_verify(dd, argc, argv);
    if (!strcmp(cmd, "follow")) return cmd_follow(dd, argc, argv);
    if (!strcmp(cmd, "state")) return cmd_state(dd, argc, argv);
    if (!strcmp(cmd, "help")) { fputs(usage_text, stdout); return 0; }
    return usage_error("unknown command '%s'", cmd);
}
