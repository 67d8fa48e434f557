"""Bad input never gets a 5xx nor crashes a worker.

A real broker and worker; schemathesis fuzzes every operation of ``/openapi.json`` (no 5xx, and
answers conform to the document), then hand-written and hypothesis cases go over raw HTTP:
invalid JSON, NaN/Infinity, huge bodies, deep nesting, wrong types in every field, unknown event
types, timestamps far away, unknown customers and offers, odd paths and headers. At the end the
worker is still alive, ready, and its log holds no unhandled error. Hypothesis also drives the
parsers of ``models/`` directly: they raise ``ValidationError`` and nothing else.
"""

from __future__ import annotations

import copy
import http.client
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.catalog import parse_offer
from models.consent import parse_update
from models.decision import parse_score_request
from models.errors import ValidationError
from models.events import EVENT_TYPES, parse_payload
from models.tcf import decode_tc_string
from stream.embedded.process import EmbeddedBroker
from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration

MAX_BODY = 4 * 1024 * 1024
OFFERS = {
    "shoes-10": {"title": "10% off shoes", "category": "shoes", "kind": "discount", "discount_pct": 10},
    "partner-1": {"title": "Partner deal", "category": "travel", "kind": "partner", "discount_pct": 15},
}
WRONG = [None, True, False, 0, -1, 1.5, 1e308, -1e308, 2**63, "", " ", "x" * 300, "\u0000", "😀",
         [], [1, "a"], {}, {"a": {"b": 1}}, "2024-01-01", "NaN"]
NOW = int(time.time() * 1000)


