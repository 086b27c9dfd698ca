/* Native kernels for the functional simulator's hot loops (see sim/native.py).
 *
 * Every function here computes exactly what its numpy counterpart in sim/bfp.py computes; the
 * tests run both and compare bit for bit. The reasoning that makes the arithmetic exact is
 * written next to each kernel.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef int16_t v16h __attribute__((vector_size(32)));
typedef uint8_t v16b __attribute__((vector_size(16)));

#define MR 6   /* rows of a micro-tile */
#define NR 16  /* columns of a weight panel (one 16-lane vector) */
#define NP 4   /* panels of a micro-tile */

static inline v16f load16(const float *p) { v16f v; memcpy(&v, p, sizeof v); return v; }
static inline void store16(float *p, v16f v) { memcpy(p, &v, sizeof v); }

/* Where row p's operand blocks of tap t start: row p of x (blocks t * gi ..), or, through idx,
 * image pixel idx[p * taps + t] at block offset xoff (a zero block when idx < 0). */
static inline const float *row_src(const float *x, int64_t ldx, int64_t xoff, const int64_t *idx,
                                   const float *zeros, int64_t taps, int64_t gi, int64_t n, int64_t p,
                                   int64_t t)
{
    if (!idx) return x + p * ldx + xoff + t * gi * n;
    int64_t q = idx[p * taps + t];
    return q < 0 ? zeros : x + q * ldx + xoff;
}

/* One micro-tile: rows [p, p + mr) times np weight panels (panel c at w + c * pstride, blocks
 * [0, taps * gi) of n elements each), accumulated into o (row stride ldo), the last panel's
 * columns [0, nc) only. Returns nonzero if an accumulator is not finite at the end.
 *
 * Operands are BFP mantissas pre-scaled by their block's unit (m * 2**s, exact binary32 values;
 * the caller guarantees none is subnormal and every block dot product fits 24 bits), so each
 * block's dot product d is computed exactly whatever the order or fusion of its multiply-adds.
 * The only rounding is the one the definition has: acc = RNE(acc + d), block by block in
 * increasing order (and no partial sum can be subnormal: every term is a multiple of 2**-126).
 * With init the accumulators start from +0 (o is not read). */
static inline __attribute__((always_inline)) int
micro_tile(const int mr, const int np, const int64_t n, int64_t taps, int64_t gi,
           const float *x, int64_t ldx, int64_t xoff, const int64_t *idx, const float *zeros, int64_t p,
           const float *w, int64_t pstride, float *o, int64_t ldo, int nc, int init)
{
    float tmp[MR][NP][NR];
    float *dst[MR][NP];
    int64_t dstride = ldo;
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < np; c++) {
            int direct = c < np - 1 || nc == NR;
            dst[r][c] = direct ? o + r * ldo + c * NR : tmp[r][c];
            if (!direct) {
                for (int l = 0; l < NR; l++) tmp[r][c][l] = (init || l >= nc) ? 0.0f : o[r * ldo + c * NR + l];
            } else if (init) {
                store16(dst[r][c], (v16f){0});
            }
        }
    (void)dstride;
    for (int64_t t = 0; t < taps; t++) {
        const float *xr[MR];
        for (int r = 0; r < mr; r++) xr[r] = row_src(x, ldx, xoff, idx, zeros, taps, gi, n, p + r, t);
        for (int64_t bi = 0; bi < gi; bi++) {
            const float *wb = w + (t * gi + bi) * n * NR;
            v16f d[MR][NP];
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < np; c++) d[r][c] = (v16f){0};
            for (int64_t i = 0; i < n; i++) {
                v16f wv[NP];
                for (int c = 0; c < np; c++) wv[c] = load16(wb + c * pstride + i * NR);
                for (int r = 0; r < mr; r++) {
                    float s = xr[r][bi * n + i];
                    v16f xv = {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
                    for (int c = 0; c < np; c++) d[r][c] += xv * wv[c];
                }
            }
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < np; c++) store16(dst[r][c], load16(dst[r][c]) + d[r][c]);
        }
    }
    v16i bad = {0};
    const v16i expmask = {0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000,
                          0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000,
                          0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000};
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < np; c++) {
            v16i bits;
            memcpy(&bits, dst[r][c], sizeof bits);
            bad |= (bits & expmask) == expmask;
            if (dst[r][c] == tmp[r][c])
                for (int l = 0; l < nc; l++) o[r * ldo + c * NR + l] = tmp[r][c][l];
        }
    int any = 0;
    for (int l = 0; l < 16; l++) any |= bad[l];
    return any;
}

#define TILE_ROWS(NPV)                                                                              \
    switch (mr) {                                                                                   \
    case 6: bad |= micro_tile(6, NPV, n, taps, gi, x, ldx, xoff, idx, zeros, p, w, ps, o, ldo, nc, init); break; \
    case 5: bad |= micro_tile(5, NPV, n, taps, gi, x, ldx, xoff, idx, zeros, p, w, ps, o, ldo, nc, init); break; \
    case 4: bad |= micro_tile(4, NPV, n, taps, gi, x, ldx, xoff, idx, zeros, p, w, ps, o, ldo, nc, init); break; \
    case 3: bad |= micro_tile(3, NPV, n, taps, gi, x, ldx, xoff, idx, zeros, p, w, ps, o, ldo, nc, init); break; \
    case 2: bad |= micro_tile(2, NPV, n, taps, gi, x, ldx, xoff, idx, zeros, p, w, ps, o, ldo, nc, init); break; \
    default: bad |= micro_tile(1, NPV, n, taps, gi, x, ldx, xoff, idx, zeros, p, w, ps, o, ldo, nc, init); break; \
    }

static inline __attribute__((always_inline)) int
gemm_rows(const int64_t n, int64_t p0, int64_t p1, int64_t J, int64_t taps, int64_t gi,
          const float *x, int64_t ldx, int64_t xoff, const int64_t *idx, const float *zeros,
          const float *wp, float *out, int64_t ldo, int init)
{
    const int64_t kb = taps * gi, ps = kb * n * NR, panels = (J + NR - 1) / NR;
    int bad = 0;
    for (int64_t jt = 0; jt < panels; jt += NP) {
        const int npv = panels - jt < NP ? (int)(panels - jt) : NP;
        const int64_t last = jt + npv - 1;
        const int nc = (int)(J - last * NR < NR ? J - last * NR : NR);
        const float *w = wp + jt * ps;
        for (int64_t p = p0; p < p1; p += MR) {
            const int mr = p1 - p < MR ? (int)(p1 - p) : MR;
            float *o = out + p * ldo + jt * NR;
            switch (npv) {
            case 4: TILE_ROWS(4); break;
            case 3: TILE_ROWS(3); break;
            case 2: TILE_ROWS(2); break;
            default: TILE_ROWS(1); break;
            }
        }
    }
    return bad;
}

