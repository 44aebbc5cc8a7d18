/*
 * librnn inside a long-running host process, the way servers and pre-forking
 * workers use it: fork after a call, calls from a thread-exit destructor,
 * weights swapped while other threads serve, a model destroyed under running
 * calls, misuse (destroyed handles, double destroys, overlapping buffers),
 * failed updates that must change nothing, clipping of huge gradients,
 * loads of files that are not regular files, and eight threads sharing a
 * model. Run by tests/c_abi.rs, also under AddressSanitizer and valgrind.
 * Exit status 0 when every check holds.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* One LSTM layer, I = 3, H = 8; calls of T = 10 steps over N = 16 items:
 * enough rows that the calls use the worker threads (batch blocks, input
 * projection blocks), which a forked child does not have. */
enum { I = 3, H = 8, T = 10, N = 16, X_LEN = T * N * I, Y_LEN = T * N * H, S_LEN = N * H };

static rnn_config lstm_config(void) {
    rnn_config c = rnn_config_default();
    c.cell = RNN_CELL_LSTM;
    c.input_size = I;
    c.hidden_size = H;
    return c;
}

static rnn_model *new_model(uint64_t seed) {
    rnn_config c = lstm_config();
    rnn_model *m = NULL;
    EXPECT_STATUS(rnn_model_create(&c, &m), RNN_OK);
    EXPECT_STATUS(rnn_model_init_random(m, seed), RNN_OK);
    return m;
}

static float x_data[X_LEN];

static rnn_input make_input(void) {
    rnn_input in;
    memset(&in, 0, sizeof in);
    in.x = x_data;
    in.x_len = X_LEN;
    in.seq_len = T;
    in.batch = N;
    return in;
}

/* The outputs of one forward, training forward and backward. */
typedef struct {
    float y[Y_LEN], h_n[S_LEN], c_n[S_LEN];
    float dx[X_LEN];
    float *dparams;
    size_t params;
} results;

static rnn_status forward(const rnn_model *m, float *y) {
    rnn_input in = make_input();
    float h_n[S_LEN];
    rnn_output out = {y, Y_LEN, h_n, S_LEN, NULL, 0};
    return rnn_forward_inference(m, &in, &out);
}

static void compute(const rnn_model *m, results *r) {
    rnn_sizes s;
    EXPECT_STATUS(rnn_sizes_for(m, T, N, &s), RNN_OK);
    r->params = s.params;
    r->dparams = calloc(s.params, sizeof(float));
    rnn_input in = make_input();
    rnn_output out = {r->y, Y_LEN, r->h_n, S_LEN, r->c_n, S_LEN};
    rnn_trace *trace = NULL;
    EXPECT_STATUS(rnn_forward_training(m, &in, &out, &trace), RNN_OK);
    float dy[Y_LEN];
    for (int i = 0; i < Y_LEN; i++) dy[i] = (float)((i % 7) - 3) * 0.1f;
    rnn_output_grads og = {dy, Y_LEN, NULL, 0, NULL, 0};
    rnn_gradients g = {r->dx, X_LEN, NULL, 0, NULL, 0, r->dparams, s.params};
    EXPECT_STATUS(rnn_backward(m, trace, &og, &g), RNN_OK);
    EXPECT_STATUS(rnn_trace_destroy(trace), RNN_OK);
}

static int same_results(const results *a, const results *b) {
    return memcmp(a->y, b->y, sizeof a->y) == 0 && memcmp(a->c_n, b->c_n, sizeof a->c_n) == 0 &&
           memcmp(a->dx, b->dx, sizeof a->dx) == 0 && a->params == b->params &&
           memcmp(a->dparams, b->dparams, a->params * sizeof(float)) == 0;
}

/* 2. A parent that has run calls (so librnn's threads exist) forks; the child
 * runs forward, training and backward and must get the parent's results. */
