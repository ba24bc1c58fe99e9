"""The browser view (`/ui`) of `ponder serve`: a real store, a real uvicorn server on 127.0.0.1, and
headless Chromium (Debian's, driven by Python playwright) for what a person sees; httpx for escaping
and access control.

The browser tests fail (never skip) where Chromium or playwright is missing: `scripts/setup.sh --dev`
installs both.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from ponder.backends import ScriptedBackend
from ponder.errors import UserError
from ponder.records import SamplingParams
from ponder.runs import sample_run, system_run, verify_run
from ponder.serve import SESSION_COOKIE, ui_router
from ponder.store import ServerRequest, Store
from ponder.systems import SearchTree, System, TreeNode
from ponder.verify import MathVerifier
from tests._browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests._fakes import arithmetic
from tests._trees import APPLES, DEEP_STEPS, WINNING_STEPS, store_search_trace

KEY = "pk-test-0123456789abcdef"
EVIL = "The answer is <script>alert('pwned')</script> <b>bold</b> #### 4"
SYSTEM = {
    "name": "gen-critique-vote",
    "layers": [{"type": "generate", "n": 3}, {"type": "critique"}, {"type": "vote"}],
}


@dataclass(frozen=True)
class Data:
    db: Path
    sampling_run: str
    system_run: str
    unverified_run: str
    trace_sample: int
    request_id: str
    tree_run: str  # a system run whose answer's trace has a search tree (tests/_trees.py)
    tree_sample: int


def _answer(prompt: Any, i: int, params: SamplingParams) -> str:
    # Right for even sample indices, wrong for odd ones: a run with something to report.
    question = prompt[-1].content
    n = int(re.findall(r"\d+", question)[0])
    return f"Working on it. #### {2 * n if i % 2 == 0 else 2 * n + 1}"


def _build(db: Path) -> Data:
    task = arithmetic(3)
    problems = task.problems()

    async def fill() -> tuple[str, str, str, Any]:
        with Store(db) as store:
            sampled = await sample_run(
                store, ScriptedBackend(fn=_answer), task, problems, 4, SamplingParams(max_tokens=16)
            )
            unverified = await sample_run(
                store,
                ScriptedBackend(fn=_answer, name="other"),
                task,
                problems,
                2,
                SamplingParams(max_tokens=16),
            )
            async with System.from_dict(SYSTEM, default_backend=ScriptedBackend(fn=_answer)) as s:
                answered = await system_run(store, s, task, problems, concurrency=1)
        backend = ScriptedBackend(outputs=[EVIL, "I think #### 5", "#### 4"])
        async with System.from_dict(SYSTEM, default_backend=backend) as s:
            result = await s.arun("What is 2+2? Show <i>working</i>.")
        return sampled.run_id, unverified.run_id, answered.run_id, result

    sampled, unverified, answered, result = asyncio.run(fill())
    with Store(db) as store, MathVerifier() as verifier:
        verify_run(store, sampled, verifier)
        verify_run(store, answered, verifier)
        trace_sample = store.trace_rows(answered)[0].sample_id
        base: dict[str, Any] = {
            "endpoint": "/v1/chat/completions",
            "status": 200,
            "latency_s": 0.31,
            "request": {
                "model": "gen-critique-vote",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is 2+2? Show <i>working</i>."},
                ],
            },
        }
        store.add_server_request(
            ServerRequest(
                id="tr-system",
                created_at=time.time() - 60,
                model="gen-critique-vote",
                system="gen-critique-vote",
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
                calls=result.usage.calls,
                response={
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": result.answer},
                        }
                    ]
                },
                trace=result.trace.model_dump(mode="json"),
                **base,
            )
        )
        store.add_server_request(
            ServerRequest(
                id="tr-pass",
                created_at=time.time() - 30,
                model="smollm2-135m",
                calls=1,
                prompt_tokens=12,
                completion_tokens=3,
                response={
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "tool_calls",
                            "message": {
                                "role": "assistant",
                                "content": None,
                                "tool_calls": [
                                    {
                                        "id": "call_1",
                                        "type": "function",
                                        "function": {"name": "add", "arguments": '{"a": 2}'},
                                    }
                                ],
                            },
                        }
                    ]
                },
                **base,
            )
        )
        store.add_server_request(
            ServerRequest(
                id="tr-failed",
                created_at=time.time(),
                model="smollm2-135m",
                error="backend failed: <engine> crashed",
                **{**base, "status": 502},
            )
        )
    tree_run, _, tree_sample = store_search_trace(db, task)
    return Data(db, sampled, answered, unverified, trace_sample, "tr-system", tree_run, tree_sample)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    # In a thread of its own: playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_build, tmp_path_factory.mktemp("ui") / "ponder.db").result()


class _Server:
    """FastAPI + the UI router under uvicorn on 127.0.0.1, in a thread of this process."""

    def __init__(self, db: Path, keys: tuple[str, ...]) -> None:
        app = FastAPI()
        app.include_router(ui_router(db, api_keys=keys))
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> _Server:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture(scope="module")
def open_server(data: Data) -> Iterator[str]:
    with _Server(data.db, ()) as server:
        yield server.url


@pytest.fixture(scope="module")
def keyed_server(data: Data) -> Iterator[str]:
    with _Server(data.db, ("another-key-that-is-valid", KEY)) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Missing Chromium or playwright is a failure, not a skip: `scripts/setup.sh --dev` installs both.
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield pg
    context.close()
    assert dialogs == [], f"a script ran in the page: {dialogs}"


# ----- headless Chromium ------------------------------------------------------------------------


def test_runs_table_and_a_runs_report_render_in_chromium(
    page: Any, open_server: str, data: Data
) -> None:
    response = page.goto(f"{open_server}/ui")
    assert response.status == 200
    table = page.locator("table.runs")
    for run_id in (data.sampling_run, data.system_run, data.unverified_run):
        assert table.get_by_text(run_id, exact=True).is_visible()
    row = table.locator("tr", has=page.get_by_text(data.system_run, exact=True))
    assert "system" in row.inner_text()
    # The stylesheet is applied (the page is not unstyled HTML).
    header_bg = page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
    assert header_bg != "rgba(0, 0, 0, 0)"

    table.get_by_text(data.sampling_run, exact=True).click()
    page.wait_for_url(f"**/ui/runs/{data.sampling_run}")
    report = page.frame_locator("iframe.report")
    report.locator("h1").wait_for()
    assert "Ponder report" in report.locator("h1").inner_text()
    assert report.locator("svg").count() >= 1  # the charts
    assert data.sampling_run in report.locator("table").first.inner_text()


def test_a_request_trace_is_a_collapsible_tree_in_chromium(
    page: Any, open_server: str, data: Data
) -> None:
    page.goto(f"{open_server}/ui/requests")
    page.get_by_text(data.request_id, exact=True).click()
    page.wait_for_url(f"**/ui/requests/{data.request_id}")
    assert page.locator("script").count() == 0  # the model's <script> is text, not an element

    trace = page.locator(".trace")
    generate = trace.locator("details.event > summary", has_text="generate")
    critique = trace.locator("details.event > summary", has_text="critique")
    assert generate.is_visible() and critique.is_visible()  # components, in open layers
    event = trace.locator("details.event").first  # layer 0: generate
    output = event.locator(".output").get_by_text("I think #### 5", exact=True)
    assert output.count() == 1 and not output.is_visible()  # inside a closed component
    generate.click()
    call = event.locator("details.call > summary")
    assert "generate" in generate.inner_text()
    assert call.is_visible() and "generate" in call.inner_text()
    assert not output.is_visible()  # inside a closed call
    call.click()
    assert output.is_visible()
    evil = event.locator(".output").get_by_text("<script>alert('pwned')</script>")
    assert evil.is_visible()  # shown as text
    # Closing the component hides its calls again.
    generate.click()
    assert not output.is_visible()
    assert "<i>working</i>" in page.locator(".turn.role-user").first.inner_text()
    page.screenshot(path=str(data.db.parent / "request.png"), full_page=True)


def test_a_system_run_trace_opens_from_its_run_page_in_chromium(
    page: Any, open_server: str, data: Data
) -> None:
    page.goto(f"{open_server}/ui/runs/{data.system_run}")
    page.locator("table.traces a").first.click()
    page.wait_for_url(f"**/ui/runs/{data.system_run}/traces/*")
    summary = page.locator("details.event > summary", has_text="vote")
    assert summary.is_visible()
    assert page.locator(".answer").get_by_text("Working on it.").is_visible()


def test_a_search_tree_is_a_collapsible_list_with_the_winning_path_open_in_chromium(
    page: Any, open_server: str, data: Data
) -> None:
    page.goto(f"{open_server}/ui/runs/{data.tree_run}")
    page.locator("table.traces a").first.click()
    page.wait_for_url(f"**/ui/runs/{data.tree_run}/traces/{data.tree_sample}")
    assert page.locator("script").count() == 0
    tree = page.locator("details.search")
    head = tree.locator("> summary")
    assert head.is_visible() and "winning path #0 → #3 → #8 → #14" in head.inner_text()
    assert "20 nodes" in head.inner_text() and "scorer judge (min)" in head.inner_text()

    # The winning path is open, marked and green; nodes show their scores, values and visits.
    won = tree.locator("li.search-node.won")
    assert won.count() == 4
    for i in range(4):
        assert won.nth(i).locator(".won-mark").first.is_visible()
    green = "rgb(6, 118, 71)"  # --ok in ui.css
    for step in WINNING_STEPS:
        line = tree.locator("li.won", has=page.get_by_text(step, exact=True)).last
        assert line.get_by_text(step, exact=True).is_visible()
        shown = line.locator("> details > summary, > .line")
        assert shown.evaluate("e => getComputedStyle(e).color") == green, step
    answer = tree.locator("li.won.leaf > .line")
    assert " ".join(answer.inner_text().split()) == (
        "★ #14 The answer is 6. #### 6 score 0.99 value 0.7 visits 3 terminal chosen #1"
    )
    guess = tree.locator("li.search-node", has=page.get_by_text("Guess 7.", exact=True)).last
    assert guess.is_visible() and "visits 1" in guess.inner_text()
    assert guess.locator("> .line").evaluate("e => getComputedStyle(e).color") != green
    assert guess.locator(".won-mark").count() == 0
    # Best child first: #9 (value .95) before the winning #8 (.6); every node is there (no cut).
    steps = tree.locator(".step").all_inner_texts()
    assert steps.index("So 3 boxes hold 7.") < steps.index(WINNING_STEPS[1])
    assert len(steps) == 19  # every node but the root
    truncated = tree.locator("li.search-node", has=page.get_by_text("Start over.", exact=True))
    assert "truncated" in truncated.last.inner_text()

    # Model text is text: the step with <b>apples</b> makes no <b> element.
    apples = tree.get_by_text(APPLES, exact=True)
    assert apples.is_visible() and tree.locator(".step b").count() == 0
    # Off the winning path a branch is closed until opened.
    deep = tree.get_by_text(DEEP_STEPS[3], exact=True)
    assert deep.count() == 1 and not deep.is_visible()
    for step in (APPLES, "Apples come in boxes.", *DEEP_STEPS[:3]):
        tree.locator("summary", has=page.get_by_text(step, exact=True)).click()
    assert deep.is_visible()
    leaf = tree.locator("li.leaf", has=page.get_by_text(DEEP_STEPS[3], exact=True))
    assert "chosen #2" in leaf.inner_text()
    # Closing the root hides the whole tree but its head.
    tree.locator("li.won > details > summary").first.click()
    assert not tree.get_by_text(WINNING_STEPS[2], exact=True).is_visible() and head.is_visible()
    page.screenshot(path=str(data.db.parent / "search-tree.png"), full_page=True)


def test_login_with_a_key_in_chromium(page: Any, keyed_server: str, data: Data) -> None:
    response = page.goto(f"{keyed_server}/ui/requests")
    assert response.status == 401
    assert page.locator("form.login").is_visible()
    assert page.get_by_text(data.request_id).count() == 0

    page.fill("#key", "not-the-key")
    page.click("form.login button")
    assert page.get_by_role("alert").inner_text() == "That key is not accepted."
    assert page.locator("table.requests").count() == 0
    assert "not-the-key" not in page.content()  # the key is never echoed

    page.fill("#key", KEY)
    page.click("form.login button")
    page.wait_for_url(f"{keyed_server}/ui/requests")  # back where the login was asked for
    assert page.get_by_text(data.request_id, exact=True).is_visible()
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        SESSION_COOKIE,
        True,
        "Strict",
    )
    assert KEY not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HTTP-only: no script can read it
    page.goto(f"{keyed_server}/ui")
    assert page.get_by_text(data.sampling_run, exact=True).is_visible()
    page.goto(
        f"{keyed_server}/ui/runs/{data.sampling_run}"
    )  # the report's frame has the cookie too
    assert "Ponder report" in page.frame_locator("iframe.report").locator("h1").inner_text()

    page.click("form.logout button")
    page.wait_for_url(f"{keyed_server}/ui/login")
    assert page.goto(f"{keyed_server}/ui").status == 401


# ----- plain HTTP ---------------------------------------------------------------------------------


def test_model_output_and_client_input_are_escaped(open_server: str, data: Data) -> None:
    r = httpx.get(f"{open_server}/ui/requests/{data.request_id}")
    assert r.status_code == 200
    assert "<script" not in r.text.lower()
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in r.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in r.text and "<b>bold</b>" not in r.text
    assert "Show &lt;i&gt;working&lt;/i&gt;" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    failed = httpx.get(f"{open_server}/ui/requests")
    assert "backend failed: &lt;engine&gt; crashed" in failed.text
    passed = httpx.get(f"{open_server}/ui/requests/tr-pass")
    assert "(pass-through to the model)" in passed.text
    assert "tool call call_1: add({&#34;a&#34;: 2})" in passed.text


def test_a_search_trees_model_text_is_escaped(open_server: str, data: Data) -> None:
    r = httpx.get(f"{open_server}/ui/runs/{data.tree_run}/traces/{data.tree_sample}")
    assert r.status_code == 200
    assert "&lt;b&gt;apples&lt;/b&gt; [bold]not markup[/bold]" in r.text
    assert "<b>apples</b>" not in r.text
    assert r.text.count('class="search-node') == 20


class _Nesting(HTMLParser):
    """Each search-tree node's id (``#N``) and the id of the node whose list it sits in."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[int | None] = []  # the <li> elements open now: node id, or None
        self.parents: dict[int, int | None] = {}
        self._in_id = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "li":
            self.open.append(None)
        self._in_id = tag == "span" and "node-id" in classes

    def handle_endtag(self, tag: str) -> None:
        if tag == "li":
            self.open.pop()
        self._in_id = False

    def handle_data(self, data: str) -> None:
        if self._in_id:
            node = int(data.lstrip("#"))
            enclosing = [i for i in self.open[:-1] if i is not None]
            self.parents[node] = enclosing[-1] if enclosing else None
            self.open[-1] = node


