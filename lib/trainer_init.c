/* subsae_trainer_init: the scale of the activations, b_dec = mean of the
 * scaled target, decoder directions in the active subspace (or at random
 * in the full space), the encoder tied to them (an SAE) or drawn in the
 * input's own subspace (a transcoder), the init-scale search and the
 * thresholds' starting cut; with workers the same model bits as one
 * process from a gathered sample. */
#include "activation.h"
#include "matryoshka.h"
#include "trainer_bf16.h"
#include "trainer_collective.h"
#include "trainer_state.h"
#include "trainer_workspace.h"

#include "buffer.h"
#include "encoder_gemm.h"
#include "kernels.h"
#include "skip.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

static const double FALLBACK_THRESHOLD = 0.001; /* SAELens' jumprelu_init_threshold */
static const int64_t SCALE_SEARCH_ROWS = 8192;

/* ---- initialisation ------------------------------------------------------- */

/* Draw `count` distinct row numbers of [0, rows) in random order. */
static int draw_sample(subsae__rng *rng, int64_t rows, int64_t count, int64_t *out)
{
    if (count == rows) {
        for (int64_t i = 0; i < rows; i++)
            out[i] = i;
        subsae__rng_shuffle(rng, out, rows);
        return SUBSAE_OK;
    }
    size_t words = (size_t)(rows + 63) / 64;
    uint64_t *taken = subsae__calloc(words, sizeof *taken);
    if (!taken)
        return subsae__fail_nomem("sample bitmap", words * 8);
    for (int64_t i = 0; i < count;) {
        int64_t r = (int64_t)subsae__rng_below(rng, (uint64_t)rows);
        uint64_t bit = (uint64_t)1 << (r % 64);
        if (taken[r / 64] & bit)
            continue;
        taken[r / 64] |= bit;
        out[i++] = r;
    }
    subsae__free(taken);
    return SUBSAE_OK;
}

/* s = sqrt(d) / mean |x| over the rows; the rows are scaled in place. */
static int scale_rows(float *x, int64_t n, int64_t d, double *scale, const char *what)
{
    double norm_sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        norm_sum += sqrt(subsae__sumsq(x + i * d, d));
    double mean = norm_sum / (double)n;
    if (!(mean > 0.0) || !isfinite(mean))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "subsae_trainer_init: the %s sample has mean row norm %g; cannot "
                            "scale it",
                            what, mean);
    *scale = sqrt((double)d) / mean;
    const float s = (float)*scale;
    for (int64_t i = 0; i < n * d; i++)
        x[i] *= s;
    return SUBSAE_OK;
}

static float coefficient(subsae__rng *rng, int64_t distribution)
{
    if (distribution == SUBSAE_COEF_GAUSSIAN)
        return (float)subsae__rng_normal(rng);
    return (float)(2.0 * subsae__rng_uniform(rng) - 1.0);
}

/* Rows of `w` (count x d): random unit directions, either uniform on the
 * sphere of the full space (basis NULL: random init, normalised Gaussians)
 * or c U_r / |c U_r| with the coefficients c drawn from `distribution` and
 * U_r the r rows of `basis` (ASI), from one stream of the seed. */
static int draw_directions(subsae__rng *rng, int64_t distribution, float *w, int64_t count,
                           int64_t d, const float *basis, int64_t r)
{
    if (!basis) {
        for (int64_t i = 0; i < count * d; i++)
            w[i] = (float)subsae__rng_normal(rng);
    } else {
        float *c = subsae__malloc((size_t)count * (size_t)r * sizeof *c);
        if (!c)
            return subsae__fail_nomem("subspace coefficients", (size_t)(count * r) * 4);
        for (int64_t i = 0; i < count * r; i++)
            c[i] = coefficient(rng, distribution);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)count, (int)d, (int)r, 1.0f,
                    c, (int)r, basis, (int)d, 0.0f, w, (int)d);
        subsae__free(c);
    }
    for (int64_t i = 0; i < count; i++)
        subsae__normalize_row(w + i * d, d);
    return SUBSAE_OK;
}

/* The active subspace of a scaled sample: its top-r principal directions
 * (r = `want`, or the effective rank at 99 % when want is 0). */
