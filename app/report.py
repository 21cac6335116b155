"""Readable results: markdown tables, JSON, a plot of accuracy against test resolution, and
the CDF plot of the pooled activations."""

from __future__ import annotations

import json
from pathlib import Path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.rjust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", *(line(r) for r in cells)]
    )


def sweep_table(rows: list[dict], title: str) -> str:
    body = [
        [
            r["test_res"],
            f"{r['apparent_size_ratio']:.2f}",
            f"{r['top1']:.2f}",
            f"{r['top5']:.2f}",
            f"{r['loss']:.3f}",
            f"{r['img_per_s']:.0f}",
        ]
        for r in rows
    ]
    return f"### Test-resolution sweep: {title}\n\n" + markdown_table(
        ["K_test", "apparent size ratio", "top-1 %", "top-5 %", "loss", "img/s"], body
    )


def fixres_report(
    root: Path,
    train_res: int,
    finetune_res: int,
    before: list[dict],
    after: list[dict],
    train_seconds: float,
    finetune_seconds: float,
    parametric: list[dict] | None = None,
) -> dict:
    """The FixRes table (K_test x top-1 before fine-tuning, with the parametric adaptation if
    swept, and after fine-tuning), saved as markdown, JSON and a PNG plot in `root`."""
    columns = {
        "top-1 before FT %": before,
        **({"top-1 parametric %": parametric} if parametric else {}),
        "top-1 after FT %": after,
    }
    by_res = {name: {r["test_res"]: r["top1"] for r in sweep} for name, sweep in columns.items()}
    rows = [
        [
            b["test_res"],
            f"{b['apparent_size_ratio']:.2f}",
            *(f"{top1[b['test_res']]:.2f}" if b["test_res"] in top1 else "-" for top1 in by_res.values()),
            "train" if b["test_res"] == train_res else "fine-tune" if b["test_res"] == finetune_res else "",
        ]
        for b in before
    ]
    at_train = next((r["top1"] for r in before if r["test_res"] == train_res), None)
    table = "\n".join(
        [
            f"## FixRes: train at {train_res}, fine-tune at {finetune_res}",
            "",
            markdown_table(["K_test", "apparent size ratio", *columns, ""], rows),
            "",
            f"- train time {train_seconds:.0f} s; fine-tune time {finetune_seconds:.0f} s "
            f"({100 * finetune_seconds / max(train_seconds, 1e-9):.0f}% of training)",
            f"- top-1 at K_test = K_train = {train_res}: {at_train:.2f}" if at_train is not None else "",
            *(
                best_line(label, sweep)
                for label, sweep in (
                    ("before fine-tuning", before),
                    ("with the parametric adaptation", parametric),
                    ("after fine-tuning", after),
                )
                if sweep
            ),
        ]
    )
    report = {
        "train_res": train_res,
        "finetune_res": finetune_res,
        "train_seconds": train_seconds,
        "finetune_seconds": finetune_seconds,
        "before": before,
        "parametric": parametric,
        "after": after,
        "table": table,
    }
    (root / "report.md").write_text(table + "\n")
    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_path = plot_sweeps(root / "report.png", train_res, finetune_res, before, after, parametric)
    report["plot"] = str(plot_path) if plot_path else None
    return report


def best_line(label: str, sweep: list[dict]) -> str:
    best = max(sweep, key=lambda r: r["top1"])
    return f"- best {label}: {best['top1']:.2f} at K_test = {best['test_res']}"


def activations_table(rows: list[dict]) -> str:
    """One line per checkpoint and test side: sparsity, large values, mean and spread."""
    body = [
        [
            r["checkpoint"],
            r["train_res"],
            r["test_res"],
            f"{100 * r['zero_share']:.1f}",
            f"{100 * r['above_2_share']:.1f}",
            f"{r['mean']:.3f}",
            f"{r['std']:.3f}",
            f"{cdf_quantile(r['cdf'], 0.99):.3f}",
        ]
        for r in rows
    ]
    return "### Activations after global pooling (validation set)\n\n" + markdown_table(
        ["checkpoint", "K_train", "K_test", "zeros %", "> 2 %", "mean", "std", "99th percentile"], body
    )


def cdf_quantile(cdf: dict, level: float) -> float:
    """The stored CDF's value at the first level >= `level`."""
    return next(x for p, x in zip(cdf["p"], cdf["x"]) if p >= level - 1e-9)


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


def plot_sweeps(
    path: Path,
    train_res: int,
    finetune_res: int,
    before: list[dict],
    after: list[dict],
    parametric: list[dict] | None = None,
):
    return save_figure(path, lambda: sweeps_figure(train_res, finetune_res, before, after, parametric))


def sweeps_figure(
    train_res: int, finetune_res: int, before: list[dict], after: list[dict], parametric: list[dict] | None
):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["test_res"] for r in before], [r["top1"] for r in before], "o-", label="trained (no fine-tuning)")
    if parametric:
        ax.plot(
            [r["test_res"] for r in parametric],
            [r["top1"] for r in parametric],
            "^-",
            label="trained + parametric adaptation",
        )
    ax.plot(
        [r["test_res"] for r in after], [r["top1"] for r in after], "s-", label=f"FixRes fine-tuned at {finetune_res}"
    )
    ax.axvline(train_res, color="grey", ls="--", lw=1, label=f"K_train = {train_res}")
    ax.set_xlabel("test resolution K_test (px)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_activation_cdfs(path: Path, rows: list[dict]):
    return save_figure(path, lambda: activation_cdf_figure(rows))


def activation_cdf_figure(rows: list[dict]):
    """CDF of the pooled activations, one curve per test side (colour), one line style per
    checkpoint (paper figures 3-4)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sides = sorted({r["test_res"] for r in rows})
    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in rows))
    colours = plt.get_cmap("viridis")
    for r in rows:
        colour = colours(sides.index(r["test_res"]) / max(len(sides) - 1, 1))
        style = ["-", "--", ":", "-."][checkpoints.index(r["checkpoint"]) % 4]
        label = f"K_test {r['test_res']}" + (f" ({r['checkpoint']})" if len(checkpoints) > 1 else "")
        ax.plot(r["cdf"]["x"], r["cdf"]["p"], style, color=colour, label=label)
    ax.set_xlim(0, max(cdf_quantile(r["cdf"], 0.995) for r in rows))  # the top 0.5% would squash the rest
    ax.set_xlabel("activation after global pooling (up to the largest 99.5th percentile)")
    ax.set_ylabel("cumulative share")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig
