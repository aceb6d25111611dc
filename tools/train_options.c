/* The flags of `subsae train` (see train_options.h). */
#include "train_options.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum kind {
    HEADING, /* a section of the help */
    SWITCH,  /* no value: a bool of the program, or a trainer option set to `fixed` */
    NUMBER,  /* a number: a trainer option, or one of the program's */
    CHOICE,  /* a name among `choices`: the trainer option's value is its index */
    TEXT,    /* a string of the program */
    FILES    /* the files up to the next option */
};

struct flag {
    const char *name;    /* "--lr" (HEADING: the section's title) */
    const char *metavar; /* "X" */
    enum kind kind;
    int option;          /* the SUBSAE_TRAIN_* it sets, or -1 */
    const char *const *choices;
    int64_t fixed;       /* SWITCH of a trainer option: the value it sets */
    /* the program's own: where the value goes, whether it was given, and
     * for numbers the type and bounds (a double's bounds exclusive when
     * `open`) */
    size_t at, given_at;
    bool is_double, open;
    double min, max;
    bool required;       /* a new run needs it: its default is not shown */
    int max_of;          /* the program's own number whose upper bound is this
                          * trainer option's (the library's), or -1 */
    const char *help;
};

#define AT(field) offsetof(struct train_options, field)
#define NONE ((size_t)-1)
/* A trainer option (its bounds and default from the library). */
#define LIB(flag_name, metavar_, kind_, option_, choices_, text)                           \
    {.name = flag_name, .metavar = metavar_, .kind = kind_, .option = option_,             \
     .choices = choices_, .at = NONE, .given_at = NONE, .help = text}
/* A switch setting a trainer option to `value`. */
#define LIB_SWITCH(flag_name, option_, value, text)                                        \
    {.name = flag_name, .kind = SWITCH, .option = option_, .fixed = value, .at = NONE,     \
     .given_at = NONE, .help = text}
/* The program's own. */
#define OWN(flag_name, metavar_, kind_, field, text)                                       \
    {.name = flag_name, .metavar = metavar_, .kind = kind_, .option = -1, .at = AT(field), \
     .given_at = NONE, .help = text}
#define OWN_NUMBER(flag_name, metavar_, field, given, dbl, lo, hi, open_, text)            \
    {.name = flag_name, .metavar = metavar_, .kind = NUMBER, .option = -1, .at = AT(field),\
     .given_at = given, .is_double = dbl, .open = open_, .min = lo, .max = hi, .max_of = -1,  \
     .help = text}
/* The program's own whole number from `lo` up to the library's bound of
 * trainer option `option`. */
#define OWN_UP_TO_LIB(flag_name, metavar_, field, lo, option_, text)                       \
    {.name = flag_name, .metavar = metavar_, .kind = NUMBER, .option = -1, .at = AT(field),\
     .given_at = NONE, .min = lo, .max_of = option_, .help = text}
#define SECTION(title) {.name = title, .kind = HEADING, .option = -1}

static const char *const activations[] = {"topk",  "batchtopk", "jumprelu",
                                           "relu",  "gated",     NULL};
static const char *const inits[] = {"random", "active-subspace", NULL};
static const char *const norms[] = {"free", "unit", NULL};
static const char *const coefficients[] = {"uniform", "gaussian", NULL};
static const char *const precisions[] = {"fp32", "bf16", "auto", NULL};

