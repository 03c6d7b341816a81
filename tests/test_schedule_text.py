"""The text timeline of ``gpuhours schedule`` (``render_text``).

A drawing is read the way a person reads it: every rank line is split into
its timeline, and each task's cell (the columns round(start * cols /
makespan) .. round(end * cols / makespan) - 1) must show either the task's
whole label followed by its fill, or its fill only (a ``[`` may open a cell
too narrow for its label); a task too short for a column must leave a ``*``.
Nothing else may appear, so a cut label or one running into its neighbour
fails. The legend must list exactly what the drawing shows, every line must
fit the width asked for, and the note that the closed form assumes
F = B - W must appear exactly where that assumption matters and fails.
"""

from __future__ import annotations

import argparse
import json
import re

import pytest

from simulator import schedule_cli
from simulator.schedules import SCHEDULE_NAMES, TaskTimes, closed_form, render_text, simulate

# (schedule, pp, microbatches, vpp) covering every schedule
PLANS = [
    ("1f1b", 2, 4, 1), ("1f1b", 4, 8, 1), ("1f1b", 8, 32, 1),
    ("interleaved", 4, 8, 2), ("interleaved", 2, 4, 3), ("interleaved", 8, 16, 4),
    ("zb1p", 4, 8, 1), ("zb1p", 8, 8, 1), ("zb1p", 4, 2, 1),
    ("dualpipe", 8, 20, 1), ("dualpipe", 4, 8, 1), ("dualpipe", 16, 32, 1),
    ("dualpipev", 4, 10, 1), ("dualpipev", 2, 4, 1), ("dualpipev", 8, 16, 1),
]
TIMES = [
    TaskTimes(1, 2, 1),  # the defaults, F = B - W
    TaskTimes(2, 2, 1, 4),  # the issue's times, F != B - W
    TaskTimes(1.3, 2.7, 0.9, 3.1),  # nothing falls on a column boundary
    TaskTimes(1, 2, 0),  # zero-length W tasks: each must leave a "*"
]
WIDTHS = range(60, 201, 7)
FILL = {"F": "-", "B": "=", "b": "~", "W": ":", "FB": "#"}
LABEL_TOKEN = re.compile(r"[FBbW]\d+'*|\d+&\d+")
ROW = re.compile(r"^rank +(\d+) \|(.*)\| bubble \S+$")


def test_plans_cover_every_schedule():
    assert {p[0] for p in PLANS} == set(SCHEDULE_NAMES)


def _timeline(plan, times):
    name, pp, m, vpp = plan
    return simulate(name, pp, m, times, vpp=vpp)


def _rows(text: str) -> list[str]:
    """The timeline part (between the bars) of every rank line, by rank."""
    rows = [ROW.match(line) for line in text.splitlines() if line.startswith("rank ")]
    assert all(rows) and [int(r.group(1)) for r in rows] == list(range(len(rows)))
    return [r.group(2) for r in rows]


def _kind(task) -> str:
    return "b" if task.kind == "B" and task.split_backward else task.kind


def _label(task) -> str:
    if task.kind == "FB":
        return f"{task.mb}&{task.mb2}"
    return f"{_kind(task)}{task.mb}" + "'" * task.chunk


def _cells(tl, rank: int, cols: int):
    """(task, first column, end column) of each task of ``rank``."""
    scale = cols / tl.makespan if tl.makespan > 0 else 0.0
    for task, s, e in tl.ranks[rank]:
        a = min(cols, round(s * scale))
        yield task, a, min(cols, max(a, round(e * scale)))