/* out[p, j] = out[p, j] (+) sum over blocks b, in order, of dot(x[p, b], w[j, b]), rows [p0, p1).
 * Operand row p, block b = t * gi + bi (tap t, block bi of the tap) is x[p * ldx + xoff + b * n ..]
 * when idx is NULL, else image pixel q = idx[p * taps + t]'s block x[q * ldx + xoff + bi * n ..] (zeros,
 * gi * n of them, when q < 0): the im2col rows of a window, read from the scaled image in place.
 * wp: ceil(J / 16) panels of [taps * gi][n][16] (zero-padded columns); out: (P, J) row stride
 * ldo; init: start from +0 instead of out's values. Returns nonzero if any result in the rows is
 * not finite (the accumulator overflowed). */
int64_t bfp_gemm_f32(int64_t p0, int64_t p1, int64_t J, int64_t taps, int64_t gi, int64_t n,
                     const float *x, int64_t ldx, int64_t xoff, const int64_t *idx, const float *zeros,
                     const float *wp, float *out, int64_t ldo, int init)
{
    if (n == 16) return gemm_rows(16, p0, p1, J, taps, gi, x, ldx, xoff, idx, zeros, wp, out, ldo, init);
    if (n == 8) return gemm_rows(8, p0, p1, J, taps, gi, x, ldx, xoff, idx, zeros, wp, out, ldo, init);
    return gemm_rows(n, p0, p1, J, taps, gi, x, ldx, xoff, idx, zeros, wp, out, ldo, init);
}

static inline float pow2f(int k) /* 2**k for k in [-126, 127] */
{
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float u;
    memcpy(&u, &bits, sizeof u);
    return u;
}

static const float FMAX = 3.4028234663852886e38f;

/* quantize's exponent of one block whose largest magnitude (Inf saturated to FMAX) is amax. */
static inline int block_exponent(float amax, int m_bits, int exp_min, int exp_max)
{
    if (amax == 0.0f) return exp_min;
    uint32_t bits;
    memcpy(&bits, &amax, sizeof bits);
    int e;
    if (bits >> 23) {
        e = (int)(bits >> 23) - 127;
    } else {
        int fe;
        (void)frexpf(amax, &fe);
        e = fe - 1;
    }
    int k = (m_bits - 1) - e;
    float t = k > 127 ? amax * pow2f(k - 127) * pow2f(127) : amax * pow2f(k);
    if (nearbyintf(t) >= (float)(1 << m_bits)) e += 1;
    if (e < exp_min) e = exp_min;
    if (e > exp_max) e = exp_max;
    return e;
}

/* The scale 2**((M - 1) - e) of a block's mantissas as two binary32 factors (2**k itself is not
 * one for k > 127); multiplying by both is exact except where the result underflows, and then it
 * is far below 1/2 and rounds to 0 either way. */
static inline void block_scale(int m_bits, int e, float *s1, float *s2)
{
    const int k = (m_bits - 1) - e; /* in [m_bits - 1 - 127, m_bits - 1 + 127] */
    *s1 = k > 127 ? pow2f(k - 127) : pow2f(k);
    *s2 = k > 127 ? pow2f(127) : 1.0f;
}

/* One value's mantissa: RNE of |v| scaled, saturating at 2**M - 1 (+-Inf too), with v's sign. */
static inline int32_t quantize_one(float v, float s1, float s2, int m_bits)
{
    float a = fabsf(v);
    a = a > FMAX ? FMAX : a;
    float q = nearbyintf(a * s1 * s2);
    const float sat = (float)((1 << m_bits) - 1);
    q = q > sat ? sat : q;
    const int32_t m = (int32_t)q;
    return v < 0.0f ? -m : m;
}

/* BFP quantisation of binary32 values, blocks of n along the rows (bfp.quantize's definition):
 * x = floor(log2 max|v|), bumped when the maximum rounds up to 2**M, clamped to [exp_min,
 * exp_max], exp_min for an all-zero block; mantissas RNE, saturating at 2**M - 1; +-Inf
 * saturates. Scaling by 2**k is exact in binary32 (done in two steps when 2**k itself is not a
 * binary32 number) except where the result underflows, and then it is far below 1/2 and rounds
 * to 0 either way. Blocks [b0, b1). Returns 0, or 1 + the index of the first block holding a NaN;
 * -1 if the format's exponent range is outside what this kernel handles (exp_max > 127). */
int64_t bfp_quantize_f32(int64_t b0, int64_t b1, int64_t n, int m_bits, int exp_min, int exp_max,
                         const float *x, int32_t *mant, int16_t *exp)
{
    if (exp_max > 127 || exp_min < -127 || m_bits > 24) return -1;
    for (int64_t b = b0; b < b1; b++) {
        const float *v = x + b * n;
        float amax = 0.0f;
        int nan = 0;
        for (int64_t i = 0; i < n; i++) {
            float a = fabsf(v[i]);
            nan |= a != a;
            amax = a > amax ? a : amax;
        }
        if (nan) return b + 1;
        const int e = block_exponent(amax > FMAX ? FMAX : amax, m_bits, exp_min, exp_max); /* Inf saturates */
        float s1, s2;
        block_scale(m_bits, e, &s1, &s2);
        for (int64_t i = 0; i < n; i++) mant[b * n + i] = quantize_one(v[i], s1, s2, m_bits);
        exp[b] = (int16_t)e;
    }
    return 0;
}

static inline float unit_of(int s)
{
    if (s >= -126 && s <= 127) {
        uint32_t bits = (uint32_t)(s + 127) << 23;
        float u;
        memcpy(&u, &bits, sizeof u);
        return u;
    }
    return ldexpf(1.0f, s);
}

/* ---------------------------------------------------------------------------------------------
 * The MVU on 8-bit integers (M <= 7, n a multiple of 4, AVX-512 VNNI): each block's dot product
 * d = sum_i a_i * w_i is computed exactly in 32-bit integers (vpdpbusd multiplies unsigned by
 * signed bytes, so activations carry an offset of 128: sum (a_i + 128) w_i - 128 sum w_i = d), then
 * converted to binary32 (exact: |d| < 2**24) and scaled by 2**(sa + sw), and acc = RNE(acc + term),
 * block by block in order. Under the fast-path conditions every block with a nonzero mantissa has
 * a unit 2**s with s >= -126 and every pair sums to a normal 2**(sa + sw), so the scale is formed
 * by adding sa to the exponent field of 2**sw (an all-zero block, whose d is 0, counts as
 * 2**0); the term d * 2**(sa + sw) is exact, so a fused multiply-add computes acc's rounding.
 * --------------------------------------------------------------------------------------------- */

/* The unit exponents a run of blocks spans, as bfp.nonzero_block_range takes them: the smallest
 * s, whether a block at that s has a nonzero mantissa, the smallest s above it, the largest s. */
typedef struct {
    int64_t lo, second, hi;
    int live;
} ExpRange;
#define RANGE_EMPTY {INT64_MAX, INT64_MAX, INT64_MIN, 0}

static inline void range_add(ExpRange *r, int s, int nz)
{
    if (s < r->lo) {
        if (r->lo < r->second) r->second = r->lo;
        r->lo = s;
        r->live = nz != 0;
    } else if (s == r->lo) {
        r->live |= nz != 0;
    } else if (s < r->second) {
        r->second = s;
    }
    if (s > r->hi) r->hi = s;
}

