"""The zygote the server forks before any thread, and the shim-side entry points it runs in
workload processes."""
