#!/usr/bin/env python3
"""Test vectors for librnn's PyTorch and ONNX interop, produced by the real
frameworks (not by librnn). Run on demand, not in CI:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch onnx onnxruntime numpy safetensors
    (versions used for the committed files: torch 2.15.0, onnx 1.23.2,
    onnxruntime 1.32.0, numpy 2.4.6, safetensors 0.8.0)
    /tmp/venv/bin/python tests/interop/make_vectors.py

Writes tests/data/<case>.bin (named float32 tensors) and tests/data/manifest.txt
(one case per line: name, framework, then key=value configuration); for the
PyTorch cases also tests/data/<case>.safetensors, the module's state dict as
`safetensors.torch.save_file` writes it.
File format, little-endian: b"RNNV", u32 tensor count, then per tensor:
u32 name length, name (UTF-8), u32 rank, u64 dims, float32 data.
"""
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data")


def write(name, tensors):
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(b"RNNV" + struct.pack("<I", len(tensors)))
        for key, value in tensors.items():
            a = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
            f.write(struct.pack("<I", len(key)) + key.encode())
            f.write(struct.pack("<I", a.ndim) + struct.pack("<%dQ" % a.ndim, *a.shape))
            f.write(a.tobytes())


def torch_cases(manifest):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    cases = [
        # name, cell, input, hidden, layers, bidirectional, proj, batch_first, lengths, nonlinearity
        ("pt_rnn_tanh", "rnn", 3, 4, 1, False, 0, False, None, "tanh"),
        ("pt_rnn_relu_bi2", "rnn", 3, 4, 2, True, 0, False, [5, 2], "relu"),
        ("pt_lstm", "lstm", 3, 4, 1, False, 0, False, None, None),
        ("pt_lstm_bi2_lengths", "lstm", 3, 4, 2, True, 0, False, [5, 3], None),
        ("pt_lstm_proj_bi2", "lstm", 3, 5, 2, True, 3, False, None, None),
        ("pt_lstm_batch_first", "lstm", 3, 4, 1, True, 0, True, None, None),
        ("pt_gru", "gru", 3, 4, 1, False, 0, False, [4, 5], None),
        ("pt_gru_bi3", "gru", 3, 4, 3, True, 0, False, None, None),
    ]
    T, N = 5, 2
    for name, cell, I, H, L, bi, proj, bf, lengths, nl in cases:
        kw = dict(input_size=I, hidden_size=H, num_layers=L, bidirectional=bi, batch_first=bf)
        if cell == "rnn":
            m = torch.nn.RNN(nonlinearity=nl, **kw)
        elif cell == "lstm":
            m = torch.nn.LSTM(proj_size=proj, **kw)
        else:
            m = torch.nn.GRU(**kw)
        D = 2 if bi else 1
        H_out = proj or H
        x = torch.randn(*((N, T, I) if bf else (T, N, I)), requires_grad=True)
        h0 = torch.randn(L * D, N, H_out, requires_grad=True)
        c0 = torch.randn(L * D, N, H, requires_grad=True)
        state = (h0, c0) if cell == "lstm" else h0
        if lengths:
            packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
            y, s = m(packed, state)
            y, _ = pad_packed_sequence(y, batch_first=bf, total_length=T)
        else:
            y, s = m(x, state)
        h_n, c_n = s if cell == "lstm" else (s, None)
        wy, wh = torch.randn_like(y), torch.randn_like(h_n)
        loss = (y * wy).sum() + (h_n * wh).sum()
        tensors = {"x": x, "h0": h0, "wy": wy, "wh": wh}
        if cell == "lstm":
            wc = torch.randn_like(c_n)
            loss = loss + (c_n * wc).sum()
            tensors.update(c0=c0, wc=wc)
        loss.backward()
        tensors.update(y=y, h_n=h_n, dx=x.grad, dh0=h0.grad)
        if cell == "lstm":
            tensors.update(c_n=c_n, dc0=c0.grad)
        for pname, p in m.named_parameters():
            tensors["param." + pname] = p
            tensors["grad." + pname] = p.grad
        if lengths:
            tensors["lengths"] = torch.tensor(lengths, dtype=torch.float32)
        write(name, {k: v.detach().numpy() for k, v in tensors.items()})
        from safetensors.torch import save_file

        save_file(m.state_dict(), os.path.join(OUT, name + ".safetensors"))
        manifest.append(
            f"{name} pytorch cell={cell} input={I} hidden={H} layers={L} bidirectional={int(bi)} "
            f"proj={proj} batch_first={int(bf)} activation={nl or 'tanh'} seq_len={T} batch={N}"
        )


