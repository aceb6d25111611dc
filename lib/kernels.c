/* Inner loops of encoding and training (see kernels.h). On x86-64 with GCC
 * the hot loops exist in AVX-512 and AVX2 variants chosen at run time
 * (explicit dispatch on the CPU's features), and a portable fallback. The vector
 * variants compute exactly the same comparisons and sums in the same order
 * per element as the scalar code wherever selection depends on it. */
#include "kernels.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SUBSAE_X86 1
#include <immintrin.h>
#else
#define SUBSAE_X86 0
#endif

/* 2: AVX-512F, 1: AVX2, 0: baseline. */
static inline int cpu_level(void)
{
#if SUBSAE_X86
    if (__builtin_cpu_supports("avx512f"))
        return 2;
    if (__builtin_cpu_supports("avx2"))
        return 1;
#endif
    return 0;
}

/* Variants of a loop kernel: the body is an always-inline function, and
 * thin wrappers compiled for AVX-512 and AVX2 inline it so that GCC
 * vectorises it for each (plain target attributes: unlike target_clones
 * they keep the symbols hidden). */
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#if SUBSAE_X86
#define VARIANTS(ret, name, params, args)                              \
    __attribute__((target("avx512f"))) static ret name##_avx512 params \
    {                                                                  \
        return name##_body args;                                       \
    }                                                                  \
    __attribute__((target("avx2"))) static ret name##_avx2 params      \
    {                                                                  \
        return name##_body args;                                       \
    }                                                                  \
    static ret name##_generic params                                   \
    {                                                                  \
        return name##_body args;                                       \
    }                                                                  \
    ret subsae__##name params                                          \
    {                                                                  \
        switch (cpu_level()) {                                         \
        case 2: return name##_avx512 args;                             \
        case 1: return name##_avx2 args;                               \
        default: return name##_generic args;                           \
        }                                                              \
    }
#else
#define VARIANTS(ret, name, params, args) \
    ret subsae__##name params             \
    {                                     \
        return name##_body args;          \
    }
#endif

/* ---- top-k ------------------------------------------------------------ */

/* First j' >= j with row[j'] + bias[j'] > thr (bias may be NULL), or m. */
static int64_t next_above_scalar(const float *row, const float *bias, int64_t j, int64_t m,
                                 float thr)
{
    if (bias) {
        for (; j < m; j++)
            if (row[j] + bias[j] > thr)
                return j;
    } else {
        for (; j < m; j++)
            if (row[j] > thr)
                return j;
    }
    return m;
}

#if SUBSAE_X86
/* next_above for one vector width, written once and instantiated for
 * AVX-512 (V __m512, P _mm512, 16 lanes) and AVX2 (__m256, _mm256, 8):
 * two vectors a step; GT gives the lanes of x above t as bits. */
#define LOAD_ROW(P, k) P##_loadu_ps(row + (k))
#define LOAD_BIASED(P, k) P##_add_ps(P##_loadu_ps(row + (k)), P##_loadu_ps(bias + (k)))

#define NEXT_ABOVE_STEPS(V, P, LANES, GT, LOAD)         \
    for (; j + 2 * LANES <= m; j += 2 * LANES) {        \
        V a = LOAD(P, j);                               \
        V b = LOAD(P, j + LANES);                       \
        uint32_t mask = GT(a, t) | (GT(b, t) << LANES); \
        if (mask)                                       \
            return j + __builtin_ctz(mask);             \
    }

#define NEXT_ABOVE(TARGET, NAME, V, P, LANES, GT)                                            \
    __attribute__((target(TARGET))) static int64_t NAME(const float *row, const float *bias, \
                                                        int64_t j, int64_t m, float thr)     \
    {                                                                                        \
        const V t = P##_set1_ps(thr);                                                        \
        if (bias) {                                                                          \
            NEXT_ABOVE_STEPS(V, P, LANES, GT, LOAD_BIASED)                                   \
        } else {                                                                             \
            NEXT_ABOVE_STEPS(V, P, LANES, GT, LOAD_ROW)                                      \
        }                                                                                    \
        return next_above_scalar(row, bias, j, m, thr);                                      \
    }

#define GT_MASK512(x, t) ((uint32_t)_mm512_cmp_ps_mask((x), (t), _CMP_GT_OQ))
#define GT_MASK256(x, t) ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps((x), (t), _CMP_GT_OQ)))

NEXT_ABOVE("avx512f", next_above_avx512, __m512, _mm512, 16, GT_MASK512)
NEXT_ABOVE("avx2", next_above_avx2, __m256, _mm256, 8, GT_MASK256)
#endif

typedef int64_t (*next_above_fn)(const float *, const float *, int64_t, int64_t, float);

static next_above_fn pick_next_above(void)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2: return next_above_avx512;
    case 1: return next_above_avx2;
    default: break;
    }
#endif
    return next_above_scalar;
}

