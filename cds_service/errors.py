"""The service's error types and their one JSON shape (a FHIR OperationOutcome)."""

from __future__ import annotations


class KnowledgeError(Exception):
    """A file in cards/ is missing, malformed or inconsistent; raised at start-up only."""


class CDSError(Exception):
    """A request the service refuses; rendered at the edge as an OperationOutcome."""

    def __init__(self, status: int, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def operation_outcome(message: str, code: str = "invalid", severity: str = "error") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }
