"""The MCP server's inputs without a model: the address guard, URL fetching, the image argument, the cache.

URL fetching runs against a loopback HTTP server; names resolve through a stub and connections go through
a stub connector to that server, so a test's traffic stays on loopback (``loopback_guard`` fails the test
on any other connection or name lookup, even one the code under test would swallow).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import re
import time

import numpy as np
import pytest
from PIL import Image

from florence2_runtime.inputs.encoded import EncodedImage
from florence2_runtime.mcp.cache import EncodingCache, image_key
from florence2_runtime.mcp.settings import McpSettings
from florence2_runtime.mcp.sources import ImageArgumentError, ImageSource
from florence2_runtime.mcp.urls import FetchError, address_refusal
from tests.helpers.loopback_guard import PUBLIC_IP, ImageServer, StubNetwork


def png_bytes(size=(40, 30), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


# --- the address guard: a pure function -------------------------------------------------------------
@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fd12:3456::1", "private"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),  # a global address, refused by name
        ("100.64.0.1", "not a public address|private"),  # shared address space (carrier NAT)
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved|private"),  # Python >= 3.11 counts 240/4 as private
        ("192.0.2.1", "private|reserved|not a public"),  # documentation range
        ("::ffff:127.0.0.1", "loopback address inside an IPv6"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "cloud metadata address inside an IPv6"),
        ("::ffff:10.0.0.1", "private address inside an IPv6"),
        ("2002:7f00:1::", "loopback address inside an IPv6"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "cloud metadata address inside an IPv6"),  # NAT64 of 169.254.169.254
    ],
)
def test_non_public_addresses_are_refused(address, why):
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and re.search(why, refusal), (address, refusal)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


# --- fetching over loopback with stub resolution -------------------------------------------------------
@pytest.fixture
def image_server():
    """A loopback HTTP server: ``routes[path] = handler -> (status, headers, body)``. Yields (port, routes)."""
    with ImageServer() as server:
        yield server.port, server.routes


def test_a_public_name_is_fetched_from_the_checked_address_with_one_lookup(image_server):
    port, routes = image_server
    data = png_bytes()
    routes["/a.png"] = lambda h: (200, {"Content-Type": "image/png", "Content-Length": str(len(data))}, data)
    net = StubNetwork(port, {"images.example": [PUBLIC_IP]})
    assert net.fetcher().fetch("http://images.example/a.png") == data
    assert net.lookups == ["images.example"]
    assert net.connections == [(PUBLIC_IP, 80)]


def test_a_name_that_resolves_to_a_private_address_is_refused_before_connecting(image_server):
    port, _ = image_server
    net = StubNetwork(port, {"intranet.example": ["10.0.0.7"], "mixed.example": [PUBLIC_IP, "127.0.0.1"]})
    with pytest.raises(FetchError, match=r"intranet.example \(10.0.0.7\): a private address"):
        net.fetcher().fetch("http://intranet.example/a.png")
    with pytest.raises(FetchError, match="loopback"):  # every address must be public, not just the first
        net.fetcher().fetch("http://mixed.example/a.png")
    assert net.connections == []


@pytest.mark.parametrize(
    "url, match",
    [
        ("http://127.0.0.1/a.png", "loopback"),
        ("http://[::1]:8080/a.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("ftp://images.example/a.png", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:secret@images.example/a.png", "user name or password"),
        ("http:///a.png", "no host"),
    ],
)
def test_refused_urls(image_server, url, match):
    port, _ = image_server
    net = StubNetwork(port, {"images.example": [PUBLIC_IP]})
    with pytest.raises(FetchError, match=match):
        net.fetcher().fetch(url)
    assert net.connections == []


def test_every_redirect_is_checked_again(image_server):
    port, routes = image_server
    data = png_bytes()
    routes["/a.png"] = lambda h: (200, {"Content-Length": str(len(data))}, data)
    routes["/to-private"] = lambda h: (302, {"Location": "http://intranet.example/a.png"}, b"")
    routes["/to-metadata"] = lambda h: (301, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    routes["/to-loopback"] = lambda h: (307, {"Location": f"http://127.0.0.1:{port}/a.png"}, b"")
    routes["/to-file"] = lambda h: (302, {"Location": "file:///etc/passwd"}, b"")
    routes["/relative"] = lambda h: (302, {"Location": "/a.png"}, b"")
    routes["/loop"] = lambda h: (302, {"Location": "/loop"}, b"")
    net = StubNetwork(port, {"images.example": [PUBLIC_IP], "intranet.example": ["192.168.0.10"]})
    fetcher = net.fetcher(max_redirects=3)
    assert fetcher.fetch("http://images.example/relative") == data  # a redirect to a public place is followed
    for path, match in [
        ("/to-private", "private"),
        ("/to-metadata", "cloud metadata"),
        ("/to-loopback", "loopback"),
        ("/to-file", "only http and https"),
        ("/loop", "more than 3 redirects"),
    ]:
        with pytest.raises(FetchError, match=match):
            fetcher.fetch(f"http://images.example{path}")
    assert {ip for ip, _ in net.connections} == {PUBLIC_IP}


def test_size_cap_and_timeout(image_server):
    port, routes = image_server
    big = b"\x89PNG" + bytes(5000)
    routes["/declared"] = lambda h: (200, {"Content-Length": str(len(big))}, big)
    routes["/undeclared"] = lambda h: (200, {"Connection": "close"}, big)  # no length: read until the cap

    def slow(handler):
        time.sleep(1.5)
        return 200, {"Content-Length": "4"}, b"\x89PNG"

    routes["/slow"] = slow
    routes["/missing"] = lambda h: (404, {}, b"")
    net = StubNetwork(port, {"images.example": [PUBLIC_IP]})
    with pytest.raises(FetchError, match="5004 bytes; at most 1000"):
        net.fetcher(max_bytes=1000).fetch("http://images.example/declared")
    with pytest.raises(FetchError, match="larger than 1000 bytes"):
        net.fetcher(max_bytes=1000).fetch("http://images.example/undeclared")
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 0\.3 s"):
        net.fetcher(timeout_s=0.3).fetch("http://images.example/slow")
    assert time.monotonic() - start < 1.2
    with pytest.raises(FetchError, match="HTTP 404"):
        net.fetcher().fetch("http://images.example/missing")


# --- the image argument ----------------------------------------------------------------------------------
@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "a.png").write_bytes(png_bytes())
    (root / "sub" / "b.jpg").write_bytes(jpeg_bytes())
    (outside / "secret.png").write_bytes(png_bytes(colour=(1, 2, 3)))
    return root, outside


def test_paths_under_the_roots_are_read(roots):
    root, _ = roots
    source = ImageSource((root.resolve(),), 1 << 20)
    assert source.read("a.png") == (root / "a.png").read_bytes()  # relative: from the first root
    assert source.read(str(root / "sub" / "b.jpg")) == (root / "sub" / "b.jpg").read_bytes()
    (root / "link.png").symlink_to(root / "a.png")  # a symlink inside the root is fine
    assert source.read("link.png") == (root / "a.png").read_bytes()


def test_paths_outside_the_roots_are_refused(roots):
    root, outside = roots
    source = ImageSource((root.resolve(),), 1 << 20)
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    for value, match in [
        (str(outside / "secret.png"), "outside the folders this server may read"),
        ("escape.png", "outside the folders"),
        ("escape-dir/secret.png", "outside the folders"),
        ("../outside/secret.png", r"'\.\.' is not allowed"),
        ("sub/../a.png", r"'\.\.' is not allowed"),
        (str(root / ".." / "outside" / "secret.png"), r"'\.\.' is not allowed"),
        ("/etc/passwd", "outside the folders"),
        ("missing.png", "no such file"),
        ("sub", "not a regular file"),
        ("", "empty"),
        ("a.png\x00.txt", "NUL"),
        ("http://images.example/a.png", "URLs are not fetched by this server"),
    ]:
        with pytest.raises(ImageArgumentError, match=match) as err:
            source.read(value)
        assert str(err.value).startswith("image: ")


def test_size_cap_of_files_and_base64(roots):
    root, _ = roots
    data = (root / "a.png").read_bytes()
    source = ImageSource((root.resolve(),), len(data) - 1)
    with pytest.raises(ImageArgumentError, match="the limit is"):
        source.read("a.png")
    with pytest.raises(ImageArgumentError, match="the limit is"):
        source.read(base64.b64encode(data).decode())


def test_base64_and_data_urls(roots):
    root, _ = roots
    source = ImageSource((root.resolve(),), 1 << 20)
    png, jpeg = png_bytes(), jpeg_bytes()
    jpeg_b64 = base64.b64encode(jpeg).decode()
    assert jpeg_b64.startswith("/9j/")  # looks like an absolute path, and is base64
    assert source.read(jpeg_b64) == jpeg
    assert source.read(base64.b64encode(png).decode()) == png
    wrapped = base64.encodebytes(png).decode()  # with newlines
    assert source.read(wrapped) == png
    assert source.read("data:image/png;base64," + base64.b64encode(png).decode()) == png
    with pytest.raises(ImageArgumentError, match="data URL must look like"):
        source.read("data:image/png,rawbytes")


def test_urls_go_through_the_fetcher_when_allowed(image_server, roots):
    port, routes = image_server
    root, _ = roots
    data = png_bytes()
    routes["/a.png"] = lambda h: (200, {"Content-Length": str(len(data))}, data)
    net = StubNetwork(port, {"images.example": [PUBLIC_IP], "intranet.example": ["10.0.0.1"]})
    source = ImageSource((root.resolve(),), 1 << 20, net.fetcher())
    assert source.read("http://images.example/a.png") == data
    with pytest.raises(
        ImageArgumentError, match=re.escape("image: 'http://intranet.example/a.png': refused")
    ):
        source.read("http://intranet.example/a.png")


def test_settings_refuse_a_missing_root(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        McpSettings(roots=(tmp_path / "nope",))
    assert McpSettings(roots=(tmp_path,)).roots == (tmp_path.resolve(),)


# --- the cache ------------------------------------------------------------------------------------------
def _encoded(n_floats: int) -> EncodedImage:
    return EncodedImage(np.zeros((1, n_floats), np.float32), (4, 4), "m")


def test_the_cache_is_an_lru_bounded_by_entries_and_bytes():
    cache = EncodingCache(max_entries=2, max_bytes=1000)
    calls = []

    def make(n):
        def encode():
            calls.append(n)
            return _encoded(n)

        return encode

    a = cache.get_or_encode("a", make(10))
    assert cache.get_or_encode("a", make(10)) is a and calls == [10]
    cache.get_or_encode("b", make(20))
    cache.get_or_encode("a", make(10))  # a is now the most recent
    cache.get_or_encode("c", make(30))  # evicts b
    assert len(cache) == 2 and calls == [10, 20, 30]
    cache.get_or_encode("a", make(10))
    assert calls == [10, 20, 30]
    cache.get_or_encode("b", make(20))
    assert calls == [10, 20, 30, 20]
    cache.get_or_encode("big", make(200))  # 800 bytes: evicts until the bytes fit
    assert cache.nbytes <= 1000
    cache.get_or_encode("huge", make(300))  # 1200 bytes: answered, never kept
    assert "huge" not in cache._entries and cache.nbytes <= 1000
    assert image_key(b"x") == image_key(b"x") != image_key(b"y")
