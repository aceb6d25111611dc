/* stream — activations pushed into libsubsae as an inference engine makes
 * them.
 *
 * A fake engine stands in for a transformer: each forward pass writes the
 * activations of a batch of tokens (4 sequences x 32 positions) into its own
 * output tensor, whose rows are padded (row stride 80 floats for 64 dims),
 * as engines often align them. The rows are sparse combinations of a hidden
 * dictionary of 128 directions confined to a 16-dimensional subspace of the
 * 64-dimensional space. Every pass is appended to a growable buffer (the
 * library copies the 64 useful floats of each row), then the program
 * measures the effective rank (it must find the 16 dimensions), trains a
 * TopK SAE with active-subspace initialisation on the collected rows, and
 * keeps training online on fresh passes with subsae_trainer_step. It checks
 * its own results and exits non-zero when one is wrong.
 *
 *   stream
 *   cc stream.c $(pkg-config --cflags --libs subsae) -lm -o stream
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <subsae.h>

#define TRY(call)                                                                 \
    do {                                                                          \
        int rc_ = (call);                                                         \
        if (rc_ != SUBSAE_OK) {                                                   \
            fprintf(stderr, "stream: %s: %s: %s\n", #call, subsae_status_string(rc_), \
                    subsae_last_error());                                         \
            goto done;                                                            \
        }                                                                         \
    } while (0)

#define EXPECT(cond, ...)                                                         \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "stream: check failed: %s: ", #cond);                 \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            goto done;                                                            \
        }                                                                         \
    } while (0)

enum {
    DIM = 64,         /* model width */
    STRIDE = 80,      /* the engine's padded row stride */
    SUBSPACE = 16,    /* dimension of the subspace the dictionary lives in */
    ATOMS = 128,      /* hidden dictionary size */
    ACTIVE = 4,       /* atoms per token */
    PASS_ROWS = 128,  /* tokens per forward pass: 4 sequences x 32 positions */
    PASSES = 64,      /* passes collected before ranking and training */
    HELD_OUT_PASSES = 8, /* fresh passes kept aside to evaluate on */
    ONLINE_PASSES = 16
};

/* ---- the fake inference engine --------------------------------------- */

struct engine {
    uint64_t rng;
    float atoms[ATOMS][DIM];
    float output[PASS_ROWS * STRIDE]; /* the engine's activation tensor */
};

