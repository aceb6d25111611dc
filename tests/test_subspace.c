/* The subspace estimator against matrices with known spectra (random
 * orthogonal factors from LAPACK QR of Gaussian matrices) and against
 * LAPACK on the same float32 data in double: exact and randomized
 * spectra, bases, effective and entropy ranks, projections, the progress
 * callback, bad arguments and failed allocations. */
#include "harness.h"
#include "internal.h"
#include "dtype.h"
#include "rng.h"
#include "subspace.h"

#include <cblas.h>
#include <dirent.h>
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- test matrices -------------------------------------------------- */

enum profile { GEOMETRIC, POLYNOMIAL, CUTOFF, FLAT };

static const char *profile_name(int p)
{
    return p == GEOMETRIC ? "geometric" : p == POLYNOMIAL ? "polynomial" : p == CUTOFF ? "cutoff"
                                                                                       : "flat";
}

/* Singular values of the centred matrix, descending, largest 1. */
static void make_sigma(int profile, int64_t d, double *sigma)
{
    for (int64_t i = 0; i < d; i++) {
        switch (profile) {
        case GEOMETRIC: sigma[i] = pow(0.85, (double)i); break;      /* var 0.72^i */
        case POLYNOMIAL: sigma[i] = pow((double)(i + 1), -1.5); break; /* var i^-3 */
        case CUTOFF: sigma[i] = i < 20 ? 1.0 - 0.02 * (double)i : 0.0; break;
        default: sigma[i] = 1.0; break;
        }
    }
}

/* Orthonormal columns: Q (rows x cols, row-major) of the QR of a Gaussian
 * matrix; with `centred`, the Gaussian columns are centred first, so the
 * columns of Q are orthogonal to the all-ones vector. */
static double *random_orthonormal(int64_t rows, int64_t cols, bool centred, subsae__rng *rng)
{
    double *a = malloc((size_t)rows * (size_t)cols * sizeof *a);
    double *tau = malloc((size_t)cols * sizeof *tau);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(tau);
    for (int64_t i = 0; i < rows * cols; i++)
        a[i] = subsae__rng_normal(rng);
    if (centred) {
        for (int64_t j = 0; j < cols; j++) {
            double m = 0.0;
            for (int64_t i = 0; i < rows; i++)
                m += a[i * cols + j];
            m /= (double)rows;
            for (int64_t i = 0; i < rows; i++)
                a[i * cols + j] -= m;
        }
    }
    ck_assert_int_eq(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)rows, (int)cols, a, (int)cols, tau), 0);
    ck_assert_int_eq(
        LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)rows, (int)cols, (int)cols, a, (int)cols, tau), 0);
    free(tau);
    return a;
}

/* X = sqrt(n - 1) U diag(sigma) V^T + 1 mu^T as float32 (n x d), U (n x d)
 * orthonormal and orthogonal to 1, V (d x d) orthogonal; mu_j = offset *
 * (1 + j / d). The covariance of X has eigenvalues sigma^2 and the centred
 * X singular values sqrt(n - 1) sigma (up to float rounding). */
static float *make_matrix(int64_t n, int64_t d, const double *sigma, double offset,
                          uint64_t seed)
{
    subsae__rng rng;
    subsae__rng_seed(&rng, seed, 7);
    double *u = random_orthonormal(n, d, true, &rng);
    double *v = random_orthonormal(d, d, false, &rng);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            u[i * d + j] *= sqrt((double)(n - 1)) * sigma[j];
    double *x = malloc((size_t)n * (size_t)d * sizeof *x);
    ck_assert_ptr_nonnull(x);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)d, 1.0, u, (int)d,
                v, (int)d, 0.0, x, (int)d);
    float *xf = malloc((size_t)n * (size_t)d * sizeof *xf);
    ck_assert_ptr_nonnull(xf);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            xf[i * d + j] = (float)(x[i * d + j] + offset * (1.0 + (double)j / (double)d));
    free(u);
    free(v);
    free(x);
    return xf;
}

/* LAPACK on the float data in double: eigenvalues (descending) and
 * eigenvectors (rows, same order) of the covariance (1 / (n - 1)), centred
 * in double with a two-pass mean unless `center` is false. */
struct reference {
    int64_t d;
    double *values;
    double *vectors; /* d x d, row r = eigenvector r */
    double *mean;
    double total;
};

static struct reference reference_spectrum(const float *x, int64_t n, int64_t d, bool center)
{
    struct reference ref = {.d = d};
    ref.values = malloc((size_t)d * sizeof(double));
    ref.vectors = malloc((size_t)d * (size_t)d * sizeof(double));
    ref.mean = calloc((size_t)d, sizeof(double));
    double *xd = malloc((size_t)n * (size_t)d * sizeof *xd);
    double *c = calloc((size_t)d * (size_t)d, sizeof *c);
    double *w = malloc((size_t)d * sizeof *w);
    ck_assert(ref.values && ref.vectors && ref.mean && xd && c && w);
    if (center) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < d; j++)
                ref.mean[j] += x[i * d + j];
        for (int64_t j = 0; j < d; j++)
            ref.mean[j] /= (double)n;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            xd[i * d + j] = (double)x[i * d + j] - ref.mean[j];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0 / (double)(n - 1), xd,
                (int)d, 0.0, c, (int)d);
    ref.total = 0.0;
    for (int64_t j = 0; j < d; j++)
        ref.total += c[j * d + j];
    ck_assert_int_eq(LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (int)d, c, (int)d, w), 0);
    for (int64_t r = 0; r < d; r++) {
        ref.values[r] = w[d - 1 - r];
        memcpy(ref.vectors + r * d, c + (d - 1 - r) * d, (size_t)d * sizeof(double));
    }
    free(xd);
    free(c);
    free(w);
    return ref;
}

static void reference_free(struct reference *ref)
{
    free(ref->values);
    free(ref->vectors);
    free(ref->mean);
}

/* Hand-computed effective rank and entropy rank of a full spectrum. */
static int64_t hand_effective_rank(const double *v, int64_t d, double tau)
{
    double total = 0.0, cumulative = 0.0;
    for (int64_t i = 0; i < d; i++)
        total += v[i] > 0.0 ? v[i] : 0.0;
    for (int64_t i = 0; i < d; i++) {
        cumulative += v[i] > 0.0 ? v[i] : 0.0;
        if (cumulative >= tau * total)
            return i + 1;
    }
    return d;
}

static double hand_entropy_rank(const double *v, int64_t d)
{
    double total = 0.0, h = 0.0;
    for (int64_t i = 0; i < d; i++)
        total += sqrt(v[i] > 0.0 ? v[i] : 0.0);
    for (int64_t i = 0; i < d; i++) {
        double p = sqrt(v[i] > 0.0 ? v[i] : 0.0) / total;
        if (p > 0.0)
            h -= p * log(p);
    }
    return exp(h);
}

/* Largest principal angle (radians) between the row spaces of a (k x d,
 * float, orthonormal rows) and b (k x d, double, orthonormal rows), as the
 * arcsine of the largest singular value of a's residual after projection
 * onto b's rows (acos of the cosines would lose everything below 1e-4). */
static double largest_principal_angle(const float *a, const double *b, int64_t k, int64_t d)
{
    double *r = malloc((size_t)k * (size_t)d * sizeof *r);
    double *s = malloc((size_t)k * sizeof *s);
    double *superb = malloc((size_t)k * sizeof *superb);
    ck_assert(r && s && superb);
    for (int64_t i = 0; i < k; i++) {
        for (int64_t t = 0; t < d; t++)
            r[i * d + t] = a[i * d + t];
        for (int64_t j = 0; j < k; j++) {
            double dot = 0.0;
            for (int64_t t = 0; t < d; t++)
                dot += (double)a[i * d + t] * b[j * d + t];
            for (int64_t t = 0; t < d; t++)
                r[i * d + t] -= dot * b[j * d + t];
        }
    }
    ck_assert_int_eq(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (int)k, (int)d, r, (int)d, s, NULL,
                                    1, NULL, 1, superb),
                     0);
    double largest = s[0] > 1.0 ? 1.0 : s[0];
    free(r);
    free(s);
    free(superb);
    return asin(largest);
}

