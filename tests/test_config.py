"""Settings: defaults, .env parsing, clear one-line errors, and docs that match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import (
    ConfigError,
    Settings,
    env_example_text,
    load_settings,
    read_dotenv,
    settings_help,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_with_a_key():
    settings = load_settings({"OPENAI_API_KEY": "sk-x"}, dotenv=None)
    assert (settings.server_host, settings.server_port) == ("127.0.0.1", 5020)
    assert settings.llm_api == "responses"


@pytest.mark.parametrize("api", ["responses", "assistants"])
def test_missing_key_names_the_setting_when_an_api_is_chosen(api: str):
    with pytest.raises(ConfigError) as err:
        load_settings({"LLM_API": api}, dotenv=None)
    assert str(err.value).startswith("OPENAI_API_KEY")
    assert "\n" not in str(err.value)


def test_no_key_and_no_url_mean_the_local_model():
    assert load_settings({}, dotenv=None).llm_api == "local"


def test_base_url_alone_is_enough():
    settings = load_settings({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1/"}, dotenv=None)
    assert settings.openai_base_url == "http://127.0.0.1:11434/v1"


@pytest.mark.parametrize(
    ("env", "value"),
    [("SERVER_PORT", "http"), ("SERVER_PORT", "70000"), ("LLM_API", "palm"),
     ("OPENAI_BASE_URL", "localhost:8000"), ("MAX_MESSAGE_LENGTH", "0"),
     ("CORS_ORIGINS", "example.org")],
)
def test_bad_values_name_the_setting(env: str, value: str):
    with pytest.raises(ConfigError) as err:
        load_settings({"OPENAI_API_KEY": "k", env: value}, dotenv=None)
    assert str(err.value).startswith(f"{env}:")
    assert "\n" not in str(err.value)


def test_dotenv_is_read_and_environment_wins(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text('# c\nOPENAI_API_KEY="sk-file"\nexport SERVER_PORT=6000\n')
    settings = load_settings({"SERVER_PORT": "7000"}, dotenv=env_file)
    assert settings.openai_api_key == "sk-file" and settings.server_port == 7000


def test_key_is_masked_in_public_items():
    settings = Settings(openai_api_key="sk-secret")
    assert "sk-secret" not in repr(settings.public_items())
    assert "sk-secret" not in repr(settings)


def test_env_example_documents_every_setting():
    assert (ROOT / ".env.example").read_text() == env_example_text()
    example = read_dotenv(ROOT / ".env.example")
    assert set(example) == {env for env, _, _ in settings_help()}


def test_copied_env_example_keeps_the_zero_setup_default(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text(env_example_text())
    assert load_settings({}, dotenv=env_file).llm_api == "local"
    assert load_settings({"OPENAI_API_KEY": "k"}, dotenv=env_file).llm_api == "responses"


def test_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    for env, _, _ in settings_help():
        assert f"`{env}`" in readme, env
