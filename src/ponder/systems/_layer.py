"""How the outputs of the components of one layer combine.

All components of a layer see the same input state and run concurrently. Their deltas are then
merged in config order, in four steps:

1. **changes** (refine) replace candidates in place; if two components change the same candidate,
   the later one in the layer wins;
2. **scores, critiques and unit tests** are added (a score is stored under the component's label);
3. **selections** apply one after another, in config order: a reordering selection (rank, vote,
   score-mode judge, unit_test_eval) puts the surviving candidates in its order, a filter (accept-mode
   judge, verify) drops candidates and keeps the order;
4. **new candidates**: those of ``prepend`` and ``replace`` components (fuse) come first, then the
   surviving candidates (none if any component replaced them), then those of ``append`` components
   (generate). New candidates of several components are concatenated in config order, so an
   ensemble (several generate components in one layer) yields all their samples.
"""

from __future__ import annotations

from collections.abc import Sequence

from ponder.systems._component import Delta
from ponder.systems._state import Candidate, State


def merge(state: State, deltas: Sequence[tuple[str, Delta]]) -> tuple[State, dict[str, Candidate]]:
    """The state after a layer, and every candidate the layer made or touched (latest version).

    Args:
        state: The layer's input state.
        deltas: ``(label, delta)`` of each component, in config order.
    """
    by_id = {c.id: c for c in state.candidates}
    for _, delta in deltas:
        for changed in delta.changed:
            if changed.id in by_id:
                by_id[changed.id] = changed
    for label, delta in deltas:
        for cid, score in delta.scores.items():
            if cid in by_id:
                c = by_id[cid]
                by_id[cid] = c.model_copy(update={"scores": {**c.scores, label: score}})
    order = [c.id for c in state.candidates]
    for _, delta in deltas:
        if delta.keep is None:
            continue
        if delta.reorder:
            present = set(order)
            order = list(dict.fromkeys(i for i in delta.keep if i in present))
        else:
            kept = set(delta.keep)
            order = [i for i in order if i in kept]
    replaced = any(d.placement == "replace" and d.new for _, d in deltas)
    front = [c for _, d in deltas if d.placement != "append" for c in d.new]
    back = [c for _, d in deltas if d.placement == "append" for c in d.new]
    survivors = [] if replaced else [by_id[i] for i in order]
    tests = list(state.unit_tests)
    for _, delta in deltas:
        tests += [t for t in delta.unit_tests if t not in tests]
    new_state = state.model_copy(
        update={
            "candidates": front + survivors + back,
            "critiques": [*state.critiques, *(c for _, d in deltas for c in d.critiques)],
            "unit_tests": tests,
        }
    )
    touched = {**by_id, **{c.id: c for c in front + back}}
    return new_state, touched
