"""The ``customml`` command: ``customml train`` trains, evaluates and reports a model on
a bundled dataset; ``customml info`` prints the build information."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

import numpy as np


def _train(args: argparse.Namespace) -> int:
    import customml as cm

    (x_train, y_train), (x_test, y_test) = cm.datasets.load(args.dataset)
    classes = int(max(y_train.max(), y_test.max())) + 1
    layers: List[cm.layers.Layer] = []
    for units in args.hidden:
        layers.append(cm.layers.Dense(units, activation=args.activation))
        if args.dropout > 0:
            layers.append(cm.layers.Dropout(args.dropout))
    layers.append(cm.layers.Dense(classes))
    model = cm.Sequential(layers, input_dim=x_train.shape[1], device=args.device, seed=args.seed)
    model.compile(optimizer=cm.optimizers.AdamW(args.lr, weight_decay=args.weight_decay),
                  loss=cm.losses.SoftmaxCrossEntropy(label_smoothing=args.label_smoothing), metrics=["accuracy"])
    print(f"customml {cm.__version__} | {args.dataset}: {x_train.shape[0]} train / {x_test.shape[0]} test, "
          f"{x_train.shape[1]} features, {classes} classes | gemm {cm.build_info()['kernels']['gemm']}")
    model.summary()
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, validation_split=args.validation_split,
              verbose=2 if args.verbose else 0)
    train_seconds = time.perf_counter() - start
    result = model.evaluate(x_test, y_test)
    sample = np.ascontiguousarray(x_test[:1])
    out = np.empty((1, classes), dtype=np.float32)
    for _ in range(200):  # warm-up: caches, workspace pool
        model.predict(sample, out=out)
    times = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        model.predict(sample, out=out)
        times.append(time.perf_counter_ns() - t0)
    p50, p99 = np.percentile(times, [50, 99]) / 1000.0
    print(f"test loss {result['loss']:.4f} | test accuracy {result['accuracy']:.4f} | "
          f"trained in {train_seconds:.1f}s | predict batch-1 p50 {p50:.1f} us, p99 {p99:.1f} us")
    if args.json:
        print(json.dumps({"dataset": args.dataset, "test_loss": result["loss"], "test_accuracy": result["accuracy"],
                          "train_seconds": train_seconds, "predict_p50_us": p50, "predict_p99_us": p99}))
    if args.min_accuracy is not None and result["accuracy"] < args.min_accuracy:
        print(f"error: test accuracy {result['accuracy']:.4f} is below --min-accuracy {args.min_accuracy}",
              file=sys.stderr)
        return 1
    return 0


def _info(args: argparse.Namespace) -> int:
    import customml as cm

    print(json.dumps(cm.build_info(), indent=2))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="customml", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, evaluate and time an MLP on a bundled dataset")
    from .datasets import names

    # Not argparse choices: an unknown name goes through load's ValueError, which lists
    # the datasets and gives the exit status 2 the other input errors give.
    train.add_argument("--dataset", default="digits", help=f"{', '.join(names())} (default digits)")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--hidden", type=int, nargs="*", default=[256, 256], help="hidden layer widths")
    train.add_argument("--activation", default="relu")
    train.add_argument("--dropout", type=float, default=0.2)
    train.add_argument("--label-smoothing", type=float, default=0.1)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--validation-split", type=float, default=0.1)
    train.add_argument("--device", default="cpu")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--min-accuracy", type=float, default=None,
                       help="exit with status 1 when the test accuracy is below this")
    train.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    train.add_argument("--quiet", dest="verbose", action="store_false", help="no per-epoch lines")
    train.set_defaults(func=_train)

    info = sub.add_parser("info", help="print version, compiler, CPU features and kernel variants")
    info.set_defaults(func=_info)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
