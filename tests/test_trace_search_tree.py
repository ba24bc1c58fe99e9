"""Search trees in traces: `trace_tree` / `ponder trace` show them, JSON and the store keep them.

The trace is hand-built (tests/_trees.py draws its tree), so every expectation below is known
without running a strategy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import UserError
from ponder.store import ServerRequest, Store
from ponder.systems import SearchTree, Trace, TreeNode, children_best_first, trace_tree
from tests._fakes import arithmetic
from tests._trees import (
    APPLES,
    CUT_STEPS,
    DEEP_STEPS,
    OFF_PATH_STEPS,
    WINNING_STEPS,
    search_trace,
    search_tree,
    store_search_trace,
)


def _shown(trace: Trace, **options: Any) -> str:
    console = Console(record=True, width=220)
    console.print(trace_tree(trace, **options))
    return console.export_text()


def _line(text: str, step: str) -> str:
    """The one line showing ``step`` as a node (``#id step``), or the one line with ``step``."""
    lines = [ln for ln in text.splitlines() if step in ln]
    plain = [re.sub(r"\x1b\[[\d;]*m", "", ln) for ln in lines]  # ANSI styles aside
    nodes = [
        ln for ln, p in zip(lines, plain, strict=True) if re.search(r"#\d+ " + re.escape(step), p)
    ]
    (line,) = nodes or lines
    return line


def test_the_tree_is_shown_under_its_event_best_first_with_the_winning_path_marked() -> None:
    text = _shown(search_trace())
    head = _line(text, "search tree")
    assert "mcts" in head and "scorer judge (min)" in head and "20 nodes, depth 6" in head
    assert "2 chosen" in head and "winning path #0 → #3 → #8 → #14" in head
    assert text.index("search tree") > text.index("mcts · scripted")  # under its event
    for step in WINNING_STEPS:
        assert "★" in _line(text, step)
    assert "★" in _line(text, "#0 root") and "visits 12" in _line(text, "#0 root")
    for step in [APPLES, *OFF_PATH_STEPS]:
        assert "★" not in _line(text, step)
    answer = _line(text, WINNING_STEPS[2])
    assert "terminal" in answer and "chosen #1" in answer and "score 0.99" in answer
    assert "visits 3" in answer and "value 0.7" in answer
    # Model text is text: neither rich markup nor HTML is interpreted.
    assert APPLES in text
    # Best first: by value, then score; the winning #8 (value .6, 5th of 6) is shown all the same.
    order = [text.index(s) for s in ("hold 7.", "hold 8.", "hold 9.", "hold 10.", "hold 6.")]
    assert order == sorted(order)
    assert text.index(APPLES) < text.index(WINNING_STEPS[0]) < text.index("Guess 7.")
    # At most 4 children a node (plus the winning one); the rest are counted.
    for step in CUT_STEPS:
        assert step not in text
    assert "… 2 more (3 nodes)" in text  # #5, and #6 with its child #7
    assert "… 1 more" in text  # #13
    # Depth: levels 1-4 shown, the two nodes below #17 counted.
    assert DEEP_STEPS[1] in text and DEEP_STEPS[2] not in text
    assert "… 2 nodes below (depth cut)" in text


def test_the_cuts_follow_the_options_and_never_hide_the_winning_path() -> None:
    text = _shown(search_trace(), tree_children=1, tree_depth=1)
    for step in WINNING_STEPS:
        assert "★" in _line(text, step)  # depth 3 and ranked low: shown whole anyway
    assert APPLES in text and "Guess 7." not in text
    assert "… 4 more (5 nodes)" in text  # the root's children but #1 and #3
    assert "… 5 nodes below (depth cut)" in text  # #1's subtree
    assert "… 4 more" in text  # #3's children but #9 and #8
    wide = _shown(search_trace(), tree_children=10, tree_depth=10)
    assert not re.search(r"… \d+ more", wide) and "depth cut" not in wide
    for step in [*CUT_STEPS, *DEEP_STEPS]:
        assert step in wide
    assert "chosen #2" in _line(wide, DEEP_STEPS[3])
    assert "truncated" in _line(wide, "Start over.")
    with pytest.raises(UserError, match=">= 1"):
        trace_tree(search_trace(), tree_children=0)


def test_the_winning_path_is_bold_green() -> None:
    console = Console(record=True, width=220, force_terminal=True, color_system="standard")
    console.print(trace_tree(search_trace()))
    ansi = console.export_text(styles=True)
    bold_green = "\x1b[1;32m"
    for step in WINNING_STEPS:
        line = _line(ansi, step)
        assert bold_green in line.split(step)[0], line
    assert bold_green not in _line(ansi, "Guess 7.")


def test_a_search_makes_a_call_per_node_so_its_calls_are_one_line_unless_text() -> None:
    brief = _shown(search_trace())
    assert "4 calls (each shown with --text)" in brief
    assert "step · n=1" not in brief
    assert "judge <timeout> after 3 tries" in brief  # a failed call is always shown
    full = _shown(search_trace(), show_text=True)
    assert full.count("step · n=1") == 3 and "each shown with --text" not in full


def test_children_best_first_orders_and_tolerates_broken_links() -> None:
    tree = search_tree()
    kids = children_best_first(tree)
    assert [n.id for n in kids[0]] == [1, 3, 2, 4, 5, 6]  # #6 has neither value nor score
    assert [n.id for n in kids[3]] == [9, 10, 11, 12, 8, 13]
    assert sum(len(v) for v in kids.values()) == len(tree.nodes) - 1
    ties = SearchTree(
        strategy="beam_search",
        scorer="python",
        nodes=[
            TreeNode(id=0),
            TreeNode(id=1, parent=0, depth=1, text="b", score=0.2),
            TreeNode(id=2, parent=0, depth=1, text="a", score=0.5),
            TreeNode(id=3, parent=0, depth=1, text="c", value=0.1),
            TreeNode(id=4, parent=4, depth=1, text="self"),
            TreeNode(id=5, parent=99, depth=1, text="orphan"),
        ],
    )
    assert [n.id for n in children_best_first(ties)[0]] == [3, 2, 1]
    assert set(children_best_first(ties)) == {0}
    plain = search_trace()
    plain.layers[0].events[0].tree = None
    text = _shown(plain)
    assert "search tree" not in text and "step · n=1" in text  # no tree: calls as usual
    empty = search_trace()
    empty.layers[0].events[0].tree = SearchTree(strategy="beam_search", scorer="judge")
    assert "0 nodes, depth 0 · 0 chosen · ★ winning path none chosen" in _shown(empty)
    broken = search_trace()
    broken.layers[0].events[0].tree = ties
    shown = _shown(broken)
    assert "self" not in shown and "orphan" not in shown and "#3 c" in shown


def test_a_tree_trace_round_trips_through_json() -> None:
    trace = search_trace()
    again = Trace.model_validate_json(trace.model_dump_json())
    assert again == trace
    tree = again.events[0].tree
    assert tree is not None and tree.winning_path == [0, 3, 8, 14]
    assert tree.solution(14) == "\n\n".join(WINNING_STEPS)
    assert tree.node(5).truncated and tree.node(5).finish_reason == "length"


def test_a_tree_trace_round_trips_through_the_store_and_ponder_trace(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_id, problem_id, sample_id = store_search_trace(db, arithmetic(2))
    with Store(db) as store:
        stored = store.trace(sample_id)
        assert [r.sample_id for r in store.trace_rows(run_id)] == [sample_id]
    assert stored == search_trace()

    def cli(*args: str, code: int = 0) -> Any:
        result = CliRunner().invoke(app, [*args, "--db", str(db)], env={"COLUMNS": "220"})
        assert result.exit_code == code, result.output
        return result

    shown = cli("trace", run_id, problem_id).stdout
    assert "search tree · mcts" in shown and "winning path #0 → #3 → #8 → #14" in shown
    for step in WINNING_STEPS:
        assert "★" in _line(shown, step)
    assert APPLES in shown and "… 2 more (3 nodes)" in shown
    assert "usage per component" in shown
    deeper = cli("trace", run_id, problem_id, "--tree-depth", "9", "--tree-children", "9").stdout
    assert DEEP_STEPS[3] in deeper and "depth cut" not in deeper
    assert not re.search(r"… \d+ more", deeper)
    full = json.loads(cli("trace", run_id, problem_id, "--json").stdout)
    assert Trace.model_validate(full) == stored  # every node, not only those shown
    assert len(full["layers"][0]["events"][0]["tree"]["nodes"]) == 20
    bad = cli("trace", run_id, problem_id, "--tree-children", "0", code=2)
    assert "--tree-children and --tree-depth must be >= 1" in bad.output


def test_a_served_requests_tree_shows_in_ponder_trace(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    trace = search_trace()
    with Store(db) as store:
        store.add_server_request(
            ServerRequest(
                id="tr-tree",
                created_at=1.0,
                endpoint="/v1/chat/completions",
                model="tree-demo",
                system="tree-demo",
                status=200,
                latency_s=0.5,
                request={"model": "tree-demo", "messages": [{"role": "user", "content": "?"}]},
                trace=trace.model_dump(mode="json"),
            )
        )
    args = ["trace", "tr-tree", "--db", str(db), "--tree-children", "1", "--tree-depth", "1"]
    shown = CliRunner().invoke(app, args, env={"COLUMNS": "220"})
    assert shown.exit_code == 0, shown.output
    assert "served request tr-tree" in shown.stdout
    for step in WINNING_STEPS:
        assert "★" in _line(shown.stdout, step)
    assert "… 4 more (5 nodes)" in shown.stdout  # the options reach served traces too


def _big_tree(fanout: int, levels: int, chain: int) -> SearchTree:
    """``fanout`` children per node for ``levels`` levels, then a ``chain`` of single steps below
    the last node, which wins."""
    nodes = [TreeNode(id=0)]
    frontier = [0]
    for level in range(1, levels + 1):
        nxt = []
        for parent in frontier:
            for _ in range(fanout):
                i = len(nodes)
                score = (i * 7919 % 1000) / 1000  # spread, repeatable
                nodes.append(
                    TreeNode(
                        id=i, parent=parent, depth=level, text=f"s{i}", score=score, value=score
                    )
                )
                nxt.append(i)
        frontier = nxt
    for _ in range(chain):
        last = nodes[-1]
        i = len(nodes)
        nodes.append(TreeNode(id=i, parent=last.id, depth=last.depth + 1, text=f"s{i}"))
    nodes[-1] = nodes[-1].model_copy(update={"terminal": True})
    return SearchTree(strategy="mcts", scorer="python", nodes=nodes, chosen=[len(nodes) - 1])


def test_a_big_tree_is_cut_to_a_readable_size_with_its_winning_path_whole() -> None:
    tree = _big_tree(fanout=6, levels=5, chain=40)  # 9,371 nodes: a 5-level bush, 40 below
    trace = search_trace()
    trace.layers[0].events[0].tree = tree
    text = _shown(trace, tree_children=3, tree_depth=3)
    lines = [ln for ln in text.splitlines() if re.search(r"#\d+ s\d+", ln)]
    path = tree.winning_path
    assert len(path) == 46
    # At most 3 children a node, and the winning one, in the first 3 levels (4, 4 * 3 + 1 and
    # 13 * 3 + 1 nodes), the winning path below them: 100 lines or so for 9,371 nodes.
    assert len(lines) <= 4 + 13 + 40 + len(path)
    assert sum("★" in ln for ln in lines) == len(path) - 1  # the root's line aside
    assert f"#{path[-1]} s{path[-1]}" in text and "chosen #1" in text
    where = {int(m.group(1)): m.start() for m in re.finditer(r"#(\d+) s\d+", text)}
    assert set(path[1:]) <= set(where)
    won = set(path)
    for parent, kids in children_best_first(tree).items():
        if parent != 0 and parent not in where:
            continue
        shown = [k.id for k in kids if k.id in where]
        # The 3 best, and the winner wherever it ranks, in that order; none under the depth cut.
        best = [k.id for k in kids[:3]] if tree.node(parent).depth < 3 else []
        assert shown == [k.id for k in kids if k.id in best or k.id in won], parent
        assert [where[i] for i in shown] == sorted(where[i] for i in shown), parent
