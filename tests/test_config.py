import os
import shutil
import subprocess
import sys

import pytest

from source.commands.main import MAIN
from source.config import ConfigError, load_settings
from tests.conftest import REPO, MainRunner, base_env


def test_missing_api_key_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = MainRunner(tmp_path, base_env())("--no-train")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "METALS_DEV_API_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_metal_is_a_usage_error(tmp_path):
    result = MainRunner(tmp_path, base_env(METALS_DEV_API_KEY="k" * 8))("--metals", "gold,tin")
    assert result.returncode == 2
    assert "tin" in result.stderr


def test_every_command_has_help_and_the_main_help_names_them_all(tmp_path):
    runner = MainRunner(tmp_path, base_env())
    commands = [name for name in MAIN.commands if name is not None]
    main_help = runner("--help")
    assert main_help.returncode == 0 and "example" in main_help.stdout
    for command in commands:
        assert f" {command}" in main_help.stdout.split("options:")[0], command
        result = runner(command, "--help")
        assert result.returncode == 0, command
        assert "example" in result.stdout, command
    assert runner("--demo", "train", "--help").returncode == 0


def test_an_unreadable_secret_file_is_one_line_naming_the_file_and_the_fix(tmp_path):
    # The jobs run as uid 10001 in the image; a secret only its owner may read fails there.
    secret = tmp_path / "pg_app_password"
    secret.write_text("s3cret-value")
    secret.chmod(0o600)
    command = [sys.executable, str(REPO / "main.py"), "status"]
    if os.geteuid() == 0:  # root reads anything: run as another user, as the container does
        tmp_path.chmod(0o755)
        command = [shutil.which("setpriv"), "--reuid=10001", "--regid=10001", "--clear-groups",
                   *command]
    env = base_env(PGHOST="127.0.0.1", PGPASSWORD_FILE=str(secret))
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot read PGPASSWORD_FILE ({secret}): permission denied" in line
    assert "chmod 644 secrets/*" in line and "s3cret" not in line


def test_secret_from_file_wins_and_dotenv_is_read(tmp_path):
    secret = tmp_path / "api_key"
    secret.write_text("from-file-key\n")
    env_file = tmp_path / ".env"
    env_file.write_text("METALS=gold,silver\nCURRENCY=eur\nMETALS_DEV_API_KEY=from-dotenv\n")
    settings = load_settings({"METALS_DEV_API_KEY_FILE": str(secret)}, env_file=env_file)
    assert settings.api_key == "from-file-key"
    assert settings.metals == ("gold", "silver")
    assert settings.currency == "EUR"
    assert "from-file-key" not in repr(settings)


def test_environment_overrides_dotenv(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("METALS_DEV_API_KEY=from-dotenv\nUNIT=g\n")
    settings = load_settings({"METALS_DEV_API_KEY": "from-env"}, env_file=env_file)
    assert (settings.api_key, settings.unit) == ("from-env", "g")


def test_unreadable_secret_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="METALS_DEV_API_KEY_FILE"):
        load_settings(
            {"METALS_DEV_API_KEY_FILE": str(tmp_path / "missing")}, env_file=tmp_path / "none"
        )


def test_demo_needs_no_key_and_uses_its_own_database_and_landing_dir(tmp_path):
    settings = load_settings(
        {"PGDATABASE": "prod", "PGHOST": "prod-db"}, demo=True, env_file=tmp_path / "none"
    )
    assert (settings.pg_database, settings.pg_host) == ("commodities_demo", None)
    assert settings.data_dir.name == "demo"