def test_a_deep_search_tree_nests_as_the_tree_does(tmp_path: Path) -> None:
    # A 300-step chain under a bushy root: the page nests no deeper than the tree, and no
    # template recursion limits how deep a tree can be.
    nodes = [TreeNode(id=0)]
    for i in range(1, 41):
        nodes.append(TreeNode(id=i, parent=0, depth=1, text=f"<i>step</i> {i}", score=i / 40))
    for i in range(41, 341):
        parent = nodes[-1] if i > 41 else nodes[7]
        nodes.append(TreeNode(id=i, parent=parent.id, depth=parent.depth + 1, text=f"s{i}"))
    tree = SearchTree(strategy="beam_search", scorer="python", nodes=nodes, chosen=[340])
    db = tmp_path / "deep.db"
    run_id, _, sample_id = store_search_trace(db, arithmetic(1), tree)
    with _Server(db, ()) as server:
        page = httpx.get(f"{server.url}/ui/runs/{run_id}/traces/{sample_id}")
    assert page.status_code == 200
    nesting = _Nesting()
    nesting.feed(page.text)
    assert nesting.parents == {n.id: n.parent for n in nodes}
    assert page.text.count("<details") == page.text.count("</details>")
    assert "&lt;i&gt;step&lt;/i&gt; 40" in page.text and "<i>step" not in page.text
    # The root's children best first: by score here (no values), #40 first, #1 last.
    order = re.findall(r'<span class="node-id">#(\d+)</span>', page.text)
    roots_kids = [int(i) for i in order if 1 <= int(i) <= 40]
    assert roots_kids == list(range(40, 0, -1))