static int active_subspace(const subsae_trainer *t, const float *x, int64_t n, int64_t d,
                           int64_t want, float **basis, int64_t *r_out)
{
    static const char *fn = "subsae_trainer_init";
    if (want > d)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: subspace dimension %lld exceeds the dimension %lld", fn,
                            (long long)want, (long long)d);
    if (n < 2)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: %lld rows cannot give a subspace", fn, (long long)n);
    subsae_buffer *buf = NULL;
    subsae_subspace *s = NULL;
    float *out = NULL;
    int64_t r = want, method = 0;
    int exact = 1;
    /* The exact method when all directions are needed (r from the
     * spectrum); for a fixed r the estimator picks the cheaper method. */
    int rc = subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf);
    if (!rc)
        rc = subsae_subspace_create(&s);
    if (!rc)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_SEED, t->seed);
    if (!rc && want > 0)
        rc = subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, want);
    if (!rc && t->callback)
        rc = subsae_subspace_set_callback(s, t->callback, t->user);
    if (!rc)
        rc = subsae_subspace_fit(s, buf);
    if (!rc && want == 0)
        rc = subsae_subspace_effective_rank(s, 0.99, &r, &exact);
    if (!rc)
        rc = subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &method);
    if (!rc && (r < 1 || r > d))
        rc = subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                          "%s: the sample's active subspace has dimension %lld", fn,
                          (long long)r);
    if (!rc) {
        out = subsae__malloc((size_t)(r * d) * sizeof *out);
        if (!out)
            rc = subsae__fail_nomem("subspace basis", (size_t)(r * d) * 4);
    }
    if (!rc)
        rc = subsae_subspace_basis(s, r, out, d);
    if (!rc) {
        subsae__trainer_log(
            t, "init", "active subspace: %lld of %lld dimensions%s (%s method, %lld rows)",
            (long long)r, (long long)d, want ? " (set)" : " hold 99% of the variance",
            method == SUBSAE_METHOD_EXACT ? "exact" : "randomized", (long long)n);
        (void)exact; /* all directions were computed: r is exact */
        *basis = out;
        *r_out = r;
        out = NULL;
    }
    subsae__free(out);
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
    return rc;
}

/* The batch-top-k cut of the first rows of the scaled sample at the
 * initial weights. */
static int init_cut(const subsae_trainer *t, const float *xs, int64_t n, double *cut)
{
    const subsae_sae *s = t->sae;
    const int64_t rows = n < SCALE_SEARCH_ROWS ? n : SCALE_SEARCH_ROWS;
    float *xin = subsae__malloc((size_t)(rows * s->d_in) * sizeof *xin);
    if (!xin)
        return subsae__fail_nomem("init sample", (size_t)(rows * s->d_in) * 4);
    const int T = subsae__trainer_threads(t);
    subsae__sae_encoder_input(s, xs, s->d_in, rows, 1.0, xin, s->d_in, T);
    float c = 0.0f;
    int rc = subsae__batch_topk_cut(s, xin, rows, s->k, T, &c);
    subsae__free(xin);
    if (!rc)
        *cut = c;
    return rc;
}

/* Grid search of one common scale of the tied initial weights (as in the
 * reference recipe: 40 values in [0.05, 2], reconstruction MSE on the
 * first rows of the sample). For TopK with b_enc = 0 the pre-activations
 * scale with s, so the selection does not depend on s and the
 * reconstruction is b_dec + s^2 y with y the decode at s = 1: the error at
 * every grid point follows from three sums, exactly. */
