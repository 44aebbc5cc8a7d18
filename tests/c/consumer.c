/*
 * A C program using librnn the way an application would: create a model,
 * load weights, run forward inference, forward training and backward, and
 * compare every result with values the Rust reference computed (a data file
 * written by tests/c_abi.rs). Then every error path of the ABI.
 * Exit status 0 when everything matches.
 *
 * Usage: consumer CASE_FILE
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

typedef struct {
    float *data;
    size_t len;
} array;

typedef struct {
    const char *path;
    rnn_config config;
    rnn_config_ext ext;
    size_t seq_len, batch;
    size_t *seq_lens;
    size_t seq_lens_len;
    array params, x, h0, c0, y, h_n, c_n, dy, dh_n, dc_n, dx, dh0, dc0, dparams;
} test_case;

static int read_exact(FILE *f, void *dst, size_t bytes) { return fread(dst, 1, bytes, f) == bytes; }

static int read_u64(FILE *f, uint64_t *v) { return read_exact(f, v, 8); }

static int read_u32(FILE *f, uint32_t *v) { return read_exact(f, v, 4); }

static int read_array(FILE *f, array *a) {
    uint64_t n;
    if (!read_u64(f, &n)) return 0;
    a->len = (size_t)n;
    a->data = malloc(n ? n * sizeof(float) : 1);
    return a->data && read_exact(f, a->data, n * sizeof(float));
}

static int load(const char *path, test_case *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    uint32_t version, cell, activation, direction, gru, layout, peep, input_forget, empty;
    uint64_t input, hidden, proj, layers, seq_len, batch, nlens;
    float clip, gate_clip;
    int ok = read_exact(f, magic, 4) && memcmp(magic, "RNNC", 4) == 0 && read_u32(f, &version) &&
             version == 3 && read_u32(f, &cell) && read_u32(f, &activation) && read_u32(f, &direction) &&
             read_u32(f, &gru) && read_u32(f, &layout) && read_u32(f, &peep) && read_u64(f, &input) &&
             read_u64(f, &hidden) && read_u64(f, &proj) && read_u64(f, &layers) && read_exact(f, &clip, 4) &&
             read_exact(f, &gate_clip, 4) && read_u32(f, &input_forget) && read_u32(f, &empty);
    c->config = rnn_config_default();
    c->ext = rnn_config_ext_default();
    for (int i = 0; ok && i < 6; i++) {
        rnn_activation *a = &c->ext.activations[i];
        ok = read_u32(f, &a->function) && read_exact(f, &a->alpha, 4) && read_exact(f, &a->beta, 4);
    }
    ok = ok && read_u64(f, &seq_len) && read_u64(f, &batch) && read_u64(f, &nlens);
    if (!ok) {
        fclose(f);
        return 0;
    }
    c->config.cell = cell;
    c->ext.empty_sequence_state = empty;
    c->config.activation = activation;
    c->config.direction = direction;
    c->config.gru_variant = gru;
    c->config.layout = layout;
    c->config.peepholes = peep;
    c->config.input_size = (size_t)input;
    c->config.hidden_size = (size_t)hidden;
    c->config.proj_size = (size_t)proj;
    c->config.num_layers = (size_t)layers;
    c->config.cell_clip = clip;
    c->config.gate_clip = gate_clip;
    c->config.input_forget = input_forget;
    c->seq_len = (size_t)seq_len;
    c->batch = (size_t)batch;
    c->seq_lens_len = (size_t)nlens;
    c->seq_lens = malloc(nlens ? nlens * sizeof(size_t) : 1);
    for (uint64_t i = 0; ok && i < nlens; i++) {
        uint64_t v;
        ok = read_u64(f, &v);
        c->seq_lens[i] = (size_t)v;
    }
    array *arrays[] = {&c->params, &c->x,    &c->h0,   &c->c0, &c->y,   &c->h_n, &c->c_n,
                       &c->dy,     &c->dh_n, &c->dc_n, &c->dx, &c->dh0, &c->dc0, &c->dparams};
    for (size_t i = 0; ok && i < sizeof arrays / sizeof arrays[0]; i++) ok = read_array(f, arrays[i]);
    fclose(f);
    return ok;
}

static void free_case(test_case *c) {
    array *arrays[] = {&c->params, &c->x,    &c->h0,   &c->c0, &c->y,   &c->h_n, &c->c_n,
                       &c->dy,     &c->dh_n, &c->dc_n, &c->dx, &c->dh0, &c->dc0, &c->dparams};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) free(arrays[i]->data);
    free(c->seq_lens);
}

/* |got - want| <= tol * (1 + max |want|) element-wise. */
static void compare(const char *what, const float *got, const array *want, float tol) {
    float scale = 1.0f;
    for (size_t i = 0; i < want->len; i++) scale = fmaxf(scale, fabsf(want->data[i]));
    for (size_t i = 0; i < want->len; i++) {
        float err = fabsf(got[i] - want->data[i]);
        if (!(err <= tol * scale)) {
            CHECK(0, "%s[%zu] = %g, reference %g", what, i, got[i], want->data[i]);
            return;
        }
    }
}

/* A model loaded back from a file gives the case's y; destroys it. */
static void check_reloaded(const char *what, rnn_model *loaded, const rnn_input *in, const rnn_sizes *s,
                           const test_case *c) {
    if (!loaded) return;
    float *y = calloc(s->y + 1, sizeof(float)), *h_n = calloc(s->h + 1, sizeof(float));
    rnn_output out = {y, s->y, h_n, s->h, NULL, 0};
    EXPECT_STATUS(rnn_forward_inference(loaded, in, &out), RNN_OK);
    compare(what, y, &c->y, 1e-4f);
    free(y);
    free(h_n);
    rnn_model_destroy(loaded);
}

