/* `subsae inspect DIR`: a saved model's kind, sizes, activation, nested
 * prefixes, scales and the metadata its cfg.json carries (the sites and
 * model it was trained on), read through the library's loader so that
 * whatever `eval` and `encode` accept can be looked at before use. */
#include "inspect_model.h"

#include "subsae.h"

#include <stdio.h>
#include <string.h>

struct model_facts {
    int64_t d_in, d_out, d_sae, activation, k, transcoder, skip, b_dec_to_input;
    double input_scale, output_scale;
    int64_t widths[SUBSAE_MATRYOSHKA_MAX];
    int n_widths;
    json_t *metadata; /* owned */
};

static bool uses_k(int64_t activation)
{
    return activation == SUBSAE_ACT_TOPK || activation == SUBSAE_ACT_BATCHTOPK;
}

static int read_facts(const subsae_sae *sae, struct model_facts *m)
{
    const char *metadata = "{}";
    subsae_sae_get_int(sae, SUBSAE_SAE_D_IN, &m->d_in);
    subsae_sae_get_int(sae, SUBSAE_SAE_D_OUT, &m->d_out);
    subsae_sae_get_int(sae, SUBSAE_SAE_D_SAE, &m->d_sae);
    subsae_sae_get_int(sae, SUBSAE_SAE_ACTIVATION, &m->activation);
    subsae_sae_get_int(sae, SUBSAE_SAE_K, &m->k);
    subsae_sae_get_int(sae, SUBSAE_SAE_TRANSCODER, &m->transcoder);
    subsae_sae_get_int(sae, SUBSAE_SAE_SKIP, &m->skip);
    subsae_sae_get_int(sae, SUBSAE_SAE_APPLY_B_DEC_TO_INPUT, &m->b_dec_to_input);
    subsae_sae_get_double(sae, SUBSAE_SAE_INPUT_SCALE, &m->input_scale);
    subsae_sae_get_double(sae, SUBSAE_SAE_OUTPUT_SCALE, &m->output_scale);
    if (cli_check(subsae_sae_get_matryoshka(sae, m->widths, SUBSAE_MATRYOSHKA_MAX,
                                            &m->n_widths),
                  "cannot read the Matryoshka widths") ||
        cli_check(subsae_sae_get_metadata(sae, &metadata), "cannot read the metadata"))
        return 1;
    m->metadata = json_loads(metadata, 0, NULL);
    return m->metadata ? 0 : cli_fail("out of memory");
}

static const char *kind_name(const struct model_facts *m)
{
    return m->skip ? "skip transcoder" : m->transcoder ? "transcoder" : "SAE";
}

/* The metadata member `key` as text, or NULL when absent or not a string. */
static const char *metadata_string(const struct model_facts *m, const char *key)
{
    return json_string_value(json_object_get(m->metadata, key));
}

static int print_json(const char *dir, struct model_facts *m)
{
    json_t *widths = json_array();
    for (int i = 0; widths && i < m->n_widths; i++)
        if (json_array_append_new(widths, json_integer(m->widths[i]))) {
            json_decref(widths);
            widths = NULL;
        }
    if (!widths)
        return cli_fail("out of memory");
    json_t *metadata = m->metadata;
    m->metadata = NULL; /* the object below takes it */
    return cli_print_json(json_pack(
        "{s:s, s:s, s:b, s:b, s:s, s:o, s:I, s:I, s:I, s:o, s:f, s:f, s:b, s:o}", "path", dir,
        "kind", kind_name(m), "transcoder", (int)m->transcoder, "skip", (int)m->skip,
        "activation", subsae_activation_name((int)m->activation), "k",
        uses_k(m->activation) ? json_integer(m->k) : json_null(), "d_in", (json_int_t)m->d_in,
        "d_out", (json_int_t)m->d_out, "d_sae", (json_int_t)m->d_sae, "matryoshka_widths",
        widths, "input_scale", m->input_scale, "output_scale", m->output_scale,
        "apply_b_dec_to_input", (int)m->b_dec_to_input, "metadata", metadata));
}

/* The run that trained the model, as `subsae train` records it. */
static void print_run(const struct model_facts *m)
{
    const json_t *run = json_object_get(m->metadata, "run");
    const char *id = json_string_value(json_object_get(run, "id"));
    if (!id)
        return;
    const char *started = json_string_value(json_object_get(run, "started"));
    const json_t *tokens = json_object_get(run, "total_tokens");
    const json_t *input = json_object_get(json_object_get(run, "data"), "input");
    const json_t *paths = json_object_get(input, "paths");
    const char *first = json_string_value(json_array_get(paths, 0));
    printf("  trained by run %s%s%s", id, started ? ", started " : "", started ? started : "");
    if (json_is_integer(tokens))
        printf(", %lld tokens", (long long)json_integer_value(tokens));
    if (first)
        printf(" of %s%s", first, json_array_size(paths) > 1 ? " and more" : "");
    printf("\n");
}

static int print_text(const char *dir, const struct model_facts *m)
{
    const char *in = metadata_string(m, "hook_name"), *out = metadata_string(m, "hook_name_out");
    const char *model = metadata_string(m, "model_name");
    printf("%s: %s, %lld features, %s", dir, kind_name(m), (long long)m->d_sae,
           subsae_activation_name((int)m->activation));
    if (uses_k(m->activation))
        printf(" k %lld", (long long)m->k);
    printf("\n  d_in %lld, d_out %lld\n", (long long)m->d_in, (long long)m->d_out);
    if (in || model)
        printf("  site %s%s%s%s%s\n", in ? in : "(not recorded)", out ? " -> " : "",
               out ? out : "", model ? " of " : "", model ? model : "");
    if (m->n_widths > 0) {
        printf("  Matryoshka prefixes");
        for (int i = 0; i < m->n_widths; i++)
            printf("%s%lld", i ? ", " : " ", (long long)m->widths[i]);
        printf("\n");
    }
    printf("  input scale %g, output scale %g, b_dec %ssubtracted from the input\n",
           m->input_scale, m->output_scale, m->b_dec_to_input ? "" : "not ");
    print_run(m);
    return fflush(stdout) == 0 ? 0 : cli_fail("cannot write to standard output");
}

int inspect_model(const char *dir, bool json)
{
    subsae_sae *sae = NULL;
    if (cli_check(subsae_sae_load(dir, &sae), "cannot load the model"))
        return 1;
    struct model_facts m = {0};
    int rc = read_facts(sae, &m);
    if (!rc)
        rc = json ? print_json(dir, &m) : print_text(dir, &m);
    json_decref(m.metadata);
    subsae_sae_free(sae);
    return rc;
}
