/* err.h — the suite's error codes, the last-error message, and the guard macros that wrap
 * library calls (LMDB, OpenSSL, ZeroMQ) so every failure carries one clear sentence.
 *
 * Convention: functions return INE_OK (0) or a negative INE_E* code; on failure they leave a
 * human sentence in ine_err_msg() (thread-local) that a binary prints as its one stderr line. */
#ifndef INE_ERR_H
#define INE_ERR_H

#include <stdarg.h>

enum {
    INE_OK = 0,
    INE_ERR = -1,        /* unclassified failure */
    INE_ENOMEM = -2,
    INE_EIO = -3,        /* file system or socket failure */
    INE_EINVAL = -4,     /* bad argument or input */
    INE_ENOTFOUND = -5,
    INE_EEXIST = -6,
    INE_EFULL = -7,      /* the event log's map is full */
    INE_ECORRUPT = -8,   /* a stored record does not decode */
    INE_ECHAIN = -9,     /* the hash chain is broken (altered, missing or truncated record) */
    INE_EAUTH = -10,     /* authentication failed: tampered blob, wrong key, wrong purpose */
    INE_EPERM = -11,     /* unsafe permissions or not allowed */
    INE_ECRYPTO = -12,   /* OpenSSL failure */
    INE_EZMQ = -13,      /* ZeroMQ failure */
    INE_EAGAIN = -14,    /* try again later */
    INE_EUNKNOWN = -15,  /* an event type this version does not know */
    INE_EUNAVAIL = -16,  /* the cluster's consensus (etcd) did not answer in time or has no quorum */
    INE_ESTALE = -17,    /* the log moved on since the state a decision was made from: decide again */
};

/* Short name of an error code ("EFULL"), for logs. */
const char *ine_strerror(int rc);

/* The last failure's sentence on this thread ("" if none). */
const char *ine_err_msg(void);

/* Set the message and return rc, so callers can write: return ine_err(INE_EINVAL, "..."). */
int ine_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ine_verr(int rc, const char *fmt, va_list ap);

/* Drain the OpenSSL error queue into the message, prefixed by what was being done. */
int ine_err_ossl(int rc, const char *what);

/* Guards: each evaluates the call once; on failure sets `rc` and jumps to `label`. */
#define GUARD(call)                                                           \
    do {                                                                      \
        int guard_rc__ = (call);                                              \
        if (guard_rc__ < 0) return guard_rc__;                                \
    } while (0)

#define GUARD_GOTO(call, label)                                               \
    do {                                                                      \
        rc = (call);                                                          \
        if (rc < 0) goto label;                                               \
    } while (0)

/* LMDB: non-zero is failure; MDB_MAP_FULL maps to INE_EFULL. */
int ine__err_mdb(int mrc, const char *what);
#define GUARD_MDB(call, label)                                                \
    do {                                                                      \
        int mdb_rc__ = (call);                                                \
        if (mdb_rc__ != 0) {                                                  \
            rc = ine__err_mdb(mdb_rc__, #call);                               \
            goto label;                                                       \
        }                                                                     \
    } while (0)

/* OpenSSL: 1 (or a non-NULL pointer cast to int by the caller) is success. */
#define GUARD_OSSL(cond, label)                                               \
    do {                                                                      \
        if (!(cond)) {                                                        \
            rc = ine_err_ossl(INE_ECRYPTO, #cond);                            \
            goto label;                                                       \
        }                                                                     \
    } while (0)

/* ZeroMQ: -1 is failure, errno says why. */
int ine__err_zmq(const char *what);
#define GUARD_ZMQ(call, label)                                                \
    do {                                                                      \
        if ((call) == -1) {                                                   \
            rc = ine__err_zmq(#call);                                         \
            goto label;                                                       \
        }                                                                     \
    } while (0)

#endif
