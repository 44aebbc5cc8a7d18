// librnn.hpp: a small RAII layer over the C ABI of librnn.h, for C++11 and
// later. Errors become rnn::Error exceptions; models, traces and attention
// objects free themselves; get() hands out the C handle for anything else.
#ifndef LIBRNN_HPP
#define LIBRNN_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "librnn.h"

namespace rnn {

// A failed librnn call: its status and message.
class Error : public std::runtime_error {
  public:
    Error(rnn_status status, const char *message) : std::runtime_error(message), status_(status) {}
    rnn_status status() const noexcept { return status_; }

  private:
    rnn_status status_;
};

inline void check(rnn_status status) {
    if (status != RNN_OK) throw Error(status, rnn_last_error_message());
}

// A move-only owner of a C handle, freed by `Destroy`.
template <typename T, rnn_status (*Destroy)(T *)> class Handle {
  public:
    explicit Handle(T *raw = nullptr) noexcept : raw_(raw) {}
    Handle(Handle &&other) noexcept : raw_(other.raw_) { other.raw_ = nullptr; }
    Handle &operator=(Handle &&other) noexcept {
        std::swap(raw_, other.raw_);
        return *this;
    }
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    ~Handle() { Destroy(raw_); }
    T *get() const noexcept { return raw_; }

  private:
    T *raw_;
};

// Outputs of a forward pass.
struct Output {
    std::vector<float> y, h_n, c_n;
};

// Gradients of a backward pass.
struct Gradients {
    std::vector<float> dx, dh0, dc0, dparams;
};

// Optional parts of an input: empty vectors mean "not given".
struct InputOptions {
    std::vector<size_t> seq_lens;
    std::vector<float> h0, c0;
};

// ONNX operator inputs of one layer (see rnn_model_set_onnx_layer).
struct OnnxLayer {
    std::vector<float> w, r, b, p;
};

// The record of a training forward pass, for Model::backward.
class Trace : public Handle<rnn_trace, rnn_trace_destroy> {
  public:
    explicit Trace(rnn_trace *raw) noexcept : Handle(raw) {}
};

namespace detail {
template <typename T> const T *ptr(const std::vector<T> &v) { return v.empty() ? nullptr : v.data(); }
template <typename T> T *ptr(std::vector<T> &v) { return v.empty() ? nullptr : v.data(); }
}  // namespace detail

class Model : public Handle<rnn_model, rnn_model_destroy> {
  public:
    // A model for `config`, parameters zero.
    explicit Model(const rnn_config &config) : Handle(create(config, rnn_config_ext_default())) {}
    // With the extended options (ONNX's activation functions, the
    // empty-sequence state, a zero gate clip).
    Model(const rnn_config &config, const rnn_config_ext &ext) : Handle(create(config, ext)) {}
    // Takes ownership of a model from the C ABI.
    explicit Model(rnn_model *raw) noexcept : Handle(raw) {}

    // Files: librnn's checkpoint format, and safetensors (PyTorch's names;
    // `config` for a file without librnn's metadata; `prefix` for one
    // module of a larger network's state dict).
    static Model load(const std::string &path) {
        rnn_model *raw = nullptr;
        check(rnn_model_load(path.c_str(), &raw));
        return Model(raw);
    }
    static Model load_safetensors(const std::string &path, const rnn_config *config = nullptr,
                                  const char *prefix = nullptr) {
        rnn_model *raw = nullptr;
        check(rnn_model_load_safetensors_module(path.c_str(), config, prefix, &raw));
        return Model(raw);
    }
    void save(const std::string &path) const { check(rnn_model_save(get(), path.c_str())); }
    void save_safetensors(const std::string &path) const {
        check(rnn_model_save_safetensors(get(), path.c_str()));
    }

    rnn_sizes sizes(size_t seq_len, size_t batch) const {
        rnn_sizes s;
        check(rnn_sizes_for(get(), seq_len, batch, &s));
        return s;
    }
    rnn_memory call_memory(size_t seq_len, size_t batch) const {
        rnn_memory m;
        check(rnn_call_memory(get(), seq_len, batch, &m));
        return m;
    }

