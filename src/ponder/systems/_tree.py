"""Render a trace as a rich tree (for ``ponder trace ID``), search trees included."""

from __future__ import annotations

from rich.markup import escape
from rich.tree import Tree

from ponder.errors import UserError
from ponder.systems._trace import CallRecord, ComponentEvent, SearchTree, Trace, TreeNode, Usage


def _usage(u: Usage) -> str:
    calls = f"{u.calls} call{'s' if u.calls != 1 else ''}"
    return f"{calls} · {u.prompt_tokens}+{u.completion_tokens} tok · {u.wall_s:.2f} s"


def _preview(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return escape(flat if len(flat) <= width else flat[: width - 1] + "…")


def _ids(ids: list[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", … (+{len(ids) - limit})" if len(ids) > limit else "")


def _event_line(e: ComponentEvent) -> str:
    name = f"[bold]{escape(e.label)}[/]"
    if e.label != e.component:
        name += f" ({escape(e.component)})"
    parts = [name]
    if e.models:
        parts.append(escape(", ".join(e.models)))
    effects = []
    if e.produced:
        effects.append(f"produced {len(e.produced)}")
    if e.changed:
        effects.append(f"changed {len(e.changed)}")
    if e.dropped:
        effects.append(f"dropped {len(e.dropped)}")
    if e.output_ids is not None:
        effects.append(f"kept {_ids(e.output_ids, 4)}")
    if effects:
        parts.append("; ".join(effects))
    parts.append(_usage(e.usage))
    line = " · ".join(parts)
    if e.fallbacks:
        line += f" [yellow]({len(e.fallbacks)} fallback{'s' if len(e.fallbacks) > 1 else ''})[/]"
    if e.error:
        line += " [red](failed)[/]"
    return line


def _call_node(parent: Tree, call: CallRecord, show_text: bool, width: int) -> None:
    line = (
        f"{escape(call.purpose)} · n={call.n} · {call.prompt_tokens}+{call.completion_tokens} tok"
        f" · {call.latency_s:.2f} s"
    )
    if call.reused:
        line += f" · [cyan]reused {call.reused}/{call.n}[/]"
    if call.error:
        line += f" [red]error: {escape(call.error)}[/]"
    node = parent.add(line)
    if show_text:
        prompt = call.prompt if isinstance(call.prompt, str) else call.prompt[-1].content
        node.add(f"[dim]prompt:[/] {_preview(prompt, width)}")
        for i, out in enumerate(call.outputs):
            node.add(f"[dim]output {i + 1}:[/] {_preview(out, width)}")


def _best_first(node: TreeNode) -> tuple[bool, float, bool, float, int]:
    return (
        node.value is None,
        -(node.value or 0.0),
        node.score is None,
        -(node.score or 0.0),
        node.id,
    )


def children_best_first(tree: SearchTree) -> dict[int, list[TreeNode]]:
    """Every node's children by parent id, best first: by value, then score (missing last), then id.

    One pass over the nodes, for views that walk a whole tree (:meth:`SearchTree.children` scans
    every node per call). A node naming itself or an unknown node as its parent is nobody's child.
    """
    ids = {n.id for n in tree.nodes}
    out: dict[int, list[TreeNode]] = {}
    for node in tree.nodes:
        if node.parent is not None and node.parent != node.id and node.parent in ids:
            out.setdefault(node.parent, []).append(node)
    for kids in out.values():
        kids.sort(key=_best_first)
    return out


def _subtree_sizes(roots: list[TreeNode], kids: dict[int, list[TreeNode]]) -> dict[int, int]:
    """Nodes in each node's subtree (itself included), without recursion: trees can be deep."""
    order: list[TreeNode] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        order.append(node)
        stack.extend(kids.get(node.id, []))
    sizes: dict[int, int] = {}
    for node in reversed(order):  # children before their parents
        sizes[node.id] = 1 + sum(sizes.get(k.id, 0) for k in kids.get(node.id, []))
    return sizes


def _search_head(tree: SearchTree) -> str:
    deepest = max((n.depth for n in tree.nodes), default=0)
    path = tree.winning_path
    won = " → ".join(f"#{i}" for i in path) if path else "none chosen"
    return (
        f"[bold]search tree[/] · {escape(tree.strategy)} · scorer {escape(tree.scorer)}"
        f" ({escape(tree.aggregate)}) · {len(tree.nodes)} nodes, depth {deepest}"
        f" · {len(tree.chosen)} chosen · [bold green]★ winning path[/] {won}"
    )


def _search_node(node: TreeNode, won: bool, rank: int | None, width: int) -> str:
    step = "root" if node.parent is None else _preview(node.text, width) or "[dim](empty)[/]"
    parts = [f"[dim]#{node.id}[/] {step}"]
    if node.score is not None:
        parts.append(f"score {node.score:.3g}")
    if node.value is not None:
        parts.append(f"value {node.value:.3g}")
    if node.visits:
        parts.append(f"visits {node.visits}")
    if node.terminal:
        parts.append("terminal")
    if node.truncated:
        parts.append("[yellow]truncated[/]")
    if rank is not None:
        parts.append(f"[cyan]chosen #{rank}[/]")
    if node.note:
        parts.append(f"[dim]{escape(node.note)}[/]")
    line = " · ".join(parts)
    return f"[bold green]★ {line}[/]" if won else line


def _add_search_tree(
    parent: Tree, tree: SearchTree, *, width: int, max_children: int, max_depth: int
) -> None:
    """The tree under ``parent``: best children first, at most ``max_children`` per node and
    ``max_depth`` levels; the winning path is shown whole, whatever the cuts."""
    kids = children_best_first(tree)
    won = set(tree.winning_path)
    rank = {node_id: i + 1 for i, node_id in enumerate(tree.chosen)}
    roots = [n for n in tree.nodes if n.parent is None]
    sizes = _subtree_sizes(roots, kids)
    head = parent.add(_search_head(tree))
    # Each node's line is added with its siblings' (so they keep their order) and it is expanded
    # when popped; a stack instead of recursion, for deep trees.
    stack = [(head.add(_search_node(r, r.id in won, rank.get(r.id), width)), r, 0) for r in roots]
    stack.reverse()
    seen: set[int] = set()
    while stack:
        branch, node, level = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        below = kids.get(node.id, [])
        if level >= max_depth:
            shown = [k for k in below if k.id in won]
        else:
            shown = below[:max_children] + [k for k in below[max_children:] if k.id in won]
        shown_ids = {k.id for k in shown}
        lines = [
            (branch.add(_search_node(k, k.id in won, rank.get(k.id), width)), k) for k in shown
        ]
        hidden = [k for k in below if k.id not in shown_ids]
        if hidden:
            total = sum(sizes.get(k.id, 1) for k in hidden)
            if level >= max_depth:
                branch.add(f"[dim]… {total} node{'s' if total > 1 else ''} below (depth cut)[/]")
            else:
                more = f"… {len(hidden)} more"
                if total > len(hidden):
                    more += f" ({total} nodes)"
                branch.add(f"[dim]{more}[/]")
        stack.extend((line, k, level + 1) for line, k in reversed(lines))


def _calls_in_brief(parent: Tree, calls: list[CallRecord], show_text: bool, width: int) -> None:
    """A search makes a call per node: one summary line, and the failed calls in full."""
    failed = [c for c in calls if c.error]
    reused = sum(1 for c in calls if c.reused)
    line = f"[dim]{len(calls)} call{'s' if len(calls) != 1 else ''}"
    if reused:
        line += f", {reused} reused"
    parent.add(line + " (each shown with --text)[/]")
    for call in failed:
        _call_node(parent, call, show_text, width)


def trace_tree(
    trace: Trace,
    *,
    show_text: bool = False,
    width: int = 100,
    tree_children: int = 4,
    tree_depth: int = 4,
) -> Tree:
    """A tree of the trace: layers, their components, each component's calls and fallbacks.

    A step-level search component's tree is shown under it: one line per node (its step, score,
    value, visits, terminal / truncated, "chosen #k"), the winning path in bold green and marked
    ★. Its calls (one per node) are then one summary line unless ``show_text``.

    Args:
        trace: The trace to show.
        show_text: Also show each call's prompt (last message) and outputs, shortened.
        width: Characters of text shown per prompt, output or step.
        tree_children: Children shown per search-tree node, best first (value, then score); the
            rest are counted on a "… k more" line. The winning path is always shown.
        tree_depth: Search-tree levels shown below the root; deeper nodes are counted, except the
            winning path's.
    """
    if tree_children < 1 or tree_depth < 1:
        raise UserError(
            f"search trees need >= 1 child and >= 1 level shown, got {tree_children} and "
            f"{tree_depth}",
            hint="pass tree_children and tree_depth of at least 1",
        )
    head = f"[bold]{escape(trace.system)}[/] · {_usage(trace.usage)}"
    if trace.answer_id:
        head += f" · answer {trace.answer_id}"
    if trace.error:
        head += f" [red]failed: {escape(trace.error)}[/]"
    root = Tree(head)
    root.add(f"[dim]query:[/] {_preview(trace.query[-1].content, width)}")
    for layer in trace.layers:
        node = root.add(
            f"layer {layer.index} · {layer.wall_s:.2f} s → {_ids(layer.candidate_ids) or '(none)'}"
        )
        for event in layer.events:
            enode = node.add(_event_line(event))
            if event.tree is not None:
                _add_search_tree(
                    enode, event.tree, width=width, max_children=tree_children, max_depth=tree_depth
                )
            if event.tree is not None and not show_text and event.calls:
                _calls_in_brief(enode, event.calls, show_text, width)
            else:
                for call in event.calls:
                    _call_node(enode, call, show_text, width)
            for fb in event.fallbacks:
                text = f"[yellow]fallback:[/] {escape(fb.reason)} → {escape(fb.action)}"
                if fb.candidate_ids:
                    text += f" ({_ids(fb.candidate_ids, 4)})"
                enode.add(text)
            for note in event.notes:
                enode.add(f"[dim]{escape(note)}[/]")
            if event.error:
                enode.add(f"[red]error: {escape(event.error)}[/]")
    if trace.unit_tests:
        tests = root.add(f"unit tests ({len(trace.unit_tests)})")
        for t in trace.unit_tests:
            tests.add(_preview(t, width))
    answer = trace.candidate(trace.answer_id) if trace.answer_id else None
    if answer is not None:
        extracted = f" [dim](answer: {escape(answer.answer)})[/]" if answer.answer else ""
        root.add(f"[green]answer {answer.id}:[/] {_preview(answer.text, width)}{extracted}")
    return root
