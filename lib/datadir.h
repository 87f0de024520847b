/* datadir.h — where a node's state lives. Every binary takes --data-dir; without it
 * $INE_DATA_DIR, else /var/lib/ine. Inside: log/ (LMDB), seal.key (0600), run/ (ipc
 * endpoints), logs/. Operators never type an endpoint: tools find services through this. */
#ifndef INE_DATADIR_H
#define INE_DATADIR_H

#include <stddef.h>

#define DATADIR_DEFAULT "/var/lib/ine"
#define DATADIR_MAX 3072

/* The data dir to use: `arg` if given, else $INE_DATA_DIR, else the default. */
const char *datadir_resolve(const char *arg);

/* <dd>/<name> into out; INE_EINVAL if it does not fit. */
int datadir_path(const char *dd, const char *name, char *out, size_t len);

/* Create <dd> (0700) and its run/ and logs/ subdirectories if missing. */
int datadir_create(const char *dd);

#endif
