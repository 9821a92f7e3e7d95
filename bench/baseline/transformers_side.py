"""The Python baseline: Hugging Face transformers pipelines, as the tutorials deploy them.

Models loaded once, inference under torch.inference_mode (the pipelines do
it), the thread count set to the machine's cores; requests run in FastAPI's
thread pool, so concurrent requests overlap as they would in production.
"""

import torch
from starlette.concurrency import run_in_threadpool
from transformers import pipeline

from bench.baseline.text import split_sentences


class Side:
    tasks = ("complete", "qa", "translate")

    def __init__(self, settings):
        torch.set_num_threads(settings.threads)
        models = settings.models
        self.generator = pipeline("text-generation", model=str(models / "distilgpt2"), device="cpu")
        self.reader = pipeline("question-answering", model=str(models / "distilbert-squad"), device="cpu")
        self.translator = pipeline("translation", model=str(models / "opus-mt-en-de"), device="cpu")
        self.settings = settings

    async def complete(self, request):
        return await run_in_threadpool(self._complete, request)

    async def answer(self, request, context):
        return await run_in_threadpool(self._answer, request, context)

    async def translate(self, texts):
        return await run_in_threadpool(self._translate, texts)

    def _complete(self, request):
        sampling = request.temperature > 0
        options = dict(max_new_tokens=request.max_new_tokens, min_new_tokens=request.min_new_tokens,
                       do_sample=sampling, return_full_text=False)
        if sampling:
            options.update(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k)
        return [item["generated_text"] for item in self.generator(request.prompt, **options)]

    def _answer(self, request, context):
        output = self.reader(question=request.question, context=context, top_k=request.top_k)
        return output if isinstance(output, list) else [output]

    def _translate(self, texts):
        # Same work as nlp-serve: sentences of all texts in one batch.
        sentences = [split_sentences(text) for text in texts]
        flat = [s for group in sentences for s in group]
        tokens = self.settings.translation_tokens
        output = self.translator(flat, batch_size=max(1, len(flat)), max_new_tokens=tokens,
                                 min_new_tokens=tokens) if flat else []
        translated = iter(item["translation_text"] for item in output)
        return [" ".join(next(translated) for _ in group) for group in sentences]
