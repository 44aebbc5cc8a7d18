/*
 * librnn: RNN, LSTM and GRU on the CPU (SIMD kernels for AVX2, AVX-512, NEON).
 * C ABI version: RNN_ABI_VERSION below; compare with rnn_abi_version() at run time.
 *
 * Conventions for every function:
 * - Fallible functions return an rnn_status; on failure rnn_last_error_message()
 *   describes it (thread-local, valid until the next librnn call on the thread).
 *   A bug inside librnn is reported as RNN_INTERNAL, never as a crash, and
 *   librnn never prints: a caught panic's message goes to
 *   rnn_last_error_message() only. Every function, including the destroy
 *   functions and rnn_last_error_message(), may be called from a thread-exit
 *   (TLS) destructor.
 * - Buffers are a pointer plus a length in elements; lengths are checked against
 *   rnn_sizes_for(). NULL is allowed only for buffers documented as optional,
 *   and then the length must be 0.
 * - Sequence lengths (rnn_input.seq_lens): an item of length len < T has its
 *   outputs y at steps t >= len set to zero (and their gradients ignored);
 *   the reverse direction starts at its step len - 1; its final states h_n
 *   and c_n are those after its own last step, so an item of length 0 returns
 *   h0 and c0 unchanged (zeros without them).
 * - Instruction set: the best the CPU has (AVX-512 with AMX, AVX-512,
 *   AVX2+FMA, NEON, else scalar), or the one the environment variable
 *   RNN_ISA names ("scalar", "avx2", "avx512", "amx", "neon"; read once per
 *   process), or the one
 *   rnn_model_set_isa pins. A bad RNN_ISA is reported where a model is made
 *   (rnn_model_create, rnn_model_load, rnn_model_load_safetensors*):
 *   RNN_INVALID_ARGUMENT for an unknown name, RNN_UNSUPPORTED for an ISA
 *   this CPU lacks. rnn_model_get_isa tells which a model runs on.
 * - Tensors are row-major float: x [T, N, I], y [T, N, D*H_out] (D*H_out is
 *   H_out for RNN_DIRECTION_BIDIRECTIONAL_SUM), states [L*D, N, H_out] and
 *   c [L*D, N, H]; RNN_LAYOUT_BATCH_FIRST swaps the first two axes of x and y.
 * - Ownership: objects from rnn_model_create, rnn_model_load and
 *   rnn_forward_training belong to the caller, who frees them with
 *   rnn_model_destroy / rnn_trace_destroy (both accept NULL). librnn keeps no
 *   pointer to caller memory after a call.
 * - Misuse detection (best effort): every handle argument is looked up among
 *   the live handles of its kind before use, so a destroyed handle, a double
 *   destroy, a trace passed as a model (or the reverse), a pointer librnn
 *   never returned and a trace passed with another model give RNN_MISUSE
 *   instead of touching freed memory. It cannot tell a destroyed handle from
 *   a new one the allocator placed at the same address. Buffers a call writes
 *   must not overlap any other buffer of the call: an overlap is RNN_MISUSE.
 * - Threads: any calls may run concurrently, on one model or many. Weight
 *   updates (rnn_model_set_params, rnn_model_init_random, rnn_model_set_isa,
 *   rnn_model_set_pytorch_tensor, rnn_model_set_onnx_layer) are transactions:
 *   they are serialised, a call running meanwhile keeps the weights it started
 *   with, so its results are all-old or all-new, never a mix, and a failed
 *   update changes nothing (parameters, packed weights, valid traces). A
 *   successful update makes earlier traces stale (RNN_INVALID_ARGUMENT in
 *   rnn_backward). rnn_model_destroy while calls run on the model frees it when
 *   the last of them returns; later calls get RNN_MISUSE.
 * - Determinism: outputs, final states and every gradient are bitwise
 *   identical for any number of threads (RAYON_NUM_THREADS, a pool of one
 *   included) and however a call's work is split between them, on a given ISA:
 *   every sum is taken in a fixed order. (Different ISAs round differently.)
 * - Worker threads: librnn's own pool has RAYON_NUM_THREADS threads, else one
 *   per CPU the process may use, and never more than those CPUs. A call splits
 *   each layer's time steps over a team of them (directions at once, each step's
 *   hidden units shared out); a team never waits for a thread busy elsewhere
 *   (concurrent calls share the CPUs), a waiting member sleeps after 20 us, and
 *   after a team stalled (another process on its CPUs) calls run for a spell
 *   on teams without the members that held it up (one thread on two CPUs):
 *   10 ms, doubling while teams keep stalling, up to 200 ms. A step is split
 *   only into parts that pay for the threads' exchange: the first call that
 *   could split measures the core-to-core round trip (two threads, well under
 *   a millisecond, once per process) and each part then needs 250
 *   multiply-adds per nanosecond of it (about 40k on an Intel Xeon VM, 8k on
 *   an AMD Zen 3 VM); RNN_MIN_PART_MACS=n sets the bound instead (a bad value
 *   is reported where a model is made, as RNN_INVALID_ARGUMENT).
 * - fork(): librnn owns its worker threads and rebuilds them in a child
 *   process, so a child of a process that used librnn can use it (and its
 *   models) at once. Fork while no librnn call runs in another thread, as with
 *   any library that holds locks during a call.
 * - Memory: every allocation librnn makes can fail without harm: a model too
 *   large, a call's workspace or trace, packing the weights all give
 *   RNN_OUT_OF_MEMORY with the size in the message, and the model stays
 *   usable. rnn_call_memory() tells beforehand how much a call of a given
 *   shape allocates. A model keeps at most 256 MiB of idle scratch between
 *   calls; rnn_model_release_memory() frees it.
 * - Files: saves are atomic (a temporary in the same directory, flushed and
 *   renamed over the target); loads read only regular files, never more than
 *   the file's size, and never block on a FIFO or a device.
 * - Gradient clipping by norm is computed in double precision: any finite
 *   gradients are clipped correctly; NaN or infinite ones are left as they
 *   are, and the norm reported is then NaN or infinity.
 */

#ifndef LIBRNN_H
#define LIBRNN_H

/* Generated by cbindgen from src/ffi: LIBRNN_WRITE_HEADER=1 cargo test --test c_abi committed_header_is_current. Do not edit by hand. */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

