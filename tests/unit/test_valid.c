/* test_valid.c — the shared input rules. */
#include <criterion/criterion.h>

#include "valid.h"

Test(valid, names)
{
    cr_assert(valid_name("db-1_x.y"));
    cr_assert_not(valid_name(""));
    cr_assert_not(valid_name("a b"));
    cr_assert_not(valid_name("a/b"));
    cr_assert_not(valid_name("0123456789012345678901234567890123456789012345678901234567890123456789"));
    cr_assert(valid_username("admin@example.com"));
    cr_assert_not(valid_username("admin example"));
}

Test(valid, addresses)
{
    cr_assert(valid_address("127.0.0.1"));
    cr_assert(valid_address("::1"));
    cr_assert(valid_address("node-1.example.com"));
    cr_assert_not(valid_address("300.1.2.3"));
    cr_assert_not(valid_address("a..b"));
    cr_assert_not(valid_address("-a"));
    cr_assert_not(valid_address("a_b"));
    cr_assert_not(valid_address(""));
}

Test(valid, host_ports)
{
    cr_assert(valid_hostport("127.0.0.1:6379"));
    cr_assert(valid_hostport("redis.local:1"));
    cr_assert(valid_hostport("[::1]:65535"));
    cr_assert_not(valid_hostport("127.0.0.1"));
    cr_assert_not(valid_hostport("127.0.0.1:0"));
    cr_assert_not(valid_hostport("127.0.0.1:65536"));
    cr_assert_not(valid_hostport("127.0.0.1:12x"));
    cr_assert_not(valid_hostport("::1:80"));
    cr_assert_not(valid_hostport(":80"));
    cr_assert_not(valid_hostport("[127.0.0.1]:80"));
}
