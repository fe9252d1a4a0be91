"""The config file (desync's format) and the ``config`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

from desync_ref.config import ConfigError, apply_entry, load_config, location_match
from desync_ref.stores.options import StoreOptions

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only


def test_defaults_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    out = run_cli(["config"]).stdout.decode()
    assert json.loads(out) == {"s3-credentials": None, "oci-credentials": None, "store-options": None}
    assert out.startswith('{\n  "s3-credentials": null')


def test_entries_round_trip_and_write(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"store-options": {"https://host/store/": {"timeout": 5_000_000_000,
                                                                           "http-auth": "Bearer x",
                                                                           "trust-insecure": True}}}))
    shown = json.loads(run_cli(["--config", cfg, "config"]).stdout)
    assert shown["store-options"]["https://host/store/"] == {
        "trust-insecure": True, "http-auth": "Bearer x", "timeout": 5_000_000_000, "error-retry": 3,
        "error-retry-base-interval": 500_000_000, "uncompressed": False}
    target = tmp_path / "sub" / "written.json"
    cfg2 = tmp_path / "c2.json"
    cfg2.write_text(cfg.read_text())
    proc = run_cli(["config", "--config", cfg2, "-w"])
    assert f"Writing config to {cfg2}" in proc.stdout.decode()
    assert json.loads(cfg2.read_text()) == shown
    assert (cfg2.stat().st_mode & 0o777) == 0o600
    assert not target.exists()


@pytest.mark.parametrize("text,needle", [
    ("{ nope", "invalid JSON"),
    ('{"store-option": {}}', "unknown key"),
    ('{"store-options": {"/x": {"timeouts": 1}}}', "unknown key \"timeouts\""),
    ('{"store-options": {"/x": {"error-retry": "3"}}}', "must be an integer"),
    ('[]', "expected a JSON object"),
])
def test_bad_config_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(text)
    err = assert_clean_failure(run_cli(["--config", cfg, "config"], check=False))
    assert needle in err
    # every command refuses to run with it, not only ``config``: a valid index that
    # list-chunks reads without the config, so the config is the only thing wrong
    index = _valid_index(tmp_path)
    assert run_cli(["list-chunks", index]).stdout.split()
    err = assert_clean_failure(run_cli(["--config", cfg, "list-chunks", index], check=False))
    assert needle in err and str(cfg) in err


def _valid_index(tmp_path: Path) -> Path:
    (tmp_path / "blob").write_bytes(bytes(range(256)) * 400)
    run_cli(["make", "-s", tmp_path / "s", tmp_path / "x.caibx", tmp_path / "blob"])
    return tmp_path / "x.caibx"


def test_missing_explicit_config(tmp_path: Path) -> None:
    err = assert_clean_failure(run_cli(["--config", tmp_path / "none.json", "config"], check=False))
    assert "not found" in err


def test_location_match() -> None:
    assert location_match("http://host/store", "http://host/store/")
    assert location_match("http://host/*/", "http://host/store")
    assert not location_match("http://host/*", "http://host/a/b")
    assert location_match("https://h?st/s", "https://host/s")
    assert location_match("/tmp/st*", "/tmp/store")
    assert not location_match("/tmp/st*", "/tmp/store/sub")


def test_multiple_matches_are_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"store-options": {"http://h/*": {}, "http://h/s*": {}}}))
    config = load_config(cfg)
    with pytest.raises(ConfigError, match="multiple store-options entries"):
        config.options_for("http://h/store")
    # through the CLI, with a valid index and store: one matching entry extracts, two
    # matching entries are the only reason to fail
    index, store = _valid_index(tmp_path), tmp_path / "s"
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    one.write_text(json.dumps({"store-options": {f"{tmp_path}/s*": {}}}))
    two.write_text(json.dumps({"store-options": {f"{tmp_path}/*": {}, f"{tmp_path}/s*": {}}}))
    run_cli(["--config", one, "extract", "-s", store, index, tmp_path / "o1"])
    assert (tmp_path / "o1").read_bytes() == (tmp_path / "blob").read_bytes()
    err = assert_clean_failure(run_cli(["--config", two, "extract", "-s", store, index, tmp_path / "o"],
                                       check=False))
    assert f'multiple store-options entries match the location "{store}"' in err
    assert not (tmp_path / "o").exists()


def test_entry_values_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"store-options": {"https://h/s": {
        "timeout": -1, "error-retry": 7, "error-retry-base-interval": 10_000_000, "ca-cert": "/a.pem",
        "uncompressed": True}}}))
    entry = load_config(cfg).options_for("https://h/s/")
    opts = apply_entry(StoreOptions(), entry)
    assert opts.timeout is None and opts.error_retry == 7 and opts.error_retry_base_interval == 0.01
    assert opts.ca_cert == "/a.pem" and opts.uncompressed
    # through the CLI: the flag's CA file wins over the config's, so this error names the flag's
    err = assert_clean_failure(run_cli(["--config", cfg, "list-chunks", "--ca-cert", tmp_path / "flag.pem",
                                        "https://h/s/x.caibx"], check=False))
    assert "flag.pem" in err