static const struct flag flags[] = {
    SECTION("data"),
    OWN("--target", "FILE...", FILES, targets,
        "train a transcoder: the activations of the site it reconstructs, one file per INPUT "
        "file (e.g. mlp_out for mlp_in)"),
    OWN("--tensor", "NAME", TEXT, tensor,
        "the safetensors tensor to read (default: the file's only tensor)"),
    OWN("--skip-nonfinite", NULL, SWITCH, skip_nonfinite,
        "leave out rows that hold NaN or infinity instead of stopping at the first one (not "
        "with --target)"),
    OWN("--hook-name", "NAME", TEXT, hook_name,
        "the input's site, saved as SAELens' hook_name (default: the input file's name "
        "without extension)"),
    OWN("--hook-name-out", "NAME", TEXT, hook_name_out,
        "a transcoder's target site (default: the target file's name without extension)"),
    OWN("--model-name", "NAME", TEXT, model_name,
        "the model the activations come from, saved as SAELens' model_name (default: the "
        "name of the input file's directory)"),
    SECTION("model"),
    {.name = "--features", .metavar = "M", .kind = NUMBER, .option = SUBSAE_TRAIN_FEATURES,
     .at = NONE, .given_at = NONE, .required = true,
     .help = "dictionary size; required for a new run"},
    LIB("--k", "K", NUMBER, SUBSAE_TRAIN_K, NULL,
        "active features per token, required for a new topk or batchtopk run; the initial L0 "
        "of jumprelu and relu"),
    LIB("--activation", "NAME", CHOICE, SUBSAE_TRAIN_ACTIVATION, activations,
        "the sparse coding"),
    LIB_SWITCH("--skip", SUBSAE_TRAIN_SKIP, 1,
               "with --target: a skip transcoder, whose output adds a trained linear map of "
               "the input (W_skip, from zero)"),
    LIB("--init", "NAME", CHOICE, SUBSAE_TRAIN_INIT, inits,
        "decoder directions: inside the active subspace of the data, or on the whole sphere"),
    LIB("--subspace-dim", "R|auto", NUMBER, SUBSAE_TRAIN_SUBSPACE_DIM, NULL,
        "dimensions of the active subspace; auto = the effective rank at 99 %"),
    LIB("--subspace-coefficients", "NAME", CHOICE, SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS,
        coefficients, "distribution of the active-subspace coefficients"),
    LIB("--decoder-norm", "NAME", CHOICE, SUBSAE_TRAIN_DECODER_NORM, norms,
        "decoder rows free or renormalised to unit norm after each step"),
    LIB_SWITCH("--no-scale-search", SUBSAE_TRAIN_SCALE_SEARCH, 0,
               "keep the initial weights' scale instead of searching it"),
    LIB("--init-sample", "N", NUMBER, SUBSAE_TRAIN_INIT_SAMPLE, NULL,
        "rows sampled for the scale, the mean, the subspace and the scale search"),
    LIB("--init-threshold", "X", NUMBER, SUBSAE_TRAIN_INIT_THRESHOLD, NULL,
        "initial jumprelu threshold (relu: minus the initial encoder bias; gated: of the "
        "gate)"),
    OWN("--matryoshka", "W1,W2,...", TEXT, matryoshka,
        "topk, batchtopk: a Matryoshka SAE whose nested prefixes of W1 < W2 < ... features "
        "(the last = --features) each reconstruct on their own"),
    SECTION("training"),
    LIB("--lr", "X", NUMBER, SUBSAE_TRAIN_LR, NULL,
        "Adam learning rate; 0 or auto = 2e-4 / sqrt(features / 16384)"),
    LIB("--batch", "B", NUMBER, SUBSAE_TRAIN_BATCH, NULL, "tokens per step"),
    LIB("--precision", "NAME", CHOICE, SUBSAE_TRAIN_PRECISION, precisions,
        "the encoder's product: fp32, bf16 (bf16 copies of W_enc and of the batch, "
        "what it selects rescored in fp32; every activation and auxk, CPUs with AVX512_BF16 "
        "or AMX) or auto (bf16 where it can run)"),
    OWN_NUMBER("--epochs", "E", epochs, AT(have_epochs), true, 0, 1e9, true,
               "the run's length in passes over the inputs, counted from its start (default "
               "1; above 0)"),
    OWN_NUMBER("--tokens", "N", tokens, AT(have_tokens), false, 1, 9.2e18, false,
               "the run's length in tokens instead, counted from its start"),
    LIB("--warmup-steps", "W", NUMBER, SUBSAE_TRAIN_WARMUP_STEPS, NULL,
        "steps of linear learning-rate warm-up"),
    LIB("--cooldown-steps", "C", NUMBER, SUBSAE_TRAIN_COOLDOWN_STEPS, NULL,
        "steps of linear decay of the learning rate to 0 at the end"),
    LIB("--clip-norm", "X", NUMBER, SUBSAE_TRAIN_CLIP_NORM, NULL,
        "clip the gradient norm at X; 0 = off"),
    LIB("--seed", "S", NUMBER, SUBSAE_TRAIN_SEED, NULL,
        "seed of the initialisation and the batch order"),
    LIB("--dead-window", "T", NUMBER, SUBSAE_TRAIN_DEAD_WINDOW, NULL,
        "a feature is dead when it has not fired within T tokens"),
    LIB("--auxk", "COEF", NUMBER, SUBSAE_TRAIN_AUXK_COEF, NULL,
        "weight of the AuxK revival loss (1/32 is usual); 0 = off"),
    LIB("--auxk-k", "K", NUMBER, SUBSAE_TRAIN_AUXK_K, NULL,
        "dead features AuxK uses per token; 0 = half the width"),
    LIB("--l1", "COEF", NUMBER, SUBSAE_TRAIN_L1_COEF, NULL,
        "relu, gated: weight of the L1 penalty (gated: on the gate's pre-activations)"),
    LIB("--l0", "COEF", NUMBER, SUBSAE_TRAIN_L0_COEF, NULL,
        "jumprelu: weight of the L0 penalty"),
    LIB("--coef-warmup-steps", "N", NUMBER, SUBSAE_TRAIN_COEF_WARMUP_STEPS, NULL,
        "relu, gated, jumprelu: the sparsity coefficient ramps linearly from 0 over the "
        "first N steps"),
    LIB("--jumprelu-bandwidth", "X", NUMBER, SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, NULL,
        "jumprelu: width of the straight-through estimator's kernel"),
    LIB("--adam-beta1", "X", NUMBER, SUBSAE_TRAIN_ADAM_BETA1, NULL, "Adam's beta1"),
    LIB("--adam-beta2", "X", NUMBER, SUBSAE_TRAIN_ADAM_BETA2, NULL, "Adam's beta2"),
    LIB("--adam-eps", "X", NUMBER, SUBSAE_TRAIN_ADAM_EPS, NULL, "Adam's epsilon"),
    LIB_SWITCH("--sparse-adam", SUBSAE_TRAIN_SPARSE_ADAM, 1,
               "update only the features with gradient in the step"),
    OWN_UP_TO_LIB("--threads", "T", threads, 1, SUBSAE_TRAIN_THREADS,
                  "threads (default: the cores of the machine)"),
    SECTION("evaluation"),
    OWN("--eval", "FILE", TEXT, eval_file, "evaluate the trained model on FILE"),
    OWN("--eval-target", "FILE", TEXT, eval_target,
        "a transcoder evaluated on --eval FILE: the target site's rows of it"),
    OWN_NUMBER("--eval-fraction", "F", eval_fraction, AT(have_eval_fraction), true, 0, 1, true,
               "hold out the last fraction F of the rows for evaluation instead"),
    SECTION("output and safety"),
    OWN("--out", "DIR", TEXT, out,
        "save the model in DIR (SAELens layout, with sparsity.safetensors); DIR is locked "
        "while the run writes it"),
    OWN("--overwrite", NULL, SWITCH, overwrite,
        "replace the model and checkpoint of another run in DIR"),
    OWN_NUMBER("--checkpoint-every", "STEPS", checkpoint_every, NONE, false, 1, 9.2e18, false,
               "also save a checkpoint in DIR/checkpoint every STEPS steps (a run always "
               "saves one when interrupted)"),
    OWN_NUMBER("--checkpoint-minutes", "M", checkpoint_minutes, AT(have_checkpoint_minutes),
               true, 0, 1e9, false,
               "save a checkpoint every M minutes of training (default 10; 0 = never), so that "
               "a run killed without warning (SIGKILL, out of memory, power loss) loses at most "
               "M minutes; without --out it goes to ./subsae-run-ID; removed when the run "
               "finishes, unless it keeps checkpoints (--checkpoint-every, or resumed from one)"),
    OWN("--resume", "DIR", TEXT, resume,
        "continue the run saved in DIR (its --out) to its total length; without --out the "
        "result is saved in DIR"),
    OWN("--allow-new-data", NULL, SWITCH, allow_new_data,
        "resume on other data than the run's (then --epochs and --tokens count from here)"),
    OWN("--log", "FILE.jsonl", TEXT, log,
        "append one JSON object of metrics every --log-every steps to FILE.jsonl"),
    OWN_NUMBER("--log-every", "STEPS", log_every, NONE, false, 1, 9.2e18, false,
               "steps between --log lines (default 10)"),
    OWN("--json", NULL, SWITCH, json, "print one JSON object on stdout"),
    OWN("--quiet", NULL, SWITCH, quiet, "no progress on stderr"),
};
enum { N_FLAGS = sizeof flags / sizeof flags[0] };

static const struct flag *find_flag(const char *name)
{
    for (int i = 0; i < N_FLAGS; i++)
        if (flags[i].kind != HEADING && !strcmp(flags[i].name, name))
            return &flags[i];
    return NULL;
}

static int option_flags(int option)
{
    int f = 0;
    subsae_option_info(SUBSAE_OBJECT_TRAINER, option, NULL, NULL, &f, NULL);
    return f;
}

static int option_type(int option)
{
    int type = SUBSAE_OPTION_INT;
    subsae_option_info(SUBSAE_OBJECT_TRAINER, option, NULL, &type, NULL, NULL);
    return type;
}

static bool parse_choice(const struct flag *f, const char *text, int64_t *value)
{
    char names[160] = "";
    for (int64_t v = 0; f->choices[v]; v++) {
        if (!strcmp(text, f->choices[v])) {
            *value = v;
            return true;
        }
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", v ? ", " : "", f->choices[v]);
    }
    cli_fail("%s: '%s' is none of %s", f->name, text, names);
    return false;
}

/* A trainer option's value, checked against the library's bounds. */
static bool parse_library_value(const struct flag *f, const char *text, struct train_options *o)
{
    const int opt = f->option, fl = option_flags(opt);
    if (f->kind == CHOICE)
        return parse_choice(f, text, &o->int_value[opt]);
    if ((fl & SUBSAE_OPTION_ZERO_MEANS_AUTO) && !strcmp(text, "auto")) {
        o->int_value[opt] = 0;
        o->double_value[opt] = 0.0;
        return true;
    }
    if (option_type(opt) == SUBSAE_OPTION_INT) {
        int64_t lo, hi;
        subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, opt, &lo, &hi, NULL);
        return cli_parse_int64(f->name, text, lo, hi, &o->int_value[opt]);
    }
    double lo, hi, *v = &o->double_value[opt];
    subsae_option_double_bounds(SUBSAE_OBJECT_TRAINER, opt, &lo, &hi, NULL);
    if (!cli_parse_double(f->name, text, lo, hi, v))
        return false;
    if (((fl & SUBSAE_OPTION_MIN_EXCLUSIVE) && *v == lo) ||
        ((fl & SUBSAE_OPTION_MAX_EXCLUSIVE) && *v == hi)) {
        cli_fail("%s: '%s' must lie strictly between %g and %g", f->name, text, lo, hi);
        return false;
    }
    return true;
}

