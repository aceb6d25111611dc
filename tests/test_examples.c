/* The examples and language bindings: each example program checks its own
 * results (effective rank of a shared file against reference.json, training
 * metrics, encode/decode agreement, error reporting) and exits non-zero on a
 * mismatch; these tests run them and assert exit status 0. A test skips,
 * with the reason printed, only when its toolchain is missing (g++, cargo,
 * numpy), when the shared data is absent, or, for the Rust and Python
 * examples, under sanitizers (an instrumented libsubsae.so cannot be loaded
 * by an uninstrumented runtime). Also: every function of the public header
 * is declared in each binding. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* snprintf into an array, failing the test rather than truncating. */
#define FORMAT(buf, ...)                                                        \
    do {                                                                        \
        int n_ = snprintf((buf), sizeof(buf), __VA_ARGS__);                     \
        ck_assert_msg(n_ >= 0 && (size_t)n_ < sizeof(buf), "command too long"); \
    } while (0)

/* Run `command` with its output into a log; print the log if it fails. */
static int run_logged(const char *name, const char *command)
{
    char log[1024], full[8192];
    harness_tmp_path(name, log, sizeof log);
    FORMAT(full,
             "( %s ) > '%s.log' 2>&1; rc=$?; "
             "if [ $rc -ne 0 ]; then echo '--- %s output:'; cat '%s.log'; fi; exit $rc",
             command, log, name, log);
    return harness_run(full);
}

static bool have_command(const char *probe)
{
    char command[1024];
    FORMAT(command, "( %s ) >/dev/null 2>&1", probe);
    return harness_run(command) == 0;
}

static const char *shared_activation_file(const char *test, char *buf, size_t size)
{
    const char *path = harness_shared_file("L2_attn_out.npy", buf, size);
    if (!path)
        harness_skip(test, "the shared stories260K data is absent");
    return path;
}

static const char *python(void)
{
    const char *p = getenv("SUBSAE_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

START_TEST(c_quickstart)
{
    char file[4096], out[1024], command[8192];
    if (!shared_activation_file("c_quickstart", file, sizeof file))
        return;
    FORMAT(command, "'%s/examples/quickstart' '%s' '%s'", harness_build_dir(),
             file, harness_tmp_path("quickstart-sae", out, sizeof out));
    ck_assert_msg(run_logged("quickstart", command) == 0, "examples/quickstart.c failed");
}
END_TEST

START_TEST(c_stream)
{
    char command[4096];
    FORMAT(command, "'%s/examples/stream'", harness_build_dir());
    ck_assert_msg(run_logged("stream", command) == 0, "examples/stream.c failed");
}
END_TEST

START_TEST(cpp_example)
{
    char file[4096], command[8192];
    if (!have_command("command -v g++")) {
        harness_skip("cpp_example", "no C++ compiler (g++)");
        return;
    }
    if (!shared_activation_file("cpp_example", file, sizeof file))
        return;
    FORMAT(command, "'%s/examples/cpp_example' '%s'", harness_build_dir(),
             file);
    ck_assert_msg(run_logged("cpp_example", command) == 0, "examples/cpp/example.cpp failed");
}
END_TEST

START_TEST(rust_example)
{
    char file[4096], command[16384];
    if (harness_sanitized()) {
        harness_skip("rust_example", "not under sanitizers (uninstrumented Rust runtime)");
        return;
    }
    const char *find_cargo = "command -v cargo || { test -x \"$HOME/.cargo/bin/cargo\" && "
                             "echo \"$HOME/.cargo/bin/cargo\"; }";
    if (!have_command(find_cargo)) {
        harness_skip("rust_example", "no Rust toolchain (cargo)");
        return;
    }
    if (!shared_activation_file("rust_example", file, sizeof file))
        return;
    FORMAT(command,
             "cargo=$(%s) && cd '%s/examples/rust' && SUBSAE_LIB_DIR='%s' "
             "CARGO_TARGET_DIR='%s/rust' \"$cargo\" run --offline --release -q -- '%s'",
             find_cargo, harness_source_dir(), harness_build_dir(), harness_build_dir(), file);
    ck_assert_msg(run_logged("rust_example", command) == 0, "examples/rust failed");
}
END_TEST

/* Issue 14, problem 9: a crate that depends on the binding (as a user's
 * crate would, tests/fixtures/rust-dependent) builds offline and its
 * binary runs by itself, without LD_LIBRARY_PATH, and does not need
 * libsubsae.so at run time (the binding links libsubsae.a through
 * cargo:rustc-link-lib, which Cargo passes on to dependents). */
START_TEST(rust_dependent_crate)
{
    char command[16384];
    if (harness_sanitized()) {
        harness_skip("rust_dependent_crate", "not under sanitizers (uninstrumented Rust runtime)");
        return;
    }
    const char *find_cargo = "command -v cargo || { test -x \"$HOME/.cargo/bin/cargo\" && "
                             "echo \"$HOME/.cargo/bin/cargo\"; }";
    if (!have_command(find_cargo)) {
        harness_skip("rust_dependent_crate", "no Rust toolchain (cargo)");
        return;
    }
    FORMAT(command,
           "cargo=$(%s) && cd '%s/tests/fixtures/rust-dependent' && SUBSAE_LIB_DIR='%s' "
           "CARGO_TARGET_DIR='%s/rust' \"$cargo\" build --offline --locked --release -q && "
           "bin='%s/rust/release/subsae-dependent' && env -u LD_LIBRARY_PATH \"$bin\" && "
           "if ldd \"$bin\" | grep libsubsae; then echo 'needs libsubsae.so'; exit 1; fi",
           find_cargo, harness_source_dir(), harness_build_dir(), harness_build_dir(),
           harness_build_dir());
    ck_assert_msg(run_logged("rust_dependent", command) == 0,
                  "tests/fixtures/rust-dependent failed");
}
END_TEST

START_TEST(python_example)
{
    char file[4096], probe[1024], command[8192];
    if (harness_sanitized()) {
        harness_skip("python_example", "not under sanitizers (uninstrumented Python)");
        return;
    }
    FORMAT(probe, "'%s' -c 'import numpy'", python());
    if (!have_command(probe)) {
        harness_skip("python_example", "no numpy for the Python interpreter");
        return;
    }
    if (!shared_activation_file("python_example", file, sizeof file))
        return;
    FORMAT(command,
             "SUBSAE_LIB='%s/libsubsae.so' '%s' -B '%s/examples/python/example.py' '%s'",
             harness_build_dir(), python(), harness_source_dir(), file);
    ck_assert_msg(run_logged("python_example", command) == 0,
                  "examples/python/example.py failed");
}
END_TEST

/* ---- every public function is bound in every language ---------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    ck_assert_int_ge(size, 0);
    rewind(f);
    char *text = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    return text;
}

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

/* `name` occurs in `text` as a whole identifier. */
static bool mentions(const char *text, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name))
        if ((p == text || !ident_char(p[-1])) && !ident_char(p[len]))
            return true;
    return false;
}

