"""Render a trace as a rich tree (for ``ponder trace ID``)."""

from __future__ import annotations

from rich.markup import escape
from rich.tree import Tree

from ponder.systems._trace import CallRecord, ComponentEvent, Trace, Usage


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


def trace_tree(trace: Trace, *, show_text: bool = False, width: int = 100) -> Tree:
    """A tree of the trace: layers, their components, each component's calls and fallbacks.

    Args:
        trace: The trace to show.
        show_text: Also show each call's prompt (last message) and outputs, shortened.
        width: Characters of text shown per prompt or output.
    """
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