static void run_case(const test_case *c) {
    rnn_model *model = NULL;
    EXPECT_STATUS(rnn_model_create_ext(&c->config, &c->ext, &model), RNN_OK);
    if (!model) return;
    rnn_sizes s;
    EXPECT_STATUS(rnn_sizes_for(model, c->seq_len, c->batch, &s), RNN_OK);
    CHECK(s.params == c->params.len && s.x == c->x.len && s.y == c->y.len && s.h == c->h0.len &&
              s.c == c->c0.len,
          "rnn_sizes_for disagrees with the data file");
    EXPECT_STATUS(rnn_model_set_params(model, c->params.data, c->params.len), RNN_OK);

    float *params_back = malloc(s.params * sizeof(float));
    EXPECT_STATUS(rnn_model_get_params(model, params_back, s.params), RNN_OK);
    CHECK(memcmp(params_back, c->params.data, s.params * sizeof(float)) == 0, "get_params != set_params");
    free(params_back);

    rnn_input in = {c->x.data, c->x.len, c->seq_len, c->batch, c->seq_lens, c->seq_lens_len,
                    c->h0.data, c->h0.len, s.c ? c->c0.data : NULL, s.c};
    float *y = calloc(s.y + 1, sizeof(float)), *h_n = calloc(s.h + 1, sizeof(float)),
          *c_n = calloc(s.c + 1, sizeof(float));
    rnn_output out = {y, s.y, h_n, s.h, s.c ? c_n : NULL, s.c};
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_OK);
    compare("inference y", y, &c->y, 1e-4f);
    compare("inference h_n", h_n, &c->h_n, 1e-4f);
    if (s.c) compare("inference c_n", c_n, &c->c_n, 1e-4f);

    rnn_trace *trace = NULL;
    memset(y, 0, s.y * sizeof(float));
    EXPECT_STATUS(rnn_forward_training(model, &in, &out, &trace), RNN_OK);
    compare("training y", y, &c->y, 1e-4f);

    float *dx = calloc(s.x + 1, sizeof(float)), *dh0 = calloc(s.h + 1, sizeof(float)),
          *dc0 = calloc(s.c + 1, sizeof(float)), *dparams = calloc(s.params + 1, sizeof(float));
    rnn_output_grads og = {c->dy.data, c->dy.len, c->dh_n.data, c->dh_n.len, s.c ? c->dc_n.data : NULL, s.c};
    rnn_gradients g = {dx, s.x, dh0, s.h, s.c ? dc0 : NULL, s.c, dparams, s.params};
    EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_OK);
    compare("dx", dx, &c->dx, 1e-3f);
    compare("dh0", dh0, &c->dh0, 1e-3f);
    if (s.c) compare("dc0", dc0, &c->dc0, 1e-3f);
    compare("dparams", dparams, &c->dparams, 1e-3f);

    /* Only the gradients asked for: all-NULL outputs are valid. */
    rnn_gradients none = {NULL, 0, NULL, 0, NULL, 0, NULL, 0};
    EXPECT_STATUS(rnn_backward(model, trace, &og, &none), RNN_OK);

    /* Save and load: same parameters, same outputs. */
    char path[4096];
    snprintf(path, sizeof path, "%s.ckpt", c->path);
    EXPECT_STATUS(rnn_model_save(model, path), RNN_OK);
    rnn_model *loaded = NULL;
    EXPECT_STATUS(rnn_model_load(path, &loaded), RNN_OK);
    check_reloaded("y after save/load", loaded, &in, &s, c);
    /* The same through a safetensors file: the configuration travels in it. */
    char st_path[4200];
    snprintf(st_path, sizeof st_path, "%s.safetensors", c->path);
    EXPECT_STATUS(rnn_model_save_safetensors(model, st_path), RNN_OK);
    loaded = NULL;
    EXPECT_STATUS(rnn_model_load_safetensors(st_path, NULL, &loaded), RNN_OK);
    check_reloaded("y after safetensors save/load", loaded, &in, &s, c);
    rnn_config other = c->config;
    other.hidden_size += 1;
    loaded = NULL;
    EXPECT_STATUS(rnn_model_load_safetensors(st_path, &other, &loaded), RNN_INVALID_ARGUMENT);
    CHECK(loaded == NULL && strstr(rnn_last_error_message(), "not the one given") != NULL,
          "safetensors with another configuration: %s", rnn_last_error_message());
    EXPECT_STATUS(rnn_model_load_safetensors(st_path, &c->config, NULL), RNN_NULL_POINTER);
    /* One module of a larger state dict: the empty prefix is the file as it
       is; a module the file does not have is an error naming the tensor. */
    loaded = NULL;
    EXPECT_STATUS(rnn_model_load_safetensors_module(st_path, NULL, "", &loaded), RNN_OK);
    check_reloaded("y after safetensors load of module \"\"", loaded, &in, &s, c);
    loaded = NULL;
    EXPECT_STATUS(rnn_model_load_safetensors_module(st_path, NULL, "decoder.", &loaded), RNN_INVALID_ARGUMENT);
    CHECK(loaded == NULL && strstr(rnn_last_error_message(), "decoder.") != NULL, "missing module: %s",
          rnn_last_error_message());
    remove(st_path);
    EXPECT_STATUS(rnn_model_load_safetensors(st_path, NULL, &loaded), RNN_INVALID_ARGUMENT);

    FILE *f = fopen(path, "r+b");
    if (f) {
        fseek(f, 40, SEEK_SET);
        fputc(0x5a, f);
        fclose(f);
    }
    loaded = NULL;
    EXPECT_STATUS(rnn_model_load(path, &loaded), RNN_INVALID_ARGUMENT);
    CHECK(loaded == NULL && strstr(rnn_last_error_message(), "checksum") != NULL, "corrupt file: %s",
          rnn_last_error_message());
    remove(path);

    /* Gradient clipping over the parameter gradients. */
    float norm = 0.0f;
    EXPECT_STATUS(rnn_clip_grad_norm(dparams, s.params, 0.5f, &norm), RNN_OK);
    double sq = 0.0;
    for (size_t i = 0; i < s.params; i++) sq += (double)dparams[i] * dparams[i];
    CHECK(sqrt(sq) <= 0.5 + 1e-4 && norm > 0.0f, "clipped norm %f (was %f)", sqrt(sq), norm);
    EXPECT_STATUS(rnn_clip_grad_value(dparams, s.params, 0.01f), RNN_OK);
    for (size_t i = 0; i < s.params; i++) CHECK(fabsf(dparams[i]) <= 0.01f, "clip by value");
    EXPECT_STATUS(rnn_clip_grad_norm(dparams, s.params, 0.0f, NULL), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_clip_grad_value(NULL, 3, 1.0f), RNN_NULL_POINTER);

    /* Reduced precisions: within each one's accuracy of the f32 reference,
     * training refused until the model is f32 again. bf16 packs under half
     * the bytes; int8 (ABI 5) at these tiny sizes has per-row scales that
     * outweigh its smaller weights, so its bytes are only checked to be there. */
    size_t f32_bytes = 0;
    uint32_t precision = 99;
    EXPECT_STATUS(rnn_model_get_precision(model, &precision), RNN_OK);
    CHECK(precision == RNN_PRECISION_F32, "default precision %u", precision);
    EXPECT_STATUS(rnn_model_packed_bytes(model, &f32_bytes), RNN_OK);
    const struct {
        uint32_t precision;
        const char *name;
        float tol;
        int half_bytes;
    } reduced[] = {{RNN_PRECISION_BF16, "bf16", 3e-2f, 1}, {RNN_PRECISION_INT8, "int8", 6e-2f, 0}};
    for (size_t r = 0; r < sizeof reduced / sizeof reduced[0]; r++) {
        size_t bytes = 0;
        char what[64];
        EXPECT_STATUS(rnn_model_set_precision(model, reduced[r].precision), RNN_OK);
        EXPECT_STATUS(rnn_model_get_precision(model, &precision), RNN_OK);
        CHECK(precision == reduced[r].precision, "precision %u", precision);
        EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_OK);
        snprintf(what, sizeof what, "%s inference y", reduced[r].name);
        compare(what, y, &c->y, reduced[r].tol);
        EXPECT_STATUS(rnn_model_packed_bytes(model, &bytes), RNN_OK);
        CHECK(bytes > 0 && (!reduced[r].half_bytes || 2 * bytes < f32_bytes), "packed bytes: %s %zu, f32 %zu",
              reduced[r].name, bytes, f32_bytes);
        rnn_trace *refused = NULL;
        EXPECT_STATUS(rnn_forward_training(model, &in, &out, &refused), RNN_INVALID_ARGUMENT);
        CHECK(refused == NULL && strstr(rnn_last_error_message(), reduced[r].name) != NULL, "message: %s",
              rnn_last_error_message());
        EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_INVALID_ARGUMENT);
    }
    EXPECT_STATUS(rnn_model_set_precision(model, 7), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_get_precision(model, NULL), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_model_packed_bytes(model, NULL), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_model_set_precision(model, RNN_PRECISION_F32), RNN_OK);
    EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_OK);

    /* A trace is tied to the parameters that made it. */
    EXPECT_STATUS(rnn_model_init_random(model, 7), RNN_OK);
    EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "parameters changed") != NULL, "message: %s",
          rnn_last_error_message());

    rnn_trace_destroy(trace);
    free(y);
    free(h_n);
    free(c_n);
    free(dx);
    free(dh0);
    free(dc0);
    free(dparams);
    rnn_model_destroy(model);
}