    // Parameters: all of them, one tensor's place, random initialisation.
    std::vector<float> params() const {
        std::vector<float> p(sizes(0, 0).params);
        check(rnn_model_get_params(get(), detail::ptr(p), p.size()));
        return p;
    }
    void set_params(const std::vector<float> &p) { check(rnn_model_set_params(get(), detail::ptr(p), p.size())); }
    void init_random(uint64_t seed) { check(rnn_model_init_random(get(), seed)); }
    // {offset, length} of tensor `kind` (RNN_PARAM_*) of a layer and direction.
    std::pair<size_t, size_t> param_range(size_t layer, size_t dir, uint32_t kind) const {
        size_t offset = 0, len = 0;
        check(rnn_model_param_range(get(), layer, dir, kind, &offset, &len));
        return std::make_pair(offset, len);
    }

    // PyTorch state-dict tensors by name ("weight_ih_l0", ...; a module
    // path before the name is allowed); `len` is the tensor's size.
    void set_pytorch_tensor(const std::string &name, const std::vector<float> &values) {
        check(rnn_model_set_pytorch_tensor(get(), name.c_str(), detail::ptr(values), values.size()));
    }
    std::vector<float> pytorch_tensor(const std::string &name, size_t len) const {
        std::vector<float> out(len);
        check(rnn_model_get_pytorch_tensor(get(), name.c_str(), detail::ptr(out), out.size()));
        return out;
    }
    // ONNX operator inputs of a layer (b may be empty: zero biases; p only
    // with peepholes). `get_onnx_layer` fills vectors sized by the caller.
    void set_onnx_layer(size_t layer, const OnnxLayer &l) {
        check(rnn_model_set_onnx_layer(get(), layer, detail::ptr(l.w), l.w.size(), detail::ptr(l.r), l.r.size(),
                                       detail::ptr(l.b), l.b.size(), detail::ptr(l.p), l.p.size()));
    }
    void get_onnx_layer(size_t layer, OnnxLayer &l) const {
        check(rnn_model_get_onnx_layer(get(), layer, detail::ptr(l.w), l.w.size(), detail::ptr(l.r), l.r.size(),
                                       detail::ptr(l.b), l.b.size(), detail::ptr(l.p), l.p.size()));
    }

    // Instruction set ("scalar", "avx2", "avx512", "amx", "neon"), precision
    // (RNN_PRECISION_*), packed bytes, idle scratch.
    void set_isa(const std::string &isa) { check(rnn_model_set_isa(get(), isa.c_str())); }
    std::string isa() const {
        const char *name = nullptr;
        check(rnn_model_get_isa(get(), &name));
        return name;
    }
    void set_precision(uint32_t precision) { check(rnn_model_set_precision(get(), precision)); }
    uint32_t precision() const {
        uint32_t p = 0;
        check(rnn_model_get_precision(get(), &p));
        return p;
    }
    size_t packed_bytes() const {
        size_t bytes = 0;
        check(rnn_model_packed_bytes(get(), &bytes));
        return bytes;
    }
    size_t release_memory() const {
        size_t released = 0;
        check(rnn_model_release_memory(get(), &released));
        return released;
    }

    Output forward_inference(const std::vector<float> &x, size_t seq_len, size_t batch,
                             const InputOptions &opt = InputOptions()) const {
        Output out = make_output(seq_len, batch);
        rnn_input in = input(x, seq_len, batch, opt);
        rnn_output o = output(out);
        check(rnn_forward_inference(get(), &in, &o));
        return out;
    }

    std::pair<Output, Trace> forward_training(const std::vector<float> &x, size_t seq_len, size_t batch,
                                              const InputOptions &opt = InputOptions()) const {
        Output out = make_output(seq_len, batch);
        rnn_input in = input(x, seq_len, batch, opt);
        rnn_output o = output(out);
        rnn_trace *raw = nullptr;
        check(rnn_forward_training(get(), &in, &o, &raw));
        return std::pair<Output, Trace>(std::move(out), Trace(raw));
    }

