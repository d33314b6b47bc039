"""Write the JSON Schema files of the public contract from the pydantic models.

The models are the single source; the files beside them are for other languages and tools.
``python -m schemas.generate`` rewrites them; a test fails when they drift from the models.
"""

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.events import CartEvent, PurchaseEvent
from schemas.notifications import NOTIFICATION_MODELS
from schemas.outputs import OUTPUT_MODELS

SCHEMA_DIR = Path(__file__).parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The draft pydantic writes (``$defs``, ``prefixItems``); declared so validators need not guess."""
CONTRACT_MODELS: tuple[type[BaseModel], ...] = (
    CartEvent, PurchaseEvent, *OUTPUT_MODELS, *NOTIFICATION_MODELS
)


def contract_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as consumers need it: with its dialect, and ``type`` required.

    Output models give ``type`` a default (so the code that builds them need not repeat it),
    which pydantic publishes as optional. Every message cartwatch writes carries it, and a
    consumer dispatches on it, so the contract promises it.
    """
    schema = model.model_json_schema()
    if "type" in schema.get("properties", {}) and "type" not in schema.get("required", []):
        schema["required"] = ["type", *schema.get("required", [])]
    return {"$schema": DIALECT, **schema}


def schema_files() -> dict[str, str]:
    """File name -> JSON text, for every message of the contract."""
    return {
        f"{model.__name__}.schema.json": json.dumps(contract_schema(model), indent=2) + "\n"
        for model in CONTRACT_MODELS
    }


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in schema_files().items():
        (SCHEMA_DIR / name).write_text(text)
        print(SCHEMA_DIR / name)


if __name__ == "__main__":
    main()