// Version of the C ABI described by this header. It changes whenever a
// signature or struct layout changes incompatibly.
#define RNN_ABI_VERSION 6

// `rnn_config.cell`: Elman RNN (activation from `rnn_config.activation`).
#define RNN_CELL_RNN 0

// `rnn_config.cell`: LSTM, gates i, f, g, o.
#define RNN_CELL_LSTM 1

// `rnn_config.cell`: GRU, gates r, z, n.
#define RNN_CELL_GRU 2

// `rnn_config.activation` (RNN only).
#define RNN_ACTIVATION_TANH 0

// `rnn_config.activation` (RNN only).
#define RNN_ACTIVATION_RELU 1

// `rnn_activation.function`: the role's default (RNN: `rnn_config.activation`;
// LSTM: sigmoid, tanh, tanh; GRU: sigmoid, tanh). Added in ABI version 6,
// as are the other RNN_FUNCTION_* values, ONNX's activation functions.
#define RNN_FUNCTION_DEFAULT 0

// `1 / (1 + e^-x)`.
#define RNN_FUNCTION_SIGMOID 1

// `tanh x`.
#define RNN_FUNCTION_TANH 2

// `max(0, x)`.
#define RNN_FUNCTION_RELU 3

// `alpha x + beta`.
#define RNN_FUNCTION_AFFINE 4

// `x` if `x >= 0`, else `alpha x`.
#define RNN_FUNCTION_LEAKY_RELU 5

// `x` if `x > alpha`, else 0.
#define RNN_FUNCTION_THRESHOLDED_RELU 6

// `alpha tanh(beta x)`.
#define RNN_FUNCTION_SCALED_TANH 7

// `min(max(alpha x + beta, 0), 1)`.
#define RNN_FUNCTION_HARD_SIGMOID 8

// `x` if `x >= 0`, else `alpha (e^x - 1)`.
#define RNN_FUNCTION_ELU 9

// `x / (1 + |x|)`.
#define RNN_FUNCTION_SOFTSIGN 10

// `ln(1 + e^x)`.
#define RNN_FUNCTION_SOFTPLUS 11

// `rnn_config.empty_sequence_state`: an item of sequence length 0 returns
// its initial state (h0, c0) as its final state (the default). Added in
// ABI version 6.
#define RNN_EMPTY_INITIAL 0

// `rnn_config.empty_sequence_state`: an item of sequence length 0 returns
// zeros, as onnxruntime does (h0 and c0 then get no gradient from it).
// Added in ABI version 6.
#define RNN_EMPTY_ZEROS 1

// `rnn_config.direction`: one direction, first step to last.
#define RNN_DIRECTION_FORWARD 0

// `rnn_config.direction`: one direction, last step to first.
#define RNN_DIRECTION_REVERSE 1

// `rnn_config.direction`: both, outputs concatenated (forward first).
#define RNN_DIRECTION_BIDIRECTIONAL_CONCAT 2

// `rnn_config.direction`: both, outputs summed.
#define RNN_DIRECTION_BIDIRECTIONAL_SUM 3

// `rnn_config.gru_variant`: ONNX default, `n = tanh(Wn x + Rn (r ⊙ h) + b)`.
#define RNN_GRU_RESET_BEFORE_MATMUL 0

// `rnn_config.gru_variant`: PyTorch/cuDNN, `n = tanh(Wn x + r ⊙ (Rn h + Rbn) + Wbn)`.
#define RNN_GRU_LINEAR_BEFORE_RESET 1

// `rnn_config.layout`: `x` and `y` are `[T, N, features]`.
#define RNN_LAYOUT_TIME_MAJOR 0

// `rnn_config.layout`: `x` and `y` are `[N, T, features]`.
#define RNN_LAYOUT_BATCH_FIRST 1

// `rnn_model_set_precision`: f32 weights (the default; training needs it).
// Added in ABI version 4.
#define RNN_PRECISION_F32 0

// `rnn_model_set_precision`: bfloat16 weights, rounded to nearest even from
// the f32 parameters (inputs, states, accumulation and outputs stay f32).
// Added in ABI version 4.
#define RNN_PRECISION_BF16 1

// `rnn_model_set_precision`: int8 weights, one scale per output row;
// inputs and states quantised per row as they are multiplied (int32 sums,
// scaled back to f32 before the biases and gate functions). Added in ABI
// version 5.
#define RNN_PRECISION_INT8 2

// `rnn_model_param_range` kinds: input weights `W [G·H, I_l]`.
#define RNN_PARAM_W 0

// Recurrent weights `R [G·H, H_out]`.
#define RNN_PARAM_R 1

// Input bias `Wb [G·H]`.
#define RNN_PARAM_WB 2

// Recurrent bias `Rb [G·H]`.
#define RNN_PARAM_RB 3

// LSTM peepholes `[3·H]` (p_i, p_f, p_o).
#define RNN_PARAM_PEEPHOLE 4

// LSTM projection `[H_out, H]`.
#define RNN_PARAM_PROJECTION 5

// `rnn_attention_create`: Luong's dot score `s · h` (encoder size = decoder size).
#define RNN_SCORE_DOT 0

// `rnn_attention_create`: Luong's general score `s · (W_a h)`, `W_a [D, E]`.
#define RNN_SCORE_GENERAL 1

// `rnn_attention_create`: Bahdanau's additive score `v · tanh(W_e h + W_d s)`,
// `W_e [A, E]`, `W_d [A, D]`, `v [A]`.
#define RNN_SCORE_ADDITIVE 2

// The largest file [`load`] reads (1 TiB), on top of the file's own size.
#define MAX_FILE_BYTES (1 << 40)





// Result of every fallible librnn call.
typedef enum rnn_status {
  // Success.
  RNN_OK = 0,
  // A required pointer argument was NULL.
  RNN_NULL_POINTER = 1,
  // An argument or configuration field is invalid (see the message).
  RNN_INVALID_ARGUMENT = 2,
  // A buffer length does not match the size the shapes require.
  RNN_SHAPE_MISMATCH = 3,
  // Memory could not be allocated: a model's parameters, a call's
  // workspace or trace, packed weights. Nothing was changed; the model
  // stays usable. The message says how many bytes were asked for.
  RNN_OUT_OF_MEMORY = 4,
  // The request is valid but not supported here (e.g. an ISA this CPU lacks).
  RNN_UNSUPPORTED = 5,
  // A bug in librnn (a caught panic); the message has the details.
  RNN_INTERNAL = 6,
  // The call is a misuse of the API that librnn detected: a destroyed
  // (or never created) handle, a double destroy, a trace passed with a
  // model other than the one that made it, or output buffers that
  // overlap the inputs or each other. Added in ABI version 3.
  RNN_MISUSE = 7,
} rnn_status;

