"""The accounting equation of issue 16, checked on a real gateway's ``/metrics``.

Per (source, destination)::

    received + recovered = forwarded + handed_off + duplicates + rejected + refused + dropped + in_flight

``recovered``: events a disk spool held from an earlier run (a SIGKILLed one), read back.
``handed_off``: events a Kafka buffer wrote to its topic (acknowledged); the topic's Kafka
source counts them ``received`` under its own name (see :func:`group_handed_off`).
``in_flight`` is the ``gateway_events_in_flight_events`` gauge; at a quiescent moment it is 0.
Every ``reason`` label of the accounting metrics must be in the one vocabulary
(:class:`gateway.telemetry.reasons.Reason`).

The gauge is kept by the same :class:`~gateway.telemetry.metrics.Account` calls that count the
other terms, so what catches a missed or doubled count is: ``in_flight`` left above 0 at a
quiescent moment, a negative term, and the independent gauges of the buffer and the delivery
driver (at a quiescent moment both 0; at any moment the driver's events in flight are within the
accounting's, per destination).

Use :func:`assert_accounting` (a scraped exposition) or :func:`scrape_and_check` (an admin URL).
On failure the message prints every term of every pair.
"""

from __future__ import annotations

from collections import defaultdict

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.reasons import Reason

RECEIVED_SIDE = {
    "gateway_events_received_total": "received",
    "gateway_events_recovered_total": "recovered",
}
RESOLVED_SIDE = {
    "gateway_events_forwarded_total": "forwarded",
    "gateway_events_handed_off_total": "handed_off",
    "gateway_duplicates_dropped_total": "duplicates",
    "gateway_events_rejected_total": "rejected",
    "gateway_events_refused_total": "refused",
    "gateway_events_dropped_total": "dropped",
    "gateway_events_in_flight_events": "in_flight",
}
TERMS = (*RECEIVED_SIDE.values(), *RESOLVED_SIDE.values())
REASON_METRICS = (
    "gateway_events_rejected_total",
    "gateway_events_refused_total",
    "gateway_events_dropped_total",
    "gateway_deadletters_total",
    "gateway_kafka_deadlettered_total",
    "gateway_intake_requests_refused_total",
)
VOCABULARY = frozenset(r.value for r in Reason)

Pair = tuple[str, str]


def accounts(exposition: str) -> dict[Pair, dict[str, float]]:
    """Every term of the equation per (source, destination) found in ``exposition``."""
    out: dict[Pair, dict[str, float]] = defaultdict(lambda: dict.fromkeys(TERMS, 0.0))
    names = {**RECEIVED_SIDE, **RESOLVED_SIDE}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            term = names.get(sample.name)
            if term is None:
                continue
            pair = (sample.labels.get("source", ""), sample.labels.get("destination", ""))
            out[pair][term] += sample.value
    return dict(out)


def delivery_gauges(exposition: str) -> dict[str, dict[str, float]]:
    """Per destination: the buffer's and the delivery driver's own gauges (not Account's)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"buffered": 0.0, "sending": 0.0})
    names = {"gateway_buffer_events": "buffered", "gateway_delivery_in_flight_events": "sending"}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in names:
                out[sample.labels.get("destination", "")][names[sample.name]] += sample.value
    return dict(out)


def reasons(exposition: str) -> dict[str, set[str]]:
    """The ``reason`` label values of each reason-labelled metric in ``exposition``."""
    out: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in REASON_METRICS and "reason" in sample.labels:
                out[sample.name].add(sample.labels["reason"])
    return dict(out)


def table(acc: dict[Pair, dict[str, float]]) -> str:
    head = f"{'source':<14} {'destination':<14} " + " ".join(f"{t:>10}" for t in TERMS) + f" {'gap':>8}"
    rows = [head]
    for (src, dst), terms in sorted(acc.items()):
        gap = _gap(terms)
        rows.append(f"{src:<14} {dst:<14} " + " ".join(f"{terms[t]:>10.0f}" for t in TERMS) + f" {gap:>8.0f}")
    return "\n".join(rows)


def _gap(terms: dict[str, float]) -> float:
    return sum(terms[t] for t in RECEIVED_SIDE.values()) - sum(terms[t] for t in RESOLVED_SIDE.values())


def assert_accounting(
    exposition: str, *, quiescent: bool = False, pairs: set[Pair] | None = None
) -> dict[Pair, dict[str, float]]:
    """Assert the equation for every pair (and ``in_flight == 0`` when ``quiescent``), every
    reason label in the vocabulary, and ``pairs`` (if given) among those accounted; returns
    the terms."""
    acc = accounts(exposition)
    problems: list[str] = []
    for pair, terms in sorted(acc.items()):
        if pair[0] == "" or pair[1] == "":
            problems.append(f"{pair}: a term without source or destination label")
        if _gap(terms) != 0:
            problems.append(f"{pair}: received + recovered - resolved - in_flight = {_gap(terms):+.0f}")
        if quiescent and terms["in_flight"] != 0:
            problems.append(f"{pair}: in_flight is {terms['in_flight']:.0f} at a quiescent moment")
        if any(v < 0 for v in terms.values()):
            problems.append(f"{pair}: a negative term")
    for dest, gauges in sorted(delivery_gauges(exposition).items()):
        accounted = sum(t["in_flight"] for (_s, d), t in acc.items() if d == dest)
        if gauges["sending"] > accounted:
            problems.append(f"{dest}: the driver has {gauges['sending']:.0f} in flight, the accounting {accounted:.0f}")
        if quiescent and (gauges["sending"] or gauges["buffered"]):
            problems.append(f"{dest}: not quiescent: {gauges}")
    if pairs is not None and not pairs <= acc.keys():
        problems.append(f"pairs never accounted: {sorted(pairs - acc.keys())}")
    for name, values in sorted(reasons(exposition).items()):
        if not values <= VOCABULARY:
            problems.append(f"{name}: reasons outside the vocabulary: {sorted(values - VOCABULARY)}")
    assert not problems, "accounting broken:\n  " + "\n  ".join(problems) + "\n" + table(acc)
    return acc


async def scrape(admin_url: str) -> str:
    """The text of ``admin_url``/metrics."""
    async with aiohttp.ClientSession() as s, s.get(admin_url.rstrip("/") + "/metrics") as r:
        assert r.status == 200, r.status
        return await r.text()


async def scrape_and_check(
    admin_url: str, *, quiescent: bool = False, pairs: set[Pair] | None = None
) -> dict[Pair, dict[str, float]]:
    """:func:`assert_accounting` on a live gateway's admin port."""
    return assert_accounting(await scrape(admin_url), quiescent=quiescent, pairs=pairs)


def sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (other labels summed over)."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def group_handed_off(expositions: list[str], buffer_source: str) -> tuple[float, float]:
    """Over a consumer group's instances (one exposition each): the events handed off to the
    Kafka buffer topic (every pair) and those the topic's Kafka source ``buffer_source`` received.

    Without faults the two are equal.  With faults the second may exceed the first, never fall
    short at a quiescent moment: a request refused after part of its messages were written is
    resent (those messages are received twice), and a message dropped (revoked, shutdown) or
    delivered but not yet committed is read again by the partition's next owner."""
    handed = received = 0.0
    for text in expositions:
        for (source, _dest), terms in accounts(text).items():
            handed += terms["handed_off"]
            if source == buffer_source:
                received += terms["received"]
    return handed, received