def onnx_node_outputs(op, feeds, attrs, outputs, name, evaluator):
    """Runs one RNN/LSTM/GRU node on `feeds` with onnxruntime or, for what
    onnxruntime does not run (layout = 1), the onnx package's reference
    evaluator. Returns {output name: array}."""
    import onnx
    from onnx import TensorProto, helper

    inputs = ["X", "W", "R", "B", "sequence_lens" if "sequence_lens" in feeds else "", "initial_h"]
    if op == "LSTM":
        inputs += ["initial_c", "P" if "P" in feeds else ""]
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node(op, inputs, outputs, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(k, TensorProto.INT32 if k == "sequence_lens" else TensorProto.FLOAT, v.shape)
        for k, v in feeds.items()
    ]
    graph_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, []) for o in outputs]
    model = helper.make_model(helper.make_graph([node], name, graph_inputs, graph_outputs),
                              opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=False)
    if evaluator == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip(outputs, sess.run(outputs, feeds)))
    from onnx.reference import ReferenceEvaluator

    return dict(zip(outputs, ReferenceEvaluator(model).run(outputs, feeds)))


KINDS = ["Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
         "HardSigmoid", "Elu", "Softsign", "Softplus"]
TAKES = {"Affine": (1, 1), "LeakyRelu": (1, 0), "ThresholdedRelu": (1, 0), "ScaledTanh": (1, 1),
         "HardSigmoid": (1, 1), "Elu": (1, 0)}


def activation_cases():
    """Every ONNX activation function in every role of every cell, with
    different functions in the two directions; half the cases give
    activation_alpha / activation_beta, half take onnxruntime's defaults.
    A third have an item of length 0 (onnxruntime's final state: zeros)."""
    rng = np.random.default_rng(7)
    out = []
    k = lambda i: KINDS[i % len(KINDS)]
    for i, first in enumerate(KINDS):
        per_cell = {
            "RNN": [first, k(i + 5)],
            "GRU": [first, k(i + 1), k(i + 2), k(i + 3)],
            "LSTM": [first, k(i + 4), k(i + 7), k(i + 2), k(i + 6), k(i + 9)],
        }
        for op, acts in per_cell.items():
            extra = {"activations": acts}
            if i % 2 == 0:
                alphas = [float(np.round(rng.uniform(0.2, 1.5), 3)) for a in acts if TAKES.get(a, (0, 0))[0]]
                betas = [float(np.round(rng.uniform(0.1, 0.9), 3)) for a in acts if TAKES.get(a, (0, 0))[1]]
                if alphas:
                    extra["activation_alpha"] = alphas
                if betas:
                    extra["activation_beta"] = betas
            lengths = [4, 0] if i % 3 == 0 else None
            lbr = i % 2 if op == "GRU" else 0
            name = f"onnx_act_{op.lower()}_{first.lower()}"
            out.append((name, op, "bidirectional", lbr, 0, False, lengths, extra))
    return out