class Http:
    """Raw HTTP to one worker; every answer is counted, every 5xx or hang recorded."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.statuses: Counter[int | str] = Counter()
        self.failures: list[str] = []

    def send(self, method: str, path: str, body: bytes | Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        raw = body if isinstance(body, bytes | None) else orjson.dumps(body)
        path = quote(path, safe="/%?#=&:")  # http.client sends ASCII request lines only
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=raw, headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            status, data = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            status, data = -1, f"{type(exc).__name__}: {exc}".encode()
        finally:
            conn.close()
        self.statuses[status if status > 0 else "no answer"] += 1
        if not 0 < status < 500:
            shown = (raw or b"")[:160]
            self.failures.append(f"{method} {path[:80]} body={shown!r}... -> {status} {data[:200]!r}")
        return status, data

    def take_failures(self) -> list[str]:
        out, self.failures = self.failures, []
        return out


@pytest.fixture(scope="module")
def worker(broker: EmbeddedBroker, trained_registry: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = WorkerProcess(broker.url, tmp_path_factory.mktemp("fuzz"), app_id="fuzz",
                      registry=trained_registry).start()
    for offer_id, offer in OFFERS.items():
        w.client.json("PUT", f"/v1/offers/{offer_id}", offer)
    w.client.json("PUT", "/v1/customers/known-1/consent", {"flags": {"profile": True, "personalize": True}})
    yield w
    w.stop()


@pytest.fixture(scope="module")
def api(worker: WorkerProcess) -> Http:
    return Http(worker.url)


def no_failures(api: Http, what: str) -> None:
    failures = api.take_failures()
    assert not failures, f"BUG? {what}: {len(failures)} answers were 5xx or missing:\n" + "\n".join(failures[:15])


# ---- schemathesis against the served document ---------------------------------------------------
def test_schemathesis_finds_no_server_error(worker: WorkerProcess, api: Http, tmp_path: Path) -> None:
    har = tmp_path / "fuzz.har"
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_schema_conformance,response_headers_conformance")
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{worker.url}/openapi.json", "--checks", checks,
           "--max-examples", "30", "--max-time", "50", "--seed", "20240501", "--request-timeout", "30",
           "--workers", "1", "--suppress-health-check", "all", "--no-color",
           "--report", "har", "--report-har-path", str(har)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=150, check=False)  # noqa: S603
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = Counter(e["response"]["status"] for e in entries)
    api.statuses.update({f"schemathesis {s}": n for s, n in statuses.items()})
    print(f"schemathesis: {len(entries)} requests, statuses {dict(sorted(statuses.items()))}")
    server_errors = [f'{e["request"]["method"]} {e["request"]["url"][:100]} '
                     f'body={str(e["request"].get("postData", {}).get("text", ""))[:160]!r} -> '
                     f'{e["response"]["status"]} {e["response"]["content"].get("text", "")[:120]!r}'
                     for e in entries if e["response"]["status"] >= 500]
    assert len(entries) > 500, f"schemathesis sent too few requests:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    assert not server_errors, (f"schemathesis got {len(server_errors)} server errors "
                               "(see the report: BUG in stream/handlers/ or stream/http.py):\n"
                               + "\n".join(sorted(set(server_errors))[:10]))
    assert run.returncode == 0, f"schemathesis failed:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"


# ---- raw bodies ------------------------------------------------------------------------------------
JSON_CALLS = [("POST", "/v1/events"), ("POST", "/v1/score"), ("PUT", "/v1/customers/fz-1/consent"),
              ("PUT", "/v1/offers/fz-offer")]
BAD_BODIES = [
    b"", b"   ", b"\n\n", b"{not json", b"{", b"}", b"[", b'"unterminated', b"\xff\xfe\x00", b"\x00" * 64,
    b"null", b"true", b"0", b"-1", b'"text"', b"[]", b"{}", b"[[]]", b"[null]", b"[{}]", b"[1, 2, 3]",
    b'{"customer_id": "c", "k": NaN}', b"[NaN]", b"NaN", b"Infinity", b"-Infinity", b'{"ts": Infinity}',
    b'{"k": 1e999}', b'{"k": 123456789012345678901234567890}', b'{"a": "\\ud800"}',
    b'{"customer_id": "c"}\n{"customer_id": "d"}', b"{}\n{}\n{}", b"1\n2\n", b"\n".join([b"{oops"] * 1000),
    b'{"a": 1, "a": 2}', "{\"é\": \"ü\"}".encode("latin-1"), b"\xef\xbb\xbf{}",
]


def test_invalid_json_and_non_finite_numbers(api: Http) -> None:
    for method, path in JSON_CALLS:
        for body in BAD_BODIES:
            status, _ = api.send(method, path, body)
            if body.strip() in (b"{not json", b"NaN", b"[NaN]"):
                assert status == 400, (method, path, body, status)
    no_failures(api, "invalid JSON")


def test_deep_nesting(api: Http) -> None:
    bodies = [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"[" * 100_000,
              b'{"customer_id": "c", "context": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
    deep = b"[" * 900 + b"1" + b"]" * 900  # below orjson's depth limit: decodes, then refused or ignored
    event = orjson.dumps({"event_id": "deep-1", "type": "page_view", "customer_id": "deep", "ts": NOW})
    bodies += [event[:-1] + b',"extra":' + deep + b"}", b'{"customer_id": "deep", "context": {"category": ' + deep
               + b"}}", b'{"flags": ' + deep + b"}", b'{"title": "t", "attributes": {"x": ' + deep + b"}}"]
    for method, path in JSON_CALLS:
        for body in bodies:
            api.send(method, path, body)
    no_failures(api, "deep nesting")


def test_huge_bodies_get_413_quickly(api: Http) -> None:
    over = MAX_BODY + 1024
    wrong = []
    for method, path in JSON_CALLS:
        for body in (b"[" * over, b" " * over, orjson.dumps({"title": "t", "x": "y" * over})):
            started = time.monotonic()
            status, data = api.send(method, path, body)
            assert time.monotonic() - started < 20, "a huge body must not hang the call"
            if status != 413:
                wrong.append(f"{method} {path} with {len(body)} bytes -> {status} {data[:80]!r}")
    api.take_failures()
    assert not wrong, ("BUG (stream/http.py handler: HTTPRequestEntityTooLarge has no max_size): "
                       "bodies over 4 MiB must get 413:\n" + "\n".join(wrong))


def test_large_bodies_under_the_limit(api: Http) -> None:
    """Under the 4 MiB HTTP limit but over the broker's 1 MiB message size: 4xx, never 5xx."""
    big = "x" * (2 * 1024 * 1024)
    api.send("POST", "/v1/events", {"event_id": "big-1", "type": "page_view", "customer_id": "big",
                                    "ts": NOW, "url": big})
    api.send("PUT", "/v1/offers/big-offer", {"title": "big", "attributes": {"blob": big}})
    many_bad = [{"event_id": f"b{i}", "type": "teleport", "customer_id": "c", "ts": NOW} for i in range(40_000)]
    api.send("POST", "/v1/events", many_bad)
    api.send("POST", "/v1/score", {"customer_id": "c", "candidates": [f"o{i}" for i in range(2000)], "k": 100})
    api.send("POST", "/v1/score", {"customer_id": "c", "candidates": [f"o{i}" for i in range(2001)]})
    no_failures(api, "large bodies under the HTTP limit (BUG if 5xx: the producer's 1 MiB message limit)")