    Gradients backward(const Trace &trace, size_t seq_len, size_t batch, const std::vector<float> &dy,
                       const std::vector<float> &dh_n = std::vector<float>(),
                       const std::vector<float> &dc_n = std::vector<float>()) const {
        rnn_sizes s = sizes(seq_len, batch);
        Gradients g{std::vector<float>(s.x), std::vector<float>(s.h), std::vector<float>(s.c),
                    std::vector<float>(s.params)};
        rnn_output_grads og{detail::ptr(dy), dy.size(), detail::ptr(dh_n), dh_n.size(), detail::ptr(dc_n),
                            dc_n.size()};
        rnn_gradients out{detail::ptr(g.dx),  g.dx.size(),  detail::ptr(g.dh0),     g.dh0.size(),
                          detail::ptr(g.dc0), g.dc0.size(), detail::ptr(g.dparams), g.dparams.size()};
        check(rnn_backward(get(), trace.get(), &og, &out));
        return g;
    }

  private:
    static rnn_model *create(const rnn_config &config, const rnn_config_ext &ext) {
        rnn_model *raw = nullptr;
        check(rnn_model_create_ext(&config, &ext, &raw));
        return raw;
    }
    Output make_output(size_t seq_len, size_t batch) const {
        rnn_sizes s = sizes(seq_len, batch);
        return Output{std::vector<float>(s.y), std::vector<float>(s.h), std::vector<float>(s.c)};
    }
    static rnn_input input(const std::vector<float> &x, size_t seq_len, size_t batch, const InputOptions &opt) {
        return rnn_input{detail::ptr(x),          x.size(),          seq_len,           batch,
                         detail::ptr(opt.seq_lens), opt.seq_lens.size(), detail::ptr(opt.h0), opt.h0.size(),
                         detail::ptr(opt.c0),     opt.c0.size()};
    }
    static rnn_output output(Output &out) {
        return rnn_output{detail::ptr(out.y), out.y.size(), detail::ptr(out.h_n), out.h_n.size(),
                          detail::ptr(out.c_n), out.c_n.size()};
    }
};

// Streaming inference (see rnn_stream_create): a batch's state kept from
// step to step; each step's outputs are those of one whole call.
class Stream : public Handle<rnn_stream, rnn_stream_destroy> {
  public:
    Stream(const Model &model, size_t batch) : Handle(create(model, batch)) {
        rnn_sizes s;
        check(rnn_sizes_for(model.get(), 1, batch, &s));
        y_len_ = s.y;
        h_len_ = s.h;
        c_len_ = s.c;
    }
    // One step: x [N, I] in, y [N, H_out] out. `active` (N flags, empty for
    // all): an item whose flag is 0 keeps its state and outputs zeros.
    std::vector<float> step(const std::vector<float> &x, const std::vector<uint8_t> &active = {}) {
        std::vector<float> y(y_len_);
        check(rnn_stream_step(get(), detail::ptr(x), x.size(), detail::ptr(active), active.size(), detail::ptr(y),
                              y.size()));
        return y;
    }
    void reset() { check(rnn_stream_reset(get())); }
    void reset_item(size_t item) { check(rnn_stream_reset_item(get(), item)); }
    // The state: h [L, N, H_out] and (LSTM) c [L, N, H].
    std::pair<std::vector<float>, std::vector<float>> state() const {
        std::vector<float> h(h_len_), c(c_len_);
        check(rnn_stream_get_state(get(), detail::ptr(h), h.size(), detail::ptr(c), c.size()));
        return std::make_pair(h, c);
    }
    void set_state(const std::vector<float> &h, const std::vector<float> &c = {}) {
        check(rnn_stream_set_state(get(), detail::ptr(h), h.size(), detail::ptr(c), c.size()));
    }

