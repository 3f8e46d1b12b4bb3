"""Who may call `whisper-npu serve`, and how much one request may hold. Standard library only:
the command line reads it without the `serve` extra.

A server on localhost is reachable from every web page the user opens: DNS rebinding points a
foreign site's name at 127.0.0.1, so its page calls the server as its own origin, and any page
may post a form to it. So a request must name a host the server answers to (localhost,
127.0.0.1, ::1, the bound address, `--allow-host`), a browser's request (it has an Origin) must
come from such a host or a `--cors-origin`, and with a key every request but /health must carry
it as OpenAI's `Authorization: Bearer`. The server's guards (`whisper_npu.server`) apply this.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from whisper_npu.errors import UserError

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})  # every interface: no name of its own
API_KEY_ENV = "WHISPER_NPU_API_KEY"
ANY_ORIGIN = "*"
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's limit
# What OpenAI's 25 MB holds as 16 kHz 16-bit PCM (13.65 min): a compressed upload of the same
# size can decode to hours, gigabytes of samples before the first window runs.
MAX_AUDIO_SECONDS = MAX_UPLOAD_BYTES / (16_000 * 2)


def _canonical(name: str) -> str:
    """One spelling per host: IP addresses compressed, names in lower case without the root's
    trailing dot."""
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name.lower().rstrip(".")


def host_of(authority: str) -> str | None:
    """The host of a Host header or an origin's authority (`[::1]:8000` → `::1`), or None when
    it is not `host[:port]`."""
    try:
        parts = urlsplit(f"//{authority}")
        parts.port  # noqa: B018  # raises ValueError for a port that is not one
    except ValueError:
        return None
    if parts.netloc != authority or "@" in authority or not parts.hostname:
        return None
    return _canonical(parts.hostname)


def allowed_host(name: str) -> str:
    """An `--allow-host` name (`example.com`, `192.168.1.5`, `::1` or `[::1]`): every port of
    it is allowed, so a port is refused rather than ignored."""
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        pass
    host = host_of(name)
    if host is None or urlsplit(f"//{name}").port is not None:
        raise UserError(f"--allow-host {name[:80]!r}: expected a host name or address, no port")
    return host


def cors_origin(text: str) -> str:
    """A `--cors-origin` as browsers send it (`scheme://host[:port]`), or `*` for every origin."""
    if text == ANY_ORIGIN:
        return text
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or host_of(parts.netloc) is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise UserError(f"--cors-origin {text[:80]!r}: expected scheme://host[:port] or *")
    return f"{parts.scheme}://{parts.netloc.lower()}"


@dataclass(frozen=True)
class Access:
    """The hosts a request may name, the browser origins CORS lets read answers, the key."""

    hosts: frozenset[str] = LOCAL_HOSTS
    cors_origins: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key:
            raise UserError(f"the API key is empty (--api-key or {API_KEY_ENV})")

    @classmethod
    def from_flags(
        cls, bind: str, hosts: list[str], origins: list[str], api_key: str | None
    ) -> Access:
        """The localhost names, the bound address unless it is every interface, and the
        flags' own."""
        named = {allowed_host(bind)} if bind not in WILDCARD_BINDS else set()
        extra = {allowed_host(name) for name in hosts}
        chosen = tuple(dict.fromkeys(cors_origin(origin) for origin in origins))
        return cls(LOCAL_HOSTS | named | extra, chosen, api_key)

    def host_allowed(self, header: str) -> bool:
        return host_of(header) in self.hosts

    def origin_allowed(self, origin: str) -> bool:
        """A page on an allowed host (any scheme and port), or an origin CORS was opened to."""
        if ANY_ORIGIN in self.cors_origins or origin in self.cors_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and host_of(parts.netloc) in self.hosts

    def key_matches(self, given: str) -> bool:
        """In constant time: how much of a guess matched must not show in the answer's time."""
        assert self.api_key is not None
        return hmac.compare_digest(given.encode(), self.api_key.encode())
