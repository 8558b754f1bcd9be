"""Accuracy at equal measured latency: criteria x searches on a real task with real data.

scikit-learn's handwritten digits (1797 8x8 images, shipped with the package), upsampled to
32x32, train a small ResNet here to >= 97% test accuracy, export it to ONNX, then prune it to
60% and 40% of its measured ort-cpu latency with every criterion x search, plus the
Torch-Pruning-style baseline (uniform L1). Per row: measured latency, test accuracy without
fine-tuning and after the same short fine-tune for all, and output fidelity against the
unpruned network (top-1 agreement, mean KL).

    python benchmarks/quality.py                      # full grid
    python benchmarks/quality.py --budgets 60 --criteria l1,ig --searches opti-cut
    python benchmarks/quality.py --seeds 1,2 --criteria l1,ig --merge old/quality.json   # more seeds, one table
    python benchmarks/quality.py --seeds 0,1,2 --criteria ig,ig-mean --stem quality_ig_mean   # a side table
    python benchmarks/quality.py --criteria ig-mean --rescore off --dense-cache /tmp/dense   # an ablation
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock
from provenance import code_commit

SIDE = 32
RESCORE = {"default": None, "on": True, "off": False}
DATA_DRIVEN = ("taylor", "ig", "ig-mean")


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of sklearn's digits, upsampled to SIDE x SIDE, normalised."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).numpy()
    return train_test_split(x, d.target.astype(np.int64), test_size=0.3, random_state=seed, stratify=d.target)


class DigitsResNet(nn.Module):
    """A small ResNet (3 stages of BasicBlocks) sized so that latency is measurable (~ms)."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None if stride == 1 and cin == w else nn.Sequential(
                nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            blocks += [BasicBlock(cin, w, stride, down), BasicBlock(w, w)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> None:
    """SGD with momentum and a cosine schedule; small random shifts as augmentation."""
    torch.manual_seed(seed)
    xt, yt = torch.tensor(x), torch.tensor(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(xt) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            xb = torch.roll(xt[idx], shifts=tuple(np.random.randint(-2, 3, 2)), dims=(2, 3))
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def logits_of(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return torch.cat([model(torch.tensor(x[i:i + 256])) for i in range(0, len(x), 256)]).numpy()


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: np.ndarray) -> None:
    """Recompute every BatchNorm's running statistics on ``x`` (the calibration samples): the
    cheapest repair after pruning, no labels and no gradient step."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for i in range(0, len(x), 64):
        model(torch.tensor(x[i:i + 64]))
    for m, momentum in zip(norms, momenta):  # a later fine-tune tracks its statistics as usual
        m.momentum = momentum
    model.eval()


def fidelity(ref: np.ndarray, got: np.ndarray) -> dict:
    """Top-1 agreement and mean KL(ref || got) of the softmax outputs."""
    p = torch.log_softmax(torch.tensor(ref), 1)
    q = torch.log_softmax(torch.tensor(got), 1)
    kl = (p.exp() * (p - q)).sum(1).mean().item()
    return {"top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()), "kl": kl}


def export_keeping_bn(model: nn.Module, path: Path) -> None:
    """ONNX with BatchNormalization nodes kept (no constant folding): onnxruntime still fuses
    them for timing, and the fine-tune (onnx2torch) gets real BatchNorm layers back; a deep
    ResNet with BN folded away does not recover in a few epochs of SGD."""
    torch.onnx.export(model.eval(), (torch.randn(1, 1, SIDE, SIDE),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], do_constant_folding=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="60,40")
    ap.add_argument("--criteria", default="l1,taylor,ig,similarity")
    ap.add_argument("--searches", default="opti-cut,hilp", help="comma-separated; empty: the uniform rows only")
    ap.add_argument("--uniform-align", default="8",
                    help="comma-separated widths uniform L1 rounds to, a row each (1: Torch-Pruning's default, no "
                         "rounding; 8: the CLI's --align, whose coarse steps can land far under the budget)")
    ap.add_argument("--align", default="8",
                    help="channel alignment of the opti-cut and hilp rows: a multiple, or auto (each group's "
                         "own step from the measured staircase); 8 is the CLI's default")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of the dense network")
    ap.add_argument("--finetune-epochs", type=int, default=3, help="the same short fine-tune for every row")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples, drawn from the training split")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--seeds", default="0",
                    help="comma-separated; each seed is its own split, dense network and grid (rows are summarised "
                         "over seeds: one run's searches time noisy networks and can land far apart)")
    ap.add_argument("--merge", metavar="JSON", action="append", default=[],
                    help="rows of an earlier run (same protocol) to keep in the table; rows without a seed are seed 0")
    ap.add_argument("--rescore", choices=("default", "on", "off"), default="default",
                    help="re-score data-driven criteria as the search cuts (default: each criterion's own)")
    ap.add_argument("--dense-cache", metavar="DIR",
                    help="keep each seed's trained dense network here and reuse it (training is ~5 min a seed)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--stem", default="quality", help="file names of the results: STEM.json and STEM.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for path in args.merge:
        earlier = json.loads(Path(path).read_text())
        dense = earlier["meta"].get("dense_accuracy")
        rows += [{"seed": 0, "dense_accuracy": dense, "commit": earlier["meta"].get("commit", "unknown"), **r}
                 for r in earlier["rows"]]
    for seed in (int(x) for x in args.seeds.split(",")):
        rows += run_seed(seed, args)
        write_results(Path(args.out), rows, args)


def _dense_path(seed: int, args: argparse.Namespace) -> Path | None:
    """Where ``--dense-cache`` keeps the trained dense network of one seed: keyed by the epochs and
    the source of the data split, the network and the training loop, so a change to any of them
    trains again."""
    import hashlib
    import inspect

    if not args.dense_cache:
        return None
    code = "".join(inspect.getsource(f) for f in (digits, DigitsResNet, train)).encode()
    return Path(args.dense_cache) / f"dense_s{seed}_e{args.epochs}_{hashlib.sha256(code).hexdigest()[:12]}.pt"


def load_dense(model: nn.Module, seed: int, args: argparse.Namespace) -> bool:
    """The cached weights and numpy's random state after training (the fine-tunes draw their
    shifts from it), so a cached run prunes and fine-tunes exactly as a training run does."""
    path = _dense_path(seed, args)
    if path is None or not path.exists():
        return False
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["state"])
    model.eval()
    np.random.set_state(saved["np_random"])
    return True


def save_dense(model: nn.Module, seed: int, args: argparse.Namespace) -> None:
    path = _dense_path(seed, args)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": model.state_dict(), "np_random": np.random.get_state()}, path)


def run_seed(seed: int, args: argparse.Namespace) -> list[dict]:
    """One split, one dense network, the whole grid pruned from it."""
    from onnx2torch import convert

    from hwprune_fx.calib import CalibrationData
    from hwprune_fx.criteria import needs_data
    from hwprune_fx.prune_budget import UnreachableBudget, prune_to_budget

    xtr, xte, ytr, yte = digits(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    dense = DigitsResNet()
    t0 = time.perf_counter()
    if not load_dense(dense, seed, args):
        train(dense, xtr, ytr, args.epochs, 0.1, seed)
        save_dense(dense, seed, args)
    ref = logits_of(dense, xte)
    dense_acc = float((ref.argmax(1) == yte).mean())
    print(f"seed {seed}: dense test accuracy {dense_acc:.4f} after {args.epochs} epochs "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    calib = CalibrationData({"input": xtr[:args.calib]}, "digits-train")
    rows, commit = [], code_commit()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "digits_resnet.onnx"
        export_keeping_bn(dense, src)
        cache = Path(tmp) / "cache"
        budgets = args.budgets.split(",")
        search_align = args.align if args.align == "auto" else int(args.align)
        runs = [(b, c, s, search_align) for b in budgets for c in _names(args.criteria) for s in _names(args.searches)]
        runs += [(b, "l1", "uniform", int(a)) for b in budgets for a in _names(args.uniform_align)]
        for budget, criterion, search, align in runs:
            row: dict = {"seed": seed, "budget": f"{budget}%", "criterion": criterion, "search": search,
                         "align": align, "dense_accuracy": dense_acc, "commit": commit}
            t0 = time.perf_counter()
            try:
                res = prune_to_budget(src, f"{budget}%", search=search, criterion=criterion, repeat=args.repeat,
                                      align=align,
                                      cache_dir=cache, calib=calib if needs_data(criterion) else None,
                                      rescore=RESCORE[args.rescore] if criterion in DATA_DRIVEN else None)
            except UnreachableBudget as exc:
                row["error"] = str(exc)
                rows.append(row)
                print(json.dumps(row), flush=True)
                continue
            rep = res["report"]
            pruned = convert(res["model"])
            got = logits_of(pruned, xte)
            row.update({"baseline_ms": rep["baseline_fresh"]["median_ms"], "final_ms": rep["final"]["median_ms"],
                        "budget_ms": rep["budget_ms"], "reached": rep["reached"],
                        "macs_ratio": rep["macs_after"] / rep["macs_before"],
                        "accuracy": float((got.argmax(1) == yte).mean()), **fidelity(ref, got),
                        "merged_channels": rep.get("merged_channels", 0), "rescore": rep.get("rescore", False),
                        "search_seconds": round(time.perf_counter() - t0, 1)})
            reestimate_bn(pruned, calib.samples["input"])
            row["accuracy_bn"] = float((logits_of(pruned, xte).argmax(1) == yte).mean())
            train(pruned, xtr, ytr, args.finetune_epochs, 0.02, seed)
            row["accuracy_finetuned"] = float((logits_of(pruned, xte).argmax(1) == yte).mean())
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def write_results(out: Path, rows: list[dict], args: argparse.Namespace) -> None:
    """JSON (every row) and Markdown: the mean over seeds per budget x criterion x search, then every row."""
    out.mkdir(parents=True, exist_ok=True)
    dense = {r["seed"]: r.get("dense_accuracy") for r in rows}
    meta = {"task": "sklearn digits upsampled to 32x32, 30% held out", "dense_accuracy_by_seed": dense,
            "epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "calib_samples": args.calib,
            "target": "ort-cpu, 1 thread", "commits": sorted({r.get("commit", "unknown") for r in rows})}
    (out / f"{args.stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    known = ", ".join(f"{100 * a:.2f}% (seed {s})" for s, a in sorted(dense.items()) if a is not None)
    md = [f"# Quality at equal measured latency (digits; dense test accuracy {known or 'see rows'})", "",
          f"Fine-tune: {args.finetune_epochs} epochs for every row. Latency: ort-cpu, 1 thread, medians. "
          f"Code: {', '.join(meta['commits'])}.", "",
          "`final / baseline` is the pruned and the original network timed side by side in interleaved rounds "
          "after the search (the budget is a share of that baseline).", "",
          "acc (BN) = after re-estimating BatchNorm statistics on the calibration samples only (no "
          "labels, no gradient); acc (FT) = then the same short fine-tune for every row. merged = channels "
          "`similarity` folded into a kept twin instead of removing them. (re-scored) = the criterion scored "
          "again at the network cut so far each 10% of the baseline the search went down (`--rescore`).", ""]
    md += summary_table(rows)
    md += ["", "## Every row", "",
           "| seed | budget | criterion | search | final / baseline | MACs after/before | acc (no FT) | acc (BN) "
           "| acc (FT) | top-1 agree | KL | merged |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['seed']} | {r['budget']} | {_criterion(r)} | {r['search']} "
        if "error" in r:
            md.append(head + "| unreachable | | | | | | | |")
            continue
        md.append(head + f"| {100 * r['final_ms'] / r['baseline_ms']:.0f}% "
                  f"| {r['macs_ratio']:.3f} | {100 * r['accuracy']:.2f}% | {_pct(r.get('accuracy_bn'))} "
                  f"| {100 * r['accuracy_finetuned']:.2f}% "
                  f"| {100 * r['top1_agreement']:.1f}% | {r['kl']:.3f} | {r.get('merged_channels', 0)} |")
    (out / f"{args.stem}.md").write_text("\n".join(md) + "\n")


def summary_table(rows: list[dict]) -> list[str]:
    """Mean (and range) over seeds of each budget x criterion x search that ran in every seed."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if "error" not in r:
            groups.setdefault((r["budget"], _criterion(r), r["search"]), []).append(r)
    seeds = len({r["seed"] for r in rows})
    md = [f"## Mean over seeds ({seeds} seed{'s' if seeds > 1 else ''}; n = rows averaged)", "",
          "| budget | criterion | search | n | final / baseline | MACs after/before | acc (BN): mean (min-max) "
          "| acc (FT) | KL |", "|---|---|---|---|---|---|---|---|---|"]
    order = sorted(groups, key=lambda k: (-int(k[0].rstrip("%")), k[2] == "uniform", k[1], k[2]))
    for key in order:
        g = groups[key]
        bn = [r["accuracy_bn"] for r in g]
        md.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(g)} "
                  f"| {100 * np.mean([r['final_ms'] / r['baseline_ms'] for r in g]):.0f}% "
                  f"| {np.mean([r['macs_ratio'] for r in g]):.3f} "
                  f"| {100 * np.mean(bn):.2f}% ({100 * min(bn):.1f}-{100 * max(bn):.1f}) "
                  f"| {100 * np.mean([r['accuracy_finetuned'] for r in g]):.2f}% "
                  f"| {np.mean([r['kl'] for r in g]):.3f} |")
    return md


def _names(arg: str) -> list[str]:
    return [a for a in arg.split(",") if a.strip()]


def _criterion(row: dict) -> str:
    """The criterion, marked where the search re-scored it as it cut (``--rescore``), or aligned to
    other than the default 8 (``--align``, ``--uniform-align``)."""
    name = f"{row['criterion']} (re-scored)" if row.get("rescore") else row["criterion"]
    return name if row.get("align", 8) == 8 else f"{name} (align {row['align']})"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


if __name__ == "__main__":
    main()
