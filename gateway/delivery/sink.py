"""What a sink implements: the three pieces specific to its upstream, and the outcomes it names.

The split is Vector's (``RequestBuilder`` / ``Service`` / ``RetryLogic``):

* :meth:`Sink.build_request` turns the events still to send into one request;
* :meth:`Sink.call` sends it and returns the upstream's answer (a sink that must poll an
  accepted-but-not-done answer, like Pangea's 202, does it here);
* :meth:`Sink.classify` names what the answer (or the exception ``call`` raised) means, as one
  of :class:`Delivered`, :class:`Retry` or :class:`Reject`.

Everything else (batching, the retry loop and its backoff, dead-lettering exactly once,
metrics, resolving every ack) is the :class:`~gateway.delivery.driver.DeliveryDriver`'s, so a
new sink is one folder with these pieces, its configuration and its authentication.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.event import Event

__all__ = ["Delivered", "Outcome", "Reject", "Request", "Retry", "Sink"]


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


Outcome = Delivered | Retry | Reject

RequestT = TypeVar("RequestT", bound=Request)
AnswerT = TypeVar("AnswerT")


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