static int64_t own_int_max(const struct flag *f)
{
    int64_t hi = INT64_MAX;
    if (f->max_of >= 0)
        subsae_option_int_bounds(SUBSAE_OBJECT_TRAINER, f->max_of, NULL, &hi, NULL);
    else if (f->max < 9.2e18)
        hi = (int64_t)f->max;
    return hi;
}

static bool parse_own_number(const struct flag *f, const char *text, struct train_options *o)
{
    char *base = (char *)o;
    if (f->is_double) {
        double *v = (double *)(base + f->at);
        if (!cli_parse_double(f->name, text, f->min, f->max, v))
            return false;
        if (f->open && (*v == f->min || *v == f->max)) {
            cli_fail("%s: '%s' must lie strictly between %g and %g", f->name, text, f->min,
                     f->max);
            return false;
        }
    } else if (!cli_parse_int64(f->name, text, (int64_t)f->min, own_int_max(f),
                                (int64_t *)(base + f->at))) {
        return false;
    }
    if (f->given_at != NONE)
        *(bool *)(base + f->given_at) = true;
    return true;
}

/* One flag at argv[*i] with its value(s); *i ends on the last one used.
 * 0, or the exit code with the message printed. */
static int parse_flag(const struct flag *f, int argc, char **argv, int *i,
                      struct train_options *o)
{
    char *base = (char *)o;
    if (f->kind == SWITCH) {
        if (f->option >= 0) {
            o->given[f->option] = true;
            o->int_value[f->option] = f->fixed;
        } else {
            *(bool *)(base + f->at) = true;
        }
        return 0;
    }
    if (f->kind == FILES) { /* the files up to the next option */
        int before = o->n_targets;
        while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0)
            o->targets[o->n_targets++] = argv[++*i];
        return o->n_targets > before ? 0 : cli_fail("%s needs one or more files", f->name);
    }
    if (*i + 1 >= argc)
        return cli_fail("%s needs a value (%s)", f->name, f->metavar);
    const char *text = argv[++*i];
    if (f->kind == TEXT) {
        *(const char **)(base + f->at) = text;
        return 0;
    }
    if (f->option >= 0) {
        if (!parse_library_value(f, text, o))
            return 2;
        o->given[f->option] = true;
        return 0;
    }
    return parse_own_number(f, text, o) ? 0 : 2;
}