static int scale_search(subsae_trainer *t, const float *xs, const float *ts, int64_t n,
                        double *chosen)
{
    subsae_sae *s = t->sae;
    const int64_t rows = n < SCALE_SEARCH_ROWS ? n : SCALE_SEARCH_ROWS;
    const int64_t d_in = s->d_in, d_out = s->d_out, k = s->k;
    const int T = subsae__trainer_threads(t);
    float *xin = subsae__malloc((size_t)(rows * d_in) * sizeof *xin);
    float *pre = subsae__malloc((size_t)subsae__encode_scratch_floats(s, rows, T, false) *
                                sizeof *pre);
    int32_t *idx = subsae__malloc((size_t)(rows * k) * sizeof *idx);
    float *val = subsae__malloc((size_t)(rows * k) * sizeof *val);
    float *y = subsae__malloc((size_t)(rows * d_out) * sizeof *y);
    double *sums = subsae__calloc((size_t)rows * 3, sizeof *sums);
    int rc = SUBSAE_OK;
    if (!xin || !pre || !idx || !val || !y || !sums) {
        rc = subsae__fail_nomem("init-scale search", (size_t)(rows * (d_in + d_out)) * 4);
        goto done;
    }
    subsae__sae_encoder_input(s, xs, d_in, rows, 1.0, xin, d_in, T);
    if (s->activation == SUBSAE_ACT_TOPK) {
        subsae__sae_encode_pre(s, xin, d_in, rows, k, idx, val, pre, NULL, T, NULL);
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(T, (double)rows * (double)k * (double)d_out))
        for (int64_t i = 0; i < rows; i++)
            subsae__sparse_decode_row(y + i * d_out, NULL, s->W_dec, d_out, idx + i * k,
                                      val + i * k, k, d_out);
    } else {
        /* The other activations keep the pre-activations above one cut for
         * the whole sample (the batch-top-k cut, which scales with the
         * weights; ReLU's encoder bias will be minus the cut). */
        float cut;
        rc = subsae__batch_topk_cut(s, xin, rows, k, T, &cut);
        if (rc)
            goto done;
        const float shift = s->activation == SUBSAE_ACT_RELU ? cut : 0.0f;
        const int64_t m = s->d_sae, block = subsae__encode_block_rows(m, rows);
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
            const int64_t nb = rows - r0 < block ? rows - r0 : block;
            subsae__gemm_rows(SUBSAE__FP32, nb, m, d_in, xin + r0 * d_in, d_in, s->W_enc, d_in,
                              pre, m, T);
#pragma omp parallel for schedule(static) num_threads(subsae__team(T, (double)nb * (double)m))
            for (int64_t i = 0; i < nb; i++) {
                float *yr = y + (r0 + i) * d_out;
                const float *pr = pre + i * m;
                memset(yr, 0, (size_t)d_out * sizeof *yr);
                for (int64_t f = 0; f < m; f++) {
                    const float v = pr[f] + s->b_enc[f];
                    if (v > cut && cut > 0.0f) {
                        const float z = v - shift;
                        const float *w = s->W_dec + f * d_out;
                        for (int64_t j = 0; j < d_out; j++)
                            yr[j] += z * w[j];
                    }
                }
            }
        }
    }
#pragma omp parallel for schedule(static) \
    num_threads(subsae__team(T, (double)rows * (double)d_out))
    for (int64_t i = 0; i < rows; i++) {
        const float *yr = y + i * d_out;
        double rr = 0.0, ry = 0.0, yy = 0.0;
        for (int64_t j = 0; j < d_out; j++) {
            double r = (double)ts[i * d_out + j] - (double)s->b_dec[j];
            rr += r * r;
            ry += r * yr[j];
            yy += (double)yr[j] * yr[j];
        }
        sums[3 * i] = rr;
        sums[3 * i + 1] = ry;
        sums[3 * i + 2] = yy;
    }
    double rr = 0.0, ry = 0.0, yy = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        rr += sums[3 * i];
        ry += sums[3 * i + 1];
        yy += sums[3 * i + 2];
    }
    /* With unit decoder rows only the encoder takes the scale: then the
     * reconstruction is b_dec + s y. */
    const bool unit = t->decoder_norm == SUBSAE_DECODER_UNIT;
    double best_err = INFINITY, best = 1.0;
    for (int g = 0; g < 40; g++) {
        double sc = 0.05 + (2.0 - 0.05) * g / 39.0; /* numpy.linspace(0.05, 2, 40) */
        double s2 = unit ? sc : sc * sc;
        double err = (rr - 2.0 * s2 * ry + s2 * s2 * yy) / (double)rows;
        if (err < best_err) {
            best_err = err;
            best = sc;
        }
    }
    *chosen = best;
    subsae__trainer_log(t, "init",
                        "init-scale search: scale %.4f, reconstruction MSE %.4f (scaled)", best,
                        best_err);
done:
    subsae__free(xin);
    subsae__free(pre);
    subsae__free(idx);
    subsae__free(val);
    subsae__free(y);
    subsae__free(sums);
    return rc;
}

/* Rows of `buf` by pread rather than through a file mapping (see
 * buffer.h), so that the file's pages do not stay in the resident set. */