def test_missing_things_are_404_and_an_unverified_run_says_how_to_verify(
    open_server: str, data: Data
) -> None:
    for path in ("/ui/runs/zzzz", "/ui/requests/tr-nope", "/ui/runs/zzzz/report"):
        r = httpx.get(open_server + path)
        assert r.status_code == 404, path
        assert "Not available" in r.text
    other = httpx.get(f"{open_server}/ui/runs/{data.sampling_run}/traces/{data.trace_sample}")
    assert other.status_code == 404  # that trace belongs to the system run
    mine = httpx.get(f"{open_server}/ui/runs/{data.system_run}/traces/{data.trace_sample}")
    assert mine.status_code == 200 and "gen-critique-vote" in mine.text
    report = httpx.get(f"{open_server}/ui/runs/{data.unverified_run}/report")
    assert report.status_code == 409
    assert "ponder verify" in report.text
    assert httpx.get(f"{open_server}/ui/runs/{data.unverified_run}").status_code == 200
    full = httpx.get(f"{open_server}/ui/runs/{data.sampling_run}/report")
    assert full.status_code == 200 and "Coverage and selection" in full.text


def test_without_keys_every_page_is_open(open_server: str) -> None:
    r = httpx.get(f"{open_server}/ui/login")
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    assert httpx.get(f"{open_server}/ui").status_code == 200


