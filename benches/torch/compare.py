"""The reference side of `cargo xtask bench-vs-torch`: the same work as the Rust side, in PyTorch,
HF transformers, sentence-transformers or FAISS, on the inputs the Rust side wrote.

    python compare.py CASE DIR

DIR holds `case.json` (options, the batches the Rust side trained on, its losses) and the files it
names. Prints one JSON object on stdout: the timings and what was computed (losses, embeddings'
distance, recall), which the Rust side checks against its own before it prints a ratio.
"""

import json
import os
import resource
import sys
import time

import torch

import ragrs


def threads(case):
    n = int(case["threads"])
    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)
    return n


def timed_steps(case, step):
    """Runs `step(i)` over the case's batches (warm-up ones untimed): per-step seconds and results."""
    seconds, results = [], []
    for i in range(len(case["batches"])):
        start = time.perf_counter()
        results.append(step(i))
        elapsed = time.perf_counter() - start
        if i >= case["warmup"]:
            seconds.append(elapsed)
    return seconds, results


def adamw(case, groups):
    """torch.optim.AdamW over `groups` ([(params, group name)]) with the Rust side's constants.

    rag-trainer decays only tensors of rank >= 2, so each group splits into a decayed and an
    undecayed part."""
    a = case["adamw"]
    param_groups = []
    for params, name in groups:
        g = case["groups"][name]
        matrices = [p for p in params if p.dim() >= 2]
        vectors = [p for p in params if p.dim() < 2]
        param_groups.append({"params": matrices, "lr": g["lr"], "weight_decay": g["weight_decay"]})
        param_groups.append({"params": vectors, "lr": g["lr"], "weight_decay": 0.0})
    # foreach: PyTorch's default on the CPU for a list of tensors.
    return torch.optim.AdamW(param_groups, betas=(a["beta1"], a["beta2"]), eps=a["epsilon"], foreach=True)


def rag_token_nll(logits, doc_scores, target, mask):
    """RAG-Token's per-example NLL (rag_losses::rag_token_nll, no label smoothing).

    logits [B*K, T, V], doc_scores [B, K], target/mask [B, T]."""
    b, k = doc_scores.shape
    t = target.shape[1]
    log_probs = torch.log_softmax(logits.view(b, k, t, -1), dim=-1)
    picked = log_probs.gather(3, target.view(b, 1, t, 1).expand(b, k, t, 1)).squeeze(3)
    joint = picked + torch.log_softmax(doc_scores, dim=1).unsqueeze(2)
    marginal = torch.logsumexp(joint, dim=1)
    return -(marginal * mask).sum(1)


def rag_sequence_nll(logits, doc_scores, target, mask):
    b, k = doc_scores.shape
    t = target.shape[1]
    log_probs = torch.log_softmax(logits.view(b, k, t, -1), dim=-1)
    picked = log_probs.gather(3, target.view(b, 1, t, 1).expand(b, k, t, 1)).squeeze(3)
    sequence = (picked * mask.unsqueeze(1)).sum(2) + torch.log_softmax(doc_scores, dim=1)
    return -torch.logsumexp(sequence, dim=1)


def rag_step(case, directory):
    """A RAG training step (question encoder, doc scores, BART over B*K rows, the marginal NLL,
    backward, global-norm clipping, AdamW), on the Rust side's batches."""
    n_threads = threads(case)
    config = case["model"]
    bert, bart = ragrs.load_bert_bart(directory, config)
    if config["label_smoothing"] != 0.0:
        raise ValueError("label smoothing is not mapped here")
    loss_fn = {"rag-token": rag_token_nll, "rag-sequence": rag_sequence_nll}[config["loss"]]
    tau = config["retriever_temperature"]
    special = case["special"]
    from safetensors.torch import load_file

    if case["search"]:
        corpus, documents = load_file(os.path.join(directory, "corpus.safetensors")), None
    else:
        corpus, documents = None, load_file(os.path.join(directory, "documents.safetensors"))
    # Dropout is 0 on both sides (so the losses can agree); eval() turns HF's off whatever the
    # config says, and gradients still flow.
    bert.eval()
    bart.eval()
    params = [(list(bert.parameters()), "query_encoder"), (list(bart.parameters()), "generator")]
    optim = adamw(case, params)
    everything = [p for group, _ in params for p in group]
    id_mismatches = 0

    def step(i):
        nonlocal id_mismatches
        batch = case["batches"][i]
        q_ids, q_mask = ragrs.pad(batch["question_ids"], 0)
        hidden = bert(input_ids=q_ids, attention_mask=q_mask, token_type_ids=torch.zeros_like(q_ids)).last_hidden_state
        query = ragrs.pool(hidden, q_mask, config["pooling"])
        if config["normalize"]:
            query = torch.nn.functional.normalize(query, dim=-1)
        b = query.shape[0]
        k = config["n_docs"]
        if corpus is not None:
            # Exact search over the corpus vectors, as the Rust side's flat index does.
            scores = query.detach() @ corpus["vectors"].t()
            top = scores.topk(k, dim=1).indices
            ids = corpus["ids"][top]
            id_mismatches += int((ids != torch.tensor(batch["doc_ids"])).sum())
            docs = corpus["vectors"][top]
        else:
            docs = documents[f"step{i}"]
        doc_scores = torch.einsum("bd,bkd->bk", query, docs) / tau
        enc_ids, enc_mask = ragrs.pad(batch["contexts"], special["pad"])
        answers = batch["answers"]
        target, target_mask = ragrs.pad(answers, special["pad"])
        a = target.shape[1]
        decoder_rows = [[special["decoder_start"]] + list(row[: a - 1]) for row in target.tolist()]
        decoder_rows = [row for row in decoder_rows for _ in range(k)]
        dec_ids, _ = ragrs.pad(decoder_rows, special["pad"])
        logits = bart(input_ids=enc_ids, attention_mask=enc_mask, decoder_input_ids=dec_ids).logits
        per_example = loss_fn(logits, doc_scores, target, target_mask.to(logits.dtype))
        loss = per_example.mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(everything, case["max_grad_norm"])
        optim.step()
        return loss.item()

    seconds, losses = timed_steps(case, step)
    return {
        "library": library(),
        "threads": n_threads,
        "seconds": seconds,
        "losses": losses,
        "retrieval_id_mismatches": id_mismatches if corpus is not None else None,
    }