static inline void range_store(const ExpRange *r, int64_t *range)
{
    range[0] = r->lo;
    range[1] = r->live;
    range[2] = r->second;
    range[3] = r->hi;
}

/* Blocks [0, blocks) of n int16 mantissas (|m| <= 127) to bytes m + 128 and their unit
 * exponents s = x - (M - 1) as exponent-field offsets shift[b] = s * 2**23 (0 for an all-zero
 * block), with the exponent range of bfp_scale_range_i16. */
void bfp_image_u8(int64_t blocks, int64_t n, int m_bits, const int16_t *mant, const int16_t *exp, uint8_t *out,
                  int32_t *shift, int64_t *range)
{
    ExpRange r = RANGE_EMPTY;
    for (int64_t b = 0; b < blocks; b++) {
        const int s = (int)exp[b] - (m_bits - 1);
        const int16_t *m = mant + b * n;
        uint8_t *o = out + b * n;
        int nz = 0;
        if (n == 16) {
            v16h x;
            memcpy(&x, m, sizeof x);
            v16b u = __builtin_convertvector(x + 128, v16b);
            memcpy(o, &u, sizeof u);
            uint64_t q[4];
            memcpy(q, &x, sizeof q);
            nz = (q[0] | q[1] | q[2] | q[3]) != 0;
        } else {
            for (int64_t i = 0; i < n; i++) {
                nz |= m[i];
                o[i] = (uint8_t)(m[i] + 128);
            }
        }
        shift[b] = nz ? s * (1 << 23) : 0;
        range_add(&r, s, nz);
    }
    range_store(&r, range);
}

/* Weight tiles (as bfp_pack_tiles) to integer panels: for panel pt (columns j = 16 pt + l), block
 * b, quad q: 64 bytes wp[((pt * kb + b) * (n / 4) + q) * 64 + 4 l + u] = w[j, b, 4 q + u]; per
 * (panel, block) 16 lanes of ncorr = -128 * sum_i w[j, b, i] and of the unit 2**(x_j - (M - 1))
 * (1 for an all-zero row and for the zero padding columns). */
void bfp_pack_tiles_i8(int64_t cob, int64_t kb, int64_t n, int m_bits, const int16_t *tiles, const int16_t *texp,
                       int8_t *wp, int32_t *ncorr, float *uw)
{
    const int64_t J = cob * n, panels = (J + 15) / 16;
    for (int64_t pt = 0; pt < panels; pt++)
        for (int64_t b = 0; b < kb; b++) {
            int8_t *o = wp + (pt * kb + b) * n * 16;
            for (int l = 0; l < 16; l++) {
                const int64_t j = pt * 16 + l;
                int32_t sum = 0;
                int nz = 0;
                float u = 1.0f;
                const int16_t *row = 0;
                int64_t tile = 0, r = 0;
                if (j < J) {
                    tile = (j / n) * kb + b;
                    r = j % n;
                    row = tiles + (tile * n + r) * n;
                }
                for (int64_t i = 0; i < n; i++) {
                    const int w = row ? row[i] : 0;
                    sum += w;
                    nz |= w;
                    o[(i / 4) * 64 + 4 * l + (i % 4)] = (int8_t)w;
                }
                if (nz) u = unit_of((int)texp[tile * n + r] - (m_bits - 1));
                ncorr[(pt * kb + b) * 16 + l] = -128 * sum;
                uw[(pt * kb + b) * 16 + l] = u;
            }
        }
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#include <immintrin.h>

#ifndef MR8
#define MR8 7 /* rows of an integer micro-tile */
#endif
#ifndef NP8
#define NP8 2 /* panels of an integer micro-tile */
#endif

/* One integer micro-tile: rows [p, p + mr) times np panels, accumulators held in registers
 * through all blocks (binary32 stores and reloads of a 16-lane vector in flight stall). */
static inline __attribute__((always_inline)) int
micro_tile_i8(const int mr, const int np, const int64_t n, int64_t taps, int64_t gi, const uint8_t *x, int64_t ldx,
              int64_t xoff, const int32_t *xu, int64_t ldu, int64_t uoff, const int64_t *idx, const uint8_t *zx,
              const int32_t *zu, int64_t p, const int8_t *w, const int32_t *ncorr, const float *uw, int64_t kb,
              float *o, int64_t ldo, int nc, int init)
{
    const int64_t pstride = kb * n * 16; /* bytes between panels */
    const __mmask16 last = (__mmask16)((1u << nc) - 1);
    __m512 acc[MR8][NP8];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < np; c++)
            acc[r][c] = init ? _mm512_setzero_ps()
                             : _mm512_maskz_loadu_ps(c < np - 1 ? (__mmask16)0xffff : last, o + r * ldo + c * NR);
    for (int64_t t = 0; t < taps; t++) {
        const uint8_t *xr[MR8];
        const int32_t *ur[MR8];
        for (int r = 0; r < mr; r++) {
            const int64_t pr = p + r;
            if (!idx) {
                xr[r] = x + pr * ldx + xoff + t * gi * n;
                ur[r] = xu + pr * ldu + uoff + t * gi;
            } else {
                const int64_t q = idx[pr * taps + t];
                xr[r] = q < 0 ? zx : x + q * ldx + xoff;
                ur[r] = q < 0 ? zu : xu + q * ldu + uoff;
            }
        }
        for (int64_t bi = 0; bi < gi; bi++) {
            const int64_t b = t * gi + bi;
            __m512i d[MR8][NP8];
            for (int c = 0; c < np; c++) {
                const __m512i init_c = _mm512_loadu_si512(ncorr + (c * kb + b) * 16);
                for (int r = 0; r < mr; r++) d[r][c] = init_c;
            }
            const int8_t *wb = w + b * n * 16;
            for (int64_t q = 0; q < n / 4; q++) {
                __m512i wv[NP8];
                for (int c = 0; c < np; c++) wv[c] = _mm512_loadu_si512(wb + c * pstride + q * 64);
                for (int r = 0; r < mr; r++) {
                    int32_t quad;
                    memcpy(&quad, xr[r] + bi * n + 4 * q, 4);
                    const __m512i a = _mm512_set1_epi32(quad);
                    for (int c = 0; c < np; c++) d[r][c] = _mm512_dpbusd_epi32(d[r][c], a, wv[c]);
                }
            }
            for (int c = 0; c < np; c++) {
                const __m512i u = _mm512_loadu_si512(uw + (c * kb + b) * 16);
                for (int r = 0; r < mr; r++) {
                    const __m512 s = _mm512_castsi512_ps(_mm512_add_epi32(u, _mm512_set1_epi32(ur[r][bi])));
                    acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][c]), s, acc[r][c]);
                }
            }
        }
    }
    __mmask16 bad = 0;
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < np; c++) {
            const __mmask16 lanes = c < np - 1 ? (__mmask16)0xffff : last;
            const __m512i e = _mm512_and_si512(_mm512_castps_si512(acc[r][c]), _mm512_set1_epi32(0x7f800000));
            bad |= _mm512_mask_cmpeq_epi32_mask(lanes, e, _mm512_set1_epi32(0x7f800000));
            _mm512_mask_storeu_ps(o + r * ldo + c * NR, lanes, acc[r][c]);
        }
    return bad != 0;
}