  private:
    size_t y_len_ = 0, h_len_ = 0, c_len_ = 0;
    static rnn_stream *create(const Model &model, size_t batch) {
        rnn_stream *raw = nullptr;
        check(rnn_stream_create(model.get(), batch, &raw));
        return raw;
    }
};

// Gradient clipping (in place); clip_grad_norm returns the norm before.
inline float clip_grad_norm(std::vector<float> &grads, float max_norm) {
    float norm = 0.0f;
    check(rnn_clip_grad_norm(detail::ptr(grads), grads.size(), max_norm, &norm));
    return norm;
}
inline void clip_grad_value(std::vector<float> &grads, float limit) {
    check(rnn_clip_grad_value(detail::ptr(grads), grads.size(), limit));
}

// ONNX nodes (see rnn_onnx_config): a node's attributes as a config, and
// one layer's Y and states between librnn's and ONNX's layouts.
struct OnnxAttributes {
    int64_t hidden_size = 0;
    std::string direction = "forward";
    int64_t layout = 0, linear_before_reset = 0, input_forget = 0;
    bool has_clip = false;
    float clip = 0.0f;
    std::vector<std::string> activations;
    std::vector<float> activation_alpha, activation_beta;
};
// The node's configuration and extended options (see rnn_onnx_config):
// pass both to Model(config, ext).
inline std::pair<rnn_config, rnn_config_ext> onnx_config(const OnnxAttributes &a, uint32_t cell, size_t input_size,
                                                         bool peepholes) {
    rnn_onnx_attributes c = rnn_onnx_attributes_default(a.hidden_size);
    c.direction = a.direction.c_str();
    c.layout = a.layout;
    c.linear_before_reset = a.linear_before_reset;
    c.input_forget = a.input_forget;
    c.has_clip = a.has_clip ? 1u : 0u;
    c.clip = a.clip;
    std::vector<const char *> names;
    for (const auto &n : a.activations) names.push_back(n.c_str());
    c.activations = names.empty() ? nullptr : names.data();
    c.activations_len = names.size();
    c.activation_alpha = detail::ptr(a.activation_alpha);
    c.activation_alpha_len = a.activation_alpha.size();
    c.activation_beta = detail::ptr(a.activation_beta);
    c.activation_beta_len = a.activation_beta.size();
    rnn_config config;
    rnn_config_ext ext;
    check(rnn_onnx_config(&c, cell, input_size, peepholes ? 1u : 0u, &config, &ext));
    return std::make_pair(config, ext);
}
inline std::vector<float> onnx_y_from_librnn(const std::vector<float> &y, size_t seq_len, size_t batch, size_t dirs,
                                             size_t hidden, uint32_t layout) {
    std::vector<float> out(y.size());
    check(rnn_onnx_y_from_librnn(detail::ptr(y), y.size(), seq_len, batch, dirs, hidden, layout, detail::ptr(out),
                                 out.size()));
    return out;
}
inline std::vector<float> onnx_state_from_librnn(const std::vector<float> &state, size_t batch, size_t dirs,
                                                 size_t hidden, uint32_t layout) {
    std::vector<float> out(state.size());
    check(rnn_onnx_state_from_librnn(detail::ptr(state), state.size(), batch, dirs, hidden, layout,
                                     detail::ptr(out), out.size()));
    return out;
}
inline std::vector<float> onnx_state_to_librnn(const std::vector<float> &state, size_t batch, size_t dirs,
                                               size_t hidden, uint32_t layout) {
    std::vector<float> out(state.size());
    check(rnn_onnx_state_to_librnn(detail::ptr(state), state.size(), batch, dirs, hidden, layout, detail::ptr(out),
                                   out.size()));
    return out;
}

// Attention (see rnn_attention_create): a layer, the encoder side of a
// batch, a training forward's trace, a backward's gradients.
class AttentionMemory : public Handle<rnn_attention_memory, rnn_attention_memory_destroy> {
  public:
    AttentionMemory(rnn_attention_memory *raw, size_t seq_len, size_t batch) noexcept
        : Handle(raw), seq_len_(seq_len), batch_(batch) {}
    size_t seq_len() const noexcept { return seq_len_; }
    size_t batch() const noexcept { return batch_; }

  private:
    size_t seq_len_, batch_;
};
class AttentionTrace : public Handle<rnn_attention_trace, rnn_attention_trace_destroy> {
  public:
    explicit AttentionTrace(rnn_attention_trace *raw) noexcept : Handle(raw) {}
};
class AttentionGrads : public Handle<rnn_attention_grads, rnn_attention_grads_destroy> {
  public:
    explicit AttentionGrads(rnn_attention_grads *raw) noexcept : Handle(raw) {}
};

// Contexts [M, N, E] and weights [M, N, T] of an attention forward.
struct Attended {
    std::vector<float> context, weights;
};

class Attention : public Handle<rnn_attention, rnn_attention_destroy> {
  public:
    Attention(uint32_t score, size_t encoder_size, size_t decoder_size, size_t attention_size, uint64_t seed)
        : Handle(create(score, encoder_size, decoder_size, attention_size, seed)), encoder_size_(encoder_size),
          decoder_size_(decoder_size) {}

