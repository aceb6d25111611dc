/* Option metadata has one source, the library's table (subsae_option_*):
 * the CLI's help and its out-of-range messages, and the Python binding's
 * errors, state exactly the bounds subsae_option_int_bounds returns, and
 * the Python binding picks the int or double setter by subsae_option_info.
 * Nothing is changed for the test: it reads what each client says. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT(buf, ...)                                                        \
    do {                                                                        \
        int n_ = snprintf((buf), sizeof(buf), __VA_ARGS__);                     \
        ck_assert_msg(n_ >= 0 && (size_t)n_ < sizeof(buf), "text too long");    \
    } while (0)

/* A file of the test's directory with every run of white space made one
 * space (help texts wrap their lines). The caller frees it. */
static char *read_flat(const char *name)
{
    char path[1024];
    harness_tmp_path(name, path, sizeof path);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    ck_assert(size >= 0 && fseek(f, 0, SEEK_SET) == 0);
    char *text = malloc((size_t)size + 1);
    ck_assert(text != NULL);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    size_t out = 0;
    for (size_t i = 0; i < got; i++) {
        bool space = text[i] == ' ' || text[i] == '\n' || text[i] == '\t';
        if (!space)
            text[out++] = text[i];
        else if (out > 0 && text[out - 1] != ' ')
            text[out++] = ' ';
    }
    text[out] = '\0';
    return text;
}

static void int_bounds(int option, int64_t *lo, int64_t *hi, int64_t *def)
{
    ck_assert_int_eq(subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, option, lo, hi, def),
                     SUBSAE_OK);
}

START_TEST(cli_help_states_the_library_bounds)
{
    ck_assert_int_eq(harness_cli("train --help", "help"), 0);
    char *help = read_flat("help");
    int64_t lo, hi, def;
    char want[256];
    /* A trainer option the CLI sets: default and range. */
    int_bounds(SUBSAE_TRAIN_BATCH, &lo, &hi, &def);
    FORMAT(want, "--batch B tokens per step (default %lld; %lld to %lld)", (long long)def,
           (long long)lo, (long long)hi);
    ck_assert_msg(strstr(help, want), "no '%s' in: %s", want, help);
    /* The program's own --threads, bounded by the library's maximum. */
    int_bounds(SUBSAE_TRAIN_THREADS, &lo, &hi, &def);
    FORMAT(want, "(default: the cores of the machine) (1 to %lld)", (long long)hi);
    ck_assert_msg(strstr(help, want), "no '%s' in: %s", want, help);
    /* --k's default is the library's, no longer restated in the help. */
    int_bounds(SUBSAE_TRAIN_K, &lo, &hi, &def);
    FORMAT(want, "the initial L0 of jumprelu and relu (default %lld;", (long long)def);
    ck_assert_msg(strstr(help, want), "no '%s' in: %s", want, help);
    free(help);
}
END_TEST

/* `subsae train` with FLAG one above the library's maximum of OPTION
 * fails, naming [min, max] as the library has them. */
static void cli_refuses_above(const char *flag, int option, int64_t min)
{
    int64_t lo, hi;
    int_bounds(option, &lo, &hi, NULL);
    if (min > lo)
        lo = min;
    char args[512], want[256], name[64];
    FORMAT(name, "out%s", flag);
    FORMAT(args, "train no-such-file.npy --features 8 --k 2 %s %lld", flag, (long long)hi + 1);
    ck_assert_int_ne(harness_cli(args, name), 0);
    FORMAT(name, "out%s.err", flag);
    char *err = read_flat(name);
    FORMAT(want, "%s: '%lld' is not a whole number in [%lld, %lld]", flag, (long long)hi + 1,
           (long long)lo, (long long)hi);
    ck_assert_msg(strstr(err, want), "no '%s' in: %s", want, err);
    free(err);
}

START_TEST(cli_errors_state_the_library_bounds)
{
    cli_refuses_above("--batch", SUBSAE_TRAIN_BATCH, INT64_MIN);
    cli_refuses_above("--threads", SUBSAE_TRAIN_THREADS, 1);
}
END_TEST