static int gather_unmapped(const subsae_buffer *buf, const int64_t *rows, int64_t n, float *out)
{
    subsae__row_reader *reader;
    int rc = subsae__row_reader_open(buf, &reader);
    if (rc)
        return rc;
    rc = subsae__row_reader_gather(reader, rows, 0, n, out, subsae_buffer_dim(buf));
    subsae__row_reader_close(reader);
    return rc;
}

static int check_init_args(const char *fn, const subsae_trainer *t, const subsae_buffer *input,
                           const subsae_buffer *target)
{
    if (!t)
        return subsae__fail_null(fn, "t");
    if (!input)
        return subsae__fail_null(fn, "input");
    if (t->initialised)
        return subsae__fail(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                            "%s: the trainer is already initialised", fn);
    if (t->k > t->features)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: k %lld exceeds the number of features %lld", fn,
                            (long long)t->k, (long long)t->features);
    if (t->activation == SUBSAE_ACT_GATED && t->auxk_coef > 0.0)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: AuxK is not for gated models, which revive features with "
                            "their own auxiliary loss; set auxk_coef 0",
                            fn);
    if (t->activation == SUBSAE_ACT_GATED && subsae__collective_on(&t->coll))
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: gated models do not train with workers yet", fn);
    if (t->skip && !target)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the skip path (SUBSAE_TRAIN_SKIP) is for transcoders: give a "
                            "target",
                            fn);
    if (t->skip && subsae__collective_on(&t->coll))
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: the skip path (SUBSAE_TRAIN_SKIP) trains in one process; the "
                            "workers do not exchange its gradient",
                            fn);
    if (t->skip && t->activation == SUBSAE_ACT_GATED)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: a gated transcoder has no skip path yet (its auxiliary gate "
                            "reconstruction would have to leave the skip path out or in)",
                            fn);
    int64_t rows = subsae_buffer_rows(input);
    /* With workers one may hold fewer rows: the union is checked later. */
    if (rows < 2 && !subsae__collective_on(&t->coll))
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the input has %lld rows; at least 2 are needed", fn,
                            (long long)rows);
    if (t->matryoshka_count > 0 && t->activation != SUBSAE_ACT_TOPK &&
        t->activation != SUBSAE_ACT_BATCHTOPK)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: Matryoshka prefixes need TopK or BatchTopK, not %s", fn,
                            subsae_activation_name((int)t->activation));
    if (t->matryoshka_count > 0 && t->skip)
        return subsae__fail(SUBSAE_E_UNSUPPORTED, SUBSAE_REASON_BAD_VALUE,
                            "%s: a skip transcoder has no Matryoshka prefixes yet (each "
                            "prefix's reconstruction would need the skip path)",
                            fn);
    int rc = subsae__matryoshka_check(fn, t->matryoshka, t->matryoshka_count, t->features);
    if (rc)
        return rc;
    if (target && subsae_buffer_rows(target) != rows)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_SIZE_MISMATCH,
                            "%s: input has %lld rows, target %lld", fn, (long long)rows,
                            (long long)subsae_buffer_rows(target));
    return SUBSAE_OK;
}

/* Workers (subsae_trainer_set_collective): every worker draws the single
 * process's sample of global row numbers, reads the sampled rows it holds
 * into their places of the sample (zeros elsewhere), and one all-reduce
 * gives every worker the whole sample: 4 n (d_in [+ d_out]) bytes, once.
 * Init then runs the single process's computation on every worker, so that
 * the model starts from the same bits as in one process. (Combining
 * sums instead, the float Gram matrix of the subspace differs by
 * rounding, the initial directions by ~1e-6, and TopK training amplifies
 * that: see README "Scale-out".) When xs is NULL (this worker could not
 * allocate it), it joins the agreement with rc and returns. */