/* Attention through the C ABI (issue 13): the forward against a naive
   reference in double, masking and a zero-length item, a training forward
   and backward, the gradients against central differences of the forward,
   and the misuse answers. */
static double attention_loss(rnn_attention *layer, const float *enc, const size_t *lens, const float *queries,
                             const float *dc) {
    enum { T = 3, N = 2, E = 3, D = 4 };
    rnn_attention_memory *memory = NULL;
    float context[N * E];
    double loss = 0.0;
    EXPECT_STATUS(rnn_attention_memory_create(layer, enc, T * N * E, T, N, lens, N, &memory), RNN_OK);
    EXPECT_STATUS(rnn_attention_forward(layer, memory, queries, N * D, context, N * E, NULL, 0), RNN_OK);
    for (int i = 0; i < N * E; i++) loss += (double)dc[i] * context[i];
    rnn_attention_memory_destroy(memory);
    return loss;
}

/* The forward written out naively in double, from the parameters (the
   C side's reference): general s . (W_a h), additive v . tanh(W_e h + W_d s). */
static void attention_reference(uint32_t score, const float *params, const float *enc, const size_t *lens,
                                const float *queries, double *context, double *weights) {
    enum { T = 3, N = 2, E = 3, D = 4, A = 5 };
    for (int b = 0; b < N; b++) {
        double scores[T], max = -1e300, sum = 0.0;
        const float *s = queries + b * D;
        for (size_t t = 0; t < lens[b]; t++) {
            const float *h = enc + (t * N + b) * E;
            double e = 0.0;
            if (score == RNN_SCORE_GENERAL) {
                for (int i = 0; i < D; i++)
                    for (int j = 0; j < E; j++) e += (double)s[i] * params[i * E + j] * h[j];
            } else {
                const float *we = params, *wd = params + A * E, *v = params + A * (E + D);
                for (int r = 0; r < A; r++) {
                    double z = 0.0;
                    for (int j = 0; j < E; j++) z += (double)we[r * E + j] * h[j];
                    for (int i = 0; i < D; i++) z += (double)wd[r * D + i] * s[i];
                    e += v[r] * tanh(z);
                }
            }
            scores[t] = e;
            if (e > max) max = e;
        }
        for (size_t t = 0; t < lens[b]; t++) sum += exp(scores[t] - max);
        for (int t = 0; t < T; t++) weights[b * T + t] = (size_t)t < lens[b] ? exp(scores[t] - max) / sum : 0.0;
        for (int j = 0; j < E; j++) {
            context[b * E + j] = 0.0;
            for (size_t t = 0; t < lens[b]; t++) context[b * E + j] += weights[b * T + t] * enc[(t * N + b) * E + j];
        }
    }
}

