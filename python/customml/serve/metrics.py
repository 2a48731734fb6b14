"""The server's Prometheus metrics, in a registry of its own (two servers in one process
do not share counts). Names follow Triton's where prometheus_client allows: it appends
``_total`` to counters (``nv_inference_count`` is scraped as ``nv_inference_count_total``),
and durations are histograms in seconds (Triton's ``*_duration_us`` are summed
microsecond counters). Every per-model metric carries ``model`` and ``version`` labels, so
the two sides of an A/B split compare on one dashboard. docs/serving.md has the table."""

from __future__ import annotations

from typing import Dict, Set, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

# From 100 us (a 1-row predict over loopback) to 5 s (a request stuck in a long queue).
_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LABELS = ("model", "version")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._reasons: Dict[Tuple[str, str], Set[str]] = {}
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total
        r = self.registry
        self.success = Counter("nv_inference_request_success", "Inference requests answered", _LABELS, registry=r)
        self.failure = Counter(
            "nv_inference_request_failure",
            "Inference requests that failed, by reason (the HTTP status)",
            _LABELS + ("reason",),
            registry=r,
        )
        self.inferences = Counter("nv_inference_count", "Rows inferred (batch rows, summed)", _LABELS, registry=r)
        self.executions = Counter(
            "nv_inference_exec_count",
            "Model executions (batches run); rows / executions = mean batch",
            _LABELS,
            registry=r,
        )
        self.request_duration = Histogram(
            "nv_inference_request_duration_seconds",
            "Whole inference request: parse, queue, compute, encode",
            _LABELS,
            buckets=_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "nv_inference_queue_duration_seconds",
            "Time a request waited for a batch and a thread",
            _LABELS,
            buckets=_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "nv_inference_compute_infer_duration_seconds",
            "One model execution (predict on the batch)",
            _LABELS,
            buckets=_BUCKETS,
            registry=r,
        )
        self.pending = Gauge("nv_inference_pending_request_count", "Requests queued or running", _LABELS, registry=r)
        self.memory = Gauge(
            "customml_model_memory_bytes",
            "A loaded model's memory: float32 parameters and the inference plan (packed, int8, sparse copies)",
            _LABELS,
            registry=r,
        )
        self.model_ready = Gauge("customml_model_ready", "1 while the version takes traffic", _LABELS, registry=r)
        self.split_weight = Gauge(
            "customml_model_split_weight", "The version's share of unversioned traffic (A/B split)", _LABELS, registry=r
        )
        self.server_ready = Gauge("customml_server_ready", "1 when the server is ready (0 while draining)", registry=r)

    def forget(self, model: str, version: str) -> None:
        """Drops an unloaded version's series (a reloaded one starts from zero, as Triton's)."""
        for metric in (
            self.success,
            self.inferences,
            self.executions,
            self.request_duration,
            self.queue_duration,
            self.compute_duration,
            self.pending,
            self.memory,
            self.model_ready,
            self.split_weight,
        ):
            try:
                metric.remove(model, version)
            except KeyError:
                pass
        for reason in self._reasons.pop((model, version), ()):
            self.failure.remove(model, version, reason)

    def fail(self, model: str, version: str, reason: str) -> None:
        self._reasons.setdefault((model, version), set()).add(reason)
        self.failure.labels(model, version, reason).inc()
