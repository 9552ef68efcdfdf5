"""Named limits with units, in one place. Nothing else in the package hides a magic number."""

KiB = 1024
MiB = 1024**2
GiB = 1024**3

max_output_bytes = 10 * MiB
"""Default cap on each of stdout and stderr kept per attempt (head plus tail)."""

output_head_fraction = 0.25
"""Share of the output cap kept from the start of a stream; the rest is the tail."""

max_event_line_bytes = 64 * KiB
"""A harness event line longer than this is dropped and counted as oversized."""

max_events = 10_000
"""Events beyond this count are dropped and counted as excess."""

max_collect_bytes = 512 * MiB
"""Upper bound on the bytes copied back out of one workspace."""

host_kill_slack_s = 10.0
"""Seconds the host waits past timeout + kill grace before it kills the container itself."""

timeout_exit_codes = frozenset({124})
"""`timeout` exits 124 when it had to send the first signal."""

killed_exit_codes = frozenset({137, 143})
"""128 + SIGKILL and 128 + SIGTERM: ambiguous without elapsed time and the OOM flag."""

stream_chunk_bytes = 64 * KiB
"""Read size when streaming a container's output."""

engine_call_timeout_s = 60
"""Timeout for a single Docker API call (not for the job itself)."""

min_free_disk_bytes = 20 * GiB
"""`controller doctor` warns below this much free disk where images live."""