/* Trainer options that only some activations read: given for another,
 * they would be ignored, and the user would believe a run used them. */
#define ACT_BIT(a) (1u << (a))
static const struct {
    int option;
    unsigned activations; /* ACT_BIT of each SUBSAE_ACT_* that reads it */
    const char *which;
} activation_options[] = {
    {SUBSAE_TRAIN_L1_COEF, ACT_BIT(SUBSAE_ACT_RELU) | ACT_BIT(SUBSAE_ACT_GATED),
     "relu and gated"},
    {SUBSAE_TRAIN_L0_COEF, ACT_BIT(SUBSAE_ACT_JUMPRELU), "jumprelu"},
    {SUBSAE_TRAIN_COEF_WARMUP_STEPS,
     ACT_BIT(SUBSAE_ACT_RELU) | ACT_BIT(SUBSAE_ACT_GATED) | ACT_BIT(SUBSAE_ACT_JUMPRELU),
     "relu, gated and jumprelu"},
    {SUBSAE_TRAIN_JUMPRELU_BANDWIDTH, ACT_BIT(SUBSAE_ACT_JUMPRELU), "jumprelu"},
};

static const struct flag *flag_of_option(int option)
{
    for (int i = 0; i < N_FLAGS; i++)
        if (flags[i].kind != HEADING && flags[i].option == option)
            return &flags[i];
    return NULL;
}

/* 0, or 1 with a message when a given option is one that activation
 * `act` does not read. */
static int check_read_by(const struct train_options *o, int64_t act)
{
    const int n = (int)(sizeof activation_options / sizeof activation_options[0]);
    for (int i = 0; i < n; i++) {
        const int option = activation_options[i].option;
        if (!o->given[option] || (activation_options[i].activations & ACT_BIT(act)))
            continue;
        return cli_fail("%s is for %s; this run's activation is %s, which would ignore it",
                        flag_of_option(option)->name, activation_options[i].which,
                        activations[act]);
    }
    return 0;
}

