"""The ``customml`` command.

  customml train --dataset NAME [--output MODEL]   train, evaluate, save, reload and time an MLP
  customml evaluate MODEL --dataset NAME           loss and metrics of a saved model on a test split
  customml predict MODEL INPUT.npy [-o OUT.npy]    predictions for the rows of a .npy file
  customml export MODEL --onnx OUT                 the model as ONNX
  customml quantize MODEL --calibration X.npy -o OUT   an int8 copy of the model and its report
  customml prune MODEL --sparsity S -o OUT         prune (and fine-tune) a saved model, compare it with the dense one
  customml optimize MODEL --dataset NAME -o OUT    the fastest model within an accuracy budget
  customml info [MODEL]                            a model file's summary, or the build information
  customml serve MODEL_OR_REPOSITORY               serve models over the V2 inference protocol (docs/serving.md)

Errors are one line on stderr starting with "error:" and exit status 2; ``train
--min-accuracy`` exits with 1 when the test accuracy falls short.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from typing import List, Optional

import numpy as np

from . import _cli_optimize
from ._checks import argument_int, argument_number, as_features, check_finite
from ._cli_common import _fine_tuning, _fmt, _latency, _table, _variant_path
from ._safetensors import atomic_write

__all__ = ["main"]

# Per-dataset defaults for train (any flag overrides them): small datasets need more,
# smaller steps; fashion_mnist's 60,000 images reach ~0.90 in 20 epochs of 128.
_TRAIN_DEFAULTS = {"fashion_mnist": {"epochs": 20, "batch_size": 128}}
_GENERIC_DEFAULTS = {"epochs": 30, "batch_size": 32}
# Argparse types: a bad number is argparse's usage error, naming the flag and what was typed.
_POSITIVE, _FRACTION, _RATE = argument_int(1), argument_number(0.0, 1.0), argument_number(0.0, math.inf, lo_open=True)


def _compressed_variants(model, args, data, batch_size: int) -> List[tuple]:
    """(name, tag, model) of the main job's smaller models: the float model pruned
    gradually to --prune-sparsity while fine-tuning for --prune-epochs (Zhu & Gupta over the
    first half, recovery in the second, a fresh cosine decay from --lr), and an int8 copy
    (static, per channel, calibrated on 1024 training rows)."""
    import customml as cm

    (x_train, y_train), _ = data
    variants = []
    if args.prune_sparsity > 0:
        pruned = cm.io.loads(cm.io.dumps(model), device=args.device)
        steps = max(1, args.prune_epochs * -(-x_train.shape[0] // batch_size))
        callbacks = _fine_tuning(pruned, steps, args.lr, args.prune_sparsity, "global")
        pruned.fit(x_train, y_train, epochs=args.prune_epochs, batch_size=batch_size, callbacks=callbacks, verbose=0)
        cm.prune.report(pruned)  # measures dense against sparse per layer and keeps the faster
        variants.append((f"pruned {args.prune_sparsity:.0%}", "pruned", pruned))
    if args.quantize:
        variants.append(("int8", "int8", cm.quantize.int8(model, calibration=x_train[:1024])))
    return variants


def _train(args: argparse.Namespace) -> int:
    import customml as cm

    ctx = cm.distributed.init() if args.distributed else cm.distributed.context()
    if ctx.rank != 0:  # under mpirun, rank 0 reports and saves; the others train with it
        sys.stdout = open(os.devnull, "w")  # for the rest of the process
        args.output = None
    (x_train, y_train), (x_test, y_test) = cm.datasets.load(args.dataset)
    defaults = _TRAIN_DEFAULTS.get(args.dataset, _GENERIC_DEFAULTS)
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    args.prune_epochs = epochs if args.prune_epochs is None else args.prune_epochs
    batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    classes = int(max(y_train.max(), y_test.max())) + 1
    layers: List[cm.layers.Layer] = []
    for units in args.hidden:
        layers.append(cm.layers.Dense(units, activation=args.activation))
        if args.dropout > 0:
            layers.append(cm.layers.Dropout(args.dropout))
    layers.append(cm.layers.Dense(classes))
    model = cm.Sequential(layers, input_dim=x_train.shape[1], device=args.device, seed=args.seed)
    # A cosine decay of the learning rate over the whole run (Keras' CosineDecay).
    n_fit = x_train.shape[0] - int(x_train.shape[0] * args.validation_split)
    steps = max(1, epochs * -(-n_fit // (batch_size * ctx.size)))  # a step takes a batch per rank
    lr = cm.schedules.CosineDecay(args.lr, steps) if args.schedule == "cosine" else args.lr
    optimizers = {
        "adamw": lambda: cm.optimizers.AdamW(lr, weight_decay=args.weight_decay),
        "adam": lambda: cm.optimizers.Adam(lr),
        "sgd": lambda: cm.optimizers.SGD(lr, momentum=0.9, nesterov=True),
    }
    if args.optimizer not in optimizers:
        raise ValueError(f"unknown optimizer {args.optimizer!r}; expected one of {', '.join(optimizers)}")
    model.compile(
        optimizer=optimizers[args.optimizer](),
        loss=cm.losses.SoftmaxCrossEntropy(label_smoothing=args.label_smoothing),
        metrics=["accuracy"],
        precision=args.precision,
        cuda_graph=args.cuda_graph,
    )
    print(
        f"customml {cm.__version__} | {args.dataset}: {x_train.shape[0]} train / {x_test.shape[0]} test, "
        f"{x_train.shape[1]} features, {classes} classes | gemm {cm.build_info()['kernels']['gemm']}, "
        f"{cm.get_num_threads()} thread(s)"
    )
    model.summary()
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=args.validation_split,
        verbose=2 if args.verbose else 0,
    )
    train_seconds = time.perf_counter() - start
    result = model.evaluate(x_test, y_test)
    p50, p99 = _latency(model, np.ascontiguousarray(x_test[:1]))
    rows = [
        ("test loss", _fmt(result["loss"])),
        ("test accuracy", _fmt(result["accuracy"])),
        ("training time", f"{train_seconds:.1f} s ({epochs} epochs of batch {batch_size})"),
        ("predict batch-1", f"p50 {p50:.1f} us, p99 {p99:.1f} us"),
    ]
    record = {
        "dataset": args.dataset,
        "test_loss": result["loss"],
        "test_accuracy": result["accuracy"],
        "train_seconds": train_seconds,
        "predict_p50_us": p50,
        "predict_p99_us": p99,
    }
    if args.output:
        model.save(args.output)
        reloaded = cm.load(args.output, device=args.device)
        # the file is the model: the reloaded copy predicts the same bits
        same = np.array_equal(reloaded.predict(x_test), model.predict(x_test))
        if not same:
            raise RuntimeError(f"{args.output}: the reloaded model predicts differently")
        rows.append(("saved", f"{args.output} ({os.path.getsize(args.output):,} bytes), reloaded: same predictions"))
        record["output"] = args.output
    print(
        f"test loss {result['loss']:.4f} | test accuracy {result['accuracy']:.4f} | "
        f"trained in {train_seconds:.1f}s | predict batch-1 p50 {p50:.1f} us, p99 {p99:.1f} us"
    )
    print(_table(rows))
    variants = _compressed_variants(model, args, ((x_train, y_train), (x_test, y_test)), batch_size)
    if variants:
        batch = np.ascontiguousarray(x_test[:128])
        compare = [("model", "test accuracy", "file (no optimizer)", "batch-1 p50", "batch-128 p50")]
        record["variants"] = {}
        for name, tag, m in [("float32", None, model)] + variants:
            accuracy = m.evaluate(x_test, y_test)["accuracy"]
            size = len(cm.io.dumps(m))
            b1, b128 = _latency(m, np.ascontiguousarray(x_test[:1]))[0], _latency(m, batch)[0]
            if tag is not None and args.output:
                path = _variant_path(args.output, tag)
                m.save(path)
                if not np.array_equal(cm.load(path, device=args.device).predict(x_test), m.predict(x_test)):
                    raise RuntimeError(f"{path}: the reloaded model predicts differently")
                name = f"{name} ({path})"
            compare.append((name, f"{accuracy:.4f}", f"{size:,} B", f"{b1:.1f} us", f"{b128:.1f} us"))
            record["variants"][tag or "float32"] = {
                "test_accuracy": accuracy,
                "file_bytes": size,
                "predict_b1_us": b1,
                "predict_b128_us": b128,
            }
        widths = [max(len(row[c]) for row in compare) for c in range(len(compare[0]))]
        print("\n".join(("  " + "  ".join(f"{v:<{w}}" for v, w in zip(row, widths))).rstrip() for row in compare))
    if args.json:
        print(json.dumps(record))
    if args.min_accuracy is not None and result["accuracy"] < args.min_accuracy:
        print(
            f"error: test accuracy {result['accuracy']:.4f} is below --min-accuracy {args.min_accuracy}",
            file=sys.stderr,
        )
        return 1
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import customml as cm

    model = cm.load(args.model, device=args.device)
    if model._loss is None:
        raise ValueError(f"{args.model}: the model was saved uncompiled, so it has no loss to evaluate")
    _, (x_test, y_test) = cm.datasets.load(args.dataset)
    result = model.evaluate(x_test, y_test)
    print(f"{args.model} on {args.dataset} ({x_test.shape[0]} test samples)")
    print(_table([(k, _fmt(v)) for k, v in result.items()]))
    if args.json:
        print(json.dumps(result))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import customml as cm

    model = cm.load(args.model, device=args.device)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {args.input} as a .npy array: {exc}") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)  # one sample
    if not args.allow_nonfinite:
        x = as_features(x, args.input, "predict")
        check_finite(x, args.input, "predict", "--allow-nonfinite gives NaN predictions for such rows")
    if args.proba:
        result = model.predict_proba(x)
    else:
        result = model.predict(x)
        if model._loss is not None and model._loss.classification:
            # class labels: argmax of the logits, or logit > 0 for one output
            labels = (result[:, 0] > 0).astype(np.int64) if result.shape[1] == 1 else result.argmax(axis=1)
            labels[np.isnan(result).any(axis=1)] = -1  # no class for a row with NaN (--allow-nonfinite)
            result = labels
    if args.output:  # to the name given (np.save appends .npy), atomically; errors name it
        buffer = io.BytesIO()
        np.save(buffer, result)
        atomic_write(args.output, [buffer.getvalue()])
        print(f"{result.shape[0]} predictions written to {args.output}")
    else:
        np.savetxt(sys.stdout, result.reshape(result.shape[0], -1), fmt="%.6g" if result.dtype.kind == "f" else "%d")
    return 0


def _export(args: argparse.Namespace) -> int:
    import customml as cm

    model = cm.load(args.model)
    model.export_onnx(args.onnx, opset=args.opset)
    print(f"{args.onnx}: ONNX opset {args.opset}, {os.path.getsize(args.onnx):,} bytes")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    import customml as cm
    from customml import quantize

    if (args.calibration is None) == (args.dataset is None):
        raise ValueError("give the calibration data as --calibration FILE.npy or --dataset NAME (one of them)")
    model = cm.load(args.model, device=args.device)
    validation = None
    if args.calibration is not None:
        try:
            x = np.load(args.calibration, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {args.calibration} as a .npy array: {exc}") from None
    else:
        # The first rows of the training split calibrate; the test split measures.
        (x_train, _), (x_test, y_test) = cm.datasets.load(args.dataset)
        x = x_train[: args.calibration_rows]
        validation = (x_test, y_test)
    qmodel = quantize.int8(
        model,
        calibration=x,
        method=args.method,
        per_channel=not args.per_tensor,
        static=not args.dynamic,
        max_accuracy_drop=args.max_accuracy_drop,
        validation=validation,
    )
    qmodel.save(args.output)
    print(qmodel.quantization_report)
    print(f"{args.output}: {os.path.getsize(args.output):,} bytes ({args.model}: {os.path.getsize(args.model):,})")
    return 0


def _n_m(text: str) -> tuple:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--n-m must be N:M such as 2:4, got {text!r}")
    return int(parts[0]), int(parts[1])


def _prune(args: argparse.Namespace) -> int:
    import customml as cm

    if args.sparsity is None and args.structured is None and args.n_m is None:
        raise ValueError("prune needs --sparsity, --structured and/or --n-m")
    if args.sparsity is not None and args.n_m is not None:
        raise ValueError("give --sparsity or --n-m, not both")
    if args.fine_tune_epochs and args.dataset is None:
        raise ValueError("--fine-tune-epochs needs --dataset")
    n_m = _n_m(args.n_m) if args.n_m is not None else None
    model = cm.load(args.model, device=args.device)
    data = None
    if args.dataset is not None:
        if model._loss is None:
            raise ValueError(f"{args.model}: the model was saved uncompiled, so it cannot be evaluated or fine-tuned")
        data = cm.datasets.load(args.dataset)
        if data[0][0].shape[1] != model.input_dim:
            raise ValueError(
                f"{args.dataset} has {data[0][0].shape[1]} features but the model expects {model.input_dim}"
            )
    # Timed on test rows when there are some, else on zeros of the model's input size.
    sample = data[1][0][:128] if data is not None else np.zeros((128, model.input_dim), dtype=np.float32)
    sample = np.ascontiguousarray(sample)

    def measure(m) -> dict:
        record = {
            "params": int(sum(np.count_nonzero(w) for w in m.get_weights())),
            "file_bytes": len(cm.io.dumps(m)),
            "predict_b1_us": _latency(m, sample[:1])[0],
            "predict_b128_us": _latency(m, sample)[0],
        }
        if data is not None:
            record["test_accuracy"] = m.evaluate(*data[1])["accuracy"]
        return record

    dense = measure(model)
    reports = []
    if args.structured is not None:
        model = cm.prune.structured(model, args.structured)
        reports.append(model.pruning_report)
    callbacks = []
    if args.fine_tune_epochs:
        assert data is not None  # --fine-tune-epochs needs --dataset
        (x_train, y_train), _ = data
        batch_size = args.batch_size or _TRAIN_DEFAULTS.get(args.dataset, _GENERIC_DEFAULTS)["batch_size"]
        steps = args.fine_tune_epochs * -(-x_train.shape[0] // batch_size)
        callbacks = _fine_tuning(model, steps, args.lr, args.sparsity, args.scope)
    if n_m is not None:
        report = cm.prune.n_m(model, *n_m, measure=not args.fine_tune_epochs)
        if not args.fine_tune_epochs:
            reports.append(report)
    elif args.sparsity is not None and not args.fine_tune_epochs:
        reports.append(cm.prune.magnitude(model, args.sparsity, args.scope))
    if args.fine_tune_epochs:
        model.fit(
            x_train,
            y_train,
            epochs=args.fine_tune_epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            verbose=2 if args.verbose else 0,
        )
        if model._masks:
            # After the fine-tuning the weights are final: the formats are measured on them.
            reports.append(cm.prune.report(model, formats=("nm",) if n_m else None))
    model.save(args.output)
    reloaded = cm.load(args.output, device=args.device)
    if not np.array_equal(reloaded.predict(sample), model.predict(sample)):
        raise RuntimeError(f"{args.output}: the reloaded model predicts differently")
    pruned = measure(model)
    for report in reports:
        print(report)
    rows = [("", "dense -> pruned")]
    if data is not None:
        rows.append(("test accuracy", f"{dense['test_accuracy']:.4f} -> {pruned['test_accuracy']:.4f}"))
    rows += [
        ("nonzero parameters", f"{dense['params']:,} -> {pruned['params']:,}"),
        (
            "file size (no optimizer)",
            f"{dense['file_bytes']:,} -> {pruned['file_bytes']:,} bytes "
            f"({dense['file_bytes'] / pruned['file_bytes']:.1f}x smaller)",
        ),
        (
            "predict batch-1 p50",
            f"{dense['predict_b1_us']:.1f} -> {pruned['predict_b1_us']:.1f} us "
            f"({dense['predict_b1_us'] / pruned['predict_b1_us']:.2f}x)",
        ),
        (
            "predict batch-128 p50",
            f"{dense['predict_b128_us']:.1f} -> {pruned['predict_b128_us']:.1f} us "
            f"({dense['predict_b128_us'] / pruned['predict_b128_us']:.2f}x)",
        ),
        ("saved", f"{args.output}, reloaded: same predictions"),
    ]
    print(_table(rows))
    if args.json:
        print(json.dumps({"dense": dense, "pruned": pruned, "output": args.output}))
    return 0


def _info(args: argparse.Namespace) -> int:
    import customml as cm

    if args.model is None:
        print(json.dumps(cm.build_info(), indent=2))
        return 0
    model = cm.load(args.model)
    print(f"{args.model}: {os.path.getsize(args.model):,} bytes")
    model.summary()
    if model._loss is not None:
        print(
            f"compiled: loss {model._loss.name}, optimizer {model._optimizer!r}, precision {model._precision}, "
            f"metrics {list(model._metrics)}"
        )
    return 0


def _serve(args) -> int:
    from .serve import serve
    from .serve.config import config_from_args

    return serve(args.path, config_from_args(args))


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the ``customml`` command (the module docstring lists its subcommands) on
    ``argv`` (default: ``sys.argv[1:]``) and returns its exit status: 0, 1 when ``train
    --min-accuracy`` falls short, 2 on an error (one line on stderr); a usage error exits
    with status 2 from argparse."""
    parser = argparse.ArgumentParser(
        prog="customml", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from .datasets import names

    train = sub.add_parser("train", help="train, evaluate, save, reload and time an MLP on a bundled dataset")
    # Not argparse choices: an unknown name goes through load's ValueError, which lists
    # the datasets and gives the exit status 2 the other input errors give.
    train.add_argument("--dataset", default="digits", help=f"{', '.join(names())} (default digits)")
    train.add_argument("--epochs", type=_POSITIVE, default=None, help="default: 20 for fashion_mnist, else 30")
    train.add_argument("--batch-size", type=_POSITIVE, default=None, help="default: 128 for fashion_mnist, else 32")
    train.add_argument("--hidden", type=_POSITIVE, nargs="*", default=[256, 256], help="hidden layer widths")
    train.add_argument("--activation", default="relu")
    train.add_argument("--dropout", type=_FRACTION, default=0.2)
    train.add_argument("--label-smoothing", type=_FRACTION, default=0.1)
    train.add_argument("--optimizer", default="adamw", help="adamw (default), adam or sgd (Nesterov momentum 0.9)")
    train.add_argument("--lr", type=_RATE, default=2e-3, help="the initial learning rate")
    train.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="cosine decay to 0 over the run (default) or a constant rate",
    )
    train.add_argument("--weight-decay", type=argument_number(0.0, math.inf), default=1e-4)
    train.add_argument("--validation-split", type=_FRACTION, default=0.1)
    train.add_argument("--precision", default="fp32", help="fp32; tf32, bf16 or fp16 on CUDA devices")
    train.add_argument("--device", default="cpu")
    train.add_argument(
        "--cuda-graph", action="store_true", help="record each training step once as a CUDA graph (cuda devices)"
    )
    train.add_argument("--seed", type=argument_int(0), default=0)
    train.add_argument("--output", "-o", default=None, help="save the model here (then reload it and check it)")
    train.add_argument(
        "--prune-sparsity",
        type=_FRACTION,
        default=0.9,
        help="then prune a copy gradually to this sparsity while fine-tuning it (0: skip)",
    )
    train.add_argument(
        "--prune-epochs",
        type=_POSITIVE,
        default=None,
        help="epochs of that fine-tuning (default: as many as the training)",
    )
    train.add_argument(
        "--no-quantize",
        dest="quantize",
        action="store_false",
        help="skip the int8 copy (static, per channel, calibrated on 1024 training rows)",
    )
    train.add_argument(
        "--min-accuracy",
        type=argument_number(0.0, math.inf),
        default=None,
        help="exit with status 1 when the test accuracy is below this",
    )
    train.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of mpirun or srun, --batch-size per rank (docs/distributed.md)",
    )
    train.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    train.add_argument("--quiet", dest="verbose", action="store_false", help="no per-epoch lines")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="loss and metrics of a saved model on a dataset's test split")
    evaluate.add_argument("model")
    evaluate.add_argument("--dataset", required=True, help=", ".join(names()))
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    evaluate.set_defaults(func=_evaluate)

    predict = sub.add_parser("predict", help="predictions for the rows of a .npy file")
    predict.add_argument("model")
    predict.add_argument("input", help="a .npy array of shape (samples, features) or (features,)")
    predict.add_argument("--output", "-o", default=None, help="write a .npy here instead of printing")
    predict.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    predict.add_argument("--allow-nonfinite", action="store_true", help="predict rows with NaN / inf: NaN, label -1")
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(func=_predict)

    export = sub.add_parser("export", help="write a saved model as ONNX (the onnx extra)")
    export.add_argument("model")
    export.add_argument("--onnx", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=_POSITIVE, default=17)
    export.set_defaults(func=_export)

    quant = sub.add_parser("quantize", help="an int8 copy of a saved model, calibrated on data, and its report")
    quant.add_argument("model")
    quant.add_argument("--calibration", default=None, help="a .npy array of representative input rows")
    quant.add_argument(
        "--dataset",
        default=None,
        help=f"calibrate on this dataset's training rows and report accuracy on its test split ({', '.join(names())})",
    )
    quant.add_argument("--calibration-rows", type=_POSITIVE, default=1024, help="with --dataset (default 1024)")
    quant.add_argument("--method", default="minmax", help="minmax (default), percentile, mse or entropy")
    quant.add_argument("--dynamic", action="store_true", help="quantize inputs per row at run time")
    quant.add_argument("--per-tensor", action="store_true", help="one weight scale per layer, not per channel")
    quant.add_argument(
        "--max-accuracy-drop",
        type=argument_number(0.0, 1.0, hi_open=False),
        default=None,
        help="with --dataset: layers fall back to float32 until the accuracy drop (a fraction) fits",
    )
    quant.add_argument("--device", default="cpu")
    quant.add_argument("--output", "-o", required=True, help="the quantized model file to write")
    quant.set_defaults(func=_quantize)

    prune = sub.add_parser("prune", help="prune a saved model (and fine-tune it), then compare it with the dense one")
    prune.add_argument("model")
    prune.add_argument(
        "--sparsity", type=_FRACTION, default=None, help="unstructured magnitude pruning to this sparsity"
    )
    prune.add_argument(
        "--scope",
        choices=("layer", "global"),
        default="layer",
        help="the sparsity per layer (default) or over all layers together",
    )
    prune.add_argument(
        "--structured",
        type=_FRACTION,
        default=None,
        metavar="FRACTION",
        help="first remove this fraction of every hidden layer's neurons",
    )
    prune.add_argument("--n-m", default=None, metavar="N:M", help="semi-structured N:M sparsity, e.g. 2:4")
    prune.add_argument(
        "--fine-tune-epochs",
        type=argument_int(0),
        default=0,
        help="fine-tune on --dataset; --sparsity is then reached gradually (Zhu & Gupta)",
    )
    prune.add_argument("--dataset", default=None, help="evaluate (and fine-tune) on this dataset")
    prune.add_argument("--batch-size", type=_POSITIVE, default=None, help="fine-tuning batch size (train's default)")
    prune.add_argument("--lr", type=_RATE, default=2e-3, help="the fine-tuning's initial learning rate")
    prune.add_argument("--device", default="cpu")
    prune.add_argument("--output", "-o", required=True, help="save the pruned model here")
    prune.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    prune.add_argument("--quiet", dest="verbose", action="store_false", help="no per-epoch lines")
    prune.set_defaults(func=_prune)

    info = sub.add_parser("info", help="a model file's summary, or without one the build information")
    info.add_argument("model", nargs="?", default=None)
    info.set_defaults(func=_info)
    _cli_optimize.add_command(sub)

    from .serve.config import add_arguments as serve_arguments

    serve = sub.add_parser(
        "serve", help="serve models over the Open Inference Protocol (V2) REST API (the serve extra)"
    )
    serve_arguments(serve)
    serve.set_defaults(func=_serve)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (customml predict ... | head): not an error of ours; quiet the
        # interpreter's own flush of stdout at exit.
        sys.stdout = open(os.devnull, "w")
        return 0
    except (ValueError, TypeError, ImportError, OSError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
