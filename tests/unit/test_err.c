/* test_err.c — the error sentence: codes, and a sentence that wraps the previous one. */
#include <criterion/criterion.h>
#include <string.h>

#include "err.h"

Test(err, wrapping_the_previous_sentence_keeps_it)
{
    cr_assert_eq(ine_err(INE_EIO, "disk said no"), INE_EIO);
    cr_assert_eq(ine_err(INE_ERR, "REST certificate: %s", ine_err_msg()), INE_ERR);
    cr_assert_str_eq(ine_err_msg(), "REST certificate: disk said no");
}

Test(err, codes_have_names)
{
    cr_assert_str_eq(ine_strerror(INE_EFULL), "EFULL");
    cr_assert_str_eq(ine_strerror(INE_OK), "OK");
    cr_assert_str_eq(ine_strerror(-999), "E?");
}
