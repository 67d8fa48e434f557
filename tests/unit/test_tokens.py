"""Signed customer tokens (issue 16, item 3): mint, verify, the CLI, the settings, the README recipe."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from models.errors import InvalidToken, TokenExpired, TokenForged, TokenScope
from models.tokens import MAX_TTL_S, claim, claim_all, mint, token_key, verify
from offerstream.cli import main
from stream.settings import load_settings

KEY = b"0123456789abcdef-offerstream"
NOW = 1_780_000_000
README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_minted_token_verifies_to_its_customer_until_it_expires() -> None:
    token = mint("customer A", KEY, ttl_s=60, now_s=NOW)
    assert verify(token, KEY, now_s=NOW) == "customer A"
    assert verify(token, KEY, now_s=NOW + 59) == "customer A"
    with pytest.raises(TokenExpired, match="expired"):
        verify(token, KEY, now_s=NOW + 60)


def test_another_key_or_an_altered_payload_is_forged() -> None:
    token = mint("A", KEY, now_s=NOW)
    with pytest.raises(TokenForged):
        verify(token, b"another key, also long enough", now_s=NOW)
    payload, signature = token.split(".")
    other = mint("B", KEY, now_s=NOW).split(".")[0]
    with pytest.raises(TokenForged):
        verify(f"{other}.{signature}", KEY, now_s=NOW)  # B's claims under A's signature
    with pytest.raises(TokenForged):  # a longer expiry written in by hand
        raw = base64.urlsafe_b64encode(b'{"sub":"A","exp":9999999999}').rstrip(b"=").decode()
        verify(f"{raw}.{signature}", KEY, now_s=NOW)


@pytest.mark.parametrize("bad", ["", "abc", "a.b.c", "a b.c", "a=.b", "é.x", "x" * 3000, ".sig", "payload."])
def test_malformed_tokens_are_invalid_not_forged(bad: str) -> None:
    with pytest.raises(InvalidToken) as excinfo:
        verify(bad, KEY, now_s=NOW)
    assert type(excinfo.value) is InvalidToken


def test_a_signed_payload_without_sub_or_exp_is_malformed() -> None:
    import hashlib
    import hmac

    payload = base64.urlsafe_b64encode(b'{"sub":"A"}').rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(hmac.new(KEY, payload.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="exp"):
        verify(f"{payload}.{sig}", KEY, now_s=NOW)


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL_S + 1])
def test_mint_refuses_a_ttl_out_of_range(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl"):
        mint("A", KEY, ttl_s=ttl)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        token_key("short")
    assert token_key("x" * 16) == b"x" * 16


def test_claim_fills_the_customer_and_refuses_another() -> None:
    assert claim({"k": 2}, "A") == {"k": 2, "customer_id": "A"}
    assert claim({"customer_id": "A"}, "A") == {"customer_id": "A"}
    with pytest.raises(TokenScope) as excinfo:
        claim({"customer_id": "B"}, "A")
    assert excinfo.value.field == "customer_id"
    with pytest.raises(TokenScope) as batch:
        claim_all([{"type": "page_view"}, {"customer_id": "A"}, {"customer_id": "B"}], "A")
    assert batch.value.field == "[2].customer_id"
    assert claim_all([{"type": "page_view"}, 7], "A") == [{"type": "page_view", "customer_id": "A"}, 7]


def test_cli_prints_a_token_the_server_accepts(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OFFERSTREAM_TOKEN_KEY", KEY.decode())
    assert main(["token", "c-42", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    assert verify(token, KEY) == "c-42"
    assert verify(token, KEY, now_s=__import__("time").time() + 119) == "c-42"
    with pytest.raises(TokenExpired):
        verify(token, KEY, now_s=__import__("time").time() + 121)


def test_cli_without_the_key_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OFFERSTREAM_TOKEN_KEY", raising=False)
    with pytest.raises(SystemExit) as excinfo:
        main(["token", "c-42"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert "OFFERSTREAM_TOKEN_KEY is not set" in err and err.count("\n") == 1


def test_settings_read_the_key_and_origins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    monkeypatch.setenv("OFFERSTREAM_TOKEN_KEY", KEY.decode())
    monkeypatch.setenv("OFFERSTREAM_CORS_ORIGINS", "https://shop.example, http://localhost:8000/")
    settings = load_settings(data_dir=tmp_path)
    assert settings.token_key == KEY
    assert settings.cors_origins == ("https://shop.example", "http://localhost:8000")
    assert KEY.decode() not in repr(settings)
    monkeypatch.setenv("OFFERSTREAM_CORS_ORIGINS", "shop.example")
    with pytest.raises(ValueError, match="OFFERSTREAM_CORS_ORIGINS"):
        load_settings(data_dir=tmp_path)
    monkeypatch.delenv("OFFERSTREAM_CORS_ORIGINS")
    monkeypatch.setenv("OFFERSTREAM_TOKEN_KEY", "short")
    with pytest.raises(ValueError, match="OFFERSTREAM_TOKEN_KEY"):
        load_settings(data_dir=tmp_path)


def _readme_recipe() -> str:
    text = README.read_text()
    section = text[text.index("## On your web page"):]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    recipe = next(b for b in blocks if "def offerstream_token" in b)
    assert len(recipe.strip().splitlines()) <= 12  # "a 10-line example for the backend"
    return recipe


def test_the_readme_backend_recipe_makes_tokens_the_server_accepts() -> None:
    scope: dict = {}
    exec(compile(_readme_recipe(), "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    token = scope["offerstream_token"]("customer A", KEY.decode(), 300)
    assert verify(token, KEY) == "customer A"
    with pytest.raises(TokenForged):
        verify(token, b"the wrong key, long enough")
