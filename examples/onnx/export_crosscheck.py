#!/usr/bin/python3
"""cnnc export, checked numerically: the exported ONNX model run by a small PyTorch interpreter of
the ops cnnc exports, against cnnc's own package (through its C API), node by node.

    CNNC=build/cnnc /usr/bin/python3 examples/onnx/export_crosscheck.py models/*.yaml

For each model: random weights (in cnnc's layouts, written as safetensors), `cnnc export`,
onnx.checker.check_model(full_check=True), then every node output cnnc keeps and the final output
compared (relative error <= 1e-4). Exits 1 if any model differs. Needs python3-torch and
python3-onnx; a documented cross-check (docs/onnx.md), not part of the test suite.
"""
import ctypes, json, os, struct, subprocess, sys, tempfile
import numpy as np, onnx, torch
import torch.nn.functional as F
from onnx import numpy_helper

CNNC = os.environ.get("CNNC", "build/cnnc")

def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        b = arr.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b); blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h); [f.write(b) for b in blobs]

def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

def run_onnx(model, x):
    env = {"input": x}
    for t in model.graph.initializer: env[t.name] = torch.from_numpy(numpy_helper.to_array(t).copy())
    for n in model.graph.node:
        a = attrs(n); i = [env[k] if k else None for k in n.input]; op = n.op_type
        if op == "Conv":
            t, l, b, r = a.get("pads", [0, 0, 0, 0])
            y = F.conv2d(F.pad(i[0], (l, r, t, b)), i[1], i[2] if len(i) > 2 else None, stride=a.get("strides", [1, 1]),
                         dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
        elif op in ("MaxPool", "AveragePool"):
            t, l, b, r = a["pads"]; k = a["kernel_shape"]; s = a["strides"]
            if op == "MaxPool":
                y = F.max_pool2d(F.pad(i[0], (l, r, t, b), value=-float("inf")), k, s)
            else:
                assert a["count_include_pad"] == 0
                total = F.avg_pool2d(F.pad(i[0], (l, r, t, b)), k, s) * (k[0] * k[1])
                ones = torch.ones_like(i[0][:1, :1])
                count = F.avg_pool2d(F.pad(ones, (l, r, t, b)), k, s) * (k[0] * k[1])
                y = total / count
        elif op == "GlobalAveragePool": y = i[0].mean(dim=(2, 3), keepdim=True)
        elif op == "GlobalMaxPool": y = i[0].amax(dim=(2, 3), keepdim=True)
        elif op == "Flatten": assert a["axis"] == 1; y = i[0].reshape(i[0].shape[0], -1)
        elif op == "Transpose": y = i[0].permute(*a["perm"]).contiguous()
        elif op == "Gemm":
            assert not a.get("transA") and not a.get("transB")
            y = i[0] @ i[1] + (i[2] if len(i) > 2 else 0)
        elif op == "Relu": y = F.relu(i[0])
        elif op == "Sigmoid": y = torch.sigmoid(i[0])
        elif op == "Tanh": y = torch.tanh(i[0])
        elif op == "Clip": y = torch.clamp(i[0], float(i[1]), float(i[2]))
        elif op == "LeakyRelu": y = F.leaky_relu(i[0], a["alpha"])
        elif op == "Elu": y = F.elu(i[0], a["alpha"])
        elif op == "HardSigmoid": y = torch.clamp(i[0] * a["alpha"] + a["beta"], 0, 1)
        elif op == "HardSwish": y = i[0] * torch.clamp(i[0] / 6 + 0.5, 0, 1)
        elif op == "Mul": y = i[0] * i[1]
        elif op == "Div": y = i[0] / i[1]
        elif op == "Add": y = i[0] + i[1]
        elif op == "Erf": y = torch.erf(i[0])
        elif op == "Softmax": y = torch.softmax(i[0], dim=a["axis"])
        elif op == "Pad":
            assert a.get("mode", b"constant") in (b"constant", "constant")
            p = i[1].tolist(); y = F.pad(i[0], (p[3], p[7], p[2], p[6]))
        elif op == "Resize":
            sc = i[2].tolist(); assert sc[0] == 1 and sc[1] == 1
            y = i[0].repeat_interleave(int(sc[2]), dim=2).repeat_interleave(int(sc[3]), dim=3)
        elif op == "Dropout": y = i[0]
        elif op == "BatchNormalization":
            y = F.batch_norm(i[0], i[3], i[4], i[1], i[2], False, 0.0, a["epsilon"])
        elif op == "Concat": y = torch.cat(i, dim=a["axis"])
        else: raise RuntimeError("op " + op)
        env[n.output[0]] = y
    return env

def check(model_path, work, seed=1):
    os.makedirs(work, exist_ok=True)
    pkg = os.path.join(work, "pkg")
    subprocess.run([CNNC, "build", "-q", model_path, "-o", pkg], check=True)
    manifest = json.load(open(os.path.join(pkg, "manifest.json"))); p = manifest["model"]
    lib = ctypes.CDLL(os.path.join(pkg, "kernels.so"))
    fn = lambda name, res, args: (setattr(getattr(lib, f"{p}_{name}"), "restype", res), setattr(getattr(lib, f"{p}_{name}"), "argtypes", args), getattr(lib, f"{p}_{name}"))[2]
    create = fn("create", ctypes.c_void_p, [])
    pcount = fn("param_count", ctypes.c_int, []); pname = fn("param_name", ctypes.c_char_p, [ctypes.c_int])
    prank = fn("param_rank", ctypes.c_int, [ctypes.c_int]); pdim = fn("param_dim", ctypes.c_int64, [ctypes.c_int, ctypes.c_int])
    pdata = fn("param_data", ctypes.POINTER(ctypes.c_float), [ctypes.c_void_p, ctypes.c_int])
    changed = fn("params_changed", None, [ctypes.c_void_p])
    forward = fn("forward", ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.POINTER(ctypes.c_float)])
    m = create()
    rng = np.random.default_rng(seed)
    tensors = {}
    for k in range(pcount()):
        name = pname(k).decode(); shape = [pdim(k, d) for d in range(prank(k))]
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        if "depthwise" in name: fan_in = shape[0] * shape[1]
        arr = rng.uniform(-1, 1, size=shape).astype(np.float32) * np.float32(np.sqrt(3.0 / fan_in))
        if name.endswith("moving_variance"): arr = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        if name.endswith("gamma"): arr = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        tensors[name] = arr
        ctypes.memmove(pdata(m, k), arr.ctypes.data, arr.nbytes)
    changed(m)
    wpath = os.path.join(work, "w.safetensors"); write_safetensors(wpath, tensors)
    opath = os.path.join(work, "m.onnx")
    subprocess.run([CNNC, "export", "-q", model_path, "--weights", wpath, "-o", opath], check=True, stdout=subprocess.DEVNULL)
    model = onnx.load(opath)
    onnx.checker.check_model(model, full_check=True)
    in_dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]]
    batch = 3
    x = rng.uniform(-1, 1, size=[batch] + in_dims).astype(np.float32)
    x_cnnc = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if len(in_dims) == 3 else x)
    out = np.zeros([batch] + (out_dims[1:] + out_dims[:1] if len(out_dims) == 3 else out_dims), np.float32)
    rc = forward(m, x_cnnc.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), batch, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    assert rc == 0, rc
    if len(out_dims) == 3: out = out.transpose(0, 3, 1, 2)
    with torch.no_grad(): env = run_onnx(model, torch.from_numpy(x)); ref = env["output"].double().numpy()
    # Every node cnnc keeps, against the ONNX tensor holding the same value.
    nodes_out = fn("node_output", ctypes.POINTER(ctypes.c_float), [ctypes.c_void_p, ctypes.c_int])
    node_elems = fn("node_elements", ctypes.c_int64, [ctypes.c_int])
    compared, node_err = 0, 0.0
    for b in manifest["buffers"][1:]:
        ptr = nodes_out(m, b["id"])
        if not ptr: continue
        written = {k["output"] for k in manifest["kernels"]}
        if b["id"] not in written and not b["view"]: continue  # folded into the next kernel: no output of its own
        last = b["fused"][-1] if b["fused"] else None
        tname = b["name"] if not last else (last["layer"] if last["layer"] != b["name"] else b["name"] + "/" + last["op"])
        if b["id"] == manifest["output"]["node"]: tname = "output"
        t = env[tname].double().numpy()
        got = np.ctypeslib.as_array(ptr, shape=(batch * node_elems(b["id"]),)).astype(np.float64)
        if t.ndim == 4: t = t.transpose(0, 2, 3, 1)
        assert got.size == t.size, (b["name"], got.size, t.size)
        e = np.abs(got - t.reshape(-1)).max() / max(1.0, np.abs(t).max())
        if e > 1e-4: print("   mismatch", b["name"], b["op"], tname, e)
        node_err = max(node_err, e); compared += 1
    err = np.abs(out - ref).max(); scale = np.abs(ref).max()
    ok = err <= 1e-4 * max(1.0, scale) and node_err <= 1e-4
    print(f"{'OK ' if ok else 'BAD'} {model_path}: max |cnnc - onnx| = {err:.3g} (output scale {scale:.3g}), {compared} nodes: max rel err {node_err:.3g}, ops {sorted({n.op_type for n in model.graph.node})}")
    return ok

if __name__ == "__main__":
    bad = 0
    for i, path in enumerate(sys.argv[1:]):
        try:
            with tempfile.TemporaryDirectory() as work:
                bad += not check(path, work)
        except Exception as e:
            bad += 1; print(f"ERR {path}: {e}")
    sys.exit(1 if bad else 0)
