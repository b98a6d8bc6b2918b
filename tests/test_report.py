"""vlp-eval report: tables with Wilson intervals (checked against scipy's), published rows, training
curves, clear refusals, and the page loaded in a real headless browser (Chromium: no script errors,
every chart laid out with its marks)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from scipy.stats import binomtest

from eval_zeroshot.cli import main as vlp_eval
from eval_zeroshot.compositional import REFERENCES, SUGARCREPE_FILES


def zeroshot_result(path: Path, model: str, correct: int, n: int) -> Path:
    result = {
        "model": f"local-dir:{model}",
        "results": [
            {
                "dataset": "imagenet1k",
                "split": "",
                "task": "classification",
                "counts": {"images": n, "classes": 1000},
                "metrics": {"acc1": correct / n, "acc5": min(1.0, 2 * correct / n), "mean_per_class_recall": 0.5},
                "correct": {"acc1": correct, "acc5": min(n, 2 * correct)},
                "n": n,
            }
        ],
    }
    path.write_text(json.dumps(result))
    return path


def sugarcrepe_result(path: Path, model: str, correct: int) -> Path:
    subsets = {name: {"accuracy": correct / 300, "correct": correct, "n": 300} for name in SUGARCREPE_FILES}
    result = {"model": f"local-dir:{model}", "benchmark": "sugarcrepe", "subsets": subsets, "chance": 0.5}
    result["reference_key"] = "sugarcrepe"
    path.write_text(json.dumps(result))
    return path


def training_run(folder: Path, steps: int = 40) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for step in range(10, steps + 1, 10):
            f.write(json.dumps({"step": step, "loss": 4.0 / step, "samples_per_s": 100.0}) + "\n")
    with open(folder / "eval.jsonl", "w") as f:
        for step in (20, 40):
            result = {"dataset": "zeroshot:test", "split": "test", "task": "classification"}
            result |= {"counts": {"images": 60, "classes": 6}, "metrics": {"acc1": step * 60 // 80 / 60}}
            result |= {"correct": {"acc1": step * 60 // 80}, "n": 60}  # as the trainer writes them
            f.write(json.dumps({"step": step, "results": [result]}) + "\n")
    return folder


@pytest.fixture
def inputs(tmp_path) -> list[str]:
    return [
        str(zeroshot_result(tmp_path / "a_zs.json", "runs/a/export", 153, 300)),
        str(sugarcrepe_result(tmp_path / "a_sc.json", "runs/a/export", 210)),
        f"b={zeroshot_result(tmp_path / 'b_zs.json', 'runs/b/export', 171, 300)}",
        f"b={sugarcrepe_result(tmp_path / 'b_sc.json', 'runs/b/export', 240)}",
        str(training_run(tmp_path / "run_a")),
    ]


def test_tables_carry_exact_intervals_published_rows_and_curves(inputs, tmp_path):
    out = tmp_path / "report" / "report.html"
    assert vlp_eval(["report", *inputs, "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    # one model's zero-shot and compositional files land in one column, named by the model or NAME=
    ci = binomtest(153, 300).proportion_ci(method="wilson")
    assert f"| imagenet1k | 51.0 [{100 * ci.low:.1f}, {100 * ci.high:.1f}] |" in md
    assert "|  | runs/a/export | b | CLIP ViT-B/32 (published) | NegCLIP (published) | DeGLA (published) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| replace_rel |"))
    published = [REFERENCES["sugarcrepe"][m]["replace_rel"] for m in ("CLIP ViT-B/32", "NegCLIP", "DeGLA")]
    ci = binomtest(240, 300).proportion_ci(method="wilson")
    assert row.split(" | ")[2] == f"80.0 [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
    assert row.rstrip(" |").split(" | ")[-3:] == [str(v) for v in published]
    # the training run: its table row and its final zero-shot number in the zero-shot table
    assert "| run_a |" in md and "| 40 | 0.1000 | 100 |" in md
    ci = binomtest(30, 60).proportion_ci(method="wilson")
    assert f"| zeroshot:test | - | - | 50.0 [{100 * ci.low:.1f}, {100 * ci.high:.1f}] |" in md
    charts = sorted(p.name for p in (out.parent / "report_charts").iterdir())
    assert charts == ["sugarcrepe.svg", "training_loss.svg", "zeroshot.svg", "zeroshot_zeroshot_test.svg"]
    for name in charts:  # the Markdown twin shows every chart, which the HTML page holds inline
        assert f"(report_charts/{name})" in md
    assert out.read_text().count('<svg class="chart"') == len(charts)


def test_what_the_report_refuses(tmp_path, capsys):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}')
    assert vlp_eval(["report", str(bogus), "--out", str(tmp_path / "r.html")]) == 2
    assert f"{bogus}: neither a vlp-eval zeroshot result" in capsys.readouterr().err
    assert vlp_eval(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "r.html")]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert vlp_eval(["report", str(tmp_path / "empty_run"), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a training run" in capsys.readouterr().err
    assert vlp_eval(["report", str(bogus), "--out", str(tmp_path / "r.pdf")]) == 2
    assert "the report is an HTML page" in capsys.readouterr().err
    malformed = tmp_path / "malformed.json"
    for body in ('{"results": [{}]}', '{"results": [1]}', '{"benchmark": "x", "subsets": {"a": {"n": 3}}}'):
        malformed.write_text(body)
        assert vlp_eval(["report", str(malformed), "--out", str(tmp_path / "r.html")]) == 2
        assert f"{malformed}: not a well-formed vlp-eval result" in capsys.readouterr().err
    # two results that would land in one cell are refused, not silently overwritten
    a = zeroshot_result(tmp_path / "a.json", "runs/a/export", 1, 2)
    b = zeroshot_result(tmp_path / "b.json", "runs/a/export", 2, 2)
    assert vlp_eval(["report", str(a), str(b), "--out", str(tmp_path / "r.html")]) == 2
    assert "a second result for 'runs/a/export' on zeroshot imagenet1k" in capsys.readouterr().err
    (tmp_path / "taken.html").mkdir()  # --out names a folder
    assert vlp_eval(["report", str(a), f"other={b}", "--out", str(tmp_path / "taken.html")]) == 2
    assert "cannot write the report there" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is missing: `make test` installs Debian's package (apt-get install chromium)"
    return found


def loaded_body(page: Path, flags: list[str]) -> str:
    """The <body> tag of ``page`` after Chromium loaded it and the page's own check ran."""
    dom = subprocess.run([chromium(), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    start = dom.stdout.index("<body")
    return dom.stdout[start : dom.stdout.index(">", start) + 1]


def test_the_page_loads_in_a_headless_browser_with_every_chart_drawn(inputs, tmp_path):
    out = tmp_path / "report.html"
    assert vlp_eval(["report", *inputs, "--out", str(out)]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    body = loaded_body(out, flags)
    # the page's own check ran after load: 4 charts laid out with marks, no script error
    assert 'data-charts="4"' in body and 'data-drawn="4"' in body and 'data-errors="0"' in body, body
    # the check can fail: a page with a script error and a chart whose marks are gone is told apart
    broken = tmp_path / "broken.html"
    page = out.read_text().replace("</body>", "<script>console.error('boom')</script></body>")
    first = page.index('<svg class="chart"')
    end = page.index("</svg>", first)
    broken.write_text(page[:first] + page[first:end].replace('class="mark"', "") + page[end:])
    body = loaded_body(broken, flags)
    assert 'data-charts="4"' in body and 'data-drawn="3"' in body and 'data-errors="1"' in body, body
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium(), *flags, "--window-size=1000,1400", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000  # a page, not a blank