static double uniform(uint64_t *state) /* splitmix64 -> [0, 1) */
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static double normal(uint64_t *state)
{
    double u = uniform(state), v = uniform(state);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

static void engine_start(struct engine *e, uint64_t seed)
{
    double basis[SUBSPACE][DIM];
    e->rng = seed;
    /* An orthonormal basis of a random 16-dimensional subspace. */
    for (int i = 0; i < SUBSPACE; i++) {
        for (int j = 0; j < DIM; j++)
            basis[i][j] = normal(&e->rng);
        for (int p = 0; p < i; p++) {
            double dot = 0;
            for (int j = 0; j < DIM; j++)
                dot += basis[i][j] * basis[p][j];
            for (int j = 0; j < DIM; j++)
                basis[i][j] -= dot * basis[p][j];
        }
        double norm = 0;
        for (int j = 0; j < DIM; j++)
            norm += basis[i][j] * basis[i][j];
        for (int j = 0; j < DIM; j++)
            basis[i][j] /= sqrt(norm);
    }
    /* Unit atoms: random combinations of the basis. */
    for (int a = 0; a < ATOMS; a++) {
        double row[DIM] = {0}, norm = 0;
        for (int i = 0; i < SUBSPACE; i++) {
            double c = normal(&e->rng);
            for (int j = 0; j < DIM; j++)
                row[j] += c * basis[i][j];
        }
        for (int j = 0; j < DIM; j++)
            norm += row[j] * row[j];
        for (int j = 0; j < DIM; j++)
            e->atoms[a][j] = (float)(row[j] / sqrt(norm));
    }
}

/* One forward pass: PASS_ROWS tokens, each the sum of ACTIVE atoms with
 * magnitudes in [0.5, 1.5), plus a little noise. Returns the output tensor
 * (row stride STRIDE; the padding holds garbage, as it may in an engine). */
static const float *engine_forward(struct engine *e)
{
    for (int t = 0; t < PASS_ROWS; t++) {
        float *row = e->output + (size_t)t * STRIDE;
        for (int j = 0; j < DIM; j++)
            row[j] = (float)(1e-3 * normal(&e->rng));
        for (int j = DIM; j < STRIDE; j++)
            row[j] = 1e30f;
        for (int a = 0; a < ACTIVE; a++) {
            int atom = (int)(uniform(&e->rng) * ATOMS);
            float magnitude = (float)(0.5 + uniform(&e->rng));
            for (int j = 0; j < DIM; j++)
                row[j] += magnitude * e->atoms[atom][j];
        }
    }
    return e->output;
}

/* ---- the program ------------------------------------------------------ */

int main(void)
{
    int status = 1;
    struct engine *engine = malloc(sizeof *engine);
    subsae_buffer *acts = NULL;
    subsae_subspace *subspace = NULL;
    subsae_buffer *held_out = NULL;
    subsae_trainer *trainer = NULL;
    double m[SUBSAE_METRIC_COUNT], e[SUBSAE_METRIC_COUNT];
    if (!engine) {
        fprintf(stderr, "stream: out of memory\n");
        return 1;
    }
    engine_start(engine, 42);

    /* 1. Collect: one append per forward pass, with the engine's stride. */
    TRY(subsae_buffer_create(DIM, &acts));
    for (int pass = 0; pass < PASSES; pass++) {
        const float *rows = engine_forward(engine);
        TRY(subsae_buffer_append(acts, rows, SUBSAE_DTYPE_F32, PASS_ROWS, STRIDE));
    }
    printf("collected %lld tokens x %lld dims in %d passes\n",
           (long long)subsae_buffer_rows(acts), (long long)subsae_buffer_dim(acts), PASSES);
    EXPECT(subsae_buffer_rows(acts) == (int64_t)PASSES * PASS_ROWS, "%lld rows",
           (long long)subsae_buffer_rows(acts));
    /* A few fresh passes the model will never train on. */
    TRY(subsae_buffer_create(DIM, &held_out));
    for (int pass = 0; pass < HELD_OUT_PASSES; pass++)
        TRY(subsae_buffer_append(held_out, engine_forward(engine), SUBSAE_DTYPE_F32, PASS_ROWS,
                                 STRIDE));

    /* 2. Rank: the dictionary spans 16 of the 64 dimensions. */
    TRY(subsae_subspace_create(&subspace));
    TRY(subsae_subspace_fit(subspace, acts));
    int64_t r99 = 0;
    int exact = 0;
    TRY(subsae_subspace_effective_rank(subspace, 0.99, &r99, &exact));
    double ratios[SUBSPACE + 1];
    TRY(subsae_subspace_explained_ratios(subspace, ratios, SUBSPACE + 1));
    double top = 0;
    for (int i = 0; i < SUBSPACE; i++)
        top += ratios[i];
    printf("r99 = %lld of %d dims; the top %d directions hold %.6f of the variance\n",
           (long long)r99, DIM, SUBSPACE, top);
    EXPECT(exact && r99 == SUBSPACE, "r99 = %lld (exact %d), want %d", (long long)r99, exact,
           SUBSPACE);
    EXPECT(top > 0.9999 && ratios[SUBSPACE] < 1e-5, "top %g, next %g", top, ratios[SUBSPACE]);

    /* 3. Train on what was collected: features start in the subspace. */
    TRY(subsae_trainer_create(&trainer));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_FEATURES, 256));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_K, ACTIVE));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_BATCH, PASS_ROWS));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_SEED, 7));
    TRY(subsae_trainer_set_int(trainer, SUBSAE_TRAIN_INIT_SAMPLE, PASSES * PASS_ROWS));
    TRY(subsae_trainer_init(trainer, acts, NULL));
    TRY(subsae_sae_evaluate(subsae_trainer_sae(trainer), held_out, NULL, e, SUBSAE_METRIC_COUNT));
    const double ev_init = e[SUBSAE_METRIC_EXPLAINED_VARIANCE];
    printf("initialised: held-out explained variance %.3f\n", ev_init);
    TRY(subsae_trainer_fit(trainer, acts, NULL, 4 * (int64_t)PASSES * PASS_ROWS));
    TRY(subsae_trainer_metrics(trainer, m, SUBSAE_METRIC_COUNT));
    printf("offline: %.0f tokens, explained variance %.3f, L0 %.2f, dead %.1f %%\n",
           m[SUBSAE_METRIC_TOKENS], m[SUBSAE_METRIC_EXPLAINED_VARIANCE], m[SUBSAE_METRIC_L0],
           100.0 * m[SUBSAE_METRIC_DEAD_FRACTION]);
    const double steps_offline = m[SUBSAE_METRIC_STEPS];

    /* 4. Keep training online: each fresh pass is one optimiser step, read
     *    straight from the engine's padded tensor. */
    for (int pass = 0; pass < ONLINE_PASSES; pass++) {
        const float *rows = engine_forward(engine);
        TRY(subsae_trainer_step(trainer, rows, STRIDE, NULL, 0, PASS_ROWS));
    }
    TRY(subsae_trainer_metrics(trainer, m, SUBSAE_METRIC_COUNT));
    printf("online: %d more steps (%.0f in all), last loss %.4f\n", ONLINE_PASSES,
           m[SUBSAE_METRIC_STEPS], m[SUBSAE_METRIC_LOSS]);
    EXPECT(m[SUBSAE_METRIC_STEPS] == steps_offline + ONLINE_PASSES, "%g steps",
           m[SUBSAE_METRIC_STEPS]);

    /* 5. The model on the fresh tokens it never saw: it learned. */
    TRY(subsae_sae_evaluate(subsae_trainer_sae(trainer), held_out, NULL, e, SUBSAE_METRIC_COUNT));
    printf("held out: explained variance %.3f (%.3f at initialisation), L0 %.2f\n",
           e[SUBSAE_METRIC_EXPLAINED_VARIANCE], ev_init, e[SUBSAE_METRIC_L0]);
    EXPECT(e[SUBSAE_METRIC_EXPLAINED_VARIANCE] > 0.7 && e[SUBSAE_METRIC_EXPLAINED_VARIANCE] <= 1,
           "held-out explained variance %g", e[SUBSAE_METRIC_EXPLAINED_VARIANCE]);
    EXPECT(e[SUBSAE_METRIC_EXPLAINED_VARIANCE] > ev_init + 0.05,
           "training did not improve the held-out explained variance (%g -> %g)", ev_init,
           e[SUBSAE_METRIC_EXPLAINED_VARIANCE]);
    EXPECT(e[SUBSAE_METRIC_L0] > 0 && e[SUBSAE_METRIC_L0] <= ACTIVE, "L0 %g",
           e[SUBSAE_METRIC_L0]);

    status = 0;
    printf("stream: all checks passed\n");
done:
    subsae_trainer_free(trainer);
    subsae_subspace_free(subspace);
    subsae_buffer_free(held_out);
    subsae_buffer_free(acts);
    free(engine);
    return status;
}
