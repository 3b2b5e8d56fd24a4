"""Push the Prometheus datasource and the dashboards to Grafana with the `grafana-api` client.

Idempotent: the datasource is found by name and updated in place (or created), the folder is
found by uid (or created), and every dashboard is posted with `overwrite: true` under its
fixed uid, so pushing twice leaves Grafana as pushing once did.

`reasoning-cluster dashboards push` calls `push_command` (named by import path, since
`cluster` imports nothing from `monitoring`).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from grafana_api.grafana_api import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError
from grafana_api.grafana_face import GrafanaFace

from monitoring.dashboards import DATASOURCE_VAR, EXPLORER_VAR, build_dashboards

DATASOURCE_NAME = "reasoning-cluster-prometheus"
DATASOURCE_UID = "reasoning-cluster-prometheus"
FOLDER_UID = "reasoning-cluster"
FOLDER_TITLE = "reasoning-cluster"
DEFAULT_PROMETHEUS_URL = "http://prometheus:9090"


class PushError(RuntimeError):
    """A push that could not be done; its message is one line meant for the operator."""


@dataclass
class PushReport:
    datasource: str = ""
    folder: str = ""
    dashboards: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"datasource {DATASOURCE_NAME}: {self.datasource}",
            f"folder {FOLDER_UID}: {self.folder}",
            *(f"dashboard {url}" for url in self.dashboards),
        ]


def connect(
    grafana_url: str,
    api_key: str | None = None,
    user: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> GrafanaFace:
    parts = urlsplit(grafana_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(f"--grafana-url must look like http://host:3000, not {grafana_url!r}")
    if api_key:
        auth: Any = api_key
    elif user is not None and password is not None:
        auth = (user, password)
    else:
        raise PushError("give --api-key (or GRAFANA_API_KEY), or --user and --password")
    prefix = parts.path.strip("/")
    return GrafanaFace(
        auth,
        host=parts.hostname,
        port=parts.port,
        url_path_prefix=f"{prefix}/" if prefix else "",
        protocol=parts.scheme,
        timeout=timeout_s,
    )


def datasource_body(prometheus_url: str, scrape_interval: str = "15s") -> dict[str, Any]:
    return {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": scrape_interval},
    }


def push(
    grafana: GrafanaFace,
    prometheus_url: str,
    grafana_url: str = "Grafana",
    scrape_interval: str = "15s",
    explorer_url: str | None = None,
) -> PushReport:
    """Create or update the datasource, the folder and the dashboards."""
    try:
        return _push(grafana, prometheus_url, scrape_interval, explorer_url)
    except GrafanaUnauthorizedError as exc:
        raise PushError(
            f"{grafana_url} refused the credentials (401 Unauthorized): check --api-key or --user/--password"
        ) from exc
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise PushError(
                f"{grafana_url} denied the request (403 Forbidden): the key or user needs the Admin role "
                "to manage datasources and Editor to save dashboards"
            ) from exc
        raise PushError(f"{grafana_url} rejected the request: {_one_line(exc.message)}") from exc
    except GrafanaException as exc:
        raise PushError(f"{grafana_url} failed: {_one_line(exc.message)}") from exc
    except requests.exceptions.RequestException as exc:
        raise PushError(
            f"cannot reach Grafana at {grafana_url} ({type(exc).__name__}): is it running, is the URL right?"
        ) from exc


def _push(
    grafana: GrafanaFace, prometheus_url: str, scrape_interval: str, explorer_url: str | None
) -> PushReport:
    report = PushReport()
    body = datasource_body(prometheus_url, scrape_interval)
    existing = _get_or_none(grafana, f"/datasources/name/{quote(DATASOURCE_NAME, safe='')}")
    if existing is None:
        grafana.datasource.create_datasource(body)
        report.datasource = "created"
    else:
        grafana.datasource.update_datasource(
            existing["id"], {**body, "uid": existing.get("uid", DATASOURCE_UID)}
        )
        report.datasource = "updated"
    datasource_uid = existing.get("uid", DATASOURCE_UID) if existing else DATASOURCE_UID

    folder = _get_or_none(grafana, f"/folders/{FOLDER_UID}")
    if folder is None:
        folder = grafana.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.folder = "created"
    else:
        report.folder = "exists"

    for dashboard in build_dashboards().values():
        saved = grafana.dashboard.update_dashboard(
            {
                "dashboard": with_datasource(dashboard, datasource_uid, explorer_url),
                "folderUid": FOLDER_UID,
                "folderId": folder.get("id", 0),
                "overwrite": True,
                "message": "pushed by reasoning-cluster dashboards push",
            }
        )
        report.dashboards.append(str(saved.get("url") or saved.get("uid") or dashboard["uid"]))
    return report


def with_datasource(
    dashboard: dict[str, Any], datasource_uid: str, explorer_url: str | None = None
) -> dict[str, Any]:
    """The dashboard with its datasource variable preset to the pushed datasource (and its
    explorer links to `explorer_url` when given)."""
    pushed = copy.deepcopy(dashboard)
    pushed["id"] = None
    for variable in pushed["templating"]["list"]:
        if variable["name"] == DATASOURCE_VAR:
            variable["current"] = {"selected": True, "text": DATASOURCE_NAME, "value": datasource_uid}
        elif variable["name"] == EXPLORER_VAR and explorer_url:
            variable["query"] = explorer_url
            variable["current"] = {"selected": False, "text": explorer_url, "value": explorer_url}
    return pushed


def _get_or_none(grafana: GrafanaFace, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = grafana.api.GET(path)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise
    return found


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


# ---- the CLI sub-command -----------------------------------------------------------------


def push_command(args: argparse.Namespace) -> int:
    """Run `dashboards push`; prints what it did, or one `error:` line and returns 2."""
    api_key = args.api_key or (None if args.user else os.environ.get("GRAFANA_API_KEY"))
    try:
        grafana = connect(args.grafana_url, api_key, args.user, args.password, args.timeout)
        report = push(grafana, args.prometheus_url, args.grafana_url, explorer_url=args.explorer_url)
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    for line in report.lines():
        print(line)
    return 0