# ---- wrong types in every field ---------------------------------------------------------------------
def event_examples() -> list[dict[str, Any]]:
    base = {"customer_id": "fz-1", "ts": NOW}
    item = {"item_id": "sku-1", "category": "shoes", "price": 10.0, "quantity": 1}
    by_type = {
        "page_view": {"url": "/shoes", "category": "shoes"}, "search": {"query": "red shoes"},
        "product_view": item, "add_to_cart": item, "remove_from_cart": item,
        "purchase": {"order_id": "o1", "items": [item], "total": 10.0, "channel": "store"},
        "return": {"order_id": "o1", "items": [item], "total": 10.0},
        "offer_impression": {"offer_id": "shoes-10", "decision_id": "d1", "position": 0, "propensity": 0.5},
        "offer_click": {"offer_id": "shoes-10", "decision_id": "d1"},
        "offer_redeem": {"offer_id": "shoes-10"}, "offer_dismiss": {"offer_id": "shoes-10"},
        "consent": {"consent": {"flags": {"profile": True}}},
        "preference": {"exclude_categories": ["travel"], "channels": ["web"]},
    }
    assert set(by_type) == set(EVENT_TYPES)
    return [{"event_id": f"fz-{t}", "type": t, **base, **extra} for t, extra in by_type.items()]


