// The C++ view of the C ABI through include/librnn.hpp: RAII models and
// traces, exceptions for errors, results compared with the Rust reference
// (a case file written by tests/c_abi.rs, same format as consumer.c reads),
// and every part of the wrapper once. Compiled as C++11 and as C++17.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <vector>

#include "librnn.hpp"

namespace {

int failures = 0;

void expect(bool cond, const std::string &what) {
    if (!cond) {
        ++failures;
        std::cerr << "FAILED: " << what << "\n";
    }
}

struct Reader {
    std::ifstream in;
    template <typename T> T get() {
        T v{};
        in.read(reinterpret_cast<char *>(&v), sizeof v);
        return v;
    }
    std::vector<float> floats() {
        std::vector<float> v(get<uint64_t>());
        in.read(reinterpret_cast<char *>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
        return v;
    }
};

void compare(const std::string &what, const std::vector<float> &got, const std::vector<float> &want, float tol) {
    expect(got.size() == want.size(), what + ": size");
    float scale = 1.0f;
    for (float w : want) scale = std::fmax(scale, std::fabs(w));
    for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
        if (!(std::fabs(got[i] - want[i]) <= tol * scale)) {
            expect(false, what + "[" + std::to_string(i) + "] = " + std::to_string(got[i]) + ", reference " +
                              std::to_string(want[i]));
            return;
        }
    }
}

void run_case(const char *path) {
    Reader r{std::ifstream(path, std::ios::binary)};
    char magic[4];
    r.in.read(magic, 4);
    expect(r.in && std::memcmp(magic, "RNNC", 4) == 0 && r.get<uint32_t>() == 3, "case file header");
    rnn_config cfg = rnn_config_default();
    cfg.cell = r.get<uint32_t>();
    cfg.activation = r.get<uint32_t>();
    cfg.direction = r.get<uint32_t>();
    cfg.gru_variant = r.get<uint32_t>();
    cfg.layout = r.get<uint32_t>();
    cfg.peepholes = r.get<uint32_t>();
    cfg.input_size = r.get<uint64_t>();
    cfg.hidden_size = r.get<uint64_t>();
    cfg.proj_size = r.get<uint64_t>();
    cfg.num_layers = r.get<uint64_t>();
    cfg.cell_clip = r.get<float>();
    cfg.gate_clip = r.get<float>();
    cfg.input_forget = r.get<uint32_t>();
    rnn_config_ext ext = rnn_config_ext_default();
    ext.empty_sequence_state = r.get<uint32_t>();
    for (auto &a : ext.activations) {
        a.function = r.get<uint32_t>();
        a.alpha = r.get<float>();
        a.beta = r.get<float>();
    }
    size_t seq_len = r.get<uint64_t>(), batch = r.get<uint64_t>();
    rnn::InputOptions opt;
    opt.seq_lens.resize(r.get<uint64_t>());
    for (auto &l : opt.seq_lens) l = r.get<uint64_t>();
    auto params = r.floats(), x = r.floats();
    opt.h0 = r.floats();
    opt.c0 = r.floats();
    auto y = r.floats(), h_n = r.floats(), c_n = r.floats(), dy = r.floats(), dh_n = r.floats(),
         dc_n = r.floats(), dx = r.floats(), dh0 = r.floats(), dc0 = r.floats(), dparams = r.floats();
    expect(static_cast<bool>(r.in), "case file complete");

    rnn::Model model(cfg, ext);
    model.set_params(params);
    expect(model.params() == params, "params round trip");
    auto out = model.forward_inference(x, seq_len, batch, opt);
    compare("y", out.y, y, 1e-4f);
    compare("h_n", out.h_n, h_n, 1e-4f);
    compare("c_n", out.c_n, c_n, 1e-4f);

    auto trained = model.forward_training(x, seq_len, batch, opt);
    const rnn::Output &train_out = trained.first;
    const rnn::Trace &trace = trained.second;
    compare("training y", train_out.y, y, 1e-4f);
    auto g = model.backward(trace, seq_len, batch, dy, dh_n, dc_n);
    compare("dx", g.dx, dx, 1e-3f);
    compare("dh0", g.dh0, dh0, 1e-3f);
    compare("dparams", g.dparams, dparams, 1e-3f);

    // Errors arrive as exceptions carrying the status and message.
    try {
        model.forward_inference(std::vector<float>(x.size() + 1), seq_len, batch);
        expect(false, "a wrong x size throws");
    } catch (const rnn::Error &e) {
        expect(e.status() == RNN_SHAPE_MISMATCH, std::string("status for a wrong size: ") + e.what());
        expect(std::strstr(e.what(), "input.x") != nullptr || std::strstr(e.what(), "`x`") != nullptr,
               std::string("message names the buffer: ") + e.what());
    }
    rnn_config bad = cfg;
    bad.num_layers = 0;
    try {
        rnn::Model broken(bad);
        expect(false, "an invalid config throws");
    } catch (const rnn::Error &e) {
        expect(e.status() == RNN_INVALID_ARGUMENT, "status for an invalid config");
    }
}

// Every other part of the wrapper once, on a small LSTM.
void onnx_wrapper() {
    rnn::OnnxAttributes a;
    a.hidden_size = 4;
    a.direction = "bidirectional";
    a.activations = {"Sigmoid", "Softplus", "Tanh", "HardSigmoid", "Tanh", "Elu"};
    a.activation_alpha = {0.3f};
    auto node = rnn::onnx_config(a, RNN_CELL_LSTM, 3, false);
    const rnn_config_ext &ext = node.second;
    expect(ext.activations[1].function == RNN_FUNCTION_SOFTPLUS && ext.activations[3].alpha == 0.3f &&
               ext.activations[3].beta == 0.5f && ext.empty_sequence_state == RNN_EMPTY_ZEROS &&
               node.first.direction == RNN_DIRECTION_BIDIRECTIONAL_CONCAT,
           "onnx_config maps the functions");
    rnn::Model model(node.first, ext);
    model.init_random(3);
    std::vector<float> x(2 * 1 * 3, 0.25f);
    auto out = model.forward_inference(x, 2, 1, rnn::InputOptions());
    auto y = rnn::onnx_y_from_librnn(out.y, 2, 1, 2, 4, 0);
    expect(y.size() == out.y.size() && y[4] == out.y[4] && y[0] == out.y[0], "Y: [T, D, N, H] with N = 1");
    auto h = rnn::onnx_state_from_librnn(out.h_n, 1, 2, 4, 1);
    expect(rnn::onnx_state_to_librnn(h, 1, 2, 4, 1) == out.h_n, "state round trip");
    a.activations.pop_back();
    try {
        rnn::onnx_config(a, RNN_CELL_LSTM, 3, false);
        expect(false, "five functions for a bidirectional LSTM are refused");
    } catch (const rnn::Error &e) {
        expect(std::string(e.what()).find("activations") != std::string::npos, e.what());
    }
}

void stream_wrapper() {
    rnn_config cfg = rnn_config_default();
    cfg.cell = RNN_CELL_GRU;
    cfg.input_size = 2;
    cfg.hidden_size = 3;
    rnn::Model model(cfg);
    model.init_random(4);
    std::vector<float> x = {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f};  // T = 2, N = 2, I = 2
    auto whole = model.forward_inference(x, 2, 2, rnn::InputOptions());
    rnn::Stream stream(model, 2);
    auto y0 = stream.step(std::vector<float>(x.begin(), x.begin() + 4));
    auto y1 = stream.step(std::vector<float>(x.begin() + 4, x.end()), {1, 1});
    y0.insert(y0.end(), y1.begin(), y1.end());
    expect(y0 == whole.y, "stream steps equal the whole call");
    expect(stream.state().first == whole.h_n, "stream state equals h_n");
    stream.reset_item(0);
    expect(stream.state().first[0] == 0.0f, "reset_item");
    try {
        stream.reset_item(5);
        expect(false, "item 5 of 2 is refused");
    } catch (const rnn::Error &e) {
        expect(e.status() == RNN_INVALID_ARGUMENT, e.what());
    }
}

void whole_wrapper() {
    rnn_config cfg = rnn_config_default();
    cfg.cell = RNN_CELL_LSTM;
    cfg.input_size = 3;
    cfg.hidden_size = 4;
    rnn::Model model(cfg);
    model.init_random(5);
    std::vector<float> x(2 * 3, 0.5f);
    auto want = model.forward_inference(x, 2, 1);

    // Files, both formats; and a module of a larger state dict.
    model.save("cpp_model.bin");
    compare("y after save/load", rnn::Model::load("cpp_model.bin").forward_inference(x, 2, 1).y, want.y, 0.0f);
    model.save_safetensors("cpp_model.safetensors");
    auto st = rnn::Model::load_safetensors("cpp_model.safetensors");
    compare("y after safetensors", st.forward_inference(x, 2, 1).y, want.y, 0.0f);
    auto module = rnn::Model::load_safetensors("cpp_model.safetensors", nullptr, "");
    compare("y after safetensors module", module.forward_inference(x, 2, 1).y, want.y, 0.0f);
    std::remove("cpp_model.bin");
    std::remove("cpp_model.safetensors");

    // Tensors by PyTorch name and as ONNX inputs; ranges.
    auto w = model.pytorch_tensor("weight_ih_l0", 16 * 3);
    rnn::Model copy(cfg);
    copy.set_pytorch_tensor("lstm.weight_ih_l0", w);
    expect(copy.pytorch_tensor("weight_ih_l0", 16 * 3) == w, "PyTorch tensor round trip (prefixed name)");
    rnn::OnnxLayer onnx{std::vector<float>(16 * 3), std::vector<float>(16 * 4), std::vector<float>(32),
                        std::vector<float>()};
    model.get_onnx_layer(0, onnx);
    copy.set_onnx_layer(0, onnx);
    compare("y after an ONNX round trip", copy.forward_inference(x, 2, 1).y, want.y, 0.0f);
    std::pair<size_t, size_t> r = model.param_range(0, 0, RNN_PARAM_R);
    expect(r.first == 48 && r.second == 64, "R range");

    // ISA, precision, memory.
    std::string isa = model.isa();
    expect(isa == "scalar" || isa == "avx2" || isa == "avx512" || isa == "amx" || isa == "neon",
           "ISA " + isa);
    model.set_isa("scalar");
    expect(model.isa() == "scalar", "pinned ISA");
    model.set_precision(RNN_PRECISION_INT8);
    expect(model.precision() == RNN_PRECISION_INT8, "precision");
    compare("int8 y", model.forward_inference(x, 2, 1).y, want.y, 6e-2f);
    expect(model.packed_bytes() > 0, "packed bytes");
    try {
        model.forward_training(x, 2, 1);
        expect(false, "training an int8 model throws");
    } catch (const rnn::Error &e) {
        expect(e.status() == RNN_INVALID_ARGUMENT, "status for int8 training");
    }
    model.set_precision(RNN_PRECISION_F32);
    expect(model.call_memory(2, 1).inference > 0, "call memory");
    model.release_memory();
    expect(model.get() != nullptr, "the raw handle");
    rnn::Model moved(std::move(model));
    expect(moved.get() != nullptr && model.get() == nullptr, "a moved-from model is empty");

    // Clipping.
    std::vector<float> grads = {3.0f, 4.0f};
    expect(std::fabs(rnn::clip_grad_norm(grads, 1.0f) - 5.0f) < 1e-6f, "norm before clipping");
    expect(std::fabs(grads[0] - 0.6f) < 1e-6f, "clipped by norm");
    rnn::clip_grad_value(grads, 0.1f);
    expect(grads[0] == 0.1f && grads[1] == 0.1f, "clipped by value");

    // Attention: memory, forward, training forward, backward.
    rnn::Attention attention(RNN_SCORE_ADDITIVE, 4, 4, 3, 1);
    std::vector<float> enc(3 * 2 * 4);
    for (size_t i = 0; i < enc.size(); ++i) enc[i] = std::sin(0.3f * static_cast<float>(i));
    rnn::AttentionMemory memory = attention.memory(enc, 3, 2, std::vector<size_t>{3, 1});
    std::vector<float> queries(2 * 4, 0.25f);
    rnn::Attended a = attention.attend(memory, queries);
    expect(a.weights.size() == 6 && a.weights[4] == 0.0f && a.weights[5] == 0.0f, "masked weights");
    expect(std::fabs(a.weights[3] - 1.0f) < 1e-6f, "one position, all the weight");
    auto at = attention.attend_training(memory, queries);
    compare("attention context, training", at.first.context, a.context, 0.0f);
    rnn::AttentionGrads ag = attention.start_backward(memory);
    auto dq = attention.backward(memory, at.second, std::vector<float>(2 * 4, 1.0f), ag);
    auto done = attention.finish_backward(memory, ag);
    expect(dq.size() == 8 && done.first.size() == enc.size() && done.second.size() == attention.params().size(),
           "attention gradient sizes");
    attention.set_params(attention.params());
}

}  // namespace

int main(int argc, char **argv) {
    whole_wrapper();
    onnx_wrapper();
    stream_wrapper();
    for (int i = 1; i < argc; ++i) run_case(argv[i]);
    if (failures) {
        std::cerr << failures << " check(s) failed\n";
        return 1;
    }
    std::cout << "C++ consumer: " << argc - 1 << " case file(s) passed (librnn " << rnn_version() << ")\n";
    return 0;
}