// How a decoder state is scored against an encoder output.
typedef struct Score Score;

// An opaque attention layer: score function, sizes, parameters.
typedef struct rnn_attention rnn_attention;

// Opaque gradients accumulated over `rnn_attention_backward` calls.
typedef struct rnn_attention_grads rnn_attention_grads;

// An opaque encoder side of a batch, for any number of decoder steps.
typedef struct rnn_attention_memory rnn_attention_memory;

// An opaque record of `rnn_attention_forward_training`, for
// `rnn_attention_backward`.
typedef struct rnn_attention_trace rnn_attention_trace;

// An opaque model: configuration plus parameters.
typedef struct rnn_model rnn_model;

// An opaque stream: a batch's recurrent state and a step's buffers, over
// the model as it was when the stream was made (later parameter updates
// need a new stream). Calls on one stream run one at a time.
typedef struct rnn_stream rnn_stream;

// An opaque record of a training forward pass, consumed by `rnn_backward`.
typedef struct rnn_trace rnn_trace;

// One activation function of `rnn_config.activations`: an RNN_FUNCTION_*
// value and its parameters (read only by the functions whose formula has
// them; `rnn_activation_default` gives onnxruntime's defaults). Added in
// ABI version 6.
typedef struct rnn_activation {
  // An RNN_FUNCTION_* value.
  uint32_t function;
  // alpha.
  float alpha;
  // beta.
  float beta;
} rnn_activation;

// The options added after `rnn_config`'s layout was fixed (so that
// programs built against an older header keep working): pass it to
// `rnn_model_create_ext`. Start from `rnn_config_ext_default()`, whose
// values give the same model as `rnn_model_create`. Added in ABI
// version 6.
typedef struct rnn_config_ext {
  // ONNX's activation functions: `activations[3 * dir + role]` for
  // direction `dir` (0 forward, 1 the reverse direction of a
  // bidirectional network) and role `role` (RNN: f; LSTM: f on i, f, o,
  // g on the cell input, h on the cell state; GRU: f on r, z, g on n).
  // RNN_FUNCTION_DEFAULT (all zeros) keeps the role's default (for RNN,
  // `rnn_config.activation`); entries past the cell's roles or
  // directions must stay default.
  struct rnn_activation activations[6];
  // RNN_EMPTY_INITIAL or RNN_EMPTY_ZEROS: what an item of sequence
  // length 0 returns as its final state.
  uint32_t empty_sequence_state;
  // 1: `rnn_config.gate_clip` applies even when it is 0 (ONNX's
  // `clip = 0`, which onnxruntime's RNN runs: every pre-activation
  // becomes 0); 0 (the default): a `gate_clip` of 0 means none.
  uint32_t gate_clip_set;
} rnn_config_ext;

// A network configuration. Start from `rnn_config_default()` and set the
// fields you need; `rnn_model_create` validates all of them.
typedef struct rnn_config {
  // RNN_CELL_RNN, RNN_CELL_LSTM or RNN_CELL_GRU.
  uint32_t cell;
  // RNN_ACTIVATION_TANH or RNN_ACTIVATION_RELU (RNN only).
  uint32_t activation;
  // Features per input step (I), at least 1.
  size_t input_size;
  // Hidden size H, at least 1.
  size_t hidden_size;
  // LSTM projection size (H_out); 0 for none.
  size_t proj_size;
  // Stacked layers, at least 1.
  size_t num_layers;
  // One of the RNN_DIRECTION_* values.
  uint32_t direction;
  // RNN_GRU_RESET_BEFORE_MATMUL or RNN_GRU_LINEAR_BEFORE_RESET (GRU only).
  uint32_t gru_variant;
  // LSTM cell clip: c is clamped to [-cell_clip, cell_clip]; 0 for none.
  float cell_clip;
  // LSTM peephole connections: 0 or 1.
  uint32_t peepholes;
  // RNN_LAYOUT_TIME_MAJOR or RNN_LAYOUT_BATCH_FIRST.
  uint32_t layout;
  // Gate clip, ONNX's `clip` (any cell): the input of every activation
  // (each gate pre-activation) is clamped to [-gate_clip, gate_clip]; 0
  // for none unless `gate_clip_set` is 1. Added in ABI version 2.
  float gate_clip;
  // LSTM input-forget coupling, ONNX's `input_forget`: 0 or 1; with 1 the
  // forget gate is 1 - i and its weights are unused. Added in ABI version 2.
  uint32_t input_forget;
} rnn_config;

// Element counts of every buffer of a call with given `seq_len` and `batch`.
typedef struct rnn_sizes {
  // `x` and `dx`.
  size_t x;
  // `y` and `dy`.
  size_t y;
  // `h0`, `h_n`, `dh0`, `dh_n`.
  size_t h;
  // `c0`, `c_n`, `dc0`, `dc_n` (0 unless LSTM).
  size_t c;
  // The flat parameter vector and `dparams`.
  size_t params;
} rnn_sizes;

// The most memory, in bytes, calls of `seq_len` steps over `batch`
// sequences allocate besides the caller's buffers (`rnn::CallMemory`), so
// a caller can check before calling. Memory the model keeps from earlier
// calls is reused first. Added in ABI version 3.
typedef struct rnn_memory {
  // Packing the weights: the first call, and the first after an update.
  size_t packing;
  // `rnn_forward_inference` while it runs.
  size_t inference;
  // `rnn_forward_training` while it runs, besides its trace.
  size_t training_forward;
  // What a trace holds until `rnn_trace_destroy`.
  size_t trace;
  // `rnn_backward` while it runs.
  size_t backward;
} rnn_memory;

// The inputs of a forward call. `seq_lens` (`batch` entries, each <=
// `seq_len`), `h0` and `c0` are optional: NULL with length 0 means all
// steps and zero initial states.
typedef struct rnn_input {
  const float *x;
  size_t x_len;
  size_t seq_len;
  size_t batch;
  const size_t *seq_lens;
  size_t seq_lens_len;
  const float *h0;
  size_t h0_len;
  const float *c0;
  size_t c0_len;
} rnn_input;