#define TILE_I8(MRV, NPV) \
    bad |= micro_tile_i8(MRV, NPV, n, taps, gi, x, ldx, xoff, xu, ldu, uoff, idx, zx, zu, p, w, nc_, u_, kb, o, ldo, nc, init)
#define TILE_ROWS_I8(NPV)                                                                           \
    switch (mr) {                                                                                   \
    case 12: TILE_I8(12 < MR8 ? 12 : MR8, NPV); break;                                              \
    case 11: TILE_I8(11 < MR8 ? 11 : MR8, NPV); break;                                              \
    case 10: TILE_I8(10 < MR8 ? 10 : MR8, NPV); break;                                              \
    case 9: TILE_I8(9 < MR8 ? 9 : MR8, NPV); break;                                                 \
    case 8: TILE_I8(8 < MR8 ? 8 : MR8, NPV); break;                                                 \
    case 7: TILE_I8(7 < MR8 ? 7 : MR8, NPV); break;                                                 \
    case 6: TILE_I8(6 < MR8 ? 6 : MR8, NPV); break;                                                 \
    case 5: TILE_I8(5 < MR8 ? 5 : MR8, NPV); break;                                                 \
    case 4: TILE_I8(4 < MR8 ? 4 : MR8, NPV); break;                                                 \
    case 3: TILE_I8(3 < MR8 ? 3 : MR8, NPV); break;                                                 \
    case 2: TILE_I8(2 < MR8 ? 2 : MR8, NPV); break;                                                 \
    default: TILE_I8(1, NPV); break;                                                                \
    }

static inline __attribute__((always_inline)) int
gemm_rows_i8(const int64_t n, int64_t p0, int64_t p1, int64_t J, int64_t taps, int64_t gi, const uint8_t *x,
             int64_t ldx, int64_t xoff, const int32_t *xu, int64_t ldu, int64_t uoff, const int64_t *idx,
             const uint8_t *zx, const int32_t *zu, const int8_t *wp, const int32_t *ncorr, const float *uw, float *out,
             int64_t ldo, int init)
{
    const int64_t kb = taps * gi, panels = (J + NR - 1) / NR;
    int bad = 0;
    for (int64_t jt = 0; jt < panels; jt += NP8) {
        const int npv = panels - jt < NP8 ? (int)(panels - jt) : NP8;
        const int64_t last = jt + npv - 1;
        const int nc = (int)(J - last * NR < NR ? J - last * NR : NR);
        const int8_t *w = wp + jt * kb * n * 16;
        const int32_t *nc_ = ncorr + jt * kb * 16;
        const float *u_ = uw + jt * kb * 16;
        for (int64_t p = p0; p < p1; p += MR8) {
            const int mr = p1 - p < MR8 ? (int)(p1 - p) : MR8;
            float *o = out + p * ldo + jt * NR;
            switch (npv) {
            case 4: TILE_ROWS_I8(4 < NP8 ? 4 : NP8); break;
            case 3: TILE_ROWS_I8(3 < NP8 ? 3 : NP8); break;
            case 2: TILE_ROWS_I8(2 < NP8 ? 2 : NP8); break;
            default: TILE_ROWS_I8(1); break;
            }
        }
    }
    return bad;
}
#endif

/* bfp_gemm_f32 on the integer operands of bfp_image_u8 and bfp_pack_tiles_i8: activation bytes x
 * (row / pixel stride ldx, offset xoff bytes) with unit shifts xu (stride ldu, offset uoff blocks),
 * zx / zu a zero block (bytes 128, shifts 0) of gi blocks for taps outside the image, weight panels
 * wp with ncorr and uw. Returns nonzero if a result is not finite, -1 (nothing done) where the
 * machine has no AVX-512 VNNI. */
int64_t bfp_gemm_i8(int64_t p0, int64_t p1, int64_t J, int64_t taps, int64_t gi, int64_t n, const uint8_t *x,
                    int64_t ldx, int64_t xoff, const int32_t *xu, int64_t ldu, int64_t uoff, const int64_t *idx,
                    const uint8_t *zx, const int32_t *zu, const int8_t *wp, const int32_t *ncorr, const float *uw,
                    float *out, int64_t ldo, int init)
{
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
    if (n % 4) return -1;
    if (n == 16)
        return gemm_rows_i8(16, p0, p1, J, taps, gi, x, ldx, xoff, xu, ldu, uoff, idx, zx, zu, wp, ncorr, uw, out,
                            ldo, init);
    return gemm_rows_i8(n, p0, p1, J, taps, gi, x, ldx, xoff, xu, ldu, uoff, idx, zx, zu, wp, ncorr, uw, out, ldo,
                        init);
#else
    (void)p0; (void)p1; (void)J; (void)taps; (void)gi; (void)n; (void)x; (void)ldx; (void)xoff; (void)xu;
    (void)ldu; (void)uoff; (void)idx; (void)zx; (void)zu; (void)wp; (void)ncorr; (void)uw; (void)out; (void)ldo;
    (void)init;
    return -1;
#endif
}

/* Mantissas times their block's unit 2**(x - (M - 1)), as binary32: rows [r0, r1) of an
 * (R, kb * n) mantissa array with (R, kb) exponents. Exact wherever the unit is a normal binary32
 * number; a smaller unit goes through ldexpf (the matmul fast path only meets it in all-zero
 * blocks, whose products are zero either way). */
#define SCALE_ROWS(NAME, MT)                                                                        \
void NAME(int64_t r0, int64_t r1, int64_t kb, int64_t n, int m_bits, const MT *mant,              \
          const int16_t *exp, float *out)                                                           \
{                                                                                                   \
    for (int64_t r = r0; r < r1; r++)                                                               \
        for (int64_t b = 0; b < kb; b++) {                                                          \
            float unit = unit_of((int)exp[r * kb + b] - (m_bits - 1));                               \
            const MT *m = mant + (r * kb + b) * n;                                                  \
            float *o = out + (r * kb + b) * n;                                                      \
            for (int64_t i = 0; i < n; i++) o[i] = (float)m[i] * unit;                              \
        }                                                                                           \
}
SCALE_ROWS(bfp_scale_i16, int16_t)
SCALE_ROWS(bfp_scale_i32, int32_t)

/* Blocks [b0, b1) of n int16 mantissas (one exponent per block) times their unit, as
 * bfp_scale_i16, and the unit exponents s = x - (M - 1) they span, as bfp.nonzero_block_range
 * takes them: range[0] = the smallest s, range[1] = 1 if a block at that s has a nonzero
 * mantissa, range[2] = the smallest s above range[0] (INT64_MAX if none), range[3] = the largest
 * s. Blocks b0 < b1. */
void bfp_scale_range_i16(int64_t b0, int64_t b1, int64_t n, int m_bits, const int16_t *mant,
                         const int16_t *exp, float *out, int64_t *range)
{
    ExpRange r = RANGE_EMPTY;
    for (int64_t b = b0; b < b1; b++) {
        const int s = (int)exp[b] - (m_bits - 1);
        const float u = unit_of(s);
        const int16_t *m = mant + b * n;
        float *o = out + b * n;
        int nz = 0;
        for (int64_t i = 0; i < n; i++) {
            nz |= m[i];
            o[i] = (float)m[i] * u;
        }
        range_add(&r, s, nz);
    }
    range_store(&r, range);
}

/* Weight tiles to packed, scaled panels: tiles (cob * kb, n, n) int16 (tile ob * kb + b holds
 * output lanes r = 0..n-1 of block ob, input lanes i of reduction block b), texp (cob * kb, n)
 * one exponent per tile row. Column j = ob * n + r of the (J = cob * n, kb * n) weight matrix goes
 * to panel j / 16, lane j % 16: wp[(j / 16)][b][i][j % 16]; padding columns are zero. Written in
 * order, 16 lanes at a time. */
void bfp_pack_tiles(int64_t cob, int64_t kb, int64_t n, int m_bits, const int16_t *tiles,
                    const int16_t *texp, float *wp)
{
    const int64_t J = cob * n, panels = (J + 15) / 16;
    for (int64_t pt = 0; pt < panels; pt++)
        for (int64_t b = 0; b < kb; b++) {
            float unit[16];
            const int16_t *rows[16];
            for (int c = 0; c < 16; c++) {
                int64_t j = pt * 16 + c;
                if (j < J) {
                    int64_t tile = (j / n) * kb + b, r = j % n;
                    unit[c] = unit_of((int)texp[tile * n + r] - (m_bits - 1));
                    rows[c] = tiles + (tile * n + r) * n;
                } else {
                    unit[c] = 0.0f;
                    rows[c] = 0;
                }
            }
            float *o = wp + (pt * kb + b) * n * 16;
            for (int64_t i = 0; i < n; i++)
                for (int c = 0; c < 16; c++)
                    o[i * 16 + c] = rows[c] ? (float)rows[c][i] * unit[c] : 0.0f;
        }
}

/* BFP blocks to the internal format: m * 2**(x - (M - 1)) in binary32 (exact: m has at most 24
 * bits and the unit is at least 2**-149 wherever the value can reach 2**-126), then values below
 * 2**-126 flush to +0. Blocks [b0, b1) of n; exp: one per block. Never overflows (|value| <
 * 2**(x + 1) <= 2**128 - 2**(128 - M)). */
#define DEQUANT(NAME, MT)                                                                           \
void NAME(int64_t b0, int64_t b1, int64_t n, int m_bits, const MT *mant, const int16_t *exp,       \
          float *out)                                                                               \
{                                                                                                   \
    for (int64_t b = b0; b < b1; b++) {                                                             \
        float u = unit_of((int)exp[b] - (m_bits - 1));                                              \
        for (int64_t i = 0; i < n; i++) {                                                           \
            float v = (float)mant[b * n + i] * u;                                                   \
            out[b * n + i] = fabsf(v) < 0x1p-126f ? 0.0f : v;                                       \
        }                                                                                           \
    }                                                                                               \
}
DEQUANT(bfp_dequant_i16, int16_t)
DEQUANT(bfp_dequant_i32, int32_t)

/* a + b of binary32 rows, FTZ (bfp.mfu_add): the sum, or 1 if it overflows. */
static inline int add_row(const float *a, const float *b, int64_t n, float *o)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float s = a[i] + b[i];
        float m = fabsf(s);
        bad |= !(m <= FMAX);
        o[i] = m < 0x1p-126f ? 0.0f : s;
    }
    return bad;
}

/* Multi-function unit add on internal-format vectors: out[r] = a[r] + b[r % period], n lanes,
 * binary32 RNE (two binary32 operands: the exact sum is a multiple of 2**-149, so the only
 * rounding is binary32's own), results below 2**-126 flushed to +0. Rows [r0, r1). Returns 0, or
 * 1 + the first row where a sum overflows beyond the format's range. */
int64_t bfp_add_f32(int64_t r0, int64_t r1, int64_t n, const float *a, const float *b, int64_t period,
                    float *out)
{
    for (int64_t r = r0; r < r1; r++)
        if (add_row(a + r * n, b + (r % period) * n, n, out + r * n)) return r + 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The simulator's data movement and multi-function unit, straight between its register files
 * and the external-memory image. Each checks first and writes nothing when it refuses (the
 * instruction then fails with its state untouched), and each computes what the numpy code
 * computes (bfp.py, memory.py) bit for bit. 16-lane blocks take a vector path.
 * --------------------------------------------------------------------------------------------- */

static inline int any16(v16i m)
{
    int r = 0;
    for (int l = 0; l < 16; l++) r |= m[l];
    return r != 0;
}

/* 2-D DMA of BFP vectors with one-byte elements (M <= 7) from memory into a register file:
 * rows x items items of vpi vectors (a VRF entry is one vector, an MRF tile n of them); item
 * (r, i) is read at raw + r * mem_stride + i * vpi * (n + 1) and written to entry r * chip_stride
 * + i (mant: n elements per vector, exp: one per vector), rows in order (a later row wins where
 * entries repeat). Returns 1, writing nothing, if a vector's magnitude exceeds 2**M - 1 or its
 * exponent field is the reserved all-ones value or too wide; else 0 (with mant NULL: only checks). */
int64_t bfp_load_bfp_b1(int64_t rows, int64_t items, int64_t vpi, int64_t n, int m_bits, int exp_bits,
                        int exp_bias, const uint8_t *raw, int64_t mem_stride, int16_t *mant, int16_t *exp,
                        int64_t chip_stride)
{
    const int maxmag = (1 << m_bits) - 1, reserved = (1 << exp_bits) - 1;
    const int64_t vb = n + 1, vecs = items * vpi;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = raw + r * mem_stride;
        int bad = 0;
        for (int64_t v = 0; v < vecs; v++) bad |= row[v * vb + n] >= reserved;
        if (m_bits < 7)
            for (int64_t v = 0; v < vecs; v++)
                for (int64_t i = 0; i < n; i++) bad |= (row[v * vb + i] & 0x7f) > maxmag;
        if (bad) return 1;
    }
    if (!mant) return 0; /* checking only */
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = raw + r * mem_stride;
        int16_t *m = mant + r * chip_stride * vpi * n;
        int16_t *e = exp + r * chip_stride * vpi;
        for (int64_t v = 0; v < vecs; v++) {
            const uint8_t *src = row + v * vb;
            if (n == 16) {
                v16b b;
                memcpy(&b, src, sizeof b);
                v16h w = __builtin_convertvector(b, v16h);
                v16h neg = -(w >> 7), mag = w & 0x7f;
                v16h out = (mag ^ neg) - neg;
                memcpy(m + v * 16, &out, sizeof out);
            } else {
                for (int64_t i = 0; i < n; i++) {
                    int mag = src[i] & 0x7f;
                    m[v * n + i] = (int16_t)(src[i] & 0x80 ? -mag : mag);
                }
            }
            e[v] = (int16_t)(src[n] - exp_bias);
        }
    }
    return 0;
}

/* The inverse: rows x items items of vpi vectors from a register file (entry r * chip_stride + i)
 * to memory (out + r * mem_stride + i * vpi * (n + 1)): element byte |m| | sign << 7, then the
 * biased exponent byte. */