static int gather_sample(subsae_trainer *t, int rc, const subsae_buffer *input,
                         const subsae_buffer *target, int64_t *sample, int64_t n,
                         int64_t offset, int64_t local_rows, float *xs, float *ts)
{
    static const char *fn = "subsae_trainer_init: sample";
    const int64_t d_in = xs ? subsae_buffer_dim(input) : 0;
    const int64_t d_out = xs && target ? subsae_buffer_dim(target) : d_in;
    int64_t mine = 0;
    if (!rc && xs) {
        /* This worker's rows, in sample order, gathered to the front ... */
        int64_t *rows = sample + n; /* room for n more indices (see the caller) */
        for (int64_t i = 0; i < n; i++)
            if (sample[i] >= offset && sample[i] - offset < local_rows)
                rows[mine++] = sample[i] - offset;
        if (mine > 0)
            rc = gather_unmapped(input, rows, mine, xs);
        if (!rc && mine > 0 && target)
            rc = gather_unmapped(target, rows, mine, ts);
        /* ... then moved to their places, last first (a row's place is at
         * least its rank among this worker's rows), zeros between. */
        int64_t j = mine - 1;
        for (int64_t i = n - 1; !rc && i >= 0; i--) {
            bool held = sample[i] >= offset && sample[i] - offset < local_rows;
            if (held && i != j) {
                memcpy(xs + i * d_in, xs + j * d_in, (size_t)d_in * sizeof *xs);
                if (target)
                    memcpy(ts + i * d_out, ts + j * d_out, (size_t)d_out * sizeof *ts);
            }
            if (!held) {
                memset(xs + i * d_in, 0, (size_t)d_in * sizeof *xs);
                if (target)
                    memset(ts + i * d_out, 0, (size_t)d_out * sizeof *ts);
            }
            j -= held;
        }
    }
    rc = subsae__collective_agree(&t->coll, rc, fn);
    if (!rc)
        rc = subsae__allreduce(&t->coll, xs, n * d_in, SUBSAE_DTYPE_F32, fn);
    if (!rc && target)
        rc = subsae__allreduce(&t->coll, ts, n * d_out, SUBSAE_DTYPE_F32, fn);
    return rc;
}

/* Workers: the rows of all workers together (*rows) and where this
 * worker's sit among them (*offset), with the same options everywhere;
 * rc (this worker's argument checks) is agreed. */
static int init_workers(subsae_trainer *t, int rc, int64_t local_rows, int64_t d_in,
                        int64_t d_out, int64_t *offset, int64_t *rows)
{
    static const char *fn = "subsae_trainer_init";
    if (!rc)
        rc = subsae__trainer_collective_supported(t, fn);
    rc = subsae__collective_rows(&t->coll, rc, local_rows, d_in, offset, rows, NULL, fn);
    uint64_t h = subsae__hash_bytes(subsae__trainer_options_hash(t), &d_out, sizeof d_out);
    rc = subsae__collective_same(&t->coll, rc, h,
                                 "subsae_trainer_init: the options (or target widths)");
    if (rc)
        return rc;
    if (*rows < 2)
        return subsae__fail(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                            "%s: the workers hold %lld rows together; at least 2 are needed",
                            fn, (long long)*rows);
    return SUBSAE_OK;
}

/* ASI rank of a Matryoshka prefix of `width` of the m features:
 * ceil(r (width / m)^(1/4)), between 1 and r, r for the whole model.
 * (Issue 18, stories260K, BatchTopK k 8, prefixes 256 / 1024 / 4096, the
 * threshold at rate 0.3: ranks in proportion to the width, ceil(r w / m)
 * = 4 / 15 / 60 of r = 60, start the first 256 features in 4 directions
 * and cost 0.062 of the whole model's explained variance on L2_mlp_in_131k
 * against plain BatchTopK at the same L0; the square root (15 / 30 / 60)
 * 0.019 there but 0.055 on the 16k-row L2_mlp_in; this fourth root (31 /
 * 43 / 60) 0.014 and 0.026. Every prefix in all r directions started
 * them alike: at rate 0.01 the prefixes of L2_attn_out no longer rose.) */
static int64_t matryoshka_rank(int64_t r, int64_t width, int64_t m)
{
    const double share = sqrt(sqrt((double)width / (double)m));
    int64_t rank = (int64_t)ceil((double)r * share);
    return width >= m ? r : rank < 1 ? 1 : rank > r ? r : rank;
}

/* The decoder's directions (draw_directions). A Matryoshka model's
 * prefixes draw in turn, prefix j (features [w_{j-1}, w_j)) from the top
 * matryoshka_rank(r, w_j, d_sae) principal directions of ASI, so that the
 * earliest, smallest prefixes start in the directions of most variance,
 * which they must reconstruct on their own; one prefix is the plain model. */