/* Combinations of options that cannot work, in the user's words. */
static int check_combinations(const struct train_options *o)
{
    const int64_t act = o->given[SUBSAE_TRAIN_ACTIVATION] ? o->int_value[SUBSAE_TRAIN_ACTIVATION]
                                                          : SUBSAE_ACT_TOPK;
    const bool needs_k = act == SUBSAE_ACT_TOPK || act == SUBSAE_ACT_BATCHTOPK;
    if (o->n_inputs == 0 && o->resume)
        return cli_fail("--resume %s continues on the run's input files: give them too "
                        "(%s train FILE... --resume %s)",
                        o->resume, cli_program_name, o->resume);
    if (o->n_inputs == 0)
        return cli_usage();
    if (!o->resume && (!o->given[SUBSAE_TRAIN_FEATURES] || (needs_k && !o->given[SUBSAE_TRAIN_K])))
        return cli_fail("--features and --k are required (unless --resume; --k is optional "
                        "for jumprelu, relu and gated, where it sets the initial L0)");
    if (o->n_targets > 0 && o->n_targets != o->n_inputs)
        return cli_fail("%d inputs but %d targets: give one target file per input file",
                        o->n_inputs, o->n_targets);
    if (o->eval_target && (!o->eval_file || o->n_targets == 0))
        return cli_fail("--eval-target goes with --eval and --target");
    if (o->eval_file && o->n_targets > 0 && !o->eval_target)
        return cli_fail("a transcoder evaluated on --eval FILE needs --eval-target FILE");
    if (o->have_epochs && o->have_tokens)
        return cli_fail("give --epochs or --tokens, not both");
    if (o->eval_file && o->have_eval_fraction)
        return cli_fail("give --eval or --eval-fraction, not both");
    if (o->skip_nonfinite && o->n_targets > 0)
        return cli_fail("--skip-nonfinite cannot leave the same rows out of the inputs and "
                        "the targets; clean the files first");
    if (o->hook_name_out && o->n_targets == 0)
        return cli_fail("--hook-name-out names a transcoder's target site: it goes with "
                        "--target");
    if (o->allow_new_data && !o->resume)
        return cli_fail("--allow-new-data goes with --resume");
    if (o->log_every && !o->log)
        return cli_fail("--log-every goes with --log FILE.jsonl");
    /* a resumed run's activation is known once it is loaded (apply) */
    return o->resume && !o->given[SUBSAE_TRAIN_ACTIVATION] ? 0 : check_read_by(o, act);
}

int train_options_parse(int argc, char **argv, struct train_options *o)
{
    memset(o, 0, sizeof *o);
    o->inputs = calloc((size_t)argc, sizeof *o->inputs);
    o->targets = calloc((size_t)argc, sizeof *o->targets);
    if (!o->inputs || !o->targets)
        return cli_fail("out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !strcmp(a, "-")) {
            o->inputs[o->n_inputs++] = argv[i];
            continue;
        }
        const struct flag *f = find_flag(a);
        if (!f) {
            cli_fail("unknown option %s (see %s train --help)", a, cli_program_name);
            return 2;
        }
        int rc = parse_flag(f, argc, argv, &i, o);
        if (rc)
            return rc;
    }
    return check_combinations(o);
}

void train_options_free(struct train_options *o)
{
    free(o->inputs);
    free(o->targets);
    o->inputs = o->targets = NULL;
}

/* An integer option's value as the command line gives it. */
static void int_text(const struct flag *f, int64_t v, char *out, size_t size)
{
    if (f->kind == CHOICE)
        snprintf(out, size, "%s", f->choices[v]);
    else
        snprintf(out, size, "%lld", (long long)v);
}

/* Whether the given value of a structural option lets the library choose
 * (0 of a ZERO_MEANS_AUTO option, --precision auto): the run chose. */
static bool given_auto(const struct train_options *o, int option)
{
    const bool integer = option_type(option) == SUBSAE_OPTION_INT;
    if ((option_flags(option) & SUBSAE_OPTION_ZERO_MEANS_AUTO) &&
        (integer ? o->int_value[option] == 0 : o->double_value[option] == 0.0))
        return true;
    return option == SUBSAE_TRAIN_PRECISION && o->int_value[option] == SUBSAE_PRECISION_AUTO;
}

/* A structural option given to a resumed run: accepted when it is the
 * run's own value or "auto" (the original command line with --resume
 * added), else refused naming both. 0, or 1 with a message. */
static int check_unchanged(const struct train_options *o, const struct flag *f,
                           const subsae_trainer *t)
{
    char given[64], has[64];
    if (given_auto(o, f->option))
        return 0;
    if (option_type(f->option) == SUBSAE_OPTION_INT) {
        int64_t v = 0;
        subsae_trainer_get_int(t, f->option, &v);
        if (v == o->int_value[f->option])
            return 0;
        int_text(f, o->int_value[f->option], given, sizeof given);
        int_text(f, v, has, sizeof has);
    } else {
        double v = 0.0;
        subsae_trainer_get_double(t, f->option, &v);
        if (v == o->double_value[f->option])
            return 0;
        snprintf(given, sizeof given, "%g", o->double_value[f->option]);
        snprintf(has, sizeof has, "%g", v);
    }
    return cli_fail("--resume continues a run with its own model: %s %s, but the run has %s "
                    "(leave it out, or start a new run)",
                    f->name, given, has);
}

