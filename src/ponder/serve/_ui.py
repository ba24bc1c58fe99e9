"""The browser view of a Ponder database, served under ``/ui`` by ``ponder serve``.

Pages (plain HTML from Jinja2 templates with autoescape on; no JavaScript at all):

* ``/ui``: the runs in the database;
* ``/ui/runs/{run}``: one run, its traces (system runs) and its report, the same HTML that
  ``ponder report --html`` writes (also alone at ``/ui/runs/{run}/report``);
* ``/ui/runs/{run}/traces/{sample_id}``: the trace of one answer of a system run (a search
  component's tree as nested lists, the winning path open);
* ``/ui/requests``: the requests the server answered, newest first;
* ``/ui/requests/{id}``: one request, its messages, its response and its trace;
* ``/ui/login``: a form that trades an API key for a session cookie.

Everything shown comes from the store and much of it is model output or client input, which is
untrusted: it is always escaped, and a Content-Security-Policy that allows no script at all backs
that up. A browser cannot send the ``Authorization: Bearer`` header the API uses, so when the server
has keys every page (the stylesheet aside) needs a session cookie, HTTP-only and SameSite=Strict,
that the login form sets for a valid key. Sessions live in the server's memory: a restart logs
everyone out. A key is never echoed, logged, or put in a URL or cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Collection, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from ponder.errors import NotFoundError, UserError
from ponder.runs import is_system_spec
from ponder.store import ServerRequest, Store
from ponder.systems import SearchTree, Trace, TreeNode, Usage, children_best_first

__all__ = ["SESSION_COOKIE", "ui_router"]

SESSION_COOKIE = "ponder_ui"
"""Name of the session cookie the login form sets."""

_SESSION_TTL_S = 12 * 3600
_MAX_SESSIONS = 1024  # a flood of logins evicts the oldest sessions instead of growing memory
_MAX_LOGIN_BYTES = 8192
_FAILS_ALLOWED = 10  # wrong keys from one address per window, then it waits for the window to pass
_FAIL_WINDOW_S = 60.0
_PAGE_SIZE = 50
_OPEN_ROUTES = frozenset({"ui_login", "ui_login_submit", "ui_stylesheet"})
_UI_DIR = Path(__file__).with_name("ui")

# No script may run on these pages, whatever a model wrote; styles come from our stylesheet.
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)
# The analysis report is one self-contained document with inline styles and SVG charts.
_REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class _Sessions:
    """The API keys and the sessions opened with them (in memory, per router; used on the event
    loop only, so no lock)."""

    def __init__(self, keys: Collection[str]) -> None:
        # Keys are compared as SHA-256 digests, so the comparison time says nothing about a key's
        # length or content.
        self._keys = [_digest(k) for k in keys if k]
        if len(self._keys) != len(keys):
            raise UserError("an API key is empty", hint="remove empty lines from the key file")
        self._live: dict[bytes, float] = {}  # digest of a token -> expiry (monotonic)
        self._failures: dict[str, list[float]] = {}  # client address -> times of wrong keys

    def wait_s(self, client: str) -> int:
        """Seconds before ``client`` may try a key again (0: now)."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(client, []) if t > now - _FAIL_WINDOW_S]
        self._failures[client] = recent
        if not recent:
            del self._failures[client]
        if len(recent) < _FAILS_ALLOWED:
            return 0
        return int(recent[-_FAILS_ALLOWED] + _FAIL_WINDOW_S - now) + 1

    def failed(self, client: str) -> None:
        if len(self._failures) > _MAX_SESSIONS:  # bounded, whoever sends wrong keys
            horizon = time.monotonic() - _FAIL_WINDOW_S
            self._failures = {c: ts for c, ts in self._failures.items() if ts[-1] > horizon}
        self._failures.setdefault(client, []).append(time.monotonic())

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def key_ok(self, key: str) -> bool:
        given = _digest(key)
        ok = False
        for known in self._keys:  # every key is compared: no early exit
            ok |= hmac.compare_digest(given, known)
        return ok

    def open(self) -> str:
        now = time.monotonic()
        self._live = {d: t for d, t in self._live.items() if t > now}
        while len(self._live) >= _MAX_SESSIONS:
            del self._live[min(self._live, key=self._live.__getitem__)]
        token = secrets.token_urlsafe(32)
        self._live[_digest(token)] = now + _SESSION_TTL_S
        return token

    def valid(self, token: str | None) -> bool:
        if not self.enabled:
            return True
        if not token:
            return False
        expiry = self._live.get(_digest(token))
        return expiry is not None and expiry > time.monotonic()

    def close(self, token: str | None) -> None:
        if token:
            self._live.pop(_digest(token), None)


