"""ONNX Runtime: DistilBERT-QA exported with torch.onnx, fp32 or int8 (dynamic quantization).

Answers are chosen by the transformers question-answering pipeline's own
code: its `preprocess` makes the windows (384 tokens, stride 128) and its
`postprocess` picks the spans, so only the forward pass differs from the
baseline. The windows of concurrent requests are padded to the longest and
run in one `session.run` (bench/baseline/batcher.py).
"""

import numpy as np
import onnxruntime
from starlette.concurrency import run_in_threadpool
from transformers import AutoTokenizer
from transformers.pipelines.question_answering import QuestionAnsweringPipeline

from bench.baseline.batcher import Batcher


def _pipeline_steps(tokenizer):
    """The QA pipeline's pre- and post-processing without a torch model behind it:
    both methods read only the tokenizer and the framework name."""
    steps = object.__new__(QuestionAnsweringPipeline)
    steps.tokenizer = tokenizer
    steps.framework = "pt"
    return steps


class Side:
    tasks = ("qa",)

    def __init__(self, settings):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        name = "fp32" if settings.precision == "float32" else settings.precision
        path = settings.models / "peers" / "onnx" / f"distilbert-squad-{name}.onnx"
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(settings.models / "distilbert-squad")
        self.steps = _pipeline_steps(self.tokenizer)
        self.windows = Batcher(self._run_batch, settings.max_batch, settings.batch_wait_ms)

    async def complete(self, request):
        raise NotImplementedError

    async def translate(self, texts):
        raise NotImplementedError

    async def answer(self, request, context):
        features = await run_in_threadpool(
            lambda: list(self.steps.preprocess({"question": request.question, "context": context})))
        logits = await self.windows.submit(features)
        outputs = [{**feature, "start": start[None], "end": end[None]}
                   for feature, (start, end) in zip(features, logits)]
        answers = await run_in_threadpool(self.steps.postprocess, outputs, top_k=request.top_k)
        return answers if isinstance(answers, list) else [answers]

    def _run_batch(self, items):
        """Every window of every request, right-padded to the longest, in one run."""
        windows = [feature for item in items for feature in item]
        length = max(feature["input_ids"].shape[1] for feature in windows)
        ids = np.full((len(windows), length), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(windows), length), dtype=np.int64)
        for row, feature in enumerate(windows):
            n = feature["input_ids"].shape[1]
            ids[row, :n] = feature["input_ids"][0].numpy()
            mask[row, :n] = feature["attention_mask"][0].numpy()
        start, end = self.session.run(["start_logits", "end_logits"], {"input_ids": ids, "attention_mask": mask})
        logits = iter((start[row, :feature["input_ids"].shape[1]], end[row, :feature["input_ids"].shape[1]])
                      for row, feature in enumerate(windows))
        return [[next(logits) for _ in item] for item in items]
