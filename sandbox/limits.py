"""Named limits with units, in one place.

Every bound on what a job may use, on what the host keeps of it, and on how long the host
waits for the machinery lives here. A few tuning constants that belong to one mechanism stay
beside it, named and explained (classify's clock skew, the docker backend's exec scripts).
"""

KiB = 1024
MiB = 1024**2
GiB = 1024**3

# -- what the host keeps of a job -------------------------------------------------------------

max_output_bytes = 10 * MiB
"""Default cap on each of stdout and stderr kept per attempt (head plus tail). The policy's
`output_cap` (this by default) is also the attempt's byte budget for harness events."""

output_head_fraction = 0.25
"""Share of the output cap kept from the start of a stream; the rest is the tail."""

max_event_line_bytes = 64 * KiB
"""A harness event line longer than this is dropped and counted as oversized."""

max_events = 10_000
"""Events beyond this count are dropped and counted as excess (the byte budget applies too)."""

max_collect_bytes = 512 * MiB
"""Upper bound on the bytes copied back out of one workspace."""

max_reason_chars = 300
"""Characters kept of an engine error's first line in a result's reason or a log event."""

copy_chunk_bytes = 1 * MiB
"""Read size when copying files (outputs out of a tar, data mounts into a local scratch)."""

stream_chunk_bytes = 64 * KiB
"""Read size when streaming a job's output."""

# -- timing -----------------------------------------------------------------------------------

host_kill_slack_s = 10.0
"""Seconds the host waits past timeout + kill grace before it kills the container itself."""

timeout_exit_codes = frozenset({124})
"""`timeout` exits 124 when it had to send the first signal."""

killed_exit_codes = frozenset({137, 143})
"""128 + SIGKILL and 128 + SIGTERM: ambiguous without elapsed time and the OOM flag."""

engine_call_timeout_s = 60
"""Timeout for a single Docker API call (not for the job itself)."""

# -- the docker backend's collecting exec -----------------------------------------------------

finish_tries = 10
"""Attempts at the exec that collects usage and outputs (a pid-exhausted container may refuse
the first few until the in-container timeout's group kill frees slots)."""

finish_pause_s = 0.3
"""Pause between those attempts."""

probe_output_cap = 64 * KiB
"""Bytes kept of the collecting exec's stderr (the cgroup accounting lines)."""

spool_in_memory_bytes = 32 * MiB
"""A workspace tar smaller than this is spooled in memory on its way out; larger ones on disk."""

# -- host probes ------------------------------------------------------------------------------

nvidia_smi_timeout_s = 10
"""Timeout for one nvidia-smi query."""

gpu_sample_interval_s = 0.5
"""Seconds between two GPU memory/utilization samples while a job runs."""

local_probe_timeout_s = 10
"""Timeout for the local backend's capability probes (`unshare -rn true`, say)."""

local_python_probe_timeout_s = 30
"""Timeout for checking that the interpreter imports the harness as the job's uid."""

fork_server_ready_timeout_s = 180
"""How long the first job waits for the local fork server to import its preload list (torch
from a cold disk cache can take a minute)."""

fork_server_reply_timeout_s = 30
"""How long a job waits for the fork server to say it forked it (it answers in milliseconds)."""

fork_server_stop_timeout_s = 5
"""How long closing the local backend waits for its fork server to exit before killing it."""

cgroup_kill_rounds = 50
"""Rounds of SIGKILL for what a local job left in its cgroup before the cgroup is removed."""

cgroup_kill_pause_s = 0.02
"""Pause between those rounds (a killed process leaves its cgroup as it exits)."""

reader_join_timeout_s = 5
"""How long the local backend waits for its output readers once the job's group is gone."""

min_free_disk_bytes = 20 * GiB
"""`controller doctor` warns below this much free disk where images live."""
