/* Drawing one token per row from logits at a temperature (no top-k, top-p or mask), fused.
 *
 * The same arithmetic as genforge.models.capabilities.next_tokens / _draw in PyTorch, without its ~8
 * operator dispatches per token: p = softmax(logits / temperature); cdf = cumsum(p) (summed in double,
 * stored as float, as PyTorch's CPU cumsum); token = #{i : cdf[i] < u · cdf[V-1]}, at most V - 1, where
 * u in [0, 1) is the row's uniform number (drawn by the caller from its seeded generator).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* logits [B, V] float32, u [B] float32, tokens [B] int64 out. */
void gf_draw(const float *logits, int64_t B, int64_t V, float temperature, const float *u, int64_t *tokens) {
    float *scratch = malloc((size_t)V * sizeof(float));
    if (!scratch) { /* no memory: the most likely token (never reached for any vocabulary that fits) */
        for (int64_t r = 0; r < B; r++) {
            int64_t k = 0;
            for (int64_t i = 1; i < V; i++) if (logits[r * V + i] > logits[r * V + k]) k = i;
            tokens[r] = k;
        }
        return;
    }
    for (int64_t r = 0; r < B; r++) {
        const float *row = logits + r * V;
        float top = -INFINITY;
        for (int64_t i = 0; i < V; i++) {
            scratch[i] = row[i] / temperature;
            if (scratch[i] > top) top = scratch[i];
        }
        double total = 0.0;
        for (int64_t i = 0; i < V; i++) {
            scratch[i] = expf(scratch[i] - top);
            total += scratch[i];
        }
        const float sum = (float)total;
        double run = 0.0;
        for (int64_t i = 0; i < V; i++) {
            run += scratch[i] / sum;
            scratch[i] = (float)run;
        }
        const float threshold = u[r] * scratch[V - 1];
        int64_t k = 0;
        while (k < V - 1 && scratch[k] < threshold) k++;
        tokens[r] = k;
    }
    free(scratch);
}