def load_smollm2(case):
    """SmolLM2 as HF transformers reads its GGUF file (its own dequantizer and config), in f32."""
    from transformers import AutoModelForCausalLM

    path = case["gguf"]
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
    # No dropout on either side (LLaMA has none but attention dropout, 0 in SmolLM2's config).
    model.eval()
    return model


def lm_rows(batch, special, n_docs):
    """The decoder-only rows rag_generator::Generator::answer_logits builds: each prompt
    left-padded, then its question's answer right-padded; positions counted from the first real
    token. Returns (ids, mask, positions, prompt length p, target [B, A], target mask [B, A])."""
    prompts, prompt_mask = ragrs.pad(batch["contexts"], special["pad"], left=True)
    target, target_mask = ragrs.pad(batch["answers"], special["pad"])
    per_doc = lambda t: t.repeat_interleave(n_docs, dim=0)
    ids = torch.cat([prompts, per_doc(target)], dim=1)
    mask = torch.cat([prompt_mask, per_doc(target_mask)], dim=1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions, prompts.shape[1], target, target_mask


def answer_log_probs(model, batch, special):
    """log p(answer token) [B*K, A] and the target mask [B*K, A]."""
    b = len(batch["answers"])
    k = len(batch["contexts"]) // b
    ids, mask, positions, p, target, target_mask = lm_rows(batch, special, k)
    a = target.shape[1]
    hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    # The LM head only on the positions that predict an answer token, as the project computes it.
    logits = model.lm_head(hidden[:, p - 1 : p - 1 + a])
    log_probs = torch.log_softmax(logits, dim=-1)
    per_doc_target = target.repeat_interleave(k, dim=0)
    picked = log_probs.gather(2, per_doc_target.unsqueeze(2)).squeeze(2)
    return picked, target_mask.repeat_interleave(k, dim=0).to(picked.dtype), b, k


def lm_step(case, directory):
    """RA-DIT's LM fine-tuning step: the NLL of each (passage, question) row's answer, summed over
    the question's passages, the batch mean; backward, clipping, AdamW over the whole LM."""
    n_threads = threads(case)
    model = load_smollm2(case)
    special = case["special"]
    params = list(model.parameters())
    matrices = [p for p in params if p.dim() >= 2]
    vectors = [p for p in params if p.dim() < 2]
    a = case["adamw"]
    optim = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": case["weight_decay"]}, {"params": vectors, "weight_decay": 0.0}],
        lr=case["lr"], betas=(a["beta1"], a["beta2"]), eps=a["epsilon"], foreach=True)

    def step(i):
        picked, mask, b, k = answer_log_probs(model, case["batches"][i], special)
        per_row = -(picked * mask).sum(1)
        loss = per_row.view(b, k).sum(1).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, case["max_grad_norm"])
        optim.step()
        print(f"step {i}: loss {loss.item():.4f}", file=sys.stderr)
        return loss.item()

    seconds, losses = timed_steps(case, step)
    return {"library": library(), "threads": n_threads, "seconds": seconds, "losses": losses}


def lm_score(case, directory):
    """The answers' summed log-probabilities, no gradients (LSR's teacher)."""
    n_threads = threads(case)
    model = load_smollm2(case)
    special = case["special"]

    @torch.no_grad()
    def step(i):
        picked, mask, _, _ = answer_log_probs(model, case["batches"][i], special)
        return (picked * mask).sum(1).tolist()

    seconds, scores = timed_steps(case, step)
    return {"library": library(), "threads": n_threads, "seconds": seconds, "scores": [s for row in scores for s in row]}