# ----- what the templates show ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Turn:
    """One message of a request or response, flattened for display."""

    role: str
    text: str
    extra: str = ""  # tool calls, the tool call answered, parts that are not text


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _content_text(content: Any) -> tuple[str, str]:
    """Text of an OpenAI message content (a string or a list of parts) and the parts that are not text."""
    if content is None:
        return "", ""
    if isinstance(content, str):
        return content, ""
    if isinstance(content, list):
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        others = [p for p in content if not (isinstance(p, dict) and "text" in p)]
        return "\n".join(texts), _pretty(others) if others else ""
    return "", _pretty(content)


def _turn(message: Any, default_role: str) -> _Turn:
    if not isinstance(message, dict):
        return _Turn(default_role, "", _pretty(message))
    text, extra = _content_text(message.get("content"))
    lines = [extra] if extra else []
    if message.get("name"):
        lines.append(f"name: {message['name']}")
    if message.get("tool_call_id"):
        lines.append(f"answers tool call {message['tool_call_id']}")
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            lines.append(f"tool call {call.get('id', '')}: {fn.get('name')}({fn.get('arguments')})")
        else:
            lines.append(_pretty(call))
    return _Turn(str(message.get("role", default_role)), text, "\n".join(lines))


def _request_turns(body: dict[str, Any]) -> list[_Turn]:
    """What the client sent: chat messages, or a completion prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return [_turn(m, "?") for m in messages]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [_Turn("prompt", prompt)]
    if isinstance(prompt, list):
        return [
            _Turn("prompt", p) if isinstance(p, str) else _Turn("prompt", "", _pretty(p))
            for p in prompt
        ]
    return []


@dataclass(frozen=True)
class _Choice:
    index: int
    finish_reason: str
    turn: _Turn
    reasoning: str


def _response_choices(body: dict[str, Any] | None) -> list[_Choice]:
    """The answers of a chat or completion response."""
    choices = body.get("choices") if body else None
    if not isinstance(choices, list):
        return []
    shown = []
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            turn = _turn(message, "assistant")
            reasoning = message.get("reasoning_content")
        else:
            turn = _Turn("text", str(choice.get("text") or ""))
            reasoning = None
        shown.append(
            _Choice(
                index=int(choice.get("index", i)) if isinstance(choice.get("index", i), int) else i,
                finish_reason=str(choice.get("finish_reason") or ""),
                turn=turn,
                reasoning=reasoning if isinstance(reasoning, str) else "",
            )
        )
    return shown


def _usage(u: Usage) -> str:
    calls = f"{u.calls} call{'s' if u.calls != 1 else ''}"
    return f"{calls} · {u.prompt_tokens}+{u.completion_tokens} tok · {u.wall_s:.2f} s"


def _ids(ids: list[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", … (+{len(ids) - limit})" if len(ids) > limit else "")


@dataclass(frozen=True)
class _TreeRow:
    """One node of a search tree, in the order the page lists them (depth first, best first).

    The template opens a nested list under a node that has children and, after a leaf, closes
    ``closes`` of them: flat rows instead of a recursive macro, so a deep tree cannot exhaust
    Python's recursion limit.
    """

    node: TreeNode
    won: bool
    chosen: int | None  # rank among the chosen leaves, 1 = best
    has_children: bool
    closes: int


def _search_rows(tree: SearchTree) -> list[_TreeRow]:
    """The nodes reachable from the root(s), depth first, each node's children best first."""
    kids = children_best_first(tree)
    won = set(tree.winning_path)
    rank = {node_id: i + 1 for i, node_id in enumerate(tree.chosen)}
    order: list[tuple[TreeNode, int]] = []
    seen: set[int] = set()
    stack = [(n, 0) for n in reversed([n for n in tree.nodes if n.parent is None])]
    while stack:
        node, level = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        order.append((node, level))
        stack.extend((k, level + 1) for k in reversed(kids.get(node.id, [])))
    rows: list[_TreeRow] = []
    for i, (node, level) in enumerate(order):
        after = order[i + 1][1] if i + 1 < len(order) else 0
        parent = after > level  # pre-order: the next row is a child exactly when it is deeper
        rows.append(
            _TreeRow(
                node, node.id in won, rank.get(node.id), parent, 0 if parent else level - after
            )
        )
    return rows


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_UI_DIR),
        autoescape=True,  # every value is escaped unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usage=_usage,
        ids=_ids,
        when=_when,
        pretty=_pretty,
        urlpart=_urlpart,
        search_rows=_search_rows,
    )
    return env


