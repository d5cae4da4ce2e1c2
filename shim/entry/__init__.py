"""Entry points containerd execs once per container (``start``, ``delete``, ``-info``, ``-v``).

Short-lived processes: import almost nothing (no wasmtime, protobuf runtime, OpenTelemetry)."""
