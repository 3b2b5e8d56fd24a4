"""Merge the chart's config (ConfigMap) with its auth section (Secret) and validate the result.

Run by the `render-config` init container of every Ray pod:
    python merge_config.py CONFIG.yaml AUTH.yaml OUT.yaml
AUTH.yaml holds the config's `auth` section ({tenants: {...}, ops: {...}, allow_anonymous: ...});
a missing or empty file means no tenants. The result is loaded with the app's own loader
(cluster.config.load_config: packaged defaults, the file over them, validation), so a config
the app would refuse stops the pod here, with pydantic's message, before Ray starts.
"""

import sys
from pathlib import Path

import yaml


def merge(config_path: str, auth_path: str) -> dict:
    config = yaml.safe_load(Path(config_path).read_text()) or {}
    auth_file = Path(auth_path)
    auth = (yaml.safe_load(auth_file.read_text()) if auth_file.exists() else None) or {}
    if not isinstance(auth, dict):
        raise SystemExit(f"{auth_path}: the auth section must be a mapping, got {type(auth).__name__}")
    config["auth"] = auth
    return config


def main() -> None:
    config_path, auth_path, out_path = sys.argv[1:4]
    config = merge(config_path, auth_path)
    out = Path(out_path)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    out.chmod(0o640)
    try:
        from cluster.config import load_config
    except ImportError:  # the app is not installed in this image: leave validation to the app
        load_config = None
    if load_config is not None:
        try:
            load_config(out)
        except ValueError as exc:  # pydantic's ValidationError: say what to fix, not a traceback
            out.unlink()
            raise SystemExit(f"the rendered config is refused by the app:\n{exc}") from None
    print(f"wrote {out} ({len(config['auth'].get('tenants') or {})} tenants)")


if __name__ == "__main__":
    main()