void bfp_store_bfp_b1(int64_t rows, int64_t items, int64_t vpi, int64_t n, int exp_bias, const int16_t *mant,
                      const int16_t *exp, int64_t chip_stride, uint8_t *out, int64_t mem_stride)
{
    const int64_t vb = n + 1, vecs = items * vpi;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = out + r * mem_stride;
        const int16_t *m = mant + r * chip_stride * vpi * n;
        const int16_t *e = exp + r * chip_stride * vpi;
        for (int64_t v = 0; v < vecs; v++) {
            uint8_t *dst = row + v * vb;
            if (n == 16) {
                v16h x;
                memcpy(&x, m + v * 16, sizeof x);
                v16h neg = x >> 15;
                v16h byte = ((x ^ neg) - neg) | (neg & 0x80);
                v16b b = __builtin_convertvector(byte, v16b);
                memcpy(dst, &b, sizeof b);
            } else {
                for (int64_t i = 0; i < n; i++) {
                    int x = m[v * n + i];
                    dst[i] = (uint8_t)(x < 0 ? (-x) | 0x80 : x);
                }
            }
            dst[n] = (uint8_t)(e[v] + exp_bias);
        }
    }
}

/* 2-D DMA of internal-format vectors (n binary32 each) from memory into the FVRF, as
 * memory.decode_fp: values below 2**-126 (subnormals, -0) become +0. Returns 1, writing nothing,
 * if a value is NaN or infinite; else 0. */
int64_t bfp_load_f32(int64_t rows, int64_t items, int64_t n, const uint8_t *raw, int64_t mem_stride, float *out,
                     int64_t chip_stride)
{
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = raw + r * mem_stride;
        int bad = 0;
        for (int64_t i = 0; i < items * n; i++) {
            uint32_t bits;
            memcpy(&bits, row + 4 * i, 4);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (bad) return 1;
    }
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = raw + r * mem_stride;
        float *o = out + r * chip_stride * n;
        for (int64_t i = 0; i < items * n; i++) {
            float v;
            memcpy(&v, row + 4 * i, 4);
            o[i] = fabsf(v) < 0x1p-126f ? 0.0f : v;
        }
    }
    return 0;
}


static inline v16i max16i(v16i a, v16i b)
{
    v16i gt = a > b;
    return (a & gt) | (b & ~gt);
}

/* The largest lane (lanes are non-negative binary32 bit patterns, ordered as integers). */
static inline int32_t hmax16(v16i v)
{
#if defined(__clang__)
    v = max16i(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
    v = max16i(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
    v = max16i(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    v = max16i(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
#else
    const v16i s8 = {8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7};
    const v16i s4 = {4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11};
    const v16i s2 = {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
    const v16i s1 = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
    v = max16i(v, __builtin_shuffle(v, s8));
    v = max16i(v, __builtin_shuffle(v, s4));
    v = max16i(v, __builtin_shuffle(v, s2));
    v = max16i(v, __builtin_shuffle(v, s1));
#endif
    return v[0];
}

/* quantize of one 16-lane block x (none NaN; M <= 21): the signed mantissas, the exponent in *e. */
static inline v16i quantize16(v16f x, int m_bits, int exp_min, int exp_max, int *e_out)
{
    v16i bits;
    memcpy(&bits, &x, sizeof bits);
    v16i ab = bits & 0x7fffffff;
    const v16i inf = ab > 0x7f7fffff;
    ab = (inf & 0x7f7fffff) | (~inf & ab); /* +-Inf saturates */
    int32_t top = hmax16(ab);
    int e;
    if (top >= 0x00800000) {
        /* a normal maximum 1.f * 2**x: RNE(1.f * 2**(M - 1)) reaches 2**M exactly when f >= 1 - 2**-M
         * (the tie 2**M - 1/2 rounds to the even 2**M) */
        e = (top >> 23) - 127 + ((top & 0x7fffff) >= 0x800000 - (1 << (23 - m_bits)));
        e = e < exp_min ? exp_min : e > exp_max ? exp_max : e;
    } else {
        float amax;
        memcpy(&amax, &top, sizeof amax);
        e = block_exponent(amax, m_bits, exp_min, exp_max);
    }
    *e_out = e;
    const int k = (m_bits - 1) - e;
    const float s1 = k > 127 ? pow2f(k - 127) : pow2f(k), s2 = k > 127 ? pow2f(127) : 1.0f;
    v16f a;
    memcpy(&a, &ab, sizeof a);
    v16f t = a * s1 * s2;
    /* RNE to an integer: exact through 1.5 * 2**23 below 2**22; anything at or above 2**22
     * exceeds 2**M - 1 and saturates */
    const float sat = (float)((1 << m_bits) - 1);
    v16f r = (t + 12582912.0f) - 12582912.0f;
    v16i small = t < 4194304.0f;
    v16i rb, tb;
    memcpy(&rb, &r, sizeof rb);
    memcpy(&tb, &t, sizeof tb);
    v16i qb = (small & rb) | (~small & tb);
    v16f q;
    memcpy(&q, &qb, sizeof q);
    v16i over = q > sat;
    int32_t sat_bits;
    memcpy(&sat_bits, &sat, sizeof sat_bits);
    qb = (over & sat_bits) | (~over & qb);
    memcpy(&q, &qb, sizeof q);
    v16i m = __builtin_convertvector(q, v16i);
    v16i neg = bits >> 31;
    return (m ^ neg) - neg;
}

/* The memory encoding of one 16-lane vector with one-byte elements. */
static inline void encode16(v16i m, int e, int exp_bias, uint8_t *dst)
{
    v16i neg = m >> 31;
    v16i byte = ((m ^ neg) - neg) | (neg & 0x80);
    v16b b = __builtin_convertvector(byte, v16b);
    memcpy(dst, &b, sizeof b);
    dst[16] = (uint8_t)(e + exp_bias);
}

/* One block of n binary32 values (none NaN) to BFP, as bfp_quantize_f32, mantissas as int16. */
static inline void quantize_block(const float *v, int64_t n, int m_bits, int exp_min, int exp_max, int16_t *mant,
                                  int16_t *exp)
{
    if (n == 16 && m_bits <= 21) {
        int e;
        v16h m16 = __builtin_convertvector(quantize16(load16(v), m_bits, exp_min, exp_max, &e), v16h);
        memcpy(mant, &m16, sizeof m16);
        *exp = (int16_t)e;
        return;
    }
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        amax = a > amax ? a : amax;
    }
    const int e = block_exponent(amax > FMAX ? FMAX : amax, m_bits, exp_min, exp_max);
    float s1, s2;
    block_scale(m_bits, e, &s1, &s2);
    for (int64_t i = 0; i < n; i++) mant[i] = (int16_t)quantize_one(v[i], s1, s2, m_bits);
    *exp = (int16_t)e;
}

static inline int has_nan(const float *v, int64_t n)
{
    if (n == 16) {
        v16i bits;
        memcpy(&bits, v, sizeof bits);
        return any16((bits & 0x7fffffff) > 0x7f800000);
    }
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, v + i, 4);
        bad |= (bits & 0x7fffffffu) > 0x7f800000u;
    }
    return bad;
}

/* quantize of rows [0, rows) of n binary32 values (one block each) into int16 mantissas and
 * exponents (M <= 15, exp_max <= 127). Returns 1 + the first row holding a NaN, writing nothing;
 * else 0. */
int64_t bfp_quantize_rows(int64_t rows, int64_t n, int m_bits, int exp_min, int exp_max, const float *x,
                          int16_t *mant, int16_t *exp)
{
    for (int64_t r = 0; r < rows; r++)
        if (has_nan(x + r * n, n)) return r + 1;
    for (int64_t r = 0; r < rows; r++) quantize_block(x + r * n, n, m_bits, exp_min, exp_max, mant + r * n, exp + r);
    return 0;
}

/* BFP vectors to the internal format (bfp.dequantize_internal), int16 mantissas: rows of n. */
void bfp_dequant_rows(int64_t rows, int64_t n, int m_bits, const int16_t *mant, const int16_t *exp, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float u = unit_of((int)exp[r] - (m_bits - 1));
        const int16_t *m = mant + r * n;
        float *o = out + r * n;
        if (n == 16) {
            v16h x;
            memcpy(&x, m, sizeof x);
            v16f v = __builtin_convertvector(x, v16f) * u;
            v16i bits;
            memcpy(&bits, &v, sizeof bits);
            v16i tiny = (bits & 0x7fffffff) < 0x00800000;
            bits &= ~tiny;
            memcpy(o, &bits, sizeof bits);
        } else {
            for (int64_t i = 0; i < n; i++) {
                float v = (float)m[i] * u;
                o[i] = fabsf(v) < 0x1p-126f ? 0.0f : v;
            }
        }
    }
}

static inline int add_overflows(const float *a, const float *b, int64_t n)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= !(fabsf(a[i] + b[i]) <= FMAX);
    return bad;
}

