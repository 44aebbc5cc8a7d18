// librnn.hpp: a small RAII layer over the C ABI of librnn.h for C++17.
// Errors become rnn::Error exceptions; models and traces free themselves.
#ifndef LIBRNN_HPP
#define LIBRNN_HPP

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

class Trace {
  public:
    explicit Trace(rnn_trace *raw) noexcept : raw_(raw) {}
    Trace(Trace &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    Trace &operator=(Trace &&other) noexcept {
        std::swap(raw_, other.raw_);
        return *this;
    }
    Trace(const Trace &) = delete;
    Trace &operator=(const Trace &) = delete;
    ~Trace() { rnn_trace_destroy(raw_); }
    const rnn_trace *get() const noexcept { return raw_; }

  private:
    rnn_trace *raw_;
};

class Model {
  public:
    explicit Model(const rnn_config &config) { check(rnn_model_create(&config, &raw_)); }
    Model(Model &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    Model &operator=(Model &&other) noexcept {
        std::swap(raw_, other.raw_);
        return *this;
    }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;
    ~Model() { rnn_model_destroy(raw_); }

    rnn_sizes sizes(size_t seq_len, size_t batch) const {
        rnn_sizes s;
        check(rnn_sizes_for(raw_, seq_len, batch, &s));
        return s;
    }
    std::vector<float> params() const {
        std::vector<float> p(sizes(0, 0).params);
        check(rnn_model_get_params(raw_, p.data(), p.size()));
        return p;
    }
    void set_params(const std::vector<float> &p) { check(rnn_model_set_params(raw_, p.data(), p.size())); }

    Output forward_inference(const std::vector<float> &x, size_t seq_len, size_t batch,
                             const InputOptions &opt = {}) const {
        Output out = make_output(seq_len, batch);
        rnn_input in = input(x, seq_len, batch, opt);
        rnn_output o = output(out);
        check(rnn_forward_inference(raw_, &in, &o));
        return out;
    }

    std::pair<Output, Trace> forward_training(const std::vector<float> &x, size_t seq_len, size_t batch,
                                              const InputOptions &opt = {}) const {
        Output out = make_output(seq_len, batch);
        rnn_input in = input(x, seq_len, batch, opt);
        rnn_output o = output(out);
        rnn_trace *raw = nullptr;
        check(rnn_forward_training(raw_, &in, &o, &raw));
        return {std::move(out), Trace(raw)};
    }

    Gradients backward(const Trace &trace, size_t seq_len, size_t batch, const std::vector<float> &dy,
                       const std::vector<float> &dh_n = {}, const std::vector<float> &dc_n = {}) const {
        rnn_sizes s = sizes(seq_len, batch);
        Gradients g{std::vector<float>(s.x), std::vector<float>(s.h), std::vector<float>(s.c),
                    std::vector<float>(s.params)};
        rnn_output_grads og{dy.data(), dy.size(), ptr(dh_n), dh_n.size(), ptr(dc_n), dc_n.size()};
        rnn_gradients out{g.dx.data(), g.dx.size(), g.dh0.data(), g.dh0.size(),
                          s.c ? g.dc0.data() : nullptr, g.dc0.size(), g.dparams.data(), g.dparams.size()};
        check(rnn_backward(raw_, trace.get(), &og, &out));
        return g;
    }

  private:
    template <typename T> static const T *ptr(const std::vector<T> &v) { return v.empty() ? nullptr : v.data(); }

    Output make_output(size_t seq_len, size_t batch) const {
        rnn_sizes s = sizes(seq_len, batch);
        return Output{std::vector<float>(s.y), std::vector<float>(s.h), std::vector<float>(s.c)};
    }
    static rnn_input input(const std::vector<float> &x, size_t seq_len, size_t batch, const InputOptions &opt) {
        return rnn_input{x.data(),       x.size(),       seq_len,       batch,        ptr(opt.seq_lens),
                         opt.seq_lens.size(), ptr(opt.h0), opt.h0.size(), ptr(opt.c0), opt.c0.size()};
    }
    static rnn_output output(Output &out) {
        return rnn_output{out.y.data(), out.y.size(), out.h_n.data(), out.h_n.size(),
                          out.c_n.empty() ? nullptr : out.c_n.data(), out.c_n.size()};
    }

    rnn_model *raw_ = nullptr;
};

}  // namespace rnn

#endif  // LIBRNN_HPP
