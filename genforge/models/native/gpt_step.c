/* One GPT decode step (GPT-2 architecture, float32, CPU), fused: every layer of every row in one call.
 *
 * Built on first use by genforge/models/native/__init__.py (cc -O3 -march=native) and called through ctypes
 * from GPT.decode. Eager PyTorch spends ~5 us of dispatch per operator, ~16 operators per layer; at batch 1
 * a small model's step is that overhead, not arithmetic. This file does the same arithmetic as
 * genforge/models/gpt.py in plain loops the compiler vectorises:
 *
 *   x = wte[token] + wpe[pos]
 *   per layer: x += proj(attention(ln_1(x))); x += fc2(gelu(fc(ln_2(x))))   (exact erf GELU)
 *   logits = ln_f(x) @ wte^T                                                 (tied head)
 *
 * Row r is slot slots[r] of the key/value cache at position pos[r]: its new key and value are written there
 * and it attends to positions 0..pos[r] of its own slot only, so rows of any lengths share one call.
 *
 * Layout: linear weights transposed, [in, out] row-major (GPT._decode_plan); caches k, v [L, S, H, block, D];
 * dims = {L, C, H, V, block, S}; ptrs = {wte, wpe, lnf_w, lnf_b, then per layer: ln1_w, ln1_b, attn_w,
 * attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fc2_w, fc2_b, then k, v}. A NULL bias is no bias.
 * Sums differ from PyTorch's GEMMs only in order (relative differences ~1e-7).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PER_LAYER 12
#define PARALLEL_MIN (1 << 18) /* multiply-adds worth splitting across threads (OpenMP, when built with it) */
#ifdef _OPENMP
#include <omp.h>
#endif