/* --k is optional where it only sets the initial L0 (jumprelu, relu,
 * gated): left out, its default is held to the dictionary's size, so that
 * a small dictionary is not refused for a k nobody gave. */
static int fit_default_k(const struct train_options *o, subsae_trainer *t)
{
    int64_t act = SUBSAE_ACT_TOPK, k = 0, features = 0;
    subsae_trainer_get_int(t, SUBSAE_TRAIN_ACTIVATION, &act);
    if (o->given[SUBSAE_TRAIN_K] || act == SUBSAE_ACT_TOPK || act == SUBSAE_ACT_BATCHTOPK)
        return 0;
    subsae_trainer_get_int(t, SUBSAE_TRAIN_K, &k);
    subsae_trainer_get_int(t, SUBSAE_TRAIN_FEATURES, &features);
    if (features <= 0 || k <= features)
        return 0;
    return cli_check(subsae_trainer_set_int(t, SUBSAE_TRAIN_K, features), "--k") ? 1 : 0;
}

int train_options_apply(const struct train_options *o, subsae_trainer *t)
{
    int64_t act = SUBSAE_ACT_TOPK;
    subsae_trainer_get_int(t, SUBSAE_TRAIN_ACTIVATION, &act);
    if (o->resume && check_read_by(o, act))
        return 1;
    for (int i = 0; i < N_FLAGS; i++) {
        const struct flag *f = &flags[i];
        if (f->option < 0 || !o->given[f->option])
            continue;
        if (o->resume && (option_flags(f->option) & SUBSAE_OPTION_STRUCTURAL)) {
            if (check_unchanged(o, f, t))
                return 1;
            continue;
        }
        int rc = option_type(f->option) == SUBSAE_OPTION_INT
                     ? subsae_trainer_set_int(t, f->option, o->int_value[f->option])
                     : subsae_trainer_set_double(t, f->option, o->double_value[f->option]);
        if (rc != SUBSAE_OK)
            return cli_fail("%s: %s", f->name, subsae_last_error());
    }
    return o->resume ? 0 : fit_default_k(o, t);
}

/* A resumed run's widths against the given ones: 0 when the same, else 1
 * with a message naming both. */
static int check_same_widths(const struct train_options *o, const subsae_trainer *t,
                             const int64_t *widths, int count)
{
    int64_t has[SUBSAE_MATRYOSHKA_MAX];
    int n = 0;
    subsae_sae_get_matryoshka(subsae_trainer_sae(t), has, SUBSAE_MATRYOSHKA_MAX, &n);
    bool same = n == count;
    for (int i = 0; same && i < n; i++)
        same = has[i] == widths[i];
    if (same)
        return 0;
    char text[SUBSAE_MATRYOSHKA_MAX * 21] = "none";
    for (int i = 0, used = 0; i < n && used >= 0 && (size_t)used < sizeof text; i++)
        used += snprintf(text + used, sizeof text - (size_t)used, "%s%lld", i ? "," : "",
                         (long long)has[i]);
    return cli_fail("--resume continues a run with its own model: --matryoshka %s, but the run "
                    "has %s (leave it out, or start a new run)",
                    o->matryoshka, text);
}

int train_options_apply_matryoshka(const struct train_options *o, subsae_trainer *t)
{
    if (!o->matryoshka)
        return 0;
    int64_t widths[SUBSAE_MATRYOSHKA_MAX];
    int count = 0;
    const char *p = o->matryoshka;
    while (*p) {
        char *end;
        errno = 0;
        long long w = strtoll(p, &end, 10);
        if (end == p || errno || (*end && *end != ',') || count == SUBSAE_MATRYOSHKA_MAX)
            return cli_fail("--matryoshka '%s': give up to %d widths W1,W2,...",
                            o->matryoshka, SUBSAE_MATRYOSHKA_MAX);
        widths[count++] = w;
        p = *end ? end + 1 : end;
    }
    if (count == 0)
        return cli_fail("--matryoshka needs widths W1,W2,...");
    if (o->resume)
        return check_same_widths(o, t, widths, count);
    return cli_check(subsae_trainer_set_matryoshka(t, widths, count), "--matryoshka") ? 1 : 0;
}

