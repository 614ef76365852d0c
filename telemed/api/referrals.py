"""Two-way referrals over HTTP."""

from __future__ import annotations

from aiohttp import web

from telemed import referrals
from telemed.api.body import Field
from telemed.api.casework import add_case_routes
from telemed.api.consults import URGENCIES

NEW_REFERRAL = [
    Field("patient_id", str, max_length=64), Field("to_institution_id", str, max_length=64),
    Field("urgency", str, choices=URGENCIES), Field("reason", str, max_length=4000),
    Field("consult_id", str, required=False, max_length=64),
]
ACTION_FIELDS = [Field("note", str, required=False, max_length=4000),
                 Field("arranged_for", str, required=False, max_length=400),
                 Field("summary", str, required=False, max_length=100_000)]


def setup(app: web.Application) -> None:
    add_case_routes(app, "referrals", referrals.CASES, referrals.create, NEW_REFERRAL,
                    ACTION_FIELDS)
