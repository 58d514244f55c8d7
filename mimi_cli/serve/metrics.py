"""The server's counters, in Prometheus' text format (`GET /metrics`)."""
from __future__ import annotations

import threading
from collections import Counter

STEP_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class Metrics:
    """Counts written from the event loop and the stepper thread alike."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: Counter = Counter()  # direction -> frames stepped
        self.steps: Counter = Counter()
        self.step_buckets = {d: [0] * len(STEP_BUCKETS_S) for d in ("encode", "decode")}
        self.step_sum: Counter = Counter()
        self.refusals: Counter = Counter()  # reason -> connections refused
        self.errors: Counter = Counter()  # kind -> streams ended by an error

    def stepped(self, direction: str, streams: int, seconds: float) -> None:
        with self.lock:
            if streams < 0:
                self.errors["step"] += 1
                return
            self.frames[direction] += streams
            self.steps[direction] += 1
            self.step_sum[direction] += seconds
            for i, bound in enumerate(STEP_BUCKETS_S):
                if seconds <= bound:
                    self.step_buckets[direction][i] += 1

    def refused(self, reason: str) -> None:
        with self.lock:
            self.refusals[reason] += 1

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def text(self, live: dict[str, int]) -> str:
        with self.lock:
            lines = ["# HELP mimi_live_streams Streams connected now.", "# TYPE mimi_live_streams gauge"]
            lines += [f'mimi_live_streams{{direction="{d}"}} {n}' for d, n in live.items()]
            lines += ["# HELP mimi_stream_frames_total Stream-frames stepped (a step of N streams counts N).",
                      "# TYPE mimi_stream_frames_total counter"]
            lines += [f'mimi_stream_frames_total{{direction="{d}"}} {self.frames[d]}' for d in ("encode", "decode")]
            lines += ["# HELP mimi_step_seconds Time of one batched codec step.", "# TYPE mimi_step_seconds histogram"]
            for d in ("encode", "decode"):
                for bound, count in zip(STEP_BUCKETS_S, self.step_buckets[d]):
                    lines.append(f'mimi_step_seconds_bucket{{direction="{d}",le="{bound}"}} {count}')
                lines.append(f'mimi_step_seconds_bucket{{direction="{d}",le="+Inf"}} {self.steps[d]}')
                lines.append(f'mimi_step_seconds_sum{{direction="{d}"}} {self.step_sum[d]:.6f}')
                lines.append(f'mimi_step_seconds_count{{direction="{d}"}} {self.steps[d]}')
            lines += ["# HELP mimi_refusals_total Connections refused.", "# TYPE mimi_refusals_total counter"]
            lines += [f'mimi_refusals_total{{reason="{r}"}} {n}' for r, n in sorted(self.refusals.items())]
            lines += ["# HELP mimi_errors_total Streams ended by an error.", "# TYPE mimi_errors_total counter"]
            lines += [f'mimi_errors_total{{kind="{k}"}} {n}' for k, n in sorted(self.errors.items())]
        return "\n".join(lines) + "\n"