static const char *python(void)
{
    const char *p = getenv("SUBSAE_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

/* For every settable option of the trainer, the subspace estimator and the
 * SAE: the value read back is a float exactly when subsae_option_info says
 * double; an int option one above its maximum raises the library's error
 * stating subsae_option_int_bounds' [min, max]. */
static const char PYTHON_CHECK[] =
    "import ctypes as c, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "import subsae as s\n"
    "def bounds(obj, o):\n"
    "    lo, hi, d = c.c_int64(), c.c_int64(), c.c_int64()\n"
    "    assert s.lib.subsae_option_int_bounds(obj, o, c.byref(lo), c.byref(hi), c.byref(d)) == 0\n"
    "    return lo.value, hi.value, d.value\n"
    "def kind(obj, o):\n"
    "    k = c.c_int()\n"
    "    assert s.lib.subsae_option_info(obj, o, None, c.byref(k), None, None) == 0\n"
    "    return k.value\n"
    "def objects():\n"
    "    yield s.OBJECT_TRAINER, s.Trainer()\n"
    "    yield s.OBJECT_SUBSPACE, s.Subspace()\n"
    "    yield s.OBJECT_SAE, s.Sae.create(3, 3, 8, s.ACT_TOPK)\n"
    "checked = 0\n"
    "for obj, h in objects():\n"
    "    for i in range(s.lib.subsae_option_count(obj)):\n"
    "        o = s.lib.subsae_option_id(obj, i)\n"
    "        info = s.option_info(obj, o)\n"
    "        if info['flags'] & s.OPTION_READ_ONLY:\n"
    "            continue  # a result: nothing to read before a fit\n"
    "        is_double = kind(obj, o) == s.OPTION_DOUBLE\n"
    "        assert isinstance(h.get(o), float) == is_double, (obj, o)\n"
    "        h.set(o, h.get(o))  # the setter of the library's type takes it back\n"
    "        if is_double:\n"
    "            continue\n"
    "        lo, hi, _ = bounds(obj, o)\n"
    "        if hi == 2**63 - 1:\n"
    "            continue\n"
    "        try:\n"
    "            h.set(o, hi + 1)\n"
    "        except s.Error as e:\n"
    "            want = '%s = %d is outside [%d, %d]' % (info['name'], hi + 1, lo, hi)\n"
    "            assert want in e.message, (want, e.message)\n"
    "            checked += 1\n"
    "        else:\n"
    "            raise AssertionError('%s accepted %d' % (info['name'], hi + 1))\n"
    "assert checked >= 3, checked\n"
    "try:\n"
    "    s.Trainer(no_such_option=1)\n"
    "except TypeError as e:\n"
    "    assert 'no_such_option' in str(e) and 'dead_window' in str(e), str(e)\n"
    "else:\n"
    "    raise AssertionError('an unknown option was accepted')\n";

START_TEST(python_follows_option_info)
{
    if (harness_sanitized()) {
        harness_skip("python_follows_option_info", "not under sanitizers (uninstrumented Python)");
        return;
    }
    char probe[1024], script[1024], command[8192];
    FORMAT(probe, "'%s' -c 'import numpy' >/dev/null 2>&1", python());
    if (harness_run(probe) != 0) {
        harness_skip("python_follows_option_info", "no Python with numpy");
        return;
    }
    harness_tmp_path("check.py", script, sizeof script);
    FILE *f = fopen(script, "w");
    ck_assert(f != NULL);
    ck_assert(fputs(PYTHON_CHECK, f) >= 0);
    ck_assert(fclose(f) == 0);
    FORMAT(command, "SUBSAE_LIB='%s/libsubsae.so' '%s' -B '%s' '%s/examples/python'",
           harness_build_dir(), python(), script, harness_source_dir());
    ck_assert_msg(harness_run(command) == 0, "the Python check failed (its message above)");
}
END_TEST

SUBSAE_SUITE(option_flow)
{
    Suite *s = suite_create("option_flow");
    TCase *tc = harness_case(s, "cli", 30);
    tcase_add_test(tc, cli_help_states_the_library_bounds);
    tcase_add_test(tc, cli_errors_state_the_library_bounds);
    tc = harness_case(s, "python", 60);
    tcase_add_test(tc, python_follows_option_info);
    return s;
}
