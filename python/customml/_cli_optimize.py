"""``customml optimize``: the subcommand of customml.cli that runs customml.optimize on a
saved model (kept in its own module so that cli.py stays one screen per command)."""

from __future__ import annotations

import argparse
import json


def add_command(sub) -> None:
    """Registers ``optimize`` on the subparsers ``sub`` of the customml command."""
    p = sub.add_parser(
        "optimize",
        help="the fastest (or smallest) model within an accuracy budget: int8, pruning, shrinking, distillation",
    )
    p.add_argument("model", help="a saved model (.cml)")
    p.add_argument("--dataset", required=True, help="its dataset: training split to fine-tune, test split to report")
    p.add_argument(
        "--max-accuracy-drop", type=float, default=0.5, help="points of validation accuracy it may lose (default 0.5)"
    )
    p.add_argument("--batch-size", type=int, nargs="+", default=[1], help="batch sizes to time (the first decides)")
    p.add_argument("--objective", choices=("latency", "size"), default="latency")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stop and keep the best so far")
    p.add_argument("--no-train", action="store_true", help="no fine-tuning or distillation (int8, plain pruning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="write accuracy against latency here (PNG; matplotlib)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("-o", "--output", required=True, help="where to save the chosen model")
    p.set_defaults(func=_optimize)


def _optimize(args: argparse.Namespace) -> int:
    import customml as cm

    if not 0 <= args.max_accuracy_drop < 100:
        raise ValueError(f"--max-accuracy-drop must be in [0, 100) points, got {args.max_accuracy_drop}")
    model = cm.load(args.model)
    (x, y), (xt, yt) = cm.datasets.load(args.dataset)
    # As customml train: the last 10% of the training split validates, the rest trains.
    n_val = max(1, int(x.shape[0] * 0.1))
    best, report = cm.optimize(
        model,
        validation=(x[-n_val:], y[-n_val:]),
        max_accuracy_drop=args.max_accuracy_drop / 100,
        batch_size=args.batch_size,
        objective=args.objective,
        train=None if args.no_train else (x[:-n_val], y[:-n_val]),
        time_budget_s=args.time_budget,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(report.as_dict(), default=float))
    else:
        print(report)
    if args.plot:
        report.plot(args.plot)
    best.save(args.output)

    def acc(m) -> float:
        return float((m.predict(xt).argmax(axis=1) == yt).mean())

    a0, a1 = acc(model), acc(best)
    row = next(r for r in report.rows if r["name"] == report.chosen)
    base = report.rows[0]
    b = args.batch_size[0]
    print(
        f"chosen: {report.chosen} | test accuracy {a1:.4f} ({100 * (a1 - a0):+.2f} points) | batch-{b} p50 "
        f"{row['latency_us'][b][0]:.1f} us ({base['latency_us'][b][0] / row['latency_us'][b][0]:.2f}x float32) | "
        f"{row['file_bytes']:,} bytes | saved {args.output}"
    )
    return 0
