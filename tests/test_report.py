import torch

from app.report import activations_table, fixres_report
from pipeline.activations import activation_stats


def test_activations_table_rows():
    values = torch.arange(1, 201, dtype=torch.float64) / 50  # 0.02 ... 4.0
    values[:20] = 0
    row = {"checkpoint": "run", "train_res": 64, "test_res": 48, **activation_stats(values)}
    cells = [c.strip() for c in activations_table([row]).splitlines()[-1].split("|")[1:-1]]
    # zeros 10%, above 2: 100 of 200, the 99th percentile of 0.42..4.0 (numpy's linear rule)
    assert cells == [
        "run",
        "64",
        "48",
        "10.0",
        "50.0",
        f"{values.mean():.3f}",
        f"{values.std(correction=0):.3f}",
        f"{torch.quantile(values, 0.99).item():.3f}",
    ]


def sweep(top1s):
    return [{"test_res": res, "top1": t, "apparent_size_ratio": res / 80} for res, t in zip((64, 80), top1s)]


def test_fixres_report_has_a_parametric_column_only_when_swept(tmp_path):
    with_it = fixres_report(tmp_path, 64, 80, sweep([70, 72]), sweep([71, 75]), 10, 1, sweep([70, 73]))
    lines = with_it["table"].splitlines()
    assert "top-1 parametric %" in lines[2]
    assert [c.strip() for c in lines[5].split("|")[1:-1]] == ["80", "1.00", "72.00", "73.00", "75.00", "fine-tune"]
    assert "- best with the parametric adaptation: 73.00 at K_test = 80" in lines
    without = fixres_report(tmp_path, 64, 80, sweep([70, 72]), sweep([71, 75]), 10, 1)
    assert "parametric" not in without["table"] and without["parametric"] is None