def test_with_keys_pages_need_the_session_cookie(keyed_server: str, data: Data) -> None:
    pages = [
        "/ui",
        "/ui/requests",
        f"/ui/requests/{data.request_id}",
        f"/ui/runs/{data.sampling_run}",
        f"/ui/runs/{data.sampling_run}/report",
        f"/ui/runs/{data.system_run}/traces/{data.trace_sample}",
    ]
    with httpx.Client(base_url=keyed_server) as anon:
        for path in pages:
            r = anon.get(path)
            assert r.status_code == 401, path
            assert 'name="key"' in r.text
            assert "<table" not in r.text and str(data.db) not in r.text
        assert anon.get("/ui/static/ui.css").status_code == 200  # the login page's style
        assert anon.post("/ui/logout").status_code == 401

        wrong = anon.post("/ui/login", data={"key": KEY + "x", "next": "/ui"})
        assert wrong.status_code == 401 and KEY not in wrong.text
        assert "set-cookie" not in wrong.headers
        big = anon.post("/ui/login", data={"key": "k" * 9000})
        assert big.status_code == 413
        # Only a page of this view is a target after login: never another site.
        for target in ("//evil.example/ui", "https://evil.example/", "/uix", "/ui/..\\x"):
            r = anon.post("/ui/login", data={"key": KEY, "next": target})
            assert (r.status_code, r.headers["location"]) == (303, "/ui"), target

    with httpx.Client(base_url=keyed_server) as user:
        r = user.post("/ui/login", data={"key": f"  {KEY}\n", "next": "/ui/requests?page=1"})
        assert (r.status_code, r.headers["location"]) == (303, "/ui/requests?page=1")
        set_cookie = r.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert "path=/ui" in set_cookie and KEY.lower() not in set_cookie
        token = user.cookies[SESSION_COOKIE]
        for path in pages:
            assert user.get(path).status_code == 200, path
        assert user.post("/ui/logout").status_code == 303
    # A logged-out session's token is dead even to a client that kept it.
    for cookie in (token, "made-up", ""):
        with httpx.Client(base_url=keyed_server, cookies={SESSION_COOKIE: cookie}) as kept:
            assert kept.get("/ui").status_code == 401