static void attention_checks(void) {
    enum { T = 3, N = 2, E = 3, D = 4 };
    float enc[T * N * E], queries[N * D], dc[N * E];
    for (int i = 0; i < T * N * E; i++) enc[i] = (float)sin(0.7 * i + 0.3);
    for (int i = 0; i < N * D; i++) queries[i] = (float)cos(1.3 * i);
    for (int i = 0; i < N * E; i++) dc[i] = (float)sin(2.1 * i + 1.0);
    size_t lens[N] = {3, 0};

    rnn_attention *bad = NULL;
    EXPECT_STATUS(rnn_attention_create(RNN_SCORE_DOT, E, D, 0, 1, &bad), RNN_INVALID_ARGUMENT);
    CHECK(bad == NULL, "no layer on failure");
    EXPECT_STATUS(rnn_attention_create(9, E, D, 0, 1, &bad), RNN_INVALID_ARGUMENT);

    for (uint32_t score = RNN_SCORE_GENERAL; score <= RNN_SCORE_ADDITIVE; score++) {
        rnn_attention *layer = NULL;
        EXPECT_STATUS(rnn_attention_create(score, E, D, 5, 7, &layer), RNN_OK);
        size_t count = 0;
        EXPECT_STATUS(rnn_attention_param_count(layer, &count), RNN_OK);
        CHECK(count == (score == RNN_SCORE_GENERAL ? (size_t)(D * E) : (size_t)(5 * (E + D + 1))),
              "param count %zu", count);
        float *params = malloc(count * sizeof *params), *d_params = malloc(count * sizeof *d_params);
        EXPECT_STATUS(rnn_attention_get_params(layer, params, count), RNN_OK);

        rnn_attention_memory *memory = NULL;
        EXPECT_STATUS(rnn_attention_memory_create(layer, enc, T * N * E, T, N, lens, N, &memory), RNN_OK);
        float context[N * E], weights[N * T], d_queries[N * D], d_enc[T * N * E];
        rnn_attention_trace *trace = NULL;
        EXPECT_STATUS(rnn_attention_forward_training(layer, memory, queries, N * D, context, N * E, weights,
                                                     N * T, &trace),
                      RNN_OK);
        double sum = weights[0] + weights[1] + weights[2];
        CHECK(fabs(sum - 1.0) < 1e-5, "item 0's weights sum to %g", sum);
        double want_context[N * E], want_weights[N * T];
        attention_reference(score, params, enc, lens, queries, want_context, want_weights);
        for (int i = 0; i < N * E; i++)
            CHECK(fabs(context[i] - want_context[i]) < 1e-5, "score %u context[%d]: %g vs %g", score, i,
                  context[i], want_context[i]);
        for (int i = 0; i < N * T; i++)
            CHECK(fabs(weights[i] - want_weights[i]) < 1e-5, "score %u weights[%d]: %g vs %g", score, i,
                  weights[i], want_weights[i]);
        for (int t = 0; t < T; t++) CHECK(weights[T + t] == 0.0f, "item 1 (length 0) has a weight");
        for (int j = 0; j < E; j++) CHECK(context[E + j] == 0.0f, "item 1 (length 0) has a context");

        rnn_attention_grads *grads = NULL;
        EXPECT_STATUS(rnn_attention_grads_create(layer, memory, &grads), RNN_OK);
        EXPECT_STATUS(rnn_attention_backward(layer, memory, trace, dc, N * E, NULL, 0, grads, d_queries, N * D),
                      RNN_OK);
        EXPECT_STATUS(rnn_attention_grads_finish(layer, memory, grads, d_enc, T * N * E, d_params, count),
                      RNN_OK);
        EXPECT_STATUS(rnn_attention_grads_finish(layer, memory, grads, d_enc, T * N * E, d_params, count),
                      RNN_INVALID_ARGUMENT);
        EXPECT_STATUS(rnn_attention_backward(layer, memory, trace, dc, N * E, NULL, 0, grads, d_queries, 3),
                      RNN_SHAPE_MISMATCH);

        /* Central differences of the loss sum(dc * context). */
        const float eps = 1e-2f;
        for (int i = 0; i < N * D; i++) {
            float q[N * D];
            memcpy(q, queries, sizeof q);
            q[i] = queries[i] + eps;
            double up = attention_loss(layer, enc, lens, q, dc);
            q[i] = queries[i] - eps;
            double down = attention_loss(layer, enc, lens, q, dc);
            double num = (up - down) / (2.0 * eps);
            CHECK(fabs(num - d_queries[i]) < 2e-3, "score %u d_queries[%d]: %g vs %g", score, i, num,
                  d_queries[i]);
        }
        for (int i = 0; i < T * N * E; i++) {
            float e2[T * N * E];
            memcpy(e2, enc, sizeof e2);
            e2[i] = enc[i] + eps;
            double up = attention_loss(layer, e2, lens, queries, dc);
            e2[i] = enc[i] - eps;
            double down = attention_loss(layer, e2, lens, queries, dc);
            double num = (up - down) / (2.0 * eps);
            CHECK(fabs(num - d_enc[i]) < 2e-3, "score %u d_enc[%d]: %g vs %g", score, i, num, d_enc[i]);
        }
        for (size_t i = 0; i < count; i++) {
            float saved = params[i];
            params[i] = saved + eps;
            EXPECT_STATUS(rnn_attention_set_params(layer, params, count), RNN_OK);
            double up = attention_loss(layer, enc, lens, queries, dc);
            params[i] = saved - eps;
            EXPECT_STATUS(rnn_attention_set_params(layer, params, count), RNN_OK);
            double down = attention_loss(layer, enc, lens, queries, dc);
            params[i] = saved;
            double num = (up - down) / (2.0 * eps);
            CHECK(fabs(num - d_params[i]) < 2e-3, "score %u d_params[%zu]: %g vs %g", score, i, num,
                  d_params[i]);
        }
        EXPECT_STATUS(rnn_attention_set_params(layer, params, count), RNN_OK);
        /* The memory was made with the old parameters. */
        EXPECT_STATUS(rnn_attention_forward(layer, memory, queries, N * D, context, N * E, NULL, 0),
                      RNN_INVALID_ARGUMENT);
        EXPECT_STATUS(rnn_attention_set_params(layer, params, 2), RNN_SHAPE_MISMATCH);

        EXPECT_STATUS(rnn_attention_grads_destroy(grads), RNN_OK);
        EXPECT_STATUS(rnn_attention_trace_destroy(trace), RNN_OK);
        EXPECT_STATUS(rnn_attention_memory_destroy(memory), RNN_OK);
        EXPECT_STATUS(rnn_attention_memory_destroy(memory), RNN_MISUSE);
        EXPECT_STATUS(rnn_attention_destroy(layer), RNN_OK);
        EXPECT_STATUS(rnn_attention_param_count(layer, &count), RNN_MISUSE);
        free(params);
        free(d_params);
    }
}

