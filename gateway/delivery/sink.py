"""What a sink implements: the three pieces specific to its upstream, and the outcomes it names.

The split is Vector's (``RequestBuilder`` / ``Service`` / ``RetryLogic``):

* :meth:`Sink.build_request` turns the events still to send into one request;
* :meth:`Sink.call` sends it and returns the upstream's answer;
* :meth:`Sink.classify` names what the answer (or the exception ``call`` raised) means, as one
  of :class:`Delivered`, :class:`Retry` or :class:`Reject` (or :class:`Pending`, below).

Everything else (batching, the retry loop and its backoff, 202 polling, dead-lettering exactly
once, metrics, resolving every ack) is the :class:`~gateway.delivery.driver.DeliveryDriver`'s, so
a new sink is one folder with these pieces, its configuration and its authentication.

An upstream that may accept a request without finishing it (Pangea's 202) has its sink classify
that answer :class:`Pending`, naming the request that asks for the result, and implement
:meth:`PollingSink.classify_poll`: the driver waits, polls and gives up
(:func:`gateway.delivery.poll.poll_until_final`); the final answer is classified like a direct
one.  A sink whose upstream answers at once (Kafka) knows nothing of this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from gateway.event import Event

__all__ = [
    "Delivered",
    "Outcome",
    "Pending",
    "PollOutcome",
    "Polled",
    "PollingSink",
    "Reject",
    "Request",
    "Retry",
    "Sink",
]


class Request(Protocol):
    """A sink's request: the driver only needs its size (the ``gateway_batch_bytes`` histogram)."""

    @property
    def nbytes(self) -> int: ...


@dataclass(slots=True, frozen=True)
class Delivered:
    """The upstream has every event sent; ``results()`` gives one per-event result each
    (called only if a receiver keeps them: webhook answers do, Kafka offsets do not)."""

    results: Callable[[], Sequence[Any]]


@dataclass(slots=True, frozen=True)
class Retry:
    """Transient: send again.  ``reason`` is the ``gateway_upstream_retries_total`` label (a
    status code, ``network``, ``credentials``, ``invalid_answer``...); ``what`` a secret-free
    description for logs and the ack reason once attempts run out; ``retry_after`` the upstream's
    floor on the wait.  ``at_once``: retry without backoff and without counting an attempt, once
    per batch (a refreshed credential); asked again for the same batch, it backs off."""

    reason: str
    what: str
    retry_after: float | None = None
    at_once: bool = False


@dataclass(slots=True, frozen=True)
class Reject:
    """Refused for good.  ``errors`` maps positions in the sent events to their error dicts
    ``{code, detail, source}``; ``rest`` says what happens to the events it does not name:
    ``"resend"`` (only the named ones were bad) or ``"reject"`` (the whole request was refused:
    each gets ``others``).  ``reason`` is the dead-letter reason (``upstream_rejected``,
    ``config_error``)."""

    reason: str
    errors: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    others: list[dict[str, Any]] = field(default_factory=list)
    rest: str = "reject"


RequestT = TypeVar("RequestT", bound=Request)
AnswerT = TypeVar("AnswerT")


@dataclass(slots=True, frozen=True)
class Pending(Generic[RequestT]):
    """Accepted but not finished (an HTTP 202): the driver polls for the final answer.

    ``poll`` is the sink's request for the result (None: the answer names nothing to poll, so
    the driver gives up at once, outcome ``lost``); ``after_secs`` the upstream's floor on the
    first wait (``Retry-After``); ``request_id`` the upstream's id of the accepted request, for
    logs.  If polling gives up the batch is sent again, naming the accepted request among the
    retried ids: the upstream may have stored it, so this is at-least-once."""

    poll: RequestT | None
    after_secs: float | None = None
    request_id: str | None = None


Outcome = Delivered | Retry | Reject | Pending[Any]

PollOutcome = Literal["pending", "error", "done", "failed", "lost"]
"""The ``outcome`` label of ``gateway_upstream_polls_total`` for one poll's answer (the driver
adds ``deadline`` when it stops polling on its own)."""


@dataclass(slots=True, frozen=True)
class Polled(Generic[RequestT]):
    """What one poll's answer means.

    ``pending`` (still accepted) and ``error`` (a transient failure of the poll): poll again,
    with ``poll`` if given (the upstream may move the location) and ``after_secs`` as the
    upstream's floor on the wait.  ``done`` and ``failed``: the answer is the final one, which
    :meth:`Sink.classify` then classifies like a direct answer.  ``lost``: the upstream does
    not know the request; polling gives up."""

    outcome: PollOutcome
    poll: RequestT | None = None
    after_secs: float | None = None


class Sink(Protocol[RequestT, AnswerT]):
    """One upstream of one destination.  ``destination`` names it in metrics and logs."""

    destination: str

    async def start(self) -> None:
        """Open sessions and clients; does not fail on an unreachable upstream."""
        ...

    async def stop(self) -> None:
        """Close them; a ``call`` still running fails and :attr:`stopped` turns true."""
        ...

    @property
    def stopped(self) -> bool:
        """True when the sink cannot send (never started, or stopped)."""
        ...

    @property
    def credentials_refused(self) -> bool:
        """True while the upstream refuses the gateway's own credential (intake then answers a
        full buffer with 503, the gateway's fault, rather than 429)."""
        ...

    async def check(self) -> str | None:
        """Readiness: None when the upstream is reachable and configured, else why not; never raises."""
        ...

    def build_request(self, events: list[Event], retried_ids: Sequence[str]) -> RequestT:
        """One request carrying ``events`` (``retried_ids``: ids of earlier attempts of the batch,
        for upstreams that de-duplicate retries)."""
        ...

    async def call(self, request: RequestT, retried_ids: list[str]) -> AnswerT:
        """Send ``request``; append the id of an attempt the upstream may have stored to
        ``retried_ids``.  Raises network errors and :class:`~gateway.errors.GatewayError` s."""
        ...

    async def classify(
        self, answer: AnswerT | None, error: BaseException | None, sent: int, *, at_once_used: bool
    ) -> Outcome:
        """What ``answer`` to ``sent`` events (or the ``error`` ``call`` raised) means.  May
        update the sink's readiness (a refused credential, a configuration problem).  Raises
        ``error`` again when it is a bug rather than an upstream failure."""
        ...


@runtime_checkable
class PollingSink(Sink[RequestT, AnswerT], Protocol):
    """A sink whose upstream may answer :class:`Pending`: it classifies the answers to its polls too."""

    def classify_poll(self, answer: AnswerT | None, error: BaseException | None) -> Polled[RequestT]:
        """What the answer to the poll request just sent by :meth:`Sink.call` (or the exception
        it raised) means for the polling.  Never raises."""
        ...
