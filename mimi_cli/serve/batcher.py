"""Many live streams through one codec: the frames of all streams that have one step together.

Streams that step together form a group with one batched state (rows in member order). In the
steady state (every client sending in real time) a group steps in place, with no copies; the
state is re-formed (`select` / `concat_states`) only when a stream joins, leaves, or falls
behind by more than `max_wait_s`, so one slow client never holds up the others. All stepping
happens on one thread (`Stepper`); the server's event loop only pushes input and takes output.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..codec import MimiCodec
from ..codec.state import concat_states
from ..spec import FRAME_SAMPLES

log = logging.getLogger("mimi_cli.serve")  # under the CLI's logger, so `mimi serve` shows it
MAX_FRAMES_PER_STEP = 16  # a stream that is behind catches up this many frames a step


def _nothing() -> None:
    pass


class Stream:
    """One client's stream as the stepper sees it: input waiting (pushed by the event loop),
    output handed to `deliver`, `done` once an ended stream's last output is out."""

    def __init__(self, deliver: Callable[[np.ndarray], None], done: Callable[[], None]) -> None:
        self.deliver, self.done = deliver, done
        self.lock = threading.Lock()
        self.ending = False  # the client said "end": what is buffered is its last input
        self.closed = False  # the client is gone: drop the stream at the next step
        self.state = None  # its own state while outside a group
        self.ready_since: float | None = None  # when its first whole frame came, while one waits

    def end(self) -> None:
        with self.lock:
            self._pad_last()
            self.ending = True
            self._mark_ready()

    def _mark_ready(self) -> None:
        if self.ready_since is None and self.frames_ready() > 0:
            self.ready_since = time.monotonic()

    # Implemented per direction; called with `lock` held.
    def frames_ready(self) -> int:
        raise NotImplementedError

    def take(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def _pad_last(self) -> None:
        pass

    @property
    def buffered(self) -> int:
        """Input waiting, in frames (whole or not): what backpressure looks at."""
        raise NotImplementedError


class EncodeStream(Stream):
    """Audio in (24 kHz mono float32, any number of samples a push), codes [K, n] out."""

    def __init__(self, num_codebooks: int, deliver, done) -> None:
        super().__init__(deliver, done)
        self.num_codebooks = num_codebooks
        self.samples = np.zeros(0, np.float32)

    def push(self, audio: np.ndarray) -> bool:
        """Adds samples; True if they complete a frame (the stepper need not wake otherwise)."""
        with self.lock:
            before = self.frames_ready()
            self.samples = np.concatenate([self.samples, audio]) if self.samples.size else audio
            self._mark_ready()
            return self.frames_ready() > before

    def frames_ready(self) -> int:
        return self.samples.size // FRAME_SAMPLES

    def take(self, n: int) -> np.ndarray:
        out, self.samples = self.samples[:n * FRAME_SAMPLES], self.samples[n * FRAME_SAMPLES:]
        return out

    def _pad_last(self) -> None:
        """The last partial frame is padded with silence, as `mimi encode` pads a file's tail."""
        rest = self.samples.size % FRAME_SAMPLES
        if rest:
            self.samples = np.concatenate([self.samples, np.zeros(FRAME_SAMPLES - rest, np.float32)])

    @property
    def buffered(self) -> float:
        return self.samples.size / FRAME_SAMPLES


class DecodeStream(Stream):
    """Frames of codes in ([K] each), audio [n * 1920] at 24 kHz out."""

    def __init__(self, num_codebooks: int, deliver, done) -> None:
        super().__init__(deliver, done)
        self.num_codebooks = num_codebooks
        self.frames: list[np.ndarray] = []

    def push(self, frames: list[np.ndarray]) -> bool:
        with self.lock:
            self.frames.extend(frames)
            self._mark_ready()
            return bool(frames)

    def frames_ready(self) -> int:
        return len(self.frames)

    def take(self, n: int) -> np.ndarray:
        out, self.frames = np.stack(self.frames[:n], axis=1), self.frames[n:]
        return out

    @property
    def buffered(self) -> float:
        return float(len(self.frames))


@dataclass
class Group:
    """Streams stepping together: `state` holds one row per member, in order."""

    make_state: Callable[[int], object]
    step: Callable[[object, list[Stream], list[np.ndarray]], list[np.ndarray]]
    members: list[Stream] = field(default_factory=list)
    state: object = None
    newcomers: list[Stream] = field(default_factory=list)  # joined, or fell behind: outside the state
    last_step_end: float = 0.0  # a wait for stragglers counts from here: frames that came during a step did not wait

    def tick(self, now: float, max_wait_s: float,
             quiet: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
             ) -> tuple[int, float, Callable[[], None]]:
        """Steps the group if it is due: every member has a frame, or one has waited `max_wait_s`;
        the step runs inside `quiet()`. Returns (stream-frames stepped, seconds the step took, a
        call that hands out the outputs)."""
        self._drop_closed()
        for s in [s for s in self.newcomers if s.ending and s.frames_ready() == 0]:  # nothing left to step
            s.closed = True
            s.done()
        self._drop_closed()
        with_frames = {id(s): s.frames_ready() for s in [*self.members, *self.newcomers]}
        waiting = [s for s in [*self.members, *self.newcomers] if with_frames[id(s)] and s.ready_since is not None]
        if not waiting:
            return 0, 0.0, _nothing
        oldest = max(min(s.ready_since for s in waiting), self.last_step_end)
        everyone = all(with_frames[id(s)] for s in self.members) and bool(self.members)
        if not everyone and now - oldest < max_wait_s:
            return 0, 0.0, _nothing
        self._regroup([s for s in self.members if with_frames[id(s)]],
                      [s for s in self.newcomers if with_frames[id(s)]])
        with_locks = self.members
        for s in with_locks:
            s.lock.acquire()
        try:
            n = min(MAX_FRAMES_PER_STEP, *(s.frames_ready() for s in self.members))
            inputs = [s.take(n) for s in self.members]
            for s in self.members:
                s.ready_since = time.monotonic() if s.frames_ready() else None
        finally:
            for s in with_locks:
                s.lock.release()
        with quiet():
            start = time.perf_counter()
            outputs = self.step(self.state, self.members, inputs)
            seconds = time.perf_counter() - start
        self.last_step_end = time.monotonic()
        members = list(self.members)

        def hand_out() -> None:
            for s, out in zip(members, outputs):
                s.deliver(out)
            self._finish_ended()

        return len(members) * n, seconds, hand_out

    def _drop_closed(self) -> None:
        if any(s.closed for s in self.members):
            keep = [i for i, s in enumerate(self.members) if not s.closed]
            self.state = self.state.select(keep) if keep else None
            self.members = [self.members[i] for i in keep]
        self.newcomers = [s for s in self.newcomers if not s.closed]

    def _regroup(self, ready_members: list[Stream], joining: list[Stream]) -> None:
        """Members without a frame leave the state (keeping their own rows); ready newcomers join."""
        if len(ready_members) < len(self.members):
            rows = {id(s): i for i, s in enumerate(self.members)}
            for s in self.members:
                if s not in ready_members:
                    s.state = self.state.select([rows[id(s)]])
                    self.newcomers.append(s)
            self.state = self.state.select([rows[id(s)] for s in ready_members]) if ready_members else None
            self.members = list(ready_members)
        if joining:
            states = ([self.state] if self.state is not None else []) + [
                s.state if s.state is not None else self.make_state(1) for s in joining]
            self.state = concat_states(states) if len(states) > 1 else states[0]
            for s in joining:
                s.state = None
                self.newcomers.remove(s)
            self.members = self.members + joining

    def _finish_ended(self) -> None:
        done = [s for s in self.members if s.ending and s.frames_ready() == 0]
        if not done:
            return
        for s in done:
            s.closed = True
            s.done()
        self._drop_closed()

    @property
    def live(self) -> int:
        return len(self.members) + len(self.newcomers)


class Stepper:
    """The thread that steps every group: encode streams in one group (codes for the largest K
    asked, each stream given its first K), decode streams in one group per K."""

    def __init__(self, codec: MimiCodec, max_wait_s: float = 0.08,
                 on_step: Callable[[str, int, float], None] | None = None) -> None:
        self.codec, self.max_wait_s = codec, max_wait_s
        self.on_step = on_step or (lambda kind, streams, seconds: None)
        self.quiet: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # around each step
        self.encode = Group(codec.init_encoder_state, self._encode)
        self.decode: dict[int, Group] = {}
        self.wakeup = threading.Condition()
        self.incoming: list[Stream] = []  # added by the event loop, taken into groups by the stepper
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="mimi-stepper", daemon=True)

    def start(self) -> None:
        """Steps on a thread of its own (a server in a thread, tests). `mimi serve` calls `run`
        on its main thread instead, where torch's parallel steps run faster (docs/design.md)."""
        self.thread.start()

    def stop(self) -> None:
        with self.wakeup:
            self.stopping = True
            self.wakeup.notify()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def add(self, stream: Stream) -> None:
        with self.wakeup:
            self.incoming.append(stream)
            self.wakeup.notify()

    def _take_incoming(self) -> None:
        """New streams into their groups (on the stepper thread, which alone touches groups)."""
        for stream in self.incoming:
            if isinstance(stream, EncodeStream):
                self.encode.newcomers.append(stream)
            else:
                group = self.decode.setdefault(stream.num_codebooks, Group(self.codec.init_decoder_state,
                                                                           self._decode))
                group.newcomers.append(stream)
        self.incoming = []

    def wake(self) -> None:
        with self.wakeup:
            self.wakeup.notify()

    @property
    def live(self) -> dict[str, int]:
        incoming = list(self.incoming)
        return {"encode": self.encode.live + sum(isinstance(s, EncodeStream) for s in incoming),
                "decode": sum(g.live for g in list(self.decode.values()))
                + sum(isinstance(s, DecodeStream) for s in incoming)}

    def run(self) -> None:
        """Steps every group until `stop`, in the calling thread."""
        self._run()

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self.wakeup:
                if self.stopping:
                    return
                self.wakeup.wait(timeout=0.01)  # woken when a frame completes; the timeout serves max_wait_s
                self._take_incoming()
            groups = [("encode", self.encode), *(("decode", g) for g in self.decode.values())]
            for kind, group in groups:
                try:
                    stepped, seconds, hand_out = group.tick(time.monotonic(), self.max_wait_s, self.quiet)
                    if stepped:
                        self.on_step(kind, stepped, seconds)  # counted before the clients see the output
                    hand_out()
                except Exception:  # a bug must not leave clients hanging: close the group's streams
                    log.exception("a %s step failed; closing its streams", kind)
                    for s in [*group.members, *group.newcomers]:
                        s.closed = True
                        s.done()
                    group.members, group.newcomers, group.state = [], [], None
                    self.on_step(kind, -1, 0.0)

    def _encode(self, state, members: list[Stream], inputs: list[np.ndarray]) -> list[np.ndarray]:
        k = max(s.num_codebooks for s in members)
        pcm = torch.from_numpy(np.stack(inputs))[:, None].to(self.codec.device)
        codes = self.codec.encode_frames(state, pcm, k).cpu().numpy()
        return [codes[i, :s.num_codebooks] for i, s in enumerate(members)]

    def _decode(self, state, members: list[Stream], inputs: list[np.ndarray]) -> list[np.ndarray]:
        codes = torch.from_numpy(np.stack(inputs)).to(self.codec.device)
        audio = self.codec.decode_frames(state, codes).float().cpu().numpy()
        return [audio[i, 0] for i in range(len(members))]