/* `text` quoted for a POSIX shell when it needs it. */
static void append_quoted(char *out, size_t size, const char *text)
{
    size_t used = strlen(out);
    bool plain = text[0] != '\0';
    for (const char *p = text; *p && plain; p++)
        plain = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                       "_./=:,+-@%{}",
                       *p) != NULL;
    if (plain) {
        snprintf(out + used, size - used, " %s", text);
        return;
    }
    snprintf(out + used, size - used, " '");
    for (const char *p = text; *p; p++) {
        used = strlen(out);
        if (*p == '\'')
            snprintf(out + used, size - used, "'\\''");
        else
            snprintf(out + used, size - used, "%c", *p);
    }
    used = strlen(out);
    snprintf(out + used, size - used, "'");
}

void train_options_resume_command(int argc, char **argv, const char *dir, char *out,
                                  size_t size)
{
    snprintf(out, size, "%s train", cli_program_name);
    for (int i = 1; i < argc; i++) {
        const struct flag *f = argv[i][0] == '-' ? find_flag(argv[i]) : NULL;
        if (!f) { /* an input file */
            append_quoted(out, size, argv[i]);
            continue;
        }
        const bool takes_value = f->kind == NUMBER || f->kind == CHOICE || f->kind == TEXT;
        const bool dropped =
            (f->option >= 0 && (option_flags(f->option) & SUBSAE_OPTION_STRUCTURAL)) ||
            !strcmp(f->name, "--matryoshka") || !strcmp(f->name, "--resume") ||
            !strcmp(f->name, "--out") ||
            !strcmp(f->name, "--overwrite") || !strcmp(f->name, "--allow-new-data");
        if (!dropped)
            append_quoted(out, size, argv[i]);
        if (f->kind == FILES) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                i++;
                if (!dropped)
                    append_quoted(out, size, argv[i]);
            }
        } else if (takes_value && i + 1 < argc) {
            i++;
            if (!dropped)
                append_quoted(out, size, argv[i]);
        }
    }
    size_t used = strlen(out);
    snprintf(out + used, size - used, " --resume");
    append_quoted(out, size, dir);
}

void train_options_help(FILE *out)
{
    fprintf(out,
            "Train a sparse autoencoder (or, with --target, a transcoder) on activation files\n"
            "(.npy or safetensors; several files form one data set). Everything is checked\n"
            "before the first step; Ctrl-C or SIGTERM saves a checkpoint and prints the\n"
            "command that resumes the run. Defaults and ranges come from the library.\n");
    for (int i = 0; i < N_FLAGS; i++) {
        const struct flag *f = &flags[i];
        if (f->kind == HEADING) {
            fprintf(out, "\n%s:\n", f->name);
            continue;
        }
        char flag[96], text[1024], range[256] = "";
        snprintf(flag, sizeof flag, "%s%s%s", f->name, f->metavar ? " " : "",
                 f->metavar ? f->metavar : "");
        if (f->option >= 0 && f->kind != SWITCH)
            cli_option_range(SUBSAE_OBJECT_TRAINER, f->option, f->choices, range, sizeof range);
        if (f->max_of >= 0 && f->kind == NUMBER && f->option < 0)
            snprintf(range, sizeof range, "%lld to %lld", (long long)f->min,
                     (long long)own_int_max(f));
        if (f->required && strchr(range, ';')) /* "default D; RANGE": the range only */
            memmove(range, strchr(range, ';') + 2, strlen(strchr(range, ';') + 2) + 1);
        if (f->option >= 0 && (option_flags(f->option) & SUBSAE_OPTION_STRUCTURAL)) {
            size_t used = strlen(range);
            snprintf(range + used, sizeof range - used, "%sfixed by --resume",
                     used ? "; " : "");
        }
        snprintf(text, sizeof text, "%s%s%s%s", f->help, range[0] ? " (" : "", range,
                 range[0] ? ")" : "");
        cli_help_line(out, flag, text);
    }
    cli_help_end(out, false); /* --json is in the table */
}