def _urlpart(value: object) -> str:
    return quote(str(value), safe="")


# ----- the router -----------------------------------------------------------------------------------


def _guarded_route(
    sessions: _Sessions, login_page: Callable[[Request, str, int], Response]
) -> type:
    """A route class that asks for a session on every route but the login form and the stylesheet,
    and adds the security headers to every response."""

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            needs_session = self.name not in _OPEN_ROUTES

            async def guarded(request: Request) -> Response:
                if needs_session and not sessions.valid(request.cookies.get(SESSION_COOKIE)):
                    response = login_page(request, "", 401)
                else:
                    response = await handler(request)
                response.headers.setdefault("Content-Security-Policy", _CSP)
                response.headers["X-Content-Type-Options"] = "nosniff"
                response.headers["Referrer-Policy"] = "no-referrer"
                response.headers.setdefault("Cache-Control", "no-store")
                return response

            return guarded

    return GuardedRoute


def ui_router(db: Path, *, api_keys: Collection[str] = ()) -> APIRouter:
    """The browser view of the database ``db``, as routes under ``/ui`` to include in an app.

    Args:
        db: The Ponder database to show (opened per page view, only read).
        api_keys: Keys that may log in. Empty: every page is open to whoever reaches the server
            (``ponder serve`` binds 127.0.0.1 unless told otherwise). Otherwise every page needs
            the session cookie that ``POST /ui/login`` sets for a valid key.

    Raises:
        UserError: one of the keys is empty.
    """
    sessions = _Sessions(api_keys)
    env = _environment()

    def base(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}/ui"

    def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("inside", True)  # the login page shows neither the menu nor the database
        html = env.get_template(template).render(
            base=base(request), db=str(db), auth=sessions.enabled, **values
        )
        return HTMLResponse(html, status_code=status)

    def error_page(request: Request, exc: UserError) -> HTMLResponse:
        status = 404 if isinstance(exc, NotFoundError) else 409
        return render(request, "error.html.jinja", status, message=exc.message, hint=exc.hint)

    def login_page(request: Request, problem: str, status: int) -> Response:
        here = request.url.path
        if request.url.query:
            here += "?" + request.url.query
        target = here if request.method == "GET" and here != f"{base(request)}/login" else ""
        return render(
            request, "login.html.jinja", status, problem=problem, next=target, inside=False
        )

    def safe_next(request: Request, target: str) -> str:
        # Only a page of this view: never another site ("//host", "/ui\\..", a scheme).
        home = base(request)
        if (
            target.startswith(home)
            and target[len(home) : len(home) + 1] in ("", "/", "?")
            and "//" not in target
            and "\\" not in target
        ):
            return target
        return home

    @contextmanager
    def store() -> Iterator[Store]:
        with Store(db) as s:
            yield s

    router = APIRouter(
        prefix="/ui",
        include_in_schema=False,
        route_class=_guarded_route(sessions, login_page),
    )

    @router.get("/static/ui.css", name="ui_stylesheet")
    def stylesheet() -> Response:
        return Response(
            (_UI_DIR / "ui.css").read_text("utf-8"),
            media_type="text/css",
            headers={"Cache-Control": "max-age=300"},
        )

    @router.get("/login", name="ui_login")
    def login_form(request: Request) -> Response:
        if not sessions.enabled:
            return RedirectResponse(base(request), status_code=303)
        return login_page(request, "", 200)

    @router.post("/login", name="ui_login_submit")
    async def login_submit(request: Request) -> Response:
        if not sessions.enabled:
            return RedirectResponse(base(request), status_code=303)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_LOGIN_BYTES:
                return login_page(request, "The request is too large.", 413)
        client = request.client.host if request.client else "?"
        wait = sessions.wait_s(client)
        if wait:
            # Checked before the key: guessing goes no faster for a right guess among wrong ones.
            response = login_page(
                request, f"Too many wrong keys from this address: try again in {wait} s.", 429
            )
            response.headers["Retry-After"] = str(wait)
            return response
        try:
            fields = parse_qs(
                body.decode("utf-8", errors="replace"), max_num_fields=8, strict_parsing=False
            )
        except ValueError:
            return login_page(request, "The form has too many fields.", 400)
        key = (fields.get("key") or [""])[0].strip()
        target = safe_next(request, (fields.get("next") or [""])[0])
        if not key or not sessions.key_ok(key):
            sessions.failed(client)
            return render(
                request,
                "login.html.jinja",
                401,
                problem="That key is not accepted.",
                next=target,
                inside=False,
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.open(),
            max_age=_SESSION_TTL_S,
            path=base(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout", name="ui_logout")
    async def logout(request: Request) -> Response:  # async: sessions change on the event loop only
        sessions.close(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse(f"{base(request)}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base(request), httponly=True, samesite="strict")
        return response

    @router.get("", name="ui_runs")
    def runs_page(request: Request) -> Response:
        with store() as s:
            rows = s.runs()
            kinds = {
                r.id: "system" if is_system_spec(s.get_run(r.id).spec) else "sampling" for r in rows
            }
        return render(request, "runs.html.jinja", runs=list(reversed(rows)), kinds=kinds)

    @router.get("/runs/{run_id}", name="ui_run")
    def run_page(request: Request, run_id: str) -> Response:
        try:
            with store() as s:
                info = s.get_run(run_id)
                system = is_system_spec(info.spec)
                traces = s.trace_rows(info.id) if system else []
                verifiers = s.verifiers(info.id)
        except UserError as exc:
            return error_page(request, exc)
        return render(
            request,
            "run.html.jinja",
            info=info,
            system=system,
            traces=traces,
            verifiers=verifiers,
            spec=info.spec.model_dump(mode="json"),
        )

    @router.get("/runs/{run_id}/report", name="ui_run_report")
    def run_report(request: Request, run_id: str) -> Response:
        from ponder.analysis import build_report, load_run, render_html

        try:
            with store() as s:
                data = load_run(s, run_id)
            html = render_html([build_report(data)])
        except UserError as exc:
            return error_page(request, exc)
        return HTMLResponse(html, headers={"Content-Security-Policy": _REPORT_CSP})

    @router.get("/runs/{run_id}/traces/{sample_id}", name="ui_run_trace")
    def run_trace(request: Request, run_id: str, sample_id: int) -> Response:
        try:
            with store() as s:
                info = s.get_run(run_id)
                row = next((r for r in s.trace_rows(info.id) if r.sample_id == sample_id), None)
                if row is None:
                    raise NotFoundError(f"run {info.id} has no trace for sample {sample_id}")
                trace = s.trace(sample_id)
        except UserError as exc:
            return error_page(request, exc)
        return render(request, "trace.html.jinja", info=info, row=row, trace=trace)

    @router.get("/requests", name="ui_requests")
    def requests_page(request: Request, page: int = 1) -> Response:
        page_no = max(page, 1)
        with store() as s:
            rows = s.server_requests(limit=_PAGE_SIZE + 1, offset=(page_no - 1) * _PAGE_SIZE)
        return render(
            request,
            "requests.html.jinja",
            requests=rows[:_PAGE_SIZE],
            page_no=page_no,
            more=len(rows) > _PAGE_SIZE,
        )

    @router.get("/requests/{request_id:path}", name="ui_request")
    def request_page(request: Request, request_id: str) -> Response:
        try:
            with store() as s:
                record: ServerRequest = s.server_request(request_id)
        except UserError as exc:
            return error_page(request, exc)
        trace: Trace | None = None
        unreadable = ""
        try:
            trace = record.parsed_trace()
        except ValidationError as exc:
            # Stored by another version of Ponder, say: show the rest, and the raw trace.
            unreadable = f"{exc.error_count()} field(s) do not match this version's Trace: {exc}"
        return render(
            request,
            "request.html.jinja",
            r=record,
            turns=_request_turns(record.request),
            choices=_response_choices(record.response),
            trace=trace,
            unreadable=unreadable,
        )

    return router