// Where a forward call writes. `y` and `h_n` are required; `c_n` is
// optional (LSTM only).
typedef struct rnn_output {
  float *y;
  size_t y_len;
  float *h_n;
  size_t h_n_len;
  float *c_n;
  size_t c_n_len;
} rnn_output;

// Loss gradients with respect to a training call's outputs: `dy` required,
// `dh_n` and `dc_n` optional (zero when NULL).
typedef struct rnn_output_grads {
  const float *dy;
  size_t dy_len;
  const float *dh_n;
  size_t dh_n_len;
  const float *dc_n;
  size_t dc_n_len;
} rnn_output_grads;

// Where `rnn_backward` writes; every buffer is optional (NULL skips it).
// `dparams` has the layout of the parameter vector.
typedef struct rnn_gradients {
  float *dx;
  size_t dx_len;
  float *dh0;
  size_t dh0_len;
  float *dc0;
  size_t dc0_len;
  float *dparams;
  size_t dparams_len;
} rnn_gradients;

// The attributes of one ONNX `RNN`, `LSTM` or `GRU` node, as the node
// holds them. Start from `rnn_onnx_attributes_default(hidden_size)`.
// Added in ABI version 6.
typedef struct rnn_onnx_attributes {
  // `hidden_size`.
  int64_t hidden_size;
  // `direction`: "forward", "reverse" or "bidirectional" (NUL-terminated;
  // NULL for the default, "forward").
  const char *direction;
  // `layout`: 0 or 1.
  int64_t layout;
  // `linear_before_reset` (GRU): 0 or 1.
  int64_t linear_before_reset;
  // `input_forget` (LSTM): 0 or 1.
  int64_t input_forget;
  // 1 when the node has a `clip` attribute (then `clip` applies, even 0).
  uint32_t has_clip;
  // `clip`.
  float clip;
  // `activations`: `activations_len` NUL-terminated names (NULL, 0 for
  // the defaults).
  const char *const *activations;
  size_t activations_len;
  // `activation_alpha` (NULL, 0 for none).
  const float *activation_alpha;
  size_t activation_alpha_len;
  // `activation_beta` (NULL, 0 for none).
  const float *activation_beta;
  size_t activation_beta_len;
} rnn_onnx_attributes;







#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The extended options' defaults: every function its role's default,
// RNN_EMPTY_INITIAL, a `gate_clip` of 0 meaning none. Added in ABI
// version 6.
struct rnn_config_ext rnn_config_ext_default(void);

// The library version as a NUL-terminated string, e.g. "0.1.0". The pointer
// is static: never free it.
const char *rnn_version(void);

// The ABI version the library was built with; compare with RNN_ABI_VERSION.
uint32_t rnn_abi_version(void);

// A description of the last failed librnn call on this thread ("" if the
// last call succeeded). Valid until the next librnn call on this thread;
// never free it.
const char *rnn_last_error_message(void);

// A default configuration: a one-layer forward tanh RNN with input and
// hidden size 1, no options, time-major. Set the fields you need.
struct rnn_config rnn_config_default(void);

// `function` (an RNN_FUNCTION_* value) with onnxruntime's default alpha
// and beta: LeakyRelu alpha 0.01, HardSigmoid alpha 0.2 and beta 0.5, Elu
// alpha 1, 0 otherwise. An unknown value is returned as given (and
// refused by `rnn_model_create`).
struct rnn_activation rnn_activation_default(uint32_t function);

// Creates a model for `*config` with all parameters zero and stores it in
// `*out` (left untouched on failure). Free it with `rnn_model_destroy`.
// RNN_OUT_OF_MEMORY if the parameters cannot be allocated.
//
// # Safety
// `config` and `out` must be valid pointers (or NULL, which is reported).
enum rnn_status rnn_model_create(const struct rnn_config *config, struct rnn_model **out);

// `rnn_model_create` with the options of `*ext` too (ONNX's activation
// functions, the empty-sequence state, a zero gate clip); NULL `ext` is
// `rnn_config_ext_default()`. Added in ABI version 6.
//
// # Safety
// `config` and `out` valid pointers (or NULL, which is reported); `ext`
// valid or NULL.
enum rnn_status rnn_model_create_ext(const struct rnn_config *config,
                                     const struct rnn_config_ext *ext,
                                     struct rnn_model **out);

// Frees a model (NULL is accepted: RNN_OK). Calls still running on it from
// other threads finish first on the model they started with. A handle
// destroyed already, or not from librnn, gives RNN_MISUSE (best effort).
// Traces of the model stay valid objects to destroy.
enum rnn_status rnn_model_destroy(struct rnn_model *model);

// Buffer sizes for calls of `seq_len` steps over `batch` sequences.
//
// # Safety
// `model` from `rnn_model_create`; `out` writable.
enum rnn_status rnn_sizes_for(const struct rnn_model *model,
                              size_t seq_len,
                              size_t batch,
                              struct rnn_sizes *out);

// Fills `*out` with the memory calls of `seq_len` steps over `batch`
// sequences allocate (see `rnn_memory`). Added in ABI version 3.
//
// # Safety
// `model` from `rnn_model_create` (checked); `out` writable.
enum rnn_status rnn_call_memory(const struct rnn_model *model,
                                size_t seq_len,
                                size_t batch,
                                struct rnn_memory *out);

// Copies the model's flat parameter vector into `out` (`len` must equal
// `rnn_sizes.params`).
//
// # Safety
// `model` from `rnn_model_create`; `out` holds `len` floats.
enum rnn_status rnn_model_get_params(const struct rnn_model *model, float *out, size_t len);

// Replaces the model's parameters with `params` (`len` = `rnn_sizes.params`),
// in the layout `rnn_model_param_range` describes. Traces made before are
// rejected by `rnn_backward` afterwards.
//
// # Safety
// `model` from `rnn_model_create` (checked; may be in use by other threads);
// `params` holds `len` floats.
enum rnn_status rnn_model_set_params(struct rnn_model *model, const float *params, size_t len);