static void fork_child_keeps_working(void) {
    rnn_model *m = new_model(1);
    results parent;
    compute(m, &parent);
    fflush(NULL);
    /* The child reports through a pipe rather than its exit status, which a
     * leak checker may set: memory of the parent's threads, which do not
     * exist in the child, is unreachable there. */
    int verdict[2];
    CHECK(pipe(verdict) == 0, "pipe failed");
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60); /* a hang becomes SIGALRM, which the parent reports */
        results child;
        compute(m, &child);
        int ok = same_results(&parent, &child) && failures == 0;
        /* Creating and destroying in the child works too. */
        rnn_model *fresh = new_model(2);
        ok = ok && rnn_model_destroy(fresh) == RNN_OK;
        char byte = ok ? 'y' : 'n';
        ssize_t written = write(verdict[1], &byte, 1);
        _exit(written == 1 ? 0 : 3);
    }
    CHECK(pid > 0, "fork failed");
    close(verdict[1]);
    char byte = 0;
    ssize_t got = read(verdict[0], &byte, 1);
    close(verdict[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
    CHECK(!WIFSIGNALED(status), "the forked child was killed by signal %d (SIGALRM: it hung)",
          WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    CHECK(got == 1 && byte == 'y', "the forked child's calls failed or differ from the parent's");
    /* The parent is unaffected. */
    results again;
    compute(m, &again);
    CHECK(same_results(&parent, &again), "the parent's results changed after fork");
    free(parent.dparams);
    free(again.dparams);
    EXPECT_STATUS(rnn_model_destroy(m), RNN_OK);
}

/* 2b. A stream large enough that its steps run on helper threads of its own
 * (where the pool has two or more threads) is stepped before a fork; the
 * child, which has none of those threads, steps it on (the same outputs as
 * the parent's next steps) and destroys it without hanging. */
enum { SH = 128, SI = 3, SSTEPS = 4 };

static void stream_steps(const rnn_stream *s, int from, float *y) {
    for (int t = from; t < from + SSTEPS; t++) {
        float x[SI];
        for (int i = 0; i < SI; i++) x[i] = (float)((t * 5 + i * 3) % 7 - 3) * 0.2f;
        EXPECT_STATUS(rnn_stream_step(s, x, SI, NULL, 0, y + (size_t)(t - from) * SH, SH), RNN_OK);
    }
}

static void fork_child_steps_a_stream(void) {
    rnn_config c = lstm_config();
    c.hidden_size = SH;
    rnn_model *m = NULL;
    EXPECT_STATUS(rnn_model_create(&c, &m), RNN_OK);
    EXPECT_STATUS(rnn_model_init_random(m, 4), RNN_OK);
    rnn_stream *s = NULL;
    EXPECT_STATUS(rnn_stream_create(m, 1, &s), RNN_OK);
    static float before[SSTEPS * SH], parent[SSTEPS * SH], child[SSTEPS * SH];
    stream_steps(s, 0, before);
    fflush(NULL);
    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0, "pipe failed");
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60); /* a hang becomes SIGALRM, which the parent reports */
        stream_steps(s, SSTEPS, child);
        int ok = rnn_stream_destroy(s) == RNN_OK && failures == 0;
        ssize_t want = (ssize_t)sizeof child;
        ssize_t written = ok ? write(pipe_fds[1], child, sizeof child) : 0;
        _exit(written == want ? 0 : 3);
    }
    CHECK(pid > 0, "fork failed");
    close(pipe_fds[1]);
    size_t got = 0;
    while (got < sizeof child) {
        ssize_t n = read(pipe_fds[0], (char *)child + got, sizeof child - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(pipe_fds[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
    CHECK(!WIFSIGNALED(status), "the forked child's stream was killed by signal %d (SIGALRM: it hung)",
          WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    stream_steps(s, SSTEPS, parent);
    CHECK(got == sizeof child && memcmp(parent, child, sizeof child) == 0,
          "the forked child's stream steps failed or differ from the parent's");
    EXPECT_STATUS(rnn_stream_destroy(s), RNN_OK);
    EXPECT_STATUS(rnn_model_destroy(m), RNN_OK);
}

/* 3. Calls and stream steps from a pthread TLS destructor, on a thread that
 * used librnn before (its Rust thread-locals are gone by then) and on one
 * that did not: each works and leaks nothing (AddressSanitizer, valgrind). */
static pthread_key_t exit_key;
static rnn_model *exit_model;
static rnn_status exit_forward_status, exit_stream_status, exit_error_status;
static int exit_message_ok;

/* A stream of one item: its steps run on the calling thread (a team of
 * one), with what the thread keeps between steps; all of it freed when the
 * stream, and the thread, end. */
static rnn_status exit_stream_steps(const rnn_model *m) {
    rnn_stream *s = NULL;
    rnn_status status = rnn_stream_create(m, 1, &s);
    for (int t = 0; t < T && status == RNN_OK; t++) {
        float y[H];
        status = rnn_stream_step(s, x_data + t * I, I, NULL, 0, y, H);
    }
    rnn_status destroyed = rnn_stream_destroy(s);
    return status == RNN_OK ? destroyed : status;
}

static void at_thread_exit(void *arg) {
    (void)arg;
    float y[Y_LEN];
    exit_forward_status = forward(exit_model, y);
    exit_stream_status = exit_stream_steps(exit_model);
    exit_error_status = rnn_model_create(NULL, NULL);
    exit_message_ok = rnn_last_error_message() != NULL;
}

static void *thread_body(void *use_first) {
    if (use_first) {
        float y[Y_LEN];
        EXPECT_STATUS(forward(exit_model, y), RNN_OK);
        EXPECT_STATUS(exit_stream_steps(exit_model), RNN_OK);
        EXPECT_STATUS(rnn_model_create(NULL, NULL), RNN_NULL_POINTER);
    }
    pthread_setspecific(exit_key, exit_model);
    return NULL;
}

static void calls_from_thread_exit_destructors(void) {
    exit_model = new_model(3);
    CHECK(pthread_key_create(&exit_key, at_thread_exit) == 0, "pthread_key_create");
    for (long use_first = 0; use_first <= 1; use_first++) {
        exit_forward_status = exit_stream_status = exit_error_status = RNN_INTERNAL;
        exit_message_ok = 0;
        pthread_t t;
        CHECK(pthread_create(&t, NULL, thread_body, (void *)use_first) == 0, "pthread_create");
        pthread_join(t, NULL);
        CHECK(exit_forward_status == RNN_OK, "forward from a TLS destructor: %d", (int)exit_forward_status);
        CHECK(exit_stream_status == RNN_OK, "stream steps from a TLS destructor: %d", (int)exit_stream_status);
        CHECK(exit_error_status == RNN_NULL_POINTER, "error from a TLS destructor: %d",
              (int)exit_error_status);
        CHECK(exit_message_ok, "rnn_last_error_message from a TLS destructor");
    }
    pthread_key_delete(exit_key);
    EXPECT_STATUS(rnn_model_destroy(exit_model), RNN_OK);
}

/* 4. Weights swapped while other threads serve: every forward sees all-old or
 * all-new weights, and a destroy under running calls frees nothing in use. */
enum { SERVERS = 3, ROUNDS = 40 };
static rnn_model *served;
static float *weights[2];
static float expected_y[2][Y_LEN];
static volatile int stop_serving;
static int torn_results, serve_errors;
static pthread_mutex_t counts = PTHREAD_MUTEX_INITIALIZER;

static void *serve(void *arg) {
    (void)arg;
    int torn = 0, errors = 0;
    for (int i = 0; i < ROUNDS || !stop_serving; i++) {
        float y[Y_LEN];
        rnn_status s = forward(served, y);
        if (s == RNN_MISUSE) break; /* destroyed: the end of service */
        if (s != RNN_OK) {
            errors++;
            continue;
        }
        if (memcmp(y, expected_y[0], sizeof y) != 0 && memcmp(y, expected_y[1], sizeof y) != 0) torn++;
        if (i > 100000) break;
    }
    pthread_mutex_lock(&counts);
    torn_results += torn;
    serve_errors += errors;
    pthread_mutex_unlock(&counts);
    return NULL;
}

static void weights_swapped_while_serving(void) {
    served = new_model(4);
    rnn_sizes s;
    EXPECT_STATUS(rnn_sizes_for(served, T, N, &s), RNN_OK);
    for (int k = 0; k < 2; k++) {
        weights[k] = malloc(s.params * sizeof(float));
        EXPECT_STATUS(rnn_model_init_random(served, 10 + k), RNN_OK);
        EXPECT_STATUS(rnn_model_get_params(served, weights[k], s.params), RNN_OK);
        EXPECT_STATUS(forward(served, expected_y[k]), RNN_OK);
    }
    size_t bias_at = 0, bias_len = 0;
    EXPECT_STATUS(rnn_model_param_range(served, 0, 0, RNN_PARAM_WB, &bias_at, &bias_len), RNN_OK);
    pthread_t t[SERVERS];
    stop_serving = 0;
    for (int i = 0; i < SERVERS; i++) pthread_create(&t[i], NULL, serve, NULL);
    for (int r = 0; r < ROUNDS; r++) {
        EXPECT_STATUS(rnn_model_set_params(served, weights[r % 2], s.params), RNN_OK);
        /* The same values again, through another setter. */
        EXPECT_STATUS(rnn_model_set_pytorch_tensor(served, "bias_ih_l0", weights[r % 2] + bias_at, bias_len),
                      RNN_OK);
    }
    /* Destroy while the servers still run: their calls end with RNN_MISUSE. */
    EXPECT_STATUS(rnn_model_destroy(served), RNN_OK);
    stop_serving = 1;
    for (int i = 0; i < SERVERS; i++) pthread_join(t[i], NULL);
    CHECK(torn_results == 0, "%d forwards saw a mix of old and new weights", torn_results);
    CHECK(serve_errors == 0, "%d forwards failed while weights changed", serve_errors);
    free(weights[0]);
    free(weights[1]);
}

/* 5. Misuse is reported, not undefined. */
static void misuse_is_detected(void) {
    rnn_model *m = new_model(5);
    float y[Y_LEN];
    EXPECT_STATUS(forward(m, y), RNN_OK);

    /* Overlapping buffers: y over x, h_n over y. */
    float buf[X_LEN + Y_LEN];
    memcpy(buf, x_data, sizeof x_data);
    rnn_input in = make_input();
    in.x = buf;
    float h_n[S_LEN];
    rnn_output out = {buf + X_LEN - 1, Y_LEN, h_n, S_LEN, NULL, 0};
    EXPECT_STATUS(rnn_forward_inference(m, &in, &out), RNN_MISUSE);
    CHECK(strstr(rnn_last_error_message(), "overlaps") != NULL, "%s", rnn_last_error_message());
    out.y = buf + X_LEN;
    EXPECT_STATUS(rnn_forward_inference(m, &in, &out), RNN_OK);
    out.h_n = buf + X_LEN + Y_LEN - S_LEN;
    EXPECT_STATUS(rnn_forward_inference(m, &in, &out), RNN_MISUSE);

    /* Backward: dx over dy. */
    rnn_trace *trace = NULL;
    float ys[Y_LEN], hs[S_LEN];
    rnn_output out2 = {ys, Y_LEN, hs, S_LEN, NULL, 0};
    in = make_input();
    EXPECT_STATUS(rnn_forward_training(m, &in, &out2, &trace), RNN_OK);
    float grads[Y_LEN];
    memset(grads, 0, sizeof grads);
    rnn_output_grads og = {grads, Y_LEN, NULL, 0, NULL, 0};
    rnn_gradients g = {grads, X_LEN, NULL, 0, NULL, 0, NULL, 0};
    EXPECT_STATUS(rnn_backward(m, trace, &og, &g), RNN_MISUSE);

    /* A trace passed as a model, a model passed as a trace, a stray pointer. */
    EXPECT_STATUS(forward((const rnn_model *)trace, y), RNN_MISUSE);
    EXPECT_STATUS(rnn_backward(m, (const rnn_trace *)m, &og, &g), RNN_MISUSE);
    int stray = 0;
    EXPECT_STATUS(forward((const rnn_model *)&stray, y), RNN_MISUSE);

    /* Destroyed handles and double destroys. */
    EXPECT_STATUS(rnn_trace_destroy(trace), RNN_OK);
    EXPECT_STATUS(rnn_trace_destroy(trace), RNN_MISUSE);
    EXPECT_STATUS(rnn_model_destroy(m), RNN_OK);
    EXPECT_STATUS(forward(m, y), RNN_MISUSE);
    CHECK(strstr(rnn_last_error_message(), "destroyed") != NULL, "%s", rnn_last_error_message());
    EXPECT_STATUS(rnn_model_destroy(m), RNN_MISUSE);
    EXPECT_STATUS(rnn_model_destroy(NULL), RNN_OK);
    EXPECT_STATUS(rnn_trace_destroy(NULL), RNN_OK);
}

/* 6. A failed update changes nothing: parameters, outputs, live traces. */
static void failed_updates_change_nothing(void) {
    rnn_model *m = new_model(6);
    rnn_sizes s;
    EXPECT_STATUS(rnn_sizes_for(m, T, N, &s), RNN_OK);
    float *before = malloc(s.params * sizeof(float)), *after = malloc(s.params * sizeof(float));
    EXPECT_STATUS(rnn_model_get_params(m, before, s.params), RNN_OK);
    float y_before[Y_LEN], y_after[Y_LEN];
    EXPECT_STATUS(forward(m, y_before), RNN_OK);
    rnn_trace *trace = NULL;
    float ys[Y_LEN], hs[S_LEN];
    rnn_input in = make_input();
    rnn_output out = {ys, Y_LEN, hs, S_LEN, NULL, 0};
    EXPECT_STATUS(rnn_forward_training(m, &in, &out, &trace), RNN_OK);

    float junk[4 * H * I + 1];
    memset(junk, 0, sizeof junk);
    EXPECT_STATUS(rnn_model_set_pytorch_tensor(m, "weight_ih_l0", junk, 4 * H * I + 1), RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_model_set_pytorch_tensor(m, "weight_ih_l+0", junk, 4 * H * I), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_set_pytorch_tensor(m, "weight_ih_l00", junk, 4 * H * I), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_set_params(m, before, s.params - 1), RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_model_set_onnx_layer(m, 0, junk, 4 * H * I, junk, 3, NULL, 0, NULL, 0), RNN_SHAPE_MISMATCH);
    EXPECT_STATUS(rnn_model_set_onnx_layer(m, 5, junk, 4 * H * I, junk, 3, NULL, 0, NULL, 0),
                  RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_set_isa(m, "sse9"), RNN_INVALID_ARGUMENT);

    EXPECT_STATUS(rnn_model_get_params(m, after, s.params), RNN_OK);
    CHECK(memcmp(before, after, s.params * sizeof(float)) == 0, "a failed update changed the parameters");
    EXPECT_STATUS(forward(m, y_after), RNN_OK);
    CHECK(memcmp(y_before, y_after, sizeof y_before) == 0, "a failed update changed the outputs");
    float dy[Y_LEN];
    memset(dy, 0, sizeof dy);
    rnn_output_grads og = {dy, Y_LEN, NULL, 0, NULL, 0};
    rnn_gradients none = {NULL, 0, NULL, 0, NULL, 0, NULL, 0};
    EXPECT_STATUS(rnn_backward(m, trace, &og, &none), RNN_OK); /* the trace is still valid */
    /* A successful update does invalidate it. */
    EXPECT_STATUS(rnn_model_set_params(m, before, s.params), RNN_OK);
    EXPECT_STATUS(rnn_backward(m, trace, &og, &none), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_trace_destroy(trace), RNN_OK);
    EXPECT_STATUS(rnn_model_destroy(m), RNN_OK);
    free(before);
    free(after);
}

/* 7. Finite gradients whose norm overflows float are clipped. */
static void huge_gradients_are_clipped(void) {
    float g[2] = {3e38f, 3e38f};
    float norm = 0.0f;
    EXPECT_STATUS(rnn_clip_grad_norm(g, 2, 1.0f, &norm), RNN_OK);
    CHECK(g[0] > 0.7071f && g[0] < 0.7072f && g[1] == g[0], "not clipped: %g %g", g[0], g[1]);
}

/* 8. Loads refuse what is not a regular file, without blocking. */
static void loads_are_bounded(void) {
    rnn_model *m = NULL;
    EXPECT_STATUS(rnn_model_load("/dev/zero", &m), RNN_INVALID_ARGUMENT);
    EXPECT_STATUS(rnn_model_load("/", &m), RNN_INVALID_ARGUMENT);
    char fifo[64];
    snprintf(fifo, sizeof fifo, "/tmp/librnn-host-fifo-%d", (int)getpid());
    unlink(fifo);
    if (mkfifo(fifo, 0600) == 0) {
        alarm(30); /* a blocking open would hang here */
        EXPECT_STATUS(rnn_model_load(fifo, &m), RNN_INVALID_ARGUMENT);
        alarm(0);
        unlink(fifo);
    }
    CHECK(m == NULL, "a failed load wrote *out");
}

/* 9. Idle scratch memory can be given back. */
static void idle_memory_is_released(void) {
    rnn_model *m = new_model(7);
    results r;
    compute(m, &r);
    free(r.dparams);
    size_t released = 0;
    EXPECT_STATUS(rnn_model_release_memory(m, &released), RNN_OK);
    CHECK(released > 0, "a call left no scratch to release");
    EXPECT_STATUS(rnn_model_release_memory(m, &released), RNN_OK);
    CHECK(released == 0, "released twice: %zu", released);
    EXPECT_STATUS(rnn_model_release_memory(m, NULL), RNN_OK);
    EXPECT_STATUS(rnn_model_destroy(m), RNN_OK);
    EXPECT_STATUS(rnn_model_release_memory(m, NULL), RNN_MISUSE);
}

/* 1. Memory exhaustion is a status, and the model stays usable. Run under
 * `ulimit -v` (tests/c_abi.rs), so that every large request fails. */
static void out_of_memory_is_a_status(void) {
    rnn_config c = rnn_config_default();
    c.cell = RNN_CELL_LSTM;
    c.input_size = 1;
    c.hidden_size = 8192;
    c.proj_size = 1;
    rnn_model *m = NULL;
    EXPECT_STATUS(rnn_model_create(&c, &m), RNN_OK);
    /* 12 MB of caller buffers; without c_n the final cell state alone is
     * 32 GB of scratch, which the query says before the call. */
    size_t n = 1000000;
    rnn_memory need;
    EXPECT_STATUS(rnn_call_memory(m, 1, n, &need), RNN_OK);
    CHECK(need.inference > (size_t)32000000000ull, "inference needs %zu bytes", need.inference);
    EXPECT_STATUS(rnn_call_memory(m, 1, n, NULL), RNN_NULL_POINTER);
    float *x = calloc(n, sizeof(float)), *y = calloc(n, sizeof(float)), *h = calloc(n, sizeof(float));
    rnn_input in;
    memset(&in, 0, sizeof in);
    in.x = x;
    in.x_len = n;
    in.seq_len = 1;
    in.batch = n;
    rnn_output out = {y, n, h, n, NULL, 0};
    EXPECT_STATUS(rnn_forward_inference(m, &in, &out), RNN_OUT_OF_MEMORY);
    CHECK(strstr(rnn_last_error_message(), "bytes") != NULL, "%s", rnn_last_error_message());
    /* Training over T = N = 1000: the input projection alone is 131 GB. */
    in.seq_len = 1000;
    in.batch = 1000;
    out.h_n_len = 1000;
    rnn_trace *trace = NULL;
    EXPECT_STATUS(rnn_forward_training(m, &in, &out, &trace), RNN_OUT_OF_MEMORY);
    CHECK(trace == NULL, "a failed training call wrote *trace");
    /* The same model still serves a small batch. */
    in.seq_len = 1;
    in.batch = 4;
    in.x_len = 4;
    out.y_len = 4;
    out.h_n_len = 4;
    EXPECT_STATUS(rnn_forward_inference(m, &in, &out), RNN_OK);
    EXPECT_STATUS(rnn_model_destroy(m), RNN_OK);

    /* An 800 MB LSTM is created, and packing its weights for the first call
     * fails under the limit: a status, not an abort. */
    c.input_size = 5000;
    c.hidden_size = 5000;
    c.proj_size = 0;
    EXPECT_STATUS(rnn_model_create(&c, &m), RNN_OK);
    in.x_len = 4 * 5000;
    out.y_len = 4 * 5000;
    out.h_n_len = 4 * 5000;
    float *big = calloc(3 * 4 * 5000, sizeof(float));
    in.x = big;
    out.y = big + 4 * 5000;
    out.h_n = big + 8 * 5000;
    EXPECT_STATUS(rnn_forward_inference(m, &in, &out), RNN_OUT_OF_MEMORY);
    EXPECT_STATUS(rnn_model_destroy(m), RNN_OK);
    free(big);
    free(x);
    free(y);
    free(h);
}

/* 10. Eight threads share one model, each looping inference, training and
 * backward calls on small batches (where a call's steps are split over a
 * thread team): every result is bit for bit the one computed alone, on any
 * pool size (run with RAYON_NUM_THREADS = 1, 2 and 8). */
enum { SH_I = 3, SH_H = 96, SH_T = 6, SH_NMAX = 2, SH_THREADS = 8, SH_ROUNDS = 6 };
enum { SH_X = SH_T * SH_NMAX * SH_I, SH_Y = SH_T * SH_NMAX * SH_H, SH_S = SH_NMAX * SH_H };
typedef struct {
    float y[SH_Y], h_n[SH_S], train_y[SH_Y], dx[SH_X], *dparams;
} shared_results;
static rnn_model *shared_model;
static float shared_x[SH_X];
static shared_results shared_expected[SH_NMAX];
static size_t shared_params;
static int shared_mismatches;

static void shared_call(size_t n, shared_results *r) {
    rnn_input in;
    memset(&in, 0, sizeof in);
    in.x = shared_x;
    in.x_len = SH_T * n * SH_I;
    in.seq_len = SH_T;
    in.batch = n;
    memset(r, 0, sizeof *r);
    rnn_output out = {r->y, SH_T * n * SH_H, r->h_n, n * SH_H, NULL, 0};
    EXPECT_STATUS(rnn_forward_inference(shared_model, &in, &out), RNN_OK);
    float h_n[SH_S];
    rnn_output train = {r->train_y, SH_T * n * SH_H, h_n, n * SH_H, NULL, 0};
    rnn_trace *trace = NULL;
    EXPECT_STATUS(rnn_forward_training(shared_model, &in, &train, &trace), RNN_OK);
    float dy[SH_Y];
    for (size_t i = 0; i < SH_T * n * SH_H; i++) dy[i] = (float)((i % 5) - 2) * 0.25f;
    r->dparams = calloc(shared_params, sizeof(float));
    rnn_output_grads og = {dy, SH_T * n * SH_H, NULL, 0, NULL, 0};
    rnn_gradients g = {r->dx, SH_T * n * SH_I, NULL, 0, NULL, 0, r->dparams, shared_params};
    EXPECT_STATUS(rnn_backward(shared_model, trace, &og, &g), RNN_OK);
    EXPECT_STATUS(rnn_trace_destroy(trace), RNN_OK);
}

static int shared_same(const shared_results *a, const shared_results *b) {
    return memcmp(a->y, b->y, sizeof a->y) == 0 && memcmp(a->h_n, b->h_n, sizeof a->h_n) == 0 &&
           memcmp(a->train_y, b->train_y, sizeof a->train_y) == 0 &&
           memcmp(a->dx, b->dx, sizeof a->dx) == 0 &&
           memcmp(a->dparams, b->dparams, shared_params * sizeof(float)) == 0;
}

static void *shared_caller(void *arg) {
    size_t t = (size_t)arg;
    int bad = 0;
    for (size_t round = 0; round < SH_ROUNDS; round++) {
        size_t n = 1 + (t + round) % SH_NMAX;
        shared_results r;
        shared_call(n, &r);
        if (!shared_same(&r, &shared_expected[n - 1])) bad++;
        free(r.dparams);
    }
    pthread_mutex_lock(&counts);
    shared_mismatches += bad;
    pthread_mutex_unlock(&counts);
    return NULL;
}

static void eight_threads_share_a_model(void) {
    rnn_config c = rnn_config_default();
    c.cell = RNN_CELL_GRU;
    c.input_size = SH_I;
    c.hidden_size = SH_H;
    EXPECT_STATUS(rnn_model_create(&c, &shared_model), RNN_OK);
    EXPECT_STATUS(rnn_model_init_random(shared_model, 21), RNN_OK);
    rnn_sizes s;
    EXPECT_STATUS(rnn_sizes_for(shared_model, SH_T, SH_NMAX, &s), RNN_OK);
    shared_params = s.params;
    for (int i = 0; i < SH_X; i++) shared_x[i] = (float)((i * 13) % 9 - 4) * 0.2f;
    for (size_t n = 1; n <= SH_NMAX; n++) shared_call(n, &shared_expected[n - 1]);
    pthread_t t[SH_THREADS];
    for (size_t i = 0; i < SH_THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, shared_caller, (void *)i) == 0, "pthread_create");
    for (size_t i = 0; i < SH_THREADS; i++) pthread_join(t[i], NULL);
    CHECK(shared_mismatches == 0, "%d calls from shared threads differ from the same calls alone",
          shared_mismatches);
    for (size_t n = 0; n < SH_NMAX; n++) free(shared_expected[n].dparams);
    EXPECT_STATUS(rnn_model_destroy(shared_model), RNN_OK);
}

int main(int argc, char **argv) {
    for (int i = 0; i < X_LEN; i++) x_data[i] = (float)((i * 37) % 11 - 5) * 0.1f;
    if (argc > 1 && strcmp(argv[1], "oom") == 0) {
        out_of_memory_is_a_status();
        return finish("host oom: every check passed");
    }
    fork_child_keeps_working();
    fork_child_steps_a_stream();
    calls_from_thread_exit_destructors();
    weights_swapped_while_serving();
    misuse_is_detected();
    failed_updates_change_nothing();
    huge_gradients_are_clipped();
    loads_are_bounded();
    idle_memory_is_released();
    eight_threads_share_a_model();
    return finish("host: every check passed");
}
