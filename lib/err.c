/* err.c — error codes to names, the thread-local last-error sentence, and the adapters that
 * turn LMDB, OpenSSL and ZeroMQ failures into it. */
#include "err.h"

#include <errno.h>
#include <lmdb.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

static _Thread_local char err__msg[512];

const char *ine_strerror(int rc)
{
    switch (rc) {
    case INE_OK: return "OK";
    case INE_ERR: return "ERR";
    case INE_ENOMEM: return "ENOMEM";
    case INE_EIO: return "EIO";
    case INE_EINVAL: return "EINVAL";
    case INE_ENOTFOUND: return "ENOTFOUND";
    case INE_EEXIST: return "EEXIST";
    case INE_EFULL: return "EFULL";
    case INE_ECORRUPT: return "ECORRUPT";
    case INE_ECHAIN: return "ECHAIN";
    case INE_EAUTH: return "EAUTH";
    case INE_EPERM: return "EPERM";
    case INE_ECRYPTO: return "ECRYPTO";
    case INE_EZMQ: return "EZMQ";
    case INE_EAGAIN: return "EAGAIN";
    case INE_EUNKNOWN: return "EUNKNOWN";
    case INE_EUNAVAIL: return "EUNAVAIL";
    case INE_ESTALE: return "ESTALE";
    default: return "E?";
    }
}

const char *ine_err_msg(void) { return err__msg; }

int ine_verr(int rc, const char *fmt, va_list ap)
{
    /* Callers may wrap the previous sentence ("...: %s", ine_err_msg()): format apart first. */
    char tmp[sizeof err__msg];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    memcpy(err__msg, tmp, sizeof err__msg);
    return rc;
}

int ine_err(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ine_verr(rc, fmt, ap);
    va_end(ap);
    return rc;
}

int ine_err_ossl(int rc, const char *what)
{
    unsigned long e;
    char buf[256];
    size_t off = (size_t)snprintf(err__msg, sizeof err__msg, "%s failed", what);
    /* Drain the whole queue so a stale error never leaks into the next call's report. */
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        if (off < sizeof err__msg)
            off += (size_t)snprintf(err__msg + off, sizeof err__msg - off, ": %s", buf);
    }
    return rc;
}

int ine__err_mdb(int mrc, const char *what)
{
    int rc = INE_ERR;
    switch (mrc) {
    case MDB_MAP_FULL: rc = INE_EFULL; break;
    case MDB_NOTFOUND: rc = INE_ENOTFOUND; break;
    case MDB_KEYEXIST: rc = INE_EEXIST; break;
    case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID: rc = INE_ECORRUPT; break;
    case ENOMEM: rc = INE_ENOMEM; break;
    case ENOSPC: rc = INE_EFULL; break;
    case EACCES: rc = INE_EPERM; break;
    default: if (mrc > 0) rc = INE_EIO; break;
    }
    if (mrc == ENOSPC)
        return ine_err(rc, "event log: the disk is full (No space left on device); nothing was written");
    if (mrc == MDB_MAP_FULL)
        return ine_err(rc, "event log is full (LMDB map size reached); nothing was written; "
                           "reopen with a larger map size");
    return ine_err(rc, "%s: %s", what, mdb_strerror(mrc));
}

int ine__err_zmq(const char *what)
{
    return ine_err(INE_EZMQ, "%s: %s", what, zmq_strerror(errno));
}