static subsae_subspace *fit(const float *x, int64_t n, int64_t d, int method, int64_t k,
                            int64_t batch_rows)
{
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, k));
    if (batch_rows > 0)
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, batch_rows));
    ck_assert_ok(subsae_subspace_fit(s, buf));
    subsae_buffer_free(buf);
    return s;
}

/* ---- exact ---------------------------------------------------------- */

/* Eigenvalue agreement, as a multiple of the tolerance 1e-5 * lambda_i +
 * 1e-8 * lambda_1: every eigenvalue to 1e-5 relative down to about 1e-3 of
 * the largest; below, where float32 data no longer pins an eigenvalue
 * down relatively (it perturbs it by ~1e-7 of the largest), to 1e-8 of the
 * largest. <= 1 passes. */
static double spectrum_error(const double *got, const double *want, int64_t count)
{
    double worst = 0.0;
    for (int64_t i = 0; i < count; i++) {
        double e = fabs(got[i] - want[i]) / (1e-5 * want[i] + 2e-7 * want[0]);
        if (e > worst)
            worst = e;
    }
    return worst;
}

static void check_exact(int profile, double offset, int64_t batch_rows)
{
    const int64_t n = 3000, d = 64;
    double sigma[64];
    make_sigma(profile, d, sigma);
    float *x = make_matrix(n, d, sigma, offset, 11 + (uint64_t)profile);
    struct reference ref = reference_spectrum(x, n, d, true);
    /* The construction is right: LAPACK sees the designed spectrum (up to
     * the rounding of the data to float32: 6e-5 absolute at an offset of
     * 1000). */
    for (int64_t i = 0; i < d; i++)
        ck_assert_msg(fabs(ref.values[i] - sigma[i] * sigma[i]) <=
                          1e-5 * sigma[i] * sigma[i] + (offset > 0.0 ? 1e-6 : 1e-9),
                      "%s: construction eigenvalue %lld is %g, designed %g", profile_name(profile),
                      (long long)i, ref.values[i], sigma[i] * sigma[i]);

    subsae_subspace *s = fit(x, n, d, SUBSAE_METHOD_EXACT, 0, batch_rows);
    int64_t value;
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &value));
    ck_assert_int_eq(value, SUBSAE_METHOD_EXACT);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &value));
    ck_assert_int_eq(value, d);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_ROWS, &value));
    ck_assert_int_eq(value, n);
    double var[64], sv[64], ratios[64], total;
    ck_assert_ok(subsae_subspace_variances(s, var, d));
    ck_assert_ok(subsae_subspace_singular_values(s, sv, d));
    ck_assert_ok(subsae_subspace_explained_ratios(s, ratios, d));
    ck_assert_ok(subsae_subspace_total_variance(s, &total));
    double err = spectrum_error(var, ref.values, d);
    printf("  exact %-10s offset %-6g batch %-5lld: worst eigenvalue error %.3f of tolerance\n",
           profile_name(profile), offset, (long long)batch_rows, err);
    ck_assert_msg(err <= 1.0, "%s offset %g: eigenvalue error %g x tolerance", profile_name(profile),
                  offset, err);
    ck_assert_msg(fabs(total - ref.total) <= 1e-9 * ref.total, "total %.17g vs %.17g", total,
                  ref.total);
    for (int64_t i = 0; i < d; i++) {
        ck_assert(i == 0 || var[i] <= var[i - 1]);
        ck_assert_double_eq_tol(sv[i], sqrt((double)(n - 1) * var[i]), 1e-12);
        ck_assert_double_eq_tol(ratios[i], var[i] / total, 1e-15);
    }

    float mean[64];
    ck_assert_ok(subsae_subspace_mean(s, mean));
    for (int64_t j = 0; j < d; j++)
        ck_assert_msg(fabs(mean[j] - ref.mean[j]) <= 1e-6 * (fabs(ref.mean[j]) + 1.0),
                      "mean[%lld] %.9g vs %.9g", (long long)j, mean[j], ref.mean[j]);

    /* Orthonormal basis, and eigenvectors where the spectrum separates them. */
    float *basis = malloc((size_t)d * (size_t)d * sizeof *basis);
    ck_assert_ptr_nonnull(basis);
    ck_assert_ok(subsae_subspace_basis(s, d, basis, d));
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = 0; b <= a; b++) {
            double dot = 0.0;
            for (int64_t j = 0; j < d; j++)
                dot += (double)basis[a * d + j] * basis[b * d + j];
            ck_assert_msg(fabs(dot - (a == b)) < 1e-5, "basis rows %lld, %lld: dot %g",
                          (long long)a, (long long)b, dot);
        }
    if (profile == GEOMETRIC || profile == POLYNOMIAL) {
        double angle = largest_principal_angle(basis, ref.vectors, 8, d);
        ck_assert_msg(angle < 1e-5, "top-8 subspace angle %g", angle);
    }

    /* Ranks: identical to the hand computation on LAPACK's spectrum. */
    const double taus[] = {0.5, 0.9, 0.95, 0.99, 1.0};
    for (size_t t = 0; t < sizeof taus / sizeof taus[0]; t++) {
        int64_t r = -1;
        int exact = -1;
        ck_assert_ok(subsae_subspace_effective_rank(s, taus[t], &r, &exact));
        if (taus[t] < 1.0) /* at 1, rounding noise in the tail decides */
            ck_assert_msg(r == hand_effective_rank(ref.values, d, taus[t]),
                          "%s tau %g: r %lld, LAPACK %lld", profile_name(profile), taus[t],
                          (long long)r, (long long)hand_effective_rank(ref.values, d, taus[t]));
        ck_assert_int_eq(exact, 1);
    }
    if (profile == CUTOFF) {
        int64_t r;
        ck_assert_ok(subsae_subspace_effective_rank(s, 0.999999, &r, NULL));
        ck_assert_int_eq(r, 20);
    }
    double er;
    int exact = -1;
    ck_assert_ok(subsae_subspace_entropy_rank(s, &er, &exact));
    ck_assert_int_eq(exact, 1);
    /* Singular values are square roots of variances, so float32 rounding
     * noise in the tail (1e-12 of the largest variance in the decaying
     * spectra, 1e-8 in the null space of the rank-20 one) weighs in far
     * more than in the variances: 2e-4 and 5e-3 relative. */
    double want = hand_entropy_rank(ref.values, d);
    ck_assert_msg(fabs(er - want) <= (profile == CUTOFF ? 5e-3 : 2e-4) * want,
                  "%s: entropy rank %.9g vs %.9g", profile_name(profile), er, want);
    free(basis);
    reference_free(&ref);
    subsae_subspace_free(s);
    free(x);
}

START_TEST(exact_matches_lapack_on_known_spectra)
{
    check_exact(GEOMETRIC, 0.0, 0);
    check_exact(POLYNOMIAL, 0.0, 0);
    check_exact(CUTOFF, 0.0, 0);
    check_exact(FLAT, 0.0, 0);
    check_exact(GEOMETRIC, 0.0, 512);  /* several batches, a partial last one */
    check_exact(POLYNOMIAL, 1000.0, 0); /* mean far larger than the spread */
    check_exact(GEOMETRIC, 1000.0, 700);
}
END_TEST

/* ---- randomized ----------------------------------------------------- */