// Fills every parameter uniformly from [-1/sqrt(H), 1/sqrt(H)) (PyTorch's
// default), reproducibly from `seed`.
//
// # Safety
// `model` from `rnn_model_create` (checked; may be in use by other threads).
enum rnn_status rnn_model_init_random(struct rnn_model *model, uint64_t seed);

// Where one tensor lives in the parameter vector: `*offset` and `*len` in
// elements, for `layer`, direction `dir` (0 forward, 1 backward) and `kind`
// (an RNN_PARAM_* value). Matrices are row-major.
//
// # Safety
// `model` from `rnn_model_create`; `offset` and `len` writable.
enum rnn_status rnn_model_param_range(const struct rnn_model *model,
                                      size_t layer,
                                      size_t dir,
                                      uint32_t kind,
                                      size_t *offset,
                                      size_t *len);

// Stores in `*isa` the name ("scalar", "avx2", "avx512", "amx" or "neon", a
// static string) of the instruction set the model's calls run on: the one
// `rnn_model_set_isa` pinned, else RNN_ISA's, else the best of this CPU.
// Added in ABI version 5.
//
// # Safety
// `model` from `rnn_model_create`; `isa` writable.
enum rnn_status rnn_model_get_isa(const struct rnn_model *model, const char **isa);

// Pins the model's kernels to an instruction set: "scalar", "avx2",
// "avx512", "amx" or "neon". RNN_UNSUPPORTED if this CPU (or, for AMX, the
// OS) lacks it.
//
// # Safety
// `model` from `rnn_model_create` (checked; may be in use by other threads); `isa` a
// NUL-terminated string.
enum rnn_status rnn_model_set_isa(struct rnn_model *model, const char *isa);

// Frees the scratch memory the model keeps for its next calls (at most 256
// MiB while idle, however many calls ran at once) and stores the bytes
// freed in `*released` if it is not NULL. Memory that running calls or live
// traces use is freed when they are done. Parameters and packed weights
// stay. Added in ABI version 3.
//
// # Safety
// `model` from `rnn_model_create` (checked); `released` NULL or writable.
enum rnn_status rnn_model_release_memory(const struct rnn_model *model, size_t *released);

// Sets the precision the model's inference runs in: RNN_PRECISION_F32 (the
// default), RNN_PRECISION_BF16 (weights rounded to bfloat16 when they are
// packed, at the next call: half the weight bytes, faster at small batch;
// a bf16 model gives exactly what an f32 model with bf16-rounded W, R and
// projection gives, except on AMX (rows split into two bf16 parts) and
// for LSTM and GRU on CPUs where a bf16 dot product pays (`vdpbf16ps`
// on AMD Zen 4, `bfdot`;
// `RNN_BF16_DOT=auto|on|off`: rows rounded to bf16 too, 1.6-2.2x f32 at
// batch there, within 4e-3 of f32)) or RNN_PRECISION_INT8 (ABI 5: int8 weights with a
// scale per output row, a quarter of the weight bytes; each input and
// state row quantised as it is multiplied; the same bits on every ISA).
// The f32 parameters are kept: the getters and setters see them
// unchanged. Training calls (`rnn_forward_training`, `rnn_backward`) need
// RNN_PRECISION_F32 and return RNN_INVALID_ARGUMENT otherwise. Added in
// ABI version 4.
//
// # Safety
// `model` from `rnn_model_create` (checked; may be in use by other threads).
enum rnn_status rnn_model_set_precision(struct rnn_model *model, uint32_t precision);

// Stores the model's inference precision (an RNN_PRECISION_* value) in
// `*precision`. Added in ABI version 4.
//
// # Safety
// `model` from `rnn_model_create` (checked); `precision` writable.
enum rnn_status rnn_model_get_precision(const struct rnn_model *model, uint32_t *precision);

// Stores in `*bytes` the bytes of weights the model holds packed for its
// kernels in its precision and ISA, packing them first if no call has yet
// (RNN_OUT_OF_MEMORY if that fails): besides the f32 parameters and the
// scratch memory of `rnn_model_release_memory`. An f32 model packs the
// backward's panels too; a bf16 model only the forward's, at half the
// bytes each, an int8 model at a quarter (plus a correction and a scale
// per output row). Added in ABI version 4.
//
// # Safety
// `model` from `rnn_model_create` (checked); `bytes` writable.
enum rnn_status rnn_model_packed_bytes(const struct rnn_model *model, size_t *bytes);

// Forward inference: runs `*input` through the model and writes `y`, `h_n`
// (and `c_n` if given) into `*output`.
//
// # Safety
// `model` from `rnn_model_create`; `input` and `output` valid, their
// buffers holding the lengths they state.
enum rnn_status rnn_forward_inference(const struct rnn_model *model,
                                      const struct rnn_input *input,
                                      const struct rnn_output *output);

// Forward pass for training: like `rnn_forward_inference`, and stores in
// `*trace` what `rnn_backward` needs. Free it with `rnn_trace_destroy`.
//
// # Safety
// As for `rnn_forward_inference`; `trace` writable.
enum rnn_status rnn_forward_training(const struct rnn_model *model,
                                     const struct rnn_input *input,
                                     const struct rnn_output *output,
                                     struct rnn_trace **trace);

// Frees a trace (NULL is accepted: RNN_OK). A trace destroyed already, or
// not from librnn, gives RNN_MISUSE (best effort).
enum rnn_status rnn_trace_destroy(struct rnn_trace *trace);

// Backpropagation through time over the call that made `trace`, with the
// same model and unchanged parameters: writes the gradients the caller asks
// for (non-NULL buffers of `*grads`).
//
// # Safety
// `model` from `rnn_model_create`; `trace` from `rnn_forward_training`;
// `output_grads` and `grads` valid, their buffers holding the stated lengths.
enum rnn_status rnn_backward(const struct rnn_model *model,
                             const struct rnn_trace *trace,
                             const struct rnn_output_grads *output_grads,
                             const struct rnn_gradients *grads);

// Gradient clipping by global norm: scales `grads[0..len]` so that their L2
// norm is at most `max_norm` (> 0) and stores the norm before clipping in
// `*norm_out` if it is not NULL. To clip several vectors together (a model's
// and an output layer's gradients), put them in one buffer.
//
// # Safety
// `grads` holds `len` floats; `norm_out` is NULL or writable.
enum rnn_status rnn_clip_grad_norm(float *grads, size_t len, float max_norm, float *norm_out);