/* Threads OpenMP would use (1 without OpenMP): the most gf_gpt_forward can be given. */
int gf_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* VW floats per vector: 16 where the CPU has AVX-512 (one zmm register), else 8 (AVX2's ymm). Each output is
 * summed over its inputs in the same order at either width, so both give the same bits. */
#ifdef __AVX512F__
#define VW 16
#else
#define VW 8
#endif
typedef float vf __attribute__((vector_size(VW * 4), aligned(4))); /* unaligned loads allowed */
typedef int32_t vi __attribute__((vector_size(VW * 4)));

static inline vf biasv(const float *b, int64_t j) { return b ? *(const vf *)(b + j) : (vf){0}; }

/* One row, NV (<= 8) vectors of outputs from column j: y[j:j+NV·VW] = b + x @ w[:, j:j+NV·VW]; x [in], w [in, out]
 * row-major. The NV accumulators live in registers while the inputs stream past. */
static inline __attribute__((always_inline)) void cols(const int NV, float *restrict y, const float *restrict x,
                                                       const float *restrict w, const float *restrict b, int64_t in,
                                                       int64_t out, int64_t j) {
    vf a[8];
    for (int k = 0; k < NV; k++) a[k] = biasv(b, j + VW * k);
    for (int64_t i = 0; i < in; i++) {
        const float xi = x[i];
        const float *wi = w + i * out + j;
        for (int k = 0; k < NV; k++) a[k] += xi * *(const vf *)(wi + VW * k);
    }
    for (int k = 0; k < NV; k++) *(vf *)(y + j + VW * k) = a[k];
}

/* One row: y[j] = b[j] + sum_i x[i] * w[i, j] for j < out. The whole vectors of columns are split evenly across
 * the threads (each thread's share of w stays in its core's cache from step to step), eight at a time. */
static void linear1(float *restrict y, const float *restrict x, const float *restrict w, const float *restrict b,
                    int64_t in, int64_t out, int threads) {
    const int64_t nvec = out / VW;
    const int team = threads > 1 && in * out >= PARALLEL_MIN && nvec > 1 ? (threads < nvec ? threads : (int)nvec) : 1;
#pragma omp parallel num_threads(team) if (team > 1)
    {
#ifdef _OPENMP
        const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
#else
        const int64_t t = 0, n = 1;
#endif
        int64_t j = nvec * t / n * VW;
        const int64_t end = nvec * (t + 1) / n * VW;
        for (; j + 8 * VW <= end; j += 8 * VW) cols(8, y, x, w, b, in, out, j);
        switch ((end - j) / VW) {
            case 7: cols(7, y, x, w, b, in, out, j); break;
            case 6: cols(6, y, x, w, b, in, out, j); break;
            case 5: cols(5, y, x, w, b, in, out, j); break;
            case 4: cols(4, y, x, w, b, in, out, j); break;
            case 3: cols(3, y, x, w, b, in, out, j); break;
            case 2: cols(2, y, x, w, b, in, out, j); break;
            case 1: cols(1, y, x, w, b, in, out, j); break;
            default: break;
        }
    }
    for (int64_t j = nvec * VW; j < out; j++) {
        float a = b ? b[j] : 0.0f;
        for (int64_t i = 0; i < in; i++) a += x[i] * w[i * out + j];
        y[j] = a;
    }
}

/* NR (<= 6) rows by 2·VW columns from j: Y[r, j:j+2VW] = b + X[r] @ w[:, j:j+2VW]. The 2·NR accumulators
 * stay in registers; per input, two loads of w feed 2·NR multiply-adds (the shape of BLIS's AVX2 kernel). */
static inline __attribute__((always_inline)) void strip(const int NR, float *restrict Y, int64_t sy,
                                                        const float *restrict X, int64_t sx, const float *restrict w,
                                                        const float *restrict b, int64_t in, int64_t out, int64_t j) {
    vf lo[6], hi[6];
    for (int r = 0; r < NR; r++) lo[r] = biasv(b, j), hi[r] = biasv(b, j + VW);
    for (int64_t i = 0; i < in; i++) {
        const vf w0 = *(const vf *)(w + i * out + j), w1 = *(const vf *)(w + i * out + j + VW);
        for (int r = 0; r < NR; r++) {
            const float xr = X[r * sx + i];
            lo[r] += xr * w0;
            hi[r] += xr * w1;
        }
    }
    for (int r = 0; r < NR; r++) *(vf *)(Y + r * sy + j) = lo[r], *(vf *)(Y + r * sy + j + VW) = hi[r];
}

/* R rows: Y[r] = b + X[r] @ w, rows of X at stride sx and of Y at stride sy (floats). Column strips of w
 * (in x 2VW, kept in L1) are read once for all rows, six rows at a time; one row alone takes linear1. */
static void linear(float *restrict Y, int64_t sy, const float *restrict X, int64_t sx, const float *restrict w,
                   const float *restrict b, int64_t R, int64_t in, int64_t out, int threads) {
    if (R == 1 || out % (2 * VW)) {
        for (int64_t r = 0; r < R; r++) linear1(Y + r * sy, X + r * sx, w, b, in, out, threads);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && R * in * out >= PARALLEL_MIN)
    for (int64_t j = 0; j < out; j += 2 * VW) {
        int64_t r = 0;
        for (; r + 6 <= R; r += 6) strip(6, Y + r * sy, sy, X + r * sx, sx, w, b, in, out, j);
        switch (R - r) {
            case 5: strip(5, Y + r * sy, sy, X + r * sx, sx, w, b, in, out, j); break;
            case 4: strip(4, Y + r * sy, sy, X + r * sx, sx, w, b, in, out, j); break;
            case 3: strip(3, Y + r * sy, sy, X + r * sx, sx, w, b, in, out, j); break;
            case 2: strip(2, Y + r * sy, sy, X + r * sx, sx, w, b, in, out, j); break;
            case 1: strip(1, Y + r * sy, sy, X + r * sx, sx, w, b, in, out, j); break;
            default: break;
        }
    }
}

/* y = (x - mean) / sqrt(var + 1e-5) * g + b over n values (biased variance, nn.LayerNorm's eps). */
static void layer_norm(float *restrict y, const float *restrict x, const float *restrict g, const float *restrict b,
                       int64_t n) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        const double d = x[i] - mean;
        var += d * d;
    }
    const float rstd = (float)(1.0 / sqrt(var / (double)n + 1e-5)), m = (float)mean;
    for (int64_t i = 0; i < n; i++) {
        const float v = (x[i] - m) * rstd;
        y[i] = (g ? v * g[i] : v) + (b ? b[i] : 0.0f);
    }
}

/* Causal attention of one row's query over its slot's positions 0..pos (its own key and value already there).
 * qkv [3C] (q first, heads contiguous), kc, vc: this layer's and slot's [H, block, D]; y [C]; att [pos + 1]. */
