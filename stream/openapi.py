"""The OpenAPI 3.0.3 document of the HTTP API (served at ``/openapi.json``).

Built from small functions that return plain dicts; ``tests/unit/test_openapi.py`` validates it
against the OpenAPI 3.0 meta-schema and checks that it lists every route of ``stream/routes.py``.
Limits quoted here are the ones the parsers in ``models/`` enforce.
"""

from __future__ import annotations

from typing import Any

from stream.openapi_experiments import EXPERIMENT_ROUTES, experiment_parameters, experiment_paths, experiment_schemas

__all__ = ["build_openapi", "ROUTES"]

VERSION = "0.1.0"
FLAGS = ("profile", "personalize", "marketing", "measurement", "training", "sharing")
EVENT_TYPES = ("page_view", "search", "product_view", "add_to_cart", "remove_from_cart", "purchase",
               "return", "offer_impression", "offer_click", "offer_redeem", "offer_dismiss", "consent",
               "preference")
CHANNELS = ("web", "app", "store")
KINDS = ("discount", "bundle", "loyalty", "partner", "sponsored", "other")
GCM_FIELDS = ("analytics_storage", "ad_personalization", "ad_user_data", "ad_storage")
MAX_BODY = 4 * 1024 * 1024

# (method, path) of every operation; kept in sync with stream/routes.py by a unit test.
ROUTES = (
    ("post", "/v1/events"), ("post", "/v1/score"),
    ("put", "/v1/customers/{customer_id}/consent"),
    ("get", "/v1/customers/{customer_id}"), ("delete", "/v1/customers/{customer_id}"),
    ("put", "/v1/offers/{offer_id}"), ("get", "/v1/offers/{offer_id}"), ("get", "/v1/offers"),
    ("get", "/health"), ("get", "/metrics"), ("get", "/openapi.json"), ("get", "/demo"),
    ("get", "/sdk/offerstream.js"),
    *EXPERIMENT_ROUTES,
)

OPEN_ACCESS = ("Access: when the worker runs with `OFFERSTREAM_API_KEY` set, write, consent, erasure, "
               "catalogue and customer calls need `Authorization: Bearer <api key>`; when "
               "`OFFERSTREAM_SCORE_KEY` is set, `POST /v1/score` needs `Authorization: Bearer <score key>`. "
               "With no key configured the call is open (each secured operation therefore also lists "
               "the empty security requirement `{}`). `/health`, `/metrics`, `/openapi.json` and "
               "`/demo` are always open: they carry no customer data and no secret.")
BROWSER_ACCESS = ("Browser calls: `POST /v1/score` and `POST /v1/events` also take a customer token "
                  "(`X-Offerstream-Token`, minted by the shop's backend with `OFFERSTREAM_TOKEN_KEY`) instead "
                  "of a key. Such a call is for the token's customer only: a missing `customer_id` is "
                  "filled in, another one gets `403`, an expired, forged or malformed token `401`, and "
                  "nothing is stored. A token on any other call gets `403`. CORS headers and an `OPTIONS` "
                  "preflight answer only the origins in `OFFERSTREAM_CORS_ORIGINS`. `/sdk/offerstream.js` "
                  "(the browser kit) is open.")


