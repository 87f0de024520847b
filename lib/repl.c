/* repl.c — TEMPORARY STUB in the join helper's branch: repl_sync is the lead's (issue #8) and
 * replaces this file when it lands; repl_conf_load/save live in repl_conf.c and stay. */
#include "repl.h"
#include "err.h"

int repl_sync(const char *data_dir, const repl_conf *c, const repl_creds *creds, int timeout_ms, uint64_t *head)
{
    (void)data_dir;
    (void)c;
    (void)creds;
    (void)timeout_ms;
    if (head) *head = 0;
    return ine_err(INE_ERR, "log replication (repl_sync) is not in this build yet");
}
