"""Who may use an edge's web page: where it listens, and what each request must show.

The page can place and cancel orders as the edge's client, so it gives the power of that client's
broker credentials. The rule follows from that:

- Without broker credentials (an open broker) anyone who reaches the broker can already trade as
  this client; the page adds nothing for a local user, but must not open that power to the network.
  So it listens on loopback only (127.0.0.0/8, ::1, localhost) and asks no password.
- With credentials (--username and its password) the page asks for the same user name and password
  with HTTP basic auth on every request, on any address: another user of the same machine reaches
  a loopback port too. Only then may it listen on another address. Basic auth over plain HTTP
  sends the password readable on that network: reach a remote edge through `ssh -L` or a TLS proxy.

Against other web sites in the same browser: without a password, a request whose Host header is
not a loopback name is refused (DNS rebinding), an order needs `Content-Type: application/json`
(a cross-site form cannot send it without a CORS preflight, which this server never answers), and
a request with an Origin header must come from the page's own origin.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class AccessError(ValueError):
    """A --web address or credentials that the rule above refuses; the message says why."""


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT ([v6]:PORT for IPv6) to (host, port); the host is an IP address or localhost."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AccessError(f"--web wants HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise AccessError(f"--web port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise AccessError(f"--web port must be 0-65535, got {port}")
    if host.lower() not in LOOPBACK_NAMES:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise AccessError(f"--web host must be an IP address or localhost, got {host!r}") from None
    return host, port


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebAccess:
    """The checks every request passes (see the module docstring)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise AccessError("the web page needs both the user name and the password, or neither")
        if self.username is None and not is_loopback(self.host):
            raise AccessError(
                f"--web {self.host}: a page that trades as this client listens on loopback only "
                "(127.0.0.1, ::1, localhost) unless the edge runs with --username and its password, "
                "which the page then asks for")

    @property
    def needs_password(self) -> bool:
        return self.username is not None

    def authorized(self, header: str | None) -> bool:
        """The Authorization header carries this edge's user name and password (always true
        without credentials)."""
        if self.username is None or self.password is None:
            return True
        if header is None or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        expected = f"{self.username}:{self.password}".encode()
        # compare the whole pair in constant time: no early exit on the user name
        return bool(sep) and hmac.compare_digest(f"{user}:{password}".encode(), expected)

    def host_allowed(self, host_header: str | None) -> bool:
        """Without a password: the Host header names a loopback host (DNS rebinding defence)."""
        if self.needs_password:
            return True
        if not host_header:
            return False
        name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        if name.startswith("[") and "]" in name:
            name = name[1:name.index("]")]
        return is_loopback(name)

    @staticmethod
    def same_origin(origin: str | None, host_header: str | None) -> bool:
        """A request with an Origin header comes from a page of this server."""
        if origin is None:
            return True
        return host_header is not None and origin in (f"http://{host_header}", f"https://{host_header}")