/* The multi-function unit's add (vop add; bfp.mfu_add_periodic), then optionally ReLU
 * (bfp.mfu_relu), then optionally quantisation (qnt; bfp.quantize) and the memory encoding of
 * the quantised rows (st; memory.encode_bfp), in one pass over rows [0, rows) of n lanes:
 *   s = a[r] + b[r % period]  -> out[r]          (after the add: out[r] = s; with relu: max(s, +0))
 *   q = quantize(out[r])      -> vm, ve          (when vm is not NULL)
 *   encode(q)                 -> mem + r * (n + 1)  (when mem is not NULL; one-byte elements)
 * out may be a (in place); neither may overlap b or the other outputs. Returns 1 + the first row
 * whose sum overflows, writing nothing; else 0. */
static inline v16f ftz16(v16f s)
{
    v16i bits;
    memcpy(&bits, &s, sizeof bits);
    bits &= ~((bits & 0x7fffffff) < 0x00800000);
    memcpy(&s, &bits, sizeof s);
    return s;
}

/* bfp_mfu_chain for 16 lanes: 0, or 1 (nothing written) if a sum overflows. */
static int64_t mfu_chain16(int64_t rows, const float *a, const float *b, int64_t period, int relu, float *out,
                           int m_bits, int exp_min, int exp_max, int16_t *vm, int16_t *ve, uint8_t *mem, int exp_bias)
{
    v16i bad = {0};
    for (int64_t r = 0, j = 0; r < rows; r++) {
        v16f s = load16(a + r * 16) + load16(b + j * 16);
        v16i bits;
        memcpy(&bits, &s, sizeof bits);
        bad |= (bits & 0x7fffffff) >= 0x7f800000;
        if (++j == period) j = 0;
    }
    if (any16(bad)) return 1; /* the general path finds the row */
    for (int64_t r = 0, j = 0; r < rows; r++) {
        v16f s = ftz16(load16(a + r * 16) + load16(b + j * 16));
        if (++j == period) j = 0;
        if (relu) {
            v16i bits;
            memcpy(&bits, &s, sizeof bits);
            bits &= ~(bits >> 31);
            memcpy(&s, &bits, sizeof s);
        }
        store16(out + r * 16, s);
        if (vm) {
            int e;
            v16i m = quantize16(s, m_bits, exp_min, exp_max, &e);
            v16h m16 = __builtin_convertvector(m, v16h);
            memcpy(vm + r * 16, &m16, sizeof m16);
            ve[r] = (int16_t)e;
            if (mem) encode16(m, e, exp_bias, mem + r * 17);
        }
    }
    return 0;
}

int64_t bfp_mfu_chain(int64_t rows, int64_t n, const float *a, const float *b, int64_t period, int relu, float *out,
                      int m_bits, int exp_min, int exp_max, int16_t *vm, int16_t *ve, uint8_t *mem, int exp_bias)
{
    if (n == 16 && m_bits <= 21) {
        if (!mfu_chain16(rows, a, b, period, relu, out, m_bits, exp_min, exp_max, vm, ve, mem, exp_bias)) return 0;
    }
    for (int64_t r = 0; r < rows; r++)
        if (add_overflows(a + r * n, b + (r % period) * n, n)) return r + 1;
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * n;
        (void)add_row(a + r * n, b + (r % period) * n, n, o);
        if (relu)
            for (int64_t i = 0; i < n; i++) o[i] = o[i] > 0.0f ? o[i] : 0.0f;
        if (vm) {
            quantize_block(o, n, m_bits, exp_min, exp_max, vm + r * n, ve + r);
            if (mem) bfp_store_bfp_b1(1, 1, 1, n, exp_bias, vm + r * n, ve + r, 0, mem + r * (n + 1), 0);
        }
    }
    return 0;
}

/* bfp.to_internal of a binary64 value: RNE to 24 significant bits with an unbounded exponent, then
 * +0 below 2**-126 (the caller rules out overflow). */
static inline float to_internal_d(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits = (bits + 0x0FFFFFFFull + ((bits >> 29) & 1)) & ~0x1FFFFFFFull;
    memcpy(&v, &bits, sizeof v);
    return fabs(v) < 0x1p-126 ? 0.0f : (float)v;
}

/* Pooling windows over an image of internal-format values img (pixels, cb * n): output pixel p,
 * block b, over taps t in order of the pixels idx[p * taps + t] (< 0: outside the input, skipped).
 * mode 0: the maximum (golden.max_pool; every window holds a pixel). mode 1: the sum, each add
 * rounded as bfp.mfu_add, times recip[p] rounded as bfp.mfu_mul (golden.avg_pool). out: (P, cb * n).
 * Returns 1 if a sum overflows (out is then partly written), else 0. */
