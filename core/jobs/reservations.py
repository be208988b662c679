"""A budget reservation as JSON, so that a batch's estimate, held when it was submitted,
can be settled by whichever process delivers its results, hours later."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.money.budgets import Budget, Claim, Reservation, Scope
from core.money.periods import Period


def reservation_to_json(reservation: Reservation) -> dict[str, Any]:
    """``reservation`` as plain JSON values."""
    return {
        "amount": reservation.amount,
        "hold": reservation.hold,
        "claims": [
            {
                "scope": claim.scope.value,
                "subject": claim.subject,
                "period": claim.period.value,
                "window_start": claim.window_start.isoformat(),
                "limit_micros": claim.limit_micros,
                "budget": {
                    "scope": claim.budget.scope.value,
                    "subject": claim.budget.subject,
                    "period": claim.budget.period.value,
                    "limit_micros": claim.budget.limit_micros,
                },
            }
            for claim in reservation.claims
        ],
    }


def reservation_from_json(data: dict[str, Any]) -> Reservation:
    """The reservation ``reservation_to_json`` wrote."""
    claims = tuple(
        Claim(
            Scope(claim["scope"]),
            claim["subject"],
            Period(claim["period"]),
            datetime.fromisoformat(claim["window_start"]),
            claim["limit_micros"],
            Budget(
                Scope(claim["budget"]["scope"]),
                claim["budget"]["subject"],
                Period(claim["budget"]["period"]),
                claim["budget"]["limit_micros"],
            ),
        )
        for claim in data["claims"]
    )
    return Reservation(claims, data["amount"], data.get("hold"))