/* a beats b: larger key, ties to the lower index. */
static inline bool beats(float ka, int32_t ia, float kb, int32_t ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

static inline float key_at(const float *row, const float *bias, const float *weight, int64_t j)
{
    float v = bias ? row[j] + bias[j] : row[j];
    return weight ? v * weight[j] : v;
}

/* Insert (key, j) into the sorted (descending) list of `len` entries,
 * keeping at most `cap` entries. j is larger than every index already in
 * the list, so it goes after the entries with an equal key. */
static inline void sorted_insert(float *keys, int32_t *idx, int64_t len, int64_t cap, float key,
                                 int32_t j)
{
    int64_t pos = len < cap ? len : cap - 1;
    while (pos > 0 && keys[pos - 1] < key) {
        if (pos < cap) {
            keys[pos] = keys[pos - 1];
            idx[pos] = idx[pos - 1];
        }
        pos--;
    }
    keys[pos] = key;
    idx[pos] = j;
}

/* Min-heap on "worst first" (the entry every other entry beats). */
static void sift_down(float *keys, int32_t *idx, int64_t n, int64_t i)
{
    for (;;) {
        int64_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && beats(keys[worst], idx[worst], keys[l], idx[l]))
            worst = l;
        if (r < n && beats(keys[worst], idx[worst], keys[r], idx[r]))
            worst = r;
        if (worst == i)
            return;
        float tk = keys[i];
        int32_t ti = idx[i];
        keys[i] = keys[worst];
        idx[i] = idx[worst];
        keys[worst] = tk;
        idx[worst] = ti;
        i = worst;
    }
}

enum { SORTED_LIST_MAX = 48 };

#if SUBSAE_X86
/* A full sorted list of k <= 16 entries held in two vectors (keys, lane g
 * the entry g; lanes from k on unused) while a chunk is scanned. */
struct list16 {
    __m512 keys;
    __m512i idx;
    __m512i last;    /* k - 1 in every lane */
    __mmask16 probe; /* lanes 0 .. k - 2 */
};

/* sorted_insert of (key, id) into a full list: the scalar loop stops below
 * the highest entry g <= k - 2 that is not below key (an unordered compare
 * counts as not below, as `keys[pos - 1] < key` does), so key goes just
 * after it, the entries above move up one lane and the last drops out. The
 * list's new last key in every lane. */
__attribute__((target("avx512f"))) static inline __m512 list16_insert(struct list16 *l,
                                                                      __m512 key, __m512i id)
{
    const __mmask16 stay = _mm512_mask_cmp_ps_mask(l->probe, l->keys, key, _CMP_NLT_UQ);
    const unsigned pos = stay ? 32u - (unsigned)__builtin_clz((unsigned)stay) : 0u;
    const __mmask16 at = (__mmask16)(1u << pos), moved = (__mmask16)(0xfffeu << pos);
    const __m512i kup = _mm512_alignr_epi32(_mm512_castps_si512(l->keys),
                                            _mm512_setzero_si512(), 15);
    const __m512i iup = _mm512_alignr_epi32(l->idx, _mm512_setzero_si512(), 15);
    l->keys = _mm512_mask_mov_ps(_mm512_mask_mov_ps(l->keys, moved, _mm512_castsi512_ps(kup)),
                                 at, key);
    l->idx = _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(l->idx, moved, iup), at, id);
    return _mm512_permutexvar_ps(l->last, l->keys);
}

/* The lanes `hit` of x (entries j ..) into the list in lane order, each
 * against the threshold the inserts before it left. The new threshold. */
__attribute__((target("avx512f"))) static inline __m512 list16_hits(struct list16 *l, __m512 x,
                                                                    __mmask16 hit, int64_t j,
                                                                    __m512 thr)
{
    while (hit) {
        const unsigned lane = (unsigned)__builtin_ctz((unsigned)hit);
        const __m512i at = _mm512_set1_epi32((int)lane);
        thr = list16_insert(l, _mm512_permutexvar_ps(at, x),
                            _mm512_set1_epi32((int)(j + lane)));
        hit &= (__mmask16)(0xfffeu << lane) & _mm512_cmp_ps_mask(x, thr, _CMP_GT_OQ);
    }
    return thr;
}

/* The same for a full list of 16 < k <= 48 entries in three vectors
 * each (entry g in lane g % 16 of vector g / 16). */
struct list48 {
    __m512 keys[3];
    __m512i idx[3];
    __m512i last;   /* (k - 1) % 16 in every lane */
    int last_vec;   /* (k - 1) / 16 */
    uint64_t probe; /* entries 0 .. k - 2 */
};

