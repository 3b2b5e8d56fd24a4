"""`reasoning-cluster dashboards push` against a loopback server that checks Grafana's
documented HTTP API contract (no Grafana server can be installed here).

The server follows https://grafana.com/docs/grafana/latest/developers/http_api/: bearer or
basic auth (401 `{"message": "Unauthorized"}`, 403 for a Viewer writing), data sources by name
and id (`GET /api/datasources/name/:name`, `POST /api/datasources`, `PUT /api/datasources/:id`),
folders by uid, and `POST /api/dashboards/db` with `{dashboard, folderUid|folderId, overwrite,
message}` answered with `{id, uid, url, status, version, slug}`.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cluster.cli import main
from monitoring.dashboards import build_dashboards
from monitoring.grafana import DATASOURCE_NAME, FOLDER_UID, PushError, connect, push

pytestmark = pytest.mark.unit

ADMIN_TOKEN = "glsa_admin"
VIEWER_TOKEN = "glsa_viewer"
BASIC = ("admin", "s3cret")


@dataclass
class GrafanaState:
    datasources: dict[int, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class ContractViolation(AssertionError):
    pass


class GrafanaContract(BaseHTTPRequestHandler):
    state: GrafanaState
    violations: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ---- plumbing -------------------------------------------------------------------

    def _reply(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _role(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if header == f"Bearer {ADMIN_TOKEN}":
            return "Admin"
        if header == f"Bearer {VIEWER_TOKEN}":
            return "Viewer"
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return "Admin" if (user, password) == BASIC else None
        return None

    def _body(self) -> dict[str, Any]:
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            self.violations.append(f"{self.command} {self.path} without Content-Type: application/json")
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        if not isinstance(body, dict):
            self.violations.append(f"{self.command} {self.path}: body is not a JSON object")
            return {}
        return body

    def _handle(self) -> None:
        self.state.requests.append((self.command, self.path))
        role = self._role()
        if role is None:
            self._reply(401, {"message": "Unauthorized"})
            return
        if self.command != "GET" and role == "Viewer":
            self._reply(403, {"message": "Permission denied"})
            return
        for pattern, handler in _ROUTES.get(self.command, ()):
            match = re.fullmatch(pattern, self.path)
            if match:
                handler(self, *match.groups())
                return
        self.violations.append(f"unknown endpoint {self.command} {self.path}")
        self._reply(404, {"message": "Not found"})

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    # ---- data sources -----------------------------------------------------------------

    def get_datasource_by_name(self, name: str) -> None:
        for ds in self.state.datasources.values():
            if ds["name"] == name:
                self._reply(200, ds)
                return
        self._reply(404, {"message": "Data source not found"})

    def _check_datasource(self, body: dict[str, Any]) -> None:
        for key in ("name", "type", "access", "url"):
            if not body.get(key):
                self.violations.append(f"datasource without {key}")
        if body.get("access") not in ("proxy", "direct"):
            self.violations.append(f"datasource access {body.get('access')!r}")

    def create_datasource(self) -> None:
        body = self._body()
        self._check_datasource(body)
        if any(ds["name"] == body.get("name") for ds in self.state.datasources.values()):
            self._reply(409, {"message": "data source with the same name already exists"})
            return
        ds_id = self.state.new_id()
        ds = {**body, "id": ds_id, "orgId": 1, "uid": body.get("uid") or f"ds{ds_id}", "version": 1}
        self.state.datasources[ds_id] = ds
        self._reply(200, {"datasource": ds, "id": ds_id, "message": "Datasource added", "name": ds["name"]})

    def update_datasource(self, raw_id: str) -> None:
        body = self._body()
        self._check_datasource(body)
        ds_id = int(raw_id)
        if ds_id not in self.state.datasources:
            self._reply(404, {"message": "Data source not found"})
            return
        old = self.state.datasources[ds_id]
        ds = {
            **body,
            "id": ds_id,
            "orgId": 1,
            "uid": body.get("uid") or old["uid"],
            "version": old["version"] + 1,
        }
        self.state.datasources[ds_id] = ds
        self._reply(200, {"datasource": ds, "id": ds_id, "message": "Datasource updated", "name": ds["name"]})

    # ---- folders --------------------------------------------------------------------------

    def get_folder(self, uid: str) -> None:
        folder = self.state.folders.get(uid)
        if folder is None:
            self._reply(404, {"message": "folder not found", "status": "not-found"})
        else:
            self._reply(200, folder)

    def create_folder(self) -> None:
        body = self._body()
        if not body.get("title"):
            self.violations.append("folder without title")
        uid = body.get("uid") or f"f{self.state.next_id}"
        if uid in self.state.folders:
            self._reply(409, {"message": "a folder with the same uid already exists"})
            return
        folder = {
            "id": self.state.new_id(),
            "uid": uid,
            "title": body["title"],
            "url": f"/dashboards/f/{uid}/",
        }
        self.state.folders[uid] = folder
        self._reply(200, folder)

    # ---- dashboards ---------------------------------------------------------------------------

    def save_dashboard(self) -> None:
        body = self._body()
        dashboard = body.get("dashboard")
        if not isinstance(dashboard, dict) or not dashboard.get("title"):
            self._reply(400, {"message": "Dashboard title cannot be empty"})
            return
        if not isinstance(body.get("overwrite", False), bool):
            self.violations.append("overwrite is not a boolean")
        folder_uid = body.get("folderUid")
        folder_id = body.get("folderId")
        if folder_uid is not None and folder_uid not in self.state.folders:
            self._reply(400, {"message": "folder not found"})
            return
        if folder_uid is None and folder_id not in (None, 0, *(f["id"] for f in self.state.folders.values())):
            self._reply(400, {"message": "folder not found"})
            return
        uid = dashboard.get("uid")
        existing = self.state.dashboards.get(uid) if uid else None
        if existing is not None and not body.get("overwrite"):
            self._reply(
                412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"}
            )
            return
        if dashboard.get("id") not in (None, existing["id"] if existing else None):
            self._reply(404, {"message": "Dashboard not found", "status": "not-found"})
            return
        dash_id = existing["id"] if existing else self.state.new_id()
        version = existing["version"] + 1 if existing else 1
        slug = re.sub(r"[^a-z0-9]+", "-", dashboard["title"].lower()).strip("-")
        stored = {**dashboard, "id": dash_id, "version": version}
        self.state.dashboards[uid] = {
            "id": dash_id,
            "version": version,
            "folderUid": folder_uid,
            "dashboard": stored,
            "message": body.get("message"),
        }
        self._reply(
            200,
            {
                "id": dash_id,
                "uid": uid,
                "url": f"/d/{uid}/{slug}",
                "status": "success",
                "version": version,
                "slug": slug,
            },
        )


_ROUTES = {
    "GET": [
        (r"/api/datasources/name/([^/]+)", GrafanaContract.get_datasource_by_name),
        (r"/api/folders/([^/]+)", GrafanaContract.get_folder),
    ],
    "POST": [
        (r"/api/datasources", GrafanaContract.create_datasource),
        (r"/api/folders", GrafanaContract.create_folder),
        (r"/api/dashboards/db", GrafanaContract.save_dashboard),
    ],
    "PUT": [(r"/api/datasources/(\d+)", GrafanaContract.update_datasource)],
}


@dataclass
class ContractServer:
    url: str
    state: GrafanaState
    violations: list[str]


@pytest.fixture
def grafana() -> Iterator[ContractServer]:
    state, violations = GrafanaState(), []
    handler = type("Handler", (GrafanaContract,), {"state": state, "violations": violations})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ContractServer(f"http://127.0.0.1:{server.server_address[1]}", state, violations)
    finally:
        server.shutdown()
        server.server_close()
    assert not violations, violations


def _snapshot(state: GrafanaState) -> dict[str, Any]:
    """What a Grafana user sees, without the version counters a save bumps."""
    return {
        "datasources": {
            i: {k: v for k, v in ds.items() if k != "version"} for i, ds in state.datasources.items()
        },
        "folders": state.folders,
        "dashboards": {
            uid: {"id": d["id"], "folderUid": d["folderUid"], "dashboard": {**d["dashboard"], "version": 0}}
            for uid, d in state.dashboards.items()
        },
    }


def test_push_creates_datasource_folder_and_dashboards(grafana: ContractServer) -> None:
    report = push(connect(grafana.url, api_key=ADMIN_TOKEN), "http://prometheus:9090", grafana.url)
    assert report.datasource == "created" and report.folder == "created"
    (datasource,) = grafana.state.datasources.values()
    assert datasource["name"] == DATASOURCE_NAME and datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090" and datasource["access"] == "proxy"
    assert set(grafana.state.dashboards) == {d["uid"] for d in build_dashboards().values()}
    for saved in grafana.state.dashboards.values():
        assert saved["folderUid"] == FOLDER_UID
        (variable,) = [v for v in saved["dashboard"]["templating"]["list"] if v["name"] == "datasource"]
        assert variable["current"]["value"] == datasource["uid"]
        assert len(saved["dashboard"]["panels"]) >= 8
    assert sorted(report.dashboards) == sorted(
        f"/d/{uid}/{re.sub(r'[^a-z0-9]+', '-', d['dashboard']['title'].lower()).strip('-')}"
        for uid, d in grafana.state.dashboards.items()
    )


def test_push_twice_is_idempotent(grafana: ContractServer) -> None:
    client = connect(grafana.url, api_key=ADMIN_TOKEN)
    push(client, "http://prometheus:9090", grafana.url)
    first = json.loads(json.dumps(_snapshot(grafana.state)))
    report = push(client, "http://prometheus:9090", grafana.url)
    assert report.datasource == "updated" and report.folder == "exists"
    assert json.loads(json.dumps(_snapshot(grafana.state))) == first
    assert all(d["version"] == 2 for d in grafana.state.dashboards.values())
    # A changed Prometheus URL updates the one datasource in place.
    push(client, "http://prom.monitoring:9090", grafana.url)
    (datasource,) = grafana.state.datasources.values()
    assert datasource["url"] == "http://prom.monitoring:9090"


def test_basic_auth_through_the_cli(grafana: ContractServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["dashboards", "push", "--grafana-url", grafana.url, "--user", BASIC[0], "--password", BASIC[1]]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"datasource {DATASOURCE_NAME}: created" in out and out.count("dashboard /d/") == 3


def test_push_presets_the_explorer_url(grafana: ContractServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://reasoning.example.com"
    code = main(
        ["dashboards", "push", "--grafana-url", grafana.url, "--api-key", ADMIN_TOKEN, "--explorer-url", url]
    )
    assert code == 0, capsys.readouterr().err
    for saved in grafana.state.dashboards.values():
        dashboard = saved["dashboard"]
        (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "explorer_url"]
        assert variable["query"] == variable["current"]["value"] == url
        assert "${explorer_url}/ui/" in {link["url"] for link in dashboard["links"]}


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        (["--api-key", "wrong"], "refused the credentials (401 Unauthorized)"),
        (["--user", "admin", "--password", "nope"], "refused the credentials (401 Unauthorized)"),
        (["--api-key", VIEWER_TOKEN], "denied the request (403 Forbidden)"),
    ],
)
def test_bad_credentials_give_one_clear_line(
    grafana: ContractServer, capsys: pytest.CaptureFixture[str], credentials: list[str], expected: str
) -> None:
    code = main(["dashboards", "push", "--grafana-url", grafana.url, *credentials])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert not grafana.state.datasources and not grafana.state.dashboards


def test_unreachable_grafana_gives_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    code = main(["dashboards", "push", "--grafana-url", f"http://127.0.0.1:{port}", "--api-key", "k"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"cannot reach Grafana at http://127.0.0.1:{port}" in err


def test_missing_credentials_and_bad_url_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFANA_API_KEY", raising=False)
    with pytest.raises(PushError, match="--api-key"):
        connect("http://127.0.0.1:3000")
    with pytest.raises(PushError, match="http://host:3000"):
        connect("grafana:3000", api_key="k")
