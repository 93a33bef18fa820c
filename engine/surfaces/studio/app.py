"""The studio's web server: a Starlette application over one `Workspace`.

Security as Jupyter does it: a random token in the address the command prints; every request for
the page or its data must carry it (the page's own requests send it in a header, which a page of
another site cannot set, so no cross-site request can save). Only the files the workspace loaded can
be written (an edit names a loaded file, never a path). Request bodies are bounded before they are
read. The page builds its DOM from text (never from HTML strings) under a Content-Security-Policy
that runs no inline script.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ...language.errors import KamError
from ...language.figures import Reader
from ...language.units import units_of
from ...run.service import explain
from ...run.impact import movers
from ...run.replay import replay
from ...run.workspace import Conflict, Evaluation, Workspace
from ..locales import figures_reader
from ..diff import render_text
from ..policy_tests import find_test_files, run_tests
from . import views
from .git import commit_on_branch, new_branch

log = logging.getLogger("kam.studio")
STATIC = Path(__file__).parent / "static"
ASSETS = {"studio.js": "text/javascript", "studio.css": "text/css"}
MAX_BODY = 2 * 1024 * 1024
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    """A request answered with an HTTP status and a message for the page (not a policy problem)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=HEADERS)


def _problems(exc: KamError) -> list[dict[str, Any]]:
    return [{"file": Path(p.loc.file).name, "line": p.loc.line, "col": p.loc.col, "severity": p.severity,
             "code": p.code, "message": p.message, "hint": p.hint, "path": []} for p in exc.problems]


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object, refused above MAX_BODY bytes before more is read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise Refused(413, f"a request of at most {MAX_BODY:,} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise Refused(413, f"a request of at most {MAX_BODY:,} bytes")
    try:
        body = json.loads(data or b"{}")
    except (ValueError, RecursionError):
        raise Refused(400, "the request is not JSON (or is nested too deeply)") from None
    if not isinstance(body, dict):
        raise Refused(400, "the request is a JSON object")
    edits = body.get("edits", [])
    if not isinstance(edits, list) or not all(isinstance(e, dict) for e in edits):
        raise Refused(400, "`edits` is a list of objects")
    return body


class Answers:
    """What each request of the page asks the workspace, as plain data (run in a worker thread: the
    workspace serialises its own work)."""

    def __init__(self, ws: Workspace, reader: Reader | None = None):
        self.ws = ws
        # the figures in the readers' locale: `kam studio --locale`, else the policies' `locale:`
        self.reader = reader or figures_reader(None, ws.plan.checked.policy_set)

    def state(self, body: dict[str, Any]) -> dict[str, Any]:
        ws = self.ws
        ws.refresh()  # a page opened or reloaded shows the files as they are on disk now
        return {"folder": str(ws.folder), "files": {n: s.sha for n, s in ws.sources.items()},
                "entities": ws.summary(self.reader), "inputs": {e: str(p) for e, p in ws.inputs.items()},
                "policies": [views.policy_view(n, t, ws.folder, ws.plan) for n, t in ws.texts().items()],
                "pareto": views.pareto(ws), "history": ws.history_path is not None,
                "tests": bool(find_test_files(ws.folder))}

    def evaluate(self, body: dict[str, Any]) -> dict[str, Any]:
        ev = self.ws.evaluate(body.get("edits", []))
        plan = ev.findings.plan or self.ws.plan
        return {"policies": [views.policy_view(n, t, self.ws.folder, plan) for n, t in ev.texts.items()],
                "impact": views.impact_view(self.ws, ev, self.reader)}

    def _compiled(self, body: dict[str, Any]) -> Evaluation:
        ev = self.ws.evaluate(body.get("edits", []))
        if not ev.ok or ev.findings.plan is None or ev.run is None:
            raise Refused(422, "the edited policies do not compile")
        return ev

    def tests(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            ev = self._compiled(body)
        except Refused:
            return {"skipped": "the edited policies do not compile"}
        assert ev.findings.plan is not None
        return views.tests_view(run_tests(ev.findings.plan, find_test_files(self.ws.folder)))

    def movers(self, body: dict[str, Any]) -> dict[str, Any]:
        ws, ev = self.ws, self._compiled(body)
        assert ev.run is not None and ev.findings.plan is not None
        entity, decision = str(body.get("entity", "")), str(body.get("decision", ""))
        if any(entity not in r.results or decision not in r.results[entity].decisions for r in (ev.run, ws.run)):
            raise Refused(404, f"no decision {decision!r} of {entity!r} in both versions")
        before, after = body.get("before"), body.get("after")
        count, rows = movers(ws.run, ev.run, ws.plan, ev.findings.plan, entity, decision,
                             None if before is None else str(before), None if after is None else str(after),
                             views.SHOWN_MOVERS)
        units = units_of(ev.findings.plan.checked.policy_set, entity)
        for r in rows:
            r["money_text"] = {k: views.money(v, units.get(k), self.reader) for k, v in r["money"].items()}
        return {"count": count, "count_text": views.count(count, self.reader), "shown": len(rows), "rows": rows,
                "labels": {k: views.label(k, units.get(k), self.reader) for k in (rows[0]["money"] if rows else {})}}

    def explain(self, body: dict[str, Any]) -> dict[str, Any]:
        ev = self.ws.evaluate(body.get("edits", []))
        key = str(body.get("id", "")).strip()
        before = explain(self.ws.run, key)
        after = explain(ev.run, key) if ev.ok and ev.run is not None else None
        return {"id": key, "before": before.render_text(),
                "after": after.render_text() if after is not None else "the edited policies do not compile"}

    def save(self, body: dict[str, Any]) -> dict[str, Any]:
        loaded = body.get("loaded") or {}
        if not isinstance(loaded, dict):
            raise Refused(400, "`loaded` maps file names to the sha256 the page loaded")
        ev = self.ws.evaluate(body.get("edits", []))
        impact = render_text(ev.comparison, markdown=True, reader=self.reader) if ev.comparison is not None else ""
        branch = str(body.get("branch") or "")
        if body.get("commit"):
            branch = new_branch(self.ws.folder, branch)[1]  # a branch that cannot be made stops the save
        saved = self.ws.save(body.get("edits", []), {str(k): str(v) for k, v in loaded.items()})
        out: dict[str, Any] = {"saved": saved, "files": {n: s.sha for n, s in self.ws.sources.items()}}
        if body.get("commit") and saved:
            title = str(body.get("message") or "").strip() or f"Policy change: {', '.join(saved)}"
            try:
                out["commit"] = commit_on_branch(self.ws.folder, saved, branch, f"{title}\n\n{impact}")
            except KamError as exc:  # saved all the same: say so, and why the commit was not made
                out["commit_error"] = exc.problems[0].message
        return out

    def history(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.ws.history_path is None:
            raise Refused(404, "kam studio was started without --history FILE")
        ev = self._compiled(body)
        assert ev.findings.plan is not None
        ps = ev.findings.plan.checked.policy_set
        return views.replay_view(replay(self.ws.history_path, ev.findings.plan), self.reader,
                                 {e: units_of(ps, e) for e in ps.entities})


def make_app(ws: Workspace, token: str, hosts: tuple[str, ...] = (), reader: Reader | None = None) -> Starlette:
    """The application; `hosts` are the Host headers it answers (none: any, behind --host); `reader`:
    the locale its figures are written in (the policies' `locale:` unless given)."""
    answers = Answers(ws, reader)

    def refused(request: Request, api: bool) -> Response | None:
        if hosts and request.headers.get("host", "") not in hosts:
            return PlainTextResponse("unknown host", status_code=421, headers=HEADERS)
        given = request.headers.get("x-kam-token", "") if api else request.query_params.get("token", "")
        if secrets.compare_digest(given.encode(), token.encode()):
            return None
        text = "kam studio needs its token: open the address `kam studio` printed, with ?token=… at the end"
        return _json({"error": text}, 403) if api else PlainTextResponse(text, 403, headers=HEADERS)

    def api(answer: Callable[[dict[str, Any]], dict[str, Any]], post: bool = True) -> Route:
        async def endpoint(request: Request) -> Response:
            no = refused(request, True)
            if no is not None:
                return no
            try:
                body = await _body(request) if post else {}
                return _json(await run_in_threadpool(answer, body))
            except Refused as exc:
                return _json({"error": exc.message}, exc.status)
            except Conflict as exc:
                return _json({"error": "conflict", "problems": _problems(exc)}, 409)
            except KamError as exc:
                return _json({"error": exc.problems[0].message if exc.problems else str(exc),
                              "problems": _problems(exc)}, 422)
            except Exception as exc:  # a defect: said to the page in one line, logged whole here
                log.exception("kam studio could not answer %s", request.url.path)
                return _json({"error": f"kam studio could not answer ({type(exc).__name__}); the details are "
                              "in the terminal that runs it"}, 500)
        return Route(f"/api/{answer.__name__}", endpoint, methods=["POST"] if post else ["GET"])

    async def page(request: Request) -> Response:
        no = refused(request, False)
        return no or FileResponse(STATIC / "studio.html", media_type="text/html", headers=HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("not found", 404, headers=HEADERS)
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)

    return Starlette(routes=[
        Route("/", page), Route("/static/{name}", asset), api(answers.state, post=False),
        *(api(a) for a in (answers.evaluate, answers.tests, answers.movers, answers.explain, answers.save,
                           answers.history)),
    ])
