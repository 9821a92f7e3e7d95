"""The Python baseline: Hugging Face transformers pipelines behind FastAPI.

This is the deployment the usual tutorials show, configured the way a
competent engineer would: one uvicorn process, models loaded once at import,
inference under torch.inference_mode (the pipelines do it), the thread count
set to the machine's cores, sync endpoints (FastAPI runs them in its thread
pool, so concurrent requests overlap as they would in production).

It speaks the same JSON as nlp-serve for the fields the benchmark uses.

    BASELINE_MODELS=bench/models/full BASELINE_THREADS=2 \
        uvicorn bench.baseline.server:app --port 8090
"""

import os
import re
from typing import List, Optional, Union

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

MODELS = os.environ.get("BASELINE_MODELS", "bench/models/full")
torch.set_num_threads(int(os.environ.get("BASELINE_THREADS", os.cpu_count() or 1)))

generator = pipeline("text-generation", model=f"{MODELS}/distilgpt2", device="cpu")
reader = pipeline("question-answering", model=f"{MODELS}/distilbert-squad", device="cpu")
translator = pipeline("translation", model=f"{MODELS}/opus-mt-en-de", device="cpu")
REFERENCE = open(os.environ.get("BASELINE_DOCUMENT", "resources/documents/machine-learning.md"), encoding="utf-8").read()
TRANSLATION_NEW_TOKENS = int(os.environ.get("BASELINE_TRANSLATION_TOKENS", "40"))

app = FastAPI()


class CompleteRequest(BaseModel):
    prompt: str
    max_new_tokens: int = 32
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    seed: Optional[int] = None


@app.post("/complete")
def complete(request: CompleteRequest):
    sampling = request.temperature > 0
    options = dict(
        max_new_tokens=request.max_new_tokens,
        min_new_tokens=request.min_new_tokens,
        do_sample=sampling,
        return_full_text=False,
    )
    if sampling:
        options.update(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k)
    output = generator(request.prompt, **options)
    return {"completions": [{"text": item["generated_text"]} for item in output]}


class QaRequest(BaseModel):
    question: str
    context: Optional[str] = None
    top_k: int = 1


@app.post("/qa")
def answer(request: QaRequest):
    output = reader(question=request.question, context=request.context or REFERENCE, top_k=request.top_k)
    answers = output if isinstance(output, list) else [output]
    return {"answers": [{"text": a["answer"], "score": a["score"], "start": a["start"], "end": a["end"]} for a in answers]}


class TranslateRequest(BaseModel):
    text: Union[str, List[str]]


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@app.post("/translate")
def translate(request: TranslateRequest):
    texts = [request.text] if isinstance(request.text, str) else request.text
    # Same work as nlp-serve: sentences of all texts in one batch.
    sentences = [[s for s in SENTENCE_END.split(text.strip()) if s] for text in texts]
    flat = [s for group in sentences for s in group]
    output = translator(
        flat,
        batch_size=max(1, len(flat)),
        max_new_tokens=TRANSLATION_NEW_TOKENS,
        min_new_tokens=TRANSLATION_NEW_TOKENS,
    ) if flat else []
    translated = iter(item["translation_text"] for item in output)
    return {"translations": [" ".join(next(translated) for _ in group) for group in sentences]}
