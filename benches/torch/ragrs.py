"""Reading what the Rust side of `cargo xtask bench-vs-torch` writes, into HF transformers modules.

A rag-rs model's weights (a safetensors file named by Burn module path, as `RagModel::save`
writes it) and its configs (`query_encoder/config.json`, `generator/config.json`) become a
`BertModel` and a `BartForConditionalGeneration` holding exactly the same weights: the configs carry HF's field
names, and the tensor names differ only in the Rust field names (`layers.N.query` for
`encoder.layer.N.attention.self.query`), Burn's `[in, out]` Linear layout and LayerNorm's
`gamma`/`beta`. Every HF parameter must be found (`load_state_dict(strict=True)`), so a renamed
field fails loudly instead of leaving a random weight.
"""

import os
import re

import torch
from safetensors.torch import load_file

BERT_RULES = [
    (r"^embeddings\.layer_norm\.", "embeddings.LayerNorm."),
    (r"^layers\.(\d+)\.(query|key|value)\.", r"encoder.layer.\1.attention.self.\2."),
    (r"^layers\.(\d+)\.attention_output\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.attention_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"^layers\.(\d+)\.intermediate\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.output\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.output_norm\.", r"encoder.layer.\1.output.LayerNorm."),
    (r"^pooler\.", "pooler.dense."),
]

BART_RULES = [
    (r"^(encoder|decoder)\.layers\.(\d+)\.ffn\.(fc1|fc2)\.", r"model.\1.layers.\2.\3."),
    (r"^(shared|encoder|decoder)\.", r"model.\1."),
]


def _rename(name, rules):
    for pattern, replacement in rules:
        renamed, n = re.subn(pattern, replacement, name)
        if n:
            name = renamed
            break
    return name.replace(".gamma", ".weight").replace(".beta", ".bias")


def _is_linear_weight(hf_name):
    # Burn stores a Linear's weight [in, out]; PyTorch [out, in]. Embeddings, BART's untied
    # `lm_head` (stored [vocab, d] as HF does) and `final_logits_bias` are stored as HF has them.
    if not hf_name.endswith(".weight"):
        return False
    return not any(part in hf_name for part in ("embed", "embeddings", "shared", "lm_head", "LayerNorm", "layer_norm", "layernorm"))


def _load(module, tensors, rules, what):
    state = {}
    for name, value in tensors.items():
        hf = _rename(name, rules)
        if value.dim() == 2 and _is_linear_weight(hf):
            value = value.t().contiguous()
        state[hf] = value
    expected = module.state_dict()
    # Buffers HF derives itself (BERT's position ids) are not in a Burn checkpoint.
    for key in ("embeddings.position_ids", "embeddings.token_type_ids"):
        if key in expected and key not in state:
            state[key] = expected[key]
    if "lm_head.weight" in expected and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.shared.weight"]
    for key in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
        if key in expected and key not in state:
            state[key] = state["model.shared.weight"]
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise ValueError(f"{what}: {key} has shape {tuple(value.shape)} in the checkpoint, HF expects {tuple(expected[key].shape)}")
    module.load_state_dict(state, strict=True)
    return module


def load_bert_bart(directory, model):
    """The question encoder (BertModel) and the generator (BartForConditionalGeneration) of the
    files `model` (case.json's `model`) names under `directory`: the weights by Burn module path,
    the two configs in HF's fields."""
    from transformers import BartConfig, BartForConditionalGeneration, BertConfig, BertModel

    tensors = load_file(os.path.join(directory, model["weights"]))
    bert_config = BertConfig.from_json_file(os.path.join(directory, model["query_encoder"]))
    bart_config = BartConfig.from_json_file(os.path.join(directory, model["generator"]))

    def under(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    query = under("retriever.query.bert.")
    extra = [k for k in tensors if k.startswith("retriever.query.") and not k.startswith("retriever.query.bert.")]
    if extra:
        raise ValueError(f"{model['weights']}: the query encoder has parameters this loader does not map: {extra}")
    bert = _load(BertModel(bert_config, add_pooling_layer="pooler.weight" in query), query, BERT_RULES, "query encoder")
    generator_prefix = next(p for p in ("generator.Bart.", "generator.") if any(k.startswith(p) for k in tensors))
    bart = _load(BartForConditionalGeneration(bart_config), under(generator_prefix), BART_RULES, "generator")
    return bert, bart


def pool(hidden, mask, pooling):
    """The encoders' pooling (rag_retriever::Pooling) over `hidden` [B, T, d] under `mask` [B, T]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if pooling == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    if pooling in ("mean_sqrt_len", "mean-sqrt-len"):
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9).sqrt()
    raise ValueError(f"pooling {pooling!r} is not mapped here")


def pad(rows, value, left=False):
    """Rows of ids padded to the longest: (ids [N, L] int64, mask [N, L] int64)."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), value, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            ids[i, longest - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, longest - len(r):] = 1
        elif r:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
    return ids, mask
