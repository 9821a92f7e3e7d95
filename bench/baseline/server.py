"""The comparison sides' HTTP front: one FastAPI app, one engine behind it.

Every side that is not nlp-serve answers through this same front (FastAPI +
uvicorn, one process), so HTTP and JSON costs are equal and only the engine
differs. `BASELINE_ENGINE` picks it:

- `transformers` (default): Hugging Face pipelines, the tutorials' deployment
  (bench/baseline/transformers_side.py);
- `ctranslate2`: completion and translation (ctranslate2_side.py);
- `onnxruntime`: question answering (onnxruntime_side.py).

`BASELINE_PRECISION` (`float32` or `int8`) applies to the last two. It speaks
the same JSON as nlp-serve for the fields the benchmark uses; a task the
engine does not serve answers 404.

    BASELINE_MODELS=bench/models/full BASELINE_THREADS=2 BASELINE_ENGINE=ctranslate2 \
        uvicorn bench.baseline.server:app --port 8090
"""

import importlib
import os
import pathlib
from dataclasses import dataclass
from typing import List, Optional, Union

from fastapi import FastAPI
from pydantic import BaseModel


@dataclass
class Settings:
    models: pathlib.Path
    threads: int
    precision: str
    translation_tokens: int
    max_batch: int
    batch_wait_ms: float


SETTINGS = Settings(
    models=pathlib.Path(os.environ.get("BASELINE_MODELS", "bench/models/full")),
    threads=int(os.environ.get("BASELINE_THREADS", os.cpu_count() or 1)),
    precision=os.environ.get("BASELINE_PRECISION", "float32"),
    translation_tokens=int(os.environ.get("BASELINE_TRANSLATION_TOKENS", "40")),
    max_batch=int(os.environ.get("BASELINE_MAX_BATCH", "16")),
    batch_wait_ms=float(os.environ.get("BASELINE_BATCH_WAIT_MS", "3")),
)
ENGINE = os.environ.get("BASELINE_ENGINE", "transformers")
SIDE = importlib.import_module(f"bench.baseline.{ENGINE}_side").Side(SETTINGS)
REFERENCE = open(os.environ.get("BASELINE_DOCUMENT", "resources/documents/machine-learning.md"),
                 encoding="utf-8").read()

app = FastAPI()


class CompleteRequest(BaseModel):
    prompt: str
    max_new_tokens: int = 32
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    seed: Optional[int] = None


class QaRequest(BaseModel):
    question: str
    context: Optional[str] = None
    top_k: int = 1


class TranslateRequest(BaseModel):
    text: Union[str, List[str]]


if "complete" in SIDE.tasks:
    @app.post("/complete")
    async def complete(request: CompleteRequest):
        return {"completions": [{"text": text} for text in await SIDE.complete(request)]}

if "qa" in SIDE.tasks:
    @app.post("/qa")
    async def answer(request: QaRequest):
        answers = await SIDE.answer(request, request.context or REFERENCE)
        return {"answers": [{"text": a["answer"], "score": a["score"], "start": a["start"], "end": a["end"]}
                            for a in answers]}

if "translate" in SIDE.tasks:
    @app.post("/translate")
    async def translate(request: TranslateRequest):
        texts = [request.text] if isinstance(request.text, str) else request.text
        return {"translations": await SIDE.translate(texts)}