int64_t bfp_pool(int64_t p, int64_t taps, int64_t cb, int64_t n, const float *img, const int64_t *idx, int mode,
                 const float *recip, float *out)
{
    const int64_t w = cb * n;
    for (int64_t q = 0; q < p; q++) {
        float *o = out + q * w;
        const int64_t *ix = idx + q * taps;
        if (mode == 0) {
            for (int64_t i = 0; i < w; i++) o[i] = -INFINITY;
            for (int64_t t = 0; t < taps; t++) {
                if (ix[t] < 0) continue;
                const float *v = img + ix[t] * w;
                for (int64_t i = 0; i < w; i++) o[i] = v[i] > o[i] ? v[i] : o[i];
            }
            continue;
        }
        for (int64_t i = 0; i < w; i++) o[i] = 0.0f;
        int bad = 0;
        for (int64_t t = 0; t < taps; t++) {
            if (ix[t] < 0) continue;
            const float *v = img + ix[t] * w;
            for (int64_t i = 0; i < w; i++) {
                float s = o[i] + v[i];
                float m = fabsf(s);
                bad |= !(m <= FMAX);
                o[i] = m < 0x1p-126f ? 0.0f : s;
            }
        }
        if (bad) return 1;
        const double r = recip[q];
        for (int64_t i = 0; i < w; i++) o[i] = to_internal_d((double)o[i] * r);
    }
    return 0;
}

/* ---- the cycle model's DMA phases (accelml.sim.cycles.load_phase / store_phase, the definition) ----
 * t: latency, max_outstanding, bw_num, bw_den, word_bytes, row_bytes, page_miss, lanes (entries a DMA
 * moves per cycle at most) and a store's room (accelml.hdl.engine.layouts.dma_lanes / dma_store_room);
 * the transfer: item,
 * addr, rows, length, mem_stride; the DRAM at the start: has_open, open_row, wait. Returns the
 * phase's cycles; out[0] = cycle of the last accepted request (-1: none), out[1] = has an open row,
 * out[2] = the open row. */
typedef struct {
    int64_t bw_num, word_credit, cap, credit, row_bytes, page_miss, wait, act_done, last, open;
    int has_open;
} Dram;

static inline int dram_ready(Dram *d, int64_t now, int valid, int64_t byte_addr)
{
    int ok = d->credit >= d->word_credit && now >= d->wait;
    if (d->row_bytes) {
        int64_t row = byte_addr / d->row_bytes;
        if (valid && (!d->has_open || row != d->open)) {
            d->open = row;
            d->has_open = 1;
            d->act_done = now + d->page_miss;
            ok = 0;
        }
        ok = ok && now >= d->act_done;
    }
    return ok;
}

static inline void dram_tick(Dram *d, int accept, int64_t now)
{
    if (accept) d->last = now;
    int64_t c = d->credit - (accept ? d->word_credit : 0) + d->bw_num;
    d->credit = c < d->cap ? c : d->cap;
}

static void dram_init(Dram *d, const int64_t *t, int64_t has_open, int64_t open_row, int64_t wait)
{
    d->bw_num = t[2];
    d->word_credit = t[4] * t[3];
    d->cap = d->word_credit + d->bw_num;  /* a word and one cycle's credit (memory_model.v) */
    d->credit = d->cap;
    d->row_bytes = t[5];
    d->page_miss = t[6];
    d->wait = wait;
    d->act_done = 0;
    d->last = -1;
    d->open = open_row;
    d->has_open = (int)has_open;
}

static int64_t dram_out(const Dram *d, int64_t now, int64_t *out)
{
    out[0] = d->last;
    out[1] = d->has_open;
    out[2] = d->open;
    return now + 1;
}

int64_t dma_load_phase(const int64_t *t, int64_t item, int64_t addr, int64_t rows, int64_t length,
                       int64_t mem_stride, int64_t has_open, int64_t open_row, int64_t wait, int64_t *out)
{
    const int64_t latency = t[0], max_out = t[1], w = t[4], lanes = t[7];
    const int64_t row_bytes = length * item;
    Dram d;
    dram_init(&d, t, has_open, open_row, wait);
    int64_t *due = malloc(sizeof(int64_t) * (size_t)(max_out + 1));
    if (!due) return -1;
    int64_t head = 0, tail = 0, count = 0;
    int64_t g_rows = rows, g_row = addr, g_word = addr / w, g_last = (addr + row_bytes - 1) / w;
    int g_active = 1;
    int64_t fill = 0, c_rows = rows, c_row = addr, c_rem = row_bytes;
    int c_first = 1;
    int64_t e_left = rows * length;
    for (int64_t now = 0;; now++) {
        if (e_left == 0) {
            free(due);
            return dram_out(&d, now, out);
        }
        int ready = dram_ready(&d, now, g_active, g_word * w) && count < max_out;
        int accept = g_active && ready;
        int64_t emit = fill / item < lanes ? fill / item : lanes;
        int64_t fill_after = fill - emit * item;
        int take = fill_after < item && c_rem != 0;
        int got = take && count > 0 && due[head] <= now;
        if (accept) {
            due[tail] = now + latency;
            tail = (tail + 1) % (max_out + 1);
            count++;
            if (g_word == g_last) {
                g_rows--;
                g_row += mem_stride;
                g_word = g_row / w;
                g_last = (g_row + row_bytes - 1) / w;
                if (g_rows == 0) g_active = 0;
            } else {
                g_word++;
            }
        }
        e_left -= emit;
        if (got) {
            head = (head + 1) % (max_out + 1);
            count--;
            int64_t off = c_first ? c_row % w : 0;
            int64_t k = c_rem < w - off ? c_rem : w - off;
            fill = fill_after + k;
            c_rem -= k;
            c_first = 0;
            if (c_rem == 0 && c_rows != 1) {
                c_rows--;
                c_row += mem_stride;
                c_rem = row_bytes;
                c_first = 1;
            }
        } else {
            fill = fill_after;
        }
        dram_tick(&d, accept, now);
    }
}

int64_t dma_store_phase(const int64_t *t, int64_t item, int64_t addr, int64_t rows, int64_t length,
                        int64_t mem_stride, int64_t has_open, int64_t open_row, int64_t wait, int64_t *out)
{
    const int64_t w = t[4], lanes = t[7], room = t[8];
    Dram d;
    dram_init(&d, t, has_open, open_row, wait);
    int64_t s_i = 0, p_n = 0;
    int s_read = 0;
    int64_t o_rows = rows, o_row = addr, o_pos = addr % w, o_fill = 0, o_word = addr / w;
    for (int64_t now = 0;; now++) {
        const int64_t pend = p_n * item;
        const int s_pushed = s_read && p_n == 0;
        const int send = o_fill != 0 && (o_pos + o_fill >= w || s_pushed);
        const int accept = dram_ready(&d, now, send, o_word * w) && send;
        const int row_end = s_pushed && o_fill == 0;
        int64_t n = 0;
        if (!s_read) {
            n = (room - o_fill - pend) / item;
            if (n > lanes) n = lanes;
            if (n > length - s_i) n = length - s_i;
        }
        if (accept) {
            o_fill -= o_pos + o_fill >= w ? w - o_pos : o_fill;
            o_pos = 0;
            o_word++;
        }
        o_fill += pend;
        p_n = n;
        s_i += n;
        if (s_i == length) s_read = 1;
        if (row_end) {
            if (o_rows == 1) return dram_out(&d, now, out);
            o_rows--;
            o_row += mem_stride;
            o_pos = o_row % w;
            o_word = o_row / w;
            s_i = 0;
            s_read = 0;
        }
        dram_tick(&d, accept, now);
    }
}
