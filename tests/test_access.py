"""Who may call `serve` (whisper_npu.access): the names a request may give, the origins, the
key; a flag that cannot mean a host or an origin is one line."""

from __future__ import annotations

import pytest

from whisper_npu.access import Access, allowed_host, cors_origin, host_of
from whisper_npu.errors import UserError

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8000", "localhost"),
        ("LOCALHOST.", "localhost"),
        ("[::1]:8000", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("user@localhost", None),  # credentials smuggle another host past a naive split
        ("localhost:99999", None),
        ("localhost/path", None),
        ("", None),
    ],
)
def test_a_host_header_has_one_spelling_or_none(header: str, host: str | None) -> None:
    assert host_of(header) == host


def test_the_bound_address_and_added_hosts_are_answered_every_interface_names_none() -> None:
    access = Access.from_flags("192.168.1.5", ["Whisper.LAN", "[::2]"], [], None)
    assert access.host_allowed("192.168.1.5:8000") and access.host_allowed("whisper.lan")
    assert access.host_allowed("[::2]:1") and access.host_allowed("localhost")
    assert not access.host_allowed("evil.example") and not access.host_allowed("192.168.1.6")
    assert Access.from_flags("0.0.0.0", [], [], None).hosts == Access().hosts


def test_origins_of_allowed_hosts_and_cors_origins_pass() -> None:
    access = Access.from_flags("127.0.0.1", [], ["https://app.example:8443/"], None)
    assert access.cors_origins == ("https://app.example:8443",)
    assert access.origin_allowed("http://localhost:3000")
    assert access.origin_allowed("https://app.example:8443")
    assert not access.origin_allowed("https://evil.example")
    assert not access.origin_allowed("null")  # a sandboxed page or a file: no host at all
    assert Access.from_flags("127.0.0.1", [], ["*"], None).origin_allowed("https://any.where")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: allowed_host("whisper.lan:8000"), "--allow-host 'whisper.lan:8000'"),
        (lambda: allowed_host("a@b"), "expected a host name or address"),
        (lambda: cors_origin("ftp://x"), "--cors-origin 'ftp://x'"),
        (lambda: cors_origin("https://x/app"), "expected scheme://host[:port] or *"),
        (lambda: Access(api_key=""), "the API key is empty"),
    ],
)
def test_a_flag_that_means_no_host_origin_or_key_is_one_line(call, words: str) -> None:
    with pytest.raises(UserError) as refused:
        call()
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_the_key_is_compared_whole() -> None:
    access = Access(api_key="sk-abc")
    assert access.key_matches("sk-abc")
    assert not access.key_matches("sk-ab") and not access.key_matches("sk-abcd")
    assert "sk-abc" not in repr(access)