static void check_randomized(int profile, int64_t k, uint64_t seed)
{
    const int64_t n = 3000, d = 128;
    double sigma[128];
    make_sigma(profile, d, sigma);
    float *x = make_matrix(n, d, sigma, 3.0, 21 + (uint64_t)profile);
    struct reference ref = reference_spectrum(x, n, d, true);
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, SUBSAE_METHOD_RANDOMIZED));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, k));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_SEED, (int64_t)seed));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, 1000));
    ck_assert_ok(subsae_subspace_fit(s, buf));

    int64_t value;
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &value));
    ck_assert_int_eq(value, SUBSAE_METHOD_RANDOMIZED);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &value));
    ck_assert_int_eq(value, k);
    double var[128], sv[128], total;
    ck_assert_ok(subsae_subspace_variances(s, var, k));
    ck_assert_status(subsae_subspace_variances(s, var, k + 1), SUBSAE_E_RANGE);
    ck_assert_ok(subsae_subspace_singular_values(s, sv, k));
    ck_assert_ok(subsae_subspace_total_variance(s, &total));
    ck_assert_msg(fabs(total - ref.total) <= 1e-9 * ref.total, "total %.17g vs %.17g", total,
                  ref.total);
    double worst = 0.0;
    for (int64_t i = 0; i < k; i++) {
        double want = sqrt((double)(n - 1) * ref.values[i]);
        double e = fabs(sv[i] - want) / want;
        worst = e > worst ? e : worst;
    }
    float *basis = malloc((size_t)k * (size_t)d * sizeof *basis);
    ck_assert_ptr_nonnull(basis);
    ck_assert_ok(subsae_subspace_basis(s, k, basis, d));
    for (int64_t a = 0; a < k; a++)
        for (int64_t b = 0; b <= a; b++) {
            double dot = 0.0;
            for (int64_t j = 0; j < d; j++)
                dot += (double)basis[a * d + j] * basis[b * d + j];
            ck_assert_msg(fabs(dot - (a == b)) < 1e-5, "randomized basis rows %lld, %lld: %g",
                          (long long)a, (long long)b, dot);
        }
    double angle = largest_principal_angle(basis, ref.vectors, k, d);
    printf("  randomized %-10s k %-3lld seed %llu: singular values %.2e relative, "
           "largest principal angle %.2e rad\n",
           profile_name(profile), (long long)k, (unsigned long long)seed, worst, angle);
    ck_assert_msg(worst <= 1e-3, "%s k %lld: singular value error %g", profile_name(profile),
                  (long long)k, worst);
    ck_assert_msg(angle < 1e-2, "%s k %lld: principal angle %g", profile_name(profile),
                  (long long)k, angle);

    /* Effective ranks: LAPACK's whenever k covers them, else flagged. */
    const double taus[] = {0.5, 0.8, 0.9, 0.95, 0.99, 0.999};
    for (size_t t = 0; t < sizeof taus / sizeof taus[0]; t++) {
        int64_t r = -1, want = hand_effective_rank(ref.values, d, taus[t]);
        int exact = -1;
        ck_assert_ok(subsae_subspace_effective_rank(s, taus[t], &r, &exact));
        if (want <= k) {
            ck_assert_msg(r == want && exact == 1, "%s k %lld tau %g: r %lld (exact %d), want %lld",
                          profile_name(profile), (long long)k, taus[t], (long long)r, exact,
                          (long long)want);
        } else {
            ck_assert_msg(r == k + 1 && exact == 0,
                          "%s k %lld tau %g: r %lld (exact %d), want the bound %lld flagged",
                          profile_name(profile), (long long)k, taus[t], (long long)r, exact,
                          (long long)(k + 1));
        }
    }
    double er;
    int exact = -1;
    ck_assert_ok(subsae_subspace_entropy_rank(s, &er, &exact));
    ck_assert_int_eq(exact, 0);
    ck_assert_double_eq_tol(er, hand_entropy_rank(var, k), 1e-12 * er);

    /* Same seed, same bits. */
    subsae_subspace *again = NULL;
    ck_assert_ok(subsae_subspace_create(&again));
    ck_assert_ok(subsae_subspace_set_int(again, SUBSAE_SUBSPACE_METHOD, SUBSAE_METHOD_RANDOMIZED));
    ck_assert_ok(subsae_subspace_set_int(again, SUBSAE_SUBSPACE_RANK, k));
    ck_assert_ok(subsae_subspace_set_int(again, SUBSAE_SUBSPACE_SEED, (int64_t)seed));
    ck_assert_ok(subsae_subspace_set_int(again, SUBSAE_SUBSPACE_BATCH_ROWS, 1000));
    ck_assert_ok(subsae_subspace_fit(again, buf));
    double var2[128];
    float *basis2 = malloc((size_t)k * (size_t)d * sizeof *basis2);
    ck_assert_ptr_nonnull(basis2);
    ck_assert_ok(subsae_subspace_variances(again, var2, k));
    ck_assert_ok(subsae_subspace_basis(again, k, basis2, d));
    ck_assert(memcmp(var, var2, (size_t)k * sizeof *var) == 0);
    ck_assert(memcmp(basis, basis2, (size_t)k * (size_t)d * sizeof *basis) == 0);

    free(basis);
    free(basis2);
    subsae_subspace_free(again);
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
    reference_free(&ref);
    free(x);
}

START_TEST(randomized_top_k_on_decaying_spectra)
{
    check_randomized(GEOMETRIC, 12, 0);
    check_randomized(GEOMETRIC, 30, 5);
    check_randomized(POLYNOMIAL, 12, 1);
    check_randomized(POLYNOMIAL, 16, 2);
}
END_TEST

/* The Rayleigh-Ritz matrix comes from the last pass's Z = Y Q alone (Z^T Z
 * with the rank-one centring correction on l x l): with a mean 1,000 times
 * the spread and a partial last batch, the top-k variances stay within
 * 1e-3 relative of LAPACK's, both when Q is a subspace (k + p < d) and
 * when it spans everything (k + p >= d, no power iterations). */
START_TEST(randomized_ritz_pass_on_a_large_mean)
{
    const int64_t n = 2500;
    const int64_t shapes[][2] = {{128, 16}, {32, 24}}; /* d, k */
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const int64_t d = shapes[c][0], k = shapes[c][1];
        double sigma[128];
        make_sigma(POLYNOMIAL, d, sigma);
        float *x = make_matrix(n, d, sigma, 1000.0, 41 + (uint64_t)c);
        struct reference ref = reference_spectrum(x, n, d, true);
        subsae_subspace *s = fit(x, n, d, SUBSAE_METHOD_RANDOMIZED, k, 700);
        double var[128];
        ck_assert_ok(subsae_subspace_variances(s, var, k));
        for (int64_t i = 0; i < k; i++)
            ck_assert_msg(fabs(var[i] - ref.values[i]) <= 1e-3 * ref.values[i],
                          "d %lld k %lld: variance %lld %.9g vs LAPACK %.9g", (long long)d,
                          (long long)k, (long long)i, var[i], ref.values[i]);
        subsae_subspace_free(s);
        reference_free(&ref);
        free(x);
    }
}
END_TEST

/* Rank cut-off at 20: k = 24 covers the 99 % rank, k = 10 does not and
 * must say so. */
START_TEST(randomized_flags_ranks_beyond_k)
{
    const int64_t n = 2500, d = 96;
    double sigma[96];
    make_sigma(CUTOFF, d, sigma);
    float *x = make_matrix(n, d, sigma, 0.0, 5);
    struct reference ref = reference_spectrum(x, n, d, true);
    int64_t want = hand_effective_rank(ref.values, d, 0.99);
    ck_assert_int_eq(want, 20);

    subsae_subspace *s = fit(x, n, d, SUBSAE_METHOD_RANDOMIZED, 24, 0);
    int64_t r;
    int exact;
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.99, &r, &exact));
    ck_assert_int_eq(r, 20);
    ck_assert_int_eq(exact, 1);
    double var[24];
    ck_assert_ok(subsae_subspace_variances(s, var, 24));
    for (int i = 0; i < 20; i++)
        ck_assert_double_eq_tol(var[i], ref.values[i], 1e-5 * ref.values[i]);
    for (int i = 20; i < 24; i++)
        ck_assert(var[i] < 1e-6 * var[0]);
    subsae_subspace_free(s);

    s = fit(x, n, d, SUBSAE_METHOD_RANDOMIZED, 10, 0);
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.99, &r, &exact));
    ck_assert_int_eq(r, 11);
    ck_assert_int_eq(exact, 0);
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.4, &r, &exact));
    ck_assert_int_eq(r, hand_effective_rank(ref.values, d, 0.4));
    ck_assert_int_eq(exact, 1);
    subsae_subspace_free(s);

    /* k + p >= d: the whole spectrum, exact ranks. */
    s = fit(x, n, d, SUBSAE_METHOD_RANDOMIZED, 90, 0);
    int64_t found;
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &found));
    ck_assert_int_eq(found, d);
    double all[96];
    ck_assert_ok(subsae_subspace_variances(s, all, d));
    ck_assert_msg(spectrum_error(all, ref.values, d) <= 1.0, "complete randomized spectrum");
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.99, &r, &exact));
    ck_assert_int_eq(r, 20);
    ck_assert_int_eq(exact, 1);
    double er;
    ck_assert_ok(subsae_subspace_entropy_rank(s, &er, &exact));
    ck_assert_int_eq(exact, 1);
    subsae_subspace_free(s);
    reference_free(&ref);
    free(x);
}
END_TEST

/* The shift of the power passes stays below the eigenvalues past the l-th
 * when a gap follows them (l = k + p = 26 variances in [1, 2], the other
 * 102 at 1e-3): the top-k variances are LAPACK's to float32 rounding, as
 * unshifted passes give them. */
START_TEST(randomized_shift_with_a_gap_after_l)
{
    const int64_t n = 2500, d = 128, k = 16, l = 26;
    double sigma[128];
    for (int64_t i = 0; i < d; i++)
        sigma[i] = sqrt(i < l ? 2.0 - (double)i / (double)(l - 1) : 1e-3);
    float *x = make_matrix(n, d, sigma, 0.0, 77);
    struct reference ref = reference_spectrum(x, n, d, true);
    subsae_subspace *s = fit(x, n, d, SUBSAE_METHOD_RANDOMIZED, k, 700);
    double var[16];
    ck_assert_ok(subsae_subspace_variances(s, var, k));
    for (int64_t i = 0; i < k; i++)
        ck_assert_msg(fabs(var[i] - ref.values[i]) <= 1e-5 * ref.values[i],
                      "variance %lld %.9g vs LAPACK %.9g", (long long)i, var[i], ref.values[i]);
    subsae_subspace_free(s);
    reference_free(&ref);
    free(x);
}
END_TEST

/* ---- choice of method, centring ------------------------------------- */

static int auto_choice(const float *x, int64_t n, int64_t d, int64_t k)
{
    subsae_subspace *s = fit(x, n, d, SUBSAE_METHOD_AUTO, k, 0);
    int64_t used;
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &used));
    subsae_subspace_free(s);
    return (int)used;
}

START_TEST(auto_picks_the_cheaper_method)
{
    /* The choice follows the cost model ... */
    const int64_t n = 3000, d = 512;
    double *sigma = malloc((size_t)d * sizeof *sigma);
    ck_assert_ptr_nonnull(sigma);
    make_sigma(GEOMETRIC, d, sigma);
    float *x = make_matrix(n, d, sigma, 0.0, 9);
    const int64_t ks[] = {0, 2, 8, 64, 400, 505};
    int picked[2] = {0, 0};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        int64_t k = ks[i] ? ks[i] : d;
        int want = ks[i] == 0 || k + 10 >= d ||
                           subsae__subspace_exact_cost(n, d) <=
                               subsae__subspace_randomized_cost(n, d, k, 10, 3)
                       ? SUBSAE_METHOD_EXACT
                       : SUBSAE_METHOD_RANDOMIZED;
        ck_assert_int_eq(auto_choice(x, n, d, ks[i]), want);
        picked[want == SUBSAE_METHOD_RANDOMIZED]++;
    }
    /* ... which chooses each method somewhere: randomized for k << d. */
    ck_assert_int_eq(auto_choice(x, n, d, 2), SUBSAE_METHOD_RANDOMIZED);
    ck_assert_int_gt(picked[0], 0);
    ck_assert_int_gt(picked[1], 0);
    /* The bench shape (65,536 x 1,024, k = 128) and small k at d = 1,024:
     * exact (measured 0.7 s against 1.9 s and 0.9 s); d = 4,096, k = 16:
     * randomized. */
    ck_assert(subsae__subspace_randomized_cost(65536, 1024, 128, 10, 3) >
              subsae__subspace_exact_cost(65536, 1024));
    ck_assert(subsae__subspace_randomized_cost(65536, 1024, 4, 10, 3) >
              subsae__subspace_exact_cost(65536, 1024));
    ck_assert(subsae__subspace_randomized_cost(16384, 4096, 16, 10, 3) <
              subsae__subspace_exact_cost(16384, 4096));
    free(x);
    free(sigma);
}
END_TEST

START_TEST(uncentred_spectrum_is_the_second_moment)
{
    const int64_t n = 1500, d = 32;
    double sigma[32];
    make_sigma(POLYNOMIAL, d, sigma);
    float *x = make_matrix(n, d, sigma, 0.5, 3);
    struct reference ref = reference_spectrum(x, n, d, false);
    for (int method = SUBSAE_METHOD_EXACT; method <= SUBSAE_METHOD_RANDOMIZED; method++) {
        subsae_buffer *buf = NULL;
        ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
        subsae_subspace *s = NULL;
        ck_assert_ok(subsae_subspace_create(&s));
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_CENTER, 0));
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method));
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, 8));
        ck_assert_ok(subsae_subspace_fit(s, buf));
        double var[8], total;
        float mean[32];
        ck_assert_ok(subsae_subspace_variances(s, var, 8));
        ck_assert_ok(subsae_subspace_total_variance(s, &total));
        ck_assert_ok(subsae_subspace_mean(s, mean));
        ck_assert_msg(spectrum_error(var, ref.values, 8) <= 1.0, "method %d", method);
        ck_assert_double_eq_tol(total, ref.total, 1e-9 * ref.total);
        for (int64_t j = 0; j < d; j++)
            ck_assert_float_eq(mean[j], 0.0f);
        subsae_subspace_free(s);
        subsae_buffer_free(buf);
    }
    reference_free(&ref);
    free(x);
}
END_TEST

/* Float16 input is widened, and the spectrum is that of the widened data. */
START_TEST(half_precision_input)
{
    const int64_t n = 1200, d = 24;
    double sigma[24];
    make_sigma(GEOMETRIC, d, sigma);
    float *x = make_matrix(n, d, sigma, 0.0, 4);
    uint16_t *h = malloc((size_t)n * (size_t)d * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (int64_t i = 0; i < n * d; i++) {
        h[i] = subsae__f32_to_f16(x[i]);
        x[i] = subsae__f16_to_f32(h[i]);
    }
    struct reference ref = reference_spectrum(x, n, d, true);
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(h, SUBSAE_DTYPE_F16, n, d, d, SUBSAE_BORROW, &buf));
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));
    ck_assert_ok(subsae_subspace_fit(s, buf));
    double var[24];
    ck_assert_ok(subsae_subspace_variances(s, var, d));
    ck_assert(spectrum_error(var, ref.values, d) <= 1.0);
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
    reference_free(&ref);
    free(h);
    free(x);
}
END_TEST

/* ---- projections ---------------------------------------------------- */

START_TEST(project_reconstruct_round_trip)
{
    const int64_t n = 800, d = 48;
    double sigma[48];
    make_sigma(CUTOFF, d, sigma); /* rank 20 around a mean */
    float *x = make_matrix(n, d, sigma, 2.0, 8);
    subsae_subspace *s = fit(x, n, d, SUBSAE_METHOD_EXACT, 0, 0);
    float mean[48], *basis = malloc((size_t)d * (size_t)d * sizeof(float));
    ck_assert_ptr_nonnull(basis);
    ck_assert_ok(subsae_subspace_mean(s, mean));
    ck_assert_ok(subsae_subspace_basis(s, d, basis, d));

    /* Coordinates against a hand computation, with padded strides. */
    const int64_t rows = 37, k = 20, cs = 23, xs = 50;
    float *coords = malloc((size_t)rows * cs * sizeof(float));
    float *back = malloc((size_t)rows * xs * sizeof(float));
    ck_assert(coords && back);
    ck_assert_ok(subsae_subspace_project(s, x, rows, d, k, coords, cs));
    double scale = 0.0;
    for (int64_t i = 0; i < rows * d; i++)
        scale = fmax(scale, fabs((double)x[i] - mean[i % d]));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t r = 0; r < k; r++) {
            double c = 0.0;
            for (int64_t j = 0; j < d; j++)
                c += ((double)x[i * d + j] - mean[j]) * basis[r * d + j];
            ck_assert_msg(fabs(coords[i * cs + r] - c) <= 1e-5 * scale, "coord %lld,%lld",
                          (long long)i, (long long)r);
        }
    /* The data has rank 20: 20 coordinates give the rows back. */
    ck_assert_ok(subsae_subspace_reconstruct(s, coords, rows, cs, k, back, xs));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < d; j++)
            ck_assert_msg(fabs(back[i * xs + j] - x[i * d + j]) <= 1e-5 * (scale + 2.0),
                          "row %lld col %lld: %g vs %g", (long long)i, (long long)j,
                          back[i * xs + j], x[i * d + j]);
    /* Fewer directions lose exactly the dropped coordinates' energy. */
    ck_assert_ok(subsae_subspace_reconstruct(s, coords, rows, cs, 10, back, xs));
    for (int64_t i = 0; i < rows; i++) {
        double lost = 0.0, dropped = 0.0;
        for (int64_t j = 0; j < d; j++)
            lost += pow(back[i * xs + j] - x[i * d + j], 2);
        for (int64_t r = 10; r < 20; r++)
            dropped += pow(coords[i * cs + r], 2);
        ck_assert_double_eq_tol(lost, dropped, 1e-4 * (dropped + 1e-3));
    }
    ck_assert_ok(subsae_subspace_project(s, NULL, 0, d, k, NULL, k));
    ck_assert_ok(subsae_subspace_reconstruct(s, NULL, 0, k, k, NULL, d));
    free(coords);
    free(back);
    free(basis);
    subsae_subspace_free(s);
    free(x);
}
END_TEST

/* ---- callback ------------------------------------------------------- */

struct progress_log {
    int calls;
    int cancel_at; /* cancel on this call (1-based); 0 never */
    char phase[16];
    int64_t last_done, total;
    bool monotone;
};

static int record_progress(int event, const char *phase, int64_t done, int64_t total,
                           const char *message, void *user)
{
    struct progress_log *log = user;
    ck_assert_int_eq(event, SUBSAE_EVENT_PROGRESS);
    ck_assert_ptr_null(message);
    if (done <= log->last_done)
        log->monotone = false;
    log->last_done = done;
    log->total = total;
    snprintf(log->phase, sizeof log->phase, "%s", phase);
    log->calls++;
    return log->calls == log->cancel_at;
}

START_TEST(progress_and_cancel)
{
    const int64_t n = 1000, d = 16;
    double sigma[16];
    make_sigma(GEOMETRIC, d, sigma);
    float *x = make_matrix(n, d, sigma, 0.0, 2);
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, 300));

    /* Exact: one pass, phase "gram", 4 batches. */
    struct progress_log log = {.monotone = true};
    ck_assert_ok(subsae_subspace_set_callback(s, record_progress, &log));
    ck_assert_ok(subsae_subspace_fit(s, buf));
    ck_assert_int_eq(log.calls, 4);
    ck_assert_str_eq(log.phase, "gram");
    ck_assert_int_eq(log.last_done, n);
    ck_assert_int_eq(log.total, n);
    ck_assert(log.monotone);

    /* Randomized: q + 1 passes, phase "power". */
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, SUBSAE_METHOD_RANDOMIZED));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, 3));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_POWER_ITERS, 2));
    log = (struct progress_log){.monotone = true};
    ck_assert_ok(subsae_subspace_fit(s, buf));
    ck_assert_int_eq(log.calls, 3 * 4);
    ck_assert_str_eq(log.phase, "power");
    ck_assert_int_eq(log.last_done, 3 * n);
    ck_assert_int_eq(log.total, 3 * n);
    ck_assert(log.monotone);

    /* Cancel mid-way in each method: CANCELLED, unfitted, still usable. */
    for (int method = SUBSAE_METHOD_EXACT; method <= SUBSAE_METHOD_RANDOMIZED; method++) {
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method));
        log = (struct progress_log){.monotone = true, .cancel_at = 2};
        ck_assert_status(subsae_subspace_fit(s, buf), SUBSAE_E_CANCELLED);
        ck_assert_int_eq(subsae_last_error_reason(), SUBSAE_REASON_CANCELLED);
        ck_assert_int_eq(log.calls, 2);
        int64_t value;
        double v;
        ck_assert_status(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK_FOUND, &value),
                         SUBSAE_E_STATE);
        ck_assert_status(subsae_subspace_variances(s, &v, 1), SUBSAE_E_STATE);
        ck_assert_ok(subsae_subspace_set_callback(s, NULL, NULL));
        ck_assert_ok(subsae_subspace_fit(s, buf));
        ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &value));
        ck_assert_int_eq(value, method);
        ck_assert_ok(subsae_subspace_set_callback(s, record_progress, &log));
    }
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
    free(x);
}
END_TEST

/* ---- bad arguments, states, data ------------------------------------ */

