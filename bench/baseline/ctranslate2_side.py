"""CTranslate2: distilgpt2 on its `Generator`, opus-mt-en-de on its `Translator`.

The models are CTranslate2 conversions of the same checkpoints
(bench/prepare_peers.py), at float32 or int8. Concurrent requests are
gathered into one `generate_batch` / `translate_batch` call (bench/baseline/
batcher.py), which is how CTranslate2 is meant to be served; the tokenizers
are the checkpoints' own.
"""

import ctranslate2
from transformers import AutoTokenizer

from bench.baseline.batcher import Batcher
from bench.baseline.text import split_sentences


class Side:
    tasks = ("complete", "translate")

    def __init__(self, settings):
        peers = settings.models / "peers" / "ctranslate2"
        precision = settings.precision
        common = dict(device="cpu", compute_type=precision, intra_threads=settings.threads, inter_threads=1)
        self.gpt2 = AutoTokenizer.from_pretrained(settings.models / "distilgpt2")
        self.generator = ctranslate2.Generator(str(peers / f"distilgpt2-{precision}"), **common)
        self.marian = AutoTokenizer.from_pretrained(settings.models / "opus-mt-en-de")
        self.translator = ctranslate2.Translator(str(peers / f"opus-mt-en-de-{precision}"), **common)
        self.translation_tokens = settings.translation_tokens
        self.generations = Batcher(self._generate_batch, settings.max_batch, settings.batch_wait_ms)
        self.translations = Batcher(self._translate_batch, settings.max_batch, settings.batch_wait_ms)

    async def complete(self, request):
        tokens = self.gpt2.convert_ids_to_tokens(self.gpt2(request.prompt)["input_ids"])
        sampling = request.temperature > 0
        options = (request.max_new_tokens, request.min_new_tokens,
                   request.top_k if sampling else 1, request.top_p if sampling else 1.0,
                   request.temperature if sampling else 1.0)
        return [await self.generations.submit((tokens, options))]

    async def answer(self, request, context):
        raise NotImplementedError

    async def translate(self, texts):
        sentences = [[self.marian.convert_ids_to_tokens(self.marian(s)["input_ids"]) for s in split_sentences(text)]
                     for text in texts]
        translated = await self.translations.submit([s for group in sentences for s in group])
        output = iter(translated)
        return [" ".join(next(output) for _ in group) for group in sentences]

    def _generate_batch(self, items):
        """One generate_batch call per distinct set of options (one in the benchmark)."""
        results = [None] * len(items)
        groups = {}
        for index, (_, options) in enumerate(items):
            groups.setdefault(options, []).append(index)
        for (max_new, min_new, top_k, top_p, temperature), indices in groups.items():
            output = self.generator.generate_batch(
                [items[i][0] for i in indices], max_length=max_new, min_length=min_new,
                sampling_topk=top_k, sampling_topp=top_p, sampling_temperature=temperature,
                include_prompt_in_result=False)
            for i, result in zip(indices, output):
                results[i] = self.gpt2.decode(result.sequences_ids[0])
        return results

    def _translate_batch(self, items):
        """The sentences of every request in one translate_batch call."""
        flat = [sentence for item in items for sentence in item]
        output = self.translator.translate_batch(
            flat, beam_size=4, max_decoding_length=self.translation_tokens,
            min_decoding_length=self.translation_tokens) if flat else []
        texts = iter(self._detokenize(result.hypotheses[0]) for result in output)
        return [[next(texts) for _ in item] for item in items]

    def _detokenize(self, tokens):
        """transformers forces Marian's last token at the length limit to be the end token
        (`forced_eos_token_id`); CTranslate2 has no such option, so it decodes the same
        number of steps and its last token gives way to the end token here."""
        if len(tokens) >= self.translation_tokens:
            tokens = tokens[:self.translation_tokens - 1]
        return self.marian.decode(self.marian.convert_tokens_to_ids(tokens), skip_special_tokens=True)
