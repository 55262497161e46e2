"""examples/deploy and examples/grafana stay valid: the systemd units and
the compose file parse, every ``zasync`` command they run parses with the
real CLI (and is listed in ``zasync --help``), the ZConfig files load with
their schemas, and every query of the Grafana dashboard names a metric
zasync exports."""

from __future__ import annotations

import configparser
import io
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
import ZConfig
import ZConfig.schemaless
import ZEO

from zasync.cli import build_parser
from zasync.metrics import NAMES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEPLOY = EXAMPLES / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
    (DEPLOY / "systemd").glob("*.timer")
)


def check_zasync(argv: list[str]) -> None:
    """``argv`` (after the program) parses with zasync's CLI, and its
    command is listed in ``zasync --help``."""
    assert argv, "no zasync command"
    assert f"    {argv[0]}" in build_parser().format_help(), argv[0]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"zasync {shlex.join(argv)}: usage error") from exc


def run_command(argv: list[str]) -> str:
    """Check ``argv`` (a program and its arguments); return the program."""
    if argv[:2] == ["/bin/sh", "-c"] or argv[0] == "CMD-SHELL":
        script = argv[-1]
        script = re.sub(r'"\$\(cat [^)]*\)"', "0e9c-uuid", script)
        inner = shlex.split(script)
        return run_command(inner[1:] if inner[0] == "exec" else inner)
    if argv[0] == "CMD":
        argv = argv[1:]
    program = os.path.basename(argv[0])
    if program == "zasync":
        check_zasync(argv[1:])
    elif program == "runzeo":
        assert (Path(sys.executable).parent / "runzeo").exists()
        assert argv[1] == "-C" and argv[2] == "/etc/zasync/zeo.conf"
    else:
        assert program == "systemctl", argv
    return program


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_units(path: Path) -> None:
    parsed = unit(path)
    assert "Unit" in parsed and "Description" in parsed["Unit"]
    if path.suffix == ".timer":
        assert "OnUnitActiveSec" in parsed["Timer"]
        assert (path.with_suffix(".service")).exists()
        return
    command = parsed["Service"]["ExecStart"].replace("%i", "1")
    run_command(shlex.split(command))
    for name in ("OnFailure", "After", "Wants"):
        for dependency in parsed["Unit"].get(name, "").split():
            if dependency.startswith("zasync"):
                template = re.sub(r"@%i\.", "@.", dependency)
                assert (path.parent / template).exists(), dependency


def test_systemd_workers_are_checked_and_restarted() -> None:
    worker = unit(DEPLOY / "systemd" / "zasync-worker@.service")
    command = worker["Service"]["ExecStart"]
    assert "--uuid-file /var/lib/zasync/worker-%i.uuid" in command
    health = unit(DEPLOY / "systemd" / "zasync-worker-health@.service")
    assert "worker-%i.uuid" in health["Service"]["ExecStart"]
    assert health["Unit"]["OnFailure"] == "zasync-worker-restart@%i.service"


def test_zeo_conf_loads(tmp_path: Path) -> None:
    schema = ZConfig.loadSchema(
        os.path.join(os.path.dirname(ZEO.__file__), "schema.xml")
    )
    text = (DEPLOY / "systemd" / "zeo.conf").read_text()
    assert "/var/lib/zasync/" in text  # the unit's StateDirectory
    text = text.replace("/var/lib/zasync", str(tmp_path))  # ZConfig checks it
    config, _handler = ZConfig.loadConfigFile(schema, io.StringIO(text))
    assert config.zeo.address.address == ("127.0.0.1", 8100)


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker" / "docker-compose.yml").read_text())


def test_compose_services_and_commands() -> None:
    services = compose()["services"]
    assert set(services) == {"zeo", "backend", "worker-1", "worker-2"}
    assert services["backend"]["image"].startswith("plone/plone-backend:")
    assert services["zeo"]["image"].startswith("plone/plone-zeo:")
    for name, service in services.items():
        if "command" in service:
            assert run_command(service["command"]) == "zasync", name
        if "healthcheck" in service:
            assert run_command(service["healthcheck"]["test"]) == "zasync", name
    uuids = {
        services[w]["environment"]["ZASYNC_UUID"] for w in ("worker-1", "worker-2")
    }
    assert len(uuids) == 2  # each worker its own identity
    for worker in ("worker-1", "worker-2"):
        service = services[worker]
        assert service["environment"]["ZEO_ADDRESS"] == "zeo:8100"
        uuid = service["environment"]["ZASYNC_UUID"]
        assert uuid in service["healthcheck"]["test"][-1]
        for volume in service["volumes"]:
            assert (DEPLOY / "docker" / volume.split(":")[0]).exists(), volume


def test_worker_conf_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZASYNC_UUID", "/data/worker-1.uuid")
    monkeypatch.setenv("ZEO_ADDRESS", "zeo:8100")
    text = (DEPLOY / "docker" / "worker.conf").read_text()
    config = ZConfig.schemaless.loadConfigFile(io.StringIO(text))
    environment = next(s for s in config.sections if s.type == "environment")
    assert environment["ZASYNC_UUID"] == ["/data/worker-1.uuid"]  # per container
    (database,) = (s for s in config.sections if s.type == "zodb_db")
    (notify,) = database.sections
    assert notify.type == "zasyncnotify"
    assert notify.sections[0]["server"] == ["zeo:8100"]
    site = (DEPLOY / "docker" / "site.zcml").read_text()
    assert 'file="single_db_worker.zcml"' in site


def test_grafana_queries_name_exported_metrics() -> None:
    dashboard = json.loads((EXAMPLES / "grafana" / "zasync-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    used = set()
    for expr in exprs:
        names = re.findall(r"\bzasync_[a-z_]+", expr)
        assert names, expr
        for name in names:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in NAMES or base in NAMES, f"{name} in {expr!r}"
            used.add(name if name in NAMES else base)
    assert used == set(NAMES), set(NAMES) - used


@pytest.mark.parametrize("doc", ["docs/operations.md", "README.md"])
def test_documented_commands_parse(doc: str) -> None:
    text = (EXAMPLES.parent / doc).read_text()
    commands = re.findall(r"^ {4}(?:\S+=\S+ )*zasync (.+)$", text, re.MULTILINE)
    assert commands
    for command in commands:
        check_zasync(shlex.split(command.split("  #")[0]))