def _normalised(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------
# Width
# --------------------------------------------------------------------------


@pytest.mark.parametrize("times", TIMES[:3])
@pytest.mark.parametrize("plan", PLANS)
def test_every_line_fits_the_width(plan, times):
    tl = _timeline(plan, times)
    for width in WIDTHS:
        lines = render_text(tl, width).splitlines()
        assert max(map(len, lines)) <= width, width
        assert len(_rows("\n".join(lines))) == tl.pp


def test_default_fits_a_terminal_and_rows_share_one_scale():
    text = render_text(simulate("dualpipe", 8, 20, TaskTimes(1, 2, 1)))
    assert max(map(len, text.splitlines())) <= 100
    assert len({len(r) for r in _rows(text)}) == 1


def test_too_narrow_is_refused():
    tl = simulate("1f1b", 4, 8, TaskTimes(1, 2, 1))
    with pytest.raises(ValueError, match=r"^width:"):
        render_text(tl, 39)
    with pytest.raises(ValueError, match=r"^--width:"):
        schedule_cli.run(_parser().parse_args(["schedule", "1f1b", "--pp", "4", "--microbatches", "8",
                                               "--width", "30"]))


# --------------------------------------------------------------------------
# Cells and labels
# --------------------------------------------------------------------------


def _check_rank(tl, rank: int, row: str) -> None:
    """Every cell holds its own label and fill only; idle columns are idle."""
    owned = [False] * len(row)
    for task, a, b in _cells(tl, rank, len(row)):
        if a == b:  # too short for a column: never lost silently
            assert row[min(a, len(row) - 1)] == "*", (rank, task)
            continue
        owned[a:b] = [True] * (b - a)
        core = row[a:b].strip("*")
        fill = re.escape(FILL[_kind(task)])
        pattern = rf"\[{fill}*|{re.escape(_label(task))}{fill}+|{fill}+"
        assert not core or re.fullmatch(pattern, core), (rank, task, row[a:b], row)
    idle = {c for c, o in zip(row, owned) if not o}
    assert idle <= {".", "*"}, (rank, idle, row)


def _check_labels_in_spans(tl, rank: int, row: str) -> None:
    """Each label-like token of the row is a whole label of a task whose
    cell contains it."""
    cells = list(_cells(tl, rank, len(row)))
    for tok in LABEL_TOKEN.finditer(row):
        assert any(
            _label(task) == tok.group() and a <= tok.start() and tok.end() < b for task, a, b in cells
        ), (rank, tok.group(), tok.start(), row)


@pytest.mark.parametrize("times", TIMES)
@pytest.mark.parametrize("plan", PLANS)
def test_labels_stay_inside_their_cells(plan, times):
    tl = _timeline(plan, times)
    for width in (60, 80, 100, 120, 160, 200, 400):
        for rank, row in enumerate(_rows(render_text(tl, width))):
            _check_rank(tl, rank, row)
            _check_labels_in_spans(tl, rank, row)


def test_wide_enough_shows_every_label():
    tl = simulate("interleaved", 4, 8, TaskTimes(1, 2, 1), vpp=2)
    rows = _rows(render_text(tl, 400))
    for rank, row in enumerate(rows):
        assert [t.group() for t in LABEL_TOKEN.finditer(row)] == [_label(t) for t, _, _ in tl.ranks[rank]]
    assert rows[0].startswith("F0")


def test_review_cases_have_no_run_together_labels():
    """The review's interleaved --width 80 ("FF1FF3FFF2...") and dualpipe
    ("[#16&0###" next to "b1W1") drawings."""
    for tl, width in ((simulate("interleaved", 4, 8, TaskTimes(1, 2, 1), vpp=2), 80),
                      (simulate("dualpipe", 8, 20, TaskTimes(1, 2, 1)), 100),
                      (simulate("dualpipe", 8, 20, TaskTimes(1, 2, 1)), 240)):
        for rank, row in enumerate(_rows(render_text(tl, width))):
            assert "FF" not in row and not re.search(r"\[[0-9FBbW]", row)
            _check_rank(tl, rank, row)


def test_tasks_too_short_for_a_column_are_marked():
    tl = simulate("zb1p", 4, 8, TaskTimes(1, 2, 0))  # every W lasts 0
    text = render_text(tl, 60)
    assert all("*" in row for row in _rows(text))
    assert "* task(s) too short" in _normalised(text)


# --------------------------------------------------------------------------
# Legend
# --------------------------------------------------------------------------


def _legend_entries(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("legend:"))
    return _normalised(" ".join(lines[start:]))[len("legend:"):].strip().split("; ")


def _shown(entry: str, rows: str) -> bool:
    """Whether the drawing shows what a legend entry explains."""
    kind = re.match(r"^(?:([FBbW])<n>|f&b) \((.)\) ", entry)
    if kind:
        label = rf"{kind.group(1)}\d" if kind.group(1) else r"\d&\d"
        return kind.group(2) in rows or re.search(label, rows) is not None
    return entry[0] in rows and entry[1] == " "


@pytest.mark.parametrize("times", TIMES)
@pytest.mark.parametrize("plan", PLANS)
def test_legend_lists_exactly_what_is_drawn(plan, times):
    tl = _timeline(plan, times)
    for width in (60, 100, 200, 400):
        text = render_text(tl, width)
        rows = "".join(_rows(text))
        entries = _legend_entries(text)
        assert all(_shown(e, rows) for e in entries), (width, entries)
        symbols = {e[0] for e in entries} | {e.split("(")[1][0] for e in entries if "<n> (" in e or "f&b (" in e}
        glyphs = set(rows) - set("0123456789&FBbW")
        assert glyphs <= symbols, (width, glyphs - symbols)
        for letter in set(re.findall(r"([FBbW])\d", rows)):
            assert any(e.startswith(f"{letter}<n>") for e in entries), letter
        if re.search(r"\d&\d", rows):
            assert any(e.startswith("f&b") for e in entries)


def test_legend_never_promises_interleaved_chunk_dots():
    text = render_text(simulate("interleaved", 4, 8, TaskTimes(1, 2, 1), vpp=2), 400)
    assert ".c" not in text and "F0'" in text and any(e.startswith("'") for e in _legend_entries(text))


# --------------------------------------------------------------------------
# The closed form's assumption F = B - W
# --------------------------------------------------------------------------

NOTE = "which assumes F = B - W"
SPLIT_BACKWARD = ("zb1p", "dualpipe", "dualpipev")


@pytest.mark.parametrize("times", TIMES[:3] + [TaskTimes(3, 2, 0.5), TaskTimes(1, 3, 1)])
@pytest.mark.parametrize("plan", [p for p in PLANS if p[2] >= p[1]])
def test_note_appears_exactly_when_the_assumption_fails(plan, times):
    """Only the split-backward schedules' closed forms rest on F = B - W:
    1F1B's and interleaved's match the simulation for any times (so they get
    no note), the others miss it somewhere when F != B - W."""
    tl = _timeline(plan, times)
    text = _normalised(render_text(tl, 120))
    fails = abs(times.f - (times.b - times.w)) > 1e-12
    assert (NOTE in text) == (fails and plan[0] in SPLIT_BACKWARD)
    if plan[0] not in SPLIT_BACKWARD:
        assert tl.max_bubble == pytest.approx(closed_form(plan[0], plan[1], times, plan[3]))


def test_the_issue_command_gets_the_note_and_json_says_so(capsys):
    argv = ["schedule", "dualpipe", "--pp", "8", "--microbatches", "24",
            "--f", "2", "--b", "2", "--w", "1", "--fb", "4"]
    schedule_cli.run(_parser().parse_args(argv + ["--width", "100"]))
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    assert f"max 12 closed form 9, {NOTE} (here F=2, B-W=1) and so does not apply" in _normalised(out)
    schedule_cli.run(_parser().parse_args(argv + ["--json"]))
    data = json.loads(capsys.readouterr().out)
    assert data["closed_form_applies"] is False and data["closed_form"] == 9 and data["bubble"] == 12
    schedule_cli.run(_parser().parse_args(argv[:6] + ["--json"]))
    assert json.loads(capsys.readouterr().out)["closed_form_applies"] is True


# --------------------------------------------------------------------------
# CLI default width
# --------------------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser(prog="gpuhours")
    schedule_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_default_width_follows_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "87")
    schedule_cli.run(_parser().parse_args(["schedule", "dualpipe", "--pp", "8", "--microbatches", "20"]))
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) == 87


