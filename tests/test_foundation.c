/* Version, status strings, last-error behaviour, threads, symbol hygiene and
 * the installed package (pkg-config, shared and static linking). */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

START_TEST(version_matches_header)
{
    ck_assert_uint_eq(subsae_version_number(), SUBSAE_VERSION_NUMBER);
    ck_assert_str_eq(subsae_version_string(), SUBSAE_VERSION_STRING);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", SUBSAE_VERSION_MAJOR,
             SUBSAE_VERSION_MINOR, SUBSAE_VERSION_PATCH);
    ck_assert_str_eq(subsae_version_string(), expected);
    ck_assert_uint_eq(subsae_version_number(),
                      SUBSAE_VERSION_MAJOR * 10000u + SUBSAE_VERSION_MINOR * 100u +
                          SUBSAE_VERSION_PATCH);
}
END_TEST

START_TEST(status_strings_distinct)
{
    const int codes[] = {SUBSAE_OK,          SUBSAE_E_INVALID, SUBSAE_E_NOMEM,
                         SUBSAE_E_IO,        SUBSAE_E_FORMAT,  SUBSAE_E_NONFINITE,
                         SUBSAE_E_STATE,     SUBSAE_E_UNSUPPORTED, SUBSAE_E_RANGE,
                         SUBSAE_E_CANCELLED};
    const size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *s = subsae_status_string(codes[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_ne(s, "unknown status");
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(s, subsae_status_string(codes[j]));
    }
    ck_assert_str_eq(subsae_status_string(SUBSAE_OK), "ok");
    ck_assert_str_eq(subsae_status_string(SUBSAE_E_NOMEM), "out of memory");
    ck_assert_str_eq(subsae_status_string(12345), "unknown status");
    ck_assert_str_eq(subsae_status_string(-100), "unknown status");
    /* The codes are part of the ABI: fixed values. */
    ck_assert_int_eq(SUBSAE_E_INVALID, -1);
    ck_assert_int_eq(SUBSAE_E_RANGE, -8);
    ck_assert_int_eq(SUBSAE_E_CANCELLED, -9);
}
END_TEST

START_TEST(reason_strings_distinct)
{
    for (int r = SUBSAE_REASON_NONE; r <= SUBSAE_REASON_BAD_SHAPE; r++) {
        const char *s = subsae_reason_string(r);
        ck_assert_str_ne(s, "unknown reason");
        for (int q = SUBSAE_REASON_NONE; q < r; q++)
            ck_assert_str_ne(s, subsae_reason_string(q));
    }
    ck_assert_str_eq(subsae_reason_string(-1), "unknown reason");
    ck_assert_str_eq(subsae_reason_string(100000), "unknown reason");
}
END_TEST

START_TEST(last_error_records_and_clears)
{
    subsae_clear_error();
    ck_assert_str_eq(subsae_last_error(), "");
    ck_assert_int_eq(subsae_last_error_status(), SUBSAE_OK);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_NONE);

    int rc = subsae__fail(SUBSAE_E_FORMAT, SUBSAE_REASON_BAD_MAGIC, "file %s: bad magic %#x",
                          "a.npy", 0x42);
    ck_assert_int_eq(rc, SUBSAE_E_FORMAT);
    ck_assert_str_eq(subsae_last_error(), "file a.npy: bad magic 0x42");
    ck_assert_int_eq(subsae_last_error_status(), SUBSAE_E_FORMAT);
    ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_BAD_MAGIC);

    subsae__error_prefix("/data/x.npy");
    ck_assert_str_eq(subsae_last_error(), "/data/x.npy: file a.npy: bad magic 0x42");

    subsae_clear_error();
    ck_assert_str_eq(subsae_last_error(), "");
    ck_assert_int_eq(subsae_last_error_status(), SUBSAE_OK);
}
END_TEST

START_TEST(last_error_truncates_long_messages)
{
    char longname[4000];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "cannot open %s", longname);
    size_t len = strlen(subsae_last_error());
    ck_assert_uint_gt(len, 100);
    ck_assert_uint_lt(len, sizeof longname);
    ck_assert(strncmp(subsae_last_error(), "cannot open xxx", 15) == 0);
}
END_TEST

static void *fail_on_other_thread(void *arg)
{
    (void)arg;
    subsae__fail(SUBSAE_E_RANGE, SUBSAE_REASON_INDEX_OUT_OF_RANGE, "other thread");
    return (void *)(intptr_t)(strcmp(subsae_last_error(), "other thread") == 0);
}

