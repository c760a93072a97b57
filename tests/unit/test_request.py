"""RequestInfo and path normalisation: what the rules see of a request. No I/O."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit_mw._request import RequestInfo, normalize_path, request_paths
from tests.helpers import LOGIN_VARIANTS

# --- normalize_path --------------------------------------------------------------------


@pytest.mark.parametrize("path", LOGIN_VARIANTS)
def test_variants_of_login_normalise_to_login(path: str) -> None:
    assert normalize_path(path) == "/login"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("", "/"),
        ("//", "/"),
        ("/.", "/"),
        ("/..", "/"),
        ("/../..", "/"),
        ("/%2e%2e", "/"),
        ("/a/b/c", "/a/b/c"),
        ("/a/b/c/", "/a/b/c"),
        ("//api/./v1/../v2/items/", "/api/v2/items"),
        ("/items/1", "/items/1"),
        # '...' is a name, not a step up.
        ("/.../login", "/.../login"),
        ("/..login", "/..login"),
        ("/login..", "/login.."),
        # Case is the application's business: routers are case-sensitive.
        ("/LOGIN", "/LOGIN"),
        # Decoded once only: the server decoded the first layer, we decode the second.
        ("/log%2569n", "/log%69n"),
        ("/caf%C3%A9", "/café"),
    ],
)
def test_normalize_path_examples(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


def test_normalize_path_does_not_treat_other_names_as_login() -> None:
    for path in ("/login2", "/logi", "/login.html", "/xlogin", "/login/x", "/log/in"):
        assert normalize_path(path) != "/login"


def test_invalid_percent_utf8_does_not_raise() -> None:
    # A lone %C3 is not UTF-8: it must still give a path (one per distinct input),
    # never an exception on the request path.
    a = normalize_path("/x%C3")
    b = normalize_path("/x%C4")
    assert a.startswith("/x")
    assert a != b


_PATH_CHARS = st.sampled_from(["/", ".", "..", "%", "%2e", "%2E", "%2f", "%2F", "%5c", "\\",
                               "a", "b", "login", "%", "2", "e", "f", "é", "{", "}", " ", "?"])


@given(st.lists(_PATH_CHARS, max_size=30).map("".join))
def test_normalised_paths_are_canonical(path: str) -> None:
    out = normalize_path(path)
    assert out.startswith("/")
    assert "//" not in out
    assert "\\" not in out
    if out != "/":
        assert not out.endswith("/")
        segments = out[1:].split("/")
        assert "." not in segments
        assert ".." not in segments
        assert "" not in segments


@given(st.text(max_size=200))
def test_normalize_path_never_raises(path: str) -> None:
    assert normalize_path(path).startswith("/")


# --- RequestInfo() ---------------------------------------------------------------------


def test_constructor_normalises_and_lowercases() -> None:
    info = RequestInfo("post", "//login/", client="203.0.113.7",
                       headers={"X-API-Key": "secret", "Host": "example.com"})
    assert info.method == "POST"
    assert info.path == "/login"
    assert info.raw_path == "//login/"
    assert info.client == "203.0.113.7"
    assert info.header("x-api-key") == "secret"
    assert info.header("X-API-KEY") == "secret"
    assert info.headers == {"x-api-key": "secret", "host": "example.com"}
    assert info.host == "example.com"
    assert info.header("missing") is None


def test_constructor_defaults() -> None:
    info = RequestInfo("GET", "/x")
    assert info.client is None
    assert info.scheme == "http"
    assert info.query == ""
    assert info.headers == {}
    assert info.host is None


def test_explicit_host_wins_over_header() -> None:
    info = RequestInfo("GET", "/", host="a.example", headers={"host": "b.example"})
    assert info.host == "a.example"


def test_repr_names_method_path_and_peer() -> None:
    text = repr(RequestInfo("GET", "/a/", client="192.0.2.1"))
    assert "GET" in text
    assert "'/a'" in text
    assert "192.0.2.1" in text


# --- from_scope -----------------------------------------------------------------------


def _scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "client": ("203.0.113.7", 51000),
        "scheme": "http",
    }
    scope.update(overrides)
    return scope


def test_from_scope_reads_everything() -> None:
    info = RequestInfo.from_scope(_scope(
        method="POST",
        path="/log%69n/",
        raw_path=b"/log%2569n/",
        query_string=b"a=1&b=%C3%A9",
        headers=[(b"Host", b"example.com"), (b"X-API-Key", b"k1")],
        client=("198.51.100.9", 1234),
        scheme="https",
    ))
    assert info.method == "POST"
    assert info.path == "/login"
    assert info.raw_path == "/log%2569n/"
    assert info.query == "a=1&b=%C3%A9"
    assert info.client == "198.51.100.9"
    assert info.scheme == "https"
    assert info.host == "example.com"
    assert info.header("x-api-key") == "k1"


def test_from_scope_joins_repeated_headers_in_order() -> None:
    info = RequestInfo.from_scope(_scope(headers=[
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"X-Forwarded-For", b"2.2.2.2, 3.3.3.3"),
        (b"accept", b"*/*"),
    ]))
    assert info.header("X-Forwarded-For") == "1.1.1.1, 2.2.2.2, 3.3.3.3"
    assert info.header("accept") == "*/*"


@given(st.lists(st.tuples(st.sampled_from([b"a", b"A", b"x-b", b"X-B", b"c"]),
                          st.binary(max_size=5)), max_size=30))
def test_from_scope_headers_match_rfc9110_joining(lines: list[tuple[bytes, bytes]]) -> None:
    # Lower-case names in the order first seen; each name's values in order, ", "-joined.
    expected: dict[str, list[str]] = {}
    for name, value in lines:
        expected.setdefault(name.decode().lower(), []).append(value.decode("latin-1"))
    info = RequestInfo.from_scope(_scope(headers=lines))
    assert info.headers == {name: ", ".join(values) for name, values in expected.items()}
    assert list(info.headers) == list(expected)


def test_from_scope_decodes_header_bytes_as_latin1() -> None:
    info = RequestInfo.from_scope(_scope(headers=[(b"x-name", "café".encode())]))
    assert info.header("x-name") == "café".encode().decode("latin-1")


@pytest.mark.parametrize("path", LOGIN_VARIANTS)
def test_from_scope_normalises_the_path(path: str) -> None:
    assert RequestInfo.from_scope(_scope(path=path)).path == "/login"


def test_from_scope_without_client_or_raw_path() -> None:
    info = RequestInfo.from_scope(_scope(client=None, raw_path=None, path="/a//b"))
    assert info.client is None
    assert info.raw_path == "/a//b"
    assert info.path == "/a/b"


def test_from_scope_minimal_websocket_scope() -> None:
    # Websocket scopes have no method; a bare scope must not raise.
    info = RequestInfo.from_scope({"type": "websocket", "path": "/ws"})
    assert info.method == "GET"
    assert info.path == "/ws"
    assert info.client is None
    assert info.query == ""
    assert info.scheme == "http"
    assert info.headers == {}


def test_from_scope_empty_path_is_root() -> None:
    assert RequestInfo.from_scope(_scope(path="")).path == "/"


def test_from_scope_uppercases_the_method() -> None:
    # Django's ASGIRequest upper-cases the method, so 'post' reaches the POST view: a
    # lower-case method must not escape a methods=["POST"] rule.
    assert RequestInfo.from_scope(_scope(method="post")).method == "POST"


def test_from_scope_headers_are_decoded_once_and_cached() -> None:
    info = RequestInfo.from_scope(_scope(headers=[(b"a", b"1")]))
    assert info.headers is info.headers


# --- from_environ ---------------------------------------------------------------------


def _environ(**overrides: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
    }
    environ.update(overrides)
    return environ


def test_from_environ_reads_everything() -> None:
    info = RequestInfo.from_environ(_environ(
        REQUEST_METHOD="PUT",
        PATH_INFO="//login/",
        QUERY_STRING="api_key=s3cret",
        REMOTE_ADDR="198.51.100.9",
        HTTP_HOST="example.com",
        HTTP_X_FORWARDED_FOR="1.2.3.4",
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH="12",
        RAW_URI="//login/?api_key=s3cret",
        **{"wsgi.url_scheme": "https"},
    ))
    assert info.method == "PUT"
    assert info.path == "/login"
    assert info.raw_path == "//login/?api_key=s3cret"
    assert info.query == "api_key=s3cret"
    assert info.client == "198.51.100.9"
    assert info.scheme == "https"
    assert info.host == "example.com"
    assert info.header("X-Forwarded-For") == "1.2.3.4"
    assert info.header("content-type") == "application/json"
    assert info.header("content-length") == "12"
    # Non-header environ keys never show up as headers.
    assert "server-name" not in info.headers
    assert "remote-addr" not in info.headers
    assert "wsgi.url-scheme" not in info.headers


def test_from_environ_decodes_pep3333_path_as_utf8() -> None:
    wire = "/caf\u00e9".encode()  # the bytes on the wire
    info = RequestInfo.from_environ(_environ(PATH_INFO=wire.decode("latin-1")))
    assert info.path == "/café"


def test_from_environ_invalid_utf8_path_does_not_raise() -> None:
    info = RequestInfo.from_environ(_environ(PATH_INFO="/x\xff/"))
    assert info.path.startswith("/x")
    assert not info.path.endswith("/")


@pytest.mark.parametrize("path", LOGIN_VARIANTS)
def test_from_environ_normalises_the_path(path: str) -> None:
    assert RequestInfo.from_environ(_environ(PATH_INFO=path)).path == "/login"


def test_from_environ_minimal_environ() -> None:
    info = RequestInfo.from_environ({})
    assert info.method == "GET"
    assert info.path == "/"
    assert info.client is None
    assert info.query == ""
    assert info.headers == {}


def test_from_environ_empty_remote_addr_is_no_peer() -> None:
    assert RequestInfo.from_environ(_environ(REMOTE_ADDR="")).client is None


def test_from_environ_empty_content_type_is_absent() -> None:
    info = RequestInfo.from_environ(_environ(CONTENT_TYPE="", CONTENT_LENGTH=""))
    assert info.header("content-type") is None
    assert info.header("content-length") is None


def test_from_environ_uppercases_the_method() -> None:
    # werkzeug and Django route REQUEST_METHOD.upper(): 'post' reaches the POST view.
    assert RequestInfo.from_environ(_environ(REQUEST_METHOD="post")).method == "POST"


def test_from_environ_raw_path_falls_back() -> None:
    assert RequestInfo.from_environ(_environ(PATH_INFO="/a/")).raw_path == "/a/"
    info = RequestInfo.from_environ(_environ(PATH_INFO="/a/", REQUEST_URI="/a/?q=1"))
    assert info.raw_path == "/a/?q=1"


@pytest.mark.parametrize(("root", "path", "expected"), [
    ("/api", "/api/login", "/login"),
    ("/api", "/api", "/"),
    ("/api", "/api/", "/"),
    ("/api", "/apilogin", "/apilogin"),  # not under the root: left alone
    ("/api", "/login", "/login"),        # servers that do not prefix root_path
    ("", "/login", "/login"),
])
def test_from_scope_strips_root_path(root: str, path: str, expected: str) -> None:
    info = RequestInfo.from_scope({"type": "http", "path": path, "root_path": root})
    assert info.path == expected


def test_from_environ_tolerates_non_latin1_path_info() -> None:
    info = RequestInfo.from_environ({"REQUEST_METHOD": "GET", "PATH_INFO": "/€/login/"})
    assert info.path == "/€/login"


def test_raw_path_and_query_decode_lazily() -> None:
    info = RequestInfo.from_scope({"type": "http", "path": "/a b", "raw_path": b"/a%20b",
                                   "query_string": b"x=1&y=%C3%A9"})
    assert info.raw_path == "/a%20b"
    assert info.query == "x=1&y=%C3%A9"
    environ = RequestInfo.from_environ({"PATH_INFO": "/a", "QUERY_STRING": "q=1",
                                        "RAW_URI": "/a?q=1"})
    assert (environ.raw_path, environ.query) == ("/a?q=1", "q=1")


@pytest.mark.parametrize(
    ("path", "normal", "routed"),
    [
        ("/login", "/login", None),
        ("/log%69n", "/login", "/log%69n"),
        # A second layer of escapes that makes a separator or a step up: the router sees
        # one segment, the decoded path another route.
        ("/items/..%2Fhealth", "/health", "/items/..%2Fhealth"),
        ("/items/a%2Fb/", "/items/a/b", "/items/a%2Fb"),
        # '%' alone decodes to itself: one view, no second.
        ("/100%", "/100%", None),
    ],
)
def test_request_paths_keep_the_routers_view(path: str, normal: str,
                                             routed: str | None) -> None:
    assert request_paths(path) == (normal, routed)
    info = RequestInfo("GET", path)
    assert (info.path, info.routed_path) == (normal, routed)