def onnx_cases(manifest):
    rng = np.random.default_rng(1)
    # name, op, direction, linear_before_reset, layout, peepholes, lengths, extra attributes.
    cases = [
        ("onnx_rnn", "RNN", "forward", 0, 0, False, None, {}),
        ("onnx_lstm_peephole", "LSTM", "forward", 0, 0, True, None, {}),
        ("onnx_lstm_bi_lengths", "LSTM", "bidirectional", 0, 0, False, [5, 3], {}),
        ("onnx_lstm_bi_peephole", "LSTM", "bidirectional", 0, 0, True, None, {}),
        ("onnx_gru", "GRU", "forward", 0, 0, False, None, {}),
        ("onnx_gru_lbr_bi", "GRU", "bidirectional", 1, 0, False, [2, 5], {}),
        ("onnx_gru_reverse", "GRU", "reverse", 0, 0, False, None, {}),
        ("onnx_rnn_reverse_lengths", "RNN", "reverse", 0, 0, False, [3, 5], {}),
        # clip (on every activation's input), input_forget, Relu.
        ("onnx_lstm_clip_peephole", "LSTM", "forward", 0, 0, True, None, {"clip": 0.4}),
        ("onnx_lstm_input_forget_bi", "LSTM", "bidirectional", 0, 0, True, [4, 5], {"input_forget": 1}),
        ("onnx_lstm_clip_input_forget_bi", "LSTM", "bidirectional", 0, 0, False, None,
         {"clip": 0.3, "input_forget": 1}),
        ("onnx_gru_clip", "GRU", "forward", 0, 0, False, None, {"clip": 0.35}),
        ("onnx_gru_lbr_clip_bi_lengths", "GRU", "bidirectional", 1, 0, False, [5, 1], {"clip": 0.35}),
        ("onnx_rnn_clip_reverse", "RNN", "reverse", 0, 0, False, None, {"clip": 0.4}),
        ("onnx_rnn_relu_bi", "RNN", "bidirectional", 0, 0, False, [2, 5], {"activations": ["Relu", "Relu"]}),
        ("onnx_rnn_relu_clip", "RNN", "forward", 0, 0, False, None, {"activations": ["Relu"], "clip": 0.3}),
        # Layout 1 ([N, T, ...]): onnxruntime refuses it ("batchwise recurrent
        # operations are not supported"), so these come from the onnx package's
        # reference evaluator, which in turn is checked against onnxruntime on
        # the same data in layout 0 below. (The evaluator ignores
        # sequence_lens, clip and activations, so these cases use none.)
        ("onnx_layout1_lstm_bi_peephole", "LSTM", "bidirectional", 0, 1, True, None, {}),
        ("onnx_layout1_gru_lbr", "GRU", "forward", 1, 1, False, None, {}),
        ("onnx_layout1_rnn_reverse", "RNN", "reverse", 0, 1, False, None, {}),
    ]
    cases += activation_cases()
    # clip = 0, which onnxruntime's RNN runs (every pre-activation becomes
    # 0; its GRU and LSTM refuse it).
    cases.append(("onnx_rnn_clip_zero", "RNN", "bidirectional", 0, 0, False, [3, 5], {"clip": 0.0}))
    T, N, I, H = 5, 2, 3, 4
    for name, op, direction, lbr, layout, peep, lengths, extra in cases:
        G = {"RNN": 1, "LSTM": 4, "GRU": 3}[op]
        D = 2 if direction == "bidirectional" else 1
        # The activation cases use smaller values: functions such as
        # Softplus on a GRU's z (z > 1) make the state grow step by step.
        scale = 0.25 if name.startswith("onnx_act_") else 0.5
        f = lambda *s: (rng.standard_normal(s) * scale).astype(np.float32)
        X = f(N, T, I) if layout else f(T, N, I)
        W, R, B = f(D, G * H, I), f(D, G * H, H), f(D, 2 * G * H)
        h0 = f(N, D, H) if layout else f(D, N, H)
        feeds = {"X": X, "W": W, "R": R, "B": B, "initial_h": h0}
        if lengths:
            feeds["sequence_lens"] = np.array(lengths, dtype=np.int32)
        outputs = ["Y", "Y_h"]
        if op == "LSTM":
            c0 = f(N, D, H) if layout else f(D, N, H)
            feeds["initial_c"] = c0
            outputs.append("Y_c")
            if peep:
                feeds["P"] = f(D, 3 * H)
        attrs = dict(hidden_size=H, direction=direction, layout=layout)
        if op == "GRU":
            attrs["linear_before_reset"] = lbr
        attrs.update(extra)
        evaluator = "onnx.reference" if layout else "onnxruntime"
        results = onnx_node_outputs(op, feeds, attrs, outputs, name, evaluator)
        if layout:
            # The same node in layout 0 through onnxruntime must agree.
            to_time_major = {"X": (1, 0, 2), "initial_h": (1, 0, 2), "initial_c": (1, 0, 2)}
            feeds0 = {k: np.ascontiguousarray(v.transpose(to_time_major[k])) if k in to_time_major else v
                      for k, v in feeds.items()}
            ort0 = onnx_node_outputs(op, feeds0, dict(attrs, layout=0), outputs, name, "onnxruntime")
            from_time_major = {"Y": (2, 0, 1, 3), "Y_h": (1, 0, 2), "Y_c": (1, 0, 2)}
            for k in outputs:
                err = np.abs(ort0[k].transpose(from_time_major[k]) - results[k]).max()
                assert err < 1e-5, f"{name}: onnx.reference and onnxruntime differ in {k} by {err}"
        for k in outputs:
            assert np.isfinite(results[k]).all() and np.abs(results[k]).max() < 50, f"{name}: {k} is not tame"
        tensors = {k: v for k, v in feeds.items() if k != "sequence_lens"}
        if lengths:
            tensors["lengths"] = np.array(lengths, dtype=np.float32)
        tensors.update(results)
        write(name, tensors)
        manifest.append(
            f"{name} onnx cell={op.lower()} input={I} hidden={H} layers=1 direction={direction} "
            f"lbr={lbr} layout={layout} peepholes={int(peep)} clip={extra.get('clip', 'none')} "
            f"input_forget={extra.get('input_forget', 0)} "
            f"activations={','.join(extra.get('activations', [])) or 'default'} "
            f"alpha={','.join(map(repr, extra.get('activation_alpha', []))) or 'none'} "
            f"beta={','.join(map(repr, extra.get('activation_beta', []))) or 'none'} "
            f"evaluator={evaluator} seq_len={T} batch={N}"
        )


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = []
    onnx_cases(manifest)
    torch_cases(manifest)
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("# Generated by tests/interop/make_vectors.py: name framework key=value...\n")
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