__attribute__((target("avx512f"))) static inline __m512 list48_insert(struct list48 *l,
                                                                      __m512 key, __m512i id)
{
    uint64_t stay = 0;
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++)
        stay |= (uint64_t)_mm512_mask_cmp_ps_mask((__mmask16)(l->probe >> (16 * v)), l->keys[v],
                                                  key, _CMP_NLT_UQ)
                << (16 * v);
    const unsigned pos = stay ? 64u - (unsigned)__builtin_clzll(stay) : 0u;
    const uint64_t at = (uint64_t)1 << pos, moved = ~(uint64_t)0 << pos << 1;
    __m512i kup[3], iup[3];
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++) {
        const __m512i below = v ? _mm512_castps_si512(l->keys[v - 1]) : _mm512_setzero_si512();
        kup[v] = _mm512_alignr_epi32(_mm512_castps_si512(l->keys[v]), below, 15);
        iup[v] = _mm512_alignr_epi32(l->idx[v], v ? l->idx[v - 1] : _mm512_setzero_si512(), 15);
    }
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++) {
        const __mmask16 mv = (__mmask16)(moved >> (16 * v)), av = (__mmask16)(at >> (16 * v));
        l->keys[v] = _mm512_mask_mov_ps(
            _mm512_mask_mov_ps(l->keys[v], mv, _mm512_castsi512_ps(kup[v])), av, key);
        l->idx[v] = _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(l->idx[v], mv, iup[v]), av, id);
    }
    const __m512 top = l->last_vec == 2   ? l->keys[2]
                       : l->last_vec == 1 ? l->keys[1]
                                          : l->keys[0];
    return _mm512_permutexvar_ps(l->last, top);
}

__attribute__((target("avx512f"))) static inline __m512 list48_hits(struct list48 *l, __m512 x,
                                                                    __mmask16 hit, int64_t j,
                                                                    __m512 thr)
{
    while (hit) {
        const unsigned lane = (unsigned)__builtin_ctz((unsigned)hit);
        const __m512i at = _mm512_set1_epi32((int)lane);
        thr = list48_insert(l, _mm512_permutexvar_ps(at, x),
                            _mm512_set1_epi32((int)(j + lane)));
        hit &= (__mmask16)(0xfffeu << lane) & _mm512_cmp_ps_mask(x, thr, _CMP_GT_OQ);
    }
    return thr;
}

#define LOAD16(mask, at)                                            \
    (bias ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, row + (at)),  \
                          _mm512_maskz_loadu_ps(mask, bias + (at))) \
          : _mm512_maskz_loadu_ps(mask, row + (at)))

/* The scan of a chunk's entries j .. count - 1 into list `l` by HITS
 * (list16_hits or list48_hits), two vectors at a time while both are
 * whole: the one loop of the two list sizes. */
#define SCAN_CHUNK(HITS)                                                                     \
    do {                                                                                     \
        for (; j + 32 <= count; j += 32) {                                                   \
            const __m512 a = LOAD16(0xffff, j), b = LOAD16(0xffff, j + 16);                  \
            const __mmask16 ha = _mm512_cmp_ps_mask(a, thr, _CMP_GT_OQ);                     \
            if (!(ha | _mm512_cmp_ps_mask(b, thr, _CMP_GT_OQ)))                              \
                continue;                                                                    \
            thr = HITS(&l, a, ha, j0 + j, thr);                                              \
            thr = HITS(&l, b, _mm512_cmp_ps_mask(b, thr, _CMP_GT_OQ), j0 + j + 16, thr);     \
        }                                                                                    \
        for (; j < count; j += 16) {                                                         \
            const __mmask16 in = count - j >= 16 ? (__mmask16)0xffff                         \
                                                 : (__mmask16)((1u << (count - j)) - 1u);    \
            const __m512 a = LOAD16(in, j);                                                  \
            thr = HITS(&l, a, _mm512_mask_cmp_ps_mask(in, a, thr, _CMP_GT_OQ), j0 + j, thr); \
        }                                                                                    \
    } while (0)

/* topk_scan's loop over next_above and sorted_insert for a full list of
 * k <= 16 entries (the same comparisons in the same order), the list in
 * registers: entries j .. count - 1 of the chunk, indices from j0. */
__attribute__((target("avx512f"))) static void scan_sorted16_avx512(const float *row,
                                                                    const float *bias,
                                                                    int64_t j, int64_t count,
                                                                    int64_t k, int64_t j0,
                                                                    int32_t *idx, float *keys)
{
    const __mmask16 live = (__mmask16)((1u << k) - 1u);
    struct list16 l = {_mm512_maskz_loadu_ps(live, keys), _mm512_maskz_loadu_epi32(live, idx),
                       _mm512_set1_epi32((int)(k - 1)), (__mmask16)((1u << (k - 1)) - 1u)};
    __m512 thr = _mm512_set1_ps(keys[k - 1]);
    SCAN_CHUNK(list16_hits);
    _mm512_mask_storeu_ps(keys, live, l.keys);
    _mm512_mask_storeu_epi32(idx, live, l.idx);
}

