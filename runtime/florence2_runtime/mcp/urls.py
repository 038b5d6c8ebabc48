"""Fetching an image URL without server-side request forgery: public addresses only, checked every hop.

A URL is fetched only over http(s), from an address that is public (:func:`address_refusal`: no
loopback, private, link-local, multicast, reserved, unspecified, shared or cloud-metadata address, the
IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address included). The name is resolved once per
hop, every address it resolves to must be public, and the connection goes to the checked address (no
second lookup, so DNS rebinding cannot swap it); HTTPS still verifies the certificate for the name.
Redirects are followed here, each one checked the same way, up to a small cap; the body is read up to a
byte cap, and the whole fetch (redirects included) has one deadline.

Name resolution and connecting are injectable (:class:`UrlFetcher`'s ``resolve`` and ``connect``), so
tests can map names to addresses and keep every connection on loopback.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

__all__ = ["FetchError", "UrlFetcher", "address_refusal", "system_resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> IP addresses as text
Connector = Callable[[str, int, float], socket.socket]  # (IP, port, timeout) -> connected socket

# Cloud metadata and host services some providers put on addresses that look ordinary (Azure's
# 168.63.129.16 is even a global address); the link-local and private ones are refused anyway.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class FetchError(ValueError):
    """A URL that is refused or cannot be fetched; the message says why."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 or NAT64 IPv6 address carries, if any."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be fetched from ("a loopback address", ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the connection goes to the IPv4 address: judge that one
            why = address_refusal(ip.ipv4_mapped)
            return None if why is None else f"{why} inside an IPv6 address"
        inner = _embedded_ipv4(ip)
        if inner is not None and (why := address_refusal(inner)) is not None:
            return f"{why} inside an IPv6 address"
        if ip.scope_id:
            return "a scoped IPv6 address"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for flag, what in (
        ("is_loopback", "a loopback address"),
        ("is_unspecified", "the unspecified address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
        ("is_site_local", "a site-local address"),
    ):
        if getattr(ip, flag, False):
            return what
    if not ip.is_global:
        return "not a public address"
    return None


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, TCP)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError(f"cannot resolve {host!r} ({e})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _system_connect(ip: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((ip, port), timeout=timeout)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, what goes on the request line

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def _parse(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise FetchError(f"not a valid URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {scheme or 'a URL without scheme'}")
    if not parts.hostname:
        raise FetchError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with a user name or password are not fetched")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(ord(c) < 33 or ord(c) == 127 for c in path):
        raise FetchError("the URL's path has spaces or control characters")
    default = 443 if scheme == "https" else 80
    return _Target(scheme, parts.hostname, port if port is not None else default, path)


@dataclass(frozen=True)
class UrlFetcher:
    """GET an image over http(s) from public addresses only (see the module docstring).

    resolve / connect: the name lookup and the TCP connection (defaults: the system's); tests inject
    stubs so nothing leaves loopback. tls: the context HTTPS uses (default: system CAs, hostname check).
    """

    max_bytes: int
    timeout_s: float = 10.0
    max_redirects: int = 3
    resolve: Resolver = system_resolve
    connect: Connector = _system_connect
    tls: ssl.SSLContext | None = field(default=None, repr=False)

    def fetch(self, url: str) -> bytes:
        """The body of ``url`` after at most ``max_redirects`` redirects; FetchError says why not."""
        deadline = time.monotonic() + self.timeout_s
        for _ in range(self.max_redirects + 1):
            target = _parse(url)
            ip = self._checked_address(target)
            location = self._get(target, ip, deadline)
            if isinstance(location, bytes):
                return location
            url = urljoin(url, location)
        raise FetchError(f"more than {self.max_redirects} redirects")

    def _checked_address(self, target: _Target) -> str:
        """The address to connect to: the first one ``target.host`` resolves to, if all are public."""
        try:  # an address literal is not looked up
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        names = [str(literal)] if literal is not None else list(self.resolve(target.host, target.port))
        if not names:
            raise FetchError(f"{target.host!r} resolves to no address")
        for name in names:
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                raise FetchError(f"{target.host!r} resolves to {name!r}, which is not an address") from None
            why = address_refusal(ip)
            if why is not None:
                shown = target.host if literal is not None else f"{target.host} ({ip})"
                raise FetchError(f"refused to fetch from {shown}: {why}")
        return names[0]

    def _get(self, target: _Target, ip: str, deadline: float) -> bytes | str:
        """One GET: the body (status 200) or the Location of a redirect."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"timed out after {self.timeout_s:g} s")
        try:
            sock = self.connect(ip, target.port, remaining)
        except OSError as e:
            raise FetchError(f"cannot connect to {target.host} ({e})") from None
        response: http.client.HTTPResponse | None = None
        try:
            if target.scheme == "https":
                context = self.tls or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=target.host)
            conn = _PinnedConnection(sock, target)
            conn.request(
                "GET",
                target.path,
                headers={"Host": target.host_header, "Accept": "image/*", "User-Agent": "florence2-mcp"},
            )
            response = conn.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchError(f"HTTP {response.status} without a Location")
                return location
            if response.status != 200:
                raise FetchError(f"the server answered HTTP {response.status} {response.reason}")
            return self._read_body(response, sock, deadline)
        except TimeoutError:
            raise FetchError(f"timed out after {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise FetchError(f"cannot fetch from {target.host} ({type(e).__name__}: {e})") from None
        finally:
            if response is not None:
                response.close()
            sock.close()

    def _read_body(self, response: http.client.HTTPResponse, sock: socket.socket, deadline: float) -> bytes:
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            raise FetchError(f"the image is {int(length)} bytes; at most {self.max_bytes} are read")
        body = bytearray()
        while len(body) <= self.max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"timed out after {self.timeout_s:g} s")
            sock.settimeout(remaining)
            chunk = response.read(min(_CHUNK, self.max_bytes + 1 - len(body)))
            if not chunk:
                return bytes(body)
            body += chunk
        raise FetchError(f"the image is larger than {self.max_bytes} bytes")


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection over a socket already connected to the checked address."""

    def __init__(self, sock: socket.socket, target: _Target):
        super().__init__(target.host, target.port, timeout=sock.gettimeout())
        self.sock = sock

    def connect(self) -> None:  # never opens a connection of its own
        if self.sock is None:
            raise http.client.NotConnected("the pinned socket is closed")

    def close(self) -> None:  # the fetcher closes the socket once the body is read
        self.sock = None