static void attend(float *restrict y, const float *restrict qkv, const float *restrict kc, const float *restrict vc,
                   float *restrict att, int64_t pos, int64_t C, int64_t H, int64_t block) {
    const int64_t D = C / H;
    const float scale = (float)(1.0 / sqrt((double)D));
    for (int64_t h = 0; h < H; h++) {
        const float *q = qkv + h * D;
        const float *K = kc + h * block * D, *V = vc + h * block * D;
        float *out = y + h * D;
        float top = -INFINITY;
        for (int64_t t = 0; t <= pos; t++) {
            const float *k = K + t * D;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t d = 0; d < D; d++) s += q[d] * k[d];
            att[t] = s * scale;
            if (att[t] > top) top = att[t];
        }
        float total = 0.0f;
        for (int64_t t = 0; t <= pos; t++) {
            att[t] = expf(att[t] - top);
            total += att[t];
        }
        const float inv = 1.0f / total;
        memset(out, 0, (size_t)D * sizeof(float));
        for (int64_t t = 0; t <= pos; t++) {
            const float a = att[t] * inv, *v = V + t * D;
            for (int64_t d = 0; d < D; d++) out[d] += a * v[d];
        }
    }
}

/* exp(x) for VW floats (Cephes' expf: range reduction by ln 2, degree-6 polynomial; ~1 ulp), x >= -87. */
static inline vf expv(vf x) {
    const vi low = x < -87.0f; /* all ones where x is below the range */
    const vf floor = (vf){0} - 87.0f;
    x = (vf)(((vi)x & ~low) | ((vi)floor & low));
    const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    const vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf y = 1.9875691500e-4f * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    const vi e = (__builtin_convertvector(n, vi) + 127) << 23; /* 2^n as float bits */
    return y * (vf)e;
}

/* GELU(x) = x/2 (1 + erf(x / sqrt 2)) for VW floats, erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7),
 * the formula PyTorch's vectorised CPU GELU uses. */
static inline vf geluv(vf x) {
    const vf z = x * (float)M_SQRT1_2, a = (vf)((vi)z & INT32_MAX); /* |z| */
    const vf t = 1.0f / (0.3275911f * a + 1.0f);
    const vf r = (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f;
    const vf e = 1.0f - r * t * expv(-(z * z)); /* erf(|z|) */
    return 0.5f * x * (1.0f + (vf)((vi)e | ((vi)z & INT32_MIN))); /* erf(z): the sign of z */
}

static void gelu(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + VW <= n; i += VW) *(vf *)(x + i) = geluv(*(const vf *)(x + i));
    if (i < n) { /* the tail through one padded vector */
        vf tail = {0};
        for (int64_t k = i; k < n; k++) tail[k - i] = x[k];
        tail = geluv(tail);
        for (int64_t k = i; k < n; k++) x[k] = tail[k - i];
    }
}

/* The forward pass of B rows, layer by layer; logits of the rows listed in out_rows (M of them) into
 * logits [M, V]. Row r is token tokens[r] at position pos[r] of slot slots[r]: the step gives rows of
 * different slots, a prefill the consecutive positions of one slot (every row's key and value of a layer
 * is written before any row of that layer attends, so row r sees the rows before it). Two rows must not
 * share a slot and position. Returns 0; 1 when scratch memory cannot be had; 2 when a token, slot,
 * position or output row is out of range (nothing is written then). Large products use up to nthreads
 * threads (OpenMP builds). */
