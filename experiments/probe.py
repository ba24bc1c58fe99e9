"""Which tasks are worth a long run: neither hopeless nor saturated for the model.

A quick run (default 8 problems x 8 samples) of each candidate task; pass@1 (coverage@1, the mean share of
correct samples) and coverage@K per task. A task is chosen when its pass@1 lies within --band (default
0.05-0.5: the model solves some problems sometimes, leaving room for coverage to grow with k) and its
coverage@K is above pass@1 (extra samples do find new solutions); a task below the band where most
samples are unparsed is reported as such (the model does not write the answer format). The chosen
tasks are ranked by pass@1 nearest the band's geometric middle. The runs are kept: a long run of a
chosen task with the same sampling parameters extends them.
"""

from __future__ import annotations

import math

import _common as c

from ponder.analysis import coverage_curve
from ponder.errors import UserError

NAME = "probe"
CANDIDATES = (
    "gym:basic_arithmetic",
    "gym:chain_sum",
    "gym:leg_counting",
    "gym:coin_flip",
    "gym:count_bits",
    "gym:gcd",
    "gym:lcm",
    "gym:letter_counting",
    "gym:products",
    "gym:simple_equations",
    "gym:decimal_arithmetic",
    "gym:power_function",
    "gym:prime_factorization",
    "gym:fraction_simplification",
    "gym:base_conversion",
    "gym:spell_backward",
    "gym:word_sequence_reversal",
    "gym:family_relationships",
    "gym:syllogism",
    "gym:calendar_arithmetic",
)


def run() -> None:
    p = c.parser(NAME, __doc__, problems=8, n=8, tasks=CANDIDATES)
    p.add_argument(
        "--band",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(0.05, 0.5),
        help="pass@1 range of a chosen task, as LO,HI (default 0.05,0.5)",
    )
    args = c.parse_args(p)
    lo, hi = args.band
    middle = math.sqrt(max(lo, 1e-6) * hi)
    options = c.task_options(args.task_option)
    cells = [c.Cell(args.model[0], t, args.n, c.params_of(args), t, options) for t in args.task]
    rows = []
    chosen = []
    with c.opened(args) as store:
        for cell in cells:
            try:
                (d,) = c.draw(args, store, [cell])
            except UserError as exc:  # a candidate that does not exist here is skipped, not fatal
                rows.append([cell.task, "–", "–", "–", "–", "–", f"skipped: {exc.message}"])
                continue
            data = c.run_data(store, d)
            k_max = int(data.n_per_problem().min())
            cov = coverage_curve(data, [1, k_max], bootstrap=0).mean
            p1, ck = float(cov[0]), float(cov[1])
            tokens = sum(int(pr.completion_tokens.sum()) for pr in data.problems) / max(
                1, sum(pr.n for pr in data.problems)
            )
            unparsed = sum(a is None for pr in data.problems for a in pr.answers) / max(
                1, sum(pr.n for pr in data.problems)
            )
            if p1 < lo and unparsed > 0.5:
                # Not a measure of the task's difficulty: the model does not follow the answer format.
                verdict = "no: mostly unparsed (answer format not followed)"
            elif p1 < lo:
                verdict = "no: too hard"
            elif p1 > hi:
                verdict = "no: too easy"
            elif ck <= p1:
                verdict = "no: coverage does not grow"
            else:
                verdict = "yes"
                chosen.append((abs(math.log(p1 / middle)), cell.task, p1))
            rate = f"{d.drawn / d.wall_s:.2f}" if d.drawn and d.wall_s > 0 else "–"
            rows.append(
                [
                    cell.task,
                    c.pct(p1),
                    f"{c.pct(ck)} (k={k_max})",
                    c.pct(unparsed),
                    f"{tokens:.1f}",
                    rate,
                    verdict,
                ]
            )
    chosen.sort()
    ranking = (
        "\n".join(f"{i}. {task} (pass@1 {c.pct(p1)})" for i, (_, task, p1) in enumerate(chosen, 1))
        or "None of the candidates is in the band."
    )
    c.write_results(
        args,
        NAME,
        f"Probe: pass@1 of {args.model[0]} per task",
        [
            (
                f"{args.problems} problems x {args.n} samples per task (in %)",
                c.md_table(
                    [
                        "task",
                        "pass@1",
                        "coverage@K",
                        "unparsed",
                        "mean completion tokens",
                        "samples/s",
                        "chosen",
                    ],
                    rows,
                ),
            ),
            (
                f"Chosen (pass@1 in [{c.pct(lo)}, {c.pct(hi)}], coverage@K > pass@1; "
                f"nearest {c.pct(middle)} first)",
                ranking,
            ),
        ],
    )


if __name__ == "__main__":
    c.main(run)
