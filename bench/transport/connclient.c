/* connclient.c — the transport benchmark's connection client, speaking just enough RESP to a
 * redis-server behind the tunnel under test. Two modes:
 *
 *   connclient rate HOST PORT SECONDS THREADS
 *       each thread, in a loop: connect, PING, wait for +PONG, close. Every connection makes
 *       the tunnel open (and handshake) a new stream, so this is new tunnelled connections
 *       per second, end to end. Prints "conns_per_s N errors E".
 *   connclient idle HOST PORT N
 *       opens N connections, PINGs each once (so every stream is up end to end), prints
 *       "ready N" and holds them until stdin closes.
 *
 * Built by bench/transport/run.sh with plain cc (it is not part of the CMake build). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in cc_addr;
static double cc_end;
static atomic_long cc_ok, cc_err;

static double cc__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One connection that has answered a PING, or -1. */
static int cc__connect_ping(void)
{
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    char buf[16];
    size_t got = 0;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&cc_addr, sizeof cc_addr) < 0) goto fail;
    if (write(fd, ping, sizeof ping - 1) != (ssize_t)(sizeof ping - 1)) goto fail;
    while (got < 7) {
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n <= 0) goto fail;
        got += (size_t)n;
    }
    if (memcmp(buf, "+PONG\r\n", 7)) goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

static void *cc__rate_thread(void *arg)
{
    (void)arg;
    while (cc__now() < cc_end) {
        int fd = cc__connect_ping();
        if (fd < 0) {
            atomic_fetch_add(&cc_err, 1);
            usleep(1000);
            continue;
        }
        /* RST on close: no TIME_WAIT pile-up on the client's ephemeral ports. */
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        atomic_fetch_add(&cc_ok, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: connclient rate HOST PORT SECONDS THREADS | idle HOST PORT N\n");
        return 2;
    }
    cc_addr.sin_family = AF_INET;
    cc_addr.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &cc_addr.sin_addr) != 1) return fprintf(stderr, "connclient: bad host %s\n", argv[2]), 2;
    if (!strcmp(argv[1], "rate") && argc == 6) {
        int nt = atoi(argv[5]);
        double secs = atof(argv[4]), t0;
        pthread_t th[256];
        if (nt < 1 || nt > 256) return fprintf(stderr, "connclient: 1..256 threads\n"), 2;
        t0 = cc__now();
        cc_end = t0 + secs;
        for (int i = 0; i < nt; i++) pthread_create(&th[i], NULL, cc__rate_thread, NULL);
        for (int i = 0; i < nt; i++) pthread_join(th[i], NULL);
        printf("conns_per_s %.1f errors %ld\n", (double)atomic_load(&cc_ok) / (cc__now() - t0), atomic_load(&cc_err));
        return 0;
    }
    if (!strcmp(argv[1], "idle")) {
        int n = atoi(argv[4]), ok = 0;
        int *fds = calloc((size_t)n, sizeof *fds);
        struct rlimit rl = {(rlim_t)n + 64, (rlim_t)n + 64};
        char c;
        setrlimit(RLIMIT_NOFILE, &rl);
        for (int i = 0; fds && i < n; i++)
            if ((fds[i] = cc__connect_ping()) >= 0) ok++;
        printf("ready %d\n", ok);
        fflush(stdout);
        while (read(0, &c, 1) > 0) {
        }
        for (int i = 0; fds && i < n; i++)
            if (fds[i] >= 0) close(fds[i]);
        free(fds);
        return ok == n ? 0 : 1;
    }
    fprintf(stderr, "connclient: unknown mode %s\n", argv[1]);
    return 2;
}
