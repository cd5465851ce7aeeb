"""The telemetry layer: instruments shared per meter provider, weak references, fork."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import weakref

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_bounded import TraceStore, telemetry


def test_stores_given_no_provider_and_the_global_one_explicitly_all_report() -> None:
    # The global provider can be set once per process: run the scenario in a fresh one.
    script = textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from otel_bounded import TraceStore

        early = TraceStore(max_traces=1)          # before any provider is set: the proxy
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        metrics.set_meter_provider(provider)
        implicit = TraceStore(max_traces=2)       # None: the global provider
        explicit = TraceStore(max_traces=3, meter_provider=provider)
        names = set()
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "otel_bounded.trace_store.capacity":
                        for point in metric.data.data_points:
                            names.add((point.attributes["otel.component.name"], point.value))
        print(sorted(names))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    reported = dict(eval(result.stdout))
    assert sorted(reported.values()) == [1, 2, 3]
    assert "Overriding" not in result.stderr
    assert "already" not in result.stderr.lower()


def test_a_dropped_meter_provider_is_not_kept_alive() -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    store = TraceStore(meter_provider=provider)
    alive = weakref.ref(provider)
    provider.shutdown()
    del provider, store
    gc.collect()
    assert alive() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_telemetry_lock_is_held_can_create_stores() -> None:
    read_end, write_end = os.pipe()
    with telemetry._groups_lock, telemetry._component_lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                signal.alarm(20)  # a deadlocked child dies; the parent then reads nothing
                store = TraceStore(meter_provider=MeterProvider())
                os.write(write_end, store.component[telemetry.COMPONENT_NAME].encode())
            finally:
                os._exit(0)
    os.close(write_end)
    reply = os.read(read_end, 100).decode()
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert reply.startswith("otel_bounded_trace_store/")