static int draw_decoder(subsae__rng *rng, int64_t distribution, subsae_sae *sae,
                        const float *basis, int64_t r)
{
    const int64_t d = sae->d_out, m = sae->d_sae;
    const int levels = subsae__matryoshka_levels(sae);
    int rc = SUBSAE_OK;
    int64_t start = 0;
    for (int j = 0; !rc && j < levels; j++) {
        const int64_t end = j + 1 < levels ? sae->matryoshka[j] : m;
        const int64_t rank = matryoshka_rank(r, end, m);
        rc = draw_directions(rng, distribution, sae->W_dec + start * d, end - start, d, basis,
                             basis ? rank : 0);
        start = end;
    }
    return rc;
}

/* Decoder directions; the encoder starts tied (an SAE, ts == xs) or with
 * directions of its own input (a transcoder). *r gets ASI's subspace
 * dimension (0 for random directions). */
static int init_directions(const subsae_trainer *t, subsae_sae *sae, const float *xs,
                           const float *ts, int64_t n, int64_t *r)
{
    const int64_t m = sae->d_sae, d_in = sae->d_in, d_out = sae->d_out;
    const bool transcoder = ts != xs;
    float *basis = NULL, *basis_in = NULL;
    int64_t r_in = 0;
    int rc = SUBSAE_OK;
    *r = 0;
    if (t->init == SUBSAE_INIT_ACTIVE_SUBSPACE) {
        rc = active_subspace(t, ts, n, d_out, t->subspace_dim, &basis, r);
        if (!rc && transcoder)
            rc = active_subspace(t, xs, n, d_in, 0, &basis_in, &r_in);
    }
    subsae__rng rng;
    if (!rc) {
        subsae__rng_seed(&rng, (uint64_t)t->seed, SUBSAE__STREAM_DECODER);
        rc = draw_decoder(&rng, t->subspace_coefficients, sae, basis, *r);
    }
    if (!rc && transcoder) {
        subsae__rng_seed(&rng, (uint64_t)t->seed, SUBSAE__STREAM_ENCODER);
        rc = draw_directions(&rng, t->subspace_coefficients, sae->W_enc, m, d_in, basis_in,
                             r_in);
    } else if (!rc) {
        memcpy(sae->W_enc, sae->W_dec, (size_t)(m * d_in) * sizeof(float));
    }
    subsae__free(basis);
    subsae__free(basis_in);
    return rc;
}

/* The model of the sample (n rows xs, targets ts; ts == xs for an SAE):
 * the scales, a skip transcoder's W_skip (ts becomes the residual it
 * leaves), b_dec = the mean of the scaled target, the directions. */
static int init_model(const subsae_trainer *t, float *xs, float *ts, int64_t n, int64_t d_in,
                      int64_t d_out, subsae_sae **out, int64_t *r)
{
    const bool transcoder = ts != xs;
    double s_in, s_out;
    int rc = scale_rows(xs, n, d_in, &s_in, "input");
    if (!rc && transcoder)
        rc = scale_rows(ts, n, d_out, &s_out, "target");
    if (rc)
        return rc;
    if (!transcoder)
        s_out = s_in;
    subsae_sae *sae;
    rc = subsae__sae_new(d_in, d_out, t->features, (int)t->activation, &sae);
    if (rc)
        return rc;
    sae->k = t->k;
    sae->apply_b_dec_to_input = !transcoder;
    sae->transcoder = transcoder;
    sae->input_scale = s_in;
    sae->output_scale = s_out;
    /* W_skip starts at the least-squares map of the sample (SAELens and
     * sparsify start at zero), and the rest of the model is initialised on
     * what it leaves: b_dec (below), the decoder's directions and the scale
     * search see the residual ts - xs W_skip^T. On stories260K L2 mlp_in ->
     * mlp_out this gains 0.010 of held-out explained variance over a zero
     * start (README). */
    rc = t->skip ? subsae__sae_enable_skip(sae) : SUBSAE_OK;
    if (!rc && t->skip)
        rc = subsae__skip_least_squares(xs, ts, n, d_in, d_out, sae->W_skip,
                                        subsae__trainer_threads(t));
    if (!rc && t->skip)
        subsae__skip_forward(sae->W_skip, d_in, d_out, xs, d_in, n, -1.0f, ts, d_out,
                             subsae__trainer_threads(t));
    if (rc) {
        subsae_sae_free(sae);
        return rc;
    }
    sae->matryoshka_count = t->matryoshka_count;
    memcpy(sae->matryoshka, t->matryoshka, sizeof sae->matryoshka);
    for (int64_t j = 0; j < d_out; j++) {
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++)
            acc += ts[i * d_out + j];
        sae->b_dec[j] = (float)(acc / (double)n);
    }
    rc = init_directions(t, sae, xs, ts, n, r);
    if (rc) {
        subsae_sae_free(sae);
        return rc;
    }
    *out = sae;
    return SUBSAE_OK;
}

