"""fastalign's one progress reporter (fastalign/_progress.py) and its three users: the methods' lines,
``fastalign check``'s bar and ``align --out``'s bar fed by the part files."""
from __future__ import annotations

import io

from fastalign.methods import _common

from fastalign import distributed
from fastalign._progress import Progress


def test_lines_are_labelled_and_silent_when_disabled():
    out = io.StringIO()
    Progress("fastalign aisp", stream=out)("iteration 1/4")
    Progress("fastalign aisp", stream=out, enabled=False)("not shown")
    Progress("fastalign aisp", stream=out).say("iteration 2/4")
    assert out.getvalue() == "fastalign aisp: iteration 1/4\nfastalign aisp: iteration 2/4\n"


def test_a_methods_progress_is_the_reporter_with_the_methods_label(capsys):
    say = _common.Progress(True, "sea")
    assert isinstance(say, Progress) and say.method == "sea"
    say("step 3")
    _common.Progress(False, "bon")("hidden")
    assert capsys.readouterr().err == "fastalign sea: step 3\n"


def test_the_bar_writes_one_line_per_tenth_in_a_log():
    out = io.StringIO()
    bar = Progress("check", 20, stream=out)
    for _ in range(20):
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # 0 %, 10 %, ..., 100 %
    assert lines[0].startswith("check [#") and " 1/20 " in lines[0]
    assert lines[-1].startswith("check [" + "#" * 24 + "] 20/20 ")


def test_rate_and_time_left_and_the_count_does_not_pass_the_total():
    out = io.StringIO()
    bar = Progress("fastalign align", 10, stream=out, initial=4, unit="prompt", rate=True)
    bar.advance(3)
    assert bar.done == 7 and "prompt/s" in out.getvalue() and "s left" in out.getvalue()
    bar.advance(50)
    assert bar.done == 10


def test_align_files_bar_counts_the_lines_the_ranks_append(tmp_path, capsys):
    (tmp_path / "part-0.jsonl").write_text('{"index": 0}\n')
    watcher = distributed._Progress(tmp_path, total=5, done=1, enabled=True)
    try:
        with open(tmp_path / "part-0.jsonl", "a") as f:
            f.write('{"index": 1}\n{"index": 2}\n{"inde')  # the last line is not complete yet
        (tmp_path / "part-1.jsonl").write_text('{"index": 3}\n')
        watcher.poll()
        assert watcher.bar.done == 1 + 3
    finally:
        watcher.close(complete=True)
    assert watcher.bar.done == 5
    assert "fastalign align" in capsys.readouterr().err