# ---- schema helpers -----------------------------------------------------------------------------
def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _str(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _id(description: str) -> dict[str, Any]:
    return _str(minLength=1, maxLength=256, pattern=r"\S", description=description)


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = list(required)
    return out


def _arr(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def _num(**extra: Any) -> dict[str, Any]:
    return {"type": "number", **extra}


def _flag_map(value: dict[str, Any]) -> dict[str, Any]:
    return _obj({flag: value for flag in FLAGS}, additionalProperties=False)


# ---- request and response schemas ----------------------------------------------------------------
def _event_schemas() -> dict[str, Any]:
    item = _obj({"item_id": _id("product id"), "category": _str(), "price": _num(minimum=0),
                 "quantity": _num(minimum=0, exclusiveMinimum=True)}, ("item_id",))
    timestamp = {
        "description": "ISO-8601 with a zone, or epoch milliseconds; must lie in 1990..2100",
        "oneOf": [_str(format="date-time"),
                  {"type": "integer", "minimum": 631_152_000_000, "maximum": 4_102_444_799_999}],
    }
    props: dict[str, Any] = {
        "event_id": _id("unique; duplicates are not counted twice"),
        "type": _str(enum=list(EVENT_TYPES)),
        "customer_id": _id("the customer (also the Kafka key)"),
        "ts": _ref("Timestamp"),
        "url": _str(), "query": _str(), "category": _str(),
        "item_id": _id("product (product_view, add_to_cart, remove_from_cart)"),
        "price": _num(minimum=0), "quantity": _num(minimum=0, exclusiveMinimum=True),
        "order_id": _id("order (purchase, return)"),
        "channel": _str(enum=list(CHANNELS), default="web"),
        "items": _arr(_ref("Item"), minItems=1, maxItems=500, description="required for purchase/return"),
        "total": _num(minimum=0),
        "offer_id": _id("required for offer_* events"), "decision_id": _id("the decision that showed it"),
        "position": {"type": "integer", "minimum": 0},
        "propensity": _num(minimum=0, exclusiveMinimum=True, maximum=1),
        "consent": _ref("ConsentUpdate"),
        "exclude_categories": _arr(_str(), maxItems=500), "channels": _arr(_str(), maxItems=500),
    }
    event = _obj(props, ("event_id", "type", "customer_id", "ts"), description=(
        "One event of the event contract (DESIGN.md). Type-specific requirements: product events "
        "need `item_id`; `purchase`/`return` need `items`; `offer_*` events need `offer_id`; "
        "`consent` needs `consent`. Unknown extra fields are kept but ignored."))
    accepted = _obj({
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": _arr(_ref("Rejection")),
    }, ("accepted", "rejected"))
    rejection = _obj({"index": {"type": "integer", "minimum": 0}, "field": _str(), "error": _str()},
                     ("index", "field", "error"))
    return {"Timestamp": timestamp, "Item": item, "Event": event, "EventsAccepted": accepted,
            "Rejection": rejection}


def _consent_schemas() -> dict[str, Any]:
    update = _obj({
        "flags": _flag_map({"type": "boolean"}),
        "tcf": _str(minLength=1, description="IAB TCF v2.2 or v2.3 TC string, decoded strictly"),
        "gcm": _obj({name: _str(enum=["granted", "denied"]) for name in GCM_FIELDS},
                    additionalProperties=False, description="Google Consent Mode v2 (only restricts)"),
        "gpc": {"type": "boolean", "description": "Global Privacy Control (only restricts; also `Sec-GPC: 1`)"},
    }, additionalProperties=False, description="A flag not named keeps its value.")
    basis = _obj({
        "flags": _flag_map({"type": "boolean"}), "epoch": {"type": "integer", "minimum": 0},
        "sources": {"type": "object", "additionalProperties": _str()},
    }, ("flags", "epoch", "sources"))
    flag_list = _arr(_str(enum=list(FLAGS)))
    result = _obj({
        "customer_id": _str(), "consent": _ref("ConsentBasis"), "granted": flag_list,
        "revoked": flag_list, "ignored": flag_list, "profile_erased": {"type": "boolean"},
        "tcf_basis": _str(nullable=True, description="the TCF basis (`OFFERSTREAM_TCF_BASIS`) the call's TC "
                          "string was read under; null without a TC string"),
    }, ("customer_id", "consent", "granted", "revoked", "ignored", "profile_erased"))
    record = _obj({
        "customer_id": _str(), "consent": _ref("ConsentBasis"),
        "choices": _obj({"exclude_categories": _arr(_str()), "channels": _arr(_str()),
                         "dismissed": _arr(_str())}),
        "profile": {"type": "object", "nullable": True, "description": "the behavioural profile, if stored"},
    }, ("customer_id", "consent", "choices", "profile"))
    store = _obj({"store": _str()}, ("store",), description="one store and what was removed from it")
    receipt = _obj({
        "customer_id": _str(), "erased_at": {"type": "integer"}, "ledger_hash": _str(),
        "stores": _arr(store),
    }, ("customer_id", "erased_at", "ledger_hash", "stores"))
    return {"ConsentUpdate": update, "ConsentBasis": basis, "ConsentResult": result,
            "CustomerRecord": record, "ErasureReceipt": receipt}


def _score_schemas() -> dict[str, Any]:
    context = _obj({
        "channel": _str(enum=list(CHANNELS), default="web"), "category": _str(),
        "offer_affinity": {"type": "object", "additionalProperties": _num(),
                           "description": "offer id -> finite number"},
    })
    request = _obj({
        "customer_id": _id("the customer to score for"),
        "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
        "context": _ref("Context"),
        "candidates": _arr(_str(), maxItems=2000, description="offer ids; default: the whole catalogue"),
        "consent": _ref("ConsentUpdate"),
    }, ("customer_id",))
    offer = _obj({"offer_id": _str(), "score": _num(), "rank": {"type": "integer", "minimum": 1},
                  "reasons": _arr(_str())}, ("offer_id", "score", "rank", "reasons"))
    filtered = _obj({"offer_id": _str(), "reason": _str(description=(
        "consent:<flag>, expired, not_yet_valid, excluded_category, dismissed, daily_cap, unknown_offer"))},
        ("offer_id", "reason"))
    response = _obj({
        "decision_id": _str(), "customer_id": _str(), "personalized": {"type": "boolean"},
        "offers": _arr(_ref("ScoredOffer")), "filtered": _arr(_ref("FilteredOffer")),
        "consent_basis": _ref("ConsentBasis"), "model_version": _str(), "experiment": _ref("ExperimentTag"),
    }, ("decision_id", "customer_id", "personalized", "offers", "filtered", "consent_basis", "model_version"))
    return {"Context": context, "ScoreRequest": request, "ScoredOffer": offer, "FilteredOffer": filtered,
            "ScoreResponse": response}


def _offer_schemas() -> dict[str, Any]:
    time = {"nullable": True, "allOf": [_ref("Timestamp")]}
    common = {
        "title": _str(minLength=1, maxLength=256, pattern=r"\S"),
        "category": _str(minLength=1, maxLength=256, pattern=r"\S", default="general"),
        "kind": _str(enum=list(KINDS), default="other"),
        "discount_pct": _num(minimum=0, maximum=100, default=0),
        "valid_from": time, "valid_to": time,
        "requires": _arr(_str(enum=list(FLAGS)), description="consent flags the offer needs"),
        "max_impressions_per_day": {"type": "integer", "minimum": 1, "nullable": True},
        "attributes": {"type": "object"},
    }
    offer_input = _obj(common, description=("`valid_to` must not be before `valid_from`; the title defaults "
                                            "to the id; an `offer_id` in the body must equal the URL's"))
    offer = _obj({"offer_id": _str(), **common}, ("offer_id", "title", "category", "kind", "discount_pct",
                                                  "valid_from", "valid_to", "requires",
                                                  "max_impressions_per_day", "attributes"))
    listing = _obj({"offers": _arr(_ref("Offer")), "count": {"type": "integer", "minimum": 0}},
                   ("offers", "count"))
    return {"OfferInput": offer_input, "Offer": offer, "OfferList": listing}


def _other_schemas() -> dict[str, Any]:
    error = _obj({"error": _str(description="machine-readable code: invalid, unauthorized, not_found, ..."),
                  "detail": _str(description="what went wrong, in words"),
                  "field": _str(nullable=True, description="the offending field (validation errors)")},
                 ("error", "detail"))
    boolean = {"type": "boolean"}
    health = _obj({
        "ready": _bool("recovered, catalogue and erasure ledger loaded, archive restored"),
        "recovered": boolean, "catalogue_loaded": boolean, "erasure_ledger_loaded": boolean,
        "archive_restored": boolean, "model_loaded": boolean, "model_version": _str(),
        "model_error": _str(nullable=True), "offers": {"type": "integer", "minimum": 0},
        "assigned_partitions": _arr({"type": "integer"}), "open_access": boolean,
    }, ("ready",), description="200 when ready, 503 otherwise (same body)")
    return {"Error": error, "Health": health}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


# ---- operations ---------------------------------------------------------------------------------
def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, retry: bool = False, auth: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    if retry:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    if auth:
        out["headers"] = {"WWW-Authenticate": {"schema": _str(), "description": 'Bearer realm="offerstream"'}}
    return out


def _op(summary: str, tag: str, responses: dict[str, Any], *, key: str | None = None,
        body: dict[str, Any] | None = None, params: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "operationId": extra.pop("operation_id"),
                          "responses": dict(responses), **extra}
    if params:
        op["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if key is not None:
        op["security"] = [{key: []}, {}]
        op["responses"]["401"] = _error("a key is configured and the bearer key is missing or wrong", auth=True)
    if body is not None:
        op["responses"].setdefault("400", _error("malformed body; `field` names the offending field"))
        op["responses"]["413"] = _error(f"body over {MAX_BODY} bytes")
    return op


def _paths() -> dict[str, Any]:
    paths = {**_customer_paths(), **_catalogue_and_operations_paths(), **experiment_paths(MAX_BODY)}
    for path in ("/v1/score", "/v1/events"):
        _takes_token(paths[path]["post"])
    paths["/sdk/offerstream.js"] = {"get": _op(
        "The browser kit (JavaScript): consent from the CMP, GPC and Consent Mode; events; offers", "operations",
        {"200": {"description": "the script", "content": {"text/javascript": {"schema": _str()}}},
         "304": {"description": "the browser's copy (`If-None-Match`) is current"},
         "404": _error("the kit is not installed")}, operation_id="sdk", security=[])}
    return paths


def _takes_token(op: dict[str, Any]) -> None:
    """A call a shop's page may make with a customer token instead of a key (see BROWSER_ACCESS)."""
    key = next(iter(op["security"][0]))
    op["security"] = [{key: []}, {"customerToken": []}, {}]
    op["responses"]["401"]["description"] += "; or the customer token is expired, forged or malformed"
    op["responses"]["403"] = _error("a customer token call names another customer (`field` says where); "
                                    "nothing is stored")


def _customer_paths() -> dict[str, Any]:
    """Events, score and the customer calls."""
    unavailable = _error("this worker is recovering, or the customer's owner is not known or not answering",
                         retry=True)
    events_body = {
        "application/json": {"schema": {"oneOf": [_ref("Event"), _arr(_ref("Event"))]}},
        "application/x-ndjson": {"schema": _str(description="one event object per line")},
    }
    accepted = {"description": "at least one event was valid; invalid ones are listed in `rejected`",
                "content": _json(_ref("EventsAccepted"))}
    no_valid = _error("nothing valid: not JSON/NDJSON, or every event rejected (then also `accepted` "
                      "and `rejected`)")
    customer = ("customer_id",)
    return {
        "/v1/events": {"post": _op("Ingest one event, a JSON array of events, or NDJSON", "events",
                                   {"202": accepted, "400": no_valid}, key="apiKey", body=events_body,
                                   operation_id="postEvents")},
        "/v1/score": {"post": _op(
            "Rank offers for a customer, honouring consent", "score",
            {"200": {"description": "the decision (also written to topic `decisions`)",
                     "content": _json(_ref("ScoreResponse"))},
             "503": _error("recovering, owner unknown, or no usable model", retry=True)},
            key="scoreKey", body=_json(_ref("ScoreRequest")), params=("SecGPC",), operation_id="score")},
        "/v1/customers/{customer_id}/consent": {"put": _op(
            "Update consent; effective and durable when it returns", "customers",
            {"200": {"description": "the new consent and what changed", "content": _json(_ref("ConsentResult"))},
             "409": _error("the customer was erased in this very millisecond; retry"), "503": unavailable},
            key="apiKey", body=_json(_ref("ConsentUpdate")), params=(*customer, "SecGPC"),
            operation_id="putConsent")},
        "/v1/customers/{customer_id}": {
            "get": _op("What is stored about a customer (access request)", "customers",
                       {"200": {"description": "consent, choices and profile",
                                "content": _json(_ref("CustomerRecord"))},
                        "404": _error("nothing is stored about this customer"), "503": unavailable},
                       key="apiKey", params=customer, operation_id="getCustomer"),
            "delete": _op("Erase a customer everywhere", "customers",
                          {"200": {"description": "a receipt naming each store and what was removed",
                                   "content": _json(_ref("ErasureReceipt"))}, "503": unavailable},
                          key="apiKey", params=customer, operation_id="eraseCustomer"),
        },
    }


def _catalogue_and_operations_paths() -> dict[str, Any]:
    """The catalogue and the operator's calls."""
    return {
        "/v1/offers/{offer_id}": {
            "put": _op("Create or replace an offer", "offers",
                       {"200": {"description": "the stored offer", "content": _json(_ref("Offer"))}},
                       key="apiKey", body=_json(_ref("OfferInput")), params=("offer_id",),
                       operation_id="putOffer"),
            "get": _op("One offer of the catalogue", "offers",
                       {"200": {"description": "the offer", "content": _json(_ref("Offer"))},
                        "404": _error("no such offer")}, key="apiKey", params=("offer_id",),
                       operation_id="getOffer"),
        },
        "/v1/offers": {"get": _op("The whole catalogue", "offers",
                                  {"200": {"description": "every offer, sorted by id",
                                           "content": _json(_ref("OfferList"))}}, key="apiKey",
                                  operation_id="listOffers")},
        "/health": {"get": _op("Readiness", "operations",
                               {"200": {"description": "ready", "content": _json(_ref("Health"))},
                                "503": {"description": "not ready", "content": _json(_ref("Health"))}},
                               operation_id="health", security=[])},
        "/metrics": {"get": _op("Prometheus metrics (text exposition format)", "operations",
                                {"200": {"description": "metrics",
                                         "content": {"text/plain": {"schema": _str()}}}},
                                operation_id="metrics", security=[])},
        "/openapi.json": {"get": _op("This document", "operations",
                                     {"200": {"description": "OpenAPI 3.0.3",
                                              "content": _json({"type": "object"})}},
                                     operation_id="openapi", security=[])},
        "/demo": {"get": _op("The demo page", "operations",
                             {"200": {"description": "HTML", "content": {"text/html": {"schema": _str()}}},
                              "404": _error("the demo page is not installed")},
                             operation_id="demo", security=[])},
    }


def _parameters() -> dict[str, Any]:
    path_id = {"type": "string", "minLength": 1, "maxLength": 256}
    return {
        "customer_id": {"name": "customer_id", "in": "path", "required": True, "schema": path_id},
        "offer_id": {"name": "offer_id", "in": "path", "required": True, "schema": path_id},
        "SecGPC": {"name": "Sec-GPC", "in": "header", "required": False,
                   "description": "Global Privacy Control: `1` turns `sharing` off; any other value is ignored",
                   "schema": _str()},
        **experiment_parameters(),
    }


def build_openapi(server_url: str) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document for a worker at ``server_url``."""
    schemas: dict[str, Any] = {}
    for part in (_event_schemas, _consent_schemas, _score_schemas, _offer_schemas, _other_schemas,
                 experiment_schemas):
        schemas.update(part())
    bearer = "Bearer key; enforced only when the worker is configured with `{}` (otherwise open)."
    return {
        "openapi": "3.0.3",
        "info": {"title": "offerstream", "version": VERSION, "description": (
            "Streaming, consent-aware personalization scorer. Errors are JSON `{error, detail}` "
            "(plus `field` for validation errors). Any worker answers any request: customer "
            "calls are forwarded to the owning worker. " + OPEN_ACCESS + " " + BROWSER_ACCESS)},
        "servers": [{"url": server_url}],
        "tags": [{"name": n} for n in ("events", "score", "customers", "offers", "operations", "experiments")],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "parameters": _parameters(),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": bearer.format("OFFERSTREAM_API_KEY")},
                "scoreKey": {"type": "http", "scheme": "bearer",
                             "description": bearer.format("OFFERSTREAM_SCORE_KEY")},
                "customerToken": {"type": "apiKey", "in": "header", "name": "X-Offerstream-Token",
                                  "description": "A customer token minted by the shop's backend "
                                  "(`offerstream token ID`); taken only when `OFFERSTREAM_TOKEN_KEY` is set, "
                                  "and only by the score and event calls, for the token's customer."},
            },
        },
    }