static void error_paths(void) {
    rnn_config cfg = rnn_config_default();
    cfg.cell = RNN_CELL_LSTM;
    cfg.input_size = 3;
    cfg.hidden_size = 4;
    rnn_model *model = NULL;
    rnn_model *other_model_slot = NULL;

    /* NULL pointers. */
    EXPECT_STATUS(rnn_model_create(NULL, &model), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_model_create(&cfg, NULL), RNN_NULL_POINTER);
    CHECK(strlen(rnn_last_error_message()) > 0, "an error leaves a message");
    rnn_sizes s;
    EXPECT_STATUS(rnn_sizes_for(NULL, 1, 1, &s), RNN_NULL_POINTER);

    /* Invalid configurations. */
    rnn_config bad = cfg;
    bad.hidden_size = 0;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.cell = 42;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.direction = 9;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.cell_clip = -1.0f;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.peepholes = 2;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.gate_clip = -0.5f;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "gate_clip") != NULL, "gate_clip message: %s", rnn_last_error_message());
    bad = cfg;
    bad.input_forget = 2;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    /* Activation functions: an unknown code, a role the cell lacks, the
     * reverse direction of a one-direction network, a bad empty state, and
     * a function LSTM training cannot differentiate from its output. */
    rnn_config_ext ext = rnn_config_ext_default();
    ext.activations[1].function = 99;
    EXPECT_STATUS(rnn_model_create_ext(&cfg, &ext, &model), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "rnn_config_ext.activations[1].function") != NULL, "message: %s",
          rnn_last_error_message());
    bad = cfg;
    bad.cell = RNN_CELL_GRU;
    ext = rnn_config_ext_default();
    ext.activations[2] = rnn_activation_default(RNN_FUNCTION_SOFTSIGN);
    EXPECT_STATUS(rnn_model_create_ext(&bad, &ext, &model), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "rnn_config_ext.activations[2]") != NULL, "message: %s",
          rnn_last_error_message());
    ext = rnn_config_ext_default();
    ext.activations[4] = rnn_activation_default(RNN_FUNCTION_SOFTSIGN);
    EXPECT_STATUS(rnn_model_create_ext(&cfg, &ext, &model), RNN_INVALID_ARGUMENT);
    ext = rnn_config_ext_default();
    ext.empty_sequence_state = 2;
    EXPECT_STATUS(rnn_model_create_ext(&cfg, &ext, &model), RNN_INVALID_ARGUMENT);
    ext = rnn_config_ext_default();
    ext.gate_clip_set = 3;
    EXPECT_STATUS(rnn_model_create_ext(&cfg, &ext, &model), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_create_ext(&cfg, NULL, &model), RNN_OK); /* NULL: the defaults */
    rnn_model_destroy(model);
    model = NULL;
    {
        rnn_activation leaky = rnn_activation_default(RNN_FUNCTION_LEAKY_RELU);
        CHECK(leaky.alpha == 0.01f && rnn_activation_default(RNN_FUNCTION_HARD_SIGMOID).beta == 0.5f,
              "onnxruntime's defaults: %g", leaky.alpha);
        rnn_config_ext negative = rnn_config_ext_default();
        negative.activations[1] = leaky;
        negative.activations[1].alpha = -0.5f;
        rnn_model *m = NULL;
        EXPECT_STATUS(rnn_model_create_ext(&cfg, &negative, &m), RNN_OK);
        rnn_sizes ns;
        EXPECT_STATUS(rnn_sizes_for(m, 2, 1, &ns), RNN_OK);
        float *nx = calloc(ns.x, sizeof(float)), *ny = calloc(ns.y, sizeof(float));
        float *nh = calloc(ns.h, sizeof(float));
        rnn_input nin = {0};
        nin.x = nx;
        nin.x_len = ns.x;
        nin.seq_len = 2;
        nin.batch = 1;
        rnn_output nout = {ny, ns.y, nh, ns.h, NULL, 0};
        rnn_trace *tr = NULL;
        EXPECT_STATUS(rnn_forward_inference(m, &nin, &nout), RNN_OK);
        EXPECT_STATUS(rnn_forward_training(m, &nin, &nout, &tr), RNN_INVALID_ARGUMENT);
        CHECK(strstr(rnn_last_error_message(), "LeakyRelu") != NULL, "message: %s", rnn_last_error_message());
        free(nx);
        free(ny);
        free(nh);
        rnn_model_destroy(m);
    }
    bad = cfg;
    bad.cell = RNN_CELL_GRU;
    bad.input_forget = 1;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.cell = RNN_CELL_GRU;
    bad.proj_size = 2;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.activation = RNN_ACTIVATION_RELU;
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    bad = cfg;
    bad.hidden_size = (size_t)1 << 22; /* valid, but 2^46 parameters */
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_OUT_OF_MEMORY);
    bad.hidden_size = (size_t)1 << 40; /* the count overflows */
    EXPECT_STATUS(rnn_model_create(&bad, &model), RNN_INVALID_ARGUMENT);
    CHECK(model == NULL, "a failed create leaves *out alone");

    EXPECT_STATUS(rnn_model_create(&cfg, &model), RNN_OK);
    EXPECT_STATUS(rnn_sizes_for(model, 2, 5, &s), RNN_OK);
    CHECK(s.x == 30 && s.y == 40 && s.h == 20 && s.c == 20 && s.params == 4 * 4 * 3 + 4 * 4 * 4 + 32,
          "sizes %zu %zu %zu %zu %zu", s.x, s.y, s.h, s.c, s.params);

    /* Parameters: wrong lengths, NULL, ranges. */
    float params[200] = {0};
    EXPECT_STATUS(rnn_model_set_params(model, params, s.params - 1), RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_model_set_params(model, NULL, s.params), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_model_get_params(model, params, s.params + 1), RNN_SHAPE_MISMATCH);
    size_t off = 99, len = 99;
    EXPECT_STATUS(rnn_model_param_range(model, 0, 0, RNN_PARAM_R, &off, &len), RNN_OK);
    CHECK(off == 48 && len == 64, "R range %zu %zu", off, len);
    EXPECT_STATUS(rnn_model_param_range(model, 0, 0, RNN_PARAM_PEEPHOLE, &off, &len), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_param_range(model, 1, 0, RNN_PARAM_W, &off, &len), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_param_range(model, 0, 0, 17, &off, &len), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_param_range(model, 0, 0, RNN_PARAM_W, NULL, &len), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_model_init_random(NULL, 1), RNN_NULL_POINTER);

    /* ISAs. */
    const char *isa_name = NULL;
    EXPECT_STATUS(rnn_model_get_isa(model, &isa_name), RNN_OK);
    CHECK(isa_name != NULL && (!strcmp(isa_name, "scalar") || !strcmp(isa_name, "avx2") ||
                               !strcmp(isa_name, "avx512") || !strcmp(isa_name, "amx") ||
                               !strcmp(isa_name, "neon")),
          "ISA name %s", isa_name ? isa_name : "(null)");
    EXPECT_STATUS(rnn_model_get_isa(model, NULL), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_model_set_isa(model, "scalar"), RNN_OK);
    EXPECT_STATUS(rnn_model_get_isa(model, &isa_name), RNN_OK);
    CHECK(isa_name != NULL && !strcmp(isa_name, "scalar"), "pinned ISA %s", isa_name ? isa_name : "(null)");
    EXPECT_STATUS(rnn_model_set_isa(model, "sse9"), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_set_isa(model, NULL), RNN_NULL_POINTER);
#if defined(__x86_64__)
    EXPECT_STATUS(rnn_model_set_isa(model, "neon"), RNN_UNSUPPORTED);
#elif defined(__aarch64__)
    EXPECT_STATUS(rnn_model_set_isa(model, "avx2"), RNN_UNSUPPORTED);
#endif

    /* Forward: wrong sizes and NULLs. */
    float x[30] = {0}, y[40], h_n[20], c_n[20], h0[20] = {0};
    size_t lens_ok[5] = {2, 1, 0, 2, 2}, lens_long[5] = {3, 1, 0, 2, 2};
    rnn_input in = {x, 30, 2, 5, NULL, 0, NULL, 0, NULL, 0};
    rnn_output out = {y, 40, h_n, 20, c_n, 20};
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_OK);
    CHECK(strlen(rnn_last_error_message()) == 0, "success clears the message");
    in.x_len = 29;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_SHAPE_MISMATCH);
    in.x_len = 30;
    in.x = NULL;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_NULL_POINTER);
    in.x = x;
    in.seq_lens = lens_long;
    in.seq_lens_len = 5;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_INVALID_ARGUMENT);
    in.seq_lens = lens_ok;
    in.seq_lens_len = 4;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_SHAPE_MISMATCH);
    in.seq_lens_len = 5;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_OK);
    in.h0 = NULL;
    in.h0_len = 20;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_NULL_POINTER);
    in.h0 = h0;
    in.h0_len = 19;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_SHAPE_MISMATCH);
    in.h0_len = 20;
    out.y_len = 39;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_SHAPE_MISMATCH);
    out.y_len = 40;
    out.c_n_len = 21;
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_SHAPE_MISMATCH);
    out.c_n_len = 20;
    EXPECT_STATUS(rnn_forward_inference(model, NULL, &out), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_forward_inference(model, &in, NULL), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_forward_inference(NULL, &in, &out), RNN_NULL_POINTER);

    /* PyTorch and ONNX layouts. */
    {
        float w_ih[48], params_all[200];
        EXPECT_STATUS(rnn_model_init_random(model, 11), RNN_OK);
        EXPECT_STATUS(rnn_model_get_params(model, params_all, s.params), RNN_OK);
        EXPECT_STATUS(rnn_model_get_pytorch_tensor(model, "weight_ih_l0", w_ih, 48), RNN_OK);
        CHECK(memcmp(w_ih, params_all, sizeof w_ih) == 0, "weight_ih_l0 is W");
        w_ih[5] = 9.0f;
        EXPECT_STATUS(rnn_model_set_pytorch_tensor(model, "weight_ih_l0", w_ih, 48), RNN_OK);
        EXPECT_STATUS(rnn_model_get_params(model, params_all, s.params), RNN_OK);
        CHECK(params_all[5] == 9.0f, "set_pytorch_tensor wrote W");
        EXPECT_STATUS(rnn_model_set_pytorch_tensor(model, "weight_ih_l0", w_ih, 47), RNN_SHAPE_MISMATCH);
        EXPECT_STATUS(rnn_model_set_pytorch_tensor(model, "weight_zz_l0", w_ih, 48), RNN_INVALID_ARGUMENT);
        EXPECT_STATUS(rnn_model_get_pytorch_tensor(model, NULL, w_ih, 48), RNN_NULL_POINTER);

        /* ONNX: export a layer, import it into a fresh model, same outputs. */
        float W[48], R[64], B[32];
        EXPECT_STATUS(rnn_model_get_onnx_layer(model, 0, W, 48, R, 64, B, 32, NULL, 0), RNN_OK);
        rnn_model *copy = NULL;
        EXPECT_STATUS(rnn_model_create(&cfg, &copy), RNN_OK);
        EXPECT_STATUS(rnn_model_set_onnx_layer(copy, 0, W, 48, R, 64, B, 32, NULL, 0), RNN_OK);
        float xo[2 * 5 * 3], ya[40], yb[40], ha[20], hb[20];
        for (size_t i = 0; i < 30; i++) xo[i] = (float)i / 30.0f - 0.5f;
        rnn_input io = {xo, 30, 2, 5, NULL, 0, NULL, 0, NULL, 0};
        rnn_output oa = {ya, 40, ha, 20, NULL, 0}, ob = {yb, 40, hb, 20, NULL, 0};
        EXPECT_STATUS(rnn_forward_inference(model, &io, &oa), RNN_OK);
        EXPECT_STATUS(rnn_forward_inference(copy, &io, &ob), RNN_OK);
        /* (model was pinned to the scalar kernels above: compare to rounding.) */
        for (size_t i = 0; i < 40; i++) CHECK(fabsf(ya[i] - yb[i]) < 1e-5f, "ONNX round trip y[%zu]", i);
        EXPECT_STATUS(rnn_model_set_onnx_layer(copy, 0, W, 48, R, 63, B, 32, NULL, 0), RNN_SHAPE_MISMATCH);
        EXPECT_STATUS(rnn_model_set_onnx_layer(copy, 1, W, 48, R, 64, B, 32, NULL, 0), RNN_INVALID_ARGUMENT);
        EXPECT_STATUS(rnn_model_get_onnx_layer(copy, 0, W, 48, R, 64, B, 32, W, 12), RNN_SHAPE_MISMATCH);
        rnn_model_destroy(copy);

        rnn_config peep_cfg = cfg;
        peep_cfg.peepholes = 1;
        rnn_model *peep = NULL;
        EXPECT_STATUS(rnn_model_create(&peep_cfg, &peep), RNN_OK);
        EXPECT_STATUS(rnn_model_get_pytorch_tensor(peep, "weight_ih_l0", w_ih, 48), RNN_INVALID_ARGUMENT);
        rnn_model_destroy(peep);
    }

    /* Save and load errors. */
    EXPECT_STATUS(rnn_model_save(model, NULL), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_model_save(model, "/nonexistent-dir/x.ckpt"), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_load("/nonexistent-dir/x.ckpt", &other_model_slot), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_load("/nonexistent-dir/x.ckpt", NULL), RNN_NULL_POINTER);

    /* Training and backward. */
    rnn_trace *trace = NULL;
    EXPECT_STATUS(rnn_forward_training(model, &in, &out, NULL), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_forward_training(model, &in, &out, &trace), RNN_OK);
    float dy[40] = {0}, dx[30], dparams[200];
    rnn_output_grads og = {dy, 40, NULL, 0, NULL, 0};
    rnn_gradients g = {dx, 30, NULL, 0, NULL, 0, dparams, s.params};
    EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_OK);
    og.dy_len = 41;
    EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_SHAPE_MISMATCH);
    og.dy_len = 40;
    g.dx_len = 31;
    EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_SHAPE_MISMATCH);
    g.dx_len = 30;
    og.dh_n = NULL;
    og.dh_n_len = 20;
    EXPECT_STATUS(rnn_backward(model, trace, &og, &g), RNN_NULL_POINTER);
    og.dh_n_len = 0;
    EXPECT_STATUS(rnn_backward(model, NULL, &og, &g), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_backward(model, trace, NULL, &g), RNN_NULL_POINTER);
    EXPECT_STATUS(rnn_backward(model, trace, &og, NULL), RNN_NULL_POINTER);

    /* A trace from another model. */
    rnn_model *other = NULL;
    EXPECT_STATUS(rnn_model_create(&cfg, &other), RNN_OK);
    EXPECT_STATUS(rnn_backward(other, trace, &og, &g), RNN_MISUSE);
    rnn_model_destroy(other);

    /* GRU has no cell state. */
    rnn_config gru = cfg;
    gru.cell = RNN_CELL_GRU;
    rnn_model *gmodel = NULL;
    EXPECT_STATUS(rnn_model_create(&gru, &gmodel), RNN_OK);
    float y2[40], h2[20], c2[20];
    rnn_output gout = {y2, 40, h2, 20, c2, 20};
    rnn_input gin = {x, 30, 2, 5, NULL, 0, NULL, 0, NULL, 0};
    EXPECT_STATUS(rnn_forward_inference(gmodel, &gin, &gout), RNN_SHAPE_MISMATCH);
    gin.c0 = h0;
    gin.c0_len = 20;
    gout.c_n = NULL;
    gout.c_n_len = 0;
    EXPECT_STATUS(rnn_forward_inference(gmodel, &gin, &gout), RNN_INVALID_ARGUMENT);
    rnn_model_destroy(gmodel);

    /* Truncated BPTT from C: chunks carry h_n/c_n into the next call's
       h0/c0, and backward gets no dh_n, so no gradient crosses a chunk. The
       chunks' outputs and final state equal one call over the whole sequence. */
    {
        float xs[6 * 5 * 3], ys[6 * 5 * 4], hs[20], cs[20], yc[6 * 5 * 4], hc[20], cc[20];
        for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) xs[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
        EXPECT_STATUS(rnn_model_init_random(model, 3), RNN_OK);
        rnn_input whole = {xs, 90, 6, 5, NULL, 0, NULL, 0, NULL, 0};
        rnn_output wo = {ys, 120, hs, 20, cs, 20};
        EXPECT_STATUS(rnn_forward_inference(model, &whole, &wo), RNN_OK);
        float h_carry[20] = {0}, c_carry[20] = {0};
        for (size_t chunk = 0; chunk < 2; chunk++) {
            rnn_input part = {xs + chunk * 45, 45, 3, 5, NULL, 0, h_carry, 20, c_carry, 20};
            rnn_output po = {yc + chunk * 60, 60, hc, 20, cc, 20};
            rnn_trace *t = NULL;
            EXPECT_STATUS(rnn_forward_training(model, &part, &po, &t), RNN_OK);
            float dyc[60], dpc[200];
            for (size_t i = 0; i < 60; i++) dyc[i] = 1.0f;
            rnn_output_grads ogc = {dyc, 60, NULL, 0, NULL, 0};
            rnn_gradients gc = {NULL, 0, NULL, 0, NULL, 0, dpc, s.params};
            EXPECT_STATUS(rnn_backward(model, t, &ogc, &gc), RNN_OK);
            rnn_trace_destroy(t);
            memcpy(h_carry, hc, sizeof hc);
            memcpy(c_carry, cc, sizeof cc);
        }
        for (size_t i = 0; i < 120; i++) CHECK(fabsf(yc[i] - ys[i]) < 1e-5f, "chunked y[%zu]", i);
        for (size_t i = 0; i < 20; i++) CHECK(fabsf(hc[i] - hs[i]) < 1e-5f && fabsf(cc[i] - cs[i]) < 1e-5f, "chunked state");
    }

    rnn_trace_destroy(trace);
    rnn_trace_destroy(NULL);
    rnn_model_destroy(model);
    rnn_model_destroy(NULL);
}