// Gradient clipping by value: clamps every element of `grads[0..len]` to
// `[-limit, limit]` (`limit` >= 0).
//
// # Safety
// `grads` holds `len` floats.
enum rnn_status rnn_clip_grad_value(float *grads, size_t len, float limit);

// Saves the model (configuration and parameters) to `path` in librnn's
// checkpoint format (see `rnn::train::checkpoint`), atomically: a
// temporary file in the same directory is flushed to disk and renamed over
// `path`, so a failure (RNN_INVALID_ARGUMENT, the message naming the step)
// or a crash leaves the previous file intact.
//
// # Safety
// `model` from `rnn_model_create`; `path` NUL-terminated.
enum rnn_status rnn_model_save(const struct rnn_model *model, const char *path);

// Loads a model saved by `rnn_model_save` (or `rnn::train::save`) into a new
// model in `*out`. A corrupt, truncated or foreign file gives
// RNN_INVALID_ARGUMENT with the reason in the message; so does a path that
// is not a regular file (a FIFO, a device, a directory), refused without
// blocking. No more than the file's size is read.
//
// # Safety
// `path` NUL-terminated; `out` writable.
enum rnn_status rnn_model_load(const char *path, struct rnn_model **out);

// Saves the model's configuration and parameters as a safetensors file:
// tensors under PyTorch's state-dict names ("weight_ih_l0", ...; LSTM
// peepholes as "weight_peephole_l0"), the configuration in the header's
// metadata (`librnn.*` keys), written atomically as `rnn_model_save` writes.
// For a configuration PyTorch can express, `safetensors.torch.load_file`
// and `load_state_dict` take the file as it is. Added in ABI version 4.
//
// # Safety
// `model` from `rnn_model_create`; `path` NUL-terminated.
enum rnn_status rnn_model_save_safetensors(const struct rnn_model *model, const char *path);

// Loads a safetensors file into a new model in `*out`: one written by
// `rnn_model_save_safetensors` (its configuration is in the file; `config`
// may be NULL, or must equal it), or a PyTorch state dict saved with
// `safetensors.torch.save_file(module.state_dict(), path)` (then `config`
// must describe the module; GRU needs RNN_GRU_LINEAR_BEFORE_RESET for
// PyTorch's semantics). Tensors may be float32, float64, bfloat16 or
// float16. A missing, misshapen or unknown tensor, or a file that is not
// safetensors, gives RNN_INVALID_ARGUMENT with the tensor named in the
// message; no configuration for a file without one gives it too. No more
// than the file's size is read. Added in ABI version 4.
//
// # Safety
// `path` NUL-terminated; `config` NULL or valid; `out` writable.
enum rnn_status rnn_model_load_safetensors(const char *path,
                                           const struct rnn_config *config,
                                           struct rnn_model **out);

// `rnn_model_load_safetensors` of one module of a larger network's state
// dict: its parameters are named `prefix` + their PyTorch names (e.g.
// prefix "encoder.lstm." for "encoder.lstm.weight_ih_l0", as
// `model.state_dict()` names them), tensors outside `prefix` are left
// alone. With `prefix` NULL, as `rnn_model_load_safetensors`, which also
// finds the one module whose names end in the parameters' (an error naming
// the modules if several do). Added in ABI version 5.
//
// # Safety
// `path` NUL-terminated; `config` NULL or valid; `prefix` NULL or
// NUL-terminated; `out` writable.
enum rnn_status rnn_model_load_safetensors_module(const char *path,
                                                  const struct rnn_config *config,
                                                  const char *prefix,
                                                  struct rnn_model **out);

// Sets one tensor given by its PyTorch state-dict name ("weight_ih_l0",
// "weight_hh_l1_reverse", "bias_ih_l0", "weight_hr_l0", ...), row-major as
// `tensor.numpy().ravel()`. The model must be PyTorch-compatible: no
// peepholes or cell clip, GRU linear-before-reset, forward or concatenated
// bidirectional layers.
//
// # Safety
// `model` from `rnn_model_create` (checked; may be in use by other threads); `name`
// NUL-terminated; `data` holds `len` floats.
enum rnn_status rnn_model_set_pytorch_tensor(struct rnn_model *model,
                                             const char *name,
                                             const float *data,
                                             size_t len);

// Copies one tensor out under its PyTorch state-dict name (see
// `rnn_model_set_pytorch_tensor`).
//
// # Safety
// `model` from `rnn_model_create`; `name` NUL-terminated; `out` holds `len` floats.
enum rnn_status rnn_model_get_pytorch_tensor(const struct rnn_model *model,
                                             const char *name,
                                             float *out,
                                             size_t len);

// Sets layer `layer` from ONNX RNN/LSTM/GRU operator inputs: `W [D, G·H,
// I]`, `R [D, G·H, H]`, `B [D, 2·G·H]` (NULL, 0 for zero biases) and `P [D,
// 3·H]` (LSTM with peepholes; NULL, 0 otherwise), in ONNX gate orders
// (LSTM i, o, f, c; GRU z, r, h). The model's direction must be forward,
// reverse or concatenated bidirectional; `gru_variant` plays the role of
// `linear_before_reset`.
//
// # Safety
// `model` from `rnn_model_create` (checked; may be in use by other threads); each
// non-NULL buffer holds its stated length.
enum rnn_status rnn_model_set_onnx_layer(struct rnn_model *model,
                                         size_t layer,
                                         const float *w,
                                         size_t w_len,
                                         const float *r,
                                         size_t r_len,
                                         const float *b,
                                         size_t b_len,
                                         const float *p,
                                         size_t p_len);

// Copies layer `layer` out as ONNX operator inputs (see
// `rnn_model_set_onnx_layer`); `P` is required exactly when the model has
// peepholes (NULL, 0 otherwise).
//
// # Safety
// `model` from `rnn_model_create`; each non-NULL buffer holds its stated length.
enum rnn_status rnn_model_get_onnx_layer(const struct rnn_model *model,
                                         size_t layer,
                                         float *w,
                                         size_t w_len,
                                         float *r,
                                         size_t r_len,
                                         float *b,
                                         size_t b_len,
                                         float *p,
                                         size_t p_len);

