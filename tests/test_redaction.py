"""poller.redaction: what counts as a secret by name, by value and in URLs."""

from __future__ import annotations

import pytest

from poller.redaction import MASK, Redactor, is_secret_name, mask_text, mask_url

SECRET_NAMES = [
    "authorization",
    "Authorization",
    "cookie",
    "Set-Cookie",
    "token",
    "access_token",
    "accessToken",
    "X-Platform-Token",
    "password",
    "db_password",
    "secret",
    "client_secret",
    "api_key",
    "apiKey",
    "X-API-Key",
    "x-api-key",
    "apikey",
    "private_key",
    "credentials",
    "signature",
]
PLAIN_NAMES = ["author", "sort_key", "key", "token_field", "token_type", "path", "count", "id"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_names_of_credentials_are_secret(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_other_names_are_kept_whole_words_only(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://svc:pw@host/x", f"http://{MASK}@host/x"),
        ("https://user@host:8443/a?b=1", f"https://{MASK}@host:8443/a?b=1"),
        ("https://h/p?token=abc&page=2", f"https://h/p?token={MASK}&page=2"),
        (
            "https://h/p?api_key=k1&sig=s1&code=c1",
            f"https://h/p?api_key={MASK}&sig={MASK}&code={MASK}",
        ),
        ("https://h/p?X-Amz-Signature=ff&limit=5", f"https://h/p?X-Amz-Signature={MASK}&limit=5"),
        ("https://h/p?session=&q=x", "https://h/p?session=&q=x"),
        ("https://h/plain", "https://h/plain"),
        ("local:///srv/in", "local:///srv/in"),  # a source's identity, its empty host kept
        ("s3:///b?token=t#frag", f"s3:///b?token={MASK}#frag"),
    ],
)
def test_urls_lose_userinfo_and_secret_query_values(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_free_text_has_its_urls_masked() -> None:
    text = "GET http://a:b@h/x?password=p1 failed; url: /y?token=t1&n=2 (retry)"
    assert mask_text(text) == (
        f"GET http://{MASK}@h/x?password={MASK} failed; url: /y?token={MASK}&n=2 (retry)"
    )


def test_values_are_masked_by_key_by_value_and_in_urls() -> None:
    redactor = Redactor(["configured-secret"])
    redactor.add("token-from-login")
    echoed = {
        "headers": {
            "Authorization": "Bearer token-from-login",
            "Cookie": "platform_session=abc123",
            "X-Platform-Token": "xyz",
            "Accept": "application/json",
        },
        "author": "Ada",
        "sort_key": "name",
        "note": "we sent configured-secret and token-from-login",
        "link": "https://u:p@h/x?sig=1",
        "items": [{"password": 5}, {"password": None}],
        "count": 3,
    }
    assert redactor.value(echoed) == {
        "headers": {
            "Authorization": MASK,
            "Cookie": MASK,
            "X-Platform-Token": MASK,
            "Accept": "application/json",
        },
        "author": "Ada",
        "sort_key": "name",
        "note": f"we sent {MASK} and {MASK}",
        "link": f"https://{MASK}@h/x?sig={MASK}",
        "items": [{"password": MASK}, {"password": None}],
        "count": 3,
    }


def test_a_secret_containing_another_is_masked_whole_and_reloads_keep_learnt_ones() -> None:
    redactor = Redactor(["abc", "abcdef"])
    assert redactor.text("x abcdef y abc") == f"x {MASK} y {MASK}"
    redactor.add("learnt-token")
    redactor.configure(["new-password"])
    assert redactor.text("abc learnt-token new-password") == f"abc {MASK} {MASK}"


def test_very_short_values_are_not_taken_for_secrets() -> None:
    assert Redactor(["ab"]).text("tab") == "tab"


def test_a_placeholder_under_a_secret_name_stays_only_when_asked() -> None:
    redactor = Redactor(["s3cr3t-value"])
    message = {"password": "${SFTP_PASSWORD}", "token": "s3cr3t-value", "api_key": "${A}b"}
    assert redactor.value(message, keep_placeholders=True) == {
        "password": "${SFTP_PASSWORD}",  # only where a worker is to find the secret
        "token": MASK,
        "api_key": MASK,  # more than a placeholder
    }
    assert redactor.value(message)["password"] == MASK