def encode(case, directory):
    """sentence-transformers' encode of the same texts (its own batching: sorted by length)."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    n_threads = threads(case)
    model = SentenceTransformer(case["model"], device="cpu")
    model.max_seq_length = case["max_tokens"]
    texts = case["texts"]
    seconds = []
    for round in range(2):
        start = time.perf_counter()
        vectors = model.encode(texts, batch_size=case["batch_size"], convert_to_tensor=True)
        if round > 0:
            seconds.append(time.perf_counter() - start)
    project = load_file(os.path.join(directory, "project_vectors.safetensors"))["vectors"]
    diff = (project - vectors).abs().max().item()
    import sentence_transformers

    return {"library": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
            "threads": n_threads, "seconds": seconds, "max_abs_diff": diff}


def read_fvecs(path):
    import numpy as np

    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def faiss_setup(case, directory):
    import faiss

    n_threads = threads(case)
    faiss.omp_set_num_threads(n_threads)
    base = read_fvecs(os.path.join(directory, "base.fvecs"))
    queries = read_fvecs(os.path.join(directory, "queries.fvecs"))
    return faiss, n_threads, base, queries


def timed_search(index, queries, k, rounds):
    seconds, found = [], None
    for round in range(rounds + 1):
        start = time.perf_counter()
        _, found = index.search(queries, k)
        if round > 0:
            seconds.append(time.perf_counter() - start)
    return seconds, found


def flat(case, directory):
    """FAISS's exact inner-product index over the same vectors, every query in one call."""
    from safetensors.numpy import load_file

    faiss, n_threads, base, queries = faiss_setup(case, directory)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    seconds, found = timed_search(index, queries, case["k"], case["rounds"])
    project = load_file(os.path.join(directory, "project_ids.safetensors"))["ids"]
    agreement = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), project.tolist())) / project.size
    return {"library": f"faiss {faiss.__version__}", "threads": n_threads, "seconds": seconds, "id_agreement": agreement}


def hnsw(case, directory):
    """FAISS's HNSW (IndexHNSWFlat, inner product) with the same M and efConstruction, swept over
    the same ef values; recall@k against the project's exact search."""
    from safetensors.numpy import load_file

    faiss, n_threads, base, queries = faiss_setup(case, directory)
    truth = load_file(os.path.join(directory, "truth.safetensors"))["ids"]
    k = case["k"]
    index = faiss.IndexHNSWFlat(base.shape[1], case["connectivity"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = case["ef_construction"]
    start = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - start
    print(f"built HNSW over {base.shape[0]} vectors in {build:.1f} s", file=sys.stderr)
    sweep = []
    for ef in case["efs"]:
        index.hnsw.efSearch = ef
        seconds, found = timed_search(index, queries, k, case["rounds"])
        hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
        recall = hits / truth.size
        median = sorted(seconds)[len(seconds) // 2]
        print(f"ef {ef}: recall@10 {recall:.4f}, {len(queries) / median:.0f} queries/s", file=sys.stderr)
        sweep.append({"ef": ef, "recall": recall, "seconds": median})
    chosen = next((s for s in sweep if s["recall"] >= 0.95), None)
    return {"library": f"faiss {faiss.__version__}", "threads": n_threads, "build_seconds": build, "sweep": sweep,
            "seconds": [chosen["seconds"]] if chosen else []}


def loss(case, directory):
    """RAG-Token's NLL (token mean) forward and backward over the same logits."""
    from safetensors.torch import load_file

    n_threads = threads(case)
    inputs = load_file(os.path.join(directory, "inputs.safetensors"))
    logits, scores, target = inputs["logits"], inputs["scores"], inputs["target"]
    b, k, t, v = logits.shape
    mask = torch.ones(b, t)
    seconds, value = [], None
    for round in range(case["rounds"] + 1):
        start = time.perf_counter()
        l = logits.detach().requires_grad_()
        s = scores.detach().requires_grad_()
        out = rag_token_nll(l.view(b * k, t, v), s, target, mask).sum() / mask.sum()
        value = out.item()
        out.backward()
        if round > 0:
            seconds.append(time.perf_counter() - start)
    return {"library": library(), "threads": n_threads, "seconds": seconds, "loss": value}


def library():
    return f"torch {torch.__version__}, transformers {__import__('transformers').__version__}"


CASES = {"rag-step": rag_step, "lm-step": lm_step, "lm-score": lm_score, "encode": encode, "flat": flat, "hnsw": hnsw, "loss": loss}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in CASES:
        sys.exit(f"usage: compare.py {{{'|'.join(CASES)}}} DIR")
    directory = sys.argv[2]
    with open(os.path.join(directory, "case.json")) as f:
        case = json.load(f)
    result = CASES[sys.argv[1]](case, directory)
    # ru_maxrss is in KiB on Linux.
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