// Creates an attention layer (RNN_SCORE_*) for encoder outputs of
// `encoder_size` (E) features and decoder states of `decoder_size` (D),
// with `attention_size` (A, additive only; pass 0 otherwise) hidden
// units, its parameters uniform in ±1/sqrt(fan-in) from `seed` (the
// rnn_attention_* functions were added in ABI version 5). Stores it
// in `*out`; free it with `rnn_attention_destroy`. RNN_INVALID_ARGUMENT for
// a zero size, an unknown score, or a dot score with E != D.
//
// # Safety
// `out` writable.
enum rnn_status rnn_attention_create(uint32_t score,
                                     size_t encoder_size,
                                     size_t decoder_size,
                                     size_t attention_size,
                                     uint64_t seed,
                                     struct rnn_attention **out);

// Frees an attention layer (NULL: RNN_OK). Memories made from it stay
// valid objects to destroy.
enum rnn_status rnn_attention_destroy(struct rnn_attention *layer);

// Stores the number of parameters in `*count`: D·E (general),
// A·(E + D + 1) (additive: W_e, W_d, v in that order), 0 (dot).
//
// # Safety
// `layer` from `rnn_attention_create`; `count` writable.
enum rnn_status rnn_attention_param_count(const struct rnn_attention *layer, size_t *count);

// Copies the parameters into `out` (`len` = the count).
//
// # Safety
// `layer` from `rnn_attention_create`; `out` holds `len` floats.
enum rnn_status rnn_attention_get_params(const struct rnn_attention *layer, float *out, size_t len);

// Replaces the parameters (`len` = the count). Memories made before no
// longer match the layer: calls with them return RNN_INVALID_ARGUMENT.
//
// # Safety
// `layer` from `rnn_attention_create`; `params` holds `len` floats.
enum rnn_status rnn_attention_set_params(struct rnn_attention *layer,
                                         const float *params,
                                         size_t len);

// The encoder side of a batch: `encoder_outputs [T, N, E]` (`len` =
// T·N·E, time-major: e.g. a model's `y`), each item's length in
// `seq_lens` (N entries, each <= T; NULL with length 0: all T). Computes
// the score's encoder-side products once for every decoder step. Stores
// it in `*out`; free it with `rnn_attention_memory_destroy`.
//
// # Safety
// `layer` from `rnn_attention_create`; the buffers hold their lengths;
// `out` writable.
enum rnn_status rnn_attention_memory_create(const struct rnn_attention *layer,
                                            const float *encoder_outputs,
                                            size_t len,
                                            size_t seq_len,
                                            size_t batch,
                                            const size_t *seq_lens,
                                            size_t seq_lens_len,
                                            struct rnn_attention_memory **out);

// Frees a memory (NULL: RNN_OK).
enum rnn_status rnn_attention_memory_destroy(struct rnn_attention_memory *memory);

// Attends `queries [M, N, D]` (`queries_len` = M·N·D: M decoder steps,
// one or all) over `memory`: writes the contexts `[M, N, E]` and, if
// `weights` is not NULL, the attention weights `[M, N, T]` (exactly 0 past
// each item's length; an item of length 0 gets a zero context).
//
// # Safety
// Handles from their create functions; buffers hold their lengths and do
// not overlap.
enum rnn_status rnn_attention_forward(const struct rnn_attention *layer,
                                      const struct rnn_attention_memory *memory,
                                      const float *queries,
                                      size_t queries_len,
                                      float *context,
                                      size_t context_len,
                                      float *weights,
                                      size_t weights_len);

// Like `rnn_attention_forward`, and stores in `*trace` what
// `rnn_attention_backward` needs; free it with
// `rnn_attention_trace_destroy`.
//
// # Safety
// As for `rnn_attention_forward`; `trace` writable.
enum rnn_status rnn_attention_forward_training(const struct rnn_attention *layer,
                                               const struct rnn_attention_memory *memory,
                                               const float *queries,
                                               size_t queries_len,
                                               float *context,
                                               size_t context_len,
                                               float *weights,
                                               size_t weights_len,
                                               struct rnn_attention_trace **trace);

// Frees a trace (NULL: RNN_OK).
enum rnn_status rnn_attention_trace_destroy(struct rnn_attention_trace *trace);

// Zero gradients for the decoder steps over `memory`, to accumulate with
// `rnn_attention_backward` and read with `rnn_attention_grads_finish`.
// Free them with `rnn_attention_grads_destroy`.
//
// # Safety
// Handles from their create functions; `out` writable.
enum rnn_status rnn_attention_grads_create(const struct rnn_attention *layer,
                                           const struct rnn_attention_memory *memory,
                                           struct rnn_attention_grads **out);

// Frees gradients (NULL: RNN_OK).
enum rnn_status rnn_attention_grads_destroy(struct rnn_attention_grads *grads);

// The backward of the forward that made `trace`: given `d_context [M, N,
// E]` and optionally `d_weights [M, N, T]` (NULL with length 0: the
// weights feed no loss), writes the gradient of the queries `[M, N, D]` to
// `d_queries` and adds the encoder outputs' and the parameters' to
// `grads`. Call it once per forward (e.g. once per decoder step), then
// `rnn_attention_grads_finish`.
//
// # Safety
// Handles from their create functions, `trace` and `grads` made with
// `memory`; buffers hold their lengths and do not overlap.
enum rnn_status rnn_attention_backward(const struct rnn_attention *layer,
                                       const struct rnn_attention_memory *memory,
                                       const struct rnn_attention_trace *trace,
                                       const float *d_context,
                                       size_t d_context_len,
                                       const float *d_weights,
                                       size_t d_weights_len,
                                       struct rnn_attention_grads *grads,
                                       float *d_queries,
                                       size_t d_queries_len);

// Ends a backward: writes the gradient of the encoder outputs `[T, N, E]`
// (through the contexts and the scores) and of the parameters (laid out
// like them), summed over every `rnn_attention_backward` call. The record
// is then spent: a later backward or finish with it is
// RNN_INVALID_ARGUMENT.
//
// # Safety
// Handles from their create functions, `grads` made with `memory`;
// buffers hold their lengths and do not overlap.
enum rnn_status rnn_attention_grads_finish(const struct rnn_attention *layer,
                                           const struct rnn_attention_memory *memory,
                                           struct rnn_attention_grads *grads,
                                           float *d_encoder_outputs,
                                           size_t d_encoder_outputs_len,
                                           float *d_params,
                                           size_t d_params_len);