START_TEST(bindings_declare_every_function)
{
    static const char *const bindings[] = {
        "examples/rust/src/sys.rs", "examples/python/subsae.py", "examples/julia/Subsae.jl",
        "examples/cpp/subsae.hpp"};
    char path[4096];
    FORMAT(path, "%s/include/subsae.h", harness_source_dir());
    char *header = slurp(path);
    char *texts[4];
    for (int b = 0; b < 4; b++) {
        FORMAT(path, "%s/%s", harness_source_dir(), bindings[b]);
        texts[b] = slurp(path);
    }
    int functions = 0, missing = 0;
    /* Every "SUBSAE_API ... subsae_name(" declaration of the header. */
    for (const char *p = strstr(header, "\nSUBSAE_API "); p; p = strstr(p + 1, "\nSUBSAE_API ")) {
        const char *paren = strchr(p, '(');
        ck_assert_ptr_nonnull(paren);
        const char *start = paren;
        while (start > p && ident_char(start[-1]))
            start--;
        char name[128];
        size_t len = (size_t)(paren - start);
        ck_assert_uint_lt(len, sizeof name);
        memcpy(name, start, len);
        name[len] = '\0';
        ck_assert_msg(strncmp(name, "subsae_", 7) == 0, "odd declaration: %s", name);
        functions++;
        for (int b = 0; b < 4; b++)
            if (!mentions(texts[b], name)) {
                fprintf(stderr, "%s does not bind %s\n", bindings[b], name);
                missing++;
            }
    }
    ck_assert_int_ge(functions, 86);
    ck_assert_msg(missing == 0, "%d function(s) missing from the bindings (listed above)",
                  missing);
    for (int b = 0; b < 4; b++)
        free(texts[b]);
    free(header);
}
END_TEST

SUBSAE_SUITE(examples)
{
    Suite *s = suite_create("examples");
    TCase *tc = harness_case(s, "bindings", 10);
    tcase_add_test(tc, bindings_declare_every_function);
    tc = harness_case(s, "c", 60);
    tcase_add_test(tc, c_quickstart);
    tcase_add_test(tc, c_stream);
    tc = harness_case(s, "cpp", 60);
    tcase_add_test(tc, cpp_example);
    /* The first run compiles the crate (a few seconds, no dependencies). */
    tc = harness_case(s, "rust", 180);
    tcase_add_test(tc, rust_example);
    tcase_add_test(tc, rust_dependent_crate);
    tc = harness_case(s, "python", 60);
    tcase_add_test(tc, python_example);
    return s;
}
