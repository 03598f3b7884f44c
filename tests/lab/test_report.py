"""report.html and the per-variant table, built from a synthetic results.json (no training).

The report is parsed (tables, rows, embedded images decoded as PNG) and opened in headless
Chromium, which must load every image with no console error and no request beyond the file
itself and its data: URIs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from bnlab.lab import published, report, stats, table

SEEDS = (0, 1, 2, 3)
EPOCHS = 8
LAYERS = [
    {"type": "Dense", "units": 50, "activation": "relu", "kernel_initializer": "he_uniform"},
    {"type": "Dense", "units": 1, "activation": "sigmoid"},
]
BN = {"type": "BatchNormalization"}
TRAIN = {
    "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9},
    "loss": "binary_crossentropy",
    "epochs": EPOCHS,
    "batch_size": 32,
    "eval_every_steps": None,
    "shuffle": True,
    "probes": [],
}
# Final test accuracies per seed; bn_after reaches 0.80 after epoch 2, baseline after epoch 5.
TEST_ACC = {"baseline": [0.82, 0.84, 0.83, 0.85], "bn_after": [0.85, 0.86, 0.86, 0.87]}
REACH = {"baseline": 5, "bn_after": 2}
EVIL = "<script>alert('x')</script> & co"


def history(variant: str, seed: int, *, bn: bool) -> dict:
    reach = REACH.get(variant, 99)
    va = [0.85 if k >= reach else 0.6 + 0.02 * k for k in range(1, EPOCHS + 1)]
    test_acc = TEST_ACC.get(variant, [0.7] * len(SEEDS))[seed]
    return {
        "epochs": {
            "loss": [0.7 / k for k in range(1, EPOCHS + 1)],
            "accuracy": [v - 0.01 * (seed + 1) for v in va],
            "val_loss": [0.75 / k + 0.01 * seed for k in range(1, EPOCHS + 1)],
            "val_accuracy": va,
            "val_accuracy_train_mode": [v + 0.02 for v in va] if bn else None,
        },
        "evals": [],
        "probes": {},
        "final": {
            "train_loss": 0.3,
            "train_accuracy": test_acc - 0.01,
            "test_loss": 0.35,
            "test_accuracy": test_acc,
        },
        "diverged": False,
        "steps_per_epoch": 16,
        "initial_loss": 0.8,  # the last epoch's loss 0.7 / 8 is far below 2 x 0.8
        "chance_accuracy": 0.5,
    }


def variant_record(name: str, layers: list, description: str, grid: dict | None = None) -> dict:
    return {
        "name": name,
        "base": name,
        "description": description,
        "grid": grid or {},
        "data": {"name": "circles", "n_samples": 1000, "noise": 0.1},
        "input_shape": None,
        "layers": layers,
        "train": TRAIN,
        "config_hash": "0123456789abcdef",
    }


def make_results() -> dict:
    runs = []
    for seed in SEEDS:
        for name in ("baseline", "bn_after"):
            runs.append(
                {
                    "experiment": "synthetic",
                    "variant": name,
                    "seed": seed,
                    "status": "completed",
                    "history": history(name, seed, bn=name == "bn_after"),
                    "seconds": 2.0,
                    "error": None,
                    "grid": {},
                }
            )
        shaky = history("shaky", seed, bn=False)
        status, error = "completed", None
        if seed == 1:  # NaN loss: diverged, and no test accuracy: did not learn
            shaky["final"] = dict.fromkeys(shaky["final"])
            shaky["diverged"] = True
        if seed == 2:  # the loss blew up to 1.7 > 2 x 0.8 but stayed finite; accuracy 0.7
            shaky["epochs"]["loss"][-1] = 1.7
        if seed == 0:  # accuracy at chance, no blow-up
            shaky["final"]["test_accuracy"] = 0.5
        if seed == 3:
            shaky, status, error = (
                None,
                "failed",
                "Traceback (most recent call last):\nValueError: <bad> input",
            )
        runs.append(
            {
                "experiment": "synthetic",
                "variant": "shaky",
                "seed": seed,
                "status": status,
                "history": shaky,
                "seconds": 1.0,
                "error": error,
                "grid": {},
            }
        )
    return {
        "schema_version": 1,
        "experiment": {
            "name": "synthetic",
            "description": f"A made-up study {EVIL}",
            "source": "synthetic.toml",
            "seeds": list(SEEDS),
            "grid": {},
            "report": {
                "threshold_metric": "val_accuracy",
                "threshold": 0.8,
                "reference": "baseline",
                "comparisons": [],
            },
            "variants": [
                variant_record("baseline", LAYERS, "the plain MLP"),
                variant_record("bn_after", [LAYERS[0], BN, LAYERS[1]], "BN after the relu Dense"),
                variant_record("shaky", LAYERS, EVIL),
            ],
        },
        "variants": ["baseline", "bn_after", "shaky"],
        "seeds": list(SEEDS),
        "runs": runs,
        "versions": {"bnlab": "0.1.0", "torch": "2.13.0", "numpy": "2.4.6", "python": "3.11.7"},
        "created": "2026-01-02T03:04:05+00:00",
    }


def write(tmp_path: Path, results: dict) -> Path:
    (tmp_path / "results.json").write_text(json.dumps(results), "utf-8")
    return tmp_path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A run folder with results.json and the report written from it (built once per module)."""
    out = write(tmp_path_factory.mktemp("out"), make_results())
    report.write_report(out)
    return out


