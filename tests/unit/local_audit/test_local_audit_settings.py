"""Configuration models of the local audit log."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from gateway.local_audit.settings import (
    CONFIG_ID_PATTERN,
    DEFAULT_CONFIG_ID,
    AuditConfigSettings,
    LocalAuditSettings,
    load_configs_file,
)

OTHER_ID = "pci_" + "b" * 32


def test_default_is_one_standard_configuration_using_the_default_token() -> None:
    settings = LocalAuditSettings()
    assert [c.id for c in settings.configs] == [DEFAULT_CONFIG_ID]
    assert re.match(CONFIG_ID_PATTERN, DEFAULT_CONFIG_ID)
    config = settings.configs[0]
    assert config.tokens == [] and config.schema_ is None
    fields = {f.id: f for f in config.schema_fields}
    assert set(fields) == {
        "message",
        "actor",
        "action",
        "target",
        "status",
        "source",
        "old",
        "new",
        "tenant_id",
        "timestamp",
    }
    assert fields["message"].required and fields["message"].size == 32766
    assert (fields["actor"].size, fields["action"].size, fields["status"].size) == (128, 32, 32)


def test_every_field_is_documented() -> None:
    for model in (LocalAuditSettings, AuditConfigSettings):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


@pytest.mark.parametrize(
    "data",
    [
        {"listen_prot": 1},
        {"configs": [{"id": "pci_local_default"}]},
        {"configs": [{"id": OTHER_ID}, {"id": OTHER_ID}]},
        {"configs": [{"id": OTHER_ID, "schema": {"fields": [{"id": "Bad", "type": "string"}]}}]},
        {"configs": [{"id": OTHER_ID, "schema": {"fields": [{"id": "received_at", "type": "datetime"}]}}]},
        {"configs": [{"id": OTHER_ID, "schema": {"fields": [{"id": "n", "type": "integer", "size": 3}]}}]},
        {
            "configs": [
                {"id": OTHER_ID, "schema": {"fields": [{"id": "a", "type": "text"}, {"id": "a", "type": "text"}]}}
            ]
        },
        {"configs": [{"id": OTHER_ID, "schema": {"fields": [{"id": "a", "type": "float"}]}}]},
        {"faults": {"error_5xx_ratio": 1.5}},
    ],
)
def test_invalid_settings_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        LocalAuditSettings.model_validate(data)


def test_configs_file_may_be_a_yaml_mapping_or_a_json_list(tmp_path: Path) -> None:
    yaml_file = tmp_path / "configs.yaml"
    yaml_file.write_text(
        f"configs:\n  - id: {OTHER_ID}\n    tokens: [pts_one]\n    schema:\n      fields:\n"
        "        - {id: message, type: text, required: true}\n        - {id: amount, type: integer}\n"
    )
    (config,) = load_configs_file(yaml_file)
    assert config.tokens[0].get_secret_value() == "pts_one"
    assert [f.id for f in config.schema_fields] == ["message", "amount"]
    assert "pts_one" not in repr(config)  # tokens are secrets

    json_file = tmp_path / "configs.json"
    json_file.write_text(f'[{{"id": "{OTHER_ID}"}}, {{"id": "{DEFAULT_CONFIG_ID}"}}]')
    assert [c.id for c in load_configs_file(json_file)] == [OTHER_ID, DEFAULT_CONFIG_ID]

    bad = tmp_path / "bad.yaml"
    bad.write_text("configs: []\n")
    with pytest.raises(pydantic.ValidationError):
        load_configs_file(bad)
