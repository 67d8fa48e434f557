"""The experiment calls' part of the OpenAPI document (``stream/openapi.py`` merges it in).

Plain dicts in the shapes ``stream/openapi.py`` builds (same security, error and body
conventions), kept here so the experiment contract is described beside nothing else.
"""

from __future__ import annotations

from typing import Any

from models.experiments import MAX_ARMS, POLICY_KINDS

__all__ = ["EXPERIMENT_ROUTES", "experiment_schemas", "experiment_paths", "experiment_parameters"]

EXPERIMENT_ROUTES = (("put", "/v1/experiments/{experiment_id}"), ("get", "/v1/experiments"),
                     ("get", "/v1/experiments/{experiment_id}/results"))
_ERROR = {"$ref": "#/components/schemas/Error"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _json(_ERROR), **extra}


def experiment_schemas() -> dict[str, Any]:
    """``ExperimentInput``, ``Experiment``, ``ExperimentList``, ``ExperimentResults``, ``ExperimentTag``."""
    number = {"type": "number"}
    count = {"type": "integer", "minimum": 0}
    policy = {"type": "object", "required": ["kind"], "properties": {
        "kind": {"type": "string", "enum": list(POLICY_KINDS)},
        "version": {"type": "string", "description": "a registered model version (kind model); default: the "
                                                     "promoted one"}}}
    arm = {"type": "object", "required": ["name", "share", "policy"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 128, "not": {"enum": ["holdout", "not_eligible"]}},
        "share": {"type": "number", "minimum": 0, "maximum": 1}, "policy": policy,
        "exploration": {"type": "string", "description": "greedy, epsilon:E or softmax:T"}}}
    time = {"description": "ISO-8601 with a zone, or epoch milliseconds",
            "oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]}
    fields = {
        "holdout": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True, "default": 0},
        "arms": {"type": "array", "items": arm, "minItems": 1, "maxItems": MAX_ARMS,
                 "description": "shares add up to 1; the holdout is taken first"},
        "control": {"type": "string", "description": "the arm every other arm's uplift is measured against"},
        "attribution_window_s": {"type": "integer", "minimum": 1, "maximum": 7_776_000, "default": 86_400},
        "start": time, "end": time,
        "placement": {"type": "string", "description": "matched against the score call's `context.placement`; "
                                                       "none: every placement"},
    }
    experiment_input = {"type": "object", "required": ["arms", "control"], "properties": fields}
    experiment = {"type": "object", "required": ["id", "arms", "control", "holdout", "attribution_window_s"],
                  "properties": {"id": {"type": "string"}, **fields}}
    uplift = {"type": "object", "properties": {
        "vs": {"type": "string"}, "diff": number,
        "ci95": {"type": "array", "items": {"type": "number", "nullable": True}, "minItems": 2, "maxItems": 2}}}
    arm_result = {"type": "object", "properties": {
        "customers": count, "decisions": count, "impressions": count, "clicks": count, "redemptions": count,
        "revenue": number, "rate": {"type": "number", "nullable": True, "description": "redemptions per impression"},
        "uplift": uplift}}
    results = {"type": "object", "required": ["id", "arms", "srm", "not_eligible"], "properties": {
        "id": {"type": "string"}, "arms": {"type": "object", "additionalProperties": arm_result},
        "srm": {"type": "object", "properties": {"p_value": {"type": "number", "nullable": True}}},
        "not_eligible": count, "not_measured": count, "period": {"type": "object"}}}
    tag = {"type": "object", "nullable": True, "required": ["id", "arm"], "description": (
        "the experiment that served this decision and the customer's arm (`holdout`, `not_eligible` or an arm "
        "name); null outside any experiment"),
        "properties": {"id": {"type": "string"}, "arm": {"type": "string"}}}
    return {"ExperimentInput": experiment_input, "Experiment": experiment, "ExperimentResults": results,
            "ExperimentList": {"type": "object", "required": ["experiments", "count"], "properties": {
                "experiments": {"type": "array", "items": _ref("Experiment")}, "count": count}},
            "ExperimentTag": tag}


def _secured(op: dict[str, Any]) -> dict[str, Any]:
    op["security"] = [{"apiKey": []}, {}]
    op["responses"]["401"] = _error("a key is configured and the bearer key is missing or wrong", headers={
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="offerstream"'}})
    return op


def experiment_paths(max_body: int) -> dict[str, Any]:
    """The three experiment operations."""
    put = _secured({
        "summary": "Create or replace an experiment (every worker holds it)", "tags": ["experiments"],
        "operationId": "putExperiment", "parameters": [{"$ref": "#/components/parameters/experiment_id"}],
        "requestBody": {"required": True, "content": _json(_ref("ExperimentInput"))},
        "responses": {"200": {"description": "the stored experiment", "content": _json(_ref("Experiment"))},
                      "400": _error("bad configuration; `field` names it (shares, control, version, placement)"),
                      "413": _error(f"body over {max_body} bytes")}})
    listing = _secured({
        "summary": "Every experiment", "tags": ["experiments"], "operationId": "listExperiments",
        "responses": {"200": {"description": "by id", "content": _json(_ref("ExperimentList"))}}})
    results = _secured({
        "summary": "Live results per arm: counts, rate, uplift against control with 95 % intervals, SRM",
        "tags": ["experiments"], "operationId": "experimentResults",
        "parameters": [{"$ref": "#/components/parameters/experiment_id"},
                       {"name": "until", "in": "query", "required": False, "schema": {"type": "integer"},
                        "description": "only decisions and outcomes before this time (epoch ms)"}],
        "responses": {"200": {"description": "the results", "content": _json(_ref("ExperimentResults"))},
                      "400": _error("`until` is not epoch milliseconds"),
                      "404": _error("no such experiment")}})
    return {"/v1/experiments/{experiment_id}": {"put": put}, "/v1/experiments": {"get": listing},
            "/v1/experiments/{experiment_id}/results": {"get": results}}


def experiment_parameters() -> dict[str, Any]:
    """The ``experiment_id`` path parameter."""
    return {"experiment_id": {"name": "experiment_id", "in": "path", "required": True,
                              "schema": {"type": "string", "minLength": 1, "maxLength": 128}}}