/* ONNX for C: a node's attributes to a config (validated as in Rust), and
 * the layout conversions of Y and of the states. */
static void onnx_checks(void) {
    rnn_onnx_attributes a = rnn_onnx_attributes_default(4);
    const char *names[] = {"HardSigmoid", "softsign", "Tanh", "Sigmoid", "LeakyRelu", "Elu"};
    const float alpha[] = {0.25f, 0.3f};
    a.direction = "bidirectional";
    a.activations = names;
    a.activations_len = 6;
    a.activation_alpha = alpha;
    a.activation_alpha_len = 2;
    a.has_clip = 1;
    a.clip = 0.0f;
    rnn_config cfg;
    rnn_config_ext ext;
    EXPECT_STATUS(rnn_onnx_config(&a, RNN_CELL_LSTM, 3, 1, &cfg, &ext), RNN_OK);
    CHECK(cfg.cell == RNN_CELL_LSTM && cfg.input_size == 3 && cfg.hidden_size == 4 && cfg.peepholes == 1 &&
              cfg.direction == RNN_DIRECTION_BIDIRECTIONAL_CONCAT && ext.empty_sequence_state == RNN_EMPTY_ZEROS,
          "onnx config: cell %u direction %u empty %u", cfg.cell, cfg.direction, ext.empty_sequence_state);
    CHECK(ext.gate_clip_set == 1 && cfg.gate_clip == 0.0f, "clip = 0 is kept: set %u", ext.gate_clip_set);
    CHECK(ext.activations[0].function == RNN_FUNCTION_HARD_SIGMOID && ext.activations[0].alpha == 0.25f &&
              ext.activations[0].beta == 0.5f && ext.activations[1].function == RNN_FUNCTION_SOFTSIGN &&
              ext.activations[4].function == RNN_FUNCTION_LEAKY_RELU && ext.activations[4].alpha == 0.3f &&
              ext.activations[5].function == RNN_FUNCTION_ELU && ext.activations[5].alpha == 1.0f,
          "onnx activations: %u %g %g / %u %g / %u %g", ext.activations[0].function, ext.activations[0].alpha,
          ext.activations[0].beta, ext.activations[4].function, ext.activations[4].alpha,
          ext.activations[5].function, ext.activations[5].alpha);
    rnn_model *m = NULL;
    EXPECT_STATUS(rnn_model_create_ext(&cfg, &ext, &m), RNN_OK);
    rnn_model_destroy(m);

    /* Errors name the attribute. */
    rnn_onnx_attributes bad = a;
    names[2] = "Swish";
    EXPECT_STATUS(rnn_onnx_config(&bad, RNN_CELL_LSTM, 3, 1, &cfg, &ext), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "Swish") != NULL, "message: %s", rnn_last_error_message());
    names[2] = "Tanh";
    bad = a;
    bad.activations_len = 4;
    EXPECT_STATUS(rnn_onnx_config(&bad, RNN_CELL_LSTM, 3, 1, &cfg, &ext), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "activations") != NULL, "message: %s", rnn_last_error_message());
    bad = a;
    bad.direction = "sideways";
    EXPECT_STATUS(rnn_onnx_config(&bad, RNN_CELL_LSTM, 3, 1, &cfg, &ext), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "sideways") != NULL, "message: %s", rnn_last_error_message());
    bad = rnn_onnx_attributes_default(4);
    bad.linear_before_reset = 1;
    EXPECT_STATUS(rnn_onnx_config(&bad, RNN_CELL_LSTM, 3, 0, &cfg, &ext), RNN_INVALID_ARGUMENT);
    CHECK(strstr(rnn_last_error_message(), "linear_before_reset") != NULL, "message: %s",
          rnn_last_error_message());
    bad = rnn_onnx_attributes_default(-1);
    EXPECT_STATUS(rnn_onnx_config(&bad, RNN_CELL_GRU, 3, 0, &cfg, &ext), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_onnx_config(NULL, RNN_CELL_GRU, 3, 0, &cfg, &ext), RNN_NULL_POINTER);

    /* Y: librnn [T, N, D*H] to ONNX [T, D, N, H] (layout 0) and, batch-first,
     * [N, T, D*H] to [N, T, D, H] (the same order). */
    enum { T = 2, N = 3, D = 2, H = 2 };
    float y[T * N * D * H], onnx_y[T * N * D * H], state[D * N * H], onnx_state[D * N * H], back[D * N * H];
    for (int i = 0; i < T * N * D * H; i++) y[i] = (float)i;
    EXPECT_STATUS(rnn_onnx_y_from_librnn(y, T * N * D * H, T, N, D, H, 0, onnx_y, T * N * D * H), RNN_OK);
    for (int t = 0; t < T; t++)
        for (int b = 0; b < N; b++)
            for (int d = 0; d < D; d++)
                for (int h = 0; h < H; h++)
                    CHECK(onnx_y[((t * D + d) * N + b) * H + h] == y[((t * N + b) * D + d) * H + h], "Y[%d,%d,%d,%d]",
                          t, d, b, h);
    EXPECT_STATUS(rnn_onnx_y_from_librnn(y, T * N * D * H, T, N, D, H, 1, onnx_y, T * N * D * H), RNN_OK);
    CHECK(memcmp(onnx_y, y, sizeof y) == 0, "layout 1 Y keeps librnn's batch-first order");
    EXPECT_STATUS(rnn_onnx_y_from_librnn(y, T * N * D * H - 1, T, N, D, H, 0, onnx_y, T * N * D * H),
                  RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_onnx_y_from_librnn(y, T * N * D * H, T, N, D, H, 2, onnx_y, T * N * D * H),
                  RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_onnx_y_from_librnn(y, T * N * D * H, (size_t)-1, N, D, H, 0, onnx_y, T * N * D * H),
                  RNN_INVALID_ARGUMENT);
    /* States: [D, N, H] both ways in layout 0, [N, D, H] in layout 1. */
    for (int i = 0; i < D * N * H; i++) state[i] = (float)i;
    EXPECT_STATUS(rnn_onnx_state_from_librnn(state, D * N * H, N, D, H, 1, onnx_state, D * N * H), RNN_OK);
    for (int d = 0; d < D; d++)
        for (int b = 0; b < N; b++)
            for (int h = 0; h < H; h++)
                CHECK(onnx_state[(b * D + d) * H + h] == state[(d * N + b) * H + h], "Y_h[%d,%d,%d]", b, d, h);
    EXPECT_STATUS(rnn_onnx_state_to_librnn(onnx_state, D * N * H, N, D, H, 1, back, D * N * H), RNN_OK);
    CHECK(memcmp(back, state, sizeof back) == 0, "initial_h round trip");
    EXPECT_STATUS(rnn_onnx_state_to_librnn(state, D * N * H, N, D, H, 0, back, D * N * H), RNN_OK);
    CHECK(memcmp(back, state, sizeof back) == 0, "layout 0 states are librnn's");
    EXPECT_STATUS(rnn_onnx_state_to_librnn(NULL, 0, N, D, H, 0, back, D * N * H), RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_onnx_state_to_librnn(NULL, D * N * H, N, D, H, 0, back, D * N * H), RNN_NULL_POINTER);
}

