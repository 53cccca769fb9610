"""``destination`` / ``destinations`` of a source: where its events go (one or several, fan-out)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from gateway.configbase import StrictModel

__all__ = ["Targets"]


class Targets(StrictModel):
    """A source's destinations: ``destination: audit`` or ``destinations: [audit, archive]``.

    With several, every event goes to each, and the source's ack is the worst of theirs: a
    webhook is answered 2xx, a Kafka offset committed, a poll cursor advanced only once every
    destination has the events.  After validation both are set: ``destination`` is the first
    (the one whose answers a sender sees, and the metric label of source-side counts).
    """

    # Defaults only for the type checker: _one_way fills both in, or refuses the source.
    destination: str = Field(
        default="",
        description="Name of the destination (under `destinations`) its events go to; this or `destinations`.",
    )
    destinations: list[str] = Field(
        default_factory=list,
        min_length=1,
        description="Several destinations (fan-out): each gets every event; the source's ack is the worst of theirs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_way(cls, data: Any) -> Any:
        # Before validation, as the model is frozen: both keys are filled in from the one given.
        if not isinstance(data, dict):
            return data
        one, several = data.get("destination"), data.get("destinations")
        if several is None:
            if one is None:
                # Refused after validation (_some), so that a misspelt key is reported as such
                # (with its "did you mean") rather than as a missing destination.
                return data
            return {**data, "destinations": [one]}
        if one is not None and several != [one]:
            raise ValueError("give destination or destinations, not both")
        if isinstance(several, list) and several:
            if len(set(map(str, several))) != len(several):
                raise ValueError("destinations lists a destination twice")
            return {**data, "destination": several[0]}
        return data

    @model_validator(mode="after")
    def _some(self) -> Targets:
        if not self.destinations:
            raise ValueError("give destination or destinations")
        return self

    @property
    def targets(self) -> list[str]:
        """The destination names, first the primary one."""
        return self.destinations
