"""The peer engines' copies of the benchmark models, converted from the same weights.

Reads the transformers checkpoints that bench/make_full_models.py wrote and
writes, under `<models>/peers/`:

- `ctranslate2/distilgpt2-{float32,int8}` and `ctranslate2/opus-mt-en-de-{float32,int8}`:
  CTranslate2's transformers converter (what `ct2-transformers-converter
  --quantization ...` runs), for its `Generator` and `Translator`;
- `onnx/distilbert-squad-{fp32,int8}.onnx`: DistilBERT-QA exported with
  `torch.onnx`, its graph fused by ONNX Runtime's transformer optimizer
  (attention, layer norm, GELU: what a performance-minded user runs), and the
  int8 file quantized from it with ONNX Runtime's dynamic quantization
  (signed 8-bit weights, activations quantized per call).

Each output is checked against transformers on a fixed input before it is kept.

    python bench/prepare_peers.py --models bench/models/full
"""

import argparse
import pathlib
import shutil
import tempfile

import numpy as np
import torch


def convert_ctranslate2(models: pathlib.Path, out: pathlib.Path) -> None:
    from ctranslate2.converters import TransformersConverter
    for name in ("distilgpt2", "opus-mt-en-de"):
        for quantization in ("float32", "int8"):
            target = out / f"{name}-{quantization}"
            TransformersConverter(str(models / name)).convert(str(target), quantization=quantization, force=True)
            # The tokenizers stay with the transformers checkpoint; the sides load them from there.
            print(f"ctranslate2: {target}", flush=True)


def export_onnx(models: pathlib.Path, out: pathlib.Path) -> None:
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import DistilBertForQuestionAnswering

    model = DistilBertForQuestionAnswering.from_pretrained(models / "distilbert-squad").eval()
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 48), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    axes = {0: "batch", 1: "sequence"}
    with tempfile.TemporaryDirectory() as tmp:
        plain = pathlib.Path(tmp) / "plain.onnx"
        torch.onnx.export(model, (ids, mask), str(plain), input_names=["input_ids", "attention_mask"],
                          output_names=["start_logits", "end_logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                        "start_logits": axes, "end_logits": axes})
        fused = optimizer.optimize_model(str(plain), model_type="bert", num_heads=model.config.n_heads,
                                         hidden_size=model.config.dim, opt_level=1)
        print("onnxruntime fusions:", {k: v for k, v in fused.get_fused_operator_statistics().items() if v},
              flush=True)
        fp32 = out / "distilbert-squad-fp32.onnx"
        fused.save_model_to_file(str(fp32))
    int8 = out / "distilbert-squad-int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).start_logits.numpy()
    spread = float(np.abs(reference).max())
    for path, tolerance in ((fp32, 1e-4 * max(1.0, spread)), (int8, 0.1 * spread)):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        start = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        error = float(np.abs(start - reference)[mask.numpy() == 1].max())
        print(f"onnxruntime: {path} max |start logit - transformers| {error:.2e} (largest logit {spread:.2f})",
              flush=True)
        if error > tolerance:
            raise SystemExit(f"{path}: start logits differ from transformers by {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=pathlib.Path, required=True)
    args = parser.parse_args()
    peers = args.models / "peers"
    if peers.exists():
        shutil.rmtree(peers)
    convert_ctranslate2(args.models, peers / "ctranslate2")
    export_onnx(args.models, peers / "onnx")


if __name__ == "__main__":
    main()
