"""An IngestionSchedule as the operator reads it: identity, the typed spec or the field
errors that stop it, and the live status. Parsed once per reconcile, then passed on."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ingestion_contract.spec import FieldError, ScheduleSpec, SpecError, parse_spec, read_field, validate_name


@dataclasses.dataclass(frozen=True)
class Problem:
    """What keeps a resource from being in line: the conditions' reason (CamelCase) and one
    line for people."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class ScheduleResource:
    body: Mapping  # as the API server returned it (owner references and events name it)
    name: str
    namespace: str
    uid: str
    generation: int
    spec: ScheduleSpec | None  # None when ``errors`` is not empty
    errors: tuple[FieldError, ...]
    enabled: bool  # read even from an invalid spec: Suspended reports it
    status: dict
    created: str | None = None  # metadata.creationTimestamp: Stale counts from it until a first success

    @classmethod
    def from_body(cls, body: Mapping) -> "ScheduleResource":
        meta = body["metadata"]
        raw = body.get("spec")
        try:
            spec, errors = parse_spec(raw), []
        except SpecError as e:
            spec, errors = None, list(e.errors)
        errors += validate_name(meta["name"])
        return cls(body=body, name=meta["name"], namespace=meta.get("namespace", ""), uid=meta.get("uid", ""),
                   generation=meta.get("generation", 0), spec=spec if not errors else None, errors=tuple(errors),
                   enabled=spec.enabled if spec else read_field(raw, "enabled"), status=dict(body.get("status") or {}),
                   created=meta.get("creationTimestamp"))

    @property
    def problem(self) -> Problem | None:
        """Every validation error as one line, or None. Its reason is theirs when they agree
        (NeverFires), else InvalidSpec."""
        if not self.errors:
            return None
        reasons = {e.reason for e in self.errors}
        return Problem(reasons.pop() if len(reasons) == 1 else "InvalidSpec", "; ".join(map(str, self.errors)))
