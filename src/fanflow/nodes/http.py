"""http node: one request on the run's shared async client (connection reuse, no thread)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

import httpx2

from fanflow.errors import NodeError
from fanflow.io.providers import body_excerpt, is_transient_status, parse_retry_after
from fanflow.nodes.base import AsyncNode, Param

if TYPE_CHECKING:
    from fanflow.io.limits import LimitRegistry

_CLIENT_KEY = "http"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def get_http_client(ctx: Any) -> httpx2.AsyncClient:
    """The run's one AsyncClient, created on first use and closed when the run ends."""
    client = ctx.clients.get(_CLIENT_KEY)
    if client is None:
        # Pool sized well above httpx's default 100 connections: the run's limits (not the pool)
        # decide how many requests are in flight.
        client = httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=True,
        )
        ctx.clients[_CLIENT_KEY] = client
        ctx.on_close(client.aclose)
    return client


def _is_json(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct == "application/json" or ct.endswith("+json")


class HttpNode(AsyncNode):
    type_name = "http"
    description = "HTTP request; JSON responses are decoded. Non-2xx fails (429/5xx are retried)."
    params_spec: ClassVar[dict[str, Param]] = {
        "url": Param("string", required=True, description="absolute http(s) URL"),
        "method": Param("string", default="GET", description="GET, POST, PUT, PATCH, DELETE..."),
        "headers": Param(
            "object", default=None, description="request headers", items=("string", "number")
        ),
        "params": Param("object", default=None, description="query-string parameters"),
        "body": Param("any", default=None, description="object/array → JSON; string → raw body"),
        "timeout": Param("number", default=30, description="seconds for the whole request", gt=0),
    }
    actions: ClassVar[tuple[str, ...] | None] = ("default", "error")
    outputs_spec: ClassVar[dict[str, str]] = {
        "response": "JSON-decoded body when the response is JSON, else text",
        "status_code": "integer",
        "response_headers": "object",
    }
    default_attempts = 3

    @classmethod
    def resource_keys(cls, params: dict[str, Any], limits: LimitRegistry) -> list[str]:
        """`http:<host>` and `http:<host>:<port>`, acquired before the budget slot."""
        url = params.get("url")
        return limits.keys_for_http(url.strip()) if isinstance(url, str) else []

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        p = prep_res or {}
        url = p.get("url")
        if not isinstance(url, str) or not url.strip():
            raise NodeError("http: 'url' must be a non-empty string")
        url = url.strip()
        method = str(p.get("method") or "GET").upper()
        if method not in _METHODS:
            raise NodeError(f"http: unsupported method {method!r} (use one of {_METHODS})")
        timeout = float(p["timeout"]) if p.get("timeout") is not None else 30.0
        headers = {str(k): str(v) for k, v in (p.get("headers") or {}).items()}
        query = p.get("params") or None
        body = p.get("body")
        kwargs: dict[str, Any] = {"headers": headers, "params": query, "timeout": timeout}
        if isinstance(body, (dict, list)):
            kwargs["json"] = body
        elif isinstance(body, (bytes, str)):
            kwargs["content"] = body
        elif body is not None:
            kwargs["json"] = body  # numbers/booleans: send as JSON

        client = get_http_client(self.ctx)
        try:
            resp = await client.request(method, url, **kwargs)
        except httpx2.TimeoutException:
            raise NodeError(
                f"http {method} {_safe_url(url)} timed out after {timeout:g}s", retryable=True
            ) from None
        except (httpx2.UnsupportedProtocol, httpx2.InvalidURL) as exc:
            raise NodeError(f"http: invalid URL {_safe_url(url)}: {exc}") from None
        except httpx2.TransportError as exc:  # connect/read errors, dropped connections
            raise NodeError(
                f"http {method} {_safe_url(url)} failed: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from None

        status = resp.status_code
        outputs = {
            "response": _decode(resp, method),
            "status_code": status,
            "response_headers": dict(resp.headers),
        }
        if not 200 <= status < 300:
            transient = is_transient_status(status)
            excerpt = body_excerpt(resp.text)
            raise NodeError(
                f"http {method} {_safe_url(url)} returned HTTP {status}"
                + (f": {excerpt}" if excerpt else ""),
                retryable=transient,
                retry_after=parse_retry_after(resp.headers) if transient else None,
                outputs=outputs,  # an `error` edge handler can read the status and body
            )
        return outputs


def _decode(resp: httpx2.Response, method: str) -> Any:
    if method == "HEAD":
        return ""
    if _is_json(resp.headers.get("content-type", "")):
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return resp.text  # the server mislabelled the body: keep the text
    return resp.text


def _safe_url(url: str) -> str:
    """The URL without userinfo or query string (either may carry credentials)."""
    try:
        u = httpx2.URL(url)
    except Exception:
        return "<url>"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"
