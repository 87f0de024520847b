/* test_repl_conf.c — replica.conf (repl_conf_load / repl_conf_save), as `inectl node join`
 * writes it: a round trip, mode 0644, bad values refused on save (file unchanged) and on load
 * with a sentence naming what is wrong. Only behaviour any implementation of the contract
 * shares is asserted (not the exact text or comments of the file). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "repl.h"
#include "testutil.h"

static char *dir;

static void setup(void) { cr_assert_not_null(dir = tu_tmpdir()); }
static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

TestSuite(repl_conf, .init = setup, .fini = teardown);

Test(repl_conf, round_trip_and_every_field_checked)
{
    repl_conf c = {.node_uid = 2, .master_address = "10.200.0.1", .master_port = 3342, .cluster_uid = "0123abcd"}, r;
    char *p = tu_path(dir, "replica.conf");
    struct stat st;
    cr_assert_eq(repl_conf_load(dir, &r), INE_ENOTFOUND, "no file: not a replica");
    cr_assert_eq(repl_conf_save(dir, &c), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0644);
    char *text = tu_read_file(p, NULL);
    cr_assert(strstr(text, "node_uid 2\n") && strstr(text, "master_address 10.200.0.1\n") && strstr(text, "master_port 3342\n") &&
              strstr(text, "cluster_uid 0123abcd\n"), "%s", text);
    free(text);
    cr_assert_eq(repl_conf_load(dir, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.node_uid, 2);
    cr_assert_str_eq(r.master_address, "10.200.0.1");
    cr_assert_eq(r.master_port, 3342);
    cr_assert_str_eq(r.cluster_uid, "0123abcd");

    /* Saving refuses bad values and leaves the file as it was. */
    repl_conf bad = c;
    bad.master_port = 70000;
    cr_assert_eq(repl_conf_save(dir, &bad), INE_EINVAL);
    bad = c;
    snprintf(bad.master_address, sizeof bad.master_address, "not an address");
    cr_assert_eq(repl_conf_save(dir, &bad), INE_EINVAL);
    bad = c;
    bad.node_uid = 0;
    cr_assert_eq(repl_conf_save(dir, &bad), INE_EINVAL);
    cr_assert_eq(repl_conf_load(dir, &r), INE_OK);
    cr_assert_eq(r.master_port, 3342);

    /* Loading names what is wrong. */
    struct { const char *text, *why; } cases[] = {
        {"master_address 10.0.0.1\nmaster_port 3342\ncluster_uid ab\n", "node_uid"},
        {"node_uid x\nmaster_address 10.0.0.1\nmaster_port 3342\ncluster_uid ab\n", "node_uid"},
        {"node_uid 2\nmaster_address 10.0.0.1\nmaster_port 99999\ncluster_uid ab\n", "master_port"},
        {"node_uid 2\nmaster_address a..b\nmaster_port 3342\ncluster_uid ab\n", "a..b"},
        {"node_uid 2\ncolour red\n", "colour"},
        {"node_uid\n", "expected 'key value'"},
        {NULL, NULL}};
    for (int i = 0; cases[i].text; i++) {
        cr_assert_eq(tu_write_file(p, cases[i].text, strlen(cases[i].text)), 0);
        cr_assert_eq(repl_conf_load(dir, &r), INE_EINVAL, "case %d", i);
        cr_assert(strstr(ine_err_msg(), cases[i].why), "case %d: %s", i, ine_err_msg());
    }
    /* Comments and blank lines are fine. */
    const char *ok = "# a replica\n\nnode_uid 7\nmaster_address ::1\nmaster_port 1\ncluster_uid ab12\n";
    cr_assert_eq(tu_write_file(p, ok, strlen(ok)), 0);
    cr_assert_eq(repl_conf_load(dir, &r), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(r.node_uid, 7);
    cr_assert_str_eq(r.master_address, "::1");
    free(p);
}