/* The common scale of the initial weights (the grid search's choice, 1
 * when off), applied to the encoder and to a free decoder. */
static int init_scale(subsae_trainer *t, const float *xs, const float *ts, int64_t n,
                      double *chosen)
{
    subsae_sae *sae = t->sae;
    *chosen = 1.0;
    if (!t->scale_search)
        return SUBSAE_OK;
    int rc = scale_search(t, xs, ts, n, chosen);
    if (rc)
        return rc;
    const float c = (float)*chosen;
    for (int64_t i = 0; i < sae->d_sae * sae->d_in; i++)
        sae->W_enc[i] *= c;
    if (t->decoder_norm != SUBSAE_DECODER_UNIT)
        for (int64_t i = 0; i < sae->d_sae * sae->d_out; i++)
            sae->W_dec[i] *= c;
    return SUBSAE_OK;
}

/* Thresholds: BatchTopK's starts at the batch-top-k cut of the sample;
 * JumpReLU's is INIT_THRESHOLD, or that same cut (initial L0 = k); ReLU's
 * encoder bias starts at minus the same value, and so does a gated model's
 * gate bias (SAELens starts it at 0): with r_mag = b_mag = 0 the gated
 * model then starts as the JumpReLU of that threshold. *theta0 gets it. */
static int init_threshold(subsae_trainer *t, const float *xs, int64_t n, double *theta0)
{
    *theta0 = 0.0;
    const bool biased = t->activation == SUBSAE_ACT_RELU || t->activation == SUBSAE_ACT_GATED;
    const bool thresholded = t->activation == SUBSAE_ACT_JUMPRELU || biased;
    if (t->activation == SUBSAE_ACT_BATCHTOPK || (thresholded && t->init_threshold == 0.0)) {
        int rc = init_cut(t, xs, n, theta0);
        if (rc)
            return rc;
        subsae__trainer_log(t, "init", "batch top-k cut of the sample: %.6g", *theta0);
    }
    if (thresholded)
        *theta0 = t->init_threshold > 0.0 ? t->init_threshold
                  : *theta0 > 0.0         ? *theta0
                                          : FALLBACK_THRESHOLD;
    if (biased)
        for (int64_t f = 0; f < t->sae->d_sae; f++)
            t->sae->b_enc[f] = -(float)*theta0;
    return SUBSAE_OK;
}

/* The trained thresholds from theta0, and the counters of a trainer that
 * has not stepped yet. */
static void init_training(subsae_trainer *t, double theta0)
{
    subsae_sae *sae = t->sae;
    const int64_t m = sae->d_sae;
    if (t->activation == SUBSAE_ACT_JUMPRELU) {
        for (int64_t f = 0; f < m; f++) {
            t->log_threshold[f] = logf((float)theta0);
            sae->threshold[f] = expf(t->log_threshold[f]);
        }
    } else if (t->activation == SUBSAE_ACT_BATCHTOPK) {
        t->batch_threshold = theta0;
        for (int64_t f = 0; f < m; f++)
            sae->threshold[f] = (float)theta0;
    }
    t->step = t->tokens = 0;
    t->fit_end_step = -1;
    subsae__trainer_forget_last_step(t, NAN);
    t->prev_valid = false;
    t->window_tokens = 0;
    t->it_epoch = t->it_position = 0;
    subsae__rng_seed(&t->rng, (uint64_t)t->seed, SUBSAE__STREAM_TRAIN);
}

