/* ine-etcd — runs this node's etcd member the way ine needs it.
 *
 * The member's settings are etcd's own ETCD_* variables in <data-dir>/etcd/member.env
 * (written by `inectl node join`, or by hand on the first node); they are added to etcd's
 * environment. Once the node's ine-transport has installed the member's peer files
 * (<data-dir>/etcd/tls/, lib/etcdtls.h) the member dials its peers with them. etcd 3.4 reads
 * its trusted CA file only at start, so when the peer roots first appear or change (a
 * customer CA, a new cluster CA) this restarts the member, after (uid - 1) * 3 s so the
 * members of a cluster do not all restart at once. Everything else (certificate and key) etcd
 * re-reads on each handshake: a plain rotation restarts nothing. etcd exiting on its own ends
 * this process with its status, for supervisord or systemd to restart. */
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "datadir.h"
#include "err.h"
#include "etcdtls.h"
#include "logline.h"

static const char *usage_text =
    "usage: ine-etcd [--data-dir DIR] [--etcd PATH] [-- ETCD-FLAGS...]\n"
    "\n"
    "Runs this node's etcd member from DIR/etcd/member.env (ETCD_* variables), with its peer\n"
    "TLS files (DIR/etcd/tls/) once ine-transport installed them, and restarts it when the\n"
    "peer roots appear or change (etcd reads its trusted CA only at start). ETCD-FLAGS go to\n"
    "etcd as they are.\n"
    "\n"
    "  --data-dir DIR   node data directory (default: $INE_DATA_DIR, else " DATADIR_DEFAULT ")\n"
    "  --etcd PATH      the etcd binary (default /usr/bin/etcd)\n"
    "  -h, --help       this text\n";

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig) { stop_sig = sig; }

/* SHA-256 of the file, hex; "" when it does not exist. */
static void roots_digest(const char *path, char out[65])
{
    unsigned char md[32], buf[4096];
    unsigned int mdlen = 0;
    size_t n;
    FILE *f = fopen(path, "rb");
    EVP_MD_CTX *ctx;
    out[0] = 0;
    if (!f) return;
    if ((ctx = EVP_MD_CTX_new()) && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1) {
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
        if (EVP_DigestFinal_ex(ctx, md, &mdlen) == 1)
            for (unsigned i = 0; i < mdlen; i++) sprintf(out + 2 * i, "%02x", md[i]);
    }
    EVP_MD_CTX_free(ctx);
    fclose(f);
}

/* member.env into the environment; the member's uid from ETCD_NAME=node<uid> (0: unknown). */
static int load_env(const char *dd, unsigned *uid)
{
    char path[DATADIR_MAX], line[8192];
    FILE *f;
    int n = 0;
    *uid = 0;
    GUARD(datadir_path(dd, "etcd/member.env", path, sizeof path));
    if (!(f = fopen(path, "r"))) return ine_err(INE_ENOTFOUND, "cannot read %s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        char *eq;
        line[strcspn(line, "\r\n")] = 0;
        if (strncmp(line, "ETCD_", 5) || !(eq = strchr(line, '='))) continue;
        *eq = 0;
        setenv(line, eq + 1, 1);
        if (!strcmp(line, "ETCD_NAME") && !strncmp(eq + 1, "node", 4)) *uid = (unsigned)strtoul(eq + 5, NULL, 10);
        n++;
    }
    fclose(f);
    return n ? INE_OK : ine_err(INE_EINVAL, "%s sets no ETCD_ variable", path);
}

/* The peer files, once they exist and member.env does not name others. */
static void peer_env(const char *dd)
{
    char crt[DATADIR_MAX], key[DATADIR_MAX], ca[DATADIR_MAX];
    if (datadir_path(dd, ETCDTLS_CERT, crt, sizeof crt) < 0 || datadir_path(dd, ETCDTLS_KEY, key, sizeof key) < 0 ||
        datadir_path(dd, ETCDTLS_CA, ca, sizeof ca) < 0 || access(crt, R_OK) != 0)
        return;
    setenv("ETCD_PEER_CERT_FILE", crt, 0);
    setenv("ETCD_PEER_KEY_FILE", key, 0);
    setenv("ETCD_PEER_TRUSTED_CA_FILE", ca, 0);
}

static pid_t start(const char *etcd, char **flags, int n_flags)
{
    char **argv = calloc((size_t)n_flags + 2, sizeof *argv);
    pid_t pid;
    if (!argv) return -1;
    argv[0] = (char *)etcd;
    for (int i = 0; i < n_flags; i++) argv[i + 1] = flags[i];
    if ((pid = fork()) == 0) {
        /* The member dies with us, even by SIGKILL: no orphan keeps its ports. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(1);
        execv(etcd, argv);
        fprintf(stderr, "ine-etcd: cannot run %s: %s\n", etcd, strerror(errno));
        _exit(127);
    }
    free(argv);
    return pid;
}

static int stop_child(pid_t pid)
{
    int st = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) return st;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return st;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, 0, 'd'}, {"etcd", required_argument, 0, 'e'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *dd_arg = NULL, *etcd = "/usr/bin/etcd", *dd;
    char ca[DATADIR_MAX], started_with[65], now[65];
    unsigned uid = 0;
    struct sigaction sa;
    pid_t child;
    int c;
    logline_init("ine-etcd");
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dd_arg = optarg; break;
        case 'e': etcd = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    dd = datadir_resolve(dd_arg);
    if (datadir_path(dd, ETCDTLS_CA, ca, sizeof ca) < 0 || load_env(dd, &uid) < 0) {
        fprintf(stderr, "ine-etcd: %s\n", ine_err_msg());
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (;;) {
        int st = 0;
        peer_env(dd);
        roots_digest(ca, started_with);
        if ((child = start(etcd, argv + optind, argc - optind)) < 0) {
            fprintf(stderr, "ine-etcd: cannot start etcd: %s\n", strerror(errno));
            return 1;
        }
        logline(LOGLINE_INFO, 0, "etcd member started (pid %ld)%s", (long)child,
                getenv("ETCD_PEER_CERT_FILE") ? ", dialing its peers with the node's certificate" : "");
        for (;;) {
            struct timespec ts = {1, 0};
            if (stop_sig) {
                st = stop_child(child);
                logline(LOGLINE_INFO, 0, "stopped");
                return 0;
            }
            if (waitpid(child, &st, WNOHANG) == child) {
                logline(LOGLINE_WARN, 0, "etcd exited (status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
                return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
            }
            roots_digest(ca, now);
            if (strcmp(now, started_with)) break;
            nanosleep(&ts, NULL);
        }
        {
            /* A trust change reaches every node at once: stagger the restarts by node. */
            unsigned delay = uid > 1 ? (uid - 1) * 3 : 0;
            logline(LOGLINE_INFO, 0, "the member's peer roots %s: restarting it in %u s (etcd reads them only at start)",
                    started_with[0] ? "changed" : "appeared", delay);
            for (unsigned i = 0; i < delay * 10 && !stop_sig; i++) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            stop_child(child);
        }
    }
}
