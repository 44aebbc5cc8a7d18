// The C++ view of the C ABI through include/librnn.hpp: RAII models and
// traces, exceptions for errors, results compared with the Rust reference
// (a case file written by tests/c_abi.rs, same format as consumer.c reads).
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
    expect(r.in && std::memcmp(magic, "RNNC", 4) == 0 && r.get<uint32_t>() == 2, "case file header");
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

    rnn::Model model(cfg);
    model.set_params(params);
    expect(model.params() == params, "params round trip");
    auto out = model.forward_inference(x, seq_len, batch, opt);
    compare("y", out.y, y, 1e-4f);
    compare("h_n", out.h_n, h_n, 1e-4f);
    compare("c_n", out.c_n, c_n, 1e-4f);

    auto [train_out, trace] = model.forward_training(x, seq_len, batch, opt);
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

}  // namespace

int main(int argc, char **argv) {
    for (int i = 1; i < argc; ++i) run_case(argv[i]);
    if (failures) {
        std::cerr << failures << " check(s) failed\n";
        return 1;
    }
    std::cout << "C++ consumer: " << argc - 1 << " case file(s) passed (librnn " << rnn_version() << ")\n";
    return 0;
}
