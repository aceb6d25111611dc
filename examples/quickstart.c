/* quickstart — the smallest complete libsubsae program.
 *
 * Opens an activation file, estimates its active subspace (prints the
 * effective rank r99), trains a small TopK SAE whose features start in that
 * subspace (active-subspace initialisation, ASI), saves it as a directory,
 * loads it back and encodes a few rows sparsely.
 *
 *   quickstart [ACTIVATIONS.npy [OUT_DIR]]
 *
 * Defaults: ../shared/data/stories260K/L2_attn_out.npy and
 * build/examples/quickstart-sae (run it from the source tree). It checks its
 * own results and exits non-zero when one is wrong.
 *
 *   cc quickstart.c $(pkg-config --cflags --libs subsae) -o quickstart
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <subsae.h>

/* Run a libsubsae call; on failure print the library's message and leave. */
#define TRY(call)                                                                 \
    do {                                                                          \
        int rc_ = (call);                                                         \
        if (rc_ != SUBSAE_OK) {                                                   \
            fprintf(stderr, "quickstart: %s: %s: %s\n", #call,                    \
                    subsae_status_string(rc_), subsae_last_error());              \
            goto done;                                                            \
        }                                                                         \
    } while (0)

/* Check a result; on failure say which and leave. */
#define EXPECT(cond, ...)                                                         \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "quickstart: check failed: %s: ", #cond);             \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            goto done;                                                            \
        }                                                                         \
    } while (0)

enum { FEATURES = 256, K = 8, ROWS = 4 };

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "../shared/data/stories260K/L2_attn_out.npy";
    const char *out_dir = argc > 2 ? argv[2] : "build/examples/quickstart-sae";
    int status = 1;
    subsae_buffer *acts = NULL;
    subsae_subspace *subspace = NULL;
    subsae_trainer *trainer = NULL;
    subsae_sae *loaded = NULL;
    float *x = NULL;

    /* 1. Activations: rows are tokens (memory-mapped, widened to float32). */
    TRY(subsae_buffer_open(path, NULL, &acts));
    const int64_t n = subsae_buffer_rows(acts), d = subsae_buffer_dim(acts);
    printf("%s: %lld tokens x %lld dims\n", path, (long long)n, (long long)d);

    /* 2. Spectrum and effective rank: how many directions hold 99 %. */
    TRY(subsae_subspace_create(&subspace));
    TRY(subsae_subspace_fit(subspace, acts));
    int64_t r99 = 0;
    int exact = 0;
    TRY(subsae_subspace_effective_rank(subspace, 0.99, &r99, &exact));
    printf("r99 = %lld of %lld dims (%.2f d)%s\n", (long long)r99, (long long)d,
           (double)r99 / (double)d, exact ? "" : " (lower bound)");
    EXPECT(exact && r99 >= 1 && r99 <= d, "r99 = %lld, exact = %d", (long long)r99, exact);

    /* 3. A small TopK SAE, features initialised in the active subspace. */
    TRY(subsae_trainer_create(&trainer));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_FEATURES, FEATURES));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_K, K));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_BATCH, 256));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_INIT, SUBSAE_INIT_ACTIVE_SUBSPACE));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_INIT_SAMPLE, 8192));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_SEED, 1));
    TRY(subsae_trainer_init(trainer, acts, NULL));
    TRY(subsae_trainer_fit(trainer, acts, NULL, 16384));

    double m[SUBSAE_METRIC_COUNT];
    TRY(subsae_trainer_metrics(trainer, m, SUBSAE_METRIC_COUNT));
    printf("trained on %.0f tokens (%.0f steps): explained variance %.3f, L0 %.2f, "
           "dead %.1f %%\n",
           m[SUBSAE_METRIC_TOKENS], m[SUBSAE_METRIC_STEPS],
           m[SUBSAE_METRIC_EXPLAINED_VARIANCE], m[SUBSAE_METRIC_L0],
           100.0 * m[SUBSAE_METRIC_DEAD_FRACTION]);
    EXPECT(m[SUBSAE_METRIC_TOKENS] >= 16384, "%.0f tokens", m[SUBSAE_METRIC_TOKENS]);
    EXPECT(m[SUBSAE_METRIC_EXPLAINED_VARIANCE] > 0.5 && m[SUBSAE_METRIC_EXPLAINED_VARIANCE] <= 1,
           "explained variance %g", m[SUBSAE_METRIC_EXPLAINED_VARIANCE]);
    EXPECT(m[SUBSAE_METRIC_L0] > 0 && m[SUBSAE_METRIC_L0] <= K, "L0 %g", m[SUBSAE_METRIC_L0]);

    /* 4. Save (SAELens layout, scales folded in) and load it back. */
    TRY(subsae_sae_save(subsae_trainer_sae(trainer), out_dir));
    TRY(subsae_sae_load(out_dir, &loaded));
    printf("saved to %s and loaded back\n", out_dir);

    /* 5. Sparse codes of a few raw rows: the k active features per row,
     *    largest first, from the loaded and from the trained model. */
    x = malloc((size_t)(ROWS * d) * sizeof *x);
    EXPECT(x != NULL, "out of memory");
    TRY(subsae_buffer_read(acts, 0, ROWS, x, d));
    int32_t idx[ROWS * K], idx_trained[ROWS * K];
    float val[ROWS * K], val_trained[ROWS * K];
    TRY(subsae_sae_encode_sparse(loaded, x, ROWS, d, K, idx, val));
    TRY(subsae_sae_encode_sparse(subsae_trainer_sae(trainer), x, ROWS, d, K, idx_trained,
                                 val_trained));
    for (int i = 0; i < ROWS; i++) {
        printf("row %d:", i);
        for (int j = 0; j < K; j++) {
            const int s = i * K + j;
            if (idx[s] >= 0)
                printf(" %d:%.3f", idx[s], val[s]);
            EXPECT(idx[s] >= -1 && idx[s] < FEATURES, "index %d", idx[s]);
            EXPECT(idx[s] < 0 || val[s] > 0, "value %g of feature %d", val[s], idx[s]);
            EXPECT(j == 0 || val[s] <= val[s - 1], "values not descending in row %d", i);
            /* The saved model has the scales folded into its weights: same
             * codes up to rounding. */
            EXPECT(fabsf(val[s] - val_trained[s]) <= 1e-3f * (1.0f + fabsf(val_trained[s])),
                   "row %d slot %d: loaded %g, trained %g", i, j, val[s], val_trained[s]);
        }
        printf("\n");
    }
    status = 0;
    printf("quickstart: all checks passed\n");
done:
    free(x);
    subsae_sae_free(loaded);
    subsae_trainer_free(trainer);
    subsae_subspace_free(subspace);
    subsae_buffer_free(acts);
    return status;
}
