/* valid.c — shared input rules. */
#include "valid.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static int valid__chars(const char *s, size_t max, const char *extra)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i])) return 0;
    return 1;
}

int valid_name(const char *s) { return valid__chars(s, 64, "-_."); }

int valid_username(const char *s) { return valid__chars(s, 128, "-_.@+"); }

int valid_address(const char *s)
{
    unsigned char buf[16];
    size_t n = s ? strlen(s) : 0, label = 0;
    if (!s) return 0;
    if (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1) return 1;
    if (n == 0 || n > 253 || s[0] == '-' || s[0] == '.' || s[n - 1] == '.' || s[n - 1] == '-') return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (label == 0 || s[i - 1] == '-') return 0;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)s[i]) && s[i] != '-') return 0;
        if (++label > 63) return 0;
    }
    /* All digits and dots would be a malformed IPv4 literal, not a name. */
    return strspn(s, "0123456789.") != n;
}

int valid_hostport(const char *s)
{
    char host[256];
    const char *colon, *p;
    char *end;
    long port;
    size_t hl;
    if (!s || !*s) return 0;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') return 0;
        hl = (size_t)(rb - s - 1);
        if (hl == 0 || hl >= sizeof host) return 0;
        memcpy(host, s + 1, hl);
        host[hl] = 0;
        if (!strchr(host, ':')) return 0;
        p = rb + 2;
    } else {
        if (!(colon = strrchr(s, ':')) || strchr(s, ':') != colon) return 0;
        hl = (size_t)(colon - s);
        if (hl == 0 || hl >= sizeof host) return 0;
        memcpy(host, s, hl);
        host[hl] = 0;
        p = colon + 1;
    }
    if (!valid_address(host) || !isdigit((unsigned char)*p)) return 0;
    port = strtol(p, &end, 10);
    return !*end && port >= 1 && port <= 65535;
}