/* scan_sorted16_avx512 for 16 < k <= 48. */
__attribute__((target("avx512f"))) static void scan_sorted48_avx512(const float *row,
                                                                    const float *bias,
                                                                    int64_t j, int64_t count,
                                                                    int64_t k, int64_t j0,
                                                                    int32_t *idx, float *keys)
{
    struct list48 l;
    __mmask16 live[3];
    for (int v = 0; v < 3; v++) {
        const int64_t left = k - 16 * v;
        live[v] = left >= 16  ? (__mmask16)0xffff
                  : left <= 0 ? (__mmask16)0
                              : (__mmask16)((1u << left) - 1u);
        l.keys[v] = _mm512_maskz_loadu_ps(live[v], keys + 16 * v);
        l.idx[v] = _mm512_maskz_loadu_epi32(live[v], idx + 16 * v);
    }
    l.last = _mm512_set1_epi32((int)((k - 1) % 16));
    l.last_vec = (int)((k - 1) / 16);
    l.probe = ((uint64_t)1 << (k - 1)) - 1u;
    __m512 thr = _mm512_set1_ps(keys[k - 1]);
    SCAN_CHUNK(list48_hits);
    for (int v = 0; v < 3; v++) {
        _mm512_mask_storeu_ps(keys + 16 * v, live[v], l.keys[v]);
        _mm512_mask_storeu_epi32(idx + 16 * v, live[v], l.idx[v]);
    }
}
/* A lower bound of the k-th largest key of a chunk's entries 0 ..
 * count - 1 (k <= SORTED_LIST_MAX): the vectors cut into h = ceil(k / 16)
 * parts, the smallest of the parts' 16 h lane maxima (16 h >= k different
 * entries are at least that large, so no entry below it is among the top
 * k). False where it would not pay (a short chunk) or is no bound (a NaN). */
__attribute__((target("avx512f"))) static bool chunk_bound_avx512(const float *row,
                                                                  const float *bias,
                                                                  int64_t count, int64_t k,
                                                                  float *bound)
{
    const int64_t h = (k + 15) / 16, vectors = count / 16;
    if (vectors < 8 * h)
        return false;
    __m512 low = _mm512_set1_ps(INFINITY);
    __mmask16 nan = 0;
    for (int64_t p = 0; p < h; p++) {
        __m512 high = _mm512_set1_ps(-INFINITY);
        for (int64_t v = p * vectors / h; v < (p + 1) * vectors / h; v++) {
            const __m512 x = LOAD16(0xffff, 16 * v);
            nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
            high = _mm512_max_ps(high, x);
        }
        low = _mm512_min_ps(low, high);
    }
    *bound = _mm512_reduce_min_ps(low);
    return nan == 0;
}

/* The first k entries of an empty list among the chunk's entries that are
 * not below `bound` (the others are not in the top k), inserted as
 * topk_scan's first loop inserts. Where the scan goes on: the entry after
 * the one that filled the list, or count. */
__attribute__((target("avx512f"))) static int64_t fill_above_avx512(
    const float *row, const float *bias, int64_t count, int64_t k, int64_t j0, float bound,
    int64_t *have, int32_t *idx, float *keys)
{
    for (int64_t j = 0; j < count; j += 16) {
        const __mmask16 in = count - j >= 16 ? (__mmask16)0xffff
                                             : (__mmask16)((1u << (count - j)) - 1u);
        const __m512 x = LOAD16(in, j);
        __mmask16 hit = _mm512_mask_cmp_ps_mask(in, x, _mm512_set1_ps(bound), _CMP_GE_OQ);
        float lanes[16];
        _mm512_storeu_ps(lanes, x);
        for (; hit; hit &= (__mmask16)(hit - 1)) {
            const int l = __builtin_ctz((unsigned)hit);
            sorted_insert(keys, idx, *have, k, lanes[l], (int32_t)(j0 + j + l));
            if (++*have == k)
                return j + l + 1;
        }
    }
    return count;
}
#undef LOAD16
#undef SCAN_CHUNK
#endif

/* A list empty at the start of a chunk (the first of a row) filled from
 * the entries that can be among the top k only: the top k of a set is
 * unique under `beats`, so skipping entries that k others beat gives the
 * same list as inserting them. Where the scan goes on (0: not done). */
static int64_t fill_first(const float *row, const float *bias, int64_t count, int64_t k,
                          int64_t j0, int64_t *have, int32_t *idx, float *keys)
{
#if SUBSAE_X86
    float bound;
    if (cpu_level() == 2 && chunk_bound_avx512(row, bias, count, k, &bound))
        return fill_above_avx512(row, bias, count, k, j0, bound, have, idx, keys);
#endif
    (void)row, (void)bias, (void)count, (void)k, (void)j0, (void)have, (void)idx, (void)keys;
    return 0;
}

/* The full sorted list's scan of entries j .. count - 1. */
static void scan_sorted(const float *row, const float *bias, int64_t j, int64_t count,
                        int64_t k, int64_t j0, int32_t *idx, float *keys)
{
#if SUBSAE_X86
    if (cpu_level() == 2) {
        if (k <= 16)
            scan_sorted16_avx512(row, bias, j, count, k, j0, idx, keys);
        else
            scan_sorted48_avx512(row, bias, j, count, k, j0, idx, keys);
        return;
    }
#endif
    next_above_fn next = pick_next_above();
    for (j = next(row, bias, j, count, keys[k - 1]); j < count;
         j = next(row, bias, j + 1, count, keys[k - 1]))
        sorted_insert(keys, idx, k, k, key_at(row, bias, NULL, j), (int32_t)(j0 + j));
}

/* The selection of subsae__topk_row as a scan that can stop and resume
 * between chunks of the row: entries j0 .. j0 + count - 1 (row, bias and
 * weight point at entry j0), `*len` entries held so far (0 at the start of
 * a row). The sequence of comparisons and moves is the same however the
 * row is cut, so the result is too. */