/* Streaming: step by step equals one whole call, bit for bit; an item can
 * sit steps out or start over; reversed models and misuse are refused. */
static void stream_checks(void) {
    enum { T = 5, N = 2, I = 3, H = 4, L = 2 };
    rnn_config cfg = rnn_config_default();
    cfg.cell = RNN_CELL_LSTM;
    cfg.input_size = I;
    cfg.hidden_size = H;
    cfg.num_layers = L;
    rnn_model *model = NULL;
    EXPECT_STATUS(rnn_model_create(&cfg, &model), RNN_OK);
    EXPECT_STATUS(rnn_model_init_random(model, 11), RNN_OK);
    float x[T * N * I], y[T * N * H], h_n[L * N * H], c_n[L * N * H];
    for (int i = 0; i < T * N * I; i++) x[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    size_t lens[N] = {T, 2};
    rnn_input in = {0};
    in.x = x;
    in.x_len = T * N * I;
    in.seq_len = T;
    in.batch = N;
    in.seq_lens = lens;
    in.seq_lens_len = N;
    rnn_output out = {y, T * N * H, h_n, L * N * H, c_n, L * N * H};
    EXPECT_STATUS(rnn_forward_inference(model, &in, &out), RNN_OK);

    rnn_stream *stream = NULL;
    EXPECT_STATUS(rnn_stream_create(model, N, &stream), RNN_OK);
    float step_y[N * H], h[L * N * H], c[L * N * H];
    for (int t = 0; t < T; t++) {
        uint8_t active[N] = {1, (uint8_t)(t < 2)};
        EXPECT_STATUS(rnn_stream_step(stream, x + t * N * I, N * I, active, N, step_y, N * H), RNN_OK);
        CHECK(memcmp(step_y, y + t * N * H, sizeof step_y) == 0, "stream step %d equals the whole call", t);
    }
    EXPECT_STATUS(rnn_stream_get_state(stream, h, L * N * H, c, L * N * H), RNN_OK);
    CHECK(memcmp(h, h_n, sizeof h) == 0 && memcmp(c, c_n, sizeof c) == 0, "stream state equals the final state");

    /* Item 1 starts over from zero; item 0 carries on. */
    EXPECT_STATUS(rnn_stream_reset_item(stream, 1), RNN_OK);
    EXPECT_STATUS(rnn_stream_get_state(stream, h, L * N * H, NULL, 0), RNN_OK);
    for (int l = 0; l < L; l++)
        for (int j = 0; j < H; j++) CHECK(h[(l * N + 1) * H + j] == 0.0f, "item 1 reset");
    CHECK(h[0] == h_n[0], "item 0 kept");
    EXPECT_STATUS(rnn_stream_set_state(stream, h_n, L * N * H, c_n, L * N * H), RNN_OK);
    EXPECT_STATUS(rnn_stream_reset(stream), RNN_OK);
    EXPECT_STATUS(rnn_stream_get_state(stream, h, L * N * H, c, L * N * H), RNN_OK);
    CHECK(h[3] == 0.0f && c[5] == 0.0f, "reset zeroes every state");

    /* Errors. */
    EXPECT_STATUS(rnn_stream_step(stream, x, N * I - 1, NULL, 0, step_y, N * H), RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_stream_step(stream, x, N * I, NULL, 0, step_y, N * H - 1), RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_stream_step(stream, x, N * I, NULL, 0, x, N * H), RNN_MISUSE);
    EXPECT_STATUS(rnn_stream_reset_item(stream, N), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_stream_destroy(stream), RNN_OK);
    EXPECT_STATUS(rnn_stream_destroy(stream), RNN_MISUSE);
    EXPECT_STATUS(rnn_stream_step(stream, x, N * I, NULL, 0, step_y, N * H), RNN_MISUSE);
    EXPECT_STATUS(rnn_stream_destroy(NULL), RNN_OK);
    rnn_model_destroy(model);

    cfg.direction = RNN_DIRECTION_BIDIRECTIONAL_CONCAT;
    EXPECT_STATUS(rnn_model_create(&cfg, &model), RNN_OK);
    stream = NULL;
    EXPECT_STATUS(rnn_stream_create(model, N, &stream), RNN_INVALID_ARGUMENT);
    CHECK(stream == NULL && strstr(rnn_last_error_message(), "cannot stream") != NULL, "message: %s",
          rnn_last_error_message());
    EXPECT_STATUS(rnn_stream_create(model, N, NULL), RNN_NULL_POINTER);
    rnn_model_destroy(model);
}

int main(int argc, char **argv) {
    CHECK(rnn_abi_version() == RNN_ABI_VERSION, "ABI version %u vs header %u", rnn_abi_version(),
          RNN_ABI_VERSION);
    CHECK(strlen(rnn_version()) > 0, "version string");
    for (int i = 1; i < argc; i++) {
        test_case c;
        memset(&c, 0, sizeof c);
        if (!load(argv[i], &c)) {
            fprintf(stderr, "cannot read case file %s\n", argv[i]);
            return 2;
        }
        c.path = argv[i];
        run_case(&c);
        free_case(&c);
    }
    error_paths();
    attention_checks();
    onnx_checks();
    stream_checks();
    char passed[128];
    snprintf(passed, sizeof passed, "C consumer: %d case file(s) and the error paths passed (librnn %s)", argc - 1,
             rnn_version());
    return finish(passed);
}