class Page(HTMLParser):
    """Tables (rows of cell texts), img sources, and tag counts of an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.tags: dict[str, int] = {}
        self.items: list[str] = []
        self._cell: list[str] | None = None
        self._li: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "li":
            self._li = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "li" and self._li is not None:
            self.items.append("".join(self._li).strip())
            self._li = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._li is not None:
            self._li.append(data)


# ----------------------------------------------------------------- table


# ----------------------------------------------------------------- html


def test_write_report_builds_an_offline_page_with_tables_statements_and_embedded_pngs(built):
    out = built
    text = (out / "report.html").read_text("utf-8")
    page = Page(text)

    # The per-variant table: the same strings as the text table, one row per variant.
    summaries = stats.summarize(make_results())
    model = table.summary_table(summaries)
    summary = page.tables[0]
    assert summary[0] == [c.long for c in model.columns]
    assert summary[1:] == [list(r) for r in model.rows]

    # Comparisons: 4 seeds are below the minimum, so nothing is stated, in one line.
    lines = stats.comparison_lines(stats.report_comparisons(make_results(), summaries))
    assert lines == [
        "4 comparisons not made: they need at least 5 seeds per variant, these have 2/3/4 "
        "(differences and intervals are in summary.json)"
    ]
    assert lines[0] in page.items

    # Images: embedded data URIs that decode to the same PNGs written beside the report.
    assert len(page.images) == 2  # accuracy and loss
    prefix = "data:image/png;base64,"
    assert page.images[0].startswith(prefix)
    png = base64.b64decode(page.images[0][len(prefix) :], validate=True)
    assert png == (out / "curves.png").read_bytes()
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05

    # Offline and safe: no scripts, no external resources, all text escaped.
    assert "<script" not in text.lower().replace("&lt;script", "")
    assert page.tags.get("script", 0) == 0 and page.tags.get("link", 0) == 0
    assert "http://" not in text and "https://" not in text and "@import" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in text
    assert "ValueError: &lt;bad&gt; input" in text

    # Settings, problems, versions, times.
    assert "Dense(units=50, activation=relu, kernel_initializer=he_uniform)" in text
    assert "BatchNormalization()" in text
    assert "sgd(learning_rate=0.01, momentum=0.9)" in text
    assert "3 variants × 4 seeds = 12 runs · results created 2026-01-02T03:04:05+00:00" in text
    assert "shaky: seed 0 did not learn (test accuracy 0.500 ≤ chance 0.500)" in page.items
    assert (
        "shaky: seed 1 diverged (NaN/inf loss); did not learn (no test accuracy (non-finite outputs))"
        in page.items
    )
    assert "shaky: seed 2 diverged (loss 1.7 > 2 × initial 0.8)" in page.items
    assert "bnlab 0.1.0, torch 2.13.0, numpy 2.4.6, python 3.11.7" in text
    assert "2026-01-02T03:04:05+00:00" in text
    per_seed = page.tables[-1]
    assert per_seed[0][:2] == ["variant", "seed"] and len(per_seed) == 1 + 3 * len(SEEDS)
    assert ["shaky", "3", "—", "—", "n/a", "n/a", "failed"] in per_seed
    assert [row[-1] for row in per_seed if row[0] == "shaky"] == [
        "did not learn",
        "diverged, did not learn",
        "diverged",
        "failed",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.png",
        "loss.png",
        "report.html",
        "results.json",
    ]


def test_report_of_a_grid_with_probes_embeds_the_heat_map_and_probe_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "MIN_SEEDS_FOR_CI", 4)  # state the comparisons of 4 seeds
    r = make_results()
    r["runs"] = [x for x in r["runs"] if x["variant"] != "shaky"]
    r["variants"] = ["baseline", "bn_after"]
    gridded = []
    for lr, act in ((0.01, "relu"), (0.1, "relu")):  # two axes, the second with one value
        for x in r["runs"]:
            y = json.loads(json.dumps(x))
            y["grid"] = {"learning_rate": lr, "activation": act}
            y["history"]["probes"] = {
                "dense.output": {
                    "percentiles": [15, 50, 85],
                    "steps": [0, 8],
                    "values": [[-1, 0, 1], [-2, 0, 2]],
                }
            }
            gridded.append(y)
    r["runs"] = gridded
    r["experiment"]["grid"] = {"learning_rate": [0.01, 0.1], "activation": ["relu"]}
    r["experiment"]["variants"] = [
        {**variant_record(v, LAYERS, v, grid), "name": f"{v}[learning_rate={lr}, activation=relu]"}
        for v in ("baseline", "bn_after")
        for lr in (0.01, 0.1)
        for grid in [{"learning_rate": lr, "activation": "relu"}]
    ]
    text = report.write_report(write(tmp_path, r)).read_text("utf-8")
    assert "2 variants × 2 grid points × 4 seeds = 16 runs ·" in text
    page = Page(text)
    assert len(page.images) == 4
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "curves.png",
        "loss.png",
        "grid.png",
        "probes.png",
    }
    pivot, summary = page.tables[:2]
    assert pivot[0][:2] == ["variant", "activation"]  # learning rates across
    assert [row[:2] for row in pivot[1:]] == [["baseline", "relu"], ["bn_after", "relu"]]
    assert summary[0][:3] == ["variant", "learning rate", "activation"]
    assert summary[1][:3] == ["baseline", "0.01", "relu"] and len(summary) == 5
    statements = [i for i in page.items if "sooner than baseline" in i]
    assert len(statements) == 2  # one per grid point, which each names once
    assert all(
        i.startswith("at learning_rate=") and i.count("learning_rate=") == 1 for i in statements
    )


def test_report_places_the_published_single_runs_among_our_seeds(built, tmp_path):
    r = make_results()
    r["experiment"]["report"]["published"] = {
        "baseline": {
            "train_accuracy": 0.838,
            "test_accuracy": 0.846,
            "epochs_to_threshold": 4,
            "source": "Keras tutorial single run",
        },
        "bn_after": {
            "train_accuracy": 0.846,
            "test_accuracy": 0.848,
            "epochs_to_threshold": None,
            "source": "Keras tutorial single run",
        },
    }
    text = report.write_report(write(tmp_path, r)).read_text("utf-8")
    page = Page(text)
    assert "<h2>Published single run vs our seeds</h2>" in text
    table = page.tables[1]  # right after the per-variant table
    rows = report.published_rows(published.compare_published(r))
    assert table[0] == report.PUBLISHED_HEADERS and table[1:] == rows
    by_row = {(row[0], row[1]): row for row in table[1:]}
    assert list(by_row) == [
        ("baseline", "train accuracy"),
        ("baseline", "test accuracy"),
        ("baseline", "epochs to 80% test accuracy"),
        ("bn_after", "train accuracy"),
        ("bn_after", "test accuracy"),
    ]
    # baseline test accuracies 0.82, 0.84, 0.83, 0.85: 0.846 is above three of them
    acc = TEST_ACC["baseline"]
    assert by_row[("baseline", "test accuracy")][2:7] == [
        "0.846",
        f"{np.mean(acc):.3f}",  # 4 seeds: no CI
        "0.820–0.850",
        "above 3 of 4 seeds",
        "75",
    ]
    # every baseline seed first reaches 80% after epoch 5: the published 4 is below them all
    assert by_row[("baseline", "epochs to 80% test accuracy")][2:8] == [
        "4",
        "5",
        "5",
        "below all 4 seeds",
        "0",
        "below every seed",
    ]
    # bn_after train accuracies 0.84, 0.85, 0.85, 0.86
    assert by_row[("bn_after", "train accuracy")][5:7] == ["above 1 of 4 seeds", "25"]
    sentences = [c.sentence() for c in published.compare_published(r)]
    assert [i for i in page.items if i in sentences] == sentences
    assert "Published numbers: Keras tutorial single run (baseline, bn_after)." in text
    assert "report: published" not in text  # not repeated in the settings table
    # results without published numbers have no such section
    assert "Published single run" not in (built / "report.html").read_text("utf-8")


def test_report_of_results_without_completed_runs(tmp_path):
    r = make_results()
    r["runs"] = [x for x in r["runs"] if x["status"] == "failed"]  # shaky seed 3 only
    text = report.write_report(write(tmp_path, r)).read_text("utf-8")
    assert "3 variants × 4 seeds = 12 runs (1 recorded) ·" in text
    page = Page(text)
    assert page.tables[0][1][:2] == ["shaky", "0 (1)"]
    assert "shaky: seed 3 failed — ValueError: <bad> input" in page.items
    r["runs"] = []
    text = report.write_report(write(tmp_path, r)).read_text("utf-8")
    assert "Nothing to compare" in text and len(Page(text).images) == 2


def test_missing_or_broken_results_give_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"results\.json: no results file; run `bnlab run"):
        report.write_report(tmp_path)
    (tmp_path / "results.json").write_text("{not json", "utf-8")
    with pytest.raises(ValueError, match=r"not valid JSON"):
        report.write_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({**make_results(), "schema_version": 9}))
    with pytest.raises(ValueError, match=r"schema_version .* got 9"):
        report.write_report(tmp_path)


# ----------------------------------------------------------------- headless Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt install chromium)"
)


def chromium_args(profile: Path) -> list[str]:
    return [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]


# Chromium's --remote-debugging-pipe reads commands on fd 3 and writes replies on fd 4: move the
# pipe ends there (via fds >= 10 so that neither clobbers the other), then become chromium.
_PIPE_TRAMPOLINE = (
    "import fcntl, os, sys\n"
    "r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])\n"
    "os.dup2(r, 3)\n"
    "os.dup2(w, 4)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def open_in_chromium(
    url: str, profile: Path, timeout: float = 40.0
) -> tuple[dict, list[dict], bytes]:
    """Load `url` over the DevTools protocol (--remote-debugging-pipe, fds 3 and 4).

    Returns the page state after the load event (images: [complete, naturalWidth,
    naturalHeight]; tables; scripts), every protocol event received, and a PNG screenshot.
    """
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    args = [*chromium_args(profile), "--remote-debugging-pipe", "about:blank"]
    log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-c", _PIPE_TRAMPOLINE, str(to_r), str(from_w), *args],
        pass_fds=(to_r, from_w),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    os.close(to_r)
    os.close(from_w)
    deadline = time.monotonic() + timeout
    buffer = b""
    events: list[dict] = []
    counter = 0

    def receive() -> dict:
        nonlocal buffer
        while b"\0" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([from_r], [], [], left)[0]:
                raise TimeoutError(f"chromium gave no answer within {timeout} s")
            chunk = os.read(from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            buffer += chunk
        message, buffer = buffer.split(b"\0", 1)
        return json.loads(message)

    def call(method: str, params: dict | None = None, session: str | None = None) -> dict:
        nonlocal counter
        counter += 1
        message = {"id": counter, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(to_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = receive()
            if reply.get("id") == counter:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            events.append(reply)

    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            call(f"{domain}.enable", session=session)
        call("Page.navigate", {"url": url}, session=session)
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            events.append(receive())
        expression = (
            "JSON.stringify({images: Array.from(document.images).map("
            "i => [i.complete, i.naturalWidth, i.naturalHeight]),"
            " tables: document.querySelectorAll('table').length,"
            " scripts: document.scripts.length})"
        )
        state = call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        shot = call("Page.captureScreenshot", {"format": "png"}, session)
        return json.loads(state["result"]["value"]), events, base64.b64decode(shot["data"])
    except (TimeoutError, RuntimeError) as e:
        log.flush()
        tail = (profile.parent / "chromium.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{e}; chromium's stderr ends with:\n{tail}") from None
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()
        os.close(to_w)
        os.close(from_r)


def page_problems(events: list[dict]) -> list[str]:
    """Console errors, exceptions, failed loads and any request that is not file: or data:."""
    problems = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            problems.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            problems.append(f"load failed: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:")):
                problems.append(f"request: {url}")
    return problems


@needs_chromium
def test_chromium_renders_the_report_with_its_images_and_no_console_errors(built, tmp_path):
    path = built / "report.html"
    state, events, shot = open_in_chromium(path.as_uri(), tmp_path / "profile")
    assert page_problems(events) == []
    assert state["scripts"] == 0 and state["tables"] >= 3
    assert state["images"] and all(ok and w > 300 and h > 200 for ok, w, h in state["images"])
    pixels = imread(io.BytesIO(shot), format="png")[..., :3]
    assert pixels.std() > 0.05  # not a blank page


@needs_chromium
def test_the_chromium_check_catches_a_broken_page(tmp_path):
    """Guards the check above: a broken image, an external request and a console error."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
        '<img src="http://bnlab.invalid/x.png"><script>console.error("boom")</script></body></html>'
    )
    state, events, _ = open_in_chromium(bad.as_uri(), tmp_path / "profile")
    assert [w for _, w, _ in state["images"]] == [0, 0]
    problems = page_problems(events)
    assert "request: http://bnlab.invalid/x.png" in problems
    assert any(p.startswith("console.error") for p in problems)


@needs_chromium
def test_chromium_dump_dom_shows_the_tables_and_images(built, tmp_path):
    path = built / "report.html"
    dom = subprocess.run(
        [*chromium_args(tmp_path / "profile"), "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    page = Page(dom)
    assert page.tables[0][0][0] == "variant"
    assert [row[0] for row in page.tables[0][1:]] == ["baseline", "bn_after", "shaky"]
    assert len(page.images) == 2 and page.images[0].startswith("data:image/png;base64,")


def test_long_layer_lists_are_folded():
    from bnlab.lab.report import UNFOLDED_LAYERS, _layers_list

    short = _layers_list([f"Dense(units={i})" for i in range(UNFOLDED_LAYERS)])
    long = _layers_list([f"Dense(units={i})" for i in range(UNFOLDED_LAYERS + 1)])
    assert "<details>" not in short and short.count("<li>") == UNFOLDED_LAYERS
    assert long.startswith(f"<details><summary>{UNFOLDED_LAYERS + 1} layers</summary><ol")