static void topk_scan(const float *row, const float *bias, const float *weight, int64_t j0,
                      int64_t count, int64_t k, int64_t *len, int32_t *idx, float *keys)
{
    int64_t j = 0, have = *len;
    if (k <= SORTED_LIST_MAX) {
        if (have == 0 && !weight)
            j = fill_first(row, bias, count, k, j0, &have, idx, keys);
        for (; have < k && j < count; j++, have++)
            sorted_insert(keys, idx, have, k, key_at(row, bias, weight, j), (int32_t)(j0 + j));
        if (have == k) {
            if (weight) {
                for (; j < count; j++) {
                    float key = key_at(row, bias, weight, j);
                    if (key > keys[k - 1])
                        sorted_insert(keys, idx, k, k, key, (int32_t)(j0 + j));
                }
            } else {
                scan_sorted(row, bias, j, count, k, j0, idx, keys);
            }
        }
    } else {
        for (; have < k && j < count; j++) {
            keys[have] = key_at(row, bias, weight, j);
            idx[have] = (int32_t)(j0 + j);
            if (++have == k)
                for (int64_t i = k / 2; i-- > 0;)
                    sift_down(keys, idx, k, i);
        }
        if (have == k) {
            next_above_fn next = pick_next_above();
            for (; j < count; j++) {
                if (!weight) {
                    j = next(row, bias, j, count, keys[0]);
                    if (j >= count)
                        break;
                }
                float key = key_at(row, bias, weight, j);
                if (key > keys[0]) {
                    keys[0] = key;
                    idx[0] = (int32_t)(j0 + j);
                    sift_down(keys, idx, k, 0);
                }
            }
        }
    }
    *len = have;
}

/* After the last chunk: the heap (k > SORTED_LIST_MAX) sorted, best first. */
static void topk_finish(int64_t k, int32_t *idx, float *keys)
{
    if (k <= SORTED_LIST_MAX)
        return;
    for (int64_t n = k - 1; n > 0; n--) {
        float tk = keys[0];
        int32_t ti = idx[0];
        keys[0] = keys[n];
        idx[0] = idx[n];
        keys[n] = tk;
        idx[n] = ti;
        sift_down(keys, idx, n, 0);
    }
}

void subsae__topk_row(const float *row, const float *bias, const float *weight, int64_t m,
                      int64_t k, int32_t *idx, float *val)
{
    int64_t len = 0;
    topk_scan(row, bias, weight, 0, m, k, &len, idx, val); /* keys live in val */
    topk_finish(k, idx, val);
    if (weight)
        for (int64_t j = 0; j < k; j++)
            val[j] = bias ? row[idx[j]] + bias[idx[j]] : row[idx[j]];
}

void subsae__topk_chunk(const float *row, const float *bias, int64_t j0, int64_t count,
                        int64_t k, int64_t *len, int32_t *idx, float *val)
{
    topk_scan(row, bias, NULL, j0, count, k, len, idx, val);
}

void subsae__topk_done(int64_t k, int32_t *idx, float *val)
{
    topk_finish(k, idx, val);
}

/* ---- sparse decode and backward -------------------------------------- */

/* Ask for two rows (a and b, of na and nb floats) to be brought into the
 * cache, one prefetch per 64-byte line. */
ALWAYS_INLINE void prefetch_rows(const float *a, int64_t na, const float *b, int64_t nb)
{
    for (int64_t t = 0; t < na; t += 16)
        __builtin_prefetch(a + t, 0, 3);
    for (int64_t t = 0; t < nb; t += 16)
        __builtin_prefetch(b + t, 0, 3);
}

ALWAYS_INLINE void sparse_decode_row_body(float *out, const float *b, const float *W,
                                          int64_t ld, const int32_t *idx, const float *val,
                                          int64_t k, int64_t d)
{
    if (b)
        memcpy(out, b, (size_t)d * sizeof *out);
    else
        memset(out, 0, (size_t)d * sizeof *out);
    for (int64_t j = 0; j < k; j++) {
        /* Decoder rows are scattered over the model: fetch the next one
         * while this one is added. */
        if (j + 1 < k && idx[j + 1] >= 0)
            prefetch_rows(W + (int64_t)idx[j + 1] * ld, d, NULL, 0);
        if (idx[j] < 0 || val[j] == 0.0f)
            continue;
        const float *w = W + (int64_t)idx[j] * ld;
        const float v = val[j];
#pragma omp simd
        for (int64_t t = 0; t < d; t++)
            out[t] += v * w[t];
    }
}

ALWAYS_INLINE void feature_backward_body(const int32_t *rows, const float *z, int64_t count,
                                         const float *g, int64_t g_stride, int64_t d_out,
                                         const float *xin, int64_t xin_stride, int64_t d_in,
                                         const float *wdec, float *gdec, float *genc,
                                         float *gbenc)
{
    memset(gdec, 0, (size_t)d_out * sizeof *gdec);
    memset(genc, 0, (size_t)d_in * sizeof *genc);
    float gb = 0.0f;
    if (count > 0)
        prefetch_rows(g + (int64_t)rows[0] * g_stride, d_out,
                      xin + (int64_t)rows[0] * xin_stride, d_in);
    for (int64_t p = 0; p < count; p++) {
        /* The rows are scattered over the batch: fetch the next pair's
         * while this one is summed. */
        if (p + 1 < count)
            prefetch_rows(g + (int64_t)rows[p + 1] * g_stride, d_out,
                          xin + (int64_t)rows[p + 1] * xin_stride, d_in);
        const float *gr = g + (int64_t)rows[p] * g_stride;
        const float zp = z[p];
        float dp = 0.0f;
#pragma omp simd reduction(+ : dp)
        for (int64_t t = 0; t < d_out; t++)
            dp += gr[t] * wdec[t];
#pragma omp simd
        for (int64_t t = 0; t < d_out; t++)
            gdec[t] += zp * gr[t];
        const float *xr = xin + (int64_t)rows[p] * xin_stride;
#pragma omp simd
        for (int64_t t = 0; t < d_in; t++)
            genc[t] += dp * xr[t];
        gb += dp;
    }
    *gbenc = gb;
}

VARIANTS(void, sparse_decode_row,
         (float *out, const float *b, const float *W, int64_t ld, const int32_t *idx,
          const float *val, int64_t k, int64_t d),
         (out, b, W, ld, idx, val, k, d))

VARIANTS(void, feature_backward,
         (const int32_t *rows, const float *z, int64_t count, const float *g, int64_t g_stride,
          int64_t d_out, const float *xin, int64_t xin_stride, int64_t d_in, const float *wdec,
          float *gdec, float *genc, float *gbenc),
         (rows, z, count, g, g_stride, d_out, xin, xin_stride, d_in, wdec, gdec, genc, gbenc))

/* ---- Adam ------------------------------------------------------------- */

static void adam_scalar(float *w, float *m, float *v, const float *g, int64_t n, float gs,
                        float b1, float b2, float step, float inv_bias2, float eps)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (int64_t i = 0; i < n; i++) {
        float gi = g ? gs * g[i] : 0.0f;
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= step * mi / (sqrtf(vi) * inv_bias2 + eps);
    }
}

#if SUBSAE_X86
/* The vector Adam kernels, written once for both widths and instantiated
 * below for AVX-512 (V __m512, P _mm512, 16 lanes) and AVX2 (__m256,
 * _mm256, 8 lanes). ADAM_MOMENTS and ADAM_WEIGHTS are adam_scalar's
 * arithmetic, operation for operation, on the lanes at i: the new moments
 * mi, vi, then the new weights wi. */
#define ADAM_CONSTANTS(V, P)                                            \
    const V vb1 = P##_set1_ps(b1), vb2 = P##_set1_ps(b2);               \
    const V vc1 = P##_set1_ps(1.0f - b1), vc2 = P##_set1_ps(1.0f - b2); \
    const V vgs = P##_set1_ps(gs), vstep = P##_set1_ps(step);           \
    const V vib2 = P##_set1_ps(inv_bias2), veps = P##_set1_ps(eps)

#define ADAM_MOMENTS(V, P)                                                        \
    V gi = g ? P##_mul_ps(vgs, P##_loadu_ps(g + i)) : P##_setzero_ps();           \
    V mi = P##_add_ps(P##_mul_ps(vb1, P##_loadu_ps(m + i)), P##_mul_ps(vc1, gi)); \
    V vi = P##_add_ps(P##_mul_ps(vb2, P##_loadu_ps(v + i)), P##_mul_ps(P##_mul_ps(vc2, gi), gi))

#define ADAM_WEIGHTS(V, P)                                       \
    V den = P##_add_ps(P##_mul_ps(P##_sqrt_ps(vi), vib2), veps); \
    V wi = P##_sub_ps(P##_loadu_ps(w + i), P##_div_ps(P##_mul_ps(vstep, mi), den))

#define ADAM_UPDATE(TARGET, NAME, V, P, LANES)                                                 \
    __attribute__((target(TARGET))) static void NAME(                                          \
        float *w, float *m, float *v, const float *g, int64_t n, float gs, float b1, float b2, \
        float step, float inv_bias2, float eps)                                                \
    {                                                                                          \
        ADAM_CONSTANTS(V, P);                                                                  \
        int64_t i = 0;                                                                         \
        for (; i + LANES <= n; i += LANES) {                                                   \
            ADAM_MOMENTS(V, P);                                                                \
            P##_storeu_ps(m + i, mi);                                                          \
            P##_storeu_ps(v + i, vi);                                                          \
            ADAM_WEIGHTS(V, P);                                                                \
            P##_storeu_ps(w + i, wi);                                                          \
        }                                                                                      \
        adam_scalar(w + i, m + i, v + i, g ? g + i : NULL, n - i, gs, b1, b2, step, inv_bias2, \
                    eps);                                                                      \
    }

ADAM_UPDATE("avx512f", adam_avx512, __m512, _mm512, 16)
ADAM_UPDATE("avx2", adam_avx2, __m256, _mm256, 8)
#endif