START_TEST(bad_arguments)
{
    subsae_subspace_free(NULL);
    ck_assert_status(subsae_subspace_create(NULL), SUBSAE_E_INVALID);
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));

    /* Defaults. */
    int64_t v;
    double dv;
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD, &v));
    ck_assert_int_eq(v, SUBSAE_METHOD_AUTO);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK, &v));
    ck_assert_int_eq(v, 0);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_OVERSAMPLE, &v));
    ck_assert_int_eq(v, 10);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_POWER_ITERS, &v));
    ck_assert_int_eq(v, 3);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_SEED, &v));
    ck_assert_int_eq(v, 0);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_CENTER, &v));
    ck_assert_int_eq(v, 1);
    ck_assert_ok(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, &v));
    ck_assert_int_eq(v, 4096);
    ck_assert_ok(subsae_subspace_get_double(s, SUBSAE_SUBSPACE_THRESHOLD, &dv));
    ck_assert_double_eq(dv, 0.99);

    /* Options: range, type, read-only, unknown. */
    ck_assert_status(subsae_subspace_set_int(NULL, SUBSAE_SUBSPACE_RANK, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, 3), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, -1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_OVERSAMPLE, -1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_POWER_ITERS, -1),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_CENTER, 2), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_BATCH_ROWS, 0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_THRESHOLD, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK_FOUND, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_int(s, 77, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_RANK, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_THRESHOLD, &v), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_get_int(s, -5, &v), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_double(s, SUBSAE_SUBSPACE_THRESHOLD, 0.0),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_double(s, SUBSAE_SUBSPACE_THRESHOLD, 1.5),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_double(s, SUBSAE_SUBSPACE_THRESHOLD, NAN),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_double(s, SUBSAE_SUBSPACE_RANK, 1.0), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_set_double(s, SUBSAE_SUBSPACE_SECONDS, 1.0),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_get_double(s, SUBSAE_SUBSPACE_SEED, &dv), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_subspace_set_double(s, SUBSAE_SUBSPACE_THRESHOLD, 0.9));
    ck_assert_ok(subsae_subspace_get_double(s, SUBSAE_SUBSPACE_THRESHOLD, &dv));
    ck_assert_double_eq(dv, 0.9);
    ck_assert_status(subsae_subspace_set_callback(NULL, NULL, NULL), SUBSAE_E_INVALID);

    /* Results before a fit. */
    double out[4];
    float fout[4];
    int64_t r;
    int exact;
    ck_assert_status(subsae_subspace_get_int(s, SUBSAE_SUBSPACE_METHOD_USED, &v), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_get_double(s, SUBSAE_SUBSPACE_SECONDS, &dv), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_variances(s, out, 1), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_singular_values(s, out, 1), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_explained_ratios(s, out, 1), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_total_variance(s, out), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_mean(s, fout), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_basis(s, 1, fout, 4), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_effective_rank(s, 0.9, &r, &exact), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_entropy_rank(s, out, &exact), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_project(s, fout, 1, 4, 1, fout, 1), SUBSAE_E_STATE);
    ck_assert_status(subsae_subspace_reconstruct(s, fout, 1, 1, 1, fout, 4), SUBSAE_E_STATE);

    /* Fit arguments. */
    float data[3 * 4] = {1, 2, 3, 4, 2, 3, 5, 7, 0, 1, 1, 2};
    subsae_buffer *buf = NULL, *one = NULL;
    ck_assert_ok(subsae_buffer_wrap(data, SUBSAE_DTYPE_F32, 3, 4, 4, SUBSAE_BORROW, &buf));
    ck_assert_ok(subsae_buffer_wrap(data, SUBSAE_DTYPE_F32, 1, 4, 4, SUBSAE_BORROW, &one));
    ck_assert_status(subsae_subspace_fit(NULL, buf), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_fit(s, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_fit(s, one), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, 5));
    ck_assert_status(subsae_subspace_fit(s, buf), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, 0));
    ck_assert_ok(subsae_subspace_fit(s, buf));

    /* Result arguments after a fit. */
    ck_assert_status(subsae_subspace_variances(s, NULL, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_variances(s, out, -1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_variances(s, out, 5), SUBSAE_E_RANGE);
    ck_assert_ok(subsae_subspace_variances(s, NULL, 0));
    ck_assert_status(subsae_subspace_total_variance(s, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_mean(s, NULL), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_basis(s, 2, fout, 3), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_basis(s, 5, fout, 4), SUBSAE_E_RANGE);
    ck_assert_status(subsae_subspace_effective_rank(s, 0.0, &r, &exact), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_effective_rank(s, 1.01, &r, &exact), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_effective_rank(s, NAN, &r, &exact), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_effective_rank(s, 0.9, NULL, &exact), SUBSAE_E_INVALID);
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.9, &r, NULL));
    ck_assert_status(subsae_subspace_entropy_rank(s, NULL, &exact), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_project(s, NULL, 1, 4, 1, fout, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_project(s, data, 1, 4, 1, NULL, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_project(s, data, -1, 4, 1, fout, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_project(s, data, 1, 3, 1, fout, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_project(s, data, 1, 4, 2, fout, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_project(s, data, 1, 4, 0, fout, 1), SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_project(s, data, 1, 4, 5, fout, 5), SUBSAE_E_RANGE);
    ck_assert_status(subsae_subspace_reconstruct(s, fout, 1, 1, 1, fout, 3),
                     SUBSAE_E_INVALID);
    ck_assert_status(subsae_subspace_reconstruct(s, fout, 1, 1, 2, fout, 4), SUBSAE_E_INVALID);

    /* A fit that fails leaves the estimator unfitted. */
    data[5] = NAN;
    ck_assert_status(subsae_subspace_fit(s, buf), SUBSAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(subsae_last_error(), "row 1"));
    ck_assert_status(subsae_subspace_variances(s, out, 1), SUBSAE_E_STATE);
    subsae_buffer_free(buf);
    subsae_buffer_free(one);
    subsae_subspace_free(s);
}
END_TEST

/* Constant rows: no variance; ranks 0, not a division by zero. */
START_TEST(constant_rows)
{
    float data[5 * 3];
    for (int i = 0; i < 15; i++)
        data[i] = (float)(i % 3) + 0.25f;
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(data, SUBSAE_DTYPE_F32, 5, 3, 3, SUBSAE_BORROW, &buf));
    for (int method = SUBSAE_METHOD_EXACT; method <= SUBSAE_METHOD_RANDOMIZED; method++) {
        subsae_subspace *s = NULL;
        ck_assert_ok(subsae_subspace_create(&s));
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method));
        ck_assert_ok(subsae_subspace_fit(s, buf));
        double total, er, ratios[3];
        int64_t r;
        int exact;
        float mean[3];
        ck_assert_ok(subsae_subspace_total_variance(s, &total));
        ck_assert_double_eq(total, 0.0);
        ck_assert_ok(subsae_subspace_effective_rank(s, 0.99, &r, &exact));
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(exact, 1);
        ck_assert_ok(subsae_subspace_entropy_rank(s, &er, NULL));
        ck_assert_double_eq(er, 0.0);
        ck_assert_ok(subsae_subspace_explained_ratios(s, ratios, 3));
        ck_assert_double_eq(ratios[0], 0.0);
        ck_assert_ok(subsae_subspace_mean(s, mean));
        ck_assert_float_eq(mean[2], 2.25f);
        subsae_subspace_free(s);
    }
    subsae_buffer_free(buf);
}
END_TEST

/* Every failed allocation inside a fit returns NOMEM, leaks nothing
 * (checked under the sanitizers) and leaves the estimator usable. */
START_TEST(allocation_failures)
{
    const int64_t n = 600, d = 12;
    double sigma[12];
    make_sigma(GEOMETRIC, d, sigma);
    float *x = make_matrix(n, d, sigma, 1.0, 6);
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    for (int method = SUBSAE_METHOD_EXACT; method <= SUBSAE_METHOD_RANDOMIZED; method++) {
        subsae_subspace *s = NULL;
        ck_assert_ok(subsae_subspace_create(&s));
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method));
        ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, 3));
        int failures = 0;
        for (int64_t at = 0;; at++) {
            subsae__alloc_fail_after(at);
            int rc = subsae_subspace_fit(s, buf);
            subsae__alloc_fail_after(-1);
            if (rc == SUBSAE_OK)
                break;
            ck_assert_int_eq(rc, SUBSAE_E_NOMEM);
            ck_assert_str_ne(subsae_last_error(), "");
            failures++;
            ck_assert_int_lt(failures, 100);
        }
        ck_assert_int_gt(failures, 3);
        float coords[3];
        subsae__alloc_fail_after(0);
        ck_assert_status(subsae_subspace_project(s, x, 1, d, 3, coords, 3), SUBSAE_E_NOMEM);
        subsae__alloc_fail_after(-1);
        ck_assert_ok(subsae_subspace_project(s, x, 1, d, 3, coords, 3));
        subsae_subspace_free(s);
    }
    subsae__alloc_fail_after(0);
    subsae_subspace *none = NULL;
    ck_assert_status(subsae_subspace_create(&none), SUBSAE_E_NOMEM);
    subsae__alloc_fail_after(-1);
    ck_assert_ptr_null(none);
    subsae_buffer_free(buf);
    free(x);
}
END_TEST

/* The streaming reader's sums (parallel over fixed blocks) are the same
 * bits with any thread count; a bad row is reported by its number even when
 * a worker thread met it. */
START_TEST(stream_is_deterministic_across_threads)
{
    const int64_t n = 10000, d = 300;
    float *x = malloc((size_t)n * d * sizeof *x);
    ck_assert_ptr_nonnull(x);
    subsae__rng rng;
    subsae__rng_seed(&rng, 17, 0);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)(50.0 + subsae__rng_normal(&rng));
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_wrap(x, SUBSAE_DTYPE_F32, n, d, d, SUBSAE_BORROW, &buf));
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));
    double *sums[3], *sumsqs[3];
    for (int t = 0; t < 3; t++) {
        struct subsae__subspace_stream st;
        ck_assert_ok(subsae__subspace_stream_init(&st, s, buf, "test", 1));
        st.threads = t + 1;
        ck_assert_int_gt(st.max_blocks, 4);
        for (int64_t first = 0; first < n; first += st.batch_rows) {
            int64_t m = n - first < st.batch_rows ? n - first : st.batch_rows;
            ck_assert_ok(subsae__subspace_stream_read(&st, first, m));
        }
        sums[t] = malloc((size_t)d * sizeof(double));
        sumsqs[t] = malloc((size_t)d * sizeof(double));
        memcpy(sums[t], st.sum, (size_t)d * sizeof(double));
        memcpy(sumsqs[t], st.sumsq, (size_t)d * sizeof(double));
        /* The sums are those of the shifted rows. */
        double want = 0.0;
        for (int64_t i = 0; i < n; i++)
            want += (double)(x[i * d + 7] - st.shift[7]);
        ck_assert_double_eq_tol(st.sum[7], want, 1e-9 * n);
        subsae__subspace_stream_release(&st);
    }
    for (int t = 1; t < 3; t++) {
        ck_assert(memcmp(sums[0], sums[t], (size_t)d * sizeof(double)) == 0);
        ck_assert(memcmp(sumsqs[0], sumsqs[t], (size_t)d * sizeof(double)) == 0);
    }
    for (int t = 0; t < 3; t++) {
        free(sums[t]);
        free(sumsqs[t]);
    }
    /* Non-finite values in two late blocks: the first one is reported. */
    x[7777 * d + 5] = INFINITY;
    x[9999 * d + 1] = NAN;
    subsae_set_num_threads(2);
    ck_assert_status(subsae_subspace_fit(s, buf), SUBSAE_E_NONFINITE);
    ck_assert_msg(strstr(subsae_last_error(), "row 7777") != NULL, "%s", subsae_last_error());
    subsae_set_num_threads(0);
    subsae_subspace_free(s);
    subsae_buffer_free(buf);
    free(x);
}
END_TEST

