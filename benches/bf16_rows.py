"""What rounding the rows (x and h) to bf16 would cost in accuracy, beside
rounding the weights alone: a numpy simulation, not the kernels.

librnn's bf16 precision keeps x and h in f32 and rounds only the weights
(widened in registers, or split into two bf16 halves on AMX). A
`vdpbf16ps` / BFDOT path that rounds the rows as well, as OpenVINO's bf16
does, would take half the instructions. This script measures, for the
cells and DESIGN.md-style shapes (weights uniform ±1/√H, inputs N(0, 1),
zero initial state, ONNX gate order, GRU with the reset applied before the
recurrent product), max |y − y_f32| with weights rounded to bf16, then
with x, h or both rounded too (round to nearest even; products summed in
f64, so only the roundings differ from f32).

Run: target/peers-venv/bin/python benches/bf16_rows.py   (needs numpy)
"""
import numpy as np


def bf16(a):
    """Rounds f32 values to bf16 (nearest, ties to even), kept as f32."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def run(cell, H, N, T, seed, round_x, round_h, round_w):
    rng = np.random.default_rng(seed)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    s = 1 / np.sqrt(H)
    W = rng.uniform(-s, s, (G * H, H)).astype(np.float32)
    R = rng.uniform(-s, s, (G * H, H)).astype(np.float32)
    b = rng.uniform(-s, s, (G * H,)).astype(np.float32)
    x = rng.standard_normal((T, N, H)).astype(np.float32)
    if round_w:
        W, R = bf16(W), bf16(R)
    W64, R64 = W.astype(np.float64), R.astype(np.float64)
    h = np.zeros((N, H), np.float32)
    c = np.zeros((N, H), np.float32)
    ys = []
    for t in range(T):
        xt = (bf16(x[t]) if round_x else x[t]).astype(np.float64)
        hr = (bf16(h) if round_h else h).astype(np.float64)
        gx = xt @ W64.T + b
        if cell == "gru":
            gr = hr @ R64[: 2 * H].T
            r = sigmoid(gx[:, :H] + gr[:, :H])
            z = sigmoid(gx[:, H : 2 * H] + gr[:, H:])
            rh = (r * h).astype(np.float32)
            rh = (bf16(rh) if round_h else rh).astype(np.float64)
            n = np.tanh(gx[:, 2 * H :] + rh @ R64[2 * H :].T)
            h = ((1 - z) * n + z * h).astype(np.float32)
        else:
            g = gx + hr @ R64.T
            if cell == "rnn":
                h = np.tanh(g).astype(np.float32)
            else:
                i, f = sigmoid(g[:, :H]), sigmoid(g[:, H : 2 * H])
                gg, o = np.tanh(g[:, 2 * H : 3 * H]), sigmoid(g[:, 3 * H :])
                c = (f * c + i * gg).astype(np.float32)
                h = (o * np.tanh(c)).astype(np.float32)
        ys.append(h)
    return np.stack(ys)


SHAPES = [
    ("rnn", 512, 4, 50),
    ("rnn", 1024, 8, 50),
    ("lstm", 256, 1, 100),
    ("lstm", 512, 16, 25),
    ("lstm", 1024, 32, 50),
    ("gru", 512, 4, 50),
    ("gru", 1024, 8, 50),
]
SEEDS = range(4)

if __name__ == "__main__":
    print("max |y - y_f32| over seeds", list(SEEDS))
    print("| cell | H×N×T | weights | + x | + h | + x and h |")
    print("|---|---|---|---|---|---|")
    for cell, H, N, T in SHAPES:
        errs = []
        for rx, rh in [(0, 0), (1, 0), (0, 1), (1, 1)]:
            worst = 0.0
            for seed in SEEDS:
                ref = run(cell, H, N, T, seed, 0, 0, 0)
                got = run(cell, H, N, T, seed, rx, rh, 1)
                worst = max(worst, float(np.max(np.abs(got - ref))))
            errs.append(worst)
        print(f"| {cell} | {H}×{N}×{T} | " + " | ".join(f"{e:.2e}" for e in errs) + " |")