/* The same arithmetic as adam_* without storing anything: whether every
 * new m, v and w would be finite. Each variant computes exactly what the
 * matching adam_* variant would store (same operations per element, in
 * the same order), so the answer is exact. */
static inline bool finite_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) != 0x7f800000u;
}

static bool adam_finite_scalar(const float *w, const float *m, const float *v, const float *g,
                               int64_t n, float gs, float b1, float b2, float step,
                               float inv_bias2, float eps)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    unsigned finite = 1; /* bitwise, no branches */
    for (int64_t i = 0; i < n; i++) {
        float gi = g ? gs * g[i] : 0.0f;
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        float wi = w[i] - step * mi / (sqrtf(vi) * inv_bias2 + eps);
        finite &= (unsigned)finite_bits(mi) & (unsigned)finite_bits(vi) &
                  (unsigned)finite_bits(wi);
    }
    return finite != 0;
}

#if SUBSAE_X86
/* As ADAM_UPDATE, storing nothing: x * 0 is 0 for finite x, NaN for
 * infinities and NaN, so a lane of `probe` that is not 0 marks a
 * non-finite result. BAD is how a width keeps the marks: its type, its
 * empty value, adding the lanes of `probe` and testing for none. */
#define ADAM_FINITE(TARGET, NAME, V, P, LANES, BAD_T, BAD_NONE, BAD_ADD, BAD_EMPTY)           \
    __attribute__((target(TARGET))) static bool NAME(                                         \
        const float *w, const float *m, const float *v, const float *g, int64_t n, float gs,  \
        float b1, float b2, float step, float inv_bias2, float eps)                           \
    {                                                                                         \
        ADAM_CONSTANTS(V, P);                                                                 \
        const V zero = P##_setzero_ps();                                                      \
        BAD_T bad = BAD_NONE;                                                                 \
        int64_t i = 0;                                                                        \
        for (; i + LANES <= n; i += LANES) {                                                  \
            ADAM_MOMENTS(V, P);                                                               \
            ADAM_WEIGHTS(V, P);                                                               \
            V probe = P##_add_ps(P##_add_ps(P##_mul_ps(mi, zero), P##_mul_ps(vi, zero)),      \
                                 P##_mul_ps(wi, zero));                                       \
            bad = BAD_ADD(bad, probe, zero);                                                  \
        }                                                                                     \
        return BAD_EMPTY(bad) && adam_finite_scalar(w + i, m + i, v + i, g ? g + i : NULL,    \
                                                    n - i, gs, b1, b2, step, inv_bias2, eps); \
    }

#define BAD512_ADD(bad, probe, zero) \
    (__mmask16)((bad) | _mm512_cmp_ps_mask((probe), (zero), _CMP_NEQ_UQ))
#define BAD512_EMPTY(bad) ((bad) == 0)
#define BAD256_ADD(bad, probe, zero) \
    _mm256_or_ps((bad), _mm256_cmp_ps((probe), (zero), _CMP_NEQ_UQ))
#define BAD256_EMPTY(bad) (_mm256_movemask_ps(bad) == 0)

ADAM_FINITE("avx512f", adam_finite_avx512, __m512, _mm512, 16, __mmask16, 0, BAD512_ADD,
            BAD512_EMPTY)
ADAM_FINITE("avx2", adam_finite_avx2, __m256, _mm256, 8, __m256, _mm256_setzero_ps(),
            BAD256_ADD, BAD256_EMPTY)
#endif

bool subsae__adam_finite(const float *w, const float *m, const float *v, const float *g,
                         int64_t n, float gs, float b1, float b2, float step, float inv_bias2,
                         float eps)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2: return adam_finite_avx512(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
    case 1: return adam_finite_avx2(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
    default: break;
    }
#endif
    return adam_finite_scalar(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
}

void subsae__adam(float *w, float *m, float *v, const float *g, int64_t n, float gs, float b1,
                  float b2, float step, float inv_bias2, float eps)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2: adam_avx512(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps); return;
    case 1: adam_avx2(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps); return;
    default: break;
    }
#endif
    adam_scalar(w, m, v, g, n, gs, b1, b2, step, inv_bias2, eps);
}

/* ---- bf16 ---------------------------------------------------------------- */

/* Round to nearest even, NaN kept a quiet NaN (dtype.c's
 * subsae__f32_to_bf16, bit for bit), without branches so that it
 * vectorises. */
ALWAYS_INLINE void bf16_round_body(uint16_t *dst, const float *src, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const uint32_t quiet = (u >> 16) | 0x40u;
        dst[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
    }
}

#if SUBSAE_X86
__attribute__((target("avx512f,avx512bw"))) static void bf16_round_avx512(uint16_t *dst,
                                                                          const float *src,
                                                                          int64_t n)
{
    bf16_round_body(dst, src, n);
}

__attribute__((target("avx2"))) static void bf16_round_avx2(uint16_t *dst, const float *src,
                                                            int64_t n)
{
    bf16_round_body(dst, src, n);
}
#endif

