"""Helpers of the Recommend latency benchmark (bench/bench_recommend_latency.py).

- stats:    percentiles (linear interpolation, numpy's default) and latency summaries in ms.
- load:     a closed-loop load generator with bounded concurrency (one caller per thread).
- traces:   span files (KINDRED_TRACE_FILE) → per-stage inclusive / exclusive durations.
- procinfo: resident memory of a process from /proc/<pid>/status (VmRSS, VmHWM).
- machine:  a description of the machine and of the load on it while measuring.
- mesh:     retrieval_svc and ranking_svc started as real processes on free loopback ports.
- floor:    the floor measurements (empty gRPC round trips, bare Qdrant, bare ONNX, implicit ALS).
- report:   the "## Recommend latency" section of bench/RESULTS.md (read-modify-write).

Nothing here is imported by the services; grpc, onnxruntime and qdrant-edge are imported lazily by the
modules that need them, so the unit tests of stats / load / traces / procinfo / report stay fast.
"""