START_TEST(last_error_is_thread_local)
{
    subsae__fail(SUBSAE_E_IO, SUBSAE_REASON_SYSTEM, "main thread");
    pthread_t thread;
    void *other_ok = NULL;
    ck_assert_int_eq(pthread_create(&thread, NULL, fail_on_other_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(thread, &other_ok), 0);
    ck_assert(other_ok != NULL);
    ck_assert_str_eq(subsae_last_error(), "main thread");
    ck_assert_int_eq(subsae_last_error_status(), SUBSAE_E_IO);
}
END_TEST

START_TEST(thread_count_round_trips)
{
    ck_assert_int_ge(subsae_get_num_threads(), 1);
    ck_assert_ok(subsae_set_num_threads(1));
    ck_assert_int_eq(subsae_get_num_threads(), 1);
    ck_assert_ok(subsae_set_num_threads(3));
    ck_assert_int_eq(subsae_get_num_threads(), 3);
    ck_assert_ok(subsae_set_num_threads(0));
    ck_assert_int_eq(subsae_get_num_threads(), (int)sysconf(_SC_NPROCESSORS_ONLN));
}
END_TEST

START_TEST(allocation_hook_fails_nth)
{
    subsae__alloc_fail_after(2);
    void *a = subsae__malloc(16), *b = subsae__calloc(2, 8), *c = subsae__malloc(16);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(subsae__alloc_count(), 3);
    subsae__alloc_fail_after(-1);
    c = subsae__malloc(16);
    ck_assert_ptr_nonnull(c);
    subsae__free(a);
    subsae__free(b);
    subsae__free(c);
}
END_TEST

/* The exported dynamic symbols are exactly the public subsae_* ones. */
START_TEST(shared_library_exports_only_public_symbols)
{
    char command[2048];
    snprintf(command, sizeof command,
             "nm -D --defined-only '%s/libsubsae.so' | awk '{print $3}' | "
             "grep -v '^subsae_[a-z0-9]' | grep .",
             harness_build_dir());
    ck_assert_msg(harness_run(command) == 1, "non-public symbols exported (listed above)");
    snprintf(command, sizeof command,
             "nm -D --defined-only '%s/libsubsae.so' | grep -q ' subsae__'", harness_build_dir());
    ck_assert_msg(harness_run(command) == 1, "internal subsae__ symbols exported");
    snprintf(command, sizeof command,
             "readelf -d '%s/libsubsae.so.%s' | grep -q 'SONAME.*\\[libsubsae.so.%d\\]'",
             harness_build_dir(), SUBSAE_VERSION_STRING, SUBSAE_VERSION_MAJOR);
    ck_assert_msg(harness_run(command) == 0, "SONAME is not libsubsae.so.%d",
                  SUBSAE_VERSION_MAJOR);
}
END_TEST

/* make install into a temporary prefix, then build a program with
 * pkg-config both ways (shared, and static against libsubsae.a). */
START_TEST(install_and_link_with_pkg_config)
{
    if (harness_sanitized()) {
        harness_skip("install_and_link_with_pkg_config", "not under sanitizers");
        return;
    }
    char command[4096];
    snprintf(command, sizeof command, "'%s/tests/install_test.sh' '%s' '%s'",
             harness_source_dir(), harness_source_dir(), harness_tmpdir());
    ck_assert_int_eq(harness_run(command), 0);
}
END_TEST

/* The checked-in ABI baseline still matches, and the gate itself works:
 * removing or changing an exported function fails it, adding one passes. */
START_TEST(abi_gate)
{
    if (harness_sanitized()) {
        harness_skip("abi_gate", "not under sanitizers");
        return;
    }
    char command[4096];
    snprintf(command, sizeof command, "make -s -C '%s' check-abi", harness_source_dir());
    ck_assert_msg(harness_run(command) == 0, "make check-abi failed against abi/libsubsae.abi");
    snprintf(command, sizeof command, "'%s/tests/abi_test.sh' '%s' '%s'", harness_source_dir(),
             harness_source_dir(), harness_tmpdir());
    ck_assert_int_eq(harness_run(command), 0);
}
END_TEST

SUBSAE_SUITE(foundation)
{
    Suite *s = suite_create("foundation");
    TCase *tc = harness_case(s, "core", 10);
    tcase_add_test(tc, version_matches_header);
    tcase_add_test(tc, status_strings_distinct);
    tcase_add_test(tc, reason_strings_distinct);
    tcase_add_test(tc, last_error_records_and_clears);
    tcase_add_test(tc, last_error_truncates_long_messages);
    tcase_add_test(tc, last_error_is_thread_local);
    tcase_add_test(tc, thread_count_round_trips);
    tcase_add_test(tc, allocation_hook_fails_nth);
    tc = harness_case(s, "package", 300);
    tcase_add_test(tc, shared_library_exports_only_public_symbols);
    tcase_add_test(tc, install_and_link_with_pkg_config);
    tcase_add_test(tc, abi_gate);
    return s;
}