void subsae__bf16_round(uint16_t *dst, const float *src, int64_t n)
{
#if SUBSAE_X86
    switch (cpu_level()) {
    case 2:
        if (__builtin_cpu_supports("avx512bw")) {
            bf16_round_avx512(dst, src, n);
            return;
        }
        break;
    case 1: bf16_round_avx2(dst, src, n); return;
    default: break;
    }
#endif
    bf16_round_body(dst, src, n);
}

/* ---- reductions -------------------------------------------------------- */

ALWAYS_INLINE double dot_body(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

ALWAYS_INLINE double sumsq_body(const float *a, int64_t n)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)a[i];
    return s;
}

/* 16 running sums, lane l over the elements l mod 16, added in a fixed
 * tree: the same bits whatever the vector width and the alignment. */
ALWAYS_INLINE float dot_f32_body(const float *a, const float *b, int64_t n)
{
    float lane[16] = {0.0f};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            lane[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++)
        lane[l] += a[i] * b[i];
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++)
            lane[l] += lane[l + w];
    return lane[0];
}

VARIANTS(double, dot, (const float *a, const float *b, int64_t n), (a, b, n))
VARIANTS(float, dot_f32, (const float *a, const float *b, int64_t n), (a, b, n))
VARIANTS(double, sumsq, (const float *a, int64_t n), (a, n))

#if SUBSAE_X86
/* dot_f32_body's tree (lanes l and l + w added, w = 8, 4, 2, 1) on a
 * vector of its 16 running sums: the same additions, so the same bits. */
__attribute__((target("avx512f"))) static inline float tree_sum16(__m512 s)
{
    const __m256 lo = _mm512_castps512_ps256(s);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1));
    const __m256 s8 = _mm256_add_ps(lo, hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* PAIRS_DOT_STEP: lane l of sum S += the elements i + l of rows A and B
 * (the product rounded, then the sum: dot_f32_body's operations). */
#define PAIRS_DOT_STEP(S, A, B, i, mask)                                         \
    S = _mm512_mask_add_ps(S, mask, S,                                           \
                           _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, (A) + (i)), \
                                         _mm512_maskz_loadu_ps(mask, (B) + (i))))

/* subsae__dot_f32 of four pairs of rows at a time, the four chains of
 * additions overlapping (a last group of fewer pairs repeats its first
 * pair in the missing places and stores only its own). */
__attribute__((target("avx512f"))) static void dot_f32_pairs_avx512(
    const float *x, int64_t ldx, const int32_t *rows, const float *y, int64_t ldy,
    const int32_t *cols, int64_t count, int64_t n, float *out)
{
    const int64_t full = n - n % 16;
    const __mmask16 tail = (__mmask16)((1u << (n - full)) - 1u);
    for (int64_t c = 0; c < count; c += 4) {
        const float *a[4], *b[4];
        for (int64_t u = 0; u < 4; u++) {
            const int64_t at = c + u < count ? c + u : c;
            a[u] = x + rows[at] * ldx;
            b[u] = y + cols[at] * ldy;
        }
        for (int64_t u = 4; u < 8 && c + u < count; u++)
            prefetch_rows(x + rows[c + u] * ldx, n, y + cols[c + u] * ldy, n);
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t i = 0; i < n; i += 16) {
            const __mmask16 mask = i < full ? (__mmask16)0xffff : tail;
            PAIRS_DOT_STEP(s0, a[0], b[0], i, mask);
            PAIRS_DOT_STEP(s1, a[1], b[1], i, mask);
            PAIRS_DOT_STEP(s2, a[2], b[2], i, mask);
            PAIRS_DOT_STEP(s3, a[3], b[3], i, mask);
        }
        const float sums[4] = {tree_sum16(s0), tree_sum16(s1), tree_sum16(s2), tree_sum16(s3)};
        for (int64_t u = 0; u < 4 && c + u < count; u++)
            out[c + u] = sums[u];
    }
}
#endif

void subsae__dot_f32_pairs(const float *x, int64_t ldx, const int32_t *rows, const float *y,
                           int64_t ldy, const int32_t *cols, int64_t count, int64_t n,
                           float *out)
{
#if SUBSAE_X86
    if (cpu_level() == 2) {
        dot_f32_pairs_avx512(x, ldx, rows, y, ldy, cols, count, n, out);
        return;
    }
#endif
    for (int64_t c = 0; c < count; c++)
        out[c] = subsae__dot_f32(x + rows[c] * ldx, y + cols[c] * ldy, n);
}

void subsae__normalize_row(float *row, int64_t d)
{
    double nn = subsae__sumsq(row, d);
    if (nn > 0.0) {
        float inv = (float)(1.0 / sqrt(nn));
        for (int64_t j = 0; j < d; j++)
            row[j] *= inv;
    }
}

int64_t subsae__find_nonfinite(const float *x, int64_t n)
{
    /* Scan in blocks: a block whose sum of x * 0 is 0 is finite (inf * 0 and
     * NaN give NaN), then locate the culprit element by element. */
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = i; j < i + 64; j++)
            acc += x[j] * 0.0f;
        if (acc != 0.0f || acc != acc)
            break;
    }
    for (; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return n;
}
