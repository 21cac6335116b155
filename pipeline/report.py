"""Readable results: markdown tables, JSON and a plot of accuracy against test resolution."""
from __future__ import annotations

import json
from pathlib import Path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.rjust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|",
                      *(line(r) for r in cells)])


def sweep_table(rows: list[dict], title: str) -> str:
    body = [[r["test_res"], f"{r['apparent_size_ratio']:.2f}", f"{r['top1']:.2f}", f"{r['top5']:.2f}",
             f"{r['loss']:.3f}", f"{r['img_per_s']:.0f}"] for r in rows]
    return f"### Test-resolution sweep: {title}\n\n" + markdown_table(
        ["K_test", "apparent size ratio", "top-1 %", "top-5 %", "loss", "img/s"], body)


def fixres_report(root: Path, train_res: int, finetune_res: int, before: list[dict], after: list[dict],
                  train_seconds: float, finetune_seconds: float) -> dict:
    """The FixRes table (K_test x top-1 before and after fine-tuning), saved as markdown,
    JSON and a PNG plot in `root`."""
    after_by_res = {r["test_res"]: r for r in after}
    rows = [[b["test_res"], f"{b['apparent_size_ratio']:.2f}", f"{b['top1']:.2f}",
             f"{after_by_res[b['test_res']]['top1']:.2f}" if b["test_res"] in after_by_res else "-",
             "train" if b["test_res"] == train_res else "fine-tune" if b["test_res"] == finetune_res else ""]
            for b in before]
    best_before = max(before, key=lambda r: r["top1"])
    best_after = max(after, key=lambda r: r["top1"])
    at_train = next((r["top1"] for r in before if r["test_res"] == train_res), None)
    table = "\n".join([
        f"## FixRes: train at {train_res}, fine-tune at {finetune_res}", "",
        markdown_table(["K_test", "apparent size ratio", "top-1 before FT %", "top-1 after FT %", ""], rows), "",
        f"- train time {train_seconds:.0f} s; fine-tune time {finetune_seconds:.0f} s "
        f"({100 * finetune_seconds / max(train_seconds, 1e-9):.0f}% of training)",
        f"- top-1 at K_test = K_train = {train_res}: {at_train:.2f}" if at_train is not None else "",
        f"- best before fine-tuning: {best_before['top1']:.2f} at K_test = {best_before['test_res']}",
        f"- best after fine-tuning: {best_after['top1']:.2f} at K_test = {best_after['test_res']}",
    ])
    report = {"train_res": train_res, "finetune_res": finetune_res, "train_seconds": train_seconds,
              "finetune_seconds": finetune_seconds, "before": before, "after": after, "table": table}
    (root / "report.md").write_text(table + "\n")
    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_path = plot_sweeps(root / "report.png", train_res, finetune_res, before, after)
    report["plot"] = str(plot_path) if plot_path else None
    return report


def save_figure(path: Path, draw) -> Path | None:
    """Save the matplotlib figure that `draw()` returns (it may import pyplot: the headless
    backend is chosen first); without matplotlib, say so and save nothing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[plots]'): no plot written")
        return None
    fig = draw()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweeps(path: Path, train_res: int, finetune_res: int, before: list[dict], after: list[dict]):
    return save_figure(path, lambda: sweeps_figure(train_res, finetune_res, before, after))


def sweeps_figure(train_res: int, finetune_res: int, before: list[dict], after: list[dict]):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["test_res"] for r in before], [r["top1"] for r in before], "o-", label="trained (no fine-tuning)")
    ax.plot([r["test_res"] for r in after], [r["top1"] for r in after], "s-",
            label=f"FixRes fine-tuned at {finetune_res}")
    ax.axvline(train_res, color="grey", ls="--", lw=1, label=f"K_train = {train_res}")
    ax.set_xlabel("test resolution K_test (px)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