def test_wrong_keys_from_one_address_are_throttled(data: Data) -> None:
    with _Server(data.db, (KEY,)) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/ui/login", data={"key": "a=1&" * 20}).status_code == 401
        assert client.post("/ui/login", content=b"&".join([b"x=1"] * 9)).status_code == 400
        for i in range(9):
            assert client.post("/ui/login", data={"key": f"guess-{i}"}).status_code == 401
        # Ten wrong keys in a minute: the eleventh try waits, even with the right key.
        refused = client.post("/ui/login", data={"key": KEY})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "try again in" in refused.text and "set-cookie" not in refused.headers


def test_an_empty_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="empty"):
        ui_router(tmp_path / "x.db", api_keys=["good", ""])


def test_requests_are_paged_newest_first(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    with Store(db) as store:
        for i in range(53):
            store.add_server_request(
                ServerRequest(
                    id=f"req-{i:02d}",
                    created_at=1000.0 + i,
                    endpoint="/v1/completions",
                    model="m",
                    status=200,
                    latency_s=0.1,
                    request={"model": "m", "prompt": f"prompt {i}"},
                )
            )
        store.add_server_request(
            ServerRequest(
                id="odd-trace",
                created_at=1.0,
                endpoint="/v1/chat/completions",
                model="s",
                system="s",
                status=200,
                latency_s=0.1,
                request={"model": "s", "messages": [{"role": "user", "content": "hi"}]},
                trace={"system": "s", "layers": "not a list"},
            )
        )
    with _Server(db, ()) as server:
        first = httpx.get(f"{server.url}/ui/requests").text
        second = httpx.get(f"{server.url}/ui/requests?page=2").text
        past = httpx.get(f"{server.url}/ui/requests?page=9").text
        one = httpx.get(f"{server.url}/ui/requests/req-07").text
        odd = httpx.get(f"{server.url}/ui/requests/odd-trace")
    first_ids = re.findall(r"<code>(req-\d+)</code>", first)
    assert first_ids == [f"req-{i:02d}" for i in range(52, 2, -1)]
    assert re.findall(r"<a href=\"/ui/requests/([^\"]+)\"", second) == [
        "req-02",
        "req-01",
        "req-00",
        "odd-trace",
    ]
    assert "page=2" in first and "page=1" in second and "page=3" not in second
    assert "No requests on page 9" in past
    assert "prompt 7" in one and "(no answer stored)" in one
    # A trace this version cannot read (another Ponder wrote it) still shows the rest, and the raw trace.
    assert odd.status_code == 200
    assert "The stored trace cannot be read" in odd.text and "not a list" in odd.text