    std::vector<float> params() const {
        size_t n = 0;
        check(rnn_attention_param_count(get(), &n));
        std::vector<float> p(n);
        check(rnn_attention_get_params(get(), detail::ptr(p), p.size()));
        return p;
    }
    void set_params(const std::vector<float> &p) {
        check(rnn_attention_set_params(get(), detail::ptr(p), p.size()));
    }

    // The encoder side: outputs [T, N, E], lengths (empty: all T).
    AttentionMemory memory(const std::vector<float> &encoder_outputs, size_t seq_len, size_t batch,
                           const std::vector<size_t> &seq_lens = std::vector<size_t>()) const {
        rnn_attention_memory *raw = nullptr;
        check(rnn_attention_memory_create(get(), detail::ptr(encoder_outputs), encoder_outputs.size(), seq_len,
                                          batch, detail::ptr(seq_lens), seq_lens.size(), &raw));
        return AttentionMemory(raw, seq_len, batch);
    }
    // Decoder states [M, N, D] of M steps.
    Attended attend(const AttentionMemory &memory, const std::vector<float> &queries) const {
        Attended a = make(memory, queries.size());
        check(rnn_attention_forward(get(), memory.get(), detail::ptr(queries), queries.size(),
                                    detail::ptr(a.context), a.context.size(), detail::ptr(a.weights),
                                    a.weights.size()));
        return a;
    }
    std::pair<Attended, AttentionTrace> attend_training(const AttentionMemory &memory,
                                                        const std::vector<float> &queries) const {
        Attended a = make(memory, queries.size());
        rnn_attention_trace *raw = nullptr;
        check(rnn_attention_forward_training(get(), memory.get(), detail::ptr(queries), queries.size(),
                                             detail::ptr(a.context), a.context.size(), detail::ptr(a.weights),
                                             a.weights.size(), &raw));
        return std::pair<Attended, AttentionTrace>(std::move(a), AttentionTrace(raw));
    }
    AttentionGrads start_backward(const AttentionMemory &memory) const {
        rnn_attention_grads *raw = nullptr;
        check(rnn_attention_grads_create(get(), memory.get(), &raw));
        return AttentionGrads(raw);
    }
    // The decoder states' gradient; the rest accumulates in `grads`.
    std::vector<float> backward(const AttentionMemory &memory, const AttentionTrace &trace,
                                const std::vector<float> &d_context, AttentionGrads &grads,
                                const std::vector<float> &d_weights = std::vector<float>()) const {
        std::vector<float> d_queries(d_context.size() / encoder_size_ * decoder_size_);
        check(rnn_attention_backward(get(), memory.get(), trace.get(), detail::ptr(d_context), d_context.size(),
                                     detail::ptr(d_weights), d_weights.size(), grads.get(),
                                     detail::ptr(d_queries), d_queries.size()));
        return d_queries;
    }
    // {d encoder outputs [T, N, E], d params}.
    std::pair<std::vector<float>, std::vector<float>> finish_backward(const AttentionMemory &memory,
                                                                      AttentionGrads &grads) const {
        std::vector<float> d_enc(memory.seq_len() * memory.batch() * encoder_size_), d_params(params().size());
        check(rnn_attention_grads_finish(get(), memory.get(), grads.get(), detail::ptr(d_enc), d_enc.size(),
                                         detail::ptr(d_params), d_params.size()));
        return std::make_pair(d_enc, d_params);
    }

  private:
    static rnn_attention *create(uint32_t score, size_t e, size_t d, size_t a, uint64_t seed) {
        rnn_attention *raw = nullptr;
        check(rnn_attention_create(score, e, d, a, seed, &raw));
        return raw;
    }
    Attended make(const AttentionMemory &memory, size_t queries) const {
        size_t rows = decoder_size_ ? queries / decoder_size_ : 0;  // M * N
        Attended a;
        a.context.resize(rows * encoder_size_);
        a.weights.resize(rows * memory.seq_len());
        return a;
    }
    size_t encoder_size_, decoder_size_;
};

}  // namespace rnn

#endif  // LIBRNN_HPP
