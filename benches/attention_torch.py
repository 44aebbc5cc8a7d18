"""PyTorch's attention on the shapes of examples/attention_throughput.rs:
torch.bmm for the scores and the context with a masked softmax between
(Luong's dot score; 'general' adds the key projection W_a h first),
forward and forward + backward, one thread, the same FLOP count
(4·M·N·T·E forward, 12·M·N·T·E with backward).

Usage: python benches/attention_torch.py SCORE T N E M   (torch from
target/peers-venv; see ../shared/peers/README.md)
"""
import sys
import time

import torch


def main():
    score, t, n, e, m = sys.argv[1], *map(int, sys.argv[2:6])
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    enc = (torch.rand(n, t, e, generator=g) * 2 - 1).requires_grad_()
    q = (torch.rand(n, m, e, generator=g) * 2 - 1).requires_grad_()
    w_a = (torch.rand(e, e, generator=g) * 2 - 1) / e**0.5
    w_a.requires_grad_()
    dctx = torch.rand(n, m, e, generator=g) * 2 - 1
    lens = torch.full((n,), t)
    mask = torch.arange(t)[None, None, :] >= lens[:, None, None]

    def forward():
        keys = enc if score == "dot" else enc @ w_a.T
        s = torch.bmm(q, keys.transpose(1, 2)).masked_fill(mask, float("-inf"))
        return torch.bmm(torch.softmax(s, dim=-1), enc)

    def inference():
        with torch.no_grad():
            forward()

    def training():
        forward().backward(dctx)
        enc.grad = q.grad = w_a.grad = None

    def timed(f):
        f()
        reps = 1
        while True:
            start = time.perf_counter()
            for _ in range(reps):
                f()
            if time.perf_counter() - start > 0.05:
                break
            reps *= 2
        samples = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(reps):
                f()
            samples.append((time.perf_counter() - start) / reps)
        return sorted(samples)[3]

    fwd, train = timed(inference), timed(training)
    flops = m * n * t * e
    print(
        f"torch {score} T{t} N{n} E{e} M{m}: forward {fwd * 1e3:.3f} ms, {4 * flops / fwd / 1e9:.1f} GFLOP/s; "
        f"forward+backward {train * 1e3:.3f} ms, {12 * flops / train / 1e9:.1f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
