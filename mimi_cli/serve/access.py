"""Who may use the server, and how much: the token check, addresses that keep failing it, whether an
address to bind reaches other machines, and the bounds on a connection."""
from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_MESSAGE_BYTES = 1 << 20  # a larger message is closed with 1009 (--max-message-bytes)
IDLE_TIMEOUT_S = 10.0  # a stream that completes no frame for this long is closed with 4408 (--idle-timeout)


class FailedTokens:
    """Client addresses that gave a wrong token: `limit` failures within `window_s` lock the address
    out for `lockout_s`, so guessing the token takes years instead of minutes. At most
    `max_addresses` are remembered (the oldest are forgotten first), so rotating addresses costs
    memory no more than that."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, lockout_s: float = 60.0,
                 max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.lockout_s = limit, window_s, lockout_s
        self.max_addresses, self.clock = max_addresses, clock
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.locked_until: dict[str, float] = {}

    def wait_s(self, address: str) -> float:
        """How long `address` is still locked out (0 if it is not)."""
        until = self.locked_until.get(address, 0.0)
        left = until - self.clock()
        if left <= 0 and until:
            del self.locked_until[address]
        return max(0.0, left)

    def failed(self, address: str) -> None:
        now = self.clock()
        times = self.failures.pop(address, None) or deque()
        times.append(now)
        while times and times[0] < now - self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            self.locked_until[address] = now + self.lockout_s
            times.clear()
        self.failures[address] = times  # most recent last
        while len(self.failures) > self.max_addresses:
            old, _ = self.failures.popitem(last=False)
            self.locked_until.pop(old, None)


def token_matches(given: str | None, token: str) -> bool:
    """Whether `given` is the token (compared in constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def given_token(query, headers) -> str | None:
    """The token a request carries: `Authorization: Bearer SECRET`, else `?token=SECRET`."""
    auth = headers.get("Authorization", "")
    return auth[len("Bearer "):] if auth.startswith("Bearer ") else query.get("token")


def reaches_other_machines(host: str) -> bool:
    """Whether binding `host` takes clients from other machines (anything but a loopback address)."""
    if host in ("localhost", "ip6-localhost"):
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return True