int subsae_trainer_init(subsae_trainer *t, const subsae_buffer *input,
                        const subsae_buffer *target)
{
    static const char *fn = "subsae_trainer_init";
    int rc = check_init_args(fn, t, input, target);
    if (!rc)
        rc = subsae__trainer_precision_init(t, fn);
    const bool workers = t && subsae__collective_on(&t->coll);
    if (rc && !workers)
        return rc;
    const int64_t local_rows = input ? subsae_buffer_rows(input) : 0;
    const int64_t d_in = input ? subsae_buffer_dim(input) : 0;
    const int64_t d_out = target ? subsae_buffer_dim(target) : d_in;
    int64_t offset = 0, rows = local_rows;
    if (workers) {
        rc = init_workers(t, rc, local_rows, d_in, d_out, &offset, &rows);
        if (rc)
            return rc;
    }
    bool gathered =
        false; /* with workers: every failure from here meets the check at the end */
    const int64_t n = rows < t->init_sample ? rows : t->init_sample;

    int64_t *sample = subsae__malloc((size_t)(workers ? 2 * n : n) * sizeof *sample);
    float *xs = subsae__malloc((size_t)(n * d_in) * sizeof *xs);
    float *ts = target ? subsae__malloc((size_t)(n * d_out) * sizeof *ts) : xs;
    subsae_sae *sae = NULL;
    if (!sample || !xs || !ts) {
        rc = subsae__fail_nomem("initialisation sample", (size_t)(n * (d_in + d_out)) * 4);
        if (workers) { /* the others wait in the sample's all-reduce */
            rc = gather_sample(t, rc, input, target, NULL, n, offset, local_rows, NULL, NULL);
            gathered = true;
        }
        goto fail;
    }
    subsae__rng rng;
    subsae__rng_seed(&rng, (uint64_t)t->seed, SUBSAE__STREAM_SAMPLE);
    rc = draw_sample(&rng, rows, n, sample);
    if (workers) {
        rc = gather_sample(t, rc, input, target, sample, n, offset, local_rows, xs, ts);
        gathered = true;
    } else if (!rc) {
        rc = gather_unmapped(input, sample, n, xs);
        if (!rc && target)
            rc = gather_unmapped(target, sample, n, ts);
    }
    int64_t r = 0;
    if (!rc)
        rc = init_model(t, xs, ts, n, d_in, d_out, &sae, &r);
    if (rc)
        goto fail;
    t->sae = sae;
    t->transcoder = target != NULL;
    double chosen, theta0;
    rc = init_scale(t, xs, ts, n, &chosen);
    if (!rc)
        rc = init_threshold(t, xs, n, &theta0);
    if (rc) {
        t->sae = NULL;
        goto fail;
    }
    /* Release the sample before the optimiser state exists, so that the
     * peak memory of a run is the training state, not state + sample. */
    subsae__free(sample);
    subsae__free(xs);
    if (ts != xs)
        subsae__free(ts);
    sample = NULL;
    xs = ts = NULL;
    rc = subsae__trainer_alloc_state(t);
    if (!rc)
        rc = subsae__trainer_workspace(t, t->batch, subsae__trainer_threads(t));
    if (!rc)
        rc = subsae__sae_replace_metadata(sae, t->metadata);
    if (workers) { /* and every worker holds the same model */
        rc = subsae__collective_same(&t->coll, rc, subsae__trainer_weights_hash(t),
                                     "subsae_trainer_init: the initial weights");
        gathered = false;
    }
    if (rc) {
        t->sae = NULL;
        goto fail;
    }
    init_training(t, theta0);
    const bool asi = t->init == SUBSAE_INIT_ACTIVE_SUBSPACE;
    t->subspace_dim_used = asi ? r : 0;
    t->init_scale = chosen;
    t->initialised = true;
    subsae__trainer_log(t, "init",
                        "%s init: %lld features, d_in %lld, d_out %lld, scale %.6g%s%lld",
                        asi ? "active-subspace" : "random", (long long)sae->d_sae,
                        (long long)d_in, (long long)d_out, sae->input_scale,
                        asi ? ", subspace dim " : "", asi ? (long long)r : 0LL);
    return SUBSAE_OK;

fail:
    /* A worker that fails after the sample was gathered still meets the
     * others at their final check, so that they fail too. */
    if (gathered)
        rc = subsae__collective_same(&t->coll, rc, 0,
                                     "subsae_trainer_init: the initial weights");
    /* Leave the trainer as it was: uninitialised with its options. */
    subsae_sae_free(sae);
    t->sae = NULL;
    subsae__trainer_free_state(t);
    subsae__free(sample);
    subsae__free(xs);
    if (ts != xs)
        subsae__free(ts);
    return rc;
}