def test_cli_default_width_without_a_terminal(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)

    def no_terminal(fd=None):
        raise OSError("not a terminal")

    monkeypatch.setattr("os.get_terminal_size", no_terminal)
    assert schedule_cli.default_width() == 100
    monkeypatch.setenv("COLUMNS", "12")
    assert schedule_cli.default_width() == 40


@pytest.mark.parametrize("extra,caveat", [(["--pairs"], "counts no forward-backward pairs"),
                                          (["--p2p", "0.5"], "counts no P2P time (here 0.5 a hop)")])
def test_closed_form_is_not_claimed_where_pairs_or_p2p_move_the_bubble(capsys, extra, caveat):
    """1F1B PP4 M8 with pairs simulates a bubble of 27 and with 0.5 a hop 17; the closed form says 9, and the
    JSON said it applied."""
    argv = ["schedule", "1f1b", "--pp", "4", "--microbatches", "8", *extra]
    schedule_cli.run(_parser().parse_args(argv + ["--json"]))
    data = json.loads(capsys.readouterr().out)
    assert data["closed_form"] == 9 and data["bubble"] > 9
    assert data["closed_form_applies"] is False and data["closed_form_caveat"] == caveat
    schedule_cli.run(_parser().parse_args(argv + ["--width", "200"]))
    assert f"closed form 9, which {caveat} and so does not apply" in _normalised(capsys.readouterr().out)


def test_a_bubble_is_never_negative():
    """DualPipe PP2 at these times printed 'bubble -9.09495e-13' on each rank: the busy sum a few ulps past
    the makespan."""
    tl = simulate("dualpipe", 2, 8, TaskTimes(270.69, 465.57, 112.06, 586.93))
    assert tl.bubbles() == [0.0, 0.0] and tl.max_bubble == 0.0
    assert "bubble -" not in render_text(tl, width=120)