def mutations(obj: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Copies of ``obj`` with one field (nested too) deleted or replaced by a wrong value."""
    for name, value in obj.items():
        for wrong in [*WRONG, "__delete__"]:
            copy_ = copy.deepcopy(obj)
            if wrong == "__delete__":
                del copy_[name]
            else:
                copy_[name] = wrong
            yield copy_
        if isinstance(value, dict):
            for inner in mutations(value, (*prefix, name)):
                yield {**obj, name: inner}
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in mutations(value[0], (*prefix, name)):
                yield {**obj, name: [inner]}


def test_wrong_types_in_every_event_field(api: Http) -> None:
    n = 0
    for example in event_examples():
        status, data = api.send("POST", "/v1/events", example)
        assert status == 202, (example, data)
        for i, mutated in enumerate(mutations(example)):
            if mutated.get("event_id") == example["event_id"]:
                mutated["event_id"] = f'{example["event_id"]}-{i}'  # a fresh id, so it is not a duplicate
            api.send("POST", "/v1/events", mutated)
            n += 1
    assert n > 1000
    no_failures(api, "wrong types in events")


def test_wrong_types_in_score_consent_and_offer_bodies(api: Http) -> None:
    score = {"customer_id": "known-1", "k": 3, "candidates": ["shoes-10", "nope"],
             "context": {"channel": "app", "category": "shoes", "offer_affinity": {"shoes-10": 0.5}},
             "consent": {"flags": {"sharing": False}, "gcm": {"ad_storage": "denied"}, "gpc": True}}
    consent = {"flags": {"profile": True, "marketing": False}, "gcm": {"analytics_storage": "granted"},
               "gpc": False, "tcf": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"}
    offer = {"offer_id": "fz-offer", "title": "t", "category": "c", "kind": "bundle", "discount_pct": 5,
             "valid_from": "2024-01-01T00:00:00Z", "valid_to": NOW + 86_400_000, "requires": ["marketing"],
             "max_impressions_per_day": 3, "attributes": {"a": 1}}
    for method, path, body in (("POST", "/v1/score", score), ("PUT", "/v1/customers/fz-2/consent", consent),
                               ("PUT", "/v1/offers/fz-offer", offer)):
        for mutated in mutations(body):
            api.send(method, path, mutated)
        api.send(method, path, {**body, "unknown_field": {"x": [1]}})
    for headers in ({"Sec-GPC": "1"}, {"Sec-GPC": "yes"}, {"Sec-GPC": "\t1 "}, {"Content-Type": "text/plain"},
                    {"Content-Type": "multipart/form-data; boundary=x"}, {"Authorization": "Bearer junk"}):
        api.send("POST", "/v1/score", score, headers)
        api.send("PUT", "/v1/customers/fz-3/consent", consent, headers)
    no_failures(api, "wrong types in score/consent/offer bodies")


def test_unknown_event_types_and_far_timestamps(api: Http) -> None:
    base = {"customer_id": "fz-ts", "url": "/x"}
    for i, etype in enumerate(["teleport", "PAGE_VIEW", "page_view ", "", "__proto__", "consent\u0000", "x" * 10_000]):
        status, data = api.send("POST", "/v1/events", {**base, "event_id": f"t{i}", "type": etype, "ts": NOW})
        assert status == 400 and orjson.loads(data)["rejected"][0]["field"] == "type", (etype, data)
    for i, ts in enumerate([0, -1, 1, 10**12 * 100, 2**63 - 1, -(2**63), 1e308, -1e308, 1714557600,
                            "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "2024-01-01T00:00:00",
                            "2024-13-45T00:00:00Z", "2024-01-01T00:00:00+99:00", "", "now",
                            "2100-01-01T00:00:00Z", "1989-12-31T23:59:59Z", NOW + 10 * 365 * 86_400_000]):
        status, data = api.send("POST", "/v1/events", {**base, "event_id": f"ts{i}", "type": "page_view", "ts": ts})
        if not isinstance(ts, int) or not 631_152_000_000 <= ts < 4_102_444_800_000:
            assert status == 400 and b'"field":"ts"' in data, (ts, status, data)
    no_failures(api, "unknown types and far timestamps")


def test_unknown_customers_offers_and_odd_paths(api: Http) -> None:
    assert api.send("GET", "/v1/customers/never-seen")[0] == 404
    assert api.send("GET", "/v1/offers/never-seen")[0] == 404
    assert api.send("DELETE", "/v1/customers/never-seen")[0] == 200  # erasure is idempotent
    status, data = api.send("POST", "/v1/score", {"customer_id": "never-seen", "candidates": ["nope", "nada"]})
    assert status == 200 and {f["reason"] for f in orjson.loads(data)["filtered"]} == {"unknown_offer"}
    odd = ["%ff%fe", "%ED%A0%80", "%00", "a" * 300, "a" * 7000, "%2F..%2F..", "..", "😀", "%25", "a%20b",
           "x?y=1", "x#frag", "%u0041", "\t"]
    for cid in odd:
        for method, path, body in (("GET", f"/v1/customers/{cid}", None),
                                   ("PUT", f"/v1/customers/{cid}/consent", {"flags": {"profile": True}}),
                                   ("DELETE", f"/v1/customers/{cid}", None),
                                   ("GET", f"/v1/offers/{cid}", None),
                                   ("PUT", f"/v1/offers/{cid}", {"title": "t"}),
                                   ("POST", "/v1/score", {"customer_id": cid})):
            api.send(method, path.replace("\t", "%09"), body)
    for method in ("HEAD", "OPTIONS", "PATCH", "TRACE", "POST", "PUT", "DELETE"):
        for path in ("/health", "/metrics", "/openapi.json", "/v1/offers", "/v1/events", "/nope", "/demo"):
            api.send(method, path, b"{}")
    for path in ("/v1/offers?limit=-1", "/health?x=%ff", "/v1//customers", "//", "/v1/customers/",
                 "/demo/static/../../settings.py", "/demo/static/%2e%2e/views.py"):
        api.send("GET", path)
    no_failures(api, "unknown customers, offers and odd paths")


# ---- hypothesis over HTTP and over the parsers --------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from([*EVENT_TYPES, "web", "app", "store", "profile", "sharing"]),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["event_id", "type", "customer_id", "ts", "k", "candidates", "context", "consent",
                         "flags", "tcf", "gcm", "gpc", "items", "price", "quantity", "offer_id", "title",
                         "requires", "kind", "discount_pct", "valid_from", "valid_to", "channel",
                         "offer_affinity", "attributes", "max_impressions_per_day"]) | st.text(max_size=5),
        children, max_size=8),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(call=st.sampled_from(JSON_CALLS), body=json_values)
def test_hypothesis_json_bodies_over_http(api: Http, call: tuple[str, str], body: Any) -> None:
    api.send(call[0], call[1], body)
    no_failures(api, "hypothesis JSON bodies")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(call=st.sampled_from(JSON_CALLS), body=st.binary(max_size=300))
def test_hypothesis_raw_bytes_over_http(api: Http, call: tuple[str, str], body: bytes) -> None:
    api.send(call[0], call[1], body)
    no_failures(api, "hypothesis raw bodies")


@settings(max_examples=400, deadline=None)
@given(body=st.binary(max_size=400) | json_values.map(orjson.dumps)
       | st.lists(json_values.map(orjson.dumps), max_size=4).map(b"\n".join))
def test_parse_payload_raises_only_validation_errors(body: bytes) -> None:
    try:
        parse_payload(body)
    except ValidationError:
        pass


@settings(max_examples=400, deadline=None)
@given(body=json_values, gpc=st.booleans())
def test_body_parsers_raise_only_validation_errors(body: Any, gpc: bool) -> None:
    for parse in (lambda b: parse_score_request(b, header_gpc=gpc), lambda b: parse_update(b, header_gpc=gpc),
                  parse_offer, lambda b: parse_offer(b, "o-1")):
        try:
            parse(body)
        except ValidationError:
            pass


@settings(max_examples=400, deadline=None)
@given(tc=st.text(max_size=200) | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
                                          min_size=1, max_size=200).map(lambda s: "C" + s))
def test_tc_string_decoder_raises_only_validation_errors(tc: str) -> None:
    try:
        decode_tc_string(tc)
    except ValidationError:
        pass


# ---- and afterwards --------------------------------------------------------------------------------
def test_worker_survived_everything(worker: WorkerProcess, api: Http) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, f"the worker died:\n{worker.log_tail()}"
    status, health = worker.health()
    assert status == 200 and health["ready"], health
    status, data = api.send("POST", "/v1/score", {"customer_id": "known-1", "k": 5})  # over the fuzzed catalogue
    assert status == 200, data
    total = sum(api.statuses.values())
    print(f"fuzz: {total} requests, statuses {dict(sorted(api.statuses.items(), key=str))}")
    log = worker.log_path.read_text(errors="replace")
    # aiohttp's own refusals of malformed HTTP (BadHttpMessage: a 400) are fine; anything else is not
    blocks = [b for b in log.split("\n20")[1:] if "unhandled error" in b or "Error handling request" in b]
    unhandled = [b for b in blocks if "http_exceptions" not in b]
    causes = Counter(line for b in unhandled for line in b.splitlines() if line[:1].isalpha() and "Error" in line)
    assert not unhandled, (f"{len(unhandled)} unhandled errors in the worker log; causes: "
                           f"{dict(causes.most_common(8))}")
    no_failures(api, "after fuzzing")