// A node with ONNX's default attributes and the given `hidden_size`.
struct rnn_onnx_attributes rnn_onnx_attributes_default(int64_t hidden_size);

// The configuration of one ONNX node, for `rnn_model_create_ext`, as a
// one-layer network of `cell` (RNN_CELL_*) over `input_size` features,
// `peepholes` 1 when the LSTM node has a `P` input: every attribute
// mapped and validated as Rust's `OnnxAttributes` does (an unsupported
// value is RNN_INVALID_ARGUMENT naming the attribute), into `*config`
// and `*ext` (activations with their alpha and beta, `empty_sequence_state
// = RNN_EMPTY_ZEROS`: onnxruntime's final state of an item of length 0,
// and a `clip` of 0 kept). Set `num_layers` for a stack of nodes. Added in
// ABI version 6.
//
// # Safety
// `attributes` valid (its pointers hold their stated lengths, strings
// NUL-terminated); `config` and `ext` writable.
enum rnn_status rnn_onnx_config(const struct rnn_onnx_attributes *attributes,
                                uint32_t cell,
                                size_t input_size,
                                uint32_t peepholes,
                                struct rnn_config *config,
                                struct rnn_config_ext *ext);

// ONNX `Y` (`[T, D, N, H]` for layout 0, `[N, T, D, H]` for layout 1)
// from one layer's librnn `y` (`[T, N, D·H]`, or `[N, T, D·H]` batch-first
// with layout 1): both hold `seq_len · batch · dirs · hidden` floats.
// Added in ABI version 6.
//
// # Safety
// `y` and `out` hold their stated lengths.
enum rnn_status rnn_onnx_y_from_librnn(const float *y,
                                       size_t y_len,
                                       size_t seq_len,
                                       size_t batch,
                                       size_t dirs,
                                       size_t hidden,
                                       uint32_t layout,
                                       float *out,
                                       size_t out_len);

// ONNX `Y_h` / `Y_c` (`[D, N, H]` for layout 0, `[N, D, H]` for layout 1)
// from one layer's librnn final state `[D, N, H]`. Added in ABI version 6.
//
// # Safety
// `state` and `out` hold their stated lengths.
enum rnn_status rnn_onnx_state_from_librnn(const float *state,
                                           size_t state_len,
                                           size_t batch,
                                           size_t dirs,
                                           size_t hidden,
                                           uint32_t layout,
                                           float *out,
                                           size_t out_len);

// librnn's `h0` / `c0` of one layer (`[D, N, H]`) from ONNX `initial_h` /
// `initial_c` (`[D, N, H]` for layout 0, `[N, D, H]` for layout 1). Added
// in ABI version 6.
//
// # Safety
// `state` and `out` hold their stated lengths.
enum rnn_status rnn_onnx_state_to_librnn(const float *state,
                                         size_t state_len,
                                         size_t batch,
                                         size_t dirs,
                                         size_t hidden,
                                         uint32_t layout,
                                         float *out,
                                         size_t out_len);

// Makes a stream of `batch` items over `model`, each from a zero state;
// free it with `rnn_stream_destroy`. Only a forward-direction model can
// stream (RNN_INVALID_ARGUMENT otherwise: a reversed direction reads the
// sequence from its end). Added in ABI version 6.
//
// Where librnn's pool has several threads and the engine would split
// the model's layers between them at this batch, the stream starts up to
// `threads - 1` helper threads of its own, which can run its steps with
// the calling thread (cheaper than handing each step to the pool); it
// uses them while steps run faster with them than without (timed on its
// first steps, again 64 steps later, and after twice as many steps each
// time the choice holds, up to every 4096 steps), and
// `rnn_stream_destroy` ends them. Steps are the same bits either way.
//
// # Safety
// `model` from `rnn_model_create` (checked); `stream` writable.
enum rnn_status rnn_stream_create(const struct rnn_model *model,
                                  size_t batch,
                                  struct rnn_stream **stream);

// Runs one time step: `x [N, I]` (`x_len` = N·I floats) in, the step's
// output `y [N, H_out]` out; every item's state moves on. With `active`
// (N bytes, NULL for all), an item whose byte is 0 keeps its state and
// outputs zeros this step. The outputs and states are the same bits as
// one `rnn_forward_inference` call over every step pushed. Added in ABI
// version 6.
//
// # Safety
// `stream` from `rnn_stream_create` (checked); buffers hold their stated lengths.
enum rnn_status rnn_stream_step(const struct rnn_stream *stream,
                                const float *x,
                                size_t x_len,
                                const uint8_t *active,
                                size_t active_len,
                                float *y,
                                size_t y_len);

// Every item's state back to zero. Added in ABI version 6.
//
// # Safety
// `stream` from `rnn_stream_create` (checked).
enum rnn_status rnn_stream_reset(const struct rnn_stream *stream);

// Item `item`'s state (every layer) back to zero: it starts a new sequence
// at the next step. Added in ABI version 6.
//
// # Safety
// `stream` from `rnn_stream_create` (checked).
enum rnn_status rnn_stream_reset_item(const struct rnn_stream *stream, size_t item);

// Copies the state out: `h [L, N, H_out]`, and `c [L, N, H]` for an LSTM
// (NULL, 0 otherwise, or to skip it). Added in ABI version 6.
//
// # Safety
// `stream` from `rnn_stream_create` (checked); buffers hold their stated lengths.
enum rnn_status rnn_stream_get_state(const struct rnn_stream *stream,
                                     float *h,
                                     size_t h_len,
                                     float *c,
                                     size_t c_len);

// Sets the state (`h [L, N, H_out]`; `c [L, N, H]` for an LSTM, NULL, 0
// otherwise). Added in ABI version 6.
//
// # Safety
// `stream` from `rnn_stream_create` (checked); buffers hold their stated lengths.
enum rnn_status rnn_stream_set_state(const struct rnn_stream *stream,
                                     const float *h,
                                     size_t h_len,
                                     const float *c,
                                     size_t c_len);

// Frees a stream and ends its helper threads (NULL is accepted: RNN_OK).
// A stream destroyed already, or not from librnn, gives RNN_MISUSE. Added
// in ABI version 6.
//
// # Safety
// `stream` from `rnn_stream_create` or NULL.
enum rnn_status rnn_stream_destroy(struct rnn_stream *stream);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* LIBRNN_H */
