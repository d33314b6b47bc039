"""Write the JSON Schema files of the public contract from the pydantic models.

The models are the single source; the files beside them are for other languages and tools.
``python -m schemas.generate`` rewrites them; a test fails when they drift from the models.
"""

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.events import CartEvent, PurchaseEvent
from schemas.notifications import NOTIFICATION_MODELS
from schemas.outputs import OUTPUT_MODELS

SCHEMA_DIR = Path(__file__).parent / "json"
CONTRACT_MODELS: tuple[type[BaseModel], ...] = (
    CartEvent, PurchaseEvent, *OUTPUT_MODELS, *NOTIFICATION_MODELS
)


def schema_files() -> dict[str, str]:
    """File name -> JSON text, for every message of the contract."""
    return {
        f"{model.__name__}.schema.json": json.dumps(model.model_json_schema(), indent=2) + "\n"
        for model in CONTRACT_MODELS
    }


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in schema_files().items():
        (SCHEMA_DIR / name).write_text(text)
        print(SCHEMA_DIR / name)


if __name__ == "__main__":
    main()
