/* datadir.c — data directory resolution and layout. */
#include "datadir.h"
#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *datadir_resolve(const char *arg)
{
    const char *env = getenv("INE_DATA_DIR");
    if (arg && *arg) return arg;
    if (env && *env) return env;
    return DATADIR_DEFAULT;
}

int datadir_path(const char *dd, const char *name, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s", dd, name);
    if (n < 0 || (size_t)n >= len) return ine_err(INE_EINVAL, "path %s/%s is too long", dd, name);
    return INE_OK;
}

static int datadir__mkdir(const char *p)
{
    if (mkdir(p, 0700) == 0 || errno == EEXIST) return INE_OK;
    return ine_err(INE_EIO, "cannot create directory %s: %s", p, strerror(errno));
}

int datadir_create(const char *dd)
{
    char p[DATADIR_MAX];
    GUARD(datadir__mkdir(dd));
    GUARD(datadir_path(dd, "run", p, sizeof p));
    GUARD(datadir__mkdir(p));
    GUARD(datadir_path(dd, "logs", p, sizeof p));
    GUARD(datadir__mkdir(p));
    return INE_OK;
}