int gf_gpt_forward(const int64_t *dims, const float *const *ptrs, int64_t B, const int64_t *tokens,
                   const int64_t *slots, const int64_t *pos, int64_t M, const int64_t *out_rows, float *logits,
                   int64_t nthreads) {
    const int64_t L = dims[0], C = dims[1], H = dims[2], V = dims[3], block = dims[4], S = dims[5];
    const float *wte = ptrs[0], *wpe = ptrs[1], *lnf_w = ptrs[2], *lnf_b = ptrs[3];
    float *kcache = (float *)ptrs[4 + PER_LAYER * L], *vcache = (float *)ptrs[5 + PER_LAYER * L];
    const int64_t D = C / H;
    for (int64_t r = 0; r < B; r++)
        if (tokens[r] < 0 || tokens[r] >= V || slots[r] < 0 || slots[r] >= S || pos[r] < 0 || pos[r] >= block) return 2;
    for (int64_t m = 0; m < M; m++)
        if (out_rows[m] < 0 || out_rows[m] >= B) return 2;
    const int threads = nthreads < 1 ? 1 : (int)nthreads;
    float *scratch = malloc(((size_t)B * 10 * C + (size_t)B * block) * sizeof(float));
    if (!scratch) return 1;
    /* per row: x [C] residual stream, h [C], qkv [3C], y [C], ff [4C] at stride 10C; then att [block] */
    float *att = scratch + B * 10 * C;
    for (int64_t r = 0; r < B; r++) {
        float *x = scratch + r * 10 * C;
        const float *te = wte + tokens[r] * C, *pe = wpe + pos[r] * C;
        for (int64_t i = 0; i < C; i++) x[i] = te[i] + pe[i];
    }
    const int64_t st = 10 * C; /* row stride of the scratch */
    float *X = scratch, *Hn = X + C, *QKV = Hn + C, *Y = QKV + 3 * C, *FF = Y + C;
    for (int64_t l = 0; l < L; l++) {
        const float *const *p = ptrs + 4 + PER_LAYER * l;
        for (int64_t r = 0; r < B; r++) layer_norm(Hn + r * st, X + r * st, p[0], p[1], C);
        linear(QKV, st, Hn, st, p[2], p[3], B, C, 3 * C, threads);
        for (int64_t r = 0; r < B; r++)
            for (int64_t hd = 0; hd < H; hd++) { /* this row's key and value, at its slot and position */
                const int64_t at = (((l * S + slots[r]) * H + hd) * block + pos[r]) * D;
                memcpy(kcache + at, QKV + r * st + C + hd * D, (size_t)D * sizeof(float));
                memcpy(vcache + at, QKV + r * st + 2 * C + hd * D, (size_t)D * sizeof(float));
            }
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && B * block * C >= PARALLEL_MIN)
        for (int64_t r = 0; r < B; r++) {
            const int64_t at = (l * S + slots[r]) * H * block * D; /* this layer's, this slot's [H, block, D] */
            attend(Y + r * st, QKV + r * st, kcache + at, vcache + at, att + r * block, pos[r], C, H, block);
        }
        linear(Hn, st, Y, st, p[4], p[5], B, C, C, threads);
        for (int64_t r = 0; r < B; r++) {
            float *x = X + r * st, *h = Hn + r * st;
            for (int64_t i = 0; i < C; i++) x[i] += h[i];
            layer_norm(h, x, p[6], p[7], C);
        }
        linear(FF, st, Hn, st, p[8], p[9], B, C, 4 * C, threads);
        for (int64_t r = 0; r < B; r++) gelu(FF + r * st, 4 * C);
        linear(Hn, st, FF, st, p[10], p[11], B, 4 * C, C, threads);
        for (int64_t r = 0; r < B; r++) {
            float *x = X + r * st, *h = Hn + r * st;
            for (int64_t i = 0; i < C; i++) x[i] += h[i];
        }
    }
    for (int64_t m = 0; m < M; m++) {
        float *x = scratch + out_rows[m] * 10 * C, *h = x + C, *out = logits + m * V;
        layer_norm(h, x, lnf_w, lnf_b, C);
        for (int64_t v = 0; v < V; v++) { /* tied head: wte [V, C] row-major */
            const float *e = wte + v * C;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < C; i++) s += h[i] * e[i];
            out[v] = s;
        }
    }
    free(scratch);
    return 0;
}

typedef void (*draw_fn)(const float *logits, int64_t B, int64_t V, float temperature, const float *u, int64_t *tokens);

/* The first index of the largest logit (a NaN counts as largest), as torch.argmax. */
static int64_t argmax(const float *x, int64_t V) {
    int64_t k = 0;
    for (int64_t i = 0; i < V; i++) {
        if (x[i] != x[i]) return i;
        if (x[i] > x[k]) k = i;
    }
    return k;
}

/* n decode steps of one sequence in one call: token at position pos of slot, then each drawn token at the next
 * position; token i is drawn from the logits at temperature with uniform u[i] by draw (sample.c's gf_draw, the
 * draw of a step), or is the argmax at temperature 0. tokens [n] out; logits [V] scratch. The caller keeps
 * pos + n - 1 inside the context. Returns gf_gpt_forward's code of the first step that fails (0: all ran). */
int gf_gpt_run(const int64_t *dims, const float *const *ptrs, int64_t token, int64_t slot, int64_t pos, int64_t n,
               float temperature, const float *u, void *draw, int64_t *tokens, float *logits, int64_t nthreads) {
    const int64_t V = dims[3], first = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t at = pos + i;
        const int failed = gf_gpt_forward(dims, ptrs, 1, &token, &slot, &at, 1, &first, logits, nthreads);
        if (failed) return failed;
        if (temperature == 0.0f) token = argmax(logits, V);
        else ((draw_fn)draw)(logits, 1, V, temperature, u + i, &token);
        tokens[i] = token;
    }
    return 0;
}