/* ---- real activations (../shared/data/stories260K) ------------------ */

static const char *const sites[] = {"attn_z", "attn_out", "mlp_in", "mlp_out", "resid_post"};
enum { N_SITES = 5, N_LAYERS = 5 };

static json_t *load_reference(void)
{
    char path[4096];
    if (!harness_shared_file("reference.json", path, sizeof path))
        return NULL;
    json_error_t error;
    json_t *ref = json_load_file(path, 0, &error);
    ck_assert_msg(ref != NULL, "%s: %s (line %d)", path, error.text, error.line);
    return ref;
}

static int64_t json_int_field(json_t *entry, const char *file, const char *field)
{
    json_t *v = json_object_get(entry, field);
    ck_assert_msg(json_is_integer(v), "reference.json: %s has no integer %s", file, field);
    return (int64_t)json_integer_value(v);
}

struct measured {
    int64_t r90, r95, r99;
    int exact90, exact95, exact99;
    double entropy;
    int entropy_exact;
};

static void measure(const subsae_buffer *buf, int method, int64_t k, struct measured *m)
{
    subsae_subspace *s = NULL;
    ck_assert_ok(subsae_subspace_create(&s));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_METHOD, method));
    ck_assert_ok(subsae_subspace_set_int(s, SUBSAE_SUBSPACE_RANK, k));
    ck_assert_ok(subsae_subspace_fit(s, buf));
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.90, &m->r90, &m->exact90));
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.95, &m->r95, &m->exact95));
    ck_assert_ok(subsae_subspace_effective_rank(s, 0.99, &m->r99, &m->exact99));
    ck_assert_ok(subsae_subspace_entropy_rank(s, &m->entropy, &m->entropy_exact));
    subsae_subspace_free(s);
}

/* Every .npy of the data set: exact and randomized (k = 64) reproduce r90,
 * r95, r99 exactly and the entropy rank to 1e-2; then the finding. */
START_TEST(real_activations_match_reference)
{
    json_t *ref = load_reference();
    if (!ref) {
        harness_skip("real_activations_match_reference", "shared data absent");
        return;
    }
    char dir[4096];
    harness_shared_file("", dir, sizeof dir);
    DIR *dp = opendir(dir);
    ck_assert_msg(dp != NULL, "cannot list %s", dir);
    int64_t r99[N_LAYERS][N_SITES];
    memset(r99, -1, sizeof r99);
    int files = 0;
    struct dirent *e;
    /* Under valgrind (some 50 times slower): layer 2 only, exact only. */
    const bool tiny = harness_valgrind();
    while ((e = readdir(dp)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".npy") != 0)
            continue;
        if (tiny && (strncmp(e->d_name, "L2_", 3) != 0 || strstr(e->d_name, "131k")))
            continue;
        json_t *entry = json_object_get(ref, e->d_name);
        ck_assert_msg(entry != NULL, "reference.json has no entry for %s", e->d_name);
        char path[4096];
        harness_shared_file(e->d_name, path, sizeof path);
        subsae_buffer *buf = NULL;
        ck_assert_ok(subsae_buffer_open(path, NULL, &buf));
        ck_assert_int_eq(subsae_buffer_rows(buf), json_int_field(entry, e->d_name, "rows"));
        ck_assert_int_eq(subsae_buffer_dim(buf), json_int_field(entry, e->d_name, "dim"));
        int64_t want90 = json_int_field(entry, e->d_name, "r90");
        int64_t want95 = json_int_field(entry, e->d_name, "r95");
        int64_t want99 = json_int_field(entry, e->d_name, "r99");
        double want_entropy = json_real_value(json_object_get(entry, "entropy_rank"));
        const int methods[2] = {SUBSAE_METHOD_EXACT, SUBSAE_METHOD_RANDOMIZED};
        for (int mi = 0; mi < (tiny ? 1 : 2); mi++) {
            struct measured m;
            measure(buf, methods[mi], methods[mi] == SUBSAE_METHOD_EXACT ? 0 : 64, &m);
            const char *name = mi == 0 ? "exact" : "randomized";
            ck_assert_msg(m.r90 == want90 && m.r95 == want95 && m.r99 == want99,
                          "%s %s: r90/r95/r99 %lld/%lld/%lld, reference %lld/%lld/%lld",
                          e->d_name, name, (long long)m.r90, (long long)m.r95,
                          (long long)m.r99, (long long)want90, (long long)want95,
                          (long long)want99);
            ck_assert_msg(m.exact90 && m.exact95 && m.exact99 && m.entropy_exact,
                          "%s %s: exact flags", e->d_name, name);
            ck_assert_msg(fabs(m.entropy - want_entropy) <= 1e-2,
                          "%s %s: entropy rank %.4f, reference %.3f", e->d_name, name,
                          m.entropy, want_entropy);
            if (mi == 0) {
                int layer = -1;
                char site[32] = "";
                if (sscanf(e->d_name, "L%d_%31[a-z_].npy", &layer, site) == 2 && layer >= 0 &&
                    layer < N_LAYERS && !strstr(e->d_name, "131k"))
                    for (int si = 0; si < N_SITES; si++)
                        if (!strcmp(site, sites[si]))
                            r99[layer][si] = m.r99;
            }
        }
        subsae_buffer_free(buf);
        files++;
    }
    closedir(dp);
    ck_assert_int_ge(files, tiny ? N_SITES : 28);

    /* The finding, and the table for the README. */
    printf("\n  r99 (centred, exact) of stories260K activations, d = 64\n");
    printf("  %-6s", "layer");
    for (int si = 0; si < N_SITES; si++)
        printf("  %10s", sites[si]);
    printf("\n");
    for (int l = 0; l < N_LAYERS; l++) {
        if (tiny && l != 2)
            continue;
        printf("  L%-5d", l);
        for (int si = 0; si < N_SITES; si++) {
            ck_assert_msg(r99[l][si] > 0, "L%d_%s.npy missing", l, sites[si]);
            printf("  %10lld", (long long)r99[l][si]);
        }
        printf("\n");
        const int attn_out = 1;
        const int others[3] = {0, 3, 4}; /* attn_z, mlp_out, resid_post */
        for (int o = 0; o < 3; o++)
            ck_assert_msg(r99[l][attn_out] < r99[l][others[o]],
                          "layer %d: attn_out r99 %lld is not below %s r99 %lld", l,
                          (long long)r99[l][attn_out], sites[others[o]],
                          (long long)r99[l][others[o]]);
    }
    json_decref(ref);
}
END_TEST

/* ---- the command-line program ----------------------------------------- */

static json_t *run_json(const char *arguments)
{
    char out[1024], command[8192];
    harness_tmp_path("rank.json", out, sizeof out);
    snprintf(command, sizeof command, "'%s/bin/subsae' rank %s > '%s'", harness_build_dir(),
             arguments, out);
    ck_assert_msg(harness_run(command) == 0, "failed: %s", command);
    json_error_t error;
    json_t *root = json_load_file(out, 0, &error);
    ck_assert_msg(root != NULL, "%s: not JSON: %s", command, error.text);
    return root;
}

START_TEST(cli_rank_reports)
{
    json_t *ref = load_reference();
    if (!ref) {
        harness_skip("cli_rank_reports", "shared data absent");
        return;
    }
    char a[1024], b[1024], arguments[4096];
    harness_shared_file("L1_attn_out.npy", a, sizeof a);
    harness_shared_file("L1_mlp_out.npy", b, sizeof b);
    const char *names[2] = {"L1_attn_out.npy", "L1_mlp_out.npy"};
    const char *methods[2] = {"exact", "randomized --rank 64"};
    for (int mi = 0; mi < 2; mi++) {
        snprintf(arguments, sizeof arguments, "'%s' '%s' --json --method %s", a, b, methods[mi]);
        json_t *root = run_json(arguments);
        json_t *reports = json_object_get(root, "reports");
        ck_assert_int_eq(json_array_size(reports), 2);
        for (size_t i = 0; i < 2; i++) {
            json_t *r = json_array_get(reports, i);
            json_t *want = json_object_get(ref, names[i]);
            ck_assert_str_eq(json_string_value(json_object_get(r, "path")), i ? b : a);
            ck_assert_int_eq(json_integer_value(json_object_get(r, "rows")), 16384);
            ck_assert_int_eq(json_integer_value(json_object_get(r, "dim")), 64);
            ck_assert_str_eq(json_string_value(json_object_get(r, "method")),
                             mi ? "randomized" : "exact");
            ck_assert(json_is_true(json_object_get(r, "centered")));
            ck_assert_double_eq(json_real_value(json_object_get(r, "threshold")), 0.99);
            ck_assert_int_eq(json_integer_value(json_object_get(r, "effective_rank")),
                             json_integer_value(json_object_get(want, "r99")));
            ck_assert_double_eq_tol(json_real_value(json_object_get(r, "effective_rank_ratio")),
                                    json_real_value(json_object_get(want, "r99_ratio")), 1e-4);
            ck_assert(json_is_true(json_object_get(r, "effective_rank_exact")));
            ck_assert_double_eq_tol(json_real_value(json_object_get(r, "entropy_rank")),
                                    json_real_value(json_object_get(want, "entropy_rank")), 1e-2);
            ck_assert(json_real_value(json_object_get(r, "total_variance")) > 0.0);
            json_t *ranks = json_object_get(r, "effective_ranks");
            ck_assert_int_eq(json_integer_value(json_object_get(ranks, "0.9")),
                             json_integer_value(json_object_get(want, "r90")));
            ck_assert_int_eq(json_integer_value(json_object_get(ranks, "0.95")),
                             json_integer_value(json_object_get(want, "r95")));
            json_t *variances = json_object_get(r, "variances");
            ck_assert_int_eq(json_array_size(variances), 64);
            /* variances share of the total, against the reference's top 8 */
            double total = json_real_value(json_object_get(r, "total_variance"));
            json_t *share = json_object_get(want, "top_variance_share");
            for (size_t t = 0; t < 8; t++)
                ck_assert_double_eq_tol(json_real_value(json_array_get(variances, t)) / total,
                                        json_real_value(json_array_get(share, t)), 2e-6);
            ck_assert(json_real_value(json_object_get(r, "seconds")) >= 0.0);
        }
        json_decref(root);
    }

    /* --concat: one report over both files; a low --rank flags the bound. */
    snprintf(arguments, sizeof arguments, "'%s' '%s' --json --concat --threshold 0.9", a, b);
    json_t *root = run_json(arguments);
    json_t *r = json_array_get(json_object_get(root, "reports"), 0);
    ck_assert_int_eq(json_array_size(json_object_get(root, "reports")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "rows")), 2 * 16384);
    ck_assert_double_eq(json_real_value(json_object_get(r, "threshold")), 0.9);
    json_decref(root);
    snprintf(arguments, sizeof arguments, "'%s' --json --method randomized --rank 8 --seed 3", a);
    root = run_json(arguments);
    r = json_array_get(json_object_get(root, "reports"), 0);
    ck_assert(json_is_false(json_object_get(r, "effective_rank_exact")));
    ck_assert_int_eq(json_integer_value(json_object_get(r, "effective_rank")), 9);
    ck_assert_int_eq(json_array_size(json_object_get(r, "variances")), 8);
    json_decref(root);

    /* A safetensors file: --tensor names the tensor; an unknown name fails. */
    char st[1024];
    harness_tmp_path("acts.safetensors", st, sizeof st);
    subsae_buffer *buf = NULL;
    ck_assert_ok(subsae_buffer_open(a, NULL, &buf));
    ck_assert_ok(subsae_buffer_save_safetensors(buf, st, "acts", SUBSAE_DTYPE_F16));
    subsae_buffer_free(buf);
    snprintf(arguments, sizeof arguments, "'%s' --json --tensor acts", st);
    root = run_json(arguments);
    r = json_array_get(json_object_get(root, "reports"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "effective_rank")),
                     json_integer_value(json_object_get(json_object_get(ref, names[0]), "r99")));
    json_decref(root);

    /* Table, CSV and plot. */
    char csv[1024], png[1024], txt[1024], command[16384];
    harness_tmp_path("spectra.csv", csv, sizeof csv);
    harness_tmp_path("curves.png", png, sizeof png);
    harness_tmp_path("table.txt", txt, sizeof txt);
    snprintf(command, sizeof command, "'%s/bin/subsae' rank '%s' '%s' --csv '%s' > '%s'",
             harness_build_dir(), a, b, csv, txt);
    ck_assert_int_eq(harness_run(command), 0);
    snprintf(command, sizeof command,
             "grep -q 'r99' '%s' && grep -q '^%s .* 16384 .* 64 .* 45 .* 0.703' '%s' && "
             "test $(wc -l < '%s') -eq 129 && head -1 '%s' | grep -q "
             "'^path,index,variance,explained_ratio,cumulative_ratio$' && "
             "tail -1 '%s' | grep -q ',64,.*,1$'",
             txt, a, txt, csv, csv, csv);
    ck_assert_msg(harness_run(command) == 0, "table or CSV content: %s", command);
    if (harness_run("command -v gnuplot > /dev/null") == 0) {
        snprintf(command, sizeof command,
                 "'%s/bin/subsae' rank '%s' '%s' --plot '%s' > /dev/null && "
                 "head -c 8 '%s' | od -An -c | grep -q 'P   N   G'",
                 harness_build_dir(), a, b, png, png);
        ck_assert_msg(harness_run(command) == 0, "--plot did not write a PNG");
    } else {
        harness_skip("cli_rank_reports --plot", "gnuplot not installed");
    }
    /* Without gnuplot in PATH: a clear error before any work. */
    snprintf(command, sizeof command,
             "PATH=/nonexistent '%s/bin/subsae' rank '%s' --plot '%s' 2>&1 >/dev/null | "
             "grep -q 'gnuplot'",
             harness_build_dir(), a, png);
    ck_assert_int_eq(harness_run(command), 0);

    /* Errors: one line on stderr, non-zero exit. */
    char bad_tensor[1100];
    snprintf(bad_tensor, sizeof bad_tensor, "'%s' --tensor nope", st);
    const char *bad[] = {"--json", "'%s' --method fast", "'%s' --threshold 1.5", bad_tensor,
                         "'%s' --rank 65", "'%s' --rank", "'%s' --bogus",
                         "/nonexistent/file.npy"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[2048];
        snprintf(args, sizeof args, bad[i], a);
        snprintf(command, sizeof command,
                 "'%s/bin/subsae' rank %s > /dev/null 2> '%s'; rc=$?; "
                 "test $rc -ne 0 && test $(wc -l < '%s') -eq 1",
                 harness_build_dir(), args, txt, txt);
        ck_assert_msg(harness_run(command) == 0, "expected one error line: rank %s", args);
    }
    json_decref(ref);
}
END_TEST

static Suite *make_suite(void);

SUBSAE_SUITE(subspace)
{
    return make_suite();
}

static Suite *make_suite(void)
{
    Suite *s = suite_create("subspace");
    TCase *tc = harness_case(s, "exact", 60);
    tcase_add_test(tc, exact_matches_lapack_on_known_spectra);
    tc = harness_case(s, "randomized", 60);
    tcase_add_test(tc, randomized_top_k_on_decaying_spectra);
    tcase_add_test(tc, randomized_flags_ranks_beyond_k);
    tcase_add_test(tc, randomized_ritz_pass_on_a_large_mean);
    tcase_add_test(tc, randomized_shift_with_a_gap_after_l);
    tc = harness_case(s, "api", 60);
    tcase_add_test(tc, auto_picks_the_cheaper_method);
    tcase_add_test(tc, uncentred_spectrum_is_the_second_moment);
    tcase_add_test(tc, half_precision_input);
    tcase_add_test(tc, project_reconstruct_round_trip);
    tcase_add_test(tc, progress_and_cancel);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, constant_rows);
    tcase_add_test(tc, allocation_failures);
    tcase_add_test(tc, stream_is_deterministic_across_threads);
    tc = harness_case(s, "real_data", 120);
    tcase_add_test(tc, real_activations_match_reference);
    tcase_add_test(tc, cli_rank_reports);
    return s;
}
